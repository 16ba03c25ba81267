//! The Kafka sink against Apache Kafka over TCP: what lands in the topic, and
//! what the client is told when the broker is gone.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::HumanDuration;

use crate::support::kafka::{broker_behind_proxy, brokers, consume, consume_ids, create_topic};
use crate::support::{strict_schema, unique, TestServer, Workspace};

/// A fresh event type with the strict schema, and its (created) topic.
async fn fresh_type(ws: &Workspace, brokers: &str) -> (String, String) {
    let ty = unique("it.kafka.");
    ws.schema(&ty, 1, strict_schema());
    let topic = format!("events.{ty}");
    create_topic(brokers, &topic, 3).await;
    (ty, topic)
}

#[tokio::test]
async fn kafka_thousand_events_in_batches_arrive_exactly_once_with_key_headers_and_value() {
    let brokers = brokers();
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, &brokers).await;
    let s = TestServer::start_ready(ws.kafka_config(&brokers)).await;

    let mut answered = Vec::new();
    for batch in 0..10 {
        let events: Vec<_> = (0..100)
            .map(|j| {
                let i = batch * 100 + j;
                json!({"type": ty, "id": format!("e-{i}"), "source": "/it", "partitionkey": format!("user-{}", i % 7),
                       "time": "2026-11-23T12:00:00Z", "data": {"n": i}})
            })
            .collect();
        let a = s.send_json(&json!(events)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["accepted"], 100);
        answered.extend(a.ids_with_status(200));
    }
    let expected: Vec<String> = (0..1000).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        answered, expected,
        "the answers list every id in request order"
    );

    let records = consume(&brokers, &topic, 1000, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1000, "exactly once: no loss, no duplicates");
    let mut seen = HashSet::new();
    let mut partitions_by_key: HashMap<String, HashSet<i32>> = HashMap::new();
    for r in &records {
        let i: u64 = r.id().strip_prefix("e-").unwrap().parse().unwrap();
        assert!(seen.insert(i), "duplicate {}", r.id());
        assert_eq!(r.key, format!("user-{}", i % 7));
        assert_eq!(r.value, json!({"n": i}));
        assert_eq!(r.headers["ce_type"], ty);
        assert_eq!(r.headers["ce_source"], "/it");
        assert_eq!(r.headers["ce_specversion"], "1.0");
        assert_eq!(r.headers["ce_time"], "2026-11-23T12:00:00Z");
        assert_eq!(r.headers["ce_partitionkey"], r.key);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["sluice_schema_version"], "1");
        assert!(r.headers["sluice_received_time"].ends_with('Z'));
        partitions_by_key
            .entry(r.key.clone())
            .or_default()
            .insert(r.partition);
    }
    for (key, parts) in partitions_by_key {
        assert_eq!(parts.len(), 1, "key {key} spread over partitions {parts:?}");
    }
    // Order within a key follows request order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for r in &records {
        let i: u64 = r.id().strip_prefix("e-").unwrap().parse().unwrap();
        if let Some(prev) = last.insert(&r.key, i) {
            assert!(prev < i, "key {} went back from {prev} to {i}", r.key);
        }
    }
}

#[tokio::test]
async fn kafka_partial_batch_only_valid_events_reach_the_topic() {
    let brokers = brokers();
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, &brokers).await;
    let s = TestServer::start_ready(ws.kafka_config(&brokers)).await;
    let events: Vec<_> = (0..10)
        .map(|i| {
            let data = if i % 2 == 0 {
                json!({"n": i})
            } else {
                json!({"n": format!("{i}")})
            };
            json!({"type": ty, "id": format!("p-{i}"), "data": data})
        })
        .collect();
    let a = s.send_json(&json!(events)).await;
    assert_eq!(a.status, 207, "{}", a.body);
    for i in (1..10).step_by(2) {
        assert_eq!(a.result(i)["error"]["pointer"], "/data/n");
        assert_eq!(a.result(i)["error"]["code"], "schema_violation");
    }
    let records = consume(&brokers, &topic, 5, Duration::from_secs(20)).await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.id()).collect();
    ids.sort();
    assert_eq!(ids, ["p-0", "p-2", "p-4", "p-6", "p-8"]);
}

#[tokio::test]
async fn kafka_broker_unreachable_gives_503_retry_after_within_delivery_timeout_and_unready() {
    // A broker of our own, reached only through a proxy we can cut.
    let (broker, proxy) = broker_behind_proxy().await;
    let brokers = proxy.addr.to_string();
    let ws = Workspace::new();
    let (ty, _topic) = fresh_type(&ws, &brokers).await;
    let mut config = ws.kafka_config(&brokers);
    let delivery_timeout = Duration::from_secs(3);
    config.kafka.delivery_timeout_ms = delivery_timeout.as_millis() as u64;
    config.kafka.probe_interval = HumanDuration(Duration::from_millis(300));
    let s = TestServer::start_ready(config).await;
    assert_eq!(
        s.send_json(&json!({"type": ty, "data": {"n": 1}}))
            .await
            .status,
        200
    );

    proxy.cut();
    let started = Instant::now();
    let a = s
        .send_json(&json!([{"type": ty, "data": {"n": 2}}, {"type": ty, "data": {"n": 3}}]))
        .await;
    let took = started.elapsed();
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.code(), "sink_unavailable");
    assert!(
        a.retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "Retry-After: {:?}",
        a.retry_after
    );
    assert!(
        took <= delivery_timeout + Duration::from_secs(2),
        "answered after {took:?}"
    );
    s.wait_ready(false, Duration::from_secs(10)).await;
    let ready = s.get("/readyz").await.body;
    assert_eq!(ready["checks"]["sink"]["ready"], false);

    // Back again: ready, and events flow.
    proxy.restore();
    s.wait_ready(true, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = s.send_json(&json!({"type": ty, "data": {"n": 4}})).await;
        if a.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", a.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(broker);
}

#[tokio::test]
async fn kafka_admission_refuses_past_the_inflight_bound_with_retry_after_and_recovers() {
    let brokers = brokers();
    let ws = Workspace::new();
    let (ty, _topic) = fresh_type(&ws, &brokers).await;
    // A type whose topic does not exist: its events wait for delivery_timeout, holding their
    // admission the whole time, as a stalled broker would.
    let stuck = unique("it.stuck.");
    ws.schema(&stuck, 1, strict_schema());
    let mut c = ws.kafka_config(&brokers);
    c.kafka.delivery_timeout_ms = 3000;
    c.limits.max_events = 5;
    c.limits.max_inflight_events = 5;
    c.limits.admission_wait = HumanDuration(Duration::from_millis(100));
    let s = TestServer::start_ready(c).await;

    let mut hanging = Vec::new();
    for i in 0..5 {
        let (s, stuck) = (&s, &stuck);
        hanging.push(async move { s.send_json(&json!({"type": stuck, "data": {"n": i}})).await });
    }
    let hanging = futures_util::future::join_all(hanging);
    let probe = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let a = s.send_json(&json!({"type": ty, "data": {"n": 99}})).await;
        (a, started.elapsed())
    };
    let (stuck_answers, (refused, took)) = tokio::join!(hanging, probe);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.code(), "overloaded");
    let retry: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert!(
        took < Duration::from_secs(1),
        "refused after the admission wait, not the delivery timeout: {took:?}"
    );
    for a in stuck_answers {
        assert_eq!(a.status, 503, "{}", a.body);
    }
    // The stuck events are answered: their admission is released and traffic flows again.
    let a = s.send_json(&json!({"type": ty, "data": {"n": 100}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn kafka_dead_letters_carry_the_error_and_the_bytes_sent_and_are_capped() {
    let brokers = brokers();
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, &brokers).await;
    let dlq = format!("dlq.{ty}");
    create_topic(&brokers, &dlq, 1).await;
    create_topic(&brokers, "dlq._unregistered", 1).await;
    let mut c = ws.kafka_config(&brokers);
    c.routes.dead_letter_topic = Some("dlq.{type}".into());
    c.routes.dead_letter_rate = 2;
    let s = TestServer::start_ready(c).await;

    // Raw text, so that the bytes (order, spacing) are exactly the client's.
    let body = format!(
        r#"[{{"type": "{ty}", "id": "ok-1", "data": {{"n": 1}}}}, {{"type": "{ty}", "id": "bad-1", "data": {{"n": "one",  "kept": "as sent"}}}}]"#
    );
    let a = s.send("application/cloudevents-batch+json", body).await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(
        a.result(1)["error"]["code"],
        "schema_violation",
        "the client is still told"
    );
    let dead = consume(&brokers, &dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.id(), "bad-1");
    assert_eq!(d.headers["sluice_error_code"], "schema_violation");
    assert!(
        d.headers["sluice_error_pointer"].starts_with("/data"),
        "{:?}",
        d.headers
    );
    assert_eq!(
        String::from_utf8_lossy(&d.raw_value),
        r#"{"n": "one",  "kept": "as sent"}"#,
        "the data bytes as the client sent them"
    );
    assert_eq!(
        consume(&brokers, &topic, 1, Duration::from_secs(10))
            .await
            .len(),
        1,
        "only the valid event in the topic"
    );

    // An event of a type nobody registered: its dead letter goes to the one topic all such
    // types share, not to one named after whatever the client sent.
    let unregistered = unique("it.nope.");
    let a = s
        .send_json(&json!({"type": unregistered, "id": "nope-1", "data": {}}))
        .await;
    assert_eq!((a.status, a.code()), (400, "unknown_type"), "{}", a.body);
    let shared = consume_ids(
        &brokers,
        "dlq._unregistered",
        &["nope-1".to_string()],
        Duration::from_secs(30),
    )
    .await;
    let d = shared
        .iter()
        .find(|r| r.id() == "nope-1")
        .expect("the dead letter of an unregistered type");
    assert_eq!(d.headers["ce_type"], unregistered);
    assert_eq!(d.headers["sluice_error_code"], "unknown_type");

    // A flood of bad events: at most the cap (2/s, a 1 s burst) reaches the dead-letter topic.
    let flood: Vec<_> = (0..10)
        .map(|i| json!({"type": ty, "id": format!("flood-{i}"), "data": {"n": "x"}}))
        .collect();
    assert_eq!(s.send_json(&json!(flood)).await.status, 400);
    let dead = consume(&brokers, &dlq, 12, Duration::from_secs(5)).await;
    let flooded = dead.iter().filter(|r| r.id().starts_with("flood-")).count();
    assert!(flooded <= 2, "{flooded} dead letters passed a cap of 2/s");
    assert!(s
        .metrics()
        .await
        .contains(r#"sluice_dead_letters_total{result="capped"}"#));
}

#[tokio::test]
async fn kafka_records_over_message_max_bytes_are_refused_at_ingest_not_spooled() {
    let brokers = brokers();
    let ws = Workspace::new();
    let ty = unique("it.kafka.big.");
    ws.schema(&ty, 1, json!({"type": "object"}));
    let topic = format!("events.{ty}");
    create_topic(&brokers, &topic, 1).await;
    let mut c = ws.kafka_config(&brokers);
    c.kafka
        .properties
        .insert("message.max.bytes".into(), "4000".into());
    // Acknowledged once spooled: a record the sink can never take would be answered 200 and
    // then refused for good at replay.
    c.spool.enabled = true;
    c.spool.dir = ws.path().join("spool");
    c.routes.ack = sluice::config::Ack::Spool;
    let s = TestServer::start_ready(c).await;
    let event = |id: &str, n: usize| json!({"type": ty, "id": id, "data": {"pad": "x".repeat(n)}});
    let a = s
        .send_json(&json!([event("big", 5000), event("small", 100)]))
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.result(0)["status"], 413);
    assert_eq!(a.result(0)["error"]["code"], "record_too_large");
    let msg = a.result(0)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("message.max.bytes"), "{msg}");
    assert_eq!(a.result(1)["status"], 200);
    let records = consume(&brokers, &topic, 1, Duration::from_secs(20)).await;
    assert_eq!(
        records.iter().map(|r| r.id()).collect::<Vec<_>>(),
        ["small"]
    );
    let m = s.metrics().await;
    assert!(!m.contains("sluice_spool_quarantined_total 1"), "{m}");
}
