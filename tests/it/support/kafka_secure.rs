//! One Apache Kafka node with a listener per security setup Sluice supports, shared by the
//! Kafka security tests: certificates made at start (rcgen), a SCRAM user created with
//! Kafka's own ConfigCommand, ACLs through AclCommand, and an OIDC identity provider (token
//! endpoint and JWKS) served by the test process, which Kafka's own JWKS validator trusts.
//!
//! Listeners (all on 127.0.0.1):
//! - `admin`: PLAINTEXT, the super user (topics, ACLs, reading records back);
//! - `ssl`: TLS, server certificate for 127.0.0.1 and localhost;
//! - `ssl_wrong_name`: TLS, a certificate for `kafka.elsewhere.test` only;
//! - `mtls`: TLS requiring a client certificate signed by the CA;
//! - `scram`: SASL_SSL with SCRAM-SHA-512 (user `alice`, password [`SCRAM_PASSWORD`]);
//! - `plain`: SASL_PLAINTEXT with PLAIN (user `alice`, password [`PLAIN_PASSWORD`]);
//! - `oauth`: SASL_SSL with OAUTHBEARER, tokens checked against the test's JWKS, and
//!   connections re-authenticated every 10 s (so a token's expiry matters).
//!
//! Kafka's StandardAuthorizer runs with `allow.everyone.if.no.acl.found`: a topic without
//! ACLs is open to every principal; one with ACLs only to those they name.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use jsonwebtoken::Algorithm;
use serde_json::json;

use super::auth::{now, Signer};
use super::certs::Ca;
use super::kafka::{node_port, Cluster};

pub const SCRAM_PASSWORD: &str = "alice-scram-secret";
pub const PLAIN_PASSWORD: &str = "alice-plain-secret";
pub const OAUTH_CLIENT_ID: &str = "sluice-it";
pub const OAUTH_CLIENT_SECRET: &str = "sluice-it-client-secret";
pub const OAUTH_ISSUER: &str = "https://idp.kafka.test";
/// The CN of [`SecureBroker::client_cert`]: Kafka's principal is `User:CN=<this>`.
pub const CLIENT_CN: &str = "sluice-it-client";

pub struct SecureBroker {
    _cluster: Cluster,
    /// Certificates and keys.
    pub dir: PathBuf,
    pub ca: Ca,
    pub admin: String,
    pub ssl: String,
    pub ssl_wrong_name: String,
    pub mtls: String,
    pub scram: String,
    pub plain: String,
    pub oauth: String,
    pub idp: Arc<Idp>,
}

/// The test's identity provider: client credentials grant and JWKS.
pub struct Idp {
    pub token_url: String,
    /// Tokens issued.
    pub issued: AtomicUsize,
    /// While set, the token endpoint answers 503.
    pub down: AtomicBool,
    /// Lifetime of the tokens issued from now on.
    pub lifetime_secs: AtomicU64,
}

static BROKER: tokio::sync::OnceCell<SecureBroker> = tokio::sync::OnceCell::const_new();

/// The shared node, started by the first test that asks.
pub async fn secure_broker() -> &'static SecureBroker {
    BROKER.get_or_init(SecureBroker::start).await
}

impl SecureBroker {
    async fn start() -> SecureBroker {
        // A static is never dropped, so the folder outlives the run: named by the test
        // process, and those of processes gone are deleted here.
        let prefix = "sluice-it-secure-kafka-";
        for entry in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let ca = Ca::new("sluice-it kafka CA");
        let keystore = |name: &str, (cert, key): (String, String)| {
            let path = certs.join(name);
            std::fs::write(&path, format!("{key}{cert}{}", ca.pem)).unwrap();
            path
        };
        let broker_pem = keystore("broker.pem", ca.leaf(&["127.0.0.1", "localhost"]));
        let wrong_pem = keystore("wrong-name.pem", ca.leaf(&["kafka.elsewhere.test"]));
        std::fs::write(certs.join("ca.pem"), &ca.pem).unwrap();

        let idp = Idp::serve();
        let jwks = idp.token_url.replace("/token", "/jwks");
        let port = node_port();
        let [ssl, wrong, mtls, scram, plain, oauth] = [(); 6].map(|_| node_port());
        let d = certs.display();
        let more = format!(
            "MORE_LISTENERS=SSL:SSL:{ssl},BADNAME:SSL:{wrong},MTLS:SSL:{mtls},SCRAM:SASL_SSL:{scram},PLAIN:SASL_PLAINTEXT:{plain},OAUTH:SASL_SSL:{oauth}\n\
             JVM_OPTS='-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks}'\n\
             EXTRA='ssl.keystore.type=PEM\n\
             ssl.keystore.location={broker}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={d}/ca.pem\n\
             listener.name.badname.ssl.keystore.type=PEM\n\
             listener.name.badname.ssl.keystore.location={wrong_pem}\n\
             listener.name.badname.ssl.truststore.type=PEM\n\
             listener.name.badname.ssl.truststore.location={d}/ca.pem\n\
             listener.name.mtls.ssl.client.auth=required\n\
             listener.name.scram.sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.scram.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.plain.sasl.enabled.mechanisms=PLAIN\n\
             listener.name.plain.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"{PLAIN_PASSWORD}\";\n\
             listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER\n\
             listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n\
             listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler\n\
             listener.name.oauth.oauthbearer.connections.max.reauth.ms=10000\n\
             sasl.oauthbearer.jwks.endpoint.url={jwks}\n\
             sasl.oauthbearer.expected.audience=kafka\n\
             sasl.oauthbearer.expected.issuer={OAUTH_ISSUER}\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             allow.everyone.if.no.acl.found=true\n\
             super.users=User:ANONYMOUS'\n",
            broker = broker_pem.display(),
            wrong_pem = wrong_pem.display(),
        );
        let cluster = Cluster::single_with(dir, port, None, &more).await;
        let at = |p: u16| format!("127.0.0.1:{p}");
        let b = SecureBroker {
            _cluster: cluster,
            dir: certs,
            ca,
            admin: at(port),
            ssl: at(ssl),
            ssl_wrong_name: at(wrong),
            mtls: at(mtls),
            scram: at(scram),
            plain: at(plain),
            oauth: at(oauth),
            idp,
        };
        b.tool(&[
            "org.apache.kafka.tools.ConfigCommand",
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--add-config",
            &format!("SCRAM-SHA-512=[iterations=4096,password={SCRAM_PASSWORD}]"),
        ]);
        b
    }

    /// Runs one of Kafka's tools against the admin listener; panics with its output on failure.
    pub fn tool(&self, args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-broker");
        let (class, rest) = args.split_first().unwrap();
        let out = Command::new(script)
            .arg("tool")
            .arg(class)
            .arg("--bootstrap-server")
            .arg(&self.admin)
            .args(rest)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{class} {rest:?} failed: {text}");
        text
    }

    /// Grants `principal` (`User:alice`) `operation` (`Write`, `Describe`) on `topic`.
    pub fn allow(&self, principal: &str, operation: &str, topic: &str) {
        self.tool(&[
            "org.apache.kafka.tools.AclCommand",
            "--add",
            "--allow-principal",
            principal,
            "--operation",
            operation,
            "--topic",
            topic,
        ]);
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client certificate and key from the brokers' CA, written to files: (cert, key).
    pub fn client_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.ca.leaf_named(&[CLIENT_CN], Some(CLIENT_CN));
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }
}

impl Idp {
    /// Serves the token endpoint and the JWKS from a thread of its own, so they outlive the
    /// test (and runtime) that started the shared broker.
    fn serve() -> Arc<Idp> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let idp = Arc::new(Idp {
            token_url: format!("http://{addr}/token"),
            issued: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            lifetime_secs: AtomicU64::new(30),
        });
        let state = idp.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let signer = Arc::new(Signer::new(Algorithm::RS256, Some("kafka-it")));
                let jwk = signer.jwk();
                let app = axum::Router::new()
                    .route(
                        "/jwks",
                        get(move || {
                            let jwk = jwk.clone();
                            async move { axum::Json(json!({"keys": [jwk]})) }
                        }),
                    )
                    .route(
                        "/token",
                        post(move |headers: HeaderMap, body: String| {
                            let (state, signer) = (state.clone(), signer.clone());
                            async move { state.token(&signer, &headers, &body) }
                        }),
                    );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        idp
    }

    fn token(&self, signer: &Signer, headers: &HeaderMap, body: &str) -> axum::response::Response {
        use base64::Engine;
        if self.down.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{OAUTH_CLIENT_ID}:{OAUTH_CLIENT_SECRET}"))
        );
        let authorized = headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if !authorized || !body.contains("grant_type=client_credentials") {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client"})),
            )
                .into_response();
        }
        let lifetime = self.lifetime_secs.load(Ordering::SeqCst);
        let claims = json!({
            "iss": OAUTH_ISSUER, "aud": "kafka", "sub": OAUTH_CLIENT_ID,
            "iat": now(), "exp": now() + lifetime, "scope": "kafka",
        });
        self.issued.fetch_add(1, Ordering::SeqCst);
        axum::Json(json!({
            "access_token": signer.sign(&claims),
            "token_type": "Bearer",
            "expires_in": lifetime,
        }))
        .into_response()
    }
}

/// How long tests wait for the gateway to decide it is (not) ready.
pub const DECIDE: Duration = Duration::from_secs(20);
