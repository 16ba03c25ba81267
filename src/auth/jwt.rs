//! JWT verification. Each key carries its one algorithm; a token is checked only against keys
//! whose algorithm is the one its header names, so `alg: none`, HS/RS key confusion and
//! algorithm switching all end before any cryptography runs. The header is parsed here for
//! `alg` and `kid` only: `jku`, `x5u` and an embedded `jwk` are never looked at.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::JwksSource;
use super::{AuthError, AuthMethod, Authenticator, Principal, Scopes};
use crate::config::{AuthConfig, StaticKeyConfig};

type Claims = Map<String, Value>;

/// One key that may verify tokens, with the only algorithm it accepts.
pub(super) struct KeyEntry {
    pub kid: Option<String>,
    pub alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// What every token must satisfy besides its signature, shared by static and JWKS keys.
pub(super) struct Rules {
    issuer: Vec<String>,
    audience: Vec<String>,
    leeway_secs: u64,
    tenant_claim: String,
    default_tenant: Option<String>,
    scope_claim: Vec<String>,
}

impl Rules {
    pub fn key(&self, kid: Option<String>, alg: Algorithm, key: DecodingKey) -> KeyEntry {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if !self.issuer.is_empty() {
            v.set_issuer(&self.issuer);
            required.push("iss");
        }
        if !self.audience.is_empty() {
            v.set_audience(&self.audience);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        KeyEntry {
            kid,
            alg,
            key,
            validation: v,
        }
    }
}

pub(super) struct JwtVerifier {
    rules: Arc<Rules>,
    static_keys: Vec<Arc<KeyEntry>>,
    sources: Vec<Arc<JwksSource>>,
    cache: TokenCache,
}

/// Tokens whose signature and claims verified, by SHA-256 of the token. Clients reuse one
/// token for many requests; an RS256 or ES256 check costs hundreds of microseconds with the
/// pure-Rust crypto, a lookup about one. Only successes are kept (failures depend on time and
/// are what a flood would send), each until the earlier of its `exp` and the cache TTL.
struct TokenCache {
    capacity: usize,
    ttl: std::time::Duration,
    map: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

/// Trusted until the instant.
type Verified = (Instant, Arc<Principal>);

impl TokenCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Arc<Principal>> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.lock().expect("not poisoned");
        match map.get(digest) {
            Some((until, p)) if Instant::now() < *until => Some(p.clone()),
            _ => None,
        }
    }

    fn put(&self, digest: [u8; 32], until: Instant, p: Arc<Principal>) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.lock().expect("not poisoned");
        if map.len() >= self.capacity {
            let now = Instant::now();
            map.retain(|_, (u, _)| *u > now);
            if map.len() >= self.capacity {
                // Still full of live tokens: start over rather than track recency.
                map.clear();
            }
        }
        map.insert(digest, (until, p));
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl JwtVerifier {
    pub fn from_config(config: &AuthConfig) -> Result<JwtVerifier, (String, String)> {
        let rules = Arc::new(Rules {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: config.leeway.0.as_secs(),
            tenant_claim: config.tenant_claim.clone(),
            default_tenant: config.default_tenant.clone(),
            scope_claim: config.scope_claim.clone(),
        });
        let static_keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                static_key(&rules, k)
                    .map(Arc::new)
                    .map_err(|m| (format!("auth.keys[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sources = config
            .jwks_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                JwksSource::new(url, config, rules.clone())
                    .map(Arc::new)
                    .map_err(|m| (format!("auth.jwks_urls[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JwtVerifier {
            rules,
            static_keys,
            sources,
            cache: TokenCache {
                capacity: config.token_cache_size,
                ttl: config.token_cache_ttl.0,
                map: std::sync::Mutex::new(HashMap::new()),
            },
        })
    }

    pub async fn start(&self, owner: Weak<Authenticator>) {
        // First fetches run side by side, each bounded by its timeout.
        let mut firsts = tokio::task::JoinSet::new();
        for s in &self.sources {
            firsts.spawn(s.clone().start(owner.clone()));
        }
        while firsts.join_next().await.is_some() {}
    }

    pub fn is_ready(&self) -> bool {
        self.sources.iter().all(|s| s.is_loaded())
    }

    pub fn report_metrics(&self) {
        JwksSource::report_metrics(&self.sources);
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(p) = self.cache.get(&digest) {
            return Ok(p);
        }
        let (principal, exp) = self.verify_uncached(token).await?;
        let principal = Arc::new(principal);
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let left = (exp + self.rules.leeway_secs).saturating_sub(unix_now);
        let until = Instant::now() + self.cache.ttl.min(std::time::Duration::from_secs(left));
        self.cache.put(digest, until, principal.clone());
        Ok(principal)
    }

    /// The principal and the token's `exp`.
    async fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = parse_header(token)?;
        let alg = Algorithm::from_str(&header.alg)
            .map_err(|_| AuthError::AlgorithmNotAllowed(printable(&header.alg)))?;
        let kid = header.kid.as_deref();
        let mut candidates = self.candidates(kid);
        if candidates.is_empty() {
            if let Some(kid) = kid {
                // Perhaps the issuer rotated keys: look again, at most once per interval.
                for s in &self.sources {
                    if !s.has_kid(kid) {
                        s.refetch_if_due().await;
                    }
                }
                candidates = self.candidates(Some(kid));
            }
        }
        if candidates.is_empty() {
            return Err(if !self.is_ready() {
                AuthError::KeysUnavailable
            } else if kid.is_some() {
                AuthError::UnknownKey
            } else {
                AuthError::AlgorithmNotAllowed(alg_name(alg))
            });
        }
        candidates.retain(|k| k.alg == alg);
        if candidates.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed(alg_name(alg)));
        }
        let mut last = AuthError::BadSignature;
        for key in &candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => return self.principal(data.claims),
                Err(e) => match e.into_kind() {
                    // Another key with the same algorithm (no `kid`) may still verify it.
                    ErrorKind::InvalidSignature => last = AuthError::BadSignature,
                    // The signature verified; jsonwebtoken reports a claim of the wrong type
                    // (`"exp": "1700000000"`) as missing. Say which it is.
                    ErrorKind::MissingRequiredClaim(c) if payload_has(token, &c) => {
                        return Err(AuthError::InvalidClaim(c))
                    }
                    kind => return Err(map_error(kind)),
                },
            }
        }
        Err(last)
    }

    /// Keys that may have signed a token with this `kid`: those with that `kid` and those
    /// without one. Without a `kid`, every key.
    fn candidates(&self, kid: Option<&str>) -> Vec<Arc<KeyEntry>> {
        let matches = |k: &KeyEntry| match (kid, k.kid.as_deref()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        let mut out: Vec<Arc<KeyEntry>> = self
            .static_keys
            .iter()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for s in &self.sources {
            out.extend(s.keys().iter().filter(|k| matches(k)).cloned());
        }
        out
    }

    fn principal(&self, claims: Claims) -> Result<(Principal, u64), AuthError> {
        let rules = &self.rules;
        // jsonwebtoken has checked that `exp` is a number; fractions are allowed.
        let exp = match claims.get("exp") {
            Some(Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
            _ => None,
        }
        .ok_or_else(|| AuthError::InvalidClaim("exp".into()))?;
        let tenant = match claim(&claims, &rules.tenant_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(AuthError::InvalidClaim(rules.tenant_claim.clone())),
            None => rules
                .default_tenant
                .clone()
                .ok_or_else(|| AuthError::MissingClaim(rules.tenant_claim.clone()))?,
        };
        let mut granted: Vec<&str> = Vec::new();
        for name in &rules.scope_claim {
            match claim(&claims, name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => granted.extend(s.split_whitespace()),
                Some(Value::Array(items)) => {
                    for item in items {
                        match item {
                            Value::String(s) => granted.push(s),
                            _ => return Err(AuthError::InvalidClaim(name.clone())),
                        }
                    }
                }
                Some(_) => return Err(AuthError::InvalidClaim(name.clone())),
            }
        }
        let (scopes, _unknown) = Scopes::parse(granted);
        let subject = ["sub", "azp", "client_id"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .unwrap_or("unknown")
            .to_string();
        Ok((
            Principal::new(tenant, subject, scopes, AuthMethod::Jwt),
            exp,
        ))
    }
}

/// A top-level claim (names may contain dots, as namespaced claims do), else a dotted path.
fn claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// Three non-empty base64url segments, and a header that is a JSON object with `alg`.
fn parse_header(token: &str) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("a JWT has three dot-separated parts"));
    };
    let b64url = |x: &str| {
        !x.is_empty()
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !b64url(h) || !b64url(p) {
        return Err(AuthError::Malformed("header and payload must be base64url"));
    }
    if !s.is_empty() && !b64url(s) {
        return Err(AuthError::Malformed("the signature must be base64url"));
    }
    let json = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::Malformed("the header is not base64url"))?;
    let header: Header = serde_json::from_slice(&json)
        .map_err(|_| AuthError::Malformed("the header is not a JSON object with `alg`"))?;
    if s.is_empty() {
        // Unsigned tokens (`alg: none`) end here whatever else they say.
        return Err(AuthError::AlgorithmNotAllowed(printable(&header.alg)));
    }
    Ok(header)
}

/// Whether the (already verified) payload holds a claim of that name.
fn payload_has(token: &str, claim: &str) -> bool {
    token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())
        .is_some_and(|c| c.contains_key(claim))
}

fn map_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaim(c),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::AlgorithmNotAllowed("?".into())
        }
        // A key that cannot be used with this token's signature shape (e.g. a truncated
        // ECDSA signature) is a signature that does not verify.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            AuthError::BadSignature
        }
        _ => AuthError::Malformed("the token could not be decoded"),
    }
}

/// An algorithm name from a token, safe to put in a message: short and printable.
fn printable(s: &str) -> String {
    s.chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

fn alg_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

fn static_key(rules: &Rules, k: &StaticKeyConfig) -> Result<KeyEntry, String> {
    let alg = Algorithm::from_str(&k.algorithm).map_err(|_| {
        format!(
            "algorithm `{}` is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
            k.algorithm
        )
    })?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let sources = [
        k.secret.is_some(),
        k.secret_file.is_some(),
        k.pem.is_some(),
        k.pem_file.is_some(),
        k.jwk.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        return Err("set exactly one of secret, secret_file, pem, pem_file, jwk".into());
    }
    let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    let key = if let Some(secret) = &k.secret {
        hmac_key(hmac, secret.expose().as_bytes())?
    } else if let Some(path) = &k.secret_file {
        let bytes = read(path)?;
        // A trailing newline from `echo` or an editor is not part of the secret.
        hmac_key(hmac, bytes.strip_suffix(b"\n").unwrap_or(&bytes))?
    } else if hmac {
        return Err("HS* keys take `secret` or `secret_file`".into());
    } else if let Some(pem) = &k.pem {
        pem_key(alg, pem.as_bytes())?
    } else if let Some(path) = &k.pem_file {
        pem_key(alg, &read(path)?)?
    } else {
        let jwk: Jwk = serde_json::from_str(k.jwk.as_deref().unwrap_or_default())
            .map_err(|e| format!("`jwk` is not a JWK: {e}"))?;
        if let Some(inferred) = jwk_algorithm(&jwk) {
            if inferred != alg {
                return Err(format!(
                    "the JWK is for {inferred:?}, but algorithm is {alg:?}"
                ));
            }
        }
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable JWK: {e}"))?
    };
    if key.family() != alg.family() {
        return Err(format!("the key does not fit algorithm {alg:?}"));
    }
    Ok(rules.key(k.kid.clone(), alg, key))
}

fn hmac_key(hmac: bool, secret: &[u8]) -> Result<DecodingKey, String> {
    if !hmac {
        return Err("`secret` is for HS* algorithms; give public keys as pem or jwk".into());
    }
    // RFC 7518 §3.2: the key must be at least as long as the hash output.
    if secret.len() < 32 {
        return Err("an HMAC secret must be at least 32 bytes".into());
    }
    Ok(DecodingKey::from_secret(secret))
}

fn pem_key(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    use Algorithm::*;
    let r = match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
        _ => return Err(format!("{alg:?} keys are not given as PEM")),
    };
    r.map_err(|e| format!("not a usable {alg:?} public key in PEM: {e}"))
}

/// The algorithm a JWK is for: its `alg`, else what its type and curve allow. RSA keys
/// without `alg` are taken as RS256, the OpenID Connect default.
pub(super) fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(a) = jwk.common.key_algorithm {
        return Algorithm::from_str(&format!("{a:?}")).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_come_before_crypto() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let tok = |h: &str, sig: &str| format!("{}.{}.{sig}", enc(h), enc("{}"));
        assert!(matches!(
            parse_header(&tok(r#"{"alg":"none"}"#, "")),
            Err(AuthError::AlgorithmNotAllowed(a)) if a == "none"
        ));
        assert!(matches!(parse_header("a.b"), Err(AuthError::Malformed(_))));
        assert!(matches!(
            parse_header("a.b.c.d"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            parse_header("a!.b.c"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            parse_header(&tok(r#"{"typ":"JWT"}"#, "c2ln")),
            Err(AuthError::Malformed(_))
        ));
        let h = parse_header(&tok(
            r#"{"alg":"RS256","kid":"k1","jku":"http://evil"}"#,
            "c2ln",
        ))
        .unwrap();
        assert_eq!((h.alg.as_str(), h.kid.as_deref()), ("RS256", Some("k1")));
    }

    #[test]
    fn claims_are_found_by_name_then_path() {
        let c: Claims =
            serde_json::from_str(r#"{"https://x.io/tenant":"a","org":{"id":"b"},"org.id":"c"}"#)
                .unwrap();
        assert_eq!(claim(&c, "https://x.io/tenant"), Some(&Value::from("a")));
        assert_eq!(claim(&c, "org.id"), Some(&Value::from("c")));
        let c: Claims = serde_json::from_str(r#"{"org":{"id":"b"}}"#).unwrap();
        assert_eq!(claim(&c, "org.id"), Some(&Value::from("b")));
        assert_eq!(claim(&c, "org.name"), None);
    }
}
