//! TLS on the listener, over real connections: HTTP/1.1 and HTTP/2 (ALPN), the certificate
//! replaced on disk and served without a restart, a broken renewal refused while the old one
//! stays, client certificates (mTLS) as identities, and the handshake timeout. Certificates
//! are made at test time with rcgen.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, CertificateRevocationListParams, KeyPair, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use serde_json::{json, Value};
use sluice::config::{ClientAuth, ClientCertConfig, HumanDuration, KeyClass};
use tokio::io::AsyncReadExt;

use crate::support::auth::api_key_entry;
use crate::support::certs::Ca;
use crate::support::{eventually, TestServer, Workspace, ANY};

struct Files {
    cert: PathBuf,
    key: PathBuf,
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) -> Files {
    let f = Files {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&f.cert, cert).unwrap();
    std::fs::write(&f.key, key).unwrap();
    f
}

fn client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    client_with(ca, identity, |b| b)
}

fn client_with(
    ca: &Ca,
    identity: Option<&(String, String)>,
    f: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> reqwest::Client {
    let mut b = f(reqwest::Client::builder())
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

fn https(s: &TestServer) -> String {
    format!("https://localhost:{}", s.addr.port())
}

async fn post(c: &reqwest::Client, s: &TestServer, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = c
        .post(format!("{}/v1/events", https(s)))
        .json(&json!({"type": ANY, "data": {"n": 1}}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn tls_serves_http1_and_http2_and_swaps_a_renewed_certificate_without_restart() {
    let ws = Workspace::new();
    ws.schema(ANY, 1, json!({}));
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let files = write_pair(ws.path(), &old_ca.leaf(&["localhost"]));
    let mut c = ws.config();
    c.tls.cert_file = Some(files.cert.clone());
    c.tls.key_file = Some(files.key.clone());
    c.tls.reload_interval = HumanDuration(Duration::from_millis(200));
    let s = TestServer::start(c).await;

    let old = client(&old_ca, None);
    let r = client_with(&old_ca, None, |b| b.http1_only())
        .get(format!("{}/healthz", https(&s)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );
    // ALPN offers h2: reqwest takes it when the server does.
    let r = old
        .get(format!("{}/readyz", https(&s)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(post(&old, &s, &[]).await.0, 200);
    // Plain HTTP on a TLS port gets nothing useful (the handshake fails).
    assert!(reqwest::Client::new()
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await
        .is_err());

    // A client trusting only the new CA fails until the renewed pair is on disk.
    let new = client(&new_ca, None);
    assert!(new
        .get(format!("{}/healthz", https(&s)))
        .send()
        .await
        .is_err());
    let renewed = new_ca.leaf(&["localhost"]);
    write_pair(ws.path(), &renewed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = new.get(format!("{}/healthz", https(&s))).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewed certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(post(&new, &s, &[]).await.0, 200);
    // At least one: the metrics registry is the process's, shared with the other TLS tests.
    let m = s.metrics().await;
    assert!(
        m.contains(r#"sluice_tls_reloads_total{result="ok"} "#),
        "{m}"
    );
    assert!(
        m.contains("sluice_tls_cert_not_after_timestamp_seconds"),
        "{m}"
    );

    // A broken renewal (a key from another pair) is refused; the good certificate stays.
    std::fs::write(&files.key, new_ca.leaf(&["localhost"]).1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s
        .metrics()
        .await
        .contains(r#"sluice_tls_reloads_total{result="error"}"#)
    {
        assert!(Instant::now() < deadline, "broken renewal not reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = client(&new_ca, None);
    assert_eq!(post(&fresh, &s, &[]).await.0, 200);
}

/// A workspace with a schema for ANY, and a config serving TLS (a certificate from the first
/// CA) that asks for client certificates from the second.
fn mtls_config() -> (Workspace, Ca, Ca, sluice::config::Config) {
    let ws = Workspace::new();
    ws.schema(ANY, 1, json!({}));
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let files = write_pair(ws.path(), &server_ca.leaf(&["localhost"]));
    let ca_file = ws.path().join("clients.pem");
    std::fs::write(&ca_file, &client_ca.pem).unwrap();
    let mut c = ws.config();
    c.tls.cert_file = Some(files.cert);
    c.tls.key_file = Some(files.key);
    c.tls.client_ca_file = Some(ca_file);
    (ws, server_ca, client_ca, c)
}

#[tokio::test]
async fn client_certificates_are_identities_and_required_mode_refuses_clients_without_one() {
    let (ws, server_ca, client_ca, mut c) = mtls_config();
    let stranger_ca = Ca::new("stranger ca");
    c.routes.default_topic = "in.{tenant}".into();
    c.auth.client_certs = vec![ClientCertConfig {
        subject: "spiffe://acme/ns/shop/sa/checkout".into(),
        tenant: "acme".into(),
        scopes: vec![format!("events:write:{ANY}")],
    }];
    let (key, entry) = api_key_entry(KeyClass::Server, &["events:write"], &[]);
    c.auth.api_keys = vec![entry];
    let optional = TestServer::start_ready(c.clone()).await;

    // The certificate's URI SAN names the tenant; no token needed.
    let mut p = CertificateParams::new(vec!["checkout.acme.internal".to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://acme/ns/shop/sa/checkout".try_into().unwrap(),
    ));
    let k = KeyPair::generate().unwrap();
    let checkout = (
        p.signed_by(&k, &client_ca.issuer).unwrap().pem(),
        k.serialize_pem(),
    );
    let (status, _) = post(&client(&server_ca, Some(&checkout)), &optional, &[]).await;
    assert_eq!(status, 200);
    let stored = std::fs::read_to_string(ws.data().join("in.acme.ndjson")).unwrap();
    let ev: Value = serde_json::from_str(stored.lines().next().unwrap()).unwrap();
    assert_eq!(
        ev["headers"]["ce_source"], "sluice://acme/spiffe%3A%2F%2Facme%2Fns%2Fshop%2Fsa%2Fcheckout",
        "{ev}"
    );

    // A verified certificate that names nobody: 403 with its own code.
    let unknown = client_ca.leaf(&["batch.acme.internal"]);
    let (status, body) = post(&client(&server_ca, Some(&unknown)), &optional, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "client_certificate_not_allowed");
    // An API key wins over the certificate.
    let (status, _) = post(
        &client(&server_ca, Some(&unknown)),
        &optional,
        &[("x-api-key", key.as_str())],
    )
    .await;
    assert_eq!(status, 200);
    assert!(ws.data().join("in.globex.ndjson").exists());
    // Optional mode: no certificate is fine at the TLS layer; auth then wants a credential.
    let (status, body) = post(&client(&server_ca, None), &optional, &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_credentials"))
    );
    // A certificate from another CA fails the handshake.
    let stranger = stranger_ca.leaf(&["checkout.acme.internal"]);
    assert!(client(&server_ca, Some(&stranger))
        .get(format!("{}/healthz", https(&optional)))
        .send()
        .await
        .is_err());

    // Required mode: no certificate, no connection.
    c.tls.client_auth = ClientAuth::Required;
    let required = TestServer::start(c).await;
    assert!(client(&server_ca, None)
        .get(format!("{}/healthz", https(&required)))
        .send()
        .await
        .is_err());
    let (status, _) = post(&client(&server_ca, Some(&checkout)), &required, &[]).await;
    assert_eq!(status, 200);
}

impl Ca {
    /// A client certificate for `dns` with this serial number.
    fn client_leaf(&self, dns: &str, serial: u64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![dns.to_string()]).unwrap();
        p.serial_number = Some(SerialNumber::from(serial));
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A CRL revoking `serials`, valid from `this_update` until `next_update` (y, m, d).
    fn crl(
        &self,
        number: u64,
        serials: &[u64],
        this_update: (i32, u8, u8),
        next_update: (i32, u8, u8),
    ) -> String {
        let day = |(y, m, d): (i32, u8, u8)| rcgen::date_time_ymd(y, m, d);
        CertificateRevocationListParams {
            this_update: day(this_update),
            next_update: day(next_update),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: day(this_update),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

#[tokio::test]
async fn client_certificates_on_the_crl_are_refused_and_a_new_crl_applies_without_restart() {
    let (ws, server_ca, client_ca, mut c) = mtls_config();
    let crl_file = ws.path().join("clients.crl");
    let valid = ((2026, 1, 1), (2036, 1, 1));
    std::fs::write(&crl_file, client_ca.crl(1, &[], valid.0, valid.1)).unwrap();
    c.tls.client_crl_file = Some(crl_file.clone());
    c.tls.reload_interval = HumanDuration(Duration::from_millis(100));
    c.auth.client_certs = ["a.acme.internal", "b.acme.internal"]
        .map(|subject| ClientCertConfig {
            subject: subject.into(),
            tenant: "acme".into(),
            scopes: vec![format!("events:write:{ANY}")],
        })
        .to_vec();
    let s = TestServer::start_ready(c).await;
    let a = client_ca.client_leaf("a.acme.internal", 1001);
    let b = client_ca.client_leaf("b.acme.internal", 1002);
    // A new client (so a new handshake) per attempt: revocation is checked at the handshake.
    let attempt = |id: &(String, String)| {
        let c = client(&server_ca, Some(id));
        let url = format!("{}/v1/events", https(&s));
        async move {
            c.post(url)
                .json(&json!({"type": ANY, "data": {}}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // Polls until `id` connects (`ok`) or is refused, within 10 s.
    let until = |id: &(String, String), ok: bool, what: &str| {
        let (id, what) = (id.clone(), what.to_string());
        let attempt = &attempt;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while attempt(&id).await.is_ok() != ok {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(attempt(&a).await.unwrap(), 200);
    assert_eq!(attempt(&b).await.unwrap(), 200);

    // The CA publishes a CRL revoking a's certificate: refused from the next reload on.
    std::fs::write(&crl_file, client_ca.crl(2, &[1001], valid.0, valid.1)).unwrap();
    until(&a, false, "the revoked certificate still works").await;
    assert_eq!(attempt(&b).await.unwrap(), 200);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"sluice_tls_handshake_failures_total{reason="revoked"}"#),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "sluice_tls_client_crl_next_update_timestamp_seconds {}",
            rcgen::date_time_ymd(2036, 1, 1).unix_timestamp()
        )),
        "{m}"
    );

    // A CRL past its nextUpdate vouches for nobody: b is refused too, with its own reason.
    std::fs::write(
        &crl_file,
        client_ca.crl(3, &[1001], (2020, 1, 1), (2021, 1, 1)),
    )
    .unwrap();
    until(&b, false, "an expired CRL is still trusted").await;
    assert!(s
        .metrics()
        .await
        .contains(r#"sluice_tls_handshake_failures_total{reason="revocation_unknown"}"#));

    // A file that is not a CRL is refused on reload; the last good one stays in use.
    std::fs::write(&crl_file, client_ca.crl(4, &[1001], valid.0, valid.1)).unwrap();
    until(&b, true, "the renewed CRL was not picked up").await;
    let failed = r#"sluice_tls_reloads_total{result="error"}"#;
    let before = s.metric(failed).await;
    std::fs::write(&crl_file, "not a crl").unwrap();
    s.wait_metric_delta(failed, before, 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(attempt(&b).await.unwrap(), 200);
    assert!(attempt(&a).await.is_err());
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_handshake_is_closed_after_the_timeout() {
    let ws = Workspace::new();
    let ca = Ca::new("ca");
    let files = write_pair(ws.path(), &ca.leaf(&["localhost"]));
    let mut c = ws.config();
    c.tls.cert_file = Some(files.cert);
    c.tls.key_file = Some(files.key);
    c.tls.handshake_timeout = HumanDuration(Duration::from_millis(300));
    let s = TestServer::start(c).await;

    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Others are served meanwhile and afterwards.
    let r = client(&ca, None)
        .get(format!("{}/healthz", https(&s)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s
        .metrics()
        .await
        .contains(r#"sluice_tls_handshake_failures_total{reason="timeout"}"#));
}

#[test]
fn config_refuses_half_a_tls_setup_and_unreadable_files() {
    let ws = Workspace::new();
    let mut c = ws.config();
    c.tls.cert_file = Some(ws.path().join("missing.crt"));
    let e = sluice::check(&c).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("tls.key_file"), "{e}");
    c.tls.key_file = Some(ws.path().join("missing.key"));
    let e = sluice::check(&c).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("missing.crt"), "{e}");
    let ca = Ca::new("ca");
    let files = write_pair(ws.path(), &ca.leaf(&["localhost"]));
    c.tls.cert_file = Some(files.cert);
    c.tls.key_file = Some(files.key);
    sluice::check(&c).map(|_| ()).unwrap();
    c.auth.client_certs = vec![ClientCertConfig {
        subject: "x".into(),
        tenant: "t".into(),
        scopes: vec!["events:write".into()],
    }];
    let e = sluice::check(&c).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("tls.client_ca_file"), "{e}");
    c.auth.client_certs.clear();
    c.tls.client_crl_file = Some(ws.path().join("clients.crl"));
    let e = sluice::check(&c).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("tls.client_crl_file") && e.contains("tls.client_ca_file"),
        "{e}"
    );
}

#[tokio::test]
async fn tls_one_source_cannot_hold_more_than_its_share_of_pending_handshakes() {
    use tokio::io::AsyncReadExt;
    let ws = Workspace::new();
    let ca = Ca::new("ca");
    let files = write_pair(ws.path(), &ca.leaf(&["localhost"]));
    let mut c = ws.config();
    c.tls.cert_file = Some(files.cert.clone());
    c.tls.key_file = Some(files.key.clone());
    c.tls.max_pending_handshakes_per_source = 3;
    let s = TestServer::start(c).await;
    // Three silent connections hold this address's share; a fourth is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    // Once the server has accepted the three, a fourth is closed at once.
    let mut b = [0u8; 16];
    eventually(
        "a fourth connection to be closed at once",
        Duration::from_secs(5),
        || async {
            let mut fourth = tokio::net::TcpStream::connect(s.addr).await.unwrap();
            let mut b = [0u8; 16];
            let r = tokio::time::timeout(Duration::from_millis(300), fourth.read(&mut b)).await;
            matches!(r, Ok(Ok(0)) | Ok(Err(_)))
        },
    )
    .await;
    for c in &mut held {
        let r = tokio::time::timeout(Duration::from_millis(100), c.read(&mut b)).await;
        assert!(r.is_err(), "still waiting for a handshake");
    }
    // Once they are gone, the address handshakes again.
    drop(held);
    let mut r = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while r.is_none() {
        match client(&ca, None)
            .get(format!("{}/healthz", https(&s)))
            .send()
            .await
        {
            Ok(resp) => r = Some(resp),
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "no handshake: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
