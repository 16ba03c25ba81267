//! The shared store: PostgreSQL, for many replicas. Registration commits take a per-subject
//! advisory lock inside their transaction, so concurrent registrations through different
//! replicas are serialised per subject (the check itself runs before, with nothing held); ids come from an identity column, so they are global and unique.
//! Every write bumps `epoch` and sends `NOTIFY sluice_registry` (delivered on commit).

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row, Transaction};

use super::{
    fingerprint, level_of, Basis, Prepared, Registered, RegistryStore, StoreError, SubjectVersion,
    VersionRef, GLOBAL,
};
use crate::registry::compat::Level;

/// The channel replicas LISTEN on.
pub const CHANNEL: &str = "sluice_registry";

/// Applied in order inside one transaction each; `sluice_registry_migrations` records them.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE sluice_schemas (
    id          INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_type TEXT NOT NULL,
    schema      TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE
);
CREATE TABLE sluice_versions (
    subject   TEXT NOT NULL,
    version   INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES sluice_schemas(id),
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (subject, version)
);
CREATE INDEX sluice_versions_by_schema ON sluice_versions(schema_id);
CREATE TABLE sluice_config (
    subject       TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
CREATE TABLE sluice_epoch (id INTEGER PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);
INSERT INTO sluice_epoch VALUES (1, 0);
"#];

pub struct PostgresStore {
    url: String,
    client: Mutex<Option<Client>>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Stops the listener when the store is dropped.
    _listener: tokio::task::AbortHandle,
}

/// LISTENs on its own connection and ticks `tx` on every notification; reconnects (with a
/// tick, since notifications may have been missed) after the connection drops.
async fn listen(url: String, tx: tokio::sync::watch::Sender<u64>) {
    use futures_util::StreamExt;
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let sql = format!("LISTEN {CHANNEL}");
                let ok = {
                    let listen = client.batch_execute(&sql);
                    // The connection must be driven while LISTEN runs.
                    tokio::pin!(listen);
                    loop {
                        tokio::select! {
                            r = &mut listen => break r.is_ok(),
                            m = messages.next() => if m.is_none() { break false },
                        }
                    }
                };
                if ok {
                    backoff = std::time::Duration::from_millis(200);
                    tx.send_modify(|n| *n += 1);
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                tx.send_modify(|n| *n += 1)
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "registry LISTEN connection failed");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "registry LISTEN connection failed"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(db)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "registry database connection ended");
        }
    });
    Ok(client)
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self._listener.abort();
    }
}

impl PostgresStore {
    /// Connects and applies migrations (serialised across replicas by an advisory lock).
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut client = connect(url).await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('sluice_registry_migrations'))",
            &[],
        )
        .await
        .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sluice_registry_migrations (version INTEGER PRIMARY KEY)",
        )
        .await
        .map_err(db)?;
        let done: i64 = tx
            .query_one("SELECT COUNT(*) FROM sluice_registry_migrations", &[])
            .await
            .map_err(db)?
            .get(0);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(m).await.map_err(db)?;
            tx.execute(
                "INSERT INTO sluice_registry_migrations VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        let (changes_tx, changes) = tokio::sync::watch::channel(0);
        let listener = tokio::spawn(listen(url.to_string(), changes_tx)).abort_handle();
        Ok(PostgresStore {
            url: url.to_string(),
            client: Mutex::new(Some(client)),
            changes,
            _listener: listener,
        })
    }

    /// The connection, reconnecting if the last one died.
    async fn client(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.url).await?);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("just set")
        }))
    }
}

async fn bump(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let epoch: i64 = tx
        .query_one(
            "UPDATE sluice_epoch SET value = value + 1 WHERE id = 1 RETURNING value",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    tx.execute(&format!("NOTIFY {CHANNEL}, '{epoch}'"), &[])
        .await
        .map_err(db)?;
    Ok(())
}

async fn all_versions(
    c: &impl tokio_postgres::GenericClient,
    subject: &str,
) -> Result<Vec<(u32, bool)>, StoreError> {
    let rows = c
        .query(
            "SELECT version, deleted FROM sluice_versions WHERE subject = $1 ORDER BY version",
            &[&subject],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get(1)))
        .collect())
}

const SELECT_VERSION: &str = "SELECT v.subject, v.version, s.id, s.schema_type, s.schema, v.deleted FROM sluice_versions v JOIN sluice_schemas s ON s.id = v.schema_id";

fn row_version(r: &Row) -> SubjectVersion {
    SubjectVersion {
        subject: r.get(0),
        version: r.get::<_, i32>(1) as u32,
        id: r.get::<_, i32>(2) as u32,
        schema_type: r.get(3),
        schema: r.get(4),
        deleted: r.get(5),
    }
}

async fn lock_subject(tx: &Transaction<'_>, subject: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('sluice_subject'), hashtext($1))",
        &[&subject],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// The live version of `subject` holding the schema with fingerprint `fp`.
async fn existing(
    tx: &Transaction<'_>,
    subject: &str,
    fp: &str,
) -> Result<Option<Registered>, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT s.id, v.version FROM sluice_versions v JOIN sluice_schemas s ON s.id = v.schema_id WHERE v.subject = $1 AND s.fingerprint = $2 AND NOT v.deleted ORDER BY v.version DESC LIMIT 1",
            &[&subject, &fp],
        )
        .await
        .map_err(db)?
        .map(|r| Registered {
            id: r.get::<_, i32>(0) as u32,
            version: r.get::<_, i32>(1) as u32,
            existed: true,
        }))
}

/// A subject's effective level and live (version, id) pairs, oldest first.
async fn basis(
    tx: &Transaction<'_>,
    subject: &str,
) -> Result<(Level, Vec<(u32, u32)>), StoreError> {
    let level = tx
        .query_opt(
            "SELECT compatibility FROM sluice_config WHERE subject IN ($1, $2) ORDER BY subject = $2 LIMIT 1",
            &[&subject, &GLOBAL],
        )
        .await
        .map_err(db)?
        .map(|r| level_of(r.get(0)))
        .transpose()?
        .unwrap_or(super::DEFAULT_LEVEL);
    let live = tx
        .query(
            "SELECT version, schema_id FROM sluice_versions WHERE subject = $1 AND NOT deleted ORDER BY version",
            &[&subject],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i32>(1) as u32))
        .collect();
    Ok((level, live))
}

#[async_trait::async_trait]
impl RegistryStore for PostgresStore {
    async fn prepare_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<Prepared, StoreError> {
        let fp = fingerprint(schema_type, schema);
        let mut c = self.client().await?;
        // One snapshot for the three reads.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        if let Some(r) = existing(&tx, subject, &fp).await? {
            return Ok(Prepared::Existing(r));
        }
        let (level, live) = basis(&tx, subject).await?;
        let schemas: Vec<String> = tx
            .query(
                "SELECT s.schema FROM sluice_versions v JOIN sluice_schemas s ON s.id = v.schema_id WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
                &[&subject],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await.map_err(db)?;
        Ok(Prepared::Check(Basis {
            level,
            live,
            schemas,
        }))
    }

    async fn commit_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        b: &Basis,
    ) -> Result<Option<Registered>, StoreError> {
        let fp = fingerprint(schema_type, schema);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        lock_subject(&tx, subject).await?;
        if let Some(r) = existing(&tx, subject, &fp).await? {
            return Ok(Some(r));
        }
        if basis(&tx, subject).await? != (b.level, b.live.clone()) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO sluice_schemas (schema_type, schema, fingerprint) VALUES ($1, $2, $3) ON CONFLICT (fingerprint) DO NOTHING",
            &[&schema_type, &schema, &fp],
        )
        .await
        .map_err(db)?;
        let id: i32 = tx
            .query_one(
                "SELECT id FROM sluice_schemas WHERE fingerprint = $1",
                &[&fp],
            )
            .await
            .map_err(db)?
            .get(0);
        let version: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM sluice_versions WHERE subject = $1",
                &[&subject],
            )
            .await
            .map_err(db)?
            .get(0);
        tx.execute(
            "INSERT INTO sluice_versions (subject, version, schema_id) VALUES ($1, $2, $3)",
            &[&subject, &version, &id],
        )
        .await
        .map_err(db)?;
        bump(&tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(Some(Registered {
            id: id as u32,
            version: version as u32,
            existed: false,
        }))
    }

    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT DISTINCT subject FROM sluice_versions WHERE $1 OR NOT deleted ORDER BY subject", &[&include_deleted])
            .await
            .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, StoreError> {
        let c = self.client().await?;
        super::listed(&all_versions(&*c, subject).await?, subject, include_deleted)
    }

    async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        include_deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        let c = self.client().await?;
        let n = super::pick(
            &all_versions(&*c, subject).await?,
            subject,
            version,
            include_deleted,
        )?;
        let r = c
            .query_one(
                &format!("{SELECT_VERSION} WHERE v.subject = $1 AND v.version = $2"),
                &[&subject, &(n as i32)],
            )
            .await
            .map_err(db)?;
        Ok(row_version(&r))
    }

    async fn lookup(
        &self,
        subject: &str,
        schema: &str,
        deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        let c = self.client().await?;
        if all_versions(&*c, subject)
            .await?
            .iter()
            .all(|(_, d)| *d && !deleted)
        {
            return Err(StoreError::SubjectNotFound(subject.into()));
        }
        c.query_opt(
            &format!("{SELECT_VERSION} WHERE v.subject = $1 AND s.schema = $2 AND ($3 OR NOT v.deleted) ORDER BY v.version DESC LIMIT 1"),
            &[&subject, &schema, &deleted],
        )
        .await
        .map_err(db)?
        .map(|r| row_version(&r))
        .ok_or(StoreError::SchemaNotFound)
    }

    async fn schema_by_id(&self, id: u32) -> Result<(String, String), StoreError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT schema_type, schema FROM sluice_schemas WHERE id = $1",
            &[&(id as i32)],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get(0), r.get(1)))
        .ok_or(StoreError::SchemaNotFound)
    }

    async fn id_versions(&self, id: u32) -> Result<Vec<(String, u32)>, StoreError> {
        let c = self.client().await?;
        let known = c
            .query_opt(
                "SELECT 1 FROM sluice_schemas WHERE id = $1",
                &[&(id as i32)],
            )
            .await
            .map_err(db)?;
        if known.is_none() {
            return Err(StoreError::SchemaNotFound);
        }
        let rows = c
            .query("SELECT subject, version FROM sluice_versions WHERE schema_id = $1 AND NOT deleted ORDER BY subject, version", &[&(id as i32)])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i32>(1) as u32))
            .collect())
    }

    async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        lock_subject(&tx, subject).await?;
        let all = all_versions(&tx, subject).await?;
        let out = super::subject_deletion(&all, subject, permanent)?;
        if permanent {
            tx.execute(
                "DELETE FROM sluice_versions WHERE subject = $1",
                &[&subject],
            )
            .await
            .map_err(db)?;
            tx.execute("DELETE FROM sluice_config WHERE subject = $1", &[&subject])
                .await
                .map_err(db)?;
        } else {
            tx.execute(
                "UPDATE sluice_versions SET deleted = TRUE WHERE subject = $1",
                &[&subject],
            )
            .await
            .map_err(db)?;
        }
        bump(&tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        lock_subject(&tx, subject).await?;
        let all = all_versions(&tx, subject).await?;
        let n = super::version_deletion(&all, subject, version, permanent)?;
        if permanent {
            tx.execute(
                "DELETE FROM sluice_versions WHERE subject = $1 AND version = $2",
                &[&subject, &(n as i32)],
            )
            .await
            .map_err(db)?;
        } else {
            tx.execute(
                "UPDATE sluice_versions SET deleted = TRUE WHERE subject = $1 AND version = $2",
                &[&subject, &(n as i32)],
            )
            .await
            .map_err(db)?;
        }
        bump(&tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    async fn config(&self, subject: Option<&str>) -> Result<Option<Level>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT compatibility FROM sluice_config WHERE subject = $1",
            &[&subject.unwrap_or(GLOBAL)],
        )
        .await
        .map_err(db)?
        .map(|r| level_of(r.get(0)))
        .transpose()
    }

    async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO sluice_config (subject, compatibility) VALUES ($1, $2) ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
            &[&subject.unwrap_or(GLOBAL), &level.as_str()],
        )
        .await
        .map_err(db)?;
        bump(&tx).await?;
        tx.commit().await.map_err(db)
    }

    async fn delete_config(&self, subject: &str) -> Result<Level, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db)?;
        let level = tx
            .query_opt(
                "DELETE FROM sluice_config WHERE subject = $1 RETURNING compatibility",
                &[&subject],
            )
            .await
            .map_err(db)?
            .map(|r| level_of(r.get(0)))
            .transpose()?
            .ok_or_else(|| StoreError::NoSubjectConfig(subject.into()))?;
        bump(&tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(level)
    }

    async fn live(&self) -> Result<Vec<SubjectVersion>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("{SELECT_VERSION} WHERE NOT v.deleted ORDER BY v.subject, v.version"),
                &[],
            )
            .await
            .map_err(db)?;
        Ok(rows.iter().map(row_version).collect())
    }

    async fn epoch(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        Ok(
            c.query_one("SELECT value FROM sluice_epoch WHERE id = 1", &[])
                .await
                .map_err(db)?
                .get(0),
        )
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}
