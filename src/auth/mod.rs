//! Authentication and authorization: who is calling (a JWT bearer token or an API key) and
//! what they may write. The result is a [`Principal`] that the HTTP layer puts in the
//! request's extensions; the pipeline checks each event's type against its scopes and writes
//! its tenant into every record.
//!
//! Rules this module keeps: the algorithm comes from the key, never from the token; nothing
//! named by a token (`jku`, `x5u`, an embedded `jwk`) is ever fetched or trusted; a token or
//! key never appears in an error, a log line or a metric; API keys exist here only as hashes.

mod apikey;
pub mod cors;
mod jwks;
mod jwt;
mod middleware;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use apikey::{generate_key, GeneratedKey};
pub use middleware::{authenticate, client_identity, peer_ip};

use crate::config::{AuthConfig, AuthMode, KeyClass};
use crate::error::{ApiError, ClientError, Code};
use crate::event::TypePattern;
use crate::telemetry;
use crate::tls::ClientIdentity;

/// Who sent a request, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: String,
    /// `sub` of a token, the name (or id) of an API key.
    pub subject: String,
    pub scopes: Scopes,
    pub method: AuthMethod,
    /// `source` for events that leave it out: `sluice://<tenant>/<subject>`.
    pub source: String,
}

impl Principal {
    fn new(tenant: String, subject: String, scopes: Scopes, method: AuthMethod) -> Self {
        let source = format!(
            "sluice://{}/{}",
            crate::percent::encode_unreserved(&tenant),
            crate::percent::encode_unreserved(&subject)
        );
        Principal {
            tenant,
            subject,
            scopes,
            method,
            source,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
    BrowserKey,
    /// A verified TLS client certificate named in `auth.client_certs`.
    ClientCert,
}

/// Parsed scopes. Unknown scope strings in tokens are ignored (tokens carry scopes for other
/// services too); in API key config they are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    pub write: Vec<TypePattern>,
    pub registry_read: bool,
    pub registry_write: bool,
}

impl Scopes {
    /// `events:write:<type pattern>` (`events:write` alone means every type),
    /// `registry:read`, `registry:write`.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> (Scopes, Vec<&'a str>) {
        let mut scopes = Scopes::default();
        let mut unknown = Vec::new();
        for s in items {
            match s {
                "events:write" => scopes.write.push(TypePattern::Any),
                "registry:read" => scopes.registry_read = true,
                "registry:write" => scopes.registry_write = true,
                _ => match s.strip_prefix("events:write:").map(TypePattern::parse) {
                    Some(Ok(p)) => scopes.write.push(p),
                    _ => unknown.push(s),
                },
            }
        }
        (scopes, unknown)
    }

    pub fn may_write(&self, ty: &str) -> bool {
        self.write.iter().any(|p| p.matches(ty))
    }
}

/// Why a request was not authenticated or not allowed. Codes are stable and documented; the
/// messages never quote the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <token or key>` or `X-API-Key`")]
    MissingCredentials,
    #[error("the credential is not a well-formed JWT or API key ({0})")]
    Malformed(&'static str),
    #[error("the token is {len} bytes; at most {limit} are accepted")]
    TooLong { len: usize, limit: usize },
    #[error("the token's algorithm `{0}` is not the algorithm of any key that could verify it")]
    AlgorithmNotAllowed(String),
    #[error("the token names a key (`kid`) that is not known")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("the token's `{0}` claim has the wrong type")]
    InvalidClaim(String),
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("the API key has expired")]
    ApiKeyExpired,
    #[error("this origin may not use this key")]
    OriginNotAllowed,
    #[error("the credentials do not allow writing events")]
    InsufficientScope,
    #[error("verification keys are not loaded yet; retry shortly")]
    KeysUnavailable,
    #[error("the client certificate names no identity in auth.client_certs")]
    ClientCertNotAllowed,
    #[error("no authentication is configured, so Sluice serves only clients on its own machine (protected mode). Configure a key source (auth.keys, auth.jwks_urls, auth.api_keys or auth.api_keys_file), or set auth.mode = \"disabled\" to let anyone who reaches this port write events and change the schema registry")]
    ProtectedMode,
}

impl ClientError for AuthError {
    /// The stable code; its status comes with it (docs/api.md).
    fn code(&self) -> Code {
        match self {
            AuthError::MissingCredentials => Code::MissingCredentials,
            AuthError::Malformed(_) => Code::MalformedToken,
            AuthError::TooLong { .. } => Code::TokenTooLong,
            AuthError::AlgorithmNotAllowed(_) => Code::AlgorithmNotAllowed,
            AuthError::UnknownKey => Code::UnknownKey,
            AuthError::BadSignature => Code::BadSignature,
            AuthError::Expired => Code::TokenExpired,
            AuthError::NotYetValid => Code::TokenNotYetValid,
            AuthError::WrongIssuer => Code::WrongIssuer,
            AuthError::WrongAudience => Code::WrongAudience,
            AuthError::MissingClaim(_) => Code::MissingClaim,
            AuthError::InvalidClaim(_) => Code::InvalidClaim,
            AuthError::InvalidApiKey => Code::InvalidApiKey,
            AuthError::ApiKeyExpired => Code::ApiKeyExpired,
            AuthError::OriginNotAllowed => Code::OriginNotAllowed,
            AuthError::InsufficientScope => Code::InsufficientScope,
            AuthError::KeysUnavailable => Code::AuthKeysUnavailable,
            AuthError::ClientCertNotAllowed => Code::ClientCertificateNotAllowed,
            AuthError::ProtectedMode => Code::ProtectedMode,
        }
    }
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        self.code().status_code()
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let code = self.code();
        metrics::counter!(telemetry::AUTH_FAILURES, "reason" => code.as_str()).increment(1);
        let status = code.status_code();
        let mut err = ApiError::from(self.clone());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = Some(1);
        }
        let mut resp = err.into_response();
        // RFC 6750 §3: the challenge, with the error class; the code is in the body.
        let challenge = match status {
            StatusCode::UNAUTHORIZED if self == AuthError::MissingCredentials => {
                r#"Bearer realm="sluice""#.to_string()
            }
            StatusCode::UNAUTHORIZED => {
                format!(
                    r#"Bearer realm="sluice", error="invalid_token", error_description="{code}""#
                )
            }
            StatusCode::FORBIDDEN => {
                format!(
                    r#"Bearer realm="sluice", error="insufficient_scope", error_description="{code}""#
                )
            }
            _ => return resp,
        };
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped loopback (a dual-stack listener's view of 127.0.0.1).
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Checks credentials. Cheap to share: key sets are swapped whole when JWKS refreshes.
pub struct Authenticator {
    mode: AuthMode,
    max_token_bytes: usize,
    jwt: Option<jwt::JwtVerifier>,
    api_keys: apikey::KeyStore,
    api_keys_reload_interval: std::time::Duration,
    /// `auth.client_certs`: a certificate name and who it is.
    client_certs: ClientCerts,
}

impl Authenticator {
    /// Builds key sets from config (reading key files) and starts nothing.
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, (String, String)> {
        let jwt = if config.keys.is_empty() && config.jwks_urls.is_empty() {
            None
        } else {
            Some(jwt::JwtVerifier::from_config(config)?)
        };
        Ok(Authenticator {
            mode: config.effective_mode(),
            max_token_bytes: config.max_token_bytes.as_usize(),
            jwt,
            api_keys: apikey::KeyStore::from_config(config)?,
            api_keys_reload_interval: config.api_keys_reload_interval.0,
            client_certs: client_certs(config)?,
        })
    }

    /// What `sluice check-config` and start-up validation run.
    pub fn check_config(config: &AuthConfig) -> Result<(), (String, String)> {
        Self::from_config(config).map(|_| ())
    }

    /// Fetches every JWKS URL once (bounded by its timeout) and keeps them, and the API keys
    /// file, fresh in the background for as long as the authenticator lives.
    pub async fn start(self: &Arc<Self>) {
        match self.mode {
            AuthMode::Disabled => tracing::warn!(
                "AUTHENTICATION IS DISABLED (auth.mode = \"disabled\"): anyone who reaches this port can write any event type, \
                 and register, change or delete schemas in the registry API (or set compatibility to NONE). \
                 Configure auth.keys, auth.jwks_urls or auth.api_keys for anything but local use."
            ),
            AuthMode::Protected => tracing::warn!(
                "no authentication is configured: PROTECTED MODE, only clients on this machine (loopback) are served; \
                 others get 401 protected_mode. Configure auth.keys, auth.jwks_urls or auth.api_keys, \
                 or set auth.mode = \"disabled\" to serve anyone."
            ),
            AuthMode::Required => {}
        }
        if self.api_keys.has_file() {
            crate::periodic::every(self, self.api_keys_reload_interval, |a: &Authenticator| {
                a.api_keys.reload()
            });
        }
        if let Some(jwt) = &self.jwt {
            jwt.start(Arc::downgrade(self)).await;
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Ready once every JWKS URL has been loaded at least once: before that, tokens from
    /// that issuer would all be refused.
    pub fn is_ready(&self) -> bool {
        self.jwt.as_ref().is_none_or(|j| j.is_ready())
    }

    /// Sets the key-cache gauges; called when /metrics is scraped.
    pub fn report_metrics(&self) {
        if let Some(jwt) = &self.jwt {
            jwt.report_metrics();
        }
    }

    /// Whether a client at `peer` may be served without credentials: with authentication
    /// disabled, anyone; in protected mode, only loopback clients. (Required: never.)
    pub fn open_to(&self, peer: Option<std::net::IpAddr>) -> Result<bool, AuthError> {
        match self.mode {
            AuthMode::Required => Ok(false),
            AuthMode::Disabled => Ok(true),
            AuthMode::Protected if peer.is_some_and(is_loopback) => Ok(true),
            AuthMode::Protected => Err(AuthError::ProtectedMode),
        }
    }

    /// `Ok(None)` when no credentials are checked ([`Self::open_to`]). Ingest needs a write
    /// scope: a credential without any is refused here, before the body is read.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<&ClientIdentity>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Option<Arc<Principal>>, AuthError> {
        if self.open_to(peer)? {
            return Ok(None);
        }
        let principal = self.authenticate_any(headers, client).await?;
        if principal.scopes.write.is_empty() {
            return Err(AuthError::InsufficientScope);
        }
        Ok(Some(principal))
    }

    /// Who is calling, whatever they may do (the registry API checks its own scopes). A token
    /// or API key wins over the connection's client certificate, which counts only when the
    /// request carries neither.
    pub async fn authenticate_any(
        &self,
        headers: &HeaderMap,
        client: Option<&ClientIdentity>,
    ) -> Result<Arc<Principal>, AuthError> {
        let credential = match (credential(headers), client) {
            (Err(AuthError::MissingCredentials), Some(client)) => {
                return self.client_cert(client);
            }
            (c, _) => c?,
        };
        if credential.len() > self.max_token_bytes {
            return Err(AuthError::TooLong {
                len: credential.len(),
                limit: self.max_token_bytes,
            });
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if apikey::looks_like_key(credential) {
            return Ok(Arc::new(self.api_keys.verify(credential, origin)?));
        }
        match &self.jwt {
            Some(jwt) => jwt.verify(credential).await,
            None if credential.matches('.').count() == 2 => Err(AuthError::UnknownKey),
            None => Err(AuthError::InvalidApiKey),
        }
    }

    /// The first `auth.client_certs` entry naming one of the certificate's names.
    fn client_cert(&self, client: &ClientIdentity) -> Result<Arc<Principal>, AuthError> {
        self.client_certs
            .iter()
            .find(|(subject, _)| client.names.iter().any(|n| n == subject))
            .map(|(_, p)| p.clone())
            .ok_or(AuthError::ClientCertNotAllowed)
    }

    /// Whether some browser key in use allows `origin` (CORS adds
    /// `auth.cors.allowed_origins`).
    pub fn browser_origin_allowed(&self, origin: &str) -> bool {
        self.api_keys.allows_origin(origin)
    }
}

/// The credential from `Authorization: Bearer` or `X-API-Key`; never both.
fn credential(headers: &HeaderMap) -> Result<&str, AuthError> {
    let bearer = headers.get(header::AUTHORIZATION);
    let api_key = headers.get("x-api-key");
    let raw = match (bearer, api_key) {
        (None, None) => return Err(AuthError::MissingCredentials),
        (Some(_), Some(_)) => return Err(AuthError::Malformed("both Authorization and X-API-Key")),
        (Some(v), None) => {
            let v = v
                .to_str()
                .map_err(|_| AuthError::Malformed("non-ASCII Authorization"))?;
            let (scheme, rest) = v.split_once(' ').ok_or(AuthError::Malformed(
                "Authorization is not `Bearer <credential>`",
            ))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Malformed("only the Bearer scheme is accepted"));
            }
            rest.trim()
        }
        (None, Some(v)) => v
            .to_str()
            .map_err(|_| AuthError::Malformed("non-ASCII X-API-Key"))?
            .trim(),
    };
    if raw.is_empty() {
        return Err(AuthError::MissingCredentials);
    }
    Ok(raw)
}

/// `auth.client_certs`: each certificate name with the principal it stands for.
type ClientCerts = Vec<(String, Arc<Principal>)>;

fn client_certs(config: &AuthConfig) -> Result<ClientCerts, (String, String)> {
    config
        .client_certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let field = |f: &str| format!("auth.client_certs[{i}].{f}");
            if c.subject.is_empty() {
                return Err((field("subject"), "must be set".into()));
            }
            if c.tenant.is_empty() {
                return Err((field("tenant"), "must be set".into()));
            }
            let (scopes, unknown) = Scopes::parse(c.scopes.iter().map(String::as_str));
            if let Some(u) = unknown.first() {
                return Err((
                    field("scopes"),
                    format!("unknown scope `{u}` (events:write[:<type pattern>], registry:read, registry:write)"),
                ));
            }
            let p = Principal::new(
                c.tenant.clone(),
                c.subject.clone(),
                scopes,
                AuthMethod::ClientCert,
            );
            Ok((c.subject.clone(), Arc::new(p)))
        })
        .collect()
}

pub(crate) fn key_class_method(class: KeyClass) -> AuthMethod {
    match class {
        KeyClass::Server => AuthMethod::ApiKey,
        KeyClass::Browser => AuthMethod::BrowserKey,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn protected_mode_serves_loopback_only() {
        let protected = Authenticator::from_config(&AuthConfig::default()).unwrap();
        assert_eq!(protected.mode(), AuthMode::Protected);
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                protected.open_to(Some(ip.parse().unwrap())),
                Ok(true),
                "{ip}"
            );
        }
        for ip in [
            "192.0.2.2",
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "fd00::2",
            "0.0.0.0",
        ] {
            assert_eq!(
                protected.open_to(Some(ip.parse().unwrap())),
                Err(AuthError::ProtectedMode),
                "{ip}"
            );
        }
        assert_eq!(protected.open_to(None), Err(AuthError::ProtectedMode));
        let disabled = Authenticator::from_config(&AuthConfig {
            mode: Some(AuthMode::Disabled),
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(
            disabled.open_to(Some("192.0.2.2".parse().unwrap())),
            Ok(true)
        );
    }

    use super::*;

    #[test]
    fn scopes_parse_patterns_and_ignore_strangers() {
        let (s, unknown) = Scopes::parse([
            "events:write:checkout.*",
            "events:write:audit.login",
            "registry:read",
            "openid",
            "events:write:a*b",
        ]);
        assert!(s.may_write("checkout.paid"));
        assert!(s.may_write("audit.login"));
        assert!(!s.may_write("audit.logout"));
        assert!(s.registry_read && !s.registry_write);
        assert_eq!(unknown, ["openid", "events:write:a*b"]);
        assert!(Scopes::parse(["events:write"]).0.may_write("x"));
    }

    #[test]
    fn credentials_come_from_one_header() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert_eq!(
            credential(&h(&[("authorization", "Bearer abc")])),
            Ok("abc")
        );
        assert_eq!(
            credential(&h(&[("authorization", "bearer  abc ")])),
            Ok("abc")
        );
        assert_eq!(credential(&h(&[("x-api-key", "k")])), Ok("k"));
        assert_eq!(credential(&h(&[])), Err(AuthError::MissingCredentials));
        assert_eq!(
            credential(&h(&[("authorization", "Bearer ")])),
            Err(AuthError::MissingCredentials)
        );
        assert!(matches!(
            credential(&h(&[("authorization", "Basic abc")])),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            credential(&h(&[("authorization", "Bearer a"), ("x-api-key", "b")])),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn source_is_a_uri() {
        let p = Principal::new(
            "acme corp".into(),
            "user/1".into(),
            Scopes::default(),
            AuthMethod::Jwt,
        );
        assert_eq!(p.source, "sluice://acme%20corp/user%2F1");
    }
}
