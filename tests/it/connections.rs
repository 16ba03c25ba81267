//! Connection lifetime (`server.max_connection_age`) over real sockets: an HTTP/1.1 keep-alive
//! connection is closed once it is old, between requests; HTTP/2 clients get a GOAWAY, finish
//! their streams and reconnect, without a single request failing; a connection still busy
//! `server.shutdown_grace` after it was told to close is cut, with no answer.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice::config::HumanDuration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, Workspace, ANY};

/// One `GET /healthz` on an open HTTP/1.1 connection: its status and whether the server said
/// it will close; `None` when the connection was closed instead.
async fn healthz(conn: &mut tokio::net::TcpStream) -> Option<(u16, bool)> {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: sluice\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if buf.len() < end + 4 + len {
            continue;
        }
        let status = head[9..12].parse().unwrap();
        return Some((status, head.contains("connection: close")));
    }
}

#[tokio::test]
async fn an_old_http1_connection_is_closed_between_requests() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.max_connection_age = HumanDuration(Duration::from_millis(500));
    let s = TestServer::start_ready(c).await;

    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let opened = Instant::now();
    let mut answered = 0;
    let closed_after = loop {
        match healthz(&mut conn).await {
            Some((status, closing)) => {
                assert_eq!(status, 200);
                answered += 1;
                if closing {
                    // Said so on the last answer: the next read sees the close.
                    assert!(healthz(&mut conn).await.is_none());
                    break opened.elapsed();
                }
            }
            None => break opened.elapsed(),
        }
        assert!(opened.elapsed() < Duration::from_secs(5), "never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // 500 ms ±10 %, plus scheduling.
    assert!(
        closed_after >= Duration::from_millis(440),
        "{closed_after:?}"
    );
    assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    assert!(answered > 5, "{answered}");

    // A new connection is served as usual.
    let mut again = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(healthz(&mut again).await.map(|a| a.0), Some(200));
}

#[tokio::test]
async fn http2_clients_reconnect_after_goaway_without_a_failed_request() {
    let ws = Workspace::new();
    ws.schema(ANY, 1, json!({}));
    let mut c = ws.config();
    c.server.max_connection_age = HumanDuration(Duration::from_millis(300));
    let s = TestServer::start_ready(c).await;
    // HTTP/2 over plain TCP (prior knowledge), one connection shared by every task.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let until = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let client = client.clone();
        let url = format!("{}/v1/events", s.url);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u32;
            while Instant::now() < until {
                let resp = client
                    .post(&url)
                    .header("content-type", "application/cloudevents+json")
                    .body(json!({"type": ANY, "data": {"t": t, "n": sent}}).to_string())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("request {sent} of task {t} failed: {e:?}"));
                assert_eq!(resp.version(), reqwest::Version::HTTP_2);
                assert_eq!(resp.status(), 200);
                sent += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    assert!(sent > 20, "{sent}");
    let stored = std::fs::read_to_string(ws.data().join(format!("events.{ANY}.ndjson"))).unwrap();
    assert_eq!(stored.lines().count(), sent as usize);

    // About 2 s / 300 ms connections were retired, each after finishing its streams.
    let m = s.metrics().await;
    let graceful: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(r#"sluice_http_connections_aged_total{how="graceful"} "#))
        .unwrap_or_else(|| panic!("no aged connections in\n{m}"))
        .parse()
        .unwrap();
    assert!(graceful >= 3.0, "{graceful}");
}

#[tokio::test]
async fn an_old_connection_still_busy_after_the_grace_is_cut_without_an_answer() {
    let ws = Workspace::new();
    ws.schema(ANY, 1, json!({}));
    let mut c = ws.config();
    c.server.max_connection_age = HumanDuration(Duration::from_millis(200));
    c.server.drain_delay = HumanDuration(Duration::ZERO);
    c.server.shutdown_grace = HumanDuration(Duration::from_millis(500));
    let s = TestServer::start_ready(c).await;

    // A request whose body trickles in far slower than the connection may live.
    let body = json!({"type": ANY, "data": {"pad": "x".repeat(64)}}).to_string();
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for b in body.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Age 180–220 ms, then 500 ms to finish: the server closes with no answer at all.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut answer))
        .await
        .expect("the server cuts the connection")
        .ok();
    let cut_after = started.elapsed();
    trickle.abort();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(cut_after >= Duration::from_millis(600), "{cut_after:?}");
    assert!(cut_after < Duration::from_secs(3), "{cut_after:?}");
    assert!(s
        .metrics()
        .await
        .contains(r#"sluice_http_connections_aged_total{how="cut"}"#));
    // Nothing half-received was stored.
    assert!(!ws.data().join(format!("events.{ANY}.ndjson")).exists());
}

/// Reads until the server closes the connection; how long that took, or `None` if it stayed
/// open for `patience`.
async fn closed_within(conn: &mut tokio::net::TcpStream, patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + patience),
            conn.read(&mut chunk),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_heads_and_silent_connections_are_cut_idle_ones_closed() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.header_read_timeout = HumanDuration(Duration::from_millis(400));
    c.server.idle_timeout = HumanDuration(Duration::from_millis(1500));
    let s = TestServer::start_ready(c).await;

    // Slowloris: a request line and a Host header, then nothing. It stayed open (checked for
    // 65 s) when no timer bounded the head.
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(t.is_some_and(|t| t >= Duration::from_millis(350)), "{t:?}");

    // Connected and silent: the same, whatever protocol it might have spoken.
    let mut silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5))
        .await
        .is_some());

    // Keep-alive between requests is the idle timeout's, not the head's: still open after
    // three header timeouts, closed after the idle one.
    let mut kept = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(healthz(&mut kept).await.map(|a| a.0), Some(200));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        healthz(&mut kept).await.map(|a| a.0),
        Some(200),
        "closed before idle_timeout"
    );
    let t = closed_within(&mut kept, Duration::from_secs(5)).await;
    assert!(t.is_some_and(|t| t >= Duration::from_millis(1400)), "{t:?}");

    // A body that takes longer than the header timeout is the body timeout's business.
    let mut body = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let event = json!({"type": ANY, "data": {"n": 1}}).to_string();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\n\r\n",
        event.len()
    );
    body.write_all(head.as_bytes()).await.unwrap();
    for byte in event.as_bytes().chunks(event.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        body.write_all(byte).await.unwrap();
    }
    let mut answer = vec![0u8; 400];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = body.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let m = s.metrics().await;
    let count = |why: &str| -> u64 {
        let prefix = format!("sluice_http_connections_timed_out_total{{why=\"{why}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(count("header"), 2, "{m}");
    // The test's own pooled connections go idle too.
    assert!(count("idle") >= 1, "{m}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.server.max_connections = 2;
    // The readiness probe's pooled connection holds a slot until it idles out.
    c.server.idle_timeout = HumanDuration(Duration::from_millis(300));
    let s = TestServer::start_ready(c).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 0..10 {
        let mut x = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let mut y = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        eprintln!(
            "DEBUG {i} {:?} {:?}",
            healthz(&mut x).await,
            healthz(&mut y).await
        );
        drop(x);
        drop(y);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut a = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(healthz(&mut a).await.map(|a| a.0), Some(200));
    assert_eq!(healthz(&mut b).await.map(|a| a.0), Some(200));
    let mut third = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(healthz(&mut third).await, None, "refused");
    // A slot freed is a slot taken again.
    drop(a);
    let mut again = None;
    for _ in 0..50 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        if let Some(answer) = healthz(&mut c).await {
            again = Some(answer.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again, Some(200));
    assert_eq!(healthz(&mut b).await.map(|a| a.0), Some(200));
}
