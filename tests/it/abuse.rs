//! Resource exhaustion, tried as an attacker would against the real binary: each request that
//! once bought work or memory out of proportion to its size, at once and in numbers, while
//! the server must keep answering everyone else. Each test prints what it measured (the debug
//! build; `loadtest/abuse` measures the release build).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::process::Proc;
use crate::support::Workspace;

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Peak RSS growth a batch of count bombs may cause with `limits.max_inflight_bytes` at
/// 64 MiB: the inflating bodies are charged to admission as they grow, so at most that much
/// is inflated at once, and the decoded count stops at the limit. Before, eight of them took
/// the process from 18 MiB to 1.3 GiB.
const BOMBS_PEAK_RSS_GROWTH_MIB: u64 = 128;

#[tokio::test]
async fn abuse_gzip_count_bombs_are_refused_early_and_hold_little_memory() {
    let ws = Workspace::new();
    let p = Proc::spawn(
        ws.path(),
        &[("SLUICE_LIMITS__MAX_INFLIGHT_BYTES", "64MiB".to_string())],
    );
    let client = reqwest::Client::new();
    p.wait_ready(&client).await;
    let baseline = p.peak_rss_kib();
    // `[0,0,0,...]`: ten million items, 20 MiB inflated, ~20 KB on the wire.
    let mut json = Vec::with_capacity(20 << 20);
    json.push(b'[');
    for _ in 0..(10_000_000 - 1) {
        json.extend_from_slice(b"0,");
    }
    json.extend_from_slice(b"0]");
    assert!(json.len() <= 20 << 20);
    let bomb = bytes::Bytes::from(gzip(&json));
    drop(json);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let started = Instant::now();
    let sends = (0..8).map(|_| {
        client
            .post(format!("{}/v1/events", p.url))
            .header("content-type", "application/cloudevents-batch+json")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
    });
    let health = async {
        // Everyone else is answered meanwhile.
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            let r = client
                .get(format!("{}/healthz", p.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    };
    let (answers, worst_health) = tokio::join!(futures_util::future::join_all(sends), health);
    for a in answers {
        let a = a.unwrap();
        let status = a.status().as_u16();
        let body: serde_json::Value = a.json().await.unwrap();
        // Refused at the first event past the limit, or turned away by admission.
        let code = body["error"]["code"].as_str().unwrap().to_string();
        assert!(
            (status, code.as_str()) == (413, "too_many_events")
                || (status, code.as_str()) == (503, "overloaded"),
            "{status} {body}"
        );
    }
    let peak = p.peak_rss_kib();
    let growth = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "[gzip count bombs] 8 x {} B -> 20 MiB each: answered in {:?}, /healthz worst {worst_health:?}, peak RSS {} MiB (baseline {} MiB, +{growth} MiB)",
        bomb.len(),
        started.elapsed(),
        peak / 1024,
        baseline / 1024
    );
    assert!(
        growth < BOMBS_PEAK_RSS_GROWTH_MIB,
        "peak RSS grew {growth} MiB, over the {BOMBS_PEAK_RSS_GROWTH_MIB} MiB bound"
    );
}

#[tokio::test]
async fn abuse_slowloris_connections_are_cut_while_others_are_served() {
    let ws = Workspace::new();
    let p = Proc::spawn(
        ws.path(),
        &[
            ("SLUICE_SERVER__HEADER_READ_TIMEOUT", "1s".to_string()),
            ("SLUICE_SERVER__MAX_CONNECTIONS", "300".to_string()),
        ],
    );
    let client = reqwest::Client::new();
    p.wait_ready(&client).await;
    let addr = p.url.trim_start_matches("http://").to_string();
    // 250 connections, each a request line and a Host header, then nothing.
    let mut slow = Vec::new();
    for _ in 0..250 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    let r = client
        .get(format!("{}/healthz", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served while they hang");
    let started = Instant::now();
    let mut closed = 0;
    for c in &mut slow {
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    eprintln!(
        "[slowloris] 250 half-sent heads: {closed} cut within {:?} of the first check",
        started.elapsed()
    );
    assert_eq!(closed, 250);
    // Their slots are free again.
    let r = client
        .get(format!("{}/healthz", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
