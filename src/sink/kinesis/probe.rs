//! Readiness for the Kinesis sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Keeps `ready` current: every stream in `kinesis.streams` answers DescribeStreamSummary as
/// ACTIVE or UPDATING; with none listed, ListStreams answers (Kinesis is reachable and the
/// credentials work). Streams met only in traffic do not count: an event type routed to a
/// stream that does not exist fails its own events (500), not the whole replica.
pub(super) async fn run(
    client: aws_sdk_kinesis::Client,
    ready: std::sync::Weak<AtomicBool>,
    names: Vec<String>,
    interval: Duration,
) {
    use aws_sdk_kinesis::types::StreamStatus;
    loop {
        let ok = if names.is_empty() {
            client.list_streams().limit(1).send().await.is_ok()
        } else {
            let mut all = true;
            for name in &names {
                match client
                    .describe_stream_summary()
                    .stream_name(name)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let status = out
                            .stream_description_summary()
                            .map(|d| d.stream_status().clone());
                        if !matches!(
                            status,
                            Some(StreamStatus::Active) | Some(StreamStatus::Updating)
                        ) {
                            tracing::warn!(stream = %name, ?status, "Kinesis stream not writable");
                            all = false;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %aws_sdk_kinesis::error::DisplayErrorContext(&e), "Kinesis stream not reachable");
                        all = false;
                    }
                }
            }
            all
        };
        let Some(r) = ready.upgrade() else { return };
        if r.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(streams = names.len(), "Kinesis reachable");
            } else {
                tracing::warn!("Kinesis unreachable");
            }
        }
        drop(r);
        tokio::time::sleep(interval).await;
    }
}
