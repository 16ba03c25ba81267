//! Kafka through librdkafka: idempotent producer, `acks=all`, one delivery future per record.
//! Pure mechanism: topics, keys and headers arrive decided.
//!
//! Readiness comes from a background metadata probe plus librdkafka's own "all brokers down"
//! error, so `/readyz` never blocks on the network.

pub mod check;
mod diagnose;
pub mod msk_iam;
pub mod token;

use std::error::Error;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{DeliveryError, Receipts, Record, Sink};
use crate::config::{KafkaConfig, KafkaSecurity, TokenSource};
use crate::telemetry;
pub use diagnose::Health;
use token::Tokens;

/// librdkafka callbacks, routed into tracing, readiness and the token source.
pub struct SinkContext {
    health: Arc<Health>,
    tokens: Option<Arc<Tokens>>,
    /// The probe's client: its log lines repeat the producer's (same brokers), so at debug.
    quiet: bool,
}

impl ClientContext for SinkContext {
    // librdkafka raises the refresh event only with sasl.mechanism=OAUTHBEARER.
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if self.quiet {
            tracing::debug!(target: "librdkafka", fac, "probe: {message}");
            return;
        }
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
            self.health.ready.store(false, Ordering::Relaxed);
        }
        // Refusals (credentials, certificates) are logged there, once per distinct cause.
        if self.health.client_error(&error, reason) {
            return;
        }
        if self.quiet {
            tracing::debug!(target: "librdkafka", %error, "probe: {reason}");
        } else {
            tracing::warn!(target: "librdkafka", %error, "{reason}");
        }
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or("sasl.mechanism is OAUTHBEARER but kafka.sasl_mechanism is not: set kafka.sasl_mechanism = \"OAUTHBEARER\" and kafka.oauth_* (or AWS_MSK_IAM)")?;
        let t = tokens.get_blocking()?;
        Ok(OAuthToken {
            token: t.value,
            principal_name: t.principal,
            lifetime_ms: t.expires_at_ms,
        })
    }
}

type Producer_ = FutureProducer<SinkContext>;

pub struct KafkaSink {
    inner: Arc<Inner>,
}

struct Inner {
    client_config: ClientConfig,
    /// Replaced whole when librdkafka reports a fatal error: an idempotent producer that hit
    /// one (fenced, sequence gap) refuses every later record, so a gateway must start a new one.
    producer: ArcSwap<Producer_>,
    /// A client of its own for the readiness probe (see [`probe`]); it never sends a record.
    prober: Arc<Producer_>,
    health: Arc<Health>,
    tokens: Option<Arc<Tokens>>,
    delivery_timeout: Duration,
    replacing: Mutex<()>,
    /// librdkafka's `message.max.bytes` (default 1 000 000): larger records are refused by
    /// the producer, and the brokers' limit is of the same order.
    max_message_bytes: usize,
}

impl KafkaSink {
    /// `security`: `config`'s security settings, already checked (see `crate::check`).
    pub async fn new(config: &KafkaConfig, security: KafkaSecurity) -> anyhow::Result<KafkaSink> {
        let cc = client_config(config, &security);
        let tokens = match &security.token {
            None => None,
            Some(source) => Some(Arc::new(tokens(source, config).await?)),
        };
        tracing::info!(brokers = %config.brokers.join(","), security = %security.summary, "Kafka sink");
        let health = Arc::new(Health::default());
        let producer = create(&cc, &health, &tokens, false).map_err(|e| {
            anyhow::anyhow!("cannot create the Kafka producer (check `kafka.*` settings): {e}")
        })?;
        let prober = create(&probe_config(&cc), &health, &tokens, true)?;
        let max_message_bytes = cc
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let inner = Arc::new(Inner {
            max_message_bytes,
            client_config: cc,
            producer: ArcSwap::from(producer),
            prober,
            health,
            tokens,
            delivery_timeout: Duration::from_millis(config.delivery_timeout_ms),
            replacing: Mutex::new(()),
        });
        tokio::spawn(probe(Arc::downgrade(&inner), config.probe_interval.0));
        Ok(KafkaSink { inner })
    }
}

/// Hands one record to librdkafka's queue (a copy into its buffers, no I/O): the per-record
/// cost of the hand-off, which `benches/instructions.rs` counts.
pub fn enqueue<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    r: &Record,
) -> Result<DeliveryFuture, KafkaError> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + r.extension_headers.len());
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
    producer.send_result(fr).map_err(|(e, _)| e)
}

/// librdkafka's settings: ours, the security ones, then `kafka.properties` over them.
pub fn client_config(config: &KafkaConfig, security: &KafkaSecurity) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", config.brokers.join(","))
        .set("client.id", &config.client_id)
        // No duplicates from the producer's own retries, no reordering within a partition.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &config.compression)
        .set("linger.ms", config.linger_ms.to_string())
        .set("message.timeout.ms", config.delivery_timeout_ms.to_string());
    for (k, v) in security.properties() {
        cc.set(k, v);
    }
    for (k, v) in &config.properties {
        cc.set(k, v);
    }
    cc
}

/// The settings of a client that only asks for metadata (the readiness probe, `kafka check`):
/// it sends no records, so it needs no producer id from the brokers.
fn probe_config(cc: &ClientConfig) -> ClientConfig {
    let mut probe = cc.clone();
    probe.set("enable.idempotence", "false");
    probe
}

/// The token maker for `source`.
pub async fn tokens(source: &TokenSource, _config: &KafkaConfig) -> anyhow::Result<Tokens> {
    let maker: Box<dyn token::MakeToken> = match source {
        TokenSource::Oidc {
            url,
            client_id,
            client_secret,
            scope,
        } => Box::new(token::Oidc {
            url: url.clone(),
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            scope: scope.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        }),
        TokenSource::MskIam { region } => {
            Box::new(msk_iam::MskIam::from_chain(region.clone()).await?)
        }
    };
    Ok(Tokens::new(maker, tokio::runtime::Handle::current()))
}

fn create(
    cc: &ClientConfig,
    health: &Arc<Health>,
    tokens: &Option<Arc<Tokens>>,
    quiet: bool,
) -> Result<Arc<Producer_>, KafkaError> {
    Ok(Arc::new(cc.create_with_context(SinkContext {
        health: health.clone(),
        tokens: tokens.clone(),
        quiet,
    })?))
}

impl Inner {
    /// Swaps in a new producer if `failed` (the one a publish used) is broken and is still the
    /// current one. Records in flight on the old producer finish or fail on their own.
    fn replace_if_broken(&self, failed: &Arc<Producer_>, state_error: Option<RDKafkaErrorCode>) {
        let (code, reason) = match (failed.client().fatal_error(), state_error) {
            (Some((code, reason)), _) => (code, reason),
            (None, Some(code)) => (
                code,
                "the broker refuses this producer's id or epoch".to_string(),
            ),
            (None, None) => return,
        };
        let _guard = self.replacing.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&self.producer.load_full(), failed) {
            return; // another request already replaced it
        }
        tracing::error!(?code, %reason, "Kafka producer is broken; starting a new one");
        match create(&self.client_config, &self.health, &self.tokens, false) {
            Ok(p) => {
                self.producer.store(p);
                metrics::counter!(telemetry::PRODUCER_RESTARTS, "sink" => "kafka").increment(1);
            }
            Err(e) => tracing::error!(error = %e, "could not create a new Kafka producer"),
        }
    }
}

/// Keeps `ready` current: a broker answered a metadata request within the interval.
///
/// The request goes through a client of its own. On the producer's connections it
/// waits behind the produce requests in flight (at most five per broker with idempotence), and
/// when a broker dies those wait, on every partition it follows, until the controller fences
/// it: on a 3-broker Apache Kafka with one killed, the producer's own metadata requests timed
/// out for those 3 s while the other brokers answered at once, and every request was refused
/// (every replica's `/readyz` at 503 at once) though the records waiting were all acknowledged
/// after the election. Refusing then would turn one broker's failure into an outage.
async fn probe(inner: Weak<Inner>, interval: Duration) {
    let timeout = interval.max(Duration::from_millis(500));
    loop {
        let Some(i) = inner.upgrade() else { return };
        let p = i.prober.clone();
        let health = i.health.clone();
        drop(i);
        let started = Instant::now();
        let ok = tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(None, timeout)
                .map_err(|e| tracing::debug!(error = %e, "Kafka probe failed"))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        tracing::debug!(ok, took = ?started.elapsed(), "Kafka probe");
        if health.probed(ok) != ok {
            if ok {
                tracing::info!("Kafka brokers reachable");
            } else {
                tracing::warn!(
                    reason = health.problem().unwrap_or_default(),
                    "Kafka brokers unreachable"
                );
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Errors that say the broker no longer accepts this producer's id or epoch. With Apache Kafka
/// they follow a broker that lost the producer's state or records (an unclean leader election,
/// a leader that came back with a truncated log), and librdkafka raises most of them as fatal:
/// the producer then refuses every later record. Where it does not raise them as fatal (seen
/// with a Kafka-protocol broker answering PRODUCER_FENCED to every produce after an epoch
/// bump), every later record still fails the same way. Either way only a new producer, with a
/// new id, writes again.
fn breaks_producer(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(
            c @ (C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::OutOfOrderSequenceNumber
            | C::UnknownProducerId
            | C::InvalidProducerIdMapping),
        ) => Some(c),
        _ => None,
    }
}

/// Errors that no retry fixes, listed by name; everything else is worth retrying later.
fn classify(error: &KafkaError) -> DeliveryError {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::QueueFull) => DeliveryError::QueueFull,
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => {
            DeliveryError::Unauthorized(error.to_string())
        }
        Some(C::MessageTimedOut) | Some(C::RequestTimedOut) => {
            DeliveryError::TimedOut(error.to_string())
        }
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
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

    fn refuses(&self, r: &Record) -> Option<String> {
        let max = self.inner.max_message_bytes;
        // Key, value and headers, as the record goes on the wire.
        let size = r.size() - r.topic.len();
        (size > max).then(|| {
            format!("the record is {size} bytes with its key and headers; Kafka takes at most {max} (kafka.properties.\"message.max.bytes\")")
        })
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        // librdkafka's own message.timeout.ms is not a bound on when we hear back: with the
        // idempotent producer and every broker connection down, reports were seen arriving
        // seconds late. Our deadline keeps the client's answer within the configured time. A
        // record reported failed here may still be written later (so a client retry can make a
        // duplicate), but nothing is ever acknowledged before its broker ack.
        let deadline = tokio::time::Instant::now() + self.inner.delivery_timeout;
        self.publish_until(records, deadline).await
    }

    async fn publish_until(
        &self,
        records: Vec<Record>,
        deadline: tokio::time::Instant,
    ) -> Receipts {
        let deadline = deadline.min(tokio::time::Instant::now() + self.inner.delivery_timeout);
        let producer = self.inner.producer.load_full();
        // Enqueue everything first (non-blocking), then wait: the batch shares linger time.
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            pending.push(enqueue(&producer, r));
        }
        let mut out = Vec::with_capacity(pending.len());
        let mut state_error = None;
        let health = &self.inner.health;
        let mut failed = |e: KafkaError, topic: &str| {
            state_error = state_error.or(breaks_producer(&e));
            let error = classify(&e);
            if let DeliveryError::Unauthorized(reason) = &error {
                health.denied(topic, reason);
            }
            Err(error)
        };
        for (p, r) in pending.into_iter().zip(&records) {
            out.push(match p {
                Err(e) => failed(e, &r.topic),
                Ok(future) => match tokio::time::timeout_at(deadline, future).await {
                    Ok(Ok(Ok(_))) => {
                        health.delivered(&r.topic);
                        Ok(())
                    }
                    Ok(Ok(Err((e, _)))) => failed(e, &r.topic),
                    Ok(Err(_)) => Err(DeliveryError::Failed("the producer was dropped".into())),
                    Err(_) => Err(DeliveryError::TimedOut(
                        "no broker acknowledgement within kafka.delivery_timeout_ms".into(),
                    )),
                },
            });
        }
        if out.iter().any(Result::is_err) {
            self.inner.replace_if_broken(&producer, state_error);
        }
        out
    }

    fn is_ready(&self) -> bool {
        self.inner.health.ready.load(Ordering::Relaxed)
    }

    fn problem(&self) -> Option<String> {
        self.inner.health.problem()
    }

    async fn flush(&self, timeout: Duration) -> Result<(), DeliveryError> {
        let p = self.inner.producer.load_full();
        tokio::task::spawn_blocking(move || p.flush(timeout))
            .await
            .map_err(|e| DeliveryError::Failed(e.to_string()))?
            .map_err(|e| classify(&e))
    }
}
