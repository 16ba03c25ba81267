//! `/metrics` as Prometheus' own linter sees it: `promtool check metrics` (Debian package
//! `prometheus`, installed by .ci/run) after traffic that fills most metric families.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::kafka::{brokers, create_topic};
use crate::support::{strict_schema, unique, TestServer, Workspace};

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let promtool = std::env::var("SLUICE_TEST_PROMTOOL").expect(
        "this test needs promtool: run it with scripts/test (CI installs Debian's `prometheus` package, which has it)",
    );
    let brokers = brokers();
    let ws = Workspace::new();
    let ty = unique("it.metrics.");
    ws.schema(&ty, 1, strict_schema());
    create_topic(&brokers, &format!("events.{ty}"), 1).await;
    let mut c = ws.kafka_config(&brokers);
    c.spool.enabled = true;
    c.spool.dir = ws.path().join("spool");
    let s = TestServer::start_ready(c).await;
    // Accepted, refused by schema, unknown type, malformed; a 404.
    let a = s
        .send_json(&json!([
            {"type": ty, "data": {"n": 1}},
            {"type": ty, "data": {"n": "x"}},
            {"type": "nope", "data": {}}
        ]))
        .await;
    assert_eq!(a.status, 207, "{}", a.body);
    let _ = s.send("application/json", "{not json").await;
    let _ = s.client.get(format!("{}/nothing", s.url)).send().await;
    let families = [
        "sluice_events_accepted_total",
        "sluice_events_rejected_total",
        "sluice_http_request_duration_seconds_bucket",
        "sluice_publish_duration_seconds_bucket",
        "sluice_spool_bytes",
        "sluice_demand_events",
    ];
    // Gauges are refreshed every second.
    crate::support::eventually(
        "every family on /metrics",
        std::time::Duration::from_secs(10),
        || async {
            let text = s.metrics().await;
            families.iter().all(|f| text.contains(f))
        },
    )
    .await;
    let text = s.metrics().await;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}
