//! `[auth]`: JWT keys and JWKS URLs, API keys, client certificate identities, CORS.

use std::path::PathBuf;

use serde::Deserialize;

use super::env::string_or_list;
use super::units::{ByteSize, HumanDuration, KIB};
use super::{field_error, ConfigError, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every ingest request needs a valid JWT or API key.
    Required,
    /// No credentials are checked, and only clients on this machine (loopback) are served:
    /// what runs when no key source is configured and `auth.mode` is not set (Redis'
    /// protected mode). Others get 401 `protected_mode` saying what to configure.
    Protected,
    /// Anyone may write any type and change the registry. Logged loudly at start.
    Disabled,
}

/// Authentication: JWT bearer tokens (static keys, JWKS URLs), API keys, browser keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Unset: `required` when any key source is configured, else `disabled`.
    pub mode: Option<AuthMode>,
    /// Accepted `iss` values; unset: `iss` is not checked.
    #[serde(deserialize_with = "string_or_list")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values (one must be in the token); unset: tokens with an `aud` are
    /// refused, as RFC 7519 asks of a recipient that does not know its name.
    #[serde(deserialize_with = "string_or_list")]
    pub audience: Vec<String>,
    #[serde(deserialize_with = "string_or_list")]
    pub jwks_urls: Vec<String>,
    /// Background refresh of every JWKS URL.
    pub jwks_refresh_interval: HumanDuration,
    /// A token with an unknown `kid` triggers a refetch at most this often per URL, so a
    /// flood of made-up `kid`s cannot make Sluice hammer the identity provider.
    pub jwks_min_refetch_interval: HumanDuration,
    /// Connect + read timeout of one JWKS fetch.
    pub jwks_timeout: HumanDuration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: HumanDuration,
    /// Claim naming the tenant (a top-level name, else a dotted path such as `org.id`).
    pub tenant_claim: String,
    /// Tenant for tokens without `tenant_claim`; unset: such tokens are refused.
    pub default_tenant: Option<String>,
    /// Claim(s) carrying scopes, each a space-separated string (`scope`) or an array (`scp`).
    /// One name or a list (the config contract names this field `scope_claim`).
    #[serde(deserialize_with = "string_or_list")]
    pub scope_claim: Vec<String>,
    /// Longer bearer tokens are refused before any parsing.
    pub max_token_bytes: ByteSize,
    /// Verified tokens remembered (by SHA-256) so that a client reusing its token skips the
    /// signature check; 0 turns the cache off.
    pub token_cache_size: usize,
    /// How long a verified token is trusted without a new check (never past its `exp`). It
    /// bounds how long a key withdrawn from a JWKS keeps working for tokens already seen.
    pub token_cache_ttl: HumanDuration,
    /// Static verification keys.
    pub keys: Vec<StaticKeyConfig>,
    /// API keys, stored as hashes (`sluice keys generate` prints an entry).
    pub api_keys: Vec<ApiKeyConfig>,
    /// A TOML file of more `[[api_keys]]` entries (e.g. a mounted Kubernetes Secret).
    pub api_keys_file: Option<PathBuf>,
    /// `api_keys_file` is re-read this often: keys added, rotated or revoked there take
    /// effect without a restart (a file that does not load keeps the previous keys).
    pub api_keys_reload_interval: HumanDuration,
    /// Identities for TLS client certificates (mTLS, `tls.client_ca_file`).
    pub client_certs: Vec<ClientCertConfig>,
    pub cors: CorsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: None,
            issuer: Vec::new(),
            audience: Vec::new(),
            jwks_urls: Vec::new(),
            jwks_refresh_interval: HumanDuration::from_secs(300),
            jwks_min_refetch_interval: HumanDuration::from_secs(30),
            jwks_timeout: HumanDuration::from_secs(5),
            leeway: HumanDuration::from_secs(30),
            tenant_claim: "tenant".into(),
            default_tenant: None,
            scope_claim: vec!["scope".into(), "scp".into()],
            max_token_bytes: ByteSize(16 * KIB),
            token_cache_size: 10_000,
            token_cache_ttl: HumanDuration::from_secs(60),
            keys: Vec::new(),
            api_keys: Vec::new(),
            api_keys_file: None,
            api_keys_reload_interval: HumanDuration::from_secs(10),
            client_certs: Vec::new(),
            cors: CorsConfig::default(),
        }
    }
}

impl AuthConfig {
    pub fn has_key_source(&self) -> bool {
        !self.keys.is_empty()
            || !self.jwks_urls.is_empty()
            || !self.api_keys.is_empty()
            || self.api_keys_file.is_some()
            || !self.client_certs.is_empty()
    }

    pub fn effective_mode(&self) -> AuthMode {
        self.mode.unwrap_or(if self.has_key_source() {
            AuthMode::Required
        } else {
            AuthMode::Protected
        })
    }
}

/// A client certificate identity: a request that carries no token or API key but came over a
/// TLS connection whose verified client certificate names `subject` is this tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertConfig {
    /// A DNS or URI subject alternative name of the certificate (`ingest.acme.internal`,
    /// `spiffe://acme/ns/shop/sa/checkout`), or its subject common name when it has no SAN.
    pub subject: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

/// One static JWT verification key. Exactly one of the key fields is set; the algorithm is
/// the key's, and a token whose header names another is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticKeyConfig {
    /// Tokens naming a `kid` are checked against keys with that `kid` only.
    pub kid: Option<String>,
    /// HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub algorithm: String,
    /// HMAC secret (its UTF-8 bytes).
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Public key, PEM (SPKI or PKCS#1 for RSA).
    pub pem: Option<String>,
    pub pem_file: Option<PathBuf>,
    /// Public key as one JWK (JSON).
    pub jwk: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyClass {
    /// Kept secret by a backend service.
    #[default]
    Server,
    /// Public by design (shipped in web pages): write scopes only, origin-checked.
    Browser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's public id (the part after `sk_`/`pk_`); finds the entry without a scan.
    pub id: String,
    /// `sha256:<hex>` of the whole key. The key itself is never stored.
    pub hash: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub class: KeyClass,
    /// Browser keys: `Origin` values allowed (`https://app.example.com`,
    /// `https://*.example.com`).
    #[serde(default)]
    pub origins: Vec<String>,
    /// RFC 3339 (`2027-01-31T00:00:00Z`) or a date; unset: never.
    #[serde(default)]
    pub expires: Option<String>,
    /// For logs: which client this is.
    #[serde(default)]
    pub name: Option<String>,
}

/// CORS for browsers posting events. Allowed origins are those of the browser keys plus
/// `allowed_origins` (for web apps that authenticate with JWTs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// Request headers a browser may send (`Access-Control-Allow-Headers`).
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer (Chrome caps it at 2h).
    pub max_age: HumanDuration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_headers: [
                "authorization",
                "content-type",
                "content-encoding",
                "x-api-key",
                "x-request-id",
                "ce-specversion",
                "ce-type",
                "ce-id",
                "ce-source",
                "ce-time",
                "ce-subject",
                "ce-dataschema",
                "ce-partitionkey",
                "ce-schemaversion",
            ]
            .map(String::from)
            .to_vec(),
            max_age: HumanDuration::from_secs(600),
        }
    }
}

impl AuthConfig {
    /// The section's own rules; the keys themselves (files, PEM, JWK) are read and checked by
    /// [`crate::check`].
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.api_keys_reload_interval.0.is_zero() {
            return Err(field_error(
                "auth.api_keys_reload_interval",
                "must be greater than 0",
            ));
        }
        if self.mode == Some(AuthMode::Required) && !self.has_key_source() {
            return Err(field_error(
                "auth.mode",
                "is `required` but no key source is set (auth.keys, auth.jwks_urls, auth.api_keys or auth.api_keys_file)",
            ));
        }
        Ok(())
    }
}
