//! API keys for services that cannot do JWT, and browser write keys meant to be public.
//!
//! A key looks like `sk_<id>_<secret>` (server) or `pk_<id>_<secret>` (browser): the id
//! finds the entry without scanning, the whole key is checked against the stored SHA-256 in
//! constant time. Keys carry 256 random bits, so a fast hash is enough (slow hashes protect
//! guessable passwords) and keeps the check near a microsecond. The key itself is printed
//! once by `sluice keys generate` and stored nowhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{key_class_method, AuthError, Principal, Scopes};
use crate::config::{ApiKeyConfig, AuthConfig, KeyClass};
use crate::telemetry;

const ID_HEX_LEN: usize = 16;
const SECRET_BYTES: usize = 32;

pub(super) fn looks_like_key(credential: &str) -> bool {
    credential.starts_with("sk_") || credential.starts_with("pk_")
}

struct Entry {
    hash: [u8; 32],
    tenant: String,
    subject: String,
    scopes: Scopes,
    class: KeyClass,
    origins: Vec<OriginPattern>,
    expires: Option<SystemTime>,
}

#[derive(Default)]
pub(super) struct ApiKeys {
    by_id: HashMap<String, Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    api_keys: Vec<ApiKeyConfig>,
}

impl ApiKeys {
    /// The entries of `auth.api_keys` and, when given, of the keys file's contents.
    fn build(
        inline: &[ApiKeyConfig],
        file: Option<(&Path, &[u8])>,
    ) -> Result<ApiKeys, (String, String)> {
        let mut keys = ApiKeys::default();
        for (i, k) in inline.iter().enumerate() {
            keys.add(k)
                .map_err(|m| (format!("auth.api_keys[{i}]"), m))?;
        }
        if let Some((path, bytes)) = file {
            let field = "auth.api_keys_file".to_string();
            let text = std::str::from_utf8(bytes)
                .map_err(|_| (field.clone(), format!("{}: not UTF-8", path.display())))?;
            let file: KeysFile = toml::from_str(text)
                .map_err(|e| (field.clone(), format!("{}: {e}", path.display())))?;
            for (i, k) in file.api_keys.iter().enumerate() {
                keys.add(k).map_err(|m| {
                    (
                        field.clone(),
                        format!("{}: api_keys[{i}]: {m}", path.display()),
                    )
                })?;
            }
        }
        Ok(keys)
    }

    fn add(&mut self, k: &ApiKeyConfig) -> Result<(), String> {
        if k.id.len() != ID_HEX_LEN || !k.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`id` must be {ID_HEX_LEN} hex digits (as printed by `sluice keys generate`)"
            ));
        }
        let hash = k
            .hash
            .strip_prefix("sha256:")
            .and_then(hex32)
            .ok_or("`hash` must be `sha256:` and 64 hex digits")?;
        if k.tenant.is_empty() {
            return Err("`tenant` must not be empty".into());
        }
        let (scopes, unknown) = Scopes::parse(k.scopes.iter().map(String::as_str));
        if let Some(u) = unknown.first() {
            return Err(format!(
                "unknown scope `{u}` (known: events:write:<type pattern>, registry:read, registry:write)"
            ));
        }
        let origins = k
            .origins
            .iter()
            .map(|o| OriginPattern::parse(o))
            .collect::<Result<Vec<_>, _>>()?;
        match k.class {
            KeyClass::Browser => {
                if scopes.registry_read || scopes.registry_write {
                    return Err("browser keys are public: only events:write scopes".into());
                }
                if origins.is_empty() {
                    return Err(
                        "browser keys need `origins` (the pages allowed to use them)".into(),
                    );
                }
            }
            KeyClass::Server if !origins.is_empty() => {
                return Err("`origins` applies to class = \"browser\" keys only".into());
            }
            KeyClass::Server => {}
        }
        let expires = k.expires.as_deref().map(parse_time).transpose()?;
        let entry = Entry {
            hash,
            tenant: k.tenant.clone(),
            subject: k.name.clone().unwrap_or_else(|| k.id.clone()),
            scopes,
            class: k.class,
            origins,
            expires,
        };
        if self
            .by_id
            .insert(k.id.to_ascii_lowercase(), entry)
            .is_some()
        {
            return Err(format!("id {} is listed twice", k.id));
        }
        Ok(())
    }

    pub fn verify(&self, key: &str, origin: Option<&str>) -> Result<Principal, AuthError> {
        let (class, rest) = match key.split_at_checked(3) {
            Some(("sk_", rest)) => (KeyClass::Server, rest),
            Some(("pk_", rest)) => (KeyClass::Browser, rest),
            _ => return Err(AuthError::InvalidApiKey),
        };
        let id = rest.get(..ID_HEX_LEN).ok_or(AuthError::InvalidApiKey)?;
        let entry = self
            .by_id
            .get(&id.to_ascii_lowercase())
            .ok_or(AuthError::InvalidApiKey)?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if !bool::from(digest.ct_eq(&entry.hash)) || entry.class != class {
            return Err(AuthError::InvalidApiKey);
        }
        if entry.expires.is_some_and(|t| SystemTime::now() >= t) {
            return Err(AuthError::ApiKeyExpired);
        }
        if entry.class == KeyClass::Browser {
            let ok = origin.is_some_and(|o| entry.origins.iter().any(|p| p.matches(o)));
            if !ok {
                return Err(AuthError::OriginNotAllowed);
            }
        }
        Ok(Principal::new(
            entry.tenant.clone(),
            entry.subject.clone(),
            entry.scopes.clone(),
            key_class_method(entry.class),
        ))
    }

    /// Whether some browser key allows `origin` (for CORS preflights, which carry no key).
    fn allows_origin(&self, origin: &str) -> bool {
        self.by_id
            .values()
            .any(|e| e.origins.iter().any(|p| p.matches(origin)))
    }
}

/// `auth.api_keys` and `auth.api_keys_file`, as last loaded. The file is re-read every
/// `auth.api_keys_reload_interval` and the key set swapped whole, so that keys added, rotated
/// or revoked there (a Kubernetes Secret update) take effect without a restart. A file that
/// cannot be read or does not load keeps the previous key set: a typo must not lock every
/// client out (nor let a revoked key back in, which a half-loaded set could).
pub(super) struct KeyStore {
    inline: Vec<ApiKeyConfig>,
    file: Option<PathBuf>,
    current: ArcSwap<ApiKeys>,
    /// The file's bytes that `current` was built from, and the last reload's error (each
    /// distinct failure is logged and counted once, not on every tick).
    loaded: Mutex<(Vec<u8>, Option<String>)>,
}

impl KeyStore {
    pub fn from_config(config: &AuthConfig) -> Result<KeyStore, (String, String)> {
        let bytes = match &config.api_keys_file {
            Some(path) => read(path).map_err(|m| ("auth.api_keys_file".to_string(), m))?,
            None => Vec::new(),
        };
        let file = config.api_keys_file.as_deref().map(|p| (p, &bytes[..]));
        let keys = ApiKeys::build(&config.api_keys, file)?;
        if config.api_keys_file.is_some() {
            metrics::gauge!(telemetry::API_KEYS_LOADED).set(keys.by_id.len() as f64);
        }
        Ok(KeyStore {
            inline: config.api_keys.clone(),
            file: config.api_keys_file.clone(),
            current: ArcSwap::from_pointee(keys),
            loaded: Mutex::new((bytes, None)),
        })
    }

    pub fn verify(&self, key: &str, origin: Option<&str>) -> Result<Principal, AuthError> {
        self.current.load().verify(key, origin)
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        self.current.load().allows_origin(origin)
    }

    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Swaps in the file's current keys when its contents changed and load; otherwise keeps
    /// the previous ones (and says why).
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        let mut loaded = self.loaded.lock().expect("not poisoned");
        let (bytes, keys) = match read(path) {
            Ok(bytes) if bytes == loaded.0 => {
                loaded.1 = None;
                return;
            }
            Ok(bytes) => {
                let keys = ApiKeys::build(&self.inline, Some((path, &bytes))).map_err(|(_, m)| m);
                (bytes, keys)
            }
            Err(m) => (Vec::new(), Err(m)),
        };
        match keys {
            Ok(keys) => {
                let before = self.current.load();
                let added = keys
                    .by_id
                    .keys()
                    .filter(|id| !before.by_id.contains_key(*id));
                let added: Vec<&str> = added.map(String::as_str).collect();
                let removed = before
                    .by_id
                    .keys()
                    .filter(|id| !keys.by_id.contains_key(*id));
                let removed: Vec<&str> = removed.map(String::as_str).collect();
                tracing::info!(
                    file = %path.display(),
                    keys = keys.by_id.len(),
                    added = ?added,
                    removed = ?removed,
                    "API keys reloaded"
                );
                metrics::gauge!(telemetry::API_KEYS_LOADED).set(keys.by_id.len() as f64);
                metrics::counter!(telemetry::API_KEYS_RELOADS, "result" => "ok").increment(1);
                drop(before);
                self.current.store(Arc::new(keys));
                *loaded = (bytes, None);
            }
            // A file caught half-written lands here and loads on a later tick.
            Err(error) => {
                if loaded.1.as_ref() != Some(&error) {
                    metrics::counter!(telemetry::API_KEYS_RELOADS, "result" => "error")
                        .increment(1);
                    tracing::error!(
                        error,
                        "API keys reload failed; the previous keys stay in use"
                    );
                    loaded.1 = Some(error);
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A browser origin allowed to post: `https://app.example.com`, `http://localhost:3000`,
/// or `https://*.example.com` (any subdomain, not the domain itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    /// Lowercase `host[:port]`; for wildcards, the part after `*` (`.example.com`).
    host: String,
    wildcard: bool,
}

impl OriginPattern {
    pub fn parse(s: &str) -> Result<OriginPattern, String> {
        let bad = || {
            format!("origin `{s}` must look like https://app.example.com or https://*.example.com (no path)")
        };
        let (scheme, host) = s.split_once("://").ok_or_else(bad)?;
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        let host = host.to_ascii_lowercase();
        let (host, wildcard) = match host.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 && !rest.contains('*') => {
                (rest.to_string(), true)
            }
            Some(_) => return Err(bad()),
            None if host.contains('*') => return Err(bad()),
            None => (host, false),
        };
        Ok(OriginPattern {
            scheme: scheme.to_string(),
            host,
            wildcard,
        })
    }

    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, host)) = origin.split_once("://") else {
            return false;
        };
        if scheme != self.scheme || host.contains('/') {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len()
                && host.ends_with(&self.host)
                && !host[..host.len() - self.host.len()].contains([':', '@'])
        } else {
            host == self.host
        }
    }
}

/// A new key, shown once.
pub struct GeneratedKey {
    pub key: String,
    pub id: String,
    /// `sha256:<hex>`, the only form config holds.
    pub hash: String,
}

pub fn generate_key(class: KeyClass) -> Result<GeneratedKey, String> {
    let mut id = [0u8; ID_HEX_LEN / 2];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness from the OS: {e}"))?;
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let prefix = match class {
        KeyClass::Server => "sk",
        KeyClass::Browser => "pk",
    };
    let id = hex(&id);
    let key = format!("{prefix}_{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = format!("sha256:{}", hex(&Sha256::digest(key.as_bytes())));
    Ok(GeneratedKey { key, id, hash })
}

/// `2027-01-31`, `2027-01-31T12:00:00Z`, `2027-01-31T12:00:00.5+02:00`.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    use time::format_description::well_known::Rfc3339;
    let bad =
        || format!("`{s}` is not an RFC 3339 time (2027-01-31T00:00:00Z) or a date (2027-01-31)");
    let at = if s.len() == 10 {
        let ymd = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]")
            .expect("a valid format description");
        time::Date::parse(s, &ymd)
            .map_err(|_| bad())?
            .midnight()
            .assume_utc()
    } else {
        // RFC 3339 allows a space for the `T` (section 5.6, note); the parser wants the letter.
        let s = match s.as_bytes().get(10) {
            Some(b' ') => format!("{}T{}", &s[..10], &s[11..]),
            _ => s.to_string(),
        };
        time::OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| bad())?
    };
    u64::try_from(at.unix_timestamp())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_for(g: &GeneratedKey, class: KeyClass, origins: &[&str]) -> ApiKeyConfig {
        ApiKeyConfig {
            id: g.id.clone(),
            hash: g.hash.clone(),
            tenant: "acme".into(),
            scopes: vec!["events:write:checkout.*".into()],
            class,
            origins: origins.iter().map(|s| s.to_string()).collect(),
            expires: None,
            name: Some("checkout-svc".into()),
        }
    }

    #[test]
    fn generated_keys_verify_and_nothing_else_does() {
        let g = generate_key(KeyClass::Server).unwrap();
        assert!(g.key.starts_with(&format!("sk_{}_", g.id)));
        assert!(!g.hash.contains(&g.key[20..]));
        let mut keys = ApiKeys::default();
        keys.add(&config_for(&g, KeyClass::Server, &[])).unwrap();
        let p = keys.verify(&g.key, None).unwrap();
        assert_eq!(
            (p.tenant.as_str(), p.subject.as_str()),
            ("acme", "checkout-svc")
        );
        assert!(p.scopes.may_write("checkout.paid") && !p.scopes.may_write("audit.x"));

        let mut wrong = g.key.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        for bad in [wrong.as_str(), "sk_", "sk_zz", &g.key[..g.key.len() - 1]] {
            assert_eq!(
                keys.verify(bad, None).unwrap_err(),
                AuthError::InvalidApiKey
            );
        }
        // The same secret presented as a browser key is not the same key.
        let as_browser = format!("pk_{}", &g.key[3..]);
        assert_eq!(
            keys.verify(&as_browser, None).unwrap_err(),
            AuthError::InvalidApiKey
        );
    }

    #[test]
    fn browser_keys_need_their_origin_and_expiry_is_enforced() {
        let g = generate_key(KeyClass::Browser).unwrap();
        let mut keys = ApiKeys::default();
        keys.add(&config_for(
            &g,
            KeyClass::Browser,
            &["https://*.shop.io", "http://localhost:3000"],
        ))
        .unwrap();
        assert!(keys.verify(&g.key, Some("https://www.shop.io")).is_ok());
        assert!(keys.verify(&g.key, Some("http://localhost:3000")).is_ok());
        for bad in [
            None,
            Some("https://shop.io"),
            Some("https://evil.io"),
            Some("http://www.shop.io"),
            Some("null"),
        ] {
            assert_eq!(
                keys.verify(&g.key, bad).unwrap_err(),
                AuthError::OriginNotAllowed,
                "{bad:?}"
            );
        }

        let g = generate_key(KeyClass::Server).unwrap();
        let mut c = config_for(&g, KeyClass::Server, &[]);
        c.expires = Some("2020-01-01T00:00:00Z".into());
        keys.add(&c).unwrap();
        assert_eq!(
            keys.verify(&g.key, None).unwrap_err(),
            AuthError::ApiKeyExpired
        );
    }

    #[test]
    fn config_mistakes_are_refused() {
        let g = generate_key(KeyClass::Browser).unwrap();
        let mut keys = ApiKeys::default();
        let mut c = config_for(&g, KeyClass::Browser, &[]);
        assert!(keys.add(&c).unwrap_err().contains("origins"));
        c.origins = vec!["https://a.io/path".into()];
        assert!(keys.add(&c).is_err());
        c.origins = vec!["https://a.io".into()];
        c.scopes = vec!["registry:write".into()];
        assert!(keys.add(&c).unwrap_err().contains("browser"));
        c.scopes = vec!["events:read".into()];
        assert!(keys.add(&c).unwrap_err().contains("unknown scope"));
        c.scopes = vec!["events:write".into()];
        c.hash = g.key.clone();
        assert!(keys.add(&c).unwrap_err().contains("sha256"));
    }

    #[test]
    fn times_parse() {
        let t = |s| {
            parse_time(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(t("1970-01-02"), 86_400);
        assert_eq!(t("2026-11-23T13:21:00Z"), 1_795_440_060);
        assert_eq!(t("2026-11-23T15:21:00.250+02:00"), 1_795_440_060);
        assert_eq!(
            t("2000-03-01T00:00:00Z") - t("2000-02-28T00:00:00Z"),
            2 * 86_400
        );
        assert_eq!(t("2024-02-29"), t("2024-02-29T00:00:00Z"));
        assert_eq!(t("2026-11-23 13:21:00z"), 1_795_440_060);
        for bad in [
            "2026-13-01",
            "tomorrow",
            "2026-11-23T25:00:00Z",
            "2026-11-23T10:00",
            // Days the month does not have (once read as early March).
            "2027-02-31",
            "2027-02-29",
            "2026-04-31T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
