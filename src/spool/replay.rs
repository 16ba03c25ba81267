//! Replay: records go from the spool to the sink in the order they were appended, one chunk
//! at a time, and the cursor moves only once the sink acknowledged the whole chunk.
//!
//! A chunk that partly fails is retried (only the records that failed, in order) once the sink
//! says it is ready again, with a backoff, for as long as it takes: spooled records were
//! answered 2xx, so they are never given up. Records the sink refuses for good (a topic that
//! does not exist, a record too large) would block replay forever; they go to
//! `rejected.log` instead, with an error log and a metric.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Spool;
use crate::sink::{Record, Sink};
use crate::telemetry;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Replays in the background for as long as the spool exists.
pub fn spawn(spool: &Arc<Spool>, sink: &Arc<dyn Sink>, batch: usize) {
    tokio::spawn(run(Arc::downgrade(spool), Arc::downgrade(sink), batch));
}

async fn run(spool: Weak<Spool>, sink: Weak<dyn Sink>, batch: usize) {
    loop {
        let Some(sp) = spool.upgrade() else { return };
        let read = {
            let sp = sp.clone();
            tokio::task::spawn_blocking(move || sp.read_next(batch)).await
        };
        let chunk = match read {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => {
                // Caught up: wait for the next append (the poll is a safety net).
                tokio::select! {
                    _ = sp.appended() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the spool failed; retrying in 1s");
                drop(sp);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool reader task failed");
                return;
            }
        };
        drop(sp);
        let f = &chunk.frames;
        if f.torn_tail {
            metrics::counter!(telemetry::SPOOL_DAMAGE, "kind" => "torn_tail").increment(1);
            tracing::warn!(
                offset = f.end,
                "spool segment ends in a torn record (a write cut short by a crash, never acknowledged); skipped"
            );
        }
        if f.corrupt > 0 {
            metrics::counter!(telemetry::SPOOL_DAMAGE, "kind" => "corrupt_record")
                .increment(f.corrupt as u64);
            tracing::error!(
                records = f.corrupt,
                "spool records failed their CRC check (disk damage); skipped"
            );
        }
        let n = f.records.len();
        let Some(rejected) = deliver(&spool, &sink, f.records.clone()).await else {
            return;
        };
        let Some(sp) = spool.upgrade() else { return };
        let done = tokio::task::spawn_blocking(move || {
            if !rejected.is_empty() {
                sp.quarantine(&rejected)?;
                metrics::counter!(telemetry::SPOOL_QUARANTINED).increment(rejected.len() as u64);
                tracing::error!(
                    records = rejected.len(),
                    "the sink refused spooled records for good; kept in rejected.log"
                );
            }
            sp.commit(&chunk)
        })
        .await;
        match done {
            Ok(Ok(())) => metrics::counter!(telemetry::SPOOL_REPLAYED).increment(n as u64),
            Ok(Err(e)) => {
                // The chunk will be read again: duplicates, not loss.
                tracing::error!(error = %e, "could not record replay progress");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => tracing::error!(error = %e, "spool commit task failed"),
        }
    }
}

/// Publishes until every record is acknowledged or refused for good; returns the refused
/// ones. `None` when the spool or the sink went away (shutdown).
async fn deliver(
    spool: &Weak<Spool>,
    sink: &Weak<dyn Sink>,
    mut pending: Vec<Record>,
) -> Option<Vec<Record>> {
    let mut rejected = Vec::new();
    let mut backoff = MIN_BACKOFF;
    while !pending.is_empty() {
        let s = sink.upgrade()?;
        // Do not pile copies into a producer that cannot deliver: each would be a duplicate
        // once the broker is back.
        while !s.is_ready() {
            if spool.strong_count() == 0 {
                return None;
            }
            tokio::time::sleep(MIN_BACKOFF).await;
        }
        let receipts = s.publish(pending.clone()).await;
        drop(s);
        let mut retry = Vec::new();
        for (r, receipt) in pending.into_iter().zip(receipts) {
            match receipt {
                Ok(()) => {}
                Err(e) if e.retriable() => retry.push(r),
                Err(e) => {
                    tracing::warn!(topic = %r.topic, error = %e, "sink refused a spooled record");
                    rejected.push(r);
                }
            }
        }
        if !retry.is_empty() {
            if spool.strong_count() == 0 {
                return None;
            }
            tracing::warn!(
                records = retry.len(),
                ?backoff,
                "spool replay: the sink did not acknowledge; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        pending = retry;
    }
    Some(rejected)
}
