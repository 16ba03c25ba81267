//! Schema registry: where schemas come from ([`SchemaStore`]) and the compiled validators the
//! ingest path reads ([`ValidatorCache`]).
//!
//! The hot path only ever loads an `Arc` snapshot of the catalog: schemas are compiled once
//! when a catalog is built and swapped in whole, so validation never takes a lock and never
//! compiles. Remote `$ref`s are refused at compile time, never fetched (no SSRF).
//!
//! Schemas live in a [`store::RegistryStore`] (SQLite embedded, PostgreSQL shared); the
//! `schemas/<subject>/<version>.json` folder is registered into it at start ([`bootstrap`]).
//! The cache reloads when the store's epoch moves, reusing validators by global schema id.

mod bootstrap;
pub mod compat;
pub mod cost;
mod dir;
mod source;
pub mod store;
pub mod tape;
mod work;

pub use bootstrap::{bootstrap, Bootstrapped};
pub use source::StoreSource;
pub use work::{SchemaWork, WorkError};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use serde_json::Value;

pub use dir::DirStore;

use crate::error::Code;
use crate::event::{Event, EventError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema store: {0}")]
    Store(String),
    #[error("schema {subject} version {version} ({origin}) does not compile: {reason}")]
    Invalid {
        subject: String,
        version: u32,
        origin: String,
        reason: String,
    },
}

/// One registered schema as a store holds it.
#[derive(Debug, Clone)]
pub struct StoredSchema {
    /// The subject is the event `type` it validates.
    pub subject: String,
    pub version: u32,
    pub schema: Value,
    /// Where it came from, for error messages (a file path, a database id).
    pub origin: String,
    /// The registry's global id (`None` for schemas read straight from files).
    pub id: Option<u32>,
}

/// Where schemas live. Implementations do I/O; callers compile.
#[async_trait]
pub trait SchemaStore: Send + Sync {
    async fn all_schemas(&self) -> Result<Vec<StoredSchema>, RegistryError>;
}

/// A compiled schema, shared by every request that validates against it.
pub struct CompiledSchema {
    pub subject: String,
    pub version: u32,
    pub id: Option<u32>,
    /// `version` and `id` in decimal, written once for every record's headers.
    pub version_text: bytes::Bytes,
    pub id_text: Option<bytes::Bytes>,
    /// Shared by every subject version with the same global id, and across reloads.
    validator: Arc<Validator>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledSchema({} v{})", self.subject, self.version)
    }
}

impl CompiledSchema {
    pub fn compile(stored: &StoredSchema) -> Result<CompiledSchema, RegistryError> {
        let validator =
            compile_schema(&stored.schema).map_err(|reason| RegistryError::Invalid {
                subject: stored.subject.clone(),
                version: stored.version,
                origin: stored.origin.clone(),
                reason,
            })?;
        Ok(CompiledSchema::new(stored, Arc::new(validator)))
    }

    fn new(stored: &StoredSchema, validator: Arc<Validator>) -> CompiledSchema {
        CompiledSchema {
            subject: stored.subject.clone(),
            version: stored.version,
            id: stored.id,
            version_text: stored.version.to_string().into(),
            id_text: stored.id.map(|id| id.to_string().into()),
            validator,
        }
    }

    /// Validates an event's `data` (absent data validates as `null`). The error names the
    /// JSON pointer of the first offending field, relative to the event.
    pub fn validate(&self, data: Option<&[u8]>) -> Result<(), EventError> {
        tape::with_document(data, |node| {
            // `is_valid` caches the results of recursive references and stops at the first
            // failure; the error is only built for events that fail.
            if self.validator.is_valid(node) {
                return Ok(());
            }
            self.validator.validate(node).map_err(|e| {
                let pointer = format!("/data{}", e.instance_path().as_str());
                // `masked` leaves the offending value out: the message may be logged.
                let message: String = e.masked().to_string().chars().take(300).collect();
                EventError::new(Code::SchemaViolation, pointer, message)
            })
        })
        .map_err(|e| {
            EventError::new(
                Code::MalformedJson,
                "/data",
                format!("`data` is not valid JSON: {e}"),
            )
        })?
    }
}

/// What validates events: jsonschema over [`tape`] documents.
pub type Validator = jsonschema::Validator<tape::TapeJson>;

/// Compiles a schema the way the ingest path uses it (remote `$ref`s refused).
pub fn compile_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::ValidationOptions::<Arc<dyn jsonschema::Retrieve>, tape::TapeJson>::default()
        .with_retriever(NoRemoteRefs)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Refuses every `$ref` that is not inside the schema itself.
struct NoRemoteRefs;

impl jsonschema::Retrieve for NoRemoteRefs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "remote $ref {} is not fetched: schemas must be self-contained",
            uri.as_str()
        )
        .into())
    }
}

/// Every compiled schema by subject and version.
#[derive(Debug, Default)]
pub struct Catalog {
    subjects: HashMap<String, BTreeMap<u32, Arc<CompiledSchema>>>,
}

impl Catalog {
    pub fn compile(stored: &[StoredSchema]) -> Result<Catalog, RegistryError> {
        Catalog::compile_reusing(stored, None)
    }

    /// Compiles, reusing the validators of `previous` for schema ids it already had: a
    /// reload after one registration compiles one schema.
    pub fn compile_reusing(
        stored: &[StoredSchema],
        previous: Option<&Catalog>,
    ) -> Result<Catalog, RegistryError> {
        let mut by_id: HashMap<u32, Arc<Validator>> = previous
            .map(|c| {
                c.subjects
                    .values()
                    .flat_map(|v| v.values())
                    .filter_map(|s| s.id.map(|id| (id, s.validator.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let mut subjects: HashMap<String, BTreeMap<u32, Arc<CompiledSchema>>> = HashMap::new();
        for s in stored {
            let compiled = match s.id.and_then(|id| by_id.get(&id)) {
                Some(v) => Arc::new(CompiledSchema::new(s, v.clone())),
                None => {
                    let c = CompiledSchema::compile(s)?;
                    if let Some(id) = s.id {
                        by_id.insert(id, c.validator.clone());
                    }
                    Arc::new(c)
                }
            };
            subjects
                .entry(s.subject.clone())
                .or_default()
                .insert(s.version, compiled);
        }
        Ok(Catalog { subjects })
    }

    pub fn len(&self) -> usize {
        self.subjects.values().map(BTreeMap::len).sum()
    }

    /// Every subject (event type) with a schema.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.subjects.keys().map(String::as_str)
    }

    /// Whether `subject` (an event type) has a schema.
    pub fn knows(&self, subject: &str) -> bool {
        self.subjects.contains_key(subject)
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// The schema for an event type: the pinned version, else the latest.
    pub fn resolve(
        &self,
        ty: &str,
        version: Option<u32>,
    ) -> Result<&Arc<CompiledSchema>, EventError> {
        let versions = self.subjects.get(ty).ok_or_else(|| {
            EventError::new(
                Code::UnknownType,
                "/type",
                format!(
                    "no schema is registered for type `{}`",
                    ty.chars().take(200).collect::<String>()
                ),
            )
        })?;
        match version {
            None => Ok(versions
                .values()
                .next_back()
                .expect("a subject has at least one version")),
            Some(v) => versions.get(&v).ok_or_else(|| {
                EventError::new(
                    Code::UnknownSchemaVersion,
                    "/schemaversion",
                    format!("type `{ty}` has no schema version {v}"),
                )
            }),
        }
    }
}

/// The validators the ingest path reads, swapped whole when the store changes.
pub struct ValidatorCache {
    store: Arc<dyn SchemaStore>,
    catalog: ArcSwap<Catalog>,
}

/// Compiling is proportional to what was registered: it runs on a blocking thread.
async fn compile_off_workers(
    stored: Vec<StoredSchema>,
    previous: Option<Arc<Catalog>>,
) -> Result<Catalog, RegistryError> {
    tokio::task::spawn_blocking(move || Catalog::compile_reusing(&stored, previous.as_deref()))
        .await
        .map_err(|e| RegistryError::Store(format!("compiling schemas: {e}")))?
}

impl ValidatorCache {
    /// Loads and compiles every schema; any schema that does not compile stops start-up.
    pub async fn load(store: Arc<dyn SchemaStore>) -> Result<ValidatorCache, RegistryError> {
        let stored = store.all_schemas().await?;
        let catalog = compile_off_workers(stored, None).await?;
        Ok(ValidatorCache {
            store,
            catalog: ArcSwap::from_pointee(catalog),
        })
    }

    /// Rebuilds the catalog from the store; readers keep the old one until the swap.
    pub async fn reload(&self) -> Result<usize, RegistryError> {
        let previous = self.catalog.load_full();
        let stored = self.store.all_schemas().await?;
        let catalog = compile_off_workers(stored, Some(previous)).await?;
        let n = catalog.len();
        self.catalog.store(Arc::new(catalog));
        Ok(n)
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Resolves and validates one event, returning the schema it passed.
    pub fn validate<'c>(
        catalog: &'c Catalog,
        event: &Event,
    ) -> Result<&'c Arc<CompiledSchema>, EventError> {
        let schema = catalog.resolve(&event.ty, event.schema_version)?;
        schema.validate(event.data.as_deref())?;
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(subject: &str, version: u32, schema: Value) -> StoredSchema {
        StoredSchema {
            subject: subject.into(),
            version,
            schema,
            origin: "test".into(),
            id: None,
        }
    }

    #[test]
    fn resolves_latest_or_pinned_and_points_at_the_bad_field() {
        let cat = Catalog::compile(&[
            stored("t", 1, json!({"type": "object"})),
            stored("t", 2, json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})),
        ])
        .unwrap();
        assert_eq!(cat.resolve("t", None).unwrap().version, 2);
        assert_eq!(cat.resolve("t", Some(1)).unwrap().version, 1);
        assert_eq!(
            cat.resolve("t", Some(9)).unwrap_err().code,
            "unknown_schema_version"
        );
        assert_eq!(cat.resolve("u", None).unwrap_err().code, "unknown_type");
        let err = cat
            .resolve("t", None)
            .unwrap()
            .validate(Some(json!({"n": "x"}).to_string().as_bytes()))
            .unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.pointer.as_str()),
            ("schema_violation", "/data/n")
        );
        assert!(
            !err.message.contains("\"x\""),
            "message echoes the value: {}",
            err.message
        );
        assert!(cat
            .resolve("t", None)
            .unwrap()
            .validate(Some(json!({"n": 1}).to_string().as_bytes()))
            .is_ok());
    }

    #[test]
    fn remote_refs_are_refused_not_fetched() {
        let err = Catalog::compile(&[stored(
            "t",
            1,
            json!({"$ref": "http://127.0.0.1:9/evil.json"}),
        )])
        .unwrap_err();
        assert!(err.to_string().contains("not fetched"), "{err}");
        // Local refs still work.
        let ok = Catalog::compile(&[stored(
            "t",
            1,
            json!({"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}),
        )])
        .unwrap();
        assert!(ok
            .resolve("t", None)
            .unwrap()
            .validate(Some(json!({"a": "no"}).to_string().as_bytes()))
            .is_err());
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn distinct_ids_keep_distinct_validators() {
        let s = |subject: &str, id, schema| StoredSchema {
            subject: subject.into(),
            version: 1,
            schema,
            origin: "t".into(),
            id: Some(id),
        };
        let c = Catalog::compile(&[
            s(
                "a",
                1,
                json!({"type": "object", "additionalProperties": false}),
            ),
            s("b", 2, json!({"type": "object"})),
        ])
        .unwrap();
        let b = c.resolve("b", None).unwrap();
        assert_eq!(b.id, Some(2));
        assert!(b
            .validate(Some(json!({"x": 1}).to_string().as_bytes()))
            .is_ok());
    }
}
