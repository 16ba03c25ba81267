//! Admission control: the process holds at most `limits.max_inflight_events` events and
//! `limits.max_inflight_bytes` of request bodies at once, whatever the load. A request that
//! cannot be admitted waits up to `limits.admission_wait`, then is refused with 503 and a
//! `Retry-After` derived from how fast in-flight work is currently draining.
//!
//! Bytes are admitted before the body is read (its Content-Length, or the body cap when the
//! length is unknown), events once they are decoded; both are held until the answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::telemetry;

/// Retry-After bounds, in seconds: never "now", never so long that clients give up.
const MIN_RETRY_SECS: u64 = 1;
const MAX_RETRY_SECS: u64 = 30;

pub struct AdmissionControl {
    events: Semaphore,
    /// In KiB, so that gigabytes fit a semaphore's u32 permits.
    kib: Semaphore,
    max_events: usize,
    wait: Duration,
    drain: Mutex<DrainRate>,
    /// Events decoded and waiting for admission (queued demand).
    waiting_events: AtomicUsize,
    /// Requests waiting for byte admission (their events are not decoded yet).
    waiting_requests: AtomicUsize,
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize, usize);

impl<'a> Waiting<'a> {
    fn new(c: &'a AtomicUsize, n: usize) -> Self {
        c.fetch_add(n, Ordering::Relaxed);
        Waiting(c, n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    pub retry_after: u64,
}

impl AdmissionControl {
    pub fn new(max_events: usize, max_bytes: u64, wait: Duration) -> Self {
        let kib = usize::try_from(max_bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        AdmissionControl {
            events: Semaphore::new(max_events.min(Semaphore::MAX_PERMITS)),
            kib: Semaphore::new(kib),
            max_events,
            wait,
            drain: Mutex::new(DrainRate::new(Instant::now())),
            waiting_events: AtomicUsize::new(0),
            waiting_requests: AtomicUsize::new(0),
        }
    }

    /// Demand, the autoscaling signal: events in flight plus events waiting for admission.
    pub fn demand_events(&self) -> usize {
        self.max_events
            .saturating_sub(self.events.available_permits())
            + self.waiting_events.load(Ordering::Relaxed)
    }

    /// Sets the demand gauges; called every second.
    pub fn report_metrics(&self) {
        metrics::gauge!(telemetry::DEMAND_EVENTS).set(self.demand_events() as f64);
        metrics::gauge!(telemetry::ADMISSION_WAITING_REQUESTS)
            .set(self.waiting_requests.load(Ordering::Relaxed) as f64);
    }

    /// Admits `bytes` of body, waiting at most the admission wait.
    pub async fn admit_bytes(&self, bytes: u64) -> Result<BytesPermit<'_>, Overloaded> {
        self.admit_bytes_on(None, bytes).await
    }

    /// [`Self::admit_bytes`], charged to the request's connection's share as well, first.
    pub async fn admit_bytes_on(
        &self,
        share: Option<&ConnectionShare>,
        bytes: u64,
    ) -> Result<BytesPermit<'_>, Overloaded> {
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let _waiting = Waiting::new(&self.waiting_requests, 1);
        let deadline = tokio::time::Instant::now() + self.wait;
        let share = match share {
            Some(s) => {
                let want = kib.min(s.kib);
                match tokio::time::timeout_at(deadline, s.slots.clone().acquire_many_owned(want))
                    .await
                {
                    Ok(Ok(p)) => Some(p),
                    _ => return Err(self.overloaded()),
                }
            }
            None => None,
        };
        match tokio::time::timeout_at(deadline, self.kib.acquire_many(kib)).await {
            Ok(Ok(permit)) => {
                metrics::gauge!(telemetry::INFLIGHT_BYTES).increment(f64::from(kib) * 1024.0);
                Ok(BytesPermit {
                    permit,
                    kib,
                    _share: share,
                })
            }
            _ => Err(self.overloaded()),
        }
    }

    /// Admits `n` decoded events, waiting at most the admission wait.
    pub async fn admit_events(&self, n: usize) -> Result<EventsPermit<'_>, Overloaded> {
        let want = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let _waiting = Waiting::new(&self.waiting_events, n);
        match tokio::time::timeout(self.wait, self.events.acquire_many(want)).await {
            Ok(Ok(permit)) => Ok(EventsPermit {
                permit,
                control: self,
                n,
            }),
            _ => Err(self.overloaded()),
        }
    }

    fn overloaded(&self) -> Overloaded {
        Overloaded {
            retry_after: self.retry_after(),
        }
    }

    /// Seconds until the events in flight now would have drained at the recent rate.
    pub fn retry_after(&self) -> u64 {
        let inflight = self
            .max_events
            .saturating_sub(self.events.available_permits());
        let rate = self
            .drain
            .lock()
            .map(|mut d| d.rate(Instant::now()))
            .unwrap_or(0.0);
        retry_after_secs(inflight, rate)
    }

    fn drained(&self, n: usize) {
        if let Ok(mut d) = self.drain.lock() {
            d.record(n, Instant::now());
        }
    }
}

/// In-flight events over the drain rate (events/s), clamped to [1, 30] s. No measurable
/// drain (a stalled sink) gives the maximum.
pub fn retry_after_secs(inflight: usize, rate: f64) -> u64 {
    if rate < 1.0 {
        return if inflight == 0 {
            MIN_RETRY_SECS
        } else {
            MAX_RETRY_SECS
        };
    }
    ((inflight as f64 / rate).ceil() as u64).clamp(MIN_RETRY_SECS, MAX_RETRY_SECS)
}

pub struct BytesPermit<'a> {
    #[allow(dead_code)] // held for its Drop
    permit: SemaphorePermit<'a>,
    kib: u32,
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One connection's bound on the body bytes its requests hold at once
/// (`limits.max_inflight_bytes_per_connection`): HTTP/2 carries many requests on one
/// connection, and one connection must not take the whole process's admission.
#[derive(Clone)]
pub struct ConnectionShare {
    slots: std::sync::Arc<Semaphore>,
    kib: u32,
}

impl ConnectionShare {
    pub fn new(max_bytes: u64) -> ConnectionShare {
        let kib = u32::try_from(max_bytes.div_ceil(1024).max(1))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        ConnectionShare {
            slots: std::sync::Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }
}

impl Drop for BytesPermit<'_> {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::INFLIGHT_BYTES).decrement(f64::from(self.kib) * 1024.0);
    }
}

/// Held until the request is answered; its release counts toward the drain rate.
pub struct EventsPermit<'a> {
    #[allow(dead_code)] // held for its Drop
    permit: SemaphorePermit<'a>,
    control: &'a AdmissionControl,
    n: usize,
}

impl Drop for EventsPermit<'_> {
    fn drop(&mut self) {
        self.control.drained(self.n);
    }
}

/// Events answered per second: an exponentially weighted average over windows of at least
/// a second, decaying toward zero when nothing drains.
struct DrainRate {
    window_start: Instant,
    count: usize,
    rate: f64,
}

impl DrainRate {
    fn new(now: Instant) -> Self {
        DrainRate {
            window_start: now,
            count: 0,
            rate: 0.0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.window_start).as_secs_f64();
        if elapsed >= 1.0 {
            let current = self.count as f64 / elapsed;
            self.rate = 0.5 * self.rate + 0.5 * current;
            self.count = 0;
            self.window_start = now;
        }
    }

    fn record(&mut self, n: usize, now: Instant) {
        self.roll(now);
        self.count += n;
    }

    fn rate(&mut self, now: Instant) -> f64 {
        self.roll(now);
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_connection_holds_at_most_its_share() {
        let a = AdmissionControl::new(100, 1024 * 1024, Duration::from_millis(50));
        let (one, other) = (
            ConnectionShare::new(64 * 1024),
            ConnectionShare::new(64 * 1024),
        );
        let first = a.admit_bytes_on(Some(&one), 48 * 1024).await.unwrap();
        // The same connection is over its share; another connection is not.
        assert!(a.admit_bytes_on(Some(&one), 32 * 1024).await.is_err());
        let second = a.admit_bytes_on(Some(&other), 32 * 1024).await.unwrap();
        // A request larger than the share alone takes the whole share, so it is still admitted.
        drop(first);
        let whole = a.admit_bytes_on(Some(&one), 128 * 1024).await.unwrap();
        assert!(a.admit_bytes_on(Some(&one), 1).await.is_err());
        drop((second, whole));
        assert!(a.admit_bytes_on(Some(&one), 1).await.is_ok());
    }

    #[test]
    fn retry_after_follows_the_drain_rate() {
        assert_eq!(retry_after_secs(0, 0.0), 1);
        assert_eq!(retry_after_secs(500, 0.0), 30, "stalled: the longest wait");
        assert_eq!(retry_after_secs(500, 1000.0), 1);
        assert_eq!(retry_after_secs(5000, 1000.0), 5);
        assert_eq!(retry_after_secs(1_000_000, 1000.0), 30);
    }

    #[test]
    fn drain_rate_averages_windows_and_decays() {
        let t0 = Instant::now();
        let mut d = DrainRate::new(t0);
        d.record(1000, t0);
        assert_eq!(
            d.rate(t0 + Duration::from_millis(500)),
            0.0,
            "within the first window"
        );
        let r1 = d.rate(t0 + Duration::from_secs(1));
        assert!((r1 - 500.0).abs() < 1.0, "{r1}");
        let r2 = d.rate(t0 + Duration::from_secs(2));
        assert!(r2 < r1, "nothing drained: the rate decays ({r2})");
    }

    // On tokio's paused clock: the wait is exactly `limits.admission_wait`, with no real sleep.
    #[tokio::test(start_paused = true)]
    async fn over_the_bound_waits_then_is_refused() {
        use std::future::Future;
        let a = AdmissionControl::new(10, 1024 * 1024, Duration::from_millis(50));
        let held = a.admit_events(8).await.unwrap();
        let started = tokio::time::Instant::now();
        let refused = a.admit_events(3).await.err().expect("only 2 left");
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        assert_eq!(refused.retry_after, 30, "nothing has drained yet");
        drop(held);
        let held = a.admit_events(10).await.unwrap();
        assert_eq!(a.demand_events(), 10);
        let mut waiting = Box::pin(a.admit_events(4));
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(a.demand_events(), 14, "in flight plus queued");
        drop(held);
        assert!(waiting.await.is_ok(), "released permits are reused");
        assert_eq!(a.demand_events(), 0);
        let _big = a.admit_bytes(1024 * 1024).await.unwrap();
        assert!(
            a.admit_bytes(1).await.is_err(),
            "the byte bound is separate"
        );
    }
}
