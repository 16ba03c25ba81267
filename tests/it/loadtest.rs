//! The load generator (loadtest/) as CI's smoke run: a few seconds of realistic traffic
//! through the real Kafka sink, then its audit of the topics: nothing acknowledged is lost.

use std::time::Duration;

use sluice_loadtest::{audit, gen, run, Auth, Compression, Format, Options};

use crate::support::kafka::{brokers, create_topic};
use crate::support::{unique, TestServer, Workspace};

/// A workspace with the repository's own schemas (the generator sends what they describe),
/// a fresh topic/stream template, and the topics/streams it gives for the generator's types.
fn setup() -> (Workspace, String, Vec<String>) {
    let ws = Workspace::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for (ty, _) in gen::TYPES {
        let schema = std::fs::read_to_string(repo.join(ty).join("1.json")).unwrap();
        ws.schema(ty, 1, serde_json::from_str(&schema).unwrap());
    }
    let template = format!("{}.{{type}}", unique("lt"));
    let names = gen::TYPES
        .iter()
        .map(|(t, _)| template.replace("{type}", t))
        .collect();
    (ws, template, names)
}

async fn smoke(format: Format, batch: usize, compression: Compression) {
    smoke_with(format, batch, compression, false).await
}

/// `tls`: Sluice serves a self-signed certificate made here, which the generator trusts.
async fn smoke_with(format: Format, batch: usize, compression: Compression, tls: bool) {
    let brokers = brokers();
    let (ws, template, topics) = setup();
    for t in &topics {
        create_topic(&brokers, t, 3).await;
    }
    let mut c = ws.kafka_config(&brokers);
    c.routes.default_topic = template;
    let mut ca_cert = None;
    if tls {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (crt, key) = (ws.path().join("tls.crt"), ws.path().join("tls.key"));
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        c.tls.cert_file = Some(crt);
        c.tls.key_file = Some(key);
        ca_cert = Some(cert.cert.pem().into_bytes());
    }
    let s = TestServer::start_ready(c).await;
    let run_id = unique("r");
    let out = run(Options {
        url: s.url.clone(),
        duration: Duration::from_secs(3),
        connections: 4,
        rate: None,
        batch,
        format,
        size: 1024,
        compression,
        auth: Auth::None,
        record_ids: true,
        run_id: run_id.clone(),
        ca_cert,
    })
    .await
    .unwrap();
    eprintln!(
        "[loadtest {format:?} {compression:?}] {}",
        out.report.text()
    );
    assert!(out.report.events_accepted > 0);
    assert_eq!(
        out.report.statuses.keys().collect::<Vec<_>>(),
        ["2xx"],
        "{:?}",
        out.report.statuses
    );
    let acked = out.acked;
    let a = tokio::task::spawn_blocking(move || {
        audit::kafka(&brokers, &topics, &run_id, &acked, Duration::from_secs(60))
    })
    .await
    .unwrap()
    .unwrap();
    eprintln!("[loadtest] {}", a.text());
    assert_eq!(a.lost, 0, "{}", a.text());
    assert_eq!(a.duplicates, 0, "{}", a.text());
    assert_eq!(a.acknowledged as u64, out.report.events_accepted);
}

#[tokio::test]
async fn loadtest_smoke_batches_audit_lost_zero() {
    smoke(Format::Array, 50, Compression::None).await;
}

#[tokio::test]
async fn loadtest_smoke_over_tls_audit_lost_zero() {
    smoke_with(Format::Array, 50, Compression::Gzip, true).await;
}

#[tokio::test]
async fn loadtest_smoke_gzip_ndjson_and_single_events_audit_lost_zero() {
    smoke(Format::Ndjson, 20, Compression::Gzip).await;
    smoke(Format::Single, 1, Compression::Zstd).await;
}

#[tokio::test]
async fn loadtest_smoke_through_kinesis_audit_lost_zero() {
    use crate::support::kinesis::{create_stream, endpoint};
    let (ws, template, streams) = setup();
    for s in &streams {
        create_stream(&endpoint(), s, 2).await;
    }
    let mut c = ws.kinesis_config(&endpoint());
    c.routes.default_topic = template;
    let s = TestServer::start_ready(c).await;
    let run_id = unique("r");
    let out = run(Options {
        url: s.url.clone(),
        duration: Duration::from_secs(2),
        connections: 4,
        rate: None,
        batch: 50,
        format: Format::Array,
        size: 512,
        compression: Compression::None,
        auth: Auth::None,
        record_ids: true,
        run_id: run_id.clone(),
        ca_cert: None,
    })
    .await
    .unwrap();
    eprintln!("[loadtest kinesis] {}", out.report.text());
    assert!(out.report.events_accepted > 0);
    let a = audit::kinesis(
        Some(&endpoint()),
        &streams,
        &run_id,
        &out.acked,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    eprintln!("[loadtest kinesis] {}", a.text());
    assert_eq!((a.lost, a.duplicates), (0, 0), "{}", a.text());
    assert_eq!(a.read, out.acked.len());
}
