//! Where registered schemas live: one trait, two real stores. SQLite is the embedded default
//! (one replica, a file under `data/`); PostgreSQL is shared by every replica. Both keep the
//! same tables and the same rules:
//!
//! - ids are global: one id per distinct (canonical) schema, whatever the subject;
//! - registering is optimistic and atomic per subject ([`register`]): the subject's level and
//!   live versions are read, the compatibility check runs with no lock or transaction held
//!   (it may take seconds), and the insert commits only if the subject is still as read, in
//!   a transaction serialised per subject; otherwise it starts over. Two replicas
//!   registering at once cannot produce duplicate versions or ids, nor skip a check;
//! - deletes are soft first (hidden, numbers never reused), then permanent;
//! - every write bumps an `epoch`, which replicas watch to reload.
//!
//! This module stores; it does not judge compatibility (the caller passes the check in) and
//! knows nothing of HTTP.

mod postgres;
mod sqlite;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use super::compat::Level;

/// The level a subject gets when neither it nor the global config sets one.
pub const DEFAULT_LEVEL: Level = Level::Backward;

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema_type: String,
    /// The canonical JSON text (keys sorted, no insignificant whitespace).
    pub schema: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
    /// The same schema was already the subject's (no new version was made).
    pub existed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("subject '{0}' not found")]
    SubjectNotFound(String),
    #[error("version {1} of subject '{0}' not found")]
    VersionNotFound(String, String),
    #[error("schema not found")]
    SchemaNotFound,
    #[error("subject '{0}' was soft deleted; set permanent=true to delete it permanently")]
    SubjectSoftDeleted(String),
    #[error("subject '{0}' was not soft deleted before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("version {1} of subject '{0}' was soft deleted; set permanent=true to delete it permanently")]
    VersionSoftDeleted(String, u32),
    #[error("version {1} of subject '{0}' was not soft deleted before being permanently deleted")]
    VersionNotSoftDeleted(String, u32),
    #[error("subject '{0}' has no compatibility level of its own")]
    NoSubjectConfig(String),
    #[error("the schema is incompatible: {}", .0.join("; "))]
    Incompatible(Vec<String>),
    /// The registry cannot take the work now (every check slot busy, or the subject
    /// changing under concurrent registrations); trying again later may succeed.
    #[error("{0}")]
    Busy(String),
    #[error("registry storage: {0}")]
    Backend(String),
}

/// What a registration is checked against: read before the check, compared again at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    /// The subject's effective level.
    pub level: Level,
    /// Its live versions as (number, global id), oldest first: ids tell a version number
    /// reused after a permanent delete from the one that was read.
    pub live: Vec<(u32, u32)>,
    /// Their schema texts, in the same order.
    pub schemas: Vec<String>,
}

pub enum Prepared {
    /// The subject already holds this schema.
    Existing(Registered),
    Check(Basis),
}

/// How many times a registration starts over when the subject changed during its check
/// (another replica committed first), waiting a little longer, at random, each time.
const REGISTER_ATTEMPTS: u32 = 10;

/// Registers `schema` (canonical text) under `subject`, or returns its existing version.
/// `check` judges it against the subject's level and live schemas (texts, oldest first) and
/// runs with nothing locked; the version is inserted only if the subject has not changed
/// since.
pub async fn register<F, Fut>(
    store: &dyn RegistryStore,
    subject: &str,
    schema_type: &str,
    schema: &str,
    mut check: F,
) -> Result<Registered, StoreError>
where
    F: FnMut(Level, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    for attempt in 0..REGISTER_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let basis = match store
            .prepare_registration(subject, schema_type, schema)
            .await?
        {
            Prepared::Existing(r) => return Ok(r),
            Prepared::Check(b) => b,
        };
        check(basis.level, basis.schemas.clone()).await?;
        if let Some(r) = store
            .commit_registration(subject, schema_type, schema, &basis)
            .await?
        {
            return Ok(r);
        }
    }
    Err(StoreError::Busy(format!(
        "subject '{subject}' kept changing while the schema was checked; try again"
    )))
}

/// Up to 10 ms times 2^attempt (at most about 1 s), spread at random so that replicas that
/// collided do not collide again.
fn backoff(attempt: u32) -> std::time::Duration {
    let ceiling = 10u64 << attempt.min(7);
    let noise = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos(),
    );
    std::time::Duration::from_millis(1 + noise % ceiling)
}

#[async_trait::async_trait]
pub trait RegistryStore: Send + Sync {
    /// The first half of [`register`]: the existing version of `schema` (canonical text) if
    /// the subject has it, else what to check it against.
    async fn prepare_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<Prepared, StoreError>;

    /// The second half: inserts the next version, in a transaction serialised per subject,
    /// if the subject's level and live versions are still `basis`'s; `None` when they are
    /// not (the caller checks again). A concurrent registration of the same schema returns
    /// that version.
    async fn commit_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        basis: &Basis,
    ) -> Result<Option<Registered>, StoreError>;

    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, StoreError>;
    async fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, StoreError>;
    async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        include_deleted: bool,
    ) -> Result<SubjectVersion, StoreError>;
    /// The newest version of `subject` holding `schema`; soft-deleted ones too when `deleted`.
    async fn lookup(
        &self,
        subject: &str,
        schema: &str,
        deleted: bool,
    ) -> Result<SubjectVersion, StoreError>;
    /// (schema_type, schema) of a global id.
    async fn schema_by_id(&self, id: u32) -> Result<(String, String), StoreError>;
    /// (subject, version) pairs using an id.
    async fn id_versions(&self, id: u32) -> Result<Vec<(String, u32)>, StoreError>;
    async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, StoreError>;
    async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32, StoreError>;
    /// `None` subject: the global level.
    async fn config(&self, subject: Option<&str>) -> Result<Option<Level>, StoreError>;
    async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<(), StoreError>;
    /// Removes a subject's own level; returns what it was.
    async fn delete_config(&self, subject: &str) -> Result<Level, StoreError>;
    /// Every live version, for building validators.
    async fn live(&self) -> Result<Vec<SubjectVersion>, StoreError>;
    /// Bumped by every write: a replica reloads when it sees a new value.
    async fn epoch(&self) -> Result<i64, StoreError>;

    /// Ticks when another replica may have changed the store (PostgreSQL's NOTIFY), so that
    /// replicas reload at once instead of at the next poll. `None`: poll only.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Opens the store a `registry.url` names.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn RegistryStore>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = std::path::PathBuf::from(path);
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??;
        Ok(std::sync::Arc::new(store))
    } else {
        Ok(std::sync::Arc::new(PostgresStore::open(url).await?))
    }
}

/// JSON with object keys sorted and no whitespace: equal schemas get equal text, and the
/// same global id.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&o[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            _ => v.clone(),
        }
    }
    sorted(v).to_string()
}

/// Identifies a schema across subjects: type and canonical text.
pub fn fingerprint(schema_type: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(schema_type.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn level_of(s: &str) -> Result<Level, StoreError> {
    Level::parse(s)
        .ok_or_else(|| StoreError::Backend(format!("stored compatibility level `{s}` is unknown")))
}

/// A subject's versions as (number, soft-deleted), oldest first. The rules below decide from
/// it, the same way for every store.
type History = [(u32, bool)];

/// Resolves `latest` (the highest live version) or checks a number exists.
fn pick(
    all: &History,
    subject: &str,
    v: VersionRef,
    include_deleted: bool,
) -> Result<u32, StoreError> {
    if all.is_empty() || (!include_deleted && all.iter().all(|(_, d)| *d)) {
        return Err(StoreError::SubjectNotFound(subject.into()));
    }
    match v {
        VersionRef::Latest => all
            .iter()
            .rev()
            .find(|(_, d)| include_deleted || !d)
            .map(|(n, _)| *n)
            .ok_or_else(|| StoreError::VersionNotFound(subject.into(), "latest".into())),
        VersionRef::Number(n) => all
            .iter()
            .find(|(m, d)| *m == n && (include_deleted || !d))
            .map(|(m, _)| *m)
            .ok_or_else(|| StoreError::VersionNotFound(subject.into(), n.to_string())),
    }
}

/// The version numbers a listing shows; a subject with none is not found.
fn listed(all: &History, subject: &str, include_deleted: bool) -> Result<Vec<u32>, StoreError> {
    let v: Vec<u32> = all
        .iter()
        .filter(|(_, d)| include_deleted || !d)
        .map(|(n, _)| *n)
        .collect();
    if v.is_empty() {
        return Err(StoreError::SubjectNotFound(subject.into()));
    }
    Ok(v)
}

/// The versions a subject delete removes: soft deletes need a live version, permanent ones
/// need every version soft-deleted first.
fn subject_deletion(all: &History, subject: &str, permanent: bool) -> Result<Vec<u32>, StoreError> {
    if all.is_empty() {
        return Err(StoreError::SubjectNotFound(subject.into()));
    }
    let all_deleted = all.iter().all(|(_, d)| *d);
    match (permanent, all_deleted) {
        (true, false) => Err(StoreError::SubjectNotSoftDeleted(subject.into())),
        (false, true) => Err(StoreError::SubjectSoftDeleted(subject.into())),
        (true, true) => Ok(all.iter().map(|(n, _)| *n).collect()),
        (false, false) => Ok(all.iter().filter(|(_, d)| !d).map(|(n, _)| *n).collect()),
    }
}

/// The version a version delete removes, with the same soft-then-permanent rule. A number
/// may name a soft-deleted version (to be deleted for good, or refused as already deleted).
fn version_deletion(
    all: &History,
    subject: &str,
    v: VersionRef,
    permanent: bool,
) -> Result<u32, StoreError> {
    if all.is_empty() {
        return Err(StoreError::SubjectNotFound(subject.into()));
    }
    let n = match v {
        VersionRef::Number(n) if all.iter().any(|(m, _)| *m == n) => n,
        VersionRef::Number(n) => {
            return Err(StoreError::VersionNotFound(subject.into(), n.to_string()))
        }
        VersionRef::Latest => pick(all, subject, v, permanent)?,
    };
    let deleted = all.iter().any(|(m, d)| *m == n && *d);
    match (permanent, deleted) {
        (true, false) => Err(StoreError::VersionNotSoftDeleted(subject.into(), n)),
        (false, true) => Err(StoreError::VersionSoftDeleted(subject.into(), n)),
        _ => Ok(n),
    }
}

/// The config row key of the global level.
const GLOBAL: &str = "";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(
            r#"{"type": "object", "properties": {"b": {}, "a": {"type": "string"}}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"properties":{"a":{"type":"string"},"b":{}},"type":"object"}"#,
        )
        .unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(
            canonical(&a),
            r#"{"properties":{"a":{"type":"string"},"b":{}},"type":"object"}"#
        );
        assert_ne!(
            fingerprint("JSON", &canonical(&a)),
            fingerprint("AVRO", &canonical(&a))
        );
    }
}
