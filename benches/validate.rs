//! The cost of schema validation on the hot path, per event: parsing `data` and running the
//! compiled validator (`ValidatorCache::validate`), for a small event and a ~1 KB one.
//!
//!     cargo bench --bench validate

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use sluice::config::LimitsConfig;
use sluice::event::{decode_body, BodyFormat};
use sluice::registry::{Catalog, StoredSchema, ValidatorCache};

fn bench(c: &mut Criterion) {
    let small_schema = json!({
        "type": "object",
        "properties": {"path": {"type": "string", "maxLength": 2048}, "referrer": {"type": "string"}},
        "required": ["path"], "additionalProperties": false
    });
    let item = json!({"type": "object", "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z0-9-]{4,32}$"}, "qty": {"type": "integer", "minimum": 1},
        "price": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR", "USD", "GBP"]}},
        "required": ["sku", "qty", "price"], "additionalProperties": false});
    let order_schema = json!({
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "format": "uuid"},
            "customer": {"type": "object", "properties": {
                "id": {"type": "string"}, "email": {"type": "string", "format": "email"},
                "tier": {"enum": ["free", "team", "enterprise"]}, "country": {"type": "string", "minLength": 2, "maxLength": 2}},
                "required": ["id"], "additionalProperties": false},
            "items": {"type": "array", "items": item, "minItems": 1, "maxItems": 100},
            "total": {"type": "number"}, "coupon": {"type": ["string", "null"]},
            "shipping": {"type": "object", "properties": {"method": {"type": "string"}, "address": {"type": "string"}}},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}
        },
        "required": ["order_id", "customer", "items", "total"]
    });
    let stored = |subject: &str, id: u32, schema| StoredSchema {
        subject: subject.into(),
        version: 1,
        schema,
        origin: "bench".into(),
        id: Some(id),
    };
    let catalog = Catalog::compile(&[
        stored("web.page_view", 1, small_schema),
        stored("shop.order", 2, order_schema),
    ])
    .unwrap();

    let small = json!({"type": "web.page_view", "source": "/web", "id": "e1", "data": {"path": "/pricing", "referrer": "https://example.com/"}});
    let items: Vec<_> = (0..9)
        .map(|i| json!({"sku": format!("SKU-{i:04}-ABCD"), "qty": i + 1, "price": 19.99, "currency": "EUR"}))
        .collect();
    let order = json!({"type": "shop.order", "source": "/shop", "id": "e2", "data": {
        "order_id": "0191c1a6-7d2e-7b31-9c1e-2f8d3a4b5c6d",
        "customer": {"id": "cus_8f2k3j4h5g6", "email": "someone@example.com", "tier": "team", "country": "DE"},
        "items": items, "total": 419.79, "coupon": null,
        "shipping": {"method": "express", "address": "Hauptstrasse 1, 10115 Berlin, Germany"},
        "tags": ["first-order", "newsletter", "mobile"]}});
    let limits = LimitsConfig::default();
    let mut group = c.benchmark_group("validate");
    for (name, ev) in [("small", &small), ("order_1kb", &order)] {
        let body = Bytes::from(ev.to_string());
        let event = decode_body(BodyFormat::Structured, &body, &limits)
            .unwrap()
            .remove(0)
            .unwrap();
        let data_len = event.data.as_ref().map_or(0, Bytes::len);
        eprintln!("{name}: data is {data_len} bytes");
        if let Err(e) = ValidatorCache::validate(&catalog, &event) {
            let r = catalog
                .resolve(&event.ty, event.schema_version)
                .map(|c| (c.subject.clone(), c.id));
            panic!("{name} ({}): {e:?} resolved {r:?}", event.ty);
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| ValidatorCache::validate(black_box(&catalog), black_box(&event)).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
