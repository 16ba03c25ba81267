//! Where registered schemas live: one trait, two real stores. SQLite is the embedded default
//! (one replica, a file under `data/`); PostgreSQL is shared by every replica. Both keep the
//! same tables and the same rules:
//!
//! - ids are global: one id per distinct (canonical) schema, whatever the subject;
//! - registering is atomic and serialised per subject: the compatibility check, the new
//!   version number and the insert happen in one transaction, so two replicas registering at
//!   once cannot produce duplicate versions or ids;
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
    #[error("registry storage: {0}")]
    Backend(String),
}

/// The compatibility check run inside the registration transaction: the subject's level and
/// its live schemas, oldest first.
pub type CompatCheck<'a> = &'a (dyn Fn(Level, &[Value]) -> Result<(), Vec<String>> + Send + Sync);

#[async_trait::async_trait]
pub trait RegistryStore: Send + Sync {
    /// Registers `schema` (canonical text) under `subject`, or returns its existing version.
    async fn register(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        check: CompatCheck<'_>,
    ) -> Result<Registered, StoreError>;

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

/// Parses stored schema texts for the compatibility check.
fn parse_all(texts: &[String]) -> Result<Vec<Value>, StoreError> {
    texts
        .iter()
        .map(|t| {
            serde_json::from_str(t)
                .map_err(|e| StoreError::Backend(format!("a stored schema is not JSON: {e}")))
        })
        .collect()
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
