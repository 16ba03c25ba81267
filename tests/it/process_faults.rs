//! Faults that need Sluice as a real process: killed with -9 holding a spool, SIGTERM while
//! the broker is gone, 3x overload with its peak RSS, a damaged spool found at start.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::support::kafka::{broker_behind_proxy, brokers, consume, create_topic};
use crate::support::load::{audit_topic, Load, Shape};
use crate::support::process::Proc;
use crate::support::{free_port, strict_schema, unique, Workspace};

async fn fresh_topic(ws: &Workspace, brokers: &str) -> (String, String) {
    let ty = unique("it.pfault.");
    ws.schema(&ty, 1, strict_schema());
    let topic = format!("events.{ty}");
    create_topic(brokers, &topic, 2).await;
    (ty, topic)
}

fn env<'a>(pairs: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[tokio::test]
async fn fault_sluice_killed_with_a_spool_then_restarted_delivers_everything_acknowledged() {
    let brokers = brokers();
    let ws = Workspace::new();
    let (ty, topic) = fresh_topic(&ws, &brokers).await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let spooled = env(&[
        ("SLUICE_SINK__KIND", "kafka"),
        ("SLUICE_KAFKA__BROKERS", &nowhere),
        ("SLUICE_SPOOL__ENABLED", "true"),
        ("SLUICE_SPOOL__DIR", "spool"),
        ("SLUICE_ROUTES__ACK", "spool"),
    ]);
    let client = reqwest::Client::new();
    let mut p = Proc::spawn(ws.path(), &spooled);
    p.wait_ready(&client).await;
    let load = Load::start(
        &p.url,
        &ty,
        Shape {
            clients: 3,
            batch: 10,
            pause: Duration::from_millis(5),
            tolerate_connection_errors: true,
        },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Killed mid-load: appends in flight may leave a torn record behind.
    p.kill9();
    let report = load.stop().await;
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let acked = report.acked_ids().len();
    assert!(acked > 0, "{:?}", report.statuses);

    // Back, now with a broker: the spool is replayed.
    let mut restarted = spooled.clone();
    restarted[1].1 = brokers.clone();
    let p = Proc::spawn(ws.path(), &restarted);
    p.wait_ready(&client).await;
    p.wait_spool_drained(&client, Duration::from_secs(60)).await;
    let a = audit_topic(&brokers, &topic, &report).await;
    a.assert_nothing_lost("sluice -9 with spool");
    assert!(a.out_of_order_keys.is_empty(), "{:?}", a.out_of_order_keys);
}

#[tokio::test]
async fn fault_sigterm_with_the_broker_gone_leaves_everything_acknowledged_in_the_spool() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let brokers = proxy.addr.to_string();
    let ws = Workspace::new();
    let (ty, topic) = fresh_topic(&ws, &brokers).await;
    let grace = Duration::from_secs(8);
    let vars = env(&[
        ("SLUICE_SINK__KIND", "kafka"),
        ("SLUICE_KAFKA__BROKERS", &brokers),
        ("SLUICE_KAFKA__DELIVERY_TIMEOUT_MS", "3000"),
        ("SLUICE_KAFKA__PROBE_INTERVAL", "300ms"),
        ("SLUICE_SPOOL__ENABLED", "true"),
        ("SLUICE_SPOOL__DIR", "spool"),
        ("SLUICE_SPOOL__ACK_TIMEOUT", "500ms"),
        ("SLUICE_SERVER__DRAIN_DELAY", "500ms"),
        ("SLUICE_SERVER__SHUTDOWN_GRACE", "8s"),
    ]);
    let client = reqwest::Client::new();
    let mut p = Proc::spawn(ws.path(), &vars);
    p.wait_ready(&client).await;
    let load = Load::start(
        &p.url,
        &ty,
        Shape {
            clients: 3,
            batch: 10,
            pause: Duration::from_millis(10),
            tolerate_connection_errors: true,
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signalled = Instant::now();
    p.signal("TERM");
    let (status, p) = tokio::task::spawn_blocking(move || {
        let s = p.wait_exit(grace + Duration::from_secs(5));
        (s, p)
    })
    .await
    .unwrap();
    let exited_after = signalled.elapsed();
    let report = load.stop().await;
    drop(p);
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited_after <= grace,
        "exited {exited_after:?} after SIGTERM"
    );
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    eprintln!(
        "[sigterm, broker gone, spool] statuses {:?}",
        report.statuses
    );

    proxy.restore();
    let p = Proc::spawn(ws.path(), &vars);
    p.wait_ready(&client).await;
    p.wait_spool_drained(&client, Duration::from_secs(60)).await;
    let a = audit_topic(&brokers, &topic, &report).await;
    a.assert_nothing_lost("sigterm, broker gone, spool");
    assert!(a.out_of_order_keys.is_empty(), "{:?}", a.out_of_order_keys);
}

/// The bound asserted on Sluice's peak RSS under 3x overload (documented in docs/delivery.md).
const OVERLOAD_PEAK_RSS_MIB: u64 = 128;

#[tokio::test]
async fn fault_three_times_overload_refuses_with_retry_after_bounds_memory_and_recovers() {
    let (_broker, proxy) = broker_behind_proxy().await;
    let brokers = proxy.addr.to_string();
    let ws = Workspace::new();
    let (ty, topic) = fresh_topic(&ws, &brokers).await;
    // Admission holds 1000 events; 30 clients sending 100 at a time want 3000.
    let vars = env(&[
        ("SLUICE_SINK__KIND", "kafka"),
        ("SLUICE_KAFKA__BROKERS", &brokers),
        ("SLUICE_LIMITS__MAX_EVENTS", "100"),
        ("SLUICE_LIMITS__MAX_INFLIGHT_EVENTS", "1000"),
        ("SLUICE_LIMITS__ADMISSION_WAIT", "100ms"),
    ]);
    let client = reqwest::Client::new();
    let p = Proc::spawn(ws.path(), &vars);
    p.wait_ready(&client).await;
    let baseline = p.peak_rss_kib();
    // A slow broker: every chunk each way waits 200 ms.
    proxy.delay(Duration::from_millis(200));
    let load = Load::start(
        &p.url,
        &ty,
        Shape {
            clients: 30,
            batch: 100,
            pause: Duration::ZERO,
            tolerate_connection_errors: false,
        },
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let report = load.stop().await;
    let peak = p.peak_rss_kib();
    eprintln!(
        "[3x overload] statuses {:?}, peak RSS {} MiB (baseline {} MiB)",
        report.statuses,
        peak / 1024,
        baseline / 1024
    );
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(report.refused() > 0, "the overload was refused");
    assert!(report.count(200) > 0, "and some work got through");
    assert_eq!(
        report.missing_retry_after, 0,
        "every refusal has Retry-After"
    );
    assert!(
        peak / 1024 < OVERLOAD_PEAK_RSS_MIB,
        "peak RSS {} MiB over the {OVERLOAD_PEAK_RSS_MIB} MiB bound",
        peak / 1024
    );

    // Load drops (the broker is still slow): a lone client is served within 5 s.
    let dropped = Instant::now();
    loop {
        let r = client
            .post(format!("{}/v1/events", p.url))
            .header("content-type", "application/cloudevents+json")
            .body(json!({"type": ty, "id": "after-overload", "data": {"n": 1}}).to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "no recovery within 5 s: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("[3x overload] recovered in {:?}", dropped.elapsed());
    proxy.restore();
    audit_topic(&brokers, &topic, &report)
        .await
        .assert_nothing_lost("3x overload");
}

#[tokio::test]
async fn fault_a_torn_and_corrupted_spool_is_replayed_around_the_damage_and_reported() {
    let brokers = brokers();
    let ws = Workspace::new();
    let (_ty, topic) = fresh_topic(&ws, &brokers).await;
    let dir = ws.path().join("spool");
    {
        let (spool, _) = sluice::spool::Spool::open(&dir, 1 << 20, 1 << 20).unwrap();
        let records: Vec<_> = (0..5)
            .map(|i| sluice::sink::Record {
                topic: topic.clone(),
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from(format!("{{\"n\":{i}}}")),
                headers: vec![("ce_id", Bytes::from(format!("d-{i}")))],
                extension_headers: vec![],
            })
            .collect();
        spool.append(&records).await.unwrap();
    }
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let len0 = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    bytes[8 + len0 + 8 + 2] ^= 0x55; // inside record 1's payload: CRC mismatch
    bytes.truncate(bytes.len() - 3); // record 4 cut short: a torn tail
    std::fs::write(&seg, &bytes).unwrap();

    let log_path = ws.path().join("sluice.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let client = reqwest::Client::new();
    let p = Proc::spawn_logging(
        ws.path(),
        &env(&[
            ("SLUICE_SINK__KIND", "kafka"),
            ("SLUICE_KAFKA__BROKERS", &brokers),
            ("SLUICE_SPOOL__ENABLED", "true"),
            ("SLUICE_SPOOL__DIR", "spool"),
        ]),
        Stdio::from(log),
    );
    p.wait_ready(&client).await;
    p.wait_spool_drained(&client, Duration::from_secs(30)).await;
    let records = consume(&brokers, &topic, 3, Duration::from_secs(30)).await;
    let mut ids: Vec<&str> = records.iter().map(|r| r.id()).collect();
    ids.sort();
    assert_eq!(ids, ["d-0", "d-2", "d-3"]);
    let metrics = p.metrics(&client).await;
    assert!(
        metrics.contains("sluice_spool_damage_total{kind=\"torn_tail\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_spool_damage_total{kind=\"corrupt_record\"} 1"));
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("torn record"), "{logs}");
    assert!(logs.contains("failed their CRC check"), "{logs}");
    assert!(
        logs.contains("spool holds records from an earlier run"),
        "{logs}"
    );
}
