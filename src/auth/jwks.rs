//! One JWKS URL: fetched at start, refreshed in the background, and refetched when a token
//! names an unknown `kid`, at most once per `auth.jwks_min_refetch_interval` so that made-up
//! `kid`s cannot turn Sluice into a flood against the identity provider. Keys are swapped
//! whole; readers never wait.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::DecodingKey;

use super::jwt::{jwk_algorithm, KeyEntry, Rules};
use super::Authenticator;
use crate::config::AuthConfig;
use crate::telemetry;

/// A JWKS larger than this is refused: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// First retry after a failed fetch; doubles up to the refresh interval.
const RETRY_START: Duration = Duration::from_secs(1);

pub(super) struct JwksSource {
    url: String,
    client: reqwest::Client,
    rules: Arc<Rules>,
    keys: ArcSwap<Vec<Arc<KeyEntry>>>,
    refresh: Duration,
    min_refetch: Duration,
    state: Mutex<FetchState>,
    /// One fetch at a time; requests that arrive during a fetch wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

impl JwksSource {
    pub fn new(url: &str, config: &AuthConfig, rules: Arc<Rules>) -> Result<JwksSource, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(format!("`{url}`: only https (or http) URLs can be fetched"));
        }
        let client = reqwest::Client::builder()
            .timeout(config.jwks_timeout.0)
            .connect_timeout(config.jwks_timeout.0)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(JwksSource {
            url: url.to_string(),
            client,
            rules,
            keys: ArcSwap::from_pointee(Vec::new()),
            refresh: config.jwks_refresh_interval.0,
            min_refetch: config.jwks_min_refetch_interval.0,
            state: Mutex::new(FetchState::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The first fetch, then a background task that refreshes until `owner` is dropped.
    pub async fn start(self: Arc<Self>, owner: Weak<Authenticator>) {
        self.fetch_now().await;
        tokio::spawn(async move {
            let mut retry = RETRY_START;
            loop {
                let wait = if self.last_fetch_succeeded() {
                    retry = RETRY_START;
                    self.refresh
                } else {
                    let w = retry;
                    retry = (retry * 2).min(self.refresh);
                    w
                };
                tokio::time::sleep(wait).await;
                if owner.strong_count() == 0 {
                    break;
                }
                self.fetch_now().await;
            }
        });
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<Vec<Arc<KeyEntry>>>> {
        self.keys.load()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .load()
            .iter()
            .any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn is_loaded(&self) -> bool {
        self.state
            .lock()
            .expect("not poisoned")
            .last_success
            .is_some()
    }

    fn last_fetch_succeeded(&self) -> bool {
        let st = self.state.lock().expect("not poisoned");
        st.last_success.is_some() && st.last_success == st.last_attempt
    }

    /// Refetches unless a fetch was attempted within the minimum interval. Concurrent callers
    /// share one fetch.
    pub async fn refetch_if_due(&self) {
        let _one = self.fetching.lock().await;
        let due = {
            let st = self.state.lock().expect("not poisoned");
            st.last_attempt
                .is_none_or(|t| t.elapsed() >= self.min_refetch)
        };
        if due {
            self.fetch_locked().await;
        }
    }

    async fn fetch_now(&self) {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await;
    }

    async fn fetch_locked(&self) {
        self.state.lock().expect("not poisoned").last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let n = keys.len();
                self.keys.store(Arc::new(keys));
                let mut st = self.state.lock().expect("not poisoned");
                st.last_success = st.last_attempt;
                metrics::counter!(telemetry::JWKS_FETCHES, "result" => "ok").increment(1);
                tracing::debug!(url = %self.url, keys = n, "JWKS loaded");
            }
            Err(e) => {
                // Keys already loaded stay in use: an identity provider hiccup must not
                // lock every client out.
                metrics::counter!(telemetry::JWKS_FETCHES, "result" => "error").increment(1);
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the keys we have");
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Arc<KeyEntry>>, String> {
        let mut resp = self
            .client
            .get(&self.url)
            .header("accept", "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading: {e}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        self.parse(&body)
    }

    /// Keys the set holds that can verify signatures; the others (encryption keys, unknown
    /// types and curves) are skipped one by one rather than failing the whole set.
    fn parse(&self, body: &[u8]) -> Result<Vec<Arc<KeyEntry>>, String> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut out = Vec::with_capacity(set.keys.len());
        for raw in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let Some(alg) = jwk_algorithm(&jwk) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if key.family() != alg.family() {
                continue;
            }
            out.push(Arc::new(self.rules.key(
                jwk.common.key_id.clone(),
                alg,
                key,
            )));
        }
        Ok(out)
    }

    pub fn report_metrics(sources: &[Arc<JwksSource>]) {
        let mut keys = 0usize;
        let mut oldest: Option<Duration> = None;
        for s in sources {
            keys += s.keys.load().len();
            if let Some(t) = s.state.lock().expect("not poisoned").last_success {
                oldest = Some(oldest.map_or(t.elapsed(), |o| o.max(t.elapsed())));
            }
        }
        metrics::gauge!(telemetry::JWKS_KEYS).set(keys as f64);
        if let Some(age) = oldest {
            metrics::gauge!(telemetry::JWKS_AGE).set(age.as_secs_f64());
        }
    }
}
