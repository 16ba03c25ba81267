//! Instructions per event on the two hot paths, for the CI gate (`scripts/instructions`, which
//! runs this under valgrind and compares with `benches/instructions.baseline`). Instruction
//! counts are the same run after run on a busy machine, unlike seconds.
//!
//!     instructions gateway BATCHES   authenticate (HS256 JWT, token cache as deployed),
//!                                    decode a 100-event batch, validate against the
//!                                    repository's schemas, route, build records (blackhole sink)
//!     instructions kafka BATCHES     hand the same 100 records to librdkafka (headers, key,
//!                                    value copied into its queue; no broker, nothing sent)
//!
//! Events are the load generator's (~1 KB page views). The script runs each workload twice
//! with different batch counts and divides the difference, so start-up costs cancel out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use serde_json::json;
use sluice::auth::Authenticator;
use sluice::config::{
    AuthConfig, LimitsConfig, RateLimitsConfig, RoutesConfig, Secret, StaticKeyConfig,
};
use sluice::event::{decode_body, BodyFormat};
use sluice::pipeline::{Pipeline, RateLimiter, TopicRouter};
use sluice::registry::{DirStore, ValidatorCache};
use sluice::sink::{BlackholeSink, DeliveryError, Receipts, Record, Sink};
use sluice_loadtest::gen::Generator;

const SECRET: &str = "bench-secret-bench-secret-bench-32";
const EVENTS: usize = 100;

/// Keeps what the pipeline built, to hand to librdkafka outside the measured pipeline.
#[derive(Default)]
struct Capture(Mutex<Vec<Record>>);

#[async_trait]
impl Sink for Capture {
    fn kind(&self) -> &'static str {
        "capture"
    }

    async fn publish(&self, records: Vec<Record>) -> Receipts {
        let receipts = records.iter().map(|_| Ok(())).collect();
        self.0.lock().unwrap().extend(records);
        receipts
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), DeliveryError> {
        Ok(())
    }
}

fn pipeline(rt: &tokio::runtime::Runtime, sink: Arc<dyn Sink>) -> Pipeline {
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let validators = rt
        .block_on(ValidatorCache::load(Arc::new(DirStore::new(schemas))))
        .unwrap();
    Pipeline {
        validators: Arc::new(validators),
        router: TopicRouter::from_config(&RoutesConfig::default()).unwrap(),
        sink,
        dead_letter_cap: RateLimiter::from_config(&RateLimitsConfig::default()),
        spool: None,
        ack_timeout: Duration::from_secs(2),
    }
}

fn batch() -> Bytes {
    let mut gen = Generator::new("instructions", 0, 1024);
    let events: Vec<_> = (0..EVENTS).map(|_| gen.event().1).collect();
    Bytes::from(serde_json::to_vec(&events).unwrap())
}

fn authenticator() -> (Authenticator, HeaderMap) {
    let config = AuthConfig {
        keys: vec![StaticKeyConfig {
            kid: Some("hs".into()),
            algorithm: "HS256".into(),
            secret: Some(Secret::from(SECRET.to_string())),
            ..Default::default()
        }],
        ..AuthConfig::default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".into());
    let claims = json!({"sub": "bench", "tenant": "acme", "scope": "events:write:*", "iat": now, "exp": now + 3600});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    (Authenticator::from_config(&config).unwrap(), headers)
}

fn gateway(batches: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pipeline = pipeline(&rt, Arc::new(BlackholeSink::default()));
    let (auth, headers) = authenticator();
    let body = batch();
    let limits = LimitsConfig::default();
    for _ in 0..batches {
        let principal = rt
            .block_on(auth.authenticate(&headers, None, None))
            .unwrap()
            .expect("a principal");
        let decoded = decode_body(BodyFormat::Batch, &body, &limits).unwrap();
        let outcomes = rt.block_on(pipeline.process(decoded, Some(&principal)));
        assert!(
            outcomes.iter().all(|o| o.status == 200),
            "{:?}",
            &outcomes[0]
        );
    }
}

fn kafka(batches: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let capture = Arc::new(Capture::default());
    let pipeline = pipeline(&rt, capture.clone());
    let decoded = decode_body(BodyFormat::Batch, &batch(), &LimitsConfig::default()).unwrap();
    rt.block_on(pipeline.process(decoded, None));
    let records = std::mem::take(&mut *capture.0.lock().unwrap());
    assert_eq!(records.len(), EVENTS);
    // The gateway's producer settings, no brokers (so no connection attempts run beside the
    // count), and a queue that holds every record of the run.
    let producer: FutureProducer = ClientConfig::new()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("log_level", "0")
        .create()
        .unwrap();
    let _guard = rt.enter();
    let mut pending = Vec::with_capacity(batches * EVENTS);
    for _ in 0..batches {
        for r in &records {
            pending.push(sluice::sink::kafka::enqueue(&producer, r).unwrap());
        }
    }
    // Out without purging or destroying the producer: the delivery reports a purge makes are
    // handled by librdkafka's threads, more or fewer of them before exit from run to run.
    assert_eq!(pending.len(), batches * EVENTS);
    std::process::exit(0);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_default();
    // `cargo bench` runs every bench binary with `--bench`: nothing to do then.
    let Some(batches) = args.next().and_then(|n| n.parse().ok()) else {
        eprintln!("usage: instructions gateway|kafka BATCHES (see scripts/instructions)");
        return;
    };
    match workload.as_str() {
        "gateway" => gateway(batches),
        "kafka" => kafka(batches),
        other => panic!("unknown workload {other:?}"),
    }
}
