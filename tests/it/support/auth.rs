//! Tokens signed with throwaway keys (`tests/it/fixtures/keys`), and a real JWKS served over
//! HTTP by the test itself, whose key set the test can change and whose fetches it counts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sluice::config::{ApiKeyConfig, Config, HumanDuration, KeyClass, Secret, StaticKeyConfig};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "sluice-it";
/// 32 bytes: the shortest HMAC secret Sluice accepts.
pub const HS_SECRET: &str = "it-secret-it-secret-it-secret-32";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/it/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn fixture_path(name: &str) -> std::path::PathBuf {
    format!(
        "{}/tests/it/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
    .into()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass every check: tenant `acme`, allowed to write `scope`.
pub fn claims(scope: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "tenant": "acme",
        "scope": scope, "iat": now(), "exp": now() + 600,
    })
}

/// A private key that signs tokens, with the `kid` it puts in their header.
pub struct Signer {
    pub alg: Algorithm,
    pub kid: Option<String>,
    key: EncodingKey,
}

impl Signer {
    pub fn new(alg: Algorithm, kid: Option<&str>) -> Signer {
        use Algorithm::*;
        let key = match alg {
            HS256 | HS384 | HS512 => EncodingKey::from_secret(HS_SECRET.as_bytes()),
            RS256 | RS384 | RS512 => EncodingKey::from_rsa_pem(&fixture("rsa1.key.pem")).unwrap(),
            PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(&fixture("rsa2.key.pem")).unwrap(),
            ES256 => EncodingKey::from_ec_pem(&fixture("ec256.key.pem")).unwrap(),
            ES384 => EncodingKey::from_ec_pem(&fixture("ec384.key.pem")).unwrap(),
            EdDSA => EncodingKey::from_ed_pem(&fixture("ed25519.key.pem")).unwrap(),
            _ => unreachable!(),
        };
        Signer {
            alg,
            kid: kid.map(String::from),
            key,
        }
    }

    /// `alg` over another RSA private key (for rotation: a key the gateway has not seen).
    pub fn rsa2(alg: Algorithm, kid: &str) -> Signer {
        Signer {
            alg,
            kid: Some(kid.into()),
            key: EncodingKey::from_rsa_pem(&fixture("rsa2.key.pem")).unwrap(),
        }
    }

    pub fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = self.kid.clone();
        h
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }

    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).unwrap()
    }

    /// The public half as a JWK, with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = self.kid.clone();
        let mut v = serde_json::to_value(jwk).unwrap();
        v["use"] = json!("sig");
        v
    }
}

/// A static key entry for config, public half of the fixture that [`Signer::new`] uses.
pub fn static_key(alg: Algorithm, kid: &str) -> StaticKeyConfig {
    use Algorithm::*;
    let mut k = StaticKeyConfig {
        kid: Some(kid.into()),
        algorithm: format!("{alg:?}"),
        ..Default::default()
    };
    match alg {
        HS256 | HS384 | HS512 => k.secret = Some(Secret::from(HS_SECRET.to_string())),
        RS256 | RS384 | RS512 => k.pem_file = Some(fixture_path("rsa1.pub.pem")),
        PS256 | PS384 | PS512 => k.pem_file = Some(fixture_path("rsa2.pub.pem")),
        ES256 => k.pem_file = Some(fixture_path("ec256.pub.pem")),
        ES384 => k.pem_file = Some(fixture_path("ec384.pub.pem")),
        EdDSA => k.pem_file = Some(fixture_path("ed25519.pub.pem")),
        _ => unreachable!(),
    }
    k
}

/// Issuer, audience and required mode set, as a deployment would.
pub fn with_jwt(mut c: Config) -> Config {
    c.auth.issuer = vec![ISSUER.into()];
    c.auth.audience = vec![AUDIENCE.into()];
    c.auth.jwks_min_refetch_interval = HumanDuration(std::time::Duration::from_millis(300));
    c
}

/// A JWKS endpoint on port 0.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (k, f, d) = (keys.clone(), fetches.clone(), down.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (k, f, d) = (k.clone(), f.clone(), d.clone());
                async move {
                    use axum::response::IntoResponse;
                    f.fetch_add(1, Ordering::SeqCst);
                    if d.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    axum::Json(json!({"keys": *k.lock().unwrap()})).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            keys,
            fetches,
            down,
            task,
        }
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    /// While down, every fetch gets 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A new API key for tenant `globex` and its config entry.
pub fn api_key_entry(class: KeyClass, scopes: &[&str], origins: &[&str]) -> (String, ApiKeyConfig) {
    let g = sluice::auth::generate_key(class).unwrap();
    let entry = ApiKeyConfig {
        id: g.id,
        hash: g.hash,
        tenant: "globex".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        class,
        origins: origins.iter().map(|s| s.to_string()).collect(),
        expires: None,
        name: Some("it".into()),
    };
    (g.key, entry)
}
