//! Kinesis through PutRecords. Records from every request queue per stream; one batcher task
//! packs them into calls (at most `max_batch_records` / `max_batch_bytes`, after `linger`),
//! runs up to `max_in_flight_calls` at once, and answers each record from its own entry in the
//! response: PutRecords succeeds as a call while failing some records, so only those are sent
//! again, with jittered exponential backoff, until the record's deadline.
//!
//! **Order per partition key.** A key has at most one record in flight, and a record waits
//! while an earlier record of its key is in flight or waiting to be retried. So a retry never
//! lets a later record of the key overtake an earlier one. The cost: one record per key per
//! call round trip (Kinesis accepts 1 000 records/s per shard anyway).
//!
//! **Throttling** (`ProvisionedThroughputExceededException`, `LimitExceededException`) pauses
//! calls to that stream for the backoff; the records stay queued and hold their admission,
//! so admission control refuses new work (503) instead of a queue growing without bound.
//!
//! Data: the `kinesis.format` envelope (CloudEvents JSON with `sluice*` extensions) or the
//! raw value. The SDK's own retries are off: this module owns retries and deadlines.

//! Where things are, in Vector's sink anatomy: [`envelope`] encodes a record's data;
//! [`batch`] queues records per stream and packs calls (order per key, linger, limits,
//! retries and throttling pauses); [`call`] makes one PutRecords call and names what failed;
//! [`probe`] keeps readiness current.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{DeliveryError, Receipts, Record, Sink};
use crate::config::{KinesisConfig, KinesisFormat};
use batch::{Item, Limits};

mod batch;
mod call;
mod envelope;
mod probe;

/// Kinesis's cap on one record: data plus partition key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis's cap on a partition key, in Unicode characters.
const MAX_KEY_CHARS: usize = 256;

pub struct KinesisSink {
    tx: mpsc::Sender<Item>,
    ready: Arc<AtomicBool>,
    /// Records handed over and not answered yet (for `flush`).
    pending: Arc<AtomicUsize>,
    delivery_timeout: Duration,
    format: KinesisFormat,
}

impl KinesisSink {
    pub async fn new(config: &KinesisConfig) -> anyhow::Result<KinesisSink> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(config.call_timeout.0)
                    .build(),
            );
        if let Some(r) = &config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            anyhow::bail!("no AWS region for the Kinesis sink: set kinesis.region or AWS_REGION");
        }
        let client = aws_sdk_kinesis::Client::new(&sdk);
        let limits = Limits {
            linger: config.linger.0,
            records: config.max_batch_records,
            bytes: config.max_batch_bytes.as_usize(),
            in_flight: config.max_in_flight_calls,
        };
        // Admission control bounds what is queued; this is a second fence.
        let (tx, rx) = mpsc::channel(100_000);
        let ready = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(batch::run(client.clone(), rx, limits, pending.clone()));
        tokio::spawn(probe::run(
            client,
            Arc::downgrade(&ready),
            config.streams.clone(),
            config.probe_interval.0,
        ));
        Ok(KinesisSink {
            tx,
            ready,
            pending,
            delivery_timeout: config.delivery_timeout.0,
            format: config.format,
        })
    }

    fn data(&self, r: &Record) -> Bytes {
        match self.format {
            KinesisFormat::Raw => r.value.clone(),
            KinesisFormat::Envelope => envelope::envelope(r),
        }
    }
}

#[async_trait]
impl Sink for KinesisSink {
    fn kind(&self) -> &'static str {
        "kinesis"
    }

    fn refuses(&self, r: &Record) -> Option<String> {
        let key = r.key.len().clamp(1, MAX_KEY_CHARS * 4);
        // The envelope holds the value and every header, each escaped at most six-fold:
        // only records near the limit are encoded to find out.
        let bound = r.value.len() * 6 + (r.size() - r.value.len()) * 6 + 4096 + key;
        if bound <= MAX_RECORD_BYTES {
            return None;
        }
        let size = self.data(r).len() + key;
        (size > MAX_RECORD_BYTES).then(|| {
            format!("{size} bytes with its partition key; Kinesis takes at most {MAX_RECORD_BYTES}")
        })
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        let deadline = Instant::now() + self.delivery_timeout;
        self.publish_until(records, deadline).await
    }

    async fn publish_until(&self, records: Vec<Record>, deadline: Instant) -> Receipts {
        let deadline = deadline.min(Instant::now() + self.delivery_timeout);
        let now = Instant::now();
        let mut waits = Vec::with_capacity(records.len());
        for r in &records {
            let data = self.data(r);
            let key = String::from_utf8_lossy(&r.key).into_owned();
            let key = if key.is_empty() { "-".to_string() } else { key };
            let key: String = key.chars().take(MAX_KEY_CHARS).collect();
            if data.len() + key.len() > MAX_RECORD_BYTES {
                waits.push(Err(DeliveryError::TooLarge(format!(
                    "{} bytes with its partition key; Kinesis takes at most {MAX_RECORD_BYTES}",
                    data.len() + key.len()
                ))));
                continue;
            }
            let hash = r
                .extension_headers
                .iter()
                .find(|(k, _)| k == "ce_explicithashkey")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            let (done, rx) = oneshot::channel();
            let item = Item {
                stream: r.topic.clone(),
                key,
                hash,
                data,
                deadline,
                queued: now,
                not_before: now,
                attempts: 0,
                last_error: None,
                done,
            };
            self.pending.fetch_add(1, Ordering::Relaxed);
            match self.tx.try_send(item) {
                Ok(()) => waits.push(Ok(rx)),
                Err(e) => {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    waits.push(Err(match e {
                        mpsc::error::TrySendError::Full(_) => DeliveryError::QueueFull,
                        mpsc::error::TrySendError::Closed(_) => {
                            DeliveryError::Failed("the Kinesis batcher has stopped".into())
                        }
                    }));
                }
            }
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Err(e) => Err(e),
                Ok(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(DeliveryError::Failed("the Kinesis batcher stopped".into())),
                    Err(_) => Err(DeliveryError::TimedOut(
                        "no PutRecords acknowledgement within kinesis.delivery_timeout".into(),
                    )),
                },
            });
        }
        out
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    async fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::Relaxed) > 0 {
            if Instant::now() >= deadline {
                return Err(DeliveryError::TimedOut("Kinesis flush".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}
