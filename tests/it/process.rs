//! The real `sluice` binary as a process: the embedded default, and SIGTERM under load.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::kafka::{brokers, consume, create_topic};
use crate::support::process::Proc;
use crate::support::{strict_schema, unique, Workspace, STRICT};

#[tokio::test]
async fn embedded_default_accepts_an_event_into_the_data_folder() {
    // No config file and no variables but the port: schemas from ./schemas, data to ./data.
    let ws = Workspace::new();
    let client = reqwest::Client::new();
    let mut p = Proc::spawn(ws.path(), &[]);
    p.wait_ready(&client).await;
    let resp = client
        .post(format!("{}/v1/events", p.url))
        .header("content-type", "application/json")
        .body(json!({"type": STRICT, "id": "default-1", "data": {"n": 42}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stored = std::fs::read_to_string(
        ws.path()
            .join("data")
            .join(format!("events.{STRICT}.ndjson")),
    )
    .unwrap();
    let line: serde_json::Value = serde_json::from_str(stored.lines().next().unwrap()).unwrap();
    assert_eq!(line["headers"]["ce_id"], "default-1");
    assert_eq!(line["value"], json!({"n": 42}));
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn kafka_sigterm_under_load_loses_no_acknowledged_event() {
    let brokers = brokers();
    let ws = Workspace::new();
    let ty = unique("it.term.");
    ws.schema(&ty, 1, strict_schema());
    let topic = format!("events.{ty}");
    create_topic(&brokers, &topic, 3).await;
    let grace = Duration::from_secs(10);
    let mut p = Proc::spawn(
        ws.path(),
        &[
            ("SLUICE_SINK__KIND", "kafka".into()),
            ("SLUICE_KAFKA__BROKERS", brokers.clone()),
            ("SLUICE_SERVER__DRAIN_DELAY", "500ms".into()),
            (
                "SLUICE_SERVER__SHUTDOWN_GRACE",
                format!("{}s", grace.as_secs()),
            ),
        ],
    );
    let client = reqwest::Client::new();
    p.wait_ready(&client).await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url, ty, acked, stop) = (
            client.clone(),
            p.url.clone(),
            ty.clone(),
            acked.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut refused = 0;
            for b in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || refused > 20 {
                    break;
                }
                let events: Vec<_> = (0..20)
                    .map(|j| json!({"type": ty, "id": format!("c{c}-b{b}-{j}"), "data": {"n": j}}))
                    .collect();
                let resp = client
                    .post(format!("{url}/v1/events"))
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(serde_json::Value::from(events).to_string())
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        let ids = body["results"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|r| r["status"] == 200);
                        acked
                            .lock()
                            .unwrap()
                            .extend(ids.map(|r| r["id"].as_str().unwrap().to_string()));
                    }
                    Ok(r) => {
                        assert!(
                            r.status() == 503,
                            "unexpected status {} during shutdown",
                            r.status()
                        );
                        refused += 1;
                    }
                    // Listener closed: the server is past its drain delay.
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().unwrap().len();
    let signalled = Instant::now();
    p.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = p.wait_exit(grace + Duration::from_secs(5));
        (s, p)
    })
    .await
    .unwrap();
    let exited_after = signalled.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(status.0.success(), "exit status {:?}", status.0);
    assert!(
        exited_after <= grace,
        "exited {exited_after:?} after SIGTERM"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        before > 0 && acked.len() > before,
        "load ran before ({before}) and during the drain ({})",
        acked.len()
    );

    let records = consume(&brokers, &topic, acked.len(), Duration::from_secs(30)).await;
    let in_topic: HashSet<&str> = records.iter().map(|r| r.id()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !in_topic.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are not in the topic, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let dupes = records.len() - in_topic.len();
    assert_eq!(dupes, 0, "duplicates in the topic");
}

/// Runs the binary to completion with `args` and extra environment; returns (success, stderr+stdout).
fn run_to_end(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).current_dir(dir).env_remove("SLUICE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

#[test]
fn bad_config_stops_start_up_naming_the_field() {
    let ws = Workspace::new();
    let (ok, text) = run_to_end(ws.path(), &["serve"], &[("SLUICE_SINK__KIND", "kafka")]);
    assert!(!ok);
    assert!(text.contains("kafka.brokers"), "{text}");
    assert!(
        !text.contains("panicked") && !text.contains("backtrace"),
        "{text}"
    );

    let cfg = ws.path().join("bad.toml");
    std::fs::write(&cfg, "[limits]\nmax_body_bytes = \"5 parsecs\"\n").unwrap();
    let (ok, text) = run_to_end(
        ws.path(),
        &["serve", "--config", cfg.to_str().unwrap()],
        &[],
    );
    assert!(!ok);
    assert!(text.contains("limits.max_body_bytes"), "{text}");

    let (ok, text) = run_to_end(ws.path(), &["check-config"], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("2 schemas"), "{text}");

    // A schema that does not compile stops start-up with its file name.
    ws.schema("broken", 1, json!({"type": 12}));
    let (ok, text) = run_to_end(ws.path(), &["check-config"], &[]);
    assert!(!ok);
    assert!(text.contains("broken") && text.contains("1.json"), "{text}");
}

#[test]
fn help_documents_the_commands() {
    let ws = Workspace::new();
    let (ok, text) = run_to_end(ws.path(), &["--help"], &[]);
    assert!(ok);
    for word in ["serve", "check-config", "SLUICE_"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
}

#[tokio::test]
async fn generated_api_key_works_and_its_plaintext_is_nowhere() {
    let ws = Workspace::new();
    let (ok, out) = run_to_end(
        ws.path(),
        &[
            "keys",
            "generate",
            "--tenant",
            "acme",
            "--scope",
            "events:write:test.*",
            "--name",
            "billing",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let key = out.lines().next().unwrap().trim().to_string();
    assert!(key.starts_with("sk_"), "{out}");
    let entry: String = out
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let secret = &key[20..];
    assert!(
        !entry.contains(secret),
        "the config entry holds only the hash"
    );
    let config = ws.path().join("sluice.toml");
    std::fs::write(&config, format!("[log]\nlevel = \"debug\"\n\n{entry}\n")).unwrap();

    let log_path = ws.path().join("sluice.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let client = reqwest::Client::new();
    let mut p = Proc::spawn_logging(
        ws.path(),
        &[
            ("SLUICE_CONFIG", config.display().to_string()),
            ("RUST_LOG", "debug".into()),
        ],
        Stdio::from(log),
    );
    p.wait_ready(&client).await;
    let post = |k: String| {
        client
            .post(format!("{}/v1/events", p.url))
            .header("x-api-key", k)
            .header("content-type", "application/json")
            .body(json!({"type": STRICT, "data": {"n": 1}}).to_string())
            .send()
    };
    assert_eq!(post(key.clone()).await.unwrap().status(), 200);
    let mut wrong = key.clone();
    wrong.replace_range(key.len() - 4.., "AAAA");
    assert_eq!(post(wrong.clone()).await.unwrap().status(), 401);
    let metrics = p.metrics(&client).await;
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(15)).success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("sluice serving"),
        "logs were captured: {logs}"
    );
    for (place, text) in [
        ("config", std::fs::read_to_string(&config).unwrap()),
        ("logs", logs),
        ("metrics", metrics),
    ] {
        assert!(!text.contains(secret), "the key appears in the {place}");
        assert!(
            !text.contains(&wrong[20..]),
            "a presented wrong key appears in the {place}"
        );
    }
    let stored = std::fs::read_to_string(
        ws.path()
            .join("data")
            .join(format!("events.{STRICT}.ndjson")),
    )
    .unwrap();
    let line: serde_json::Value = serde_json::from_str(stored.lines().next().unwrap()).unwrap();
    assert_eq!(line["headers"]["sluice_tenant"], "acme");
    assert_eq!(line["headers"]["ce_source"], "sluice://acme/billing");
}

#[test]
fn auth_config_mistakes_stop_start_up() {
    let ws = Workspace::new();
    let (ok, text) = run_to_end(
        ws.path(),
        &["check-config"],
        &[("SLUICE_AUTH__MODE", "required")],
    );
    assert!(!ok);
    assert!(text.contains("auth.mode"), "{text}");
    let (ok, text) = run_to_end(
        ws.path(),
        &["check-config"],
        &[("SLUICE_ROUTES__DEFAULT_TOPIC", "events.{tenant}.{type}")],
    );
    assert!(!ok);
    assert!(text.contains("{tenant}") && text.contains("auth"), "{text}");
    let (ok, text) = run_to_end(
        ws.path(),
        &["check-config"],
        &[("SLUICE_AUTH__JWKS_URLS", "ftp://idp.example/jwks")],
    );
    assert!(!ok);
    assert!(text.contains("auth.jwks_urls[0]"), "{text}");
    let (ok, text) = run_to_end(
        ws.path(),
        &["keys", "generate", "--tenant", "t", "--class", "browser"],
        &[],
    );
    assert!(!ok, "a browser key needs origins: {text}");
}

#[tokio::test]
async fn schema_cli_registers_checks_gets_and_lists_against_a_running_sluice() {
    let ws = Workspace::new();
    let client = reqwest::Client::new();
    let mut p = Proc::spawn(ws.path(), &[]);
    p.wait_ready(&client).await;
    let ty = unique("it.cli.");
    let v1 = ws.path().join("v1.json");
    std::fs::write(&v1, json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}).to_string()).unwrap();
    let v2 = ws.path().join("v2.json");
    std::fs::write(
        &v2,
        json!({"type": "object", "properties": {"a": {"type": "integer"}}}).to_string(),
    )
    .unwrap();
    let url = p.url.clone();
    let cli = |args: &[&str]| {
        let mut all = vec!["schema", "--url", url.as_str()];
        all.extend_from_slice(args);
        run_to_end(ws.path(), &all, &[])
    };
    let (ok, out) = cli(&["register", &ty, v1.to_str().unwrap()]);
    assert!(ok && out.contains("version 1"), "{out}");
    let (ok, out) = cli(&["check", &ty, v2.to_str().unwrap()]);
    assert!(!ok, "an incompatible change fails the check: {out}");
    assert!(
        out.contains("NOT compatible") && out.contains("#/properties/a"),
        "{out}"
    );
    let (ok, out) = cli(&["register", &ty, v2.to_str().unwrap()]);
    assert!(!ok && out.contains("40901"), "{out}");
    let (ok, out) = cli(&["get", &ty]);
    assert!(
        ok && out.contains("\"additionalProperties\": false"),
        "{out}"
    );
    let (ok, out) = cli(&["list"]);
    assert!(ok && out.lines().any(|l| l == ty), "{out}");
    let (ok, out) = cli(&["list", &ty]);
    assert!(ok && out.trim() == "1", "{out}");
    // The event type is enforced at once by the running server.
    let resp = client
        .post(format!("{}/v1/events", p.url))
        .header("content-type", "application/json")
        .body(json!({"type": ty, "data": {"a": "x"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn registry_two_processes_sharing_postgres_see_each_others_schemas_within_a_second() {
    let pg = crate::registry_store::PgSchema::new().await;
    let ws = Workspace::new();
    let client = reqwest::Client::new();
    let env = [("SLUICE_REGISTRY__URL", pg.url.clone())];
    let a = Proc::spawn(ws.path(), &env);
    let b = Proc::spawn(ws.path(), &env);
    a.wait_ready(&client).await;
    b.wait_ready(&client).await;
    let ty = unique("it.procs.");
    let register = |p: &Proc, schema: serde_json::Value| {
        client
            .post(format!("{}/subjects/{ty}/versions", p.url))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(json!({"schemaType": "JSON", "schema": schema.to_string()}).to_string())
            .send()
    };
    let event = json!({"type": ty, "data": {"k": 1}}).to_string();
    let post_b = || {
        client
            .post(format!("{}/v1/events", b.url))
            .header("content-type", "application/json")
            .body(event.clone())
            .send()
    };
    assert_eq!(post_b().await.unwrap().status(), 400, "unknown type on B");
    let registered_at = Instant::now();
    let r = register(
        &a,
        json!({"type": "object", "properties": {"k": {"type": "integer"}}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    loop {
        if post_b().await.unwrap().status() == 200 {
            break;
        }
        assert!(
            registered_at.elapsed() < Duration::from_secs(1),
            "B did not enforce A's schema within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "propagation between processes: {:?}",
        registered_at.elapsed()
    );

    // Concurrent registrations through both processes: distinct ids, one version order.
    let put = client
        .put(format!("{}/config/{ty}", a.url))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(json!({"compatibility": "NONE"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let mut calls = Vec::new();
    for i in 0..10 {
        let p = if i % 2 == 0 { &a } else { &b };
        calls.push(register(p, json!({"type": "object", "title": format!("v{i}"), "properties": {format!("p{i}"): {}}})));
    }
    let mut ids = Vec::new();
    let mut versions = Vec::new();
    for resp in futures_util::future::join_all(calls).await {
        let body: serde_json::Value = resp.unwrap().json().await.unwrap();
        ids.push(body["id"].as_u64().unwrap());
        versions.push(body["version"].as_u64().unwrap());
    }
    ids.sort();
    ids.dedup();
    versions.sort();
    assert_eq!(ids.len(), 10);
    assert_eq!(versions, (2..=11).collect::<Vec<u64>>());
}
