//! The registry's stores against real databases: one SQLite file per test, and the real
//! PostgreSQL (127.0.0.1:5432, database `test`) with one schema per test so tests run in
//! parallel. The same behaviour is asserted of both.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice::registry::compat::{self, Level};
use sluice::registry::store::{
    canonical, PostgresStore, Registered, RegistryStore, SqliteStore, StoreError, VersionRef,
};

use crate::support::unique;

/// `SLUICE_TEST_POSTGRES_URL`, else the machine's PostgreSQL.
fn postgres_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL schema (namespace), dropped with the value.
pub struct PgSchema {
    pub name: String,
    pub url: String,
}

impl PgSchema {
    pub async fn new() -> PgSchema {
        let name = unique("sluice_it_");
        let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (database test) is needed for these tests");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let sep = if postgres_url().contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{sep}options=-csearch_path%3D{name}", postgres_url());
        PgSchema { name, url }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on its own thread: Drop cannot await.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                        .await;
                }
            });
        })
        .join()
        .ok();
    }
}

fn schema(v: Value) -> String {
    canonical(&v)
}

fn backward_check(level: Level, previous: &[Value], new: &Value) -> Result<(), Vec<String>> {
    let prev: Vec<&Value> = previous.iter().collect();
    let v = compat::check(level, new, &prev);
    if v.is_compatible() {
        Ok(())
    } else {
        Err(v.messages())
    }
}

async fn register(
    store: &dyn RegistryStore,
    subject: &str,
    v: Value,
) -> Result<Registered, StoreError> {
    let text = schema(v.clone());
    let check = move |level: Level, prev: &[Value]| backward_check(level, prev, &v);
    store.register(subject, "JSON", &text, &check).await
}

/// Everything a store must do, asserted the same way for both.
async fn exercise(store: &dyn RegistryStore) {
    let s = unique("it.reg.");
    let v1 = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false});
    let v2 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "additionalProperties": false});
    let e0 = store.epoch().await.unwrap();

    let r1 = register(store, &s, v1.clone()).await.unwrap();
    assert_eq!((r1.version, r1.existed), (1, false));
    assert!(store.epoch().await.unwrap() > e0, "writes bump the epoch");
    // Same schema again (key order differs): same id, no new version.
    let again = register(store, &s, json!({"additionalProperties": false, "properties": {"a": {"type": "string"}}, "type": "object"})).await.unwrap();
    assert_eq!(
        again,
        Registered {
            id: r1.id,
            version: 1,
            existed: true
        }
    );
    // BACKWARD (the default): an optional property added to a closed model reads old data.
    let r2 = register(store, &s, v2.clone()).await.unwrap();
    assert_eq!(r2.version, 2);
    assert_ne!(r2.id, r1.id);
    // A required property added is not.
    let bad = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["b"], "additionalProperties": false});
    match register(store, &s, bad.clone()).await {
        Err(StoreError::Incompatible(m)) => assert!(
            m.iter().any(|m| m.contains("REQUIRED_PROPERTY_ADDED")),
            "{m:?}"
        ),
        other => panic!("expected incompatible, got {other:?}"),
    }
    // The same schema under another subject keeps its global id.
    let other = unique("it.reg.other.");
    let r_other = register(store, &other, v1.clone()).await.unwrap();
    assert_eq!((r_other.id, r_other.version), (r1.id, 1));
    let mut users = store.id_versions(r1.id).await.unwrap();
    users.sort();
    let mut want = vec![(s.clone(), 1), (other.clone(), 1)];
    want.sort();
    assert_eq!(users, want);

    assert_eq!(store.versions(&s, false).await.unwrap(), vec![1, 2]);
    let latest = store.version(&s, VersionRef::Latest, false).await.unwrap();
    assert_eq!(
        (latest.version, latest.id, latest.schema.as_str()),
        (2, r2.id, schema(v2.clone()).as_str())
    );
    assert_eq!(
        store.schema_by_id(r2.id).await.unwrap(),
        ("JSON".to_string(), schema(v2.clone()))
    );
    assert_eq!(
        store.schema_by_id(999_999).await,
        Err(StoreError::SchemaNotFound)
    );
    assert_eq!(
        store
            .lookup(&s, &schema(v1.clone()), false)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .lookup(&s, &schema(json!({"type": "null"})), false)
            .await,
        Err(StoreError::SchemaNotFound)
    );
    assert!(matches!(
        store.lookup("no.such.subject", "{}", true).await,
        Err(StoreError::SubjectNotFound(_))
    ));
    assert!(matches!(
        store.version(&s, VersionRef::Number(7), false).await,
        Err(StoreError::VersionNotFound(..))
    ));
    assert!(store.subjects(false).await.unwrap().contains(&s));

    // Config: subject level over global over the default.
    assert_eq!(store.config(Some(&s)).await.unwrap(), None);
    store.set_config(Some(&s), Level::None).await.unwrap();
    assert_eq!(store.config(Some(&s)).await.unwrap(), Some(Level::None));
    let r3 = register(store, &s, bad.clone()).await.unwrap();
    assert_eq!(r3.version, 3, "NONE accepts anything");
    assert_eq!(store.delete_config(&s).await.unwrap(), Level::None);
    assert!(matches!(
        store.delete_config(&s).await,
        Err(StoreError::NoSubjectConfig(_))
    ));

    // Deletes: soft, then permanent; numbers are not reused after a soft delete.
    assert!(matches!(
        store.delete_version(&s, VersionRef::Number(3), true).await,
        Err(StoreError::VersionNotSoftDeleted(..))
    ));
    assert_eq!(
        store
            .delete_version(&s, VersionRef::Number(3), false)
            .await
            .unwrap(),
        3
    );
    assert!(matches!(
        store.delete_version(&s, VersionRef::Number(3), false).await,
        Err(StoreError::VersionSoftDeleted(..))
    ));
    assert_eq!(store.versions(&s, false).await.unwrap(), vec![1, 2]);
    assert_eq!(store.versions(&s, true).await.unwrap(), vec![1, 2, 3]);
    // Lookup sees a soft-deleted version only when asked (`?deleted=true`).
    assert_eq!(
        store.lookup(&s, &schema(bad.clone()), false).await,
        Err(StoreError::SchemaNotFound)
    );
    assert_eq!(
        store
            .lookup(&s, &schema(bad.clone()), true)
            .await
            .unwrap()
            .version,
        3
    );
    assert!(matches!(
        store.delete_subject(&s, true).await,
        Err(StoreError::SubjectNotSoftDeleted(_))
    ));
    assert_eq!(store.delete_subject(&s, false).await.unwrap(), vec![1, 2]);
    assert!(matches!(
        store.lookup(&s, &schema(v1.clone()), false).await,
        Err(StoreError::SubjectNotFound(_))
    ));
    assert_eq!(
        store
            .lookup(&s, &schema(v1.clone()), true)
            .await
            .unwrap()
            .version,
        1
    );
    assert!(matches!(
        store.versions(&s, false).await,
        Err(StoreError::SubjectNotFound(_))
    ));
    assert!(matches!(
        store.delete_subject(&s, false).await,
        Err(StoreError::SubjectSoftDeleted(_))
    ));
    assert!(!store.subjects(false).await.unwrap().contains(&s));
    assert!(store.subjects(true).await.unwrap().contains(&s));
    assert_eq!(store.delete_subject(&s, true).await.unwrap(), vec![1, 2, 3]);
    assert!(!store.subjects(true).await.unwrap().contains(&s));
    // Gone for good: the subject starts over at version 1, and the schema keeps its id.
    let fresh = register(store, &s, v1.clone()).await.unwrap();
    assert_eq!((fresh.id, fresh.version), (r1.id, 1));
    assert!(store
        .live()
        .await
        .unwrap()
        .iter()
        .any(|v| v.subject == other && v.id == r1.id));
}

#[tokio::test]
async fn registry_store_sqlite_does_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("registry.db");
    let store = SqliteStore::open(&path).unwrap();
    exercise(&store).await;
    // Reopening migrates nothing twice and keeps the data.
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert!(!store.live().await.unwrap().is_empty());
}

#[tokio::test]
async fn registry_store_postgres_does_everything() {
    let pg = PgSchema::new().await;
    let store = PostgresStore::open(&pg.url).await.unwrap();
    exercise(&store).await;
    drop(store);
    let store = PostgresStore::open(&pg.url).await.unwrap();
    assert!(!store.live().await.unwrap().is_empty());
}

#[tokio::test]
async fn registry_store_postgres_concurrent_registrations_get_distinct_ids_and_versions() {
    let pg = PgSchema::new().await;
    // Two stores: two connections, as two replicas would have.
    let a = Arc::new(PostgresStore::open(&pg.url).await.unwrap());
    let b = Arc::new(PostgresStore::open(&pg.url).await.unwrap());
    let subject = unique("it.race.");
    a.set_config(Some(&subject), Level::None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            register(&*store, &subject, json!({"type": "object", "title": "x", "properties": {format!("p{i}"): {"type": "integer"}}})).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    let mut versions = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.push(r.id);
        versions.push(r.version);
    }
    ids.sort();
    ids.dedup();
    versions.sort();
    assert_eq!(ids.len(), 40, "distinct schemas get distinct ids");
    assert_eq!(
        versions,
        (1..=40).collect::<Vec<u32>>(),
        "versions are 1..40 with no gap or duplicate"
    );
    assert_eq!(
        a.versions(&subject, false).await.unwrap(),
        b.versions(&subject, false).await.unwrap()
    );
}
