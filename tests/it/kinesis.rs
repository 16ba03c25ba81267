//! The Kinesis sink against a real Kinesis API (moto in server mode), with a proxy in front that
//! counts PutRecords calls and fails chosen records as Kinesis does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::{ByteSize, HumanDuration, KinesisFormat};

use crate::support::kinesis::{create_stream, endpoint, read_stream, KinesisProxy};
use crate::support::{eventually, holds, strict_schema, unique, TestServer, Workspace, ANY};

/// A fresh event type with the strict schema, and its stream (`events.<type>`).
async fn fresh_stream(ws: &Workspace, shards: i32) -> (String, String) {
    let ty = unique("it.kinesis.");
    ws.schema(&ty, 1, strict_schema());
    let stream = format!("events.{ty}");
    create_stream(&endpoint(), &stream, shards).await;
    (ty, stream)
}

#[tokio::test]
async fn kinesis_events_land_across_shards_with_keys_and_the_envelope() {
    let ws = Workspace::new();
    let (ty, stream) = fresh_stream(&ws, 4).await;
    let proxy = KinesisProxy::start(&endpoint()).await;
    let s = TestServer::start_ready(ws.kinesis_config(&proxy.url)).await;

    // 10 requests of 100 at once: records of different requests share calls.
    let started = Instant::now();
    let sends = (0..10).map(|r| {
        let events: Vec<_> = (0..100)
            .map(|i| {
                json!({"type": ty, "id": format!("k-{r}-{i}"), "data": {"n": r * 100 + i},
                            "subject": "s1"})
            })
            .collect();
        let s = &s;
        async move { s.send_json(&json!(events)).await }
    });
    for a in futures_util::future::join_all(sends).await {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let took = started.elapsed();
    let records = read_stream(&endpoint(), &stream).await;
    assert_eq!(records.len(), 1000);
    let shards: HashSet<&str> = records.iter().map(|r| r.shard.as_str()).collect();
    assert!(shards.len() > 1, "keys spread over shards: {shards:?}");
    let mut ns = HashSet::new();
    for r in &records {
        let e = r.json();
        // No partitionkey extension: the key is the event id.
        assert_eq!(r.key, e["id"].as_str().unwrap());
        assert_eq!(e["type"], ty);
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["subject"], "s1");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["sluiceschemaversion"], "1");
        assert!(e["sluicereceivedtime"].is_string());
        ns.insert(e["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(ns.len(), 1000);
    let calls = proxy.seen().calls.len();
    eprintln!("[kinesis] 1000 events in {took:?} over {calls} PutRecords calls");
    assert!(calls <= 20, "{calls} calls for 1000 events");
    let ready = s.get("/readyz").await.body;
    assert_eq!(ready["checks"]["sink"]["kind"], "kinesis");
    assert_eq!(ready["checks"]["sink"]["ready"], true);
}

#[tokio::test]
async fn kinesis_only_failed_records_are_retried_and_order_per_key_holds() {
    let ws = Workspace::new();
    let (ty, stream) = fresh_stream(&ws, 2).await;
    let proxy = KinesisProxy::start(&endpoint()).await;
    let s = TestServer::start_ready(ws.kinesis_config(&proxy.url)).await;
    // Key "a" is throttled twice, then accepted; "b" and "c" always pass.
    proxy.fail("a", 2);
    let events: Vec<_> = (0..5)
        .flat_map(|i| {
            ["a", "b", "c"].map(|k| {
                json!({"type": ty, "id": format!("{k}{i}"), "partitionkey": k, "data": {"n": i}})
            })
        })
        .collect();
    let a = s.send_json(&json!(events)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let records = read_stream(&endpoint(), &stream).await;
    assert_eq!(records.len(), 15, "each event once");
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for r in &records {
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(r.json()["id"].as_str().unwrap().to_string());
    }
    for k in ["a", "b", "c"] {
        let want: Vec<String> = (0..5).map(|i| format!("{k}{i}")).collect();
        assert_eq!(per_key[k], want, "order of key {k}");
    }
    let seen = proxy.seen();
    assert_eq!(seen.failed, 2);
    let sent: usize = seen.calls.iter().map(|(keys, _)| keys.len()).sum();
    assert_eq!(
        sent, 17,
        "15 records plus a0 sent twice more: {:?}",
        seen.calls
    );
    let a_sent = seen
        .calls
        .iter()
        .flat_map(|(keys, _)| keys)
        .filter(|k| *k == "a")
        .count();
    assert_eq!(a_sent, 7);
    // A key never has two records in one call, so a retry cannot be overtaken.
    for (keys, _) in &seen.calls {
        let distinct: HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }
}

#[tokio::test]
async fn kinesis_a_record_failing_past_its_deadline_is_reported_failed_never_accepted() {
    let ws = Workspace::new();
    let (ty, stream) = fresh_stream(&ws, 1).await;
    let proxy = KinesisProxy::start(&endpoint()).await;
    let mut c = ws.kinesis_config(&proxy.url);
    c.kinesis.delivery_timeout = HumanDuration(Duration::from_secs(1));
    let s = TestServer::start_ready(c).await;
    proxy.fail("stuck", usize::MAX);
    let started = Instant::now();
    let a = s
        .send_json(&json!([
            {"type": ty, "id": "z1", "partitionkey": "stuck", "data": {"n": 1}},
            {"type": ty, "id": "ok1", "partitionkey": "fine", "data": {"n": 2}}
        ]))
        .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.result(0)["status"], 503);
    assert!(a.retry_after.is_some());
    assert_eq!(a.result(1)["status"], 200);
    let records = read_stream(&endpoint(), &stream).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["ok1"]);
    assert!(proxy.seen().failed >= 2, "retried until the deadline");
}

#[tokio::test]
async fn kinesis_limits_one_mebibyte_records_five_mebibyte_and_500_record_calls() {
    let ws = Workspace::new();
    ws.schema(ANY, 1, json!({}));
    let stream = unique("it.kinesis.limits.");
    create_stream(&endpoint(), &stream, 2).await;
    let proxy = KinesisProxy::start(&endpoint()).await;
    let mut c = ws.kinesis_config(&proxy.url);
    c.kinesis.format = KinesisFormat::Raw;
    c.routes.default_topic = stream.clone();
    c.limits.max_body_bytes = ByteSize(8 << 20);
    c.limits.max_decompressed_bytes = ByteSize(8 << 20);
    c.limits.max_event_bytes = ByteSize(2 << 20);
    c.limits.max_events = 2000;
    let s = TestServer::start_ready(c).await;

    // Raw data of exactly 1 MiB minus the key fits; one byte more does not.
    let key = "k1";
    let exact = "x".repeat((1 << 20) - key.len() - 2); // the JSON string's quotes count
    let a = s
        .send_json(&json!({"type": ANY, "id": "big", "partitionkey": key, "data": exact}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let over = "x".repeat((1 << 20) - key.len() - 1);
    let a = s
        .send_json(&json!({"type": ANY, "id": "over", "partitionkey": key, "data": over}))
        .await;
    assert_eq!(
        (a.status, a.code()),
        (413, "record_too_large"),
        "{}",
        a.body
    );

    // 12 records of ~600 KB (7 MB) in one request: calls stay under 5 MiB.
    let chunk = "y".repeat(600_000);
    let events: Vec<_> = (0..12)
        .map(|i| json!({"type": ANY, "id": format!("m{i}"), "data": chunk}))
        .collect();
    let a = s.send_json(&json!(events)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // 1200 small records with distinct keys: calls stay at 500 records.
    let events: Vec<_> = (0..1200)
        .map(|i| json!({"type": ANY, "id": format!("s{i}"), "data": i}))
        .collect();
    let a = s.send_json(&json!(events)).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let (sent, calls) = {
        let seen = proxy.seen();
        for (keys, bytes) in &seen.calls {
            assert!(keys.len() <= 500, "{} records in one call", keys.len());
            let with_keys = bytes + keys.iter().map(String::len).sum::<usize>();
            assert!(with_keys <= 5 << 20, "{with_keys} bytes in one call");
        }
        assert!(seen.calls.iter().any(|(k, _)| k.len() == 500));
        let calls: Vec<usize> = seen.calls.iter().map(|(k, _)| k.len()).collect();
        (calls.iter().sum::<usize>(), calls)
    };
    let records = read_stream(&endpoint(), &stream).await;
    let big_ones = records.iter().filter(|r| r.key == key).count();
    let medium = records.iter().filter(|r| r.data.len() == 600_002).count();
    assert_eq!((big_ones, medium), (1, 12));
    let small: HashSet<Vec<u8>> = records
        .iter()
        .filter(|r| r.data.len() < 10)
        .map(|r| r.data.clone())
        .collect();
    let missing: Vec<usize> = (0..1200)
        .filter(|i| !small.contains(i.to_string().as_bytes()))
        .collect();
    assert_eq!(
        records.len(),
        1 + 12 + 1200,
        "sent {sent} in calls {calls:?}; missing small {missing:?}"
    );
    let big = records.iter().find(|r| r.key == key).unwrap();
    assert_eq!(big.data.len() + key.len(), 1 << 20);
}

#[tokio::test]
async fn kinesis_hot_keys_keep_their_order_at_one_record_per_key_per_call() {
    let ws = Workspace::new();
    let (ty, stream) = fresh_stream(&ws, 2).await;
    let proxy = KinesisProxy::start(&endpoint()).await;
    let s = TestServer::start_ready(ws.kinesis_config(&proxy.url)).await;
    let events: Vec<_> = (0..500)
        .map(|i| {
            json!({"type": ty, "id": format!("h{i}"), "partitionkey": format!("hot{}", i % 5),
                        "data": {"n": i}})
        })
        .collect();
    let started = Instant::now();
    let a = s.send_json(&json!(events)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let took = started.elapsed();
    let calls = proxy.seen().calls.len();
    eprintln!("[kinesis] 500 events on 5 keys in {took:?} over {calls} PutRecords calls");
    assert!(
        calls >= 100,
        "at most one record per key per call: {calls} calls"
    );
    let records = read_stream(&endpoint(), &stream).await;
    assert_eq!(records.len(), 500);
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in &records {
        let n = r.json()["data"]["n"].as_u64().unwrap();
        if let Some(prev) = last.insert(r.key.clone(), n) {
            assert!(prev < n, "key {} went {prev} -> {n}", r.key);
        }
    }
}

#[tokio::test]
async fn kinesis_a_missing_stream_fails_its_events_and_readiness_follows_listed_streams() {
    let ws = Workspace::new();
    let (ty, stream) = fresh_stream(&ws, 1).await;
    let ghost = unique("it.kinesis.ghost.");
    ws.schema(&ghost, 1, strict_schema());
    let mut c = ws.kinesis_config(&endpoint());
    c.kinesis.streams = vec![stream.clone()];
    let s = TestServer::start_ready(c).await;
    let a = s
        .send_json(&json!([
            {"type": ty, "id": "real", "data": {"n": 1}},
            {"type": ghost, "id": "ghost", "data": {"n": 2}}
        ]))
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.result(0)["status"], 200);
    assert_eq!(a.result(1)["status"], 500);
    assert_eq!(a.result(1)["error"]["code"], "delivery_rejected");
    // The client gets the code and where to look, not AWS's words or the stream's name.
    let message = a.result(1)["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("ResourceNotFound") && !message.contains(&ghost),
        "{message}"
    );
    assert!(message.contains("x-request-id"), "{message}");
    // Over two probe intervals (300 ms each).
    holds(
        "one bad route does not unready the replica: readiness",
        Duration::from_millis(700),
        || async { s.readyz().await == 200 },
    )
    .await;

    // A listed stream that does not exist does.
    let mut c = ws.kinesis_config(&endpoint());
    c.kinesis.streams = vec![format!("events.{ghost}")];
    let s = TestServer::start(c).await;
    s.wait_ready(false, Duration::from_secs(10)).await;
    assert_eq!(s.get("/readyz").await.status, 503);
}

#[tokio::test]
async fn kinesis_throttling_holds_admission_so_new_work_gets_503_with_retry_after() {
    let ws = Workspace::new();
    let (ty, _stream) = fresh_stream(&ws, 1).await;
    let proxy = KinesisProxy::start(&endpoint()).await;
    let mut c = ws.kinesis_config(&proxy.url);
    c.kinesis.delivery_timeout = HumanDuration(Duration::from_secs(3));
    c.limits.max_events = 10;
    c.limits.max_inflight_events = 10;
    c.limits.admission_wait = HumanDuration(Duration::from_millis(100));
    let s = TestServer::start_ready(c).await;
    // A shard that throttles everything: its records wait in retries, holding admission.
    proxy.fail("throttled", usize::MAX);
    let held: Vec<_> = (0..10)
        .map(|i| json!({"type": ty, "id": format!("t{i}"), "partitionkey": "throttled", "data": {"n": i}}))
        .collect();
    let held = json!(held);
    let held = s.send_json(&held);
    let probe = async {
        // Once the first held record is throttled, all ten are admitted and hold admission
        // (one key: the sink sends them one call at a time, in order).
        eventually(
            "the first held record to be throttled",
            Duration::from_secs(10),
            || async { proxy.seen().failed >= 1 },
        )
        .await;
        s.send_json(&json!({"type": ty, "id": "late", "data": {"n": 1}}))
            .await
    };
    let (held, refused) = tokio::join!(held, probe);
    assert_eq!(
        (refused.status, refused.code()),
        (503, "overloaded"),
        "{}",
        refused.body
    );
    assert!(refused.retry_after.is_some());
    assert_eq!(held.status, 503, "{}", held.body);
    let m = s.metrics().await;
    assert!(m.contains("sluice_kinesis_throttles_total"), "{m}");
    // Admission is free again once they were answered.
    let a = s
        .send_json(&json!({"type": ty, "id": "after", "data": {"n": 2}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn kinesis_with_the_spool_replays_spooled_events_into_the_stream() {
    let ws = Workspace::new();
    let (ty, stream) = fresh_stream(&ws, 2).await;
    let mut c = ws.kinesis_config(&endpoint());
    c.spool.enabled = true;
    c.spool.dir = ws.path().join("spool");
    c.routes.ack = sluice::config::Ack::Spool;
    let s = TestServer::start_ready(c).await;
    let events: Vec<_> = (0..50)
        .map(|i| json!({"type": ty, "id": format!("sp{i}"), "partitionkey": "one", "data": {"n": i}}))
        .collect();
    let a = s.send_json(&json!(events)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    s.wait_spool_drained(Duration::from_secs(30)).await;
    let records = read_stream(&endpoint(), &stream).await;
    let ns: Vec<u64> = records
        .iter()
        .map(|r| r.json()["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        (0..50).collect::<Vec<_>>(),
        "replayed once each, in order"
    );
    assert_eq!(records[0].json()["id"], "sp0");
}

#[tokio::test]
async fn kinesis_records_over_its_limit_are_refused_at_ingest_not_spooled() {
    let ws = Workspace::new();
    ws.schema(ANY, 1, json!({}));
    let stream = unique("it.kinesis.refuse.");
    create_stream(&endpoint(), &stream, 1).await;
    let mut c = ws.kinesis_config(&endpoint());
    c.routes.default_topic = stream.clone();
    c.limits.max_event_bytes = ByteSize(2 << 20);
    c.limits.max_body_bytes = ByteSize(4 << 20);
    c.limits.max_decompressed_bytes = ByteSize(4 << 20);
    // Acknowledged once spooled: without the check at ingest, the oversized record would be
    // answered 200 and then refused for good at replay.
    c.spool.enabled = true;
    c.spool.dir = ws.path().join("spool");
    c.routes.ack = sluice::config::Ack::Spool;
    let s = TestServer::start_ready(c).await;
    let big = json!({"type": ANY, "id": "big", "data": "x".repeat(1 << 20)});
    let small = json!({"type": ANY, "id": "small", "data": "y"});
    let a = s.send_json(&json!([big, small])).await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(a.result(0)["status"], 413);
    assert_eq!(a.result(0)["error"]["code"], "record_too_large");
    assert_eq!(a.result(1)["status"], 200);
    let m = s.metrics().await;
    assert!(!m.contains("sluice_spool_quarantined_total 1"), "{m}");
}
