//! The spool's group commit: appends per second and their latency with one appender and with
//! many at once (every append is fsynced before it returns; concurrent appends share fsyncs).
//! A throughput program, not criterion: what matters is appends/s under concurrency.
//!
//!     cargo bench --bench spool [-- --dir <folder>]     (default: the system's temporary folder)
//!
//! The spool goes in a new folder made inside `<folder>` for this run and removed after it;
//! nothing else there is touched. (It once took its first argument as the spool folder itself
//! and removed it: `scripts/test helm`, which hands `helm` to every test binary, deleted the
//! chart.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::sink::Record;
use sluice::spool::Spool;

fn record(i: usize) -> Record {
    Record {
        topic: "events.page.view".into(),
        key: Bytes::from(format!("user-{}", i % 1000)),
        value: Bytes::from(format!(
            "{{\"path\":\"/products/{i}\",\"referrer\":\"https://example.com/search?q=shoes\",\"ms\":{i}}}"
        )),
        headers: vec![
            ("ce_id", Bytes::from(format!("0193a0c4-7d2e-7c1a-9b1e-{i:012}"))),
            ("ce_type", Bytes::from_static(b"page.view")),
            ("ce_source", Bytes::from_static(b"sluice://acme/web")),
            ("ce_specversion", Bytes::from_static(b"1.0")),
            ("content-type", Bytes::from_static(b"application/json")),
            ("sluice_received_time", Bytes::from_static(b"2026-11-23T18:00:00.000Z")),
        ],
        extension_headers: vec![],
    }
}

async fn run(dir: &std::path::Path, appenders: usize, batch: usize, duration: Duration) {
    let _ = std::fs::remove_dir_all(dir);
    let (spool, _) = Spool::open(dir, 16 << 30, 64 << 20).expect("open spool");
    let spool = Arc::new(spool);
    let records: Arc<Vec<Record>> = Arc::new((0..batch).map(record).collect());
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (spool, records) = (spool.clone(), records.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    spool.append(&records).await.expect("append");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "appenders {appenders:>3}  batch {batch:>3}  {:>8.0} appends/s  {:>9.0} records/s  {:>6.1} MiB/s  p50 {:>7.2?}  p99 {:>7.2?}",
        lat.len() as f64 / secs,
        (lat.len() * batch) as f64 / secs,
        spool.bytes() as f64 / secs / (1 << 20) as f64,
        pct(0.5),
        pct(0.99),
    );
    drop(spool);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let root = tempfile::Builder::new()
        .prefix("sluice-spool-bench-")
        .tempdir_in(&base)
        .expect("a folder for the spool");
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this too, without it
    // (and with any test-name filter as an argument): one short pass as a check.
    if !args.iter().any(|a| a == "--bench") {
        run(
            &root.path().join("check"),
            4,
            10,
            Duration::from_millis(200),
        )
        .await;
        return;
    }
    println!(
        "spool group commit in {} (record ~300 B)",
        root.path().display()
    );
    for (appenders, batch) in [(1, 1), (1, 10), (8, 10), (32, 10), (128, 10), (32, 100)] {
        let dir = root.path().join(format!("{appenders}x{batch}"));
        run(&dir, appenders, batch, Duration::from_secs(3)).await;
    }
}
