//! The embedded store: one SQLite file. Registry writes are rare and short, so calls run on
//! the caller's thread under one mutex; `BEGIN IMMEDIATE` serialises registration commits.
//! No compatibility check runs under the mutex (see [`super::register`]).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    fingerprint, level_of, Basis, Prepared, Registered, RegistryStore, StoreError, SubjectVersion,
    VersionRef, GLOBAL,
};
use crate::registry::compat::Level;

/// Applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE schemas (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    schema_type TEXT NOT NULL,
    schema      TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE
);
CREATE TABLE versions (
    subject   TEXT NOT NULL,
    version   INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas(id),
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
);
CREATE INDEX versions_by_schema ON versions(schema_id);
CREATE TABLE config (
    subject       TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
CREATE TABLE epoch (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO epoch VALUES (1, 0);
"#];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating folders and file) and migrates.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path).map_err(db)?;
        // WAL: readers do not block the writer; FULL sync: a registration is on disk when
        // it is acknowledged.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .map_err(db)?;
        let done: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = conn.transaction().map_err(db)?;
            tx.execute_batch(m).map_err(db)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("connection lock poisoned".into()))?;
        f(&mut conn)
    }
}

fn bump(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("UPDATE epoch SET value = value + 1 WHERE id = 1", [])
        .map_err(db)?;
    Ok(())
}

/// The live version of `subject` holding the schema with fingerprint `fp`.
fn existing(c: &Connection, subject: &str, fp: &str) -> Result<Option<Registered>, StoreError> {
    c.query_row(
        "SELECT s.id, v.version FROM versions v JOIN schemas s ON s.id = v.schema_id WHERE v.subject = ?1 AND s.fingerprint = ?2 AND v.deleted = 0 ORDER BY v.version DESC LIMIT 1",
        params![subject, fp],
        |r| {
            Ok(Registered {
                id: r.get(0)?,
                version: r.get(1)?,
                existed: true,
            })
        },
    )
    .optional()
    .map_err(db)
}

/// A subject's effective level and live (version, id) pairs, oldest first.
fn basis(c: &Connection, subject: &str) -> Result<(Level, Vec<(u32, u32)>), StoreError> {
    let level: Option<String> = c
        .query_row(
            "SELECT compatibility FROM config WHERE subject IN (?1, ?2) ORDER BY subject = ?2 LIMIT 1",
            params![subject, GLOBAL],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    let level = level
        .as_deref()
        .map(level_of)
        .transpose()?
        .unwrap_or(super::DEFAULT_LEVEL);
    let mut st = c
        .prepare_cached("SELECT version, schema_id FROM versions WHERE subject = ?1 AND deleted = 0 ORDER BY version")
        .map_err(db)?;
    let live = st
        .query_map([subject], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    Ok((level, live))
}

fn live_versions(
    c: &Connection,
    subject: &str,
    include_deleted: bool,
) -> Result<Vec<(u32, bool)>, StoreError> {
    let mut st = c
        .prepare_cached("SELECT version, deleted FROM versions WHERE subject = ?1 ORDER BY version")
        .map_err(db)?;
    let rows = st
        .query_map([subject], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, bool>(1)?))
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    Ok(rows
        .into_iter()
        .filter(|(_, d)| include_deleted || !d)
        .collect())
}

const SELECT_VERSION: &str = "SELECT v.subject, v.version, s.id, s.schema_type, s.schema, v.deleted FROM versions v JOIN schemas s ON s.id = v.schema_id";

fn row_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubjectVersion> {
    Ok(SubjectVersion {
        subject: r.get(0)?,
        version: r.get(1)?,
        id: r.get(2)?,
        schema_type: r.get(3)?,
        schema: r.get(4)?,
        deleted: r.get(5)?,
    })
}

/// Resolves a version against the subject's history.
fn pick(
    c: &Connection,
    subject: &str,
    v: VersionRef,
    include_deleted: bool,
) -> Result<u32, StoreError> {
    super::pick(
        &live_versions(c, subject, true)?,
        subject,
        v,
        include_deleted,
    )
}

#[async_trait::async_trait]
impl RegistryStore for SqliteStore {
    async fn prepare_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
    ) -> Result<Prepared, StoreError> {
        let fp = fingerprint(schema_type, schema);
        self.with(|c| {
            let tx = c.transaction().map_err(db)?;
            if let Some(r) = existing(&tx, subject, &fp)? {
                return Ok(Prepared::Existing(r));
            }
            let (level, live) = basis(&tx, subject)?;
            let schemas: Vec<String> = {
                let mut st = tx
                    .prepare("SELECT s.schema FROM versions v JOIN schemas s ON s.id = v.schema_id WHERE v.subject = ?1 AND v.deleted = 0 ORDER BY v.version")
                    .map_err(db)?;
                let rows = st.query_map([subject], |r| r.get(0)).map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            Ok(Prepared::Check(Basis { level, live, schemas }))
        })
    }

    async fn commit_registration(
        &self,
        subject: &str,
        schema_type: &str,
        schema: &str,
        b: &Basis,
    ) -> Result<Option<Registered>, StoreError> {
        let fp = fingerprint(schema_type, schema);
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            if let Some(r) = existing(&tx, subject, &fp)? {
                return Ok(Some(r));
            }
            if basis(&tx, subject)? != (b.level, b.live.clone()) {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO schemas (schema_type, schema, fingerprint) VALUES (?1, ?2, ?3) ON CONFLICT (fingerprint) DO NOTHING",
                params![schema_type, schema, fp],
            )
            .map_err(db)?;
            let id: u32 = tx
                .query_row("SELECT id FROM schemas WHERE fingerprint = ?1", [&fp], |r| r.get(0))
                .map_err(db)?;
            let version: u32 = tx
                .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE subject = ?1", [subject], |r| r.get(0))
                .map_err(db)?;
            tx.execute(
                "INSERT INTO versions (subject, version, schema_id) VALUES (?1, ?2, ?3)",
                params![subject, version, id],
            )
            .map_err(db)?;
            bump(&tx)?;
            tx.commit().map_err(db)?;
            Ok(Some(Registered { id, version, existed: false }))
        })
    }

    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let sql = if include_deleted {
                "SELECT DISTINCT subject FROM versions ORDER BY subject"
            } else {
                "SELECT DISTINCT subject FROM versions WHERE deleted = 0 ORDER BY subject"
            };
            let mut st = c.prepare(sql).map_err(db)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)
        })
    }

    async fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>, StoreError> {
        self.with(|c| super::listed(&live_versions(c, subject, true)?, subject, include_deleted))
    }

    async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        include_deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        self.with(|c| {
            let n = pick(c, subject, version, include_deleted)?;
            c.query_row(
                &format!("{SELECT_VERSION} WHERE v.subject = ?1 AND v.version = ?2"),
                params![subject, n],
                row_version,
            )
            .map_err(db)
        })
    }

    async fn lookup(
        &self,
        subject: &str,
        schema: &str,
        deleted: bool,
    ) -> Result<SubjectVersion, StoreError> {
        self.with(|c| {
            if live_versions(c, subject, deleted)?.is_empty() {
                return Err(StoreError::SubjectNotFound(subject.into()));
            }
            c.query_row(
                &format!("{SELECT_VERSION} WHERE v.subject = ?1 AND s.schema = ?2 AND (v.deleted = 0 OR ?3) ORDER BY v.version DESC LIMIT 1"),
                params![subject, schema, deleted],
                row_version,
            )
            .optional()
            .map_err(db)?
            .ok_or(StoreError::SchemaNotFound)
        })
    }

    async fn schema_by_id(&self, id: u32) -> Result<(String, String), StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT schema_type, schema FROM schemas WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?
            .ok_or(StoreError::SchemaNotFound)
        })
    }

    async fn id_versions(&self, id: u32) -> Result<Vec<(String, u32)>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT subject, version FROM versions WHERE schema_id = ?1 AND deleted = 0 ORDER BY subject, version")
                .map_err(db)?;
            let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
            let v: Vec<(String, u32)> = rows.collect::<Result<_, _>>().map_err(db)?;
            let known: bool = c.query_row("SELECT EXISTS (SELECT 1 FROM schemas WHERE id = ?1)", [id], |r| r.get(0)).map_err(db)?;
            if !known {
                return Err(StoreError::SchemaNotFound);
            }
            Ok(v)
        })
    }

    async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let all = live_versions(&tx, subject, true)?;
            let versions = super::subject_deletion(&all, subject, permanent)?;
            if permanent {
                tx.execute("DELETE FROM versions WHERE subject = ?1", [subject])
                    .map_err(db)?;
                tx.execute("DELETE FROM config WHERE subject = ?1", [subject])
                    .map_err(db)?;
            } else {
                tx.execute(
                    "UPDATE versions SET deleted = 1 WHERE subject = ?1",
                    [subject],
                )
                .map_err(db)?;
            }
            bump(&tx)?;
            tx.commit().map_err(db)?;
            Ok(versions)
        })
    }

    async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32, StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let all = live_versions(&tx, subject, true)?;
            let n = super::version_deletion(&all, subject, version, permanent)?;
            if permanent {
                tx.execute(
                    "DELETE FROM versions WHERE subject = ?1 AND version = ?2",
                    params![subject, n],
                )
                .map_err(db)?;
            } else {
                tx.execute(
                    "UPDATE versions SET deleted = 1 WHERE subject = ?1 AND version = ?2",
                    params![subject, n],
                )
                .map_err(db)?;
            }
            bump(&tx)?;
            tx.commit().map_err(db)?;
            Ok(n)
        })
    }

    async fn config(&self, subject: Option<&str>) -> Result<Option<Level>, StoreError> {
        self.with(|c| {
            let v: Option<String> = c
                .query_row(
                    "SELECT compatibility FROM config WHERE subject = ?1",
                    [subject.unwrap_or(GLOBAL)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            v.as_deref().map(level_of).transpose()
        })
    }

    async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
            tx.execute(
                "INSERT INTO config (subject, compatibility) VALUES (?1, ?2) ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
                params![subject.unwrap_or(GLOBAL), level.as_str()],
            )
            .map_err(db)?;
            bump(&tx)?;
            tx.commit().map_err(db)
        })
    }

    async fn delete_config(&self, subject: &str) -> Result<Level, StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let v: Option<String> = tx
                .query_row(
                    "DELETE FROM config WHERE subject = ?1 RETURNING compatibility",
                    [subject],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let level = v
                .as_deref()
                .map(level_of)
                .transpose()?
                .ok_or_else(|| StoreError::NoSubjectConfig(subject.into()))?;
            bump(&tx)?;
            tx.commit().map_err(db)?;
            Ok(level)
        })
    }

    async fn live(&self) -> Result<Vec<SubjectVersion>, StoreError> {
        self.with(|c| {
            let mut st = c
                .prepare(&format!(
                    "{SELECT_VERSION} WHERE v.deleted = 0 ORDER BY v.subject, v.version"
                ))
                .map_err(db)?;
            let rows = st.query_map([], row_version).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)
        })
    }

    async fn epoch(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT value FROM epoch WHERE id = 1", [], |r| r.get(0))
                .map_err(db)
        })
    }
}
