//! The registry's stores against real databases: one SQLite file per test, and the real
//! PostgreSQL (127.0.0.1:5432, database `test`) with one schema per test so tests run in
//! parallel. The same behaviour is asserted of both.

use std::sync::Arc;

use serde_json::{json, Value};
use sluice::registry::compat::Level;
use sluice::registry::store::{
    self, canonical, Basis, PostgresStore, Prepared, Registered, RegistryStore, SqliteStore,
    StoreError, SubjectVersion, VersionRef,
};
use sluice::registry::{bootstrap, SchemaWork, StoredSchema};

use crate::support::unique;

/// The private PostgreSQL server scripts/test starts.
fn postgres_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES_URL").expect(
        "PostgreSQL tests need a server: run them with scripts/test, which starts one and sets SLUICE_TEST_POSTGRES_URL",
    )
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

/// The schema work of one replica.
fn work() -> SchemaWork {
    SchemaWork::new(&sluice::config::Config::default())
}

/// This test process as one replica (`register` below).
static WORK: std::sync::LazyLock<SchemaWork> = std::sync::LazyLock::new(work);

async fn register(
    store: &dyn RegistryStore,
    subject: &str,
    v: Value,
) -> Result<Registered, StoreError> {
    let text = schema(v.clone());
    WORK.register(store, subject, Arc::new(v), &text).await
}

/// The check runs with nothing held (it may read the store itself), and when the subject
/// changes during it (another replica registered), it runs again against what is there now.
async fn checks_unlocked_and_again_after_a_concurrent_change(store: &dyn RegistryStore) {
    let s = unique("it.reg.race.");
    let open = json!({"type": "object"});
    register(store, &s, open.clone()).await.unwrap();
    // BACKWARD compares with the latest: ours reads `open`'s data, not `theirs`'s strings.
    let theirs = json!({"type": ["object", "string"]});
    let ours = json!({"type": "object", "title": "ours"});
    let seen = std::sync::Mutex::new(Vec::new());
    let result = store::register(
        store,
        &s,
        "JSON",
        &schema(ours.clone()),
        |level, previous| {
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(previous.clone());
                seen.len() == 1
            };
            let (theirs, ours, s) = (theirs.clone(), ours.clone(), s.clone());
            async move {
                // Reading the store here would deadlock if the check ran under its lock.
                assert!(store.subjects(false).await?.contains(&s));
                if first {
                    register(store, &s, theirs).await?;
                }
                let prev: Vec<Value> = previous
                    .iter()
                    .map(|t| serde_json::from_str(t).unwrap())
                    .collect();
                let prev: Vec<&Value> = prev.iter().collect();
                let v = sluice::registry::compat::check(level, &ours, &prev);
                if v.is_compatible() {
                    Ok(())
                } else {
                    Err(StoreError::Incompatible(v.messages()))
                }
            }
        },
    )
    .await;
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 2, "checked again after the other registration");
    assert_eq!(seen[0], vec![schema(open.clone())]);
    assert_eq!(seen[1], vec![schema(open), schema(theirs)]);
    match result {
        Err(StoreError::Incompatible(m)) => {
            assert!(m.iter().any(|m| m.contains("TYPE_NARROWED")), "{m:?}")
        }
        other => panic!("ours refuses their strings: {other:?}"),
    }
    assert_eq!(store.versions(&s, false).await.unwrap(), vec![1, 2]);
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
    checks_unlocked_and_again_after_a_concurrent_change(&store).await;
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
    checks_unlocked_and_again_after_a_concurrent_change(&store).await;
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
    // Each replica with its own schema work, as two processes.
    let (wa, wb) = (Arc::new(work()), Arc::new(work()));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (store, work) = if i % 2 == 0 {
            (a.clone(), wa.clone())
        } else {
            (b.clone(), wb.clone())
        };
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            let v = json!({"type": "object", "title": "x", "properties": {format!("p{i}"): {"type": "integer"}}});
            let text = schema(v.clone());
            work.register(&*store, &subject, Arc::new(v), &text).await.unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_store_postgres_replicas_bootstrapping_the_same_files_at_once_all_start() {
    // A rollout on a fresh database: every replica registers the same schema files at once.
    // One that reads "version 1 missing" just before another commits it must not take the
    // committed version for a history that differs from the folder.
    let pg = PgSchema::new().await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(PostgresStore::open(&pg.url).await.unwrap()));
    }
    for round in 0..10 {
        let subject = unique(&format!("it.boot{round}."));
        let files: Vec<StoredSchema> = (1..=3)
            .map(|v| StoredSchema {
                subject: subject.clone(),
                version: v,
                schema: json!({"type": "object", "title": format!("v{v}"), "properties": {format!("p{v}"): {}}}),
                origin: format!("schemas/{subject}/{v}.json"),
                id: None,
            })
            .collect();
        let files = Arc::new(files);
        let tasks: Vec<_> = stores
            .iter()
            .map(|s| {
                let (s, files) = (s.clone(), files.clone());
                tokio::spawn(async move { bootstrap(&*s, &files, true, &work()).await })
            })
            .collect();
        let mut registered = 0;
        for t in tasks {
            let b = t
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(b.registered + b.already, 3, "{b:?}");
            registered += b.registered;
        }
        assert_eq!(registered, 3, "each file registered once, by one replica");
        assert_eq!(
            stores[0].versions(&subject, false).await.unwrap(),
            vec![1, 2, 3]
        );
    }
}

/// The real SQLite store, with another replica's registration of `file` committed right
/// after this replica's first read of `file`'s version: the interleaving of two replicas
/// bootstrapping the same folder at once, made certain instead of left to timing.
struct OtherReplicaCommitsBetweenReads {
    inner: SqliteStore,
    file: StoredSchema,
    done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl RegistryStore for OtherReplicaCommitsBetweenReads {
    async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        include_deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        let r = self.inner.version(subject, version, include_deleted).await;
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let text = canonical(&self.file.schema);
            store::register(
                &self.inner,
                &self.file.subject,
                "JSON",
                &text,
                |_, _| async { Ok(()) },
            )
            .await
            .unwrap();
        }
        r
    }
    async fn prepare_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<Prepared, StoreError> {
        self.inner
            .prepare_registration(subject, schema_type, schema)
            .await
    }
    async fn commit_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        basis: &Basis,
    ) -> Result<Option<Registered>, StoreError> {
        self.inner
            .commit_registration(subject, schema_type, schema, basis)
            .await
    }
    async fn subjects(&self, d: bool) -> Result<Vec<String>, StoreError> {
        self.inner.subjects(d).await
    }
    async fn versions(&self, s: &str, d: bool) -> Result<Vec<u32>, StoreError> {
        self.inner.versions(s, d).await
    }
    async fn lookup(&self, s: &str, schema: &str, d: bool) -> Result<SubjectVersion, StoreError> {
        self.inner.lookup(s, schema, d).await
    }
    async fn schema_by_id(&self, id: u32) -> Result<(String, String), StoreError> {
        self.inner.schema_by_id(id).await
    }
    async fn id_versions(&self, id: u32) -> Result<Vec<(String, u32)>, StoreError> {
        self.inner.id_versions(id).await
    }
    async fn delete_subject(&self, s: &str, p: bool) -> Result<Vec<u32>, StoreError> {
        self.inner.delete_subject(s, p).await
    }
    async fn delete_version(&self, s: &str, v: VersionRef, p: bool) -> Result<u32, StoreError> {
        self.inner.delete_version(s, v, p).await
    }
    async fn config(&self, s: Option<&str>) -> Result<Option<Level>, StoreError> {
        self.inner.config(s).await
    }
    async fn set_config(&self, s: Option<&str>, l: Level) -> Result<(), StoreError> {
        self.inner.set_config(s, l).await
    }
    async fn delete_config(&self, s: &str) -> Result<Level, StoreError> {
        self.inner.delete_config(s).await
    }
    async fn live(&self) -> Result<Vec<SubjectVersion>, StoreError> {
        self.inner.live().await
    }
    async fn epoch(&self) -> Result<i64, StoreError> {
        self.inner.epoch().await
    }
}

#[tokio::test]
async fn registry_bootstrap_that_loses_the_race_to_another_replica_still_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = StoredSchema {
        subject: "it.boot.race".into(),
        version: 1,
        schema: json!({"type": "object", "properties": {"k": {"type": "integer"}}}),
        origin: "schemas/it.boot.race/1.json".into(),
        id: None,
    };
    let store = OtherReplicaCommitsBetweenReads {
        inner: SqliteStore::open(&dir.path().join("registry.db")).unwrap(),
        file: file.clone(),
        done: Default::default(),
    };
    let b = bootstrap(&store, std::slice::from_ref(&file), true, &work())
        .await
        .expect("the file the other replica registered is this one: no conflict");
    assert_eq!((b.registered, b.already), (0, 1));
    // A different schema under that version is still a conflict.
    let other = StoredSchema {
        schema: json!({"type": "string"}),
        ..file.clone()
    };
    let e = bootstrap(&store, &[other], true, &work())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is a different schema"), "{e}");
}
