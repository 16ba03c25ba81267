//! OAUTHBEARER tokens for librdkafka, made by Sluice: from an OIDC token endpoint (client
//! credentials) or, for Amazon MSK IAM, signed from AWS credentials ([`super::msk_iam`]).
//!
//! librdkafka asks for a token when it starts and again at 80% of the last one's lifetime.
//! When a refresh fails and the current token is still good for [`KEEP_MARGIN`], it is handed
//! back: librdkafka keeps using it and asks again at 80% of what is left, so a short outage of
//! the endpoint costs nothing. Otherwise the failure goes to librdkafka, which asks again 10 s
//! later. Every attempt is counted.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;

use crate::config::Secret;
use crate::telemetry;

/// One token and what librdkafka needs with it.
#[derive(Clone, Debug)]
pub struct Token {
    pub value: String,
    /// The principal the token names (librdkafka logs it; the broker decides for itself).
    pub principal: String,
    /// Expiry, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

#[async_trait]
pub trait MakeToken: Send + Sync {
    /// `oidc` or `msk_iam`, for metrics.
    fn kind(&self) -> &'static str;
    async fn make(&self) -> Result<Token, String>;
}

/// How long one attempt may take, so librdkafka's thread is never held longer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The producer and the probe each ask for a token; one made this recently serves both.
const SHARE_WITHIN: Duration = Duration::from_secs(5);
/// A token with less life left than this is not handed back when a refresh fails.
const KEEP_MARGIN: Duration = Duration::from_secs(2);

/// Tokens for every client of one sink.
pub struct Tokens {
    maker: Box<dyn MakeToken>,
    runtime: tokio::runtime::Handle,
    last: Mutex<Option<(Token, Instant)>>,
}

impl Tokens {
    pub fn new(maker: Box<dyn MakeToken>, runtime: tokio::runtime::Handle) -> Tokens {
        Tokens {
            maker,
            runtime,
            last: Mutex::new(None),
        }
    }

    /// A token, for librdkafka's refresh event. Called on librdkafka's polling thread, which
    /// waits (at most [`ATTEMPT_TIMEOUT`]); the work runs on the runtime from a thread of its
    /// own, so this is safe from any thread.
    pub fn get_blocking(&self) -> Result<Token, String> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, at)) = &*last {
            if at.elapsed() < SHARE_WITHIN {
                return Ok(t.clone());
            }
        }
        let made = std::thread::scope(|s| {
            s.spawn(|| {
                // The timer is made inside: only there is the runtime's context entered.
                self.runtime.block_on(async {
                    tokio::time::timeout(ATTEMPT_TIMEOUT, self.maker.make()).await
                })
            })
            .join()
        });
        let result = match made {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("no token within {ATTEMPT_TIMEOUT:?}")),
            Err(_) => Err("making the token panicked".to_string()),
        };
        let kind = self.maker.kind();
        match &result {
            Ok(t) => {
                metrics::counter!(telemetry::KAFKA_TOKEN_REFRESHES, "source" => kind, "result" => "ok")
                    .increment(1);
                metrics::gauge!(telemetry::KAFKA_TOKEN_EXPIRY).set(t.expires_at_ms as f64 / 1000.0);
                tracing::debug!(source = kind, principal = %t.principal, expires_at_ms = t.expires_at_ms, "Kafka token refreshed");
                *last = Some((t.clone(), Instant::now()));
            }
            Err(e) => {
                metrics::counter!(telemetry::KAFKA_TOKEN_REFRESHES, "source" => kind, "result" => "failed")
                    .increment(1);
                if let Some((t, _)) = &*last {
                    let left = t.expires_at_ms - now_ms();
                    if left > KEEP_MARGIN.as_millis() as i64 {
                        tracing::warn!(source = kind, "cannot refresh the Kafka token, keeping the current one ({} s left): {e}", left / 1000);
                        return Ok(t.clone());
                    }
                }
                tracing::error!(source = kind, "cannot get a Kafka token: {e}");
            }
        }
        result
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// OIDC client credentials grant (RFC 6749 4.4), the client authenticated with HTTP Basic.
pub struct Oidc {
    pub url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub http: reqwest::Client,
}

/// A token response larger than this is not one.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[async_trait]
impl MakeToken for Oidc {
    fn kind(&self) -> &'static str {
        "oidc"
    }

    async fn make(&self) -> Result<Token, String> {
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.scope {
                form.append_pair("scope", scope);
            }
            form.finish()
        };
        // RFC 6749 2.3.1: the id and secret are form-encoded before they are joined.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.client_id),
            enc(self.client_secret.expose())
        ));
        let mut response = self
            .http
            .post(&self.url)
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| format!("token endpoint {}: {e}", self.url))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("token endpoint {}: {e}", self.url))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!(
                    "token endpoint {}: the answer is over {MAX_RESPONSE_BYTES} bytes",
                    self.url
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "token endpoint {} answered {status}: {}",
                self.url,
                text.chars().take(300).collect::<String>()
            ));
        }
        parse_token_response(&body, &self.client_id, now_ms())
            .map_err(|e| format!("token endpoint {}: {e}", self.url))
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<f64>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
}

/// The token, its principal (`sub`) and expiry (the JWT's `exp`, else `expires_in`).
fn parse_token_response(body: &[u8], client_id: &str, now_ms: i64) -> Result<Token, String> {
    let r: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("not a token response: {e}"))?;
    if r.access_token.is_empty() || r.access_token.contains('\0') {
        return Err("the access_token is empty or holds a NUL".into());
    }
    // The token is the broker's to verify; read here only for its subject and expiry.
    let claims: Option<Claims> = r
        .access_token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok());
    let exp_ms = claims
        .as_ref()
        .and_then(|c| c.exp)
        .map(|e| (e * 1000.0) as i64)
        .or_else(|| r.expires_in.map(|s| now_ms + (s * 1000.0) as i64))
        .ok_or("the token has no exp claim and the answer no expires_in")?;
    if exp_ms <= now_ms {
        return Err("the token has already expired".into());
    }
    let principal = claims
        .and_then(|c| c.sub)
        .filter(|s| !s.is_empty() && !s.contains('\0'))
        .unwrap_or_else(|| client_id.to_string());
    Ok(Token {
        value: r.access_token,
        principal,
        expires_at_ms: exp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(claims))
    }

    #[test]
    fn expiry_and_principal_come_from_the_jwt_else_the_answer() {
        let t = jwt(r#"{"sub":"sluice-prod","exp":2000}"#);
        let body = format!(r#"{{"access_token":"{t}","expires_in":60}}"#);
        let tok = parse_token_response(body.as_bytes(), "client", 1_000_000).unwrap();
        assert_eq!(tok.principal, "sluice-prod");
        assert_eq!(tok.expires_at_ms, 2_000_000);

        let opaque = r#"{"access_token":"opaque","expires_in":30}"#;
        let tok = parse_token_response(opaque.as_bytes(), "client", 1_000).unwrap();
        assert_eq!(
            (tok.principal.as_str(), tok.expires_at_ms),
            ("client", 31_000)
        );

        for bad in [
            r#"{"access_token":"opaque"}"#,
            r#"{"access_token":"","expires_in":30}"#,
            r#"{"error":"invalid_client"}"#,
            r#"{"access_token":"x","expires_in":-5}"#,
        ] {
            assert!(
                parse_token_response(bad.as_bytes(), "c", 1_000).is_err(),
                "{bad}"
            );
        }
    }
}
