//! Sinks: where accepted events become durable. Pure mechanism: a sink gets finished records
//! (topic, key, value, headers already decided upstream by `pipeline`) and reports, per
//! record, whether it is durable. It must not answer `Ok` for a record before that.

mod blackhole;
mod file;
pub mod kafka;
mod kinesis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use blackhole::BlackholeSink;
pub use file::FileSink;
pub use kafka::KafkaSink;
pub use kinesis::KinesisSink;

use crate::config::{Config, KafkaSecurity, SinkKind};
use crate::error::{ClientError, Code};

/// One record ready to publish.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: Bytes,
    pub value: Bytes,
    pub headers: Vec<(&'static str, Bytes)>,
    /// Extension headers (`ce_<name>`), whose names are not static.
    pub extension_headers: Vec<(String, Bytes)>,
}

impl Record {
    /// Approximate bytes this record holds while queued.
    pub fn size(&self) -> usize {
        self.topic.len()
            + self.key.len()
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self
                .extension_headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DeliveryError {
    /// The sink's local queue is full: backpressure, try again shortly.
    #[error("the sink's queue is full")]
    QueueFull,
    /// Not acknowledged within the delivery timeout (broker down, partitions offline, ...).
    #[error("not acknowledged in time: {0}")]
    TimedOut(String),
    /// The sink refused the record for good (unknown topic, no permission, ...).
    #[error("refused by the sink: {0}")]
    Rejected(String),
    /// The record is over the sink's own size limit (Kinesis: 1 MiB with its key).
    #[error("too large for the sink: {0}")]
    TooLarge(String),
    #[error("delivery failed: {0}")]
    Failed(String),
    /// The sink denies this gateway's principal the write (Kafka ACLs, IAM). Retriable: it
    /// succeeds once an operator grants it, so the client (or the spool) keeps the event.
    #[error("the sink denies this gateway the write (authorization): {0}")]
    Unauthorized(String),
    /// The sink could not take the record and the spool is full.
    #[error("the sink is unavailable and the spool is full")]
    SpoolFull,
    /// The sink could not take the record and writing it to the spool failed.
    #[error("the sink is unavailable and the spool failed: {0}")]
    SpoolFailed(String),
}

impl ClientError for DeliveryError {
    /// Stable code reported to the client for this event; its status comes with it: 503 for
    /// what could succeed later, 413 and 500 for what never will.
    fn code(&self) -> Code {
        match self {
            DeliveryError::QueueFull => Code::SinkQueueFull,
            DeliveryError::TimedOut(_) => Code::DeliveryTimeout,
            DeliveryError::Rejected(_) => Code::DeliveryRejected,
            DeliveryError::TooLarge(_) => Code::RecordTooLarge,
            DeliveryError::Failed(_) => Code::DeliveryFailed,
            DeliveryError::Unauthorized(_) => Code::SinkUnauthorized,
            DeliveryError::SpoolFull => Code::SpoolFull,
            DeliveryError::SpoolFailed(_) => Code::SpoolFailed,
        }
    }

    /// What the client is told. The cause (a broker's or an AWS error's own words, topic
    /// names) stays in the server log: clients get the code and what to do about it.
    fn client_message(&self) -> String {
        match self {
            DeliveryError::QueueFull => "the sink's queue is full; retry shortly".into(),
            DeliveryError::TimedOut(_) => {
                "the sink did not acknowledge the event within the delivery timeout; retry".into()
            }
            DeliveryError::Rejected(_) => {
                "the sink refused the event for good; the cause is in the server log under this request's x-request-id".into()
            }
            // Sluice's own words (the size and the limit), which the client needs.
            DeliveryError::TooLarge(why) => why.clone(),
            DeliveryError::Failed(_) => {
                "the event could not be delivered; retry (the cause is in the server log)".into()
            }
            DeliveryError::Unauthorized(_) => {
                "the sink does not allow this gateway to write there yet; retry later (an operator must grant it)".into()
            }
            DeliveryError::SpoolFull => self.to_string(),
            DeliveryError::SpoolFailed(_) => {
                "the sink is unavailable and the event could not be spooled; retry".into()
            }
        }
    }
}

impl DeliveryError {
    /// Whether the same record could succeed later (answered 503 + Retry-After).
    pub fn retriable(&self) -> bool {
        self.status() == 503
    }

    /// The HTTP status an event that failed this way gets.
    pub fn status(&self) -> u16 {
        self.code().status()
    }
}

/// Outcome of one `publish`: one entry per record, in order.
pub type Receipts = Vec<Result<(), DeliveryError>>;

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Label for metrics and logs.
    fn kind(&self) -> &'static str;

    /// Publishes the records and waits until each is durable or has failed.
    async fn publish(&self, records: Vec<Record>) -> Receipts;

    /// [`Sink::publish`], but stops waiting at `deadline`: records not acknowledged by then
    /// are reported [`DeliveryError::TimedOut`] (and may still become durable later). Sinks
    /// that always answer quickly need not override it.
    async fn publish_until(
        &self,
        records: Vec<Record>,
        _deadline: tokio::time::Instant,
    ) -> Receipts {
        self.publish(records).await
    }

    /// Cheap, non-blocking: can the sink take records now? Background probes keep it current.
    fn is_ready(&self) -> bool;

    /// Why the sink is not ready, or what it cannot do while ready (a topic it may not write),
    /// for `/readyz`.
    fn problem(&self) -> Option<String> {
        None
    }

    /// Why the sink could never take `record` (over its size limit), if it could not: such
    /// an event is refused at ingest, never acknowledged, spooled or retried.
    fn refuses(&self, _record: &Record) -> Option<String> {
        None
    }

    /// Waits for everything in flight, at most `timeout`. Called once at shutdown.
    async fn flush(&self, timeout: Duration) -> Result<(), DeliveryError>;
}

/// Builds the sink named by `sink.kind`.
/// `kafka`: the Kafka security settings [`crate::check`] built (their secrets read), needed
/// when `sink.kind = "kafka"`.
pub async fn from_config(
    config: &Config,
    kafka: Option<KafkaSecurity>,
) -> anyhow::Result<Arc<dyn Sink>> {
    Ok(match config.sink.kind {
        SinkKind::Blackhole => {
            tracing::warn!(
                "sink.kind = \"blackhole\": every event is answered 200 and DROPPED; for benchmarks only"
            );
            Arc::new(BlackholeSink::default())
        }
        SinkKind::File => Arc::new(FileSink::open(&config.file.dir)?),
        SinkKind::Kafka => {
            let security = match kafka {
                Some(s) => s,
                None => KafkaSecurity::from_config(&config.kafka)?,
            };
            Arc::new(KafkaSink::new(&config.kafka, security).await?)
        }
        SinkKind::Kinesis => Arc::new(KinesisSink::new(&config.kinesis).await?),
    })
}
