//! The ingest contract over real HTTP: body forms, encodings, every limit at and over its
//! boundary, and the documented 4xx for bad input (never a 5xx). Uses the file sink, whose
//! output is read back to check what was actually stored.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::ByteSize;

use crate::support::{TestServer, Workspace, ANY, STRICT};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Lines the file sink stored for a type's default topic.
fn stored(ws: &Workspace, ty: &str) -> Vec<Value> {
    match std::fs::read_to_string(ws.data().join(format!("events.{ty}.ndjson"))) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A single event whose JSON is exactly `size` bytes.
fn event_of_size(size: usize) -> String {
    let base = format!(r#"{{"type":"{ANY}","id":"sized","data":""}}"#);
    assert!(size >= base.len());
    format!(
        r#"{{"type":"{ANY}","id":"sized","data":"{}"}}"#,
        "x".repeat(size - base.len())
    )
}

/// An event whose JSON nests exactly `depth` levels (the event object is level 1).
fn event_of_depth(depth: usize) -> String {
    let data = format!("{}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
    format!(r#"{{"type":"{ANY}","data":{data}}}"#)
}

#[tokio::test]
async fn every_body_form_is_accepted_and_stored() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;

    let one = s
        .send_json(&json!({"type": STRICT, "id": "s1", "data": {"n": 1}}))
        .await;
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert_eq!(one.result(0)["id"], "s1");

    let batch = s.send_json(&json!([{"type": STRICT, "id": "b1", "data": {"n": 2}}, {"type": STRICT, "id": "b2", "data": {"n": 3}}])).await;
    assert_eq!(batch.status, 200);
    assert_eq!(batch.ids_with_status(200), ["b1", "b2"]);

    let nd = format!(
        "{}\n{}\n",
        json!({"type": STRICT, "id": "n1", "data": {"n": 4}}),
        json!({"type": STRICT, "id": "n2", "data": {"n": 5}})
    );
    let nd = s.send("application/x-ndjson", nd).await;
    assert_eq!(nd.status, 200);
    assert_eq!(nd.ids_with_status(200), ["n1", "n2"]);

    let bin = post_binary(&s).await;
    assert_eq!(bin.status, 200, "{:?}", bin.body);
    assert_eq!(bin.result(0)["id"], "bin1");

    let gz = s
        .post()
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(
            json!({"type": STRICT, "id": "g1", "data": {"n": 7}})
                .to_string()
                .as_bytes(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    let zs = s
        .post()
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(
            zstd::encode_all(
                json!({"type": STRICT, "id": "z1", "data": {"n": 8}})
                    .to_string()
                    .as_bytes(),
                3,
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(zs.status(), 200);

    let lines = stored(&ws, STRICT);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["headers"]["ce_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1", "b1", "b2", "n1", "n2", "bin1", "g1", "z1"]);
    let bin_line = &lines[5];
    assert_eq!(bin_line["value"], json!({"n": 6}));
    assert_eq!(bin_line["headers"]["ce_source"], "/binary");
    assert_eq!(bin_line["headers"]["ce_tenantish"], "x y");
    assert_eq!(bin_line["key"], "pk-1");
    assert_eq!(lines[0]["headers"]["sluice_schema_version"], "1");
}

async fn post_binary(s: &TestServer) -> crate::support::Answer {
    let resp = s
        .post()
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-type", STRICT)
        .header("ce-id", "bin1")
        .header("ce-source", "/binary")
        .header("ce-partitionkey", "pk-1")
        .header("ce-tenantish", "x%20y")
        .body(json!({"n": 6}).to_string())
        .send()
        .await
        .unwrap();
    crate::support::Answer::from(resp).await
}

#[tokio::test]
async fn partial_batch_is_207_with_pointers_and_only_valid_events_are_stored() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let a = s
        .send_json(&json!([
            {"type": STRICT, "id": "ok1", "data": {"n": 1}},
            {"type": STRICT, "id": "bad1", "data": {"n": "one"}},
            {"type": STRICT, "id": "bad2", "data": {"n": 1, "extra": true}},
            {"type": "no.such.type", "id": "bad3"},
            {"type": STRICT, "id": "ok2", "data": {"n": 2}},
        ]))
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    assert_eq!(
        (a.body["accepted"].as_u64(), a.body["rejected"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(a.result(1)["error"]["code"], "schema_violation");
    assert_eq!(a.result(1)["error"]["pointer"], "/data/n");
    assert_eq!(a.result(1)["status"], 400);
    assert_eq!(a.result(2)["error"]["pointer"], "/data");
    assert_eq!(a.result(3)["error"]["code"], "unknown_type");
    assert_eq!(a.result(3)["id"], "bad3");
    let ids: Vec<String> = stored(&ws, STRICT)
        .iter()
        .map(|l| l["headers"]["ce_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["ok1", "ok2"]);

    // All rejected: 400 with the per-event results still listed.
    let all_bad = s
        .send_json(&json!([{"type": STRICT, "data": {}}, {"type": STRICT, "data": {"n": []}}]))
        .await;
    assert_eq!(all_bad.status, 400);
    assert_eq!(all_bad.code(), "events_rejected");
    assert_eq!(all_bad.result(0)["error"]["pointer"], "/data");
    // One event rejected: its own code at the top.
    let one_bad = s
        .send_json(&json!({"type": STRICT, "data": {"n": 0.5}}))
        .await;
    assert_eq!((one_bad.status, one_bad.code()), (400, "schema_violation"));
}

#[tokio::test]
async fn body_size_limit_at_and_over_the_boundary() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_body_bytes = ByteSize(2000);
    let s = TestServer::start_ready(c).await;
    assert_eq!(
        s.send("application/json", event_of_size(2000)).await.status,
        200
    );
    let over = s.send("application/json", event_of_size(2001)).await;
    assert_eq!((over.status, over.code()), (413, "body_too_large"));
    // Without Content-Length (chunked), the cap holds while reading.
    let (status, body) = chunked_post(&s, "application/json", event_of_size(2001).as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    // Refusals before decoding are counted too.
    let m = s.metrics().await;
    assert!(
        m.contains("sluice_events_rejected_total{reason=\"body_too_large\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn header_size_limit_at_and_over_the_boundary() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_header_bytes = ByteSize(4096);
    let s = TestServer::start_ready(c).await;
    let body = json!({"type": ANY, "data": {"n": 1}}).to_string();
    // Over a raw connection, so that every header byte is ours: headers totalling `total`
    // bytes as counted on the wire (name + ": " + value + CRLF each).
    let send = |total: usize| {
        let body = body.clone();
        async move {
            let fixed = [
                ("host", "x".to_string()),
                ("content-type", "application/cloudevents+json".to_string()),
                ("content-length", body.len().to_string()),
                ("connection", "close".to_string()),
            ];
            let used: usize = fixed.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
            let pad = "p".repeat(total - used - "x-pad".len() - 4);
            let mut head = String::from("POST /v1/events HTTP/1.1\r\n");
            for (k, v) in fixed.iter().chain([&("x-pad", pad)]) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
            conn.write_all(head.as_bytes()).await.unwrap();
            // Refused early, the server may close before reading the body.
            let _ = conn.write_all(body.as_bytes()).await;
            let mut out = Vec::new();
            let _ = conn.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let at = send(4096).await;
    assert!(at.starts_with("HTTP/1.1 200"), "{at}");
    let over = send(4097).await;
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
    let json = over.split("\r\n\r\n").nth(1).unwrap();
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["error"]["code"], "headers_too_large", "{v}");
    assert!(
        s.metrics()
            .await
            .contains(r#"sluice_http_requests_total{route="/v1/events",status="431"}"#),
        "431s are counted"
    );
    // A limit the HTTP layer would pre-empt is refused at start.
    let mut c = ws.config();
    c.limits.max_header_bytes = ByteSize(512 * 1024);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("limits.max_header_bytes"), "{e}");
}

/// POSTs with `Transfer-Encoding: chunked` over a raw connection; returns status and body.
async fn chunked_post(s: &TestServer, content_type: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut req = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(100) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer 413 and close before reading everything; that is fine.
    let _ = conn.write_all(&req).await;
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn decompressed_size_limit_and_bombs() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_body_bytes = ByteSize(100_000);
    c.limits.max_decompressed_bytes = ByteSize(100_000);
    c.limits.max_event_bytes = ByteSize(100_000);
    let s = TestServer::start_ready(c).await;
    let post = |enc: &'static str, body: Vec<u8>| {
        s.post()
            .header("content-type", "application/json")
            .header("content-encoding", enc)
            .body(body)
            .send()
    };
    let at = gzip(event_of_size(100_000).as_bytes());
    assert_eq!(post("gzip", at).await.unwrap().status(), 200);
    let over = gzip(event_of_size(100_001).as_bytes());
    let a = crate::support::Answer::from(post("gzip", over).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (413, "decompressed_too_large"));

    // A small zstd frame that would inflate to 256 MiB, with no size in its header.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_contentsize(false).unwrap();
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 20_000, "bomb is {} bytes", bomb.len());
    let started = Instant::now();
    let a = crate::support::Answer::from(post("zstd", bomb).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (413, "decompressed_too_large"));
    // Not a benchmark: a guard that the cap stops inflation instead of inflating 256 MiB first.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bomb took {:?}",
        started.elapsed()
    );

    let a =
        crate::support::Answer::from(post("gzip", b"definitely not gzip".to_vec()).await.unwrap())
            .await;
    assert_eq!((a.status, a.code()), (400, "invalid_compression"));
    let a = crate::support::Answer::from(post("br", b"{}".to_vec()).await.unwrap()).await;
    assert_eq!((a.status, a.code()), (415, "unsupported_encoding"));
}

#[tokio::test]
async fn event_size_limit_at_and_over_the_boundary() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_event_bytes = ByteSize(1000);
    let s = TestServer::start_ready(c).await;
    assert_eq!(
        s.send("application/json", event_of_size(1000)).await.status,
        200
    );
    let over = s.send("application/json", event_of_size(1001)).await;
    assert_eq!((over.status, over.code()), (413, "event_too_large"));
    // In a batch only the large event is refused.
    let batch = format!("[{},{}]", event_of_size(1000), event_of_size(1001));
    let a = s.send("application/cloudevents-batch+json", batch).await;
    assert_eq!(a.status, 207);
    assert_eq!(a.result(1)["status"], 413);
    assert_eq!(a.result(1)["error"]["code"], "event_too_large");
    // Binary mode: the body is the data.
    let resp = s
        .post()
        .header("content-type", "application/json")
        .header("ce-type", ANY)
        .header("ce-specversion", "1.0")
        .body(format!("\"{}\"", "x".repeat(1000)))
        .send()
        .await
        .unwrap();
    let a = crate::support::Answer::from(resp).await;
    assert_eq!((a.status, a.code()), (413, "event_too_large"));
}

#[tokio::test]
async fn event_count_limit_at_and_over_the_boundary() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_events = 5;
    let s = TestServer::start_ready(c).await;
    let events = |n: usize| {
        (0..n)
            .map(|i| json!({"type": ANY, "id": format!("e{i}")}))
            .collect::<Vec<_>>()
    };
    assert_eq!(s.send_json(&Value::Array(events(5))).await.status, 200);
    let a = s.send_json(&Value::Array(events(6))).await;
    assert_eq!((a.status, a.code()), (413, "too_many_events"));
    let nd = |n: usize| {
        events(n)
            .iter()
            .map(|e| e.to_string() + "\n")
            .collect::<String>()
    };
    assert_eq!(s.send("application/x-ndjson", nd(5)).await.status, 200);
    let a = s.send("application/x-ndjson", nd(6)).await;
    assert_eq!((a.status, a.code()), (413, "too_many_events"));
}

#[tokio::test]
async fn nesting_depth_limit_at_and_over_the_boundary() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_depth = 10;
    let s = TestServer::start_ready(c).await;
    assert_eq!(
        s.send("application/json", event_of_depth(10)).await.status,
        200
    );
    let a = s.send("application/json", event_of_depth(11)).await;
    assert_eq!((a.status, a.code()), (400, "too_deep"));
    // The batch array does not count against its events.
    assert_eq!(
        s.send(
            "application/cloudevents-batch+json",
            format!("[{}]", event_of_depth(10))
        )
        .await
        .status,
        200
    );
    let a = s
        .send(
            "application/cloudevents-batch+json",
            format!("[{}]", event_of_depth(11)),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "too_deep"));
    let a = s.send("application/x-ndjson", event_of_depth(11)).await;
    assert_eq!((a.status, a.code()), (400, "too_deep"));
    // Far past serde_json's own recursion limit: still a clean 400.
    let a = s.send("application/json", event_of_depth(100_000)).await;
    assert_eq!((a.status, a.code()), (400, "too_deep"));
}

#[tokio::test]
async fn bad_input_gets_documented_4xx_never_5xx() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "application/json",
            b"{\"type\": ".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "application/json",
            b"\xff\xfe{}".to_vec(),
            400,
            "malformed_json",
        ),
        ("application/json", b"".to_vec(), 400, "empty_batch"),
        (
            "application/cloudevents-batch+json",
            b"[]".to_vec(),
            400,
            "empty_batch",
        ),
        (
            "application/cloudevents-batch+json",
            b"{\"type\":\"x\"}".to_vec(),
            400,
            "malformed_json",
        ),
        ("text/plain", b"{}".to_vec(), 415, "unsupported_media_type"),
        (
            "application/xml",
            b"<e/>".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            br#"{"type":"no.such"}"#.to_vec(),
            400,
            "unknown_type",
        ),
        (
            "application/json",
            br#"{"data":{}}"#.to_vec(),
            400,
            "missing_type",
        ),
        (
            "application/json",
            br#"[1,2]"#.to_vec(),
            400,
            "events_rejected",
        ),
        (
            "application/json",
            br#""just a string""#.to_vec(),
            400,
            "invalid_event",
        ),
        (
            "application/json",
            format!(r#"{{"type":"{ANY}","schemaversion":"7"}}"#).into_bytes(),
            400,
            "unknown_schema_version",
        ),
        (
            "application/json",
            format!(r#"{{"type":"{ANY}","data_base64":"AAAA"}}"#).into_bytes(),
            415,
            "unsupported_data",
        ),
    ];
    for (ct, body, status, code) in cases {
        let a = s.send(ct, body.clone()).await;
        assert_eq!(
            (a.status, a.code()),
            (status, code),
            "body {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let missing_ct = crate::support::Answer::from(s.post().body("{}").send().await.unwrap()).await;
    assert_eq!(
        (missing_ct.status, missing_ct.code()),
        (415, "unsupported_media_type")
    );
    let get = s.get("/v1/events").await;
    assert_eq!((get.status, get.code()), (405, "method_not_allowed"));
    let nf = s.get("/nope").await;
    assert_eq!((nf.status, nf.code()), (404, "not_found"));
    assert!(stored(&ws, ANY).is_empty());

    let metrics = s.metrics().await;
    assert!(
        metrics.contains("sluice_events_rejected_total{reason=\"unknown_type\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_http_requests_total{route=\"/v1/events\",status=\"415\"}"));
}

#[tokio::test]
async fn probes_and_request_ids() {
    let ws = Workspace::new();
    let s = TestServer::start_ready(ws.config()).await;
    let h = s
        .client
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    assert!(h.headers().contains_key("x-request-id"));
    let r = s.get("/readyz").await.body;
    assert_eq!(r["checks"]["schemas"]["loaded"], 2);
    let mine = s
        .post()
        .header("x-request-id", "req-123")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "req-123");
}

#[tokio::test]
async fn shutdown_turns_readiness_off_first_and_keeps_serving_through_the_drain() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.drain_delay = sluice::config::HumanDuration(Duration::from_millis(1500));
    let mut s = TestServer::start_ready(c).await;
    s.signal_shutdown();
    s.wait_ready(false, Duration::from_millis(500)).await;
    let r = s.get("/readyz").await.body;
    assert_eq!(r["checks"]["shutting_down"], true);
    // Load balancers still send for a moment: those requests are served, not refused.
    assert_eq!(
        s.send_json(&json!({"type": STRICT, "id": "late", "data": {"n": 1}}))
            .await
            .status,
        200
    );
    let started = Instant::now();
    s.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stored(&ws, STRICT)[0]["headers"]["ce_id"], "late");
}

#[tokio::test]
async fn admin_listen_moves_probes_and_metrics_off_the_main_port() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let s = TestServer::start(c).await;
    let admin = format!("http://{}", s.admin_addr.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .client
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "admin port never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.client
            .get(format!("{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(s.get("/readyz").await.status, 404);
    assert_eq!(s.send_json(&json!({"type": ANY})).await.status, 200);
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_not_a_hang() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.body_timeout = sluice::config::HumanDuration(Duration::from_millis(500));
    let s = TestServer::start_ready(c).await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"type\":")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("server hung")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
}

#[tokio::test]
async fn blackhole_sink_acknowledges_and_keeps_nothing() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.sink.kind = sluice::config::SinkKind::Blackhole;
    let s = TestServer::start_ready(c).await;
    assert_eq!(
        s.send_json(&json!([{"type": ANY}, {"type": ANY}]))
            .await
            .status,
        200
    );
    let written: Vec<_> = std::fs::read_dir(ws.data())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        written
            .iter()
            .all(|n| n.to_string_lossy().starts_with("registry.db")),
        "the blackhole sink wrote files: {written:?}"
    );
    let m = s.metrics().await;
    assert!(
        m.contains("sluice_events_published_total{sink=\"blackhole\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_compressed_body_is_admitted_at_its_inflated_size() {
    use tokio::io::AsyncWriteExt;
    let ws = Workspace::new();
    let mut c = ws.config();
    c.limits.max_body_bytes = ByteSize(16 * 1024);
    c.limits.max_decompressed_bytes = ByteSize(64 * 1024);
    c.limits.max_event_bytes = ByteSize(64 * 1024);
    c.limits.max_inflight_bytes = ByteSize(64 * 1024);
    c.limits.admission_wait = sluice::config::HumanDuration(Duration::from_millis(200));
    let s = TestServer::start_ready(c).await;
    // 1 KiB on the wire, 50 KB once inflated.
    let small = gzip(event_of_size(50_000).as_bytes());
    assert!(small.len() < 2_000);
    let post = || {
        s.post()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(small.clone())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 200);

    // Another request holds 16 KiB of the 64 KiB budget while its body trickles in: the
    // compressed request fits on the wire, not once inflated.
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(
        b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 16384\r\n\r\n{",
    )
    .await
    .unwrap();
    // Its bytes are held once its head is read: until then the compressed request still fits.
    let deadline = Instant::now() + Duration::from_secs(5);
    let a = loop {
        let a = crate::support::Answer::from(post().await.unwrap()).await;
        if a.status != 200 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the slow body never held its share"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((a.status, a.code()), (503, "overloaded"), "{}", a.body);
    assert!(a.retry_after.is_some());
    drop(slow);
    // The held bytes are released when the server sees the connection close.
    crate::support::eventually(
        "the share to be released",
        Duration::from_secs(5),
        || async { post().await.unwrap().status() == 200 },
    )
    .await;
}
