//! The Kafka sink against Apache Kafka's security: TLS with server verification, client
//! certificates (mTLS), SASL SCRAM-SHA-512 and PLAIN, OAUTHBEARER against Kafka's own JWKS
//! validator, and ACLs. Each refusal must leave the gateway not ready with a reason that
//! names it, and nothing acknowledged. See support/kafka_secure.rs for the broker.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice::config::{Config, KafkaConfig, KafkaProtocol, SaslMechanism};

use crate::support::certs::Ca;
use crate::support::kafka::{consume_ids, create_topic};
use crate::support::kafka_secure::{
    secure_broker, SecureBroker, DECIDE, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, PLAIN_PASSWORD,
    SCRAM_PASSWORD,
};
use crate::support::{strict_schema, unique, TestServer, Workspace};

/// A fresh event type with the strict schema, and its topic (made through the admin listener).
async fn fresh_type(ws: &Workspace, b: &SecureBroker) -> (String, String) {
    let ty = unique("it.ksec.");
    ws.schema(&ty, 1, strict_schema());
    let topic = format!("events.{ty}");
    create_topic(&b.admin, &topic, 1).await;
    (ty, topic)
}

fn config(ws: &Workspace, brokers: &str, set: impl FnOnce(&mut KafkaConfig)) -> Config {
    let mut c = ws.kafka_config(brokers);
    c.kafka.delivery_timeout_ms = 3000;
    set(&mut c.kafka);
    c
}

fn event(ty: &str, id: &str) -> Value {
    json!({"type": ty, "id": id, "source": "/it/ksec", "data": {"n": 1}})
}

/// Sends `ids` one request each; returns the statuses.
async fn send_all(s: &TestServer, ty: &str, ids: &[String]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for id in ids {
        statuses.push(s.send_json(&event(ty, id)).await.status);
    }
    statuses
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Waits until `/readyz` is 503 with a sink reason starting with `cause`; returns the reason.
async fn wait_refused(s: &TestServer, cause: &str) -> String {
    let deadline = Instant::now() + DECIDE;
    loop {
        let a = s.get("/readyz").await;
        let reason = a.body["checks"]["sink"]["reason"].as_str().unwrap_or("");
        if a.status == 503 && reason.starts_with(cause) {
            return reason.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no `{cause}` refusal within {DECIDE:?}: /readyz {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Not ready for `cause`, every event refused with 503, none of them in the topic later.
async fn assert_refused(
    s: &TestServer,
    b: &SecureBroker,
    ty: &str,
    topic: &str,
    cause: &str,
) -> String {
    let reason = wait_refused(s, cause).await;
    let refused = ids(&unique("refused"), 3);
    let statuses = send_all(s, ty, &refused).await;
    assert!(
        statuses.iter().all(|&st| st == 503),
        "nothing may be acknowledged while Kafka refuses us ({reason}): {statuses:?}"
    );
    let landed = consume_ids(&b.admin, topic, &refused, Duration::from_secs(3)).await;
    assert!(
        landed
            .iter()
            .all(|r| !refused.contains(&r.id().to_string())),
        "refused events landed"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(&format!(
            "sluice_kafka_security_errors_total{{cause=\"{cause}\"}}"
        )),
        "the refusal is counted by cause"
    );
    reason
}

/// Every id answered 200 and in the topic exactly once.
async fn assert_round_trip(s: &TestServer, b: &SecureBroker, ty: &str, topic: &str, n: usize) {
    let sent = ids(&unique("ok"), n);
    let statuses = send_all(s, ty, &sent).await;
    assert!(statuses.iter().all(|&st| st == 200), "{statuses:?}");
    let landed = consume_ids(&b.admin, topic, &sent, Duration::from_secs(20)).await;
    let mut got: Vec<&str> = landed
        .iter()
        .map(|r| r.id())
        .filter(|id| sent.iter().any(|s| s == id))
        .collect();
    got.sort();
    let mut want: Vec<&str> = sent.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want, "each acknowledged event is in the topic once");
}

fn write_ca(dir: &std::path::Path, ca: &Ca) -> PathBuf {
    let path = dir.join(format!("{}.pem", unique("ca")));
    std::fs::write(&path, &ca.pem).unwrap();
    path
}

#[tokio::test]
async fn kafka_tls_verifies_the_broker_and_a_wrong_ca_or_host_name_is_refused_with_nothing_acknowledged(
) {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, b).await;
    let tls = |brokers: &str, ca: PathBuf| {
        config(&ws, brokers, |k| {
            k.security_protocol = KafkaProtocol::Ssl;
            k.ssl_ca_file = Some(ca);
        })
    };

    let s = TestServer::start_ready(tls(&b.ssl, b.ca_file())).await;
    assert_round_trip(&s, b, &ty, &topic, 20).await;
    drop(s);

    let stranger = write_ca(ws.path(), &Ca::new("not the brokers' CA"));
    let s = TestServer::start(tls(&b.ssl, stranger)).await;
    let reason = assert_refused(&s, b, &ty, &topic, "certificate").await;
    assert!(reason.contains("verify"), "{reason}");
    drop(s);

    // The right CA, but the certificate names another host.
    let s = TestServer::start(tls(&b.ssl_wrong_name, b.ca_file())).await;
    let reason = assert_refused(&s, b, &ty, &topic, "certificate").await;
    assert!(reason.contains("verify"), "{reason}");
}

#[tokio::test]
async fn kafka_mtls_takes_the_gateway_with_its_client_certificate_and_refuses_it_without() {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, b).await;
    let (cert, key) = b.client_cert(&unique("client"));

    let s = TestServer::start_ready(config(&ws, &b.mtls, |k| {
        k.security_protocol = KafkaProtocol::Ssl;
        k.ssl_ca_file = Some(b.ca_file());
        k.ssl_cert_file = Some(cert);
        k.ssl_key_file = Some(key);
    }))
    .await;
    assert_round_trip(&s, b, &ty, &topic, 20).await;
    drop(s);

    let s = TestServer::start(config(&ws, &b.mtls, |k| {
        k.security_protocol = KafkaProtocol::Ssl;
        k.ssl_ca_file = Some(b.ca_file());
    }))
    .await;
    let reason = assert_refused(&s, b, &ty, &topic, "certificate").await;
    println!("mTLS without a certificate: {reason}");
}

fn password_file(ws: &Workspace, password: &str) -> PathBuf {
    let path = ws.path().join(unique("password"));
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path
}

#[tokio::test]
async fn kafka_sasl_scram_over_tls_and_plain_round_trip_and_a_wrong_password_is_refused() {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, b).await;
    let scram = |password: &str| {
        let file = password_file(&ws, password);
        config(&ws, &b.scram, |k| {
            k.security_protocol = KafkaProtocol::SaslSsl;
            k.sasl_mechanism = Some(SaslMechanism::ScramSha512);
            k.sasl_username = Some("alice".into());
            k.sasl_password_file = Some(file);
            k.ssl_ca_file = Some(b.ca_file());
        })
    };

    let s = TestServer::start_ready(scram(SCRAM_PASSWORD)).await;
    assert_round_trip(&s, b, &ty, &topic, 20).await;
    drop(s);

    // PLAIN over a plaintext connection: only when explicitly allowed (config tests refuse it
    // otherwise); the password comes from the environment's field here.
    let s = TestServer::start_ready(config(&ws, &b.plain, |k| {
        k.security_protocol = KafkaProtocol::SaslPlaintext;
        k.sasl_mechanism = Some(SaslMechanism::Plain);
        k.sasl_username = Some("alice".into());
        k.sasl_password = Some(PLAIN_PASSWORD.to_string().into());
        k.allow_insecure_sasl = true;
    }))
    .await;
    assert_round_trip(&s, b, &ty, &topic, 20).await;
    drop(s);

    let s = TestServer::start(scram("not-the-password")).await;
    let reason = assert_refused(&s, b, &ty, &topic, "authentication").await;
    assert!(reason.contains("SCRAM-SHA-512"), "{reason}");
    assert!(
        !s.metrics().await.contains("not-the-password") && !reason.contains("not-the-password"),
        "the password is never shown"
    );
}

#[tokio::test]
async fn kafka_acl_denial_fails_that_topic_with_an_authorization_reason_while_others_flow() {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (open_ty, open_topic) = fresh_type(&ws, b).await;
    let (closed_ty, closed_topic) = fresh_type(&ws, b).await;
    b.allow("User:alice", "Write", &open_topic);
    // An ACL for someone else: the topic is no longer open to every principal.
    b.allow("User:bob", "Write", &closed_topic);
    let password = password_file(&ws, SCRAM_PASSWORD);
    let s = TestServer::start_ready(config(&ws, &b.scram, |k| {
        k.security_protocol = KafkaProtocol::SaslSsl;
        k.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        k.sasl_username = Some("alice".into());
        k.sasl_password_file = Some(password);
        k.ssl_ca_file = Some(b.ca_file());
    }))
    .await;

    let denied = s.send_json(&event(&closed_ty, "denied-1")).await;
    assert_eq!(denied.status, 503, "{}", denied.body);
    assert_eq!(
        denied.result(0)["error"]["code"],
        "sink_unauthorized",
        "{}",
        denied.body
    );
    assert!(denied.retry_after.is_some());
    // The broker's words and the topic stay in the server log and /readyz (for operators).
    let message = denied.result(0)["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains(&closed_topic) && !message.contains("Broker"),
        "{message}"
    );
    assert_round_trip(&s, b, &open_ty, &open_topic, 10).await;

    let a = s.get("/readyz").await;
    assert_eq!(
        a.status, 200,
        "one denied topic does not take the replica out: {}",
        a.body
    );
    let reason = a.body["checks"]["sink"]["reason"].as_str().unwrap_or("");
    assert_eq!(
        reason,
        format!("authorization: writes refused to {closed_topic}")
    );
    assert!(s
        .metrics()
        .await
        .contains("sluice_kafka_security_errors_total{cause=\"authorization\"}"));

    // Granted: the same event goes through once the producer sees it, and the reason clears.
    b.allow("User:alice", "Write", &closed_topic);
    let granted = Instant::now();
    loop {
        let a = s.send_json(&event(&closed_ty, "denied-1")).await;
        if a.status == 200 {
            break;
        }
        assert!(
            granted.elapsed() < Duration::from_secs(60),
            "still refused 60 s after the grant: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("writes flowed {:?} after the grant", granted.elapsed());
    let a = s.get("/readyz").await;
    assert_eq!(
        a.body["checks"]["sink"]["reason"],
        Value::Null,
        "{}",
        a.body
    );
}

#[tokio::test]
async fn kafka_oauthbearer_tokens_from_the_idp_are_refreshed_through_a_90_second_run_with_nothing_lost(
) {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, b).await;
    let secret = password_file(&ws, OAUTH_CLIENT_SECRET);
    let issued_before = b.idp.issued.load(Ordering::SeqCst);
    let s = TestServer::start_ready(config(&ws, &b.oauth, |k| {
        k.delivery_timeout_ms = 10_000;
        k.security_protocol = KafkaProtocol::SaslSsl;
        k.sasl_mechanism = Some(SaslMechanism::OAuthBearer);
        k.oauth_token_url = Some(b.idp.token_url.clone());
        k.oauth_client_id = Some(OAUTH_CLIENT_ID.into());
        k.oauth_client_secret_file = Some(secret);
        k.oauth_scope = Some("kafka".into());
        k.ssl_ca_file = Some(b.ca_file());
    }))
    .await;
    // Tokens live 30 s; the broker re-authenticates connections every 10 s. The endpoint is
    // down for 7 s around the first refresh (at 80% of the lifetime, 24 s): the gateway keeps
    // its token meanwhile and gets a new one once the endpoint is back.
    let started = Instant::now();
    let mut sent = Vec::new();
    // A 503 is backpressure (a slow CI machine can run past a delivery timeout): the client
    // retries, as real ones do. A token that lapsed would refuse everything for seconds.
    let mut retried = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(90) {
        let t = started.elapsed().as_secs();
        b.idp.down.store((20..27).contains(&t), Ordering::SeqCst);
        let id = format!("oauth-{i}");
        let mut attempts = 0;
        loop {
            let a = s.send_json(&event(&ty, &id)).await;
            if a.status == 200 {
                break;
            }
            assert_eq!(a.status, 503, "{}", a.body);
            retried.push((
                started.elapsed().as_secs(),
                a.result(0)["error"]["code"].to_string(),
            ));
            attempts += 1;
            assert!(attempts < 20, "{id} refused 20 times: {retried:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sent.push(id);
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.idp.down.store(false, Ordering::SeqCst);
    assert!(
        retried.len() * 20 <= sent.len(),
        "more than 5% of events needed a retry (second, code): {retried:?}"
    );
    println!(
        "OAUTHBEARER run: {} events, retries (second, code): {retried:?}",
        sent.len()
    );
    let landed = consume_ids(&b.admin, &topic, &sent, Duration::from_secs(30)).await;
    assert_eq!(landed.len(), sent.len(), "lost 0, duplicated 0");

    let issued = b.idp.issued.load(Ordering::SeqCst) - issued_before;
    assert!(
        issued >= 4,
        "a 30 s token is refreshed at least 3 times in 90 s: {issued} issued"
    );
    let metrics = s.metrics().await;
    let count = |result: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "sluice_kafka_token_refreshes_total{{source=\"oidc\",result=\"{result}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("ok") >= 4.0, "{metrics}");
    assert!(
        count("failed") >= 1.0,
        "the refresh while the endpoint was down is counted"
    );
}

/// Our MSK IAM token against AWS's own signer, byte for byte, for fixed credentials, region
/// and time, with and without a session token (whose `/`, `+` and `=` must be encoded alike).
#[test]
fn msk_iam_tokens_are_byte_for_byte_those_of_aws_signer() {
    use aws_credential_types::Credentials;
    use std::time::UNIX_EPOCH;
    let python = std::env::var("SLUICE_TEST_PYTHON")
        .expect("run with scripts/test, which sets SLUICE_TEST_PYTHON (a virtualenv with aws-msk-iam-sasl-signer-python)");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/python/msk_iam_token.py"
    );
    let at: u64 = 1_796_419_800; // 2026-12-04T21:30:00Z
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    for (region, session) in [
        ("eu-west-1", None),
        (
            "us-east-1",
            Some("IQoJb3JpZ2luX2VjEMr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+abc/def+ghi=="),
        ),
        ("ap-southeast-2", Some("FwoGZXIvYXdzEBYaDHh5eXp6")),
    ] {
        let mut cmd = std::process::Command::new(&python);
        cmd.arg(script)
            .arg(region)
            .arg(at.to_string())
            .arg("AKIAIOSFODNN7EXAMPLE")
            .arg(secret);
        if let Some(s) = session {
            cmd.arg(s);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let aws: Value = serde_json::from_slice(&out.stdout).unwrap();
        let creds = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            secret,
            session.map(String::from),
            None,
            "test",
        );
        let (ours, expires_ms) = sluice::sink::kafka::msk_iam::token(
            &creds,
            region,
            UNIX_EPOCH + Duration::from_secs(at),
            aws["user_agent"].as_str().unwrap(),
        )
        .unwrap();
        assert_eq!(
            ours,
            aws["token"].as_str().unwrap(),
            "{region}, session token {session:?}"
        );
        assert_eq!(expires_ms, aws["expires_ms"].as_i64().unwrap());
    }
}

/// Runs `sluice kafka check` with `env`; returns (exit success, stdout + stderr).
async fn kafka_check(env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["kafka", "check", "--timeout", "5s"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn kafka_check_lists_brokers_and_route_topics_and_says_what_is_wrong() {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (_, present) = fresh_type(&ws, b).await;
    let missing_ty = unique("it.ksec.missing.");
    ws.schema(&missing_ty, 1, strict_schema());
    let (_, denied) = fresh_type(&ws, b).await;
    b.allow("User:bob", "Write", &denied);
    let password = password_file(&ws, SCRAM_PASSWORD);
    let env = |password: &PathBuf| {
        vec![
            ("SLUICE_SINK__KIND", "kafka".to_string()),
            ("SLUICE_SCHEMAS__DIR", ws.schemas().display().to_string()),
            ("SLUICE_KAFKA__BROKERS", b.scram.clone()),
            ("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("SLUICE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512".into()),
            ("SLUICE_KAFKA__SASL_USERNAME", "alice".into()),
            (
                "SLUICE_KAFKA__SASL_PASSWORD_FILE",
                password.display().to_string(),
            ),
            (
                "SLUICE_KAFKA__SSL_CA_FILE",
                b.ca_file().display().to_string(),
            ),
        ]
    };

    let (ok, out) = kafka_check(&env(&password)).await;
    assert!(!ok, "a missing and a denied topic are problems: {out}");
    assert!(out.contains("sasl_ssl, SCRAM-SHA-512 as alice"), "{out}");
    assert!(out.contains("connected: 1 broker(s)"), "{out}");
    assert!(
        out.contains(&format!("ok       {present}  1 partition(s)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("missing  events.{missing_ty}: does not exist")),
        "{out}"
    );
    assert!(
        out.contains(&format!("denied   {denied}: authorization")),
        "{out}"
    );
    assert!(
        out.ends_with("sluice: Kafka is not usable as configured (see above)\n"),
        "{out}"
    );

    let wrong = password_file(&ws, "not-the-password");
    let (ok, out) = kafka_check(&env(&wrong)).await;
    assert!(!ok);
    assert!(out.contains("cannot connect: authentication: "), "{out}");
    assert!(
        out.contains("hint: the brokers refuse the credentials"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-password") && !out.contains(SCRAM_PASSWORD),
        "{out}"
    );

    // TLS to the plaintext SASL port: the session itself fails.
    let mut e = env(&password);
    e[2].1 = b.plain.clone();
    let (ok, out) = kafka_check(&e).await;
    assert!(!ok);
    assert!(out.contains("cannot connect: tls: "), "{out}");
    assert!(out.contains("PLAINTEXT broker listener"), "{out}");
    assert!(out.contains("hint: the TLS session failed"), "{out}");
}

/// AWS_MSK_IAM end to end short of MSK itself: credentials from the AWS chain (scripts/test
/// sets them in the environment, as a pod's IRSA or an instance profile would), a token signed
/// and handed to librdkafka, sent over SASL_SSL to Kafka, whose JWT validator refuses it (it is
/// no JWT): not ready, the reason says authentication, nothing acknowledged.
#[tokio::test]
async fn kafka_msk_iam_signs_with_the_aws_chain_and_a_broker_refusing_the_token_is_not_ready() {
    let b = secure_broker().await;
    let ws = Workspace::new();
    let (ty, topic) = fresh_type(&ws, b).await;
    let s = TestServer::start(config(&ws, &b.oauth, |k| {
        k.security_protocol = KafkaProtocol::SaslSsl;
        k.sasl_mechanism = Some(SaslMechanism::AwsMskIam);
        k.msk_iam_region = Some("eu-west-1".into());
        k.ssl_ca_file = Some(b.ca_file());
    }))
    .await;
    assert_refused(&s, b, &ty, &topic, "authentication").await;
    let metrics = s.metrics().await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("sluice_kafka_token_refreshes_total{source=\"msk_iam\",result=\"ok\"}")),
        "a token was signed from the chain's credentials: {metrics}"
    );
}

/// `check-config` names the Kafka security it will use, and never a secret.
#[test]
fn check_config_names_the_kafka_security_without_its_secret() {
    let ws = Workspace::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check-config")
        .env_clear()
        .env("SLUICE_SCHEMAS__DIR", ws.schemas())
        .env("SLUICE_SINK__KIND", "kafka")
        .env("SLUICE_KAFKA__BROKERS", "127.0.0.1:9")
        .env("SLUICE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl")
        .env("SLUICE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
        .env("SLUICE_KAFKA__SASL_USERNAME", "alice")
        .env("SLUICE_KAFKA__SASL_PASSWORD", "hunter2-secret")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("sink kafka (sasl_ssl, SCRAM-SHA-256 as alice)"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}
