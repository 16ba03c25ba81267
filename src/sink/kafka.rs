//! Kafka through librdkafka: idempotent producer, `acks=all`, one delivery future per record.
//! Pure mechanism: topics, keys and headers arrive decided.
//!
//! Readiness comes from a background metadata probe plus librdkafka's own "all brokers down"
//! error, so `/readyz` never blocks on the network.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{DeliveryError, Receipts, Record, Sink};
use crate::config::KafkaConfig;

/// librdkafka callbacks, routed into tracing and the readiness flag.
pub struct SinkContext {
    ready: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.ready.store(false, Ordering::Relaxed);
        }
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

type Producer_ = FutureProducer<SinkContext>;

pub struct KafkaSink {
    producer: Arc<Producer_>,
    ready: Arc<AtomicBool>,
}

impl KafkaSink {
    pub fn new(config: &KafkaConfig) -> anyhow::Result<KafkaSink> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", config.brokers.join(","))
            .set("client.id", &config.client_id)
            // No duplicates from the producer's own retries, no reordering within a partition.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.compression)
            .set("linger.ms", config.linger_ms.to_string())
            .set("message.timeout.ms", config.delivery_timeout_ms.to_string());
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        let ready = Arc::new(AtomicBool::new(false));
        let producer: Producer_ = cc
            .create_with_context(SinkContext {
                ready: ready.clone(),
            })
            .map_err(|e| {
                anyhow::anyhow!("cannot create the Kafka producer (check `kafka.*` settings): {e}")
            })?;
        let producer = Arc::new(producer);
        tokio::spawn(probe(
            Arc::downgrade(&producer),
            ready.clone(),
            config.probe_interval.0,
        ));
        Ok(KafkaSink { producer, ready })
    }
}

/// Keeps `ready` current: a broker answered a metadata request within the interval.
async fn probe(producer: Weak<Producer_>, ready: Arc<AtomicBool>, interval: Duration) {
    let timeout = interval.max(Duration::from_millis(500));
    loop {
        let Some(p) = producer.upgrade() else { return };
        let ok =
            tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, timeout).is_ok())
                .await
                .unwrap_or(false);
        if ready.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("Kafka brokers reachable");
            } else {
                tracing::warn!("Kafka brokers unreachable");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Errors that no retry fixes, listed by name; everything else is worth retrying later.
fn classify(error: &KafkaError) -> DeliveryError {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::QueueFull) => DeliveryError::QueueFull,
        Some(C::MessageTimedOut) | Some(C::RequestTimedOut) => {
            DeliveryError::TimedOut(error.to_string())
        }
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::TopicAuthorizationFailed
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownTopicOrPartition,
        ) => DeliveryError::Rejected(error.to_string()),
        _ => DeliveryError::Failed(error.to_string()),
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        // Enqueue everything first (non-blocking), then wait: the batch shares linger time.
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let mut headers =
                OwnedHeaders::new_with_capacity(r.headers.len() + r.extension_headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(&v[..]),
                });
            }
            for (k, v) in &r.extension_headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(&v[..]),
                });
            }
            let fr = FutureRecord::to(&r.topic)
                .key(&r.key[..])
                .payload(&r.value[..])
                .headers(headers);
            pending.push(self.producer.send_result(fr).map_err(|(e, _)| classify(&e)));
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                Err(e) => Err(e),
                Ok(future) => match future.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(classify(&e)),
                    Err(_) => Err(DeliveryError::Failed("the producer was dropped".into())),
                },
            });
        }
        out
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    async fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.flush(timeout))
            .await
            .map_err(|e| DeliveryError::Failed(e.to_string()))?
            .map_err(|e| classify(&e))
    }
}
