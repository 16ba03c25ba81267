//! Periodic work owned by something else: file reloads (API keys, TLS certificates and CRLs).

use std::sync::Arc;
use std::time::Duration;

/// Runs `tick(owner)` every `every` for as long as `owner` is alive elsewhere (the task holds
/// only a weak reference, so it never keeps its owner alive).
pub(crate) fn every<T: Send + Sync + 'static>(
    owner: &Arc<T>,
    every: Duration,
    tick: impl Fn(&T) + Send + 'static,
) {
    let owner = Arc::downgrade(owner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(owner) = owner.upgrade() else { break };
            tick(&owner);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    // The reload loops (API keys, TLS files) on tokio's paused clock: one tick per
    // interval, none before, and none once the owner is gone.
    #[tokio::test(start_paused = true)]
    async fn every_ticks_once_per_interval_while_its_owner_lives() {
        let owner = Arc::new(AtomicUsize::new(0));
        every(&owner, Duration::from_secs(10), |n| {
            n.fetch_add(1, Ordering::SeqCst);
        });
        let step = |d| async move {
            tokio::time::sleep(d).await;
            // Let the loop's task run after the timer fires.
            tokio::task::yield_now().await;
        };
        step(Duration::from_millis(9_999)).await;
        assert_eq!(
            owner.load(Ordering::SeqCst),
            0,
            "not before the first interval"
        );
        step(Duration::from_millis(2)).await;
        assert_eq!(owner.load(Ordering::SeqCst), 1);
        step(Duration::from_secs(30)).await;
        assert_eq!(owner.load(Ordering::SeqCst), 4);
        let weak = Arc::downgrade(&owner);
        drop(owner);
        assert!(
            weak.upgrade().is_none(),
            "the loop keeps no strong reference"
        );
        step(Duration::from_secs(60)).await;
    }
}
