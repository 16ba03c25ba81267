//! Faults under load, against a real broker reached through a proxy the test controls: the
//! connection cut, a broker that stops answering, a broker killed and restarted, a full spool.
//! Every test records each id answered 200 and audits the topic afterwards: nothing
//! acknowledged may be missing; duplicates are counted and printed.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::{Ack, Config, HumanDuration};

use crate::support::kafka::{broker_behind_proxy, consume, consume_ids, create_topic};
use crate::support::load::{audit_topic, Load, Shape};
use crate::support::proxy::Proxy;
use crate::support::{strict_schema, unique, TestServer, Workspace};

/// How long the broker stays cut in the 30-second tests (`SLUICE_TEST_CUT_SECS` shortens it
/// when iterating locally).
fn cut_for() -> Duration {
    Duration::from_secs(
        std::env::var("SLUICE_TEST_CUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    )
}

struct Setup {
    ws: Workspace,
    ty: String,
    topic: String,
    brokers: String,
}

async fn setup(proxy: &Proxy) -> Setup {
    let ws = Workspace::new();
    let ty = unique("it.fault.");
    ws.schema(&ty, 1, strict_schema());
    let topic = format!("events.{ty}");
    let brokers = proxy.addr.to_string();
    create_topic(&brokers, &topic, 2).await;
    Setup {
        ws,
        ty,
        topic,
        brokers,
    }
}

impl Setup {
    fn config(&self, spool: bool) -> Config {
        let mut c = self.ws.kafka_config(&self.brokers);
        c.kafka.delivery_timeout_ms = 3000;
        c.kafka.probe_interval = HumanDuration(Duration::from_millis(300));
        if let Ok(d) = std::env::var("SLUICE_TEST_KAFKA_DEBUG") {
            c.kafka.properties.insert("debug".into(), d);
        }
        if spool {
            c.spool.enabled = true;
            c.spool.dir = self.ws.path().join("spool");
            c.spool.ack_timeout = HumanDuration(Duration::from_millis(500));
        }
        c
    }
}

fn shape() -> Shape {
    Shape {
        clients: 4,
        batch: 10,
        pause: Duration::from_millis(20),
        tolerate_connection_errors: false,
    }
}

/// Waits until the sink's probe noticed the broker is gone.
async fn wait_sink_down(s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/readyz").await.body["checks"]["sink"]["ready"] != false {
        assert!(Instant::now() < deadline, "the sink still looks ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn fault_broker_cut_with_spool_no_503_and_everything_replayed_in_order_per_key() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let t = setup(&proxy).await;
    let s = TestServer::start_ready(t.config(true)).await;
    let load = Load::start(&s.url, &t.ty, shape());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_cut = load.acked_so_far();
    proxy.cut();
    tokio::time::sleep(cut_for()).await;
    let during_cut = load.acked_so_far() - before_cut;
    proxy.restore();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop().await;
    s.wait_spool_drained(Duration::from_secs(60)).await;

    eprintln!("[cut+spool] statuses {:?}", report.statuses);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(report.refused(), 0, "the spool took over: no 429/503");
    assert!(
        during_cut > 0,
        "events were acknowledged while the broker was cut"
    );
    let a = audit_topic(&t.brokers, &t.topic, &report).await;
    a.assert_nothing_lost("cut+spool");
    assert!(
        a.out_of_order_keys.is_empty(),
        "keys out of order: {:?}",
        a.out_of_order_keys
    );
    let m = s.metrics().await;
    assert!(metric(&m, "sluice_spool_appended_total") >= during_cut as f64);
    assert!(metric(&m, "sluice_spool_replayed_total") >= during_cut as f64);
}

#[tokio::test]
async fn fault_broker_cut_without_spool_gives_503_retry_after_and_loses_nothing_acknowledged() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let t = setup(&proxy).await;
    let s = TestServer::start_ready(t.config(false)).await;
    let load = Load::start(&s.url, &t.ty, shape());
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.cut();
    tokio::time::sleep(cut_for()).await;
    proxy.restore();
    let restored = load.acked_so_far();
    // Recovery: acknowledgements resume once the broker is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked_so_far() <= restored {
        assert!(Instant::now() < deadline, "no recovery after the cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;

    eprintln!("[cut, no spool] statuses {:?}", report.statuses);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(report.count(503) > 0, "the cut was noticed");
    assert_eq!(report.missing_retry_after, 0, "every 503 has Retry-After");
    audit_topic(&t.brokers, &t.topic, &report)
        .await
        .assert_nothing_lost("cut, no spool");
}

#[tokio::test]
async fn fault_broker_killed_and_restarted_loses_nothing_acknowledged() {
    let (mut kafka, proxy) = broker_behind_proxy().await;
    let t = setup(&proxy).await;
    let s = TestServer::start_ready(t.config(false)).await;
    let load = Load::start(&s.url, &t.ty, shape());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = load.acked_so_far();
    kafka.brokers[0].kill();
    // Down for longer than kafka.delivery_timeout_ms (3 s): records in flight time out and
    // their clients are told 503, then the broker recovers its log and takes writes again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    kafka.brokers[0].start().await;
    let restarted = load.acked_so_far();
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked_so_far() <= restarted {
        assert!(
            Instant::now() < deadline,
            "no recovery after the broker restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;

    eprintln!("[broker -9] statuses {:?}", report.statuses);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(before > 0);
    assert!(report.count(503) > 0, "the outage was noticed");
    assert_eq!(report.missing_retry_after, 0);
    audit_topic(&t.brokers, &t.topic, &report)
        .await
        .assert_nothing_lost("broker -9");
}

#[tokio::test]
async fn fault_a_broker_that_stops_answering_is_spooled_after_ack_timeout() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let t = setup(&proxy).await;
    let s = TestServer::start_ready(t.config(true)).await;
    assert_eq!(
        s.send_json(&json!({"type": t.ty, "id": "warm", "data": {"n": 0}}))
            .await
            .status,
        200
    );
    // Packets vanish: no reset, no answer. The broker looks slow, not gone.
    proxy.drop_traffic();
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let started = Instant::now();
        let a = s
            .send_json(&json!({"type": t.ty, "id": format!("slow-{i}"), "data": {"n": i}}))
            .await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert!(
        slowest < Duration::from_millis(500 + 1500),
        "answered within ack_timeout plus an fsync, not the delivery timeout: {slowest:?}"
    );
    proxy.restore();
    s.wait_spool_drained(Duration::from_secs(60)).await;
    let records = consume(&t.brokers, &t.topic, 6, Duration::from_secs(30)).await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids,
        ["slow-0", "slow-1", "slow-2", "slow-3", "slow-4", "warm"]
    );
}

#[tokio::test]
async fn fault_ack_spool_answers_from_the_spool_and_replays_whole_records() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let t = setup(&proxy).await;
    let mut c = t.config(true);
    c.routes.ack = Ack::Spool;
    let s = TestServer::start_ready(c).await;
    proxy.cut();
    wait_sink_down(&s).await;
    s.wait_ready(true, Duration::from_secs(5)).await;
    let started = Instant::now();
    let a = s
        .send_json(&json!([
            {"type": t.ty, "id": "sp-1", "partitionkey": "k", "data": {"n": 1}, "subject": "s"},
            {"type": t.ty, "id": "sp-2", "partitionkey": "k", "data": {"n": 2}}
        ]))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(started.elapsed() < Duration::from_millis(400));
    let ready = s.get("/readyz").await.body;
    assert_eq!(ready["checks"]["sink"]["ready"], false, "{ready}");
    assert!(ready["checks"]["spool"]["backlog_bytes"].as_u64().unwrap() > 0);
    proxy.restore();
    s.wait_spool_drained(Duration::from_secs(60)).await;
    let records = consume(&t.brokers, &t.topic, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let r = &records[0];
    assert_eq!(r.id(), "sp-1");
    assert_eq!(r.key, "k");
    assert_eq!(r.value, json!({"n": 1}));
    assert_eq!(r.headers["ce_type"], t.ty);
    assert_eq!(r.headers["ce_subject"], "s");
    assert_eq!(r.headers["sluice_schema_version"], "1");
    assert!(r.headers.contains_key("sluice_received_time"));
    assert_eq!(records[1].id(), "sp-2");
}

#[tokio::test]
async fn fault_a_full_spool_answers_503_spool_full_then_recovers() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let t = setup(&proxy).await;
    let mut c = t.config(true);
    c.limits.max_body_bytes = sluice::config::ByteSize(16 * 1024);
    c.limits.max_decompressed_bytes = sluice::config::ByteSize(16 * 1024);
    c.limits.max_event_bytes = sluice::config::ByteSize(16 * 1024);
    c.spool.max_bytes = sluice::config::ByteSize(64 * 1024);
    c.spool.segment_bytes = sluice::config::ByteSize(16 * 1024);
    let s = TestServer::start_ready(c).await;
    proxy.cut();
    wait_sink_down(&s).await;
    let mut accepted = Vec::new();
    let mut full = None;
    for i in 0..200 {
        let events: Vec<_> = (0..20)
            .map(|j| json!({"type": t.ty, "id": format!("f{i}-{j}"), "data": {"n": j}}))
            .collect();
        let a = s.send_json(&json!(events)).await;
        match a.status {
            200 => accepted.extend(a.ids_with_status(200)),
            503 => {
                full = Some(a);
                break;
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    let full = full.expect("the spool filled up");
    assert!(
        ["spool_full", "sink_unavailable"].contains(&full.code()),
        "{}",
        full.body
    );
    assert!(full.retry_after.is_some());
    assert!(!accepted.is_empty());
    proxy.restore();
    s.wait_spool_drained(Duration::from_secs(60)).await;
    let a = s
        .send_json(&json!({"type": t.ty, "id": "after", "data": {"n": 1}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    accepted.push("after".into());
    let records = consume_ids(&t.brokers, &t.topic, &accepted, Duration::from_secs(30)).await;
    let ids: std::collections::HashSet<&str> = records.iter().map(|r| r.id()).collect();
    let lost: Vec<_> = accepted
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "lost {lost:?}");
}
