//! The gateway's per-request work without HTTP: decoding a 100-event batch, and the whole
//! pipeline on it (decode, validate against the repository's schemas, route, build records,
//! hand them to the blackhole sink). Events are the load generator's (~1 KB page views).
//!
//!     cargo bench --bench pipeline

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::config::{LimitsConfig, RateLimitsConfig, RoutesConfig};
use sluice::event::{decode_body, BodyFormat};
use sluice::pipeline::{Pipeline, RateLimiter, TopicRouter};
use sluice::registry::{DirStore, ValidatorCache};
use sluice::sink::BlackholeSink;
use sluice_loadtest::gen::Generator;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let validators = rt
        .block_on(ValidatorCache::load(Arc::new(DirStore::new(schemas))))
        .unwrap();
    let pipeline = Pipeline {
        validators: Arc::new(validators),
        router: TopicRouter::from_config(&RoutesConfig::default()).unwrap(),
        sink: Arc::new(BlackholeSink::default()),
        dead_letter_cap: RateLimiter::from_config(&RateLimitsConfig::default()),
        spool: None,
        ack_timeout: Duration::from_secs(2),
    };
    let mut gen = Generator::new("bench", 0, 1024);
    let events: Vec<_> = (0..100).map(|_| gen.event().1).collect();
    let body = Bytes::from(serde_json::to_vec(&events).unwrap());
    eprintln!("batch body: {} bytes", body.len());
    let limits = LimitsConfig::default();

    let mut group = c.benchmark_group("batch_100");
    group.throughput(Throughput::Elements(100));
    group.bench_function("decode", |b| {
        b.iter(|| decode_body(BodyFormat::Batch, black_box(&body), &limits).unwrap())
    });
    let check = rt.block_on(pipeline.process(
        decode_body(BodyFormat::Batch, &body, &limits).unwrap(),
        None,
    ));
    assert!(check.iter().all(|o| o.status == 200), "{:?}", &check[..1]);
    group.bench_function("decode_validate_route_publish", |b| {
        b.iter(|| {
            let decoded = decode_body(BodyFormat::Batch, black_box(&body), &limits).unwrap();
            rt.block_on(pipeline.process(decoded, None))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
