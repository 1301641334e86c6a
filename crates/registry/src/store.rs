//! [`Registry`]: the [`Catalog`] in memory, made durable in SQLite.
//!
//! Reads are served from memory only. Writes are serialised by one async
//! mutex: the writer decides against the catalog, commits the resulting
//! [`Change`]s to SQLite in one transaction, and only then applies them to
//! memory. Serialising writes is what keeps two concurrent registrations of
//! a new schema from being handed two ids; committing before applying is
//! what keeps an id a client has seen from vanishing after a crash.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

use crate::catalog::{Catalog, Change, SubjectVersion};
use crate::error::{Error, Result};
use crate::schema::{AvroSchema, CompatibilityLevel, SchemaId, VersionSpec};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "registry.db";

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS schemas (
    id     INTEGER PRIMARY KEY,
    schema TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    subject   TEXT NOT NULL,
    version   INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas (id),
    deleted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
);
CREATE TABLE IF NOT EXISTS global_config (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    level     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subject_config (
    subject TEXT PRIMARY KEY,
    level   TEXT NOT NULL
);
";

/// A handle to the registry; cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: RwLock<Catalog>,
    // Holding this lock is the right to write; the pool is only used by
    // writers once the catalog has been loaded.
    db: Mutex<SqlitePool>,
}

impl Registry {
    /// Opens (creating if needed) `data_dir/registry.db` and loads it.
    pub async fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let data_dir = data_dir.as_ref();
        tokio::fs::create_dir_all(data_dir).await?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA_SQL).execute(&pool).await?;
        let catalog = load(&pool).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                catalog: RwLock::new(catalog),
                db: Mutex::new(pool),
            }),
        })
    }

    /// Waits for pending writes and closes the database.
    pub async fn close(&self) {
        self.inner.db.lock().await.close().await;
    }

    fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        // Catalog::apply cannot leave a half-applied change behind, so a
        // panic elsewhere while the lock was held does not taint the data.
        self.inner
            .catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `decide` under the write lock, persists its changes, applies
    /// them and returns its answer.
    async fn write<T>(
        &self,
        decide: impl FnOnce(&Catalog) -> Result<(T, Vec<Change>)>,
    ) -> Result<T> {
        let db = self.inner.db.lock().await;
        let (answer, changes) = decide(&self.read())?;
        if !changes.is_empty() {
            persist(&db, &changes).await?;
            let mut catalog = self
                .inner
                .catalog
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            changes.into_iter().for_each(|c| catalog.apply(c));
        }
        Ok(answer)
    }

    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.read().subjects(include_deleted)
    }

    pub fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>> {
        self.read().versions(subject, include_deleted)
    }

    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        self.read().version(subject, spec, include_deleted)
    }

    pub fn schema(&self, id: SchemaId) -> Result<AvroSchema> {
        self.read().schema(id).cloned()
    }

    pub fn usages(&self, id: SchemaId, include_deleted: bool) -> Result<Vec<(String, u32)>> {
        self.read().usages(id, include_deleted)
    }

    pub fn lookup(
        &self,
        subject: &str,
        schema: &AvroSchema,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        self.read().lookup(subject, schema, include_deleted)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns
    /// its global id.
    pub async fn register(&self, subject: &str, schema: &AvroSchema) -> Result<SchemaId> {
        self.write(|c| c.register(subject, schema).map(|r| (r.id, r.changes)))
            .await
    }

    /// Compatibility messages for `schema` against `version` (or, when
    /// `None`, against what a registration would be checked against).
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        schema: &AvroSchema,
    ) -> Result<Vec<String>> {
        self.read().test_compatibility(subject, version, schema)
    }

    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        self.write(|c| c.delete_subject(subject, permanent)).await
    }

    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32> {
        self.write(|c| c.delete_version(subject, spec, permanent))
            .await
    }

    pub fn global_level(&self) -> CompatibilityLevel {
        self.read().global_level()
    }

    pub fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.read().subject_level(subject)
    }

    pub async fn set_global_level(&self, level: CompatibilityLevel) -> Result<()> {
        self.write(|_| Ok(((), vec![Change::SetGlobalLevel(level)])))
            .await
    }

    pub async fn set_subject_level(&self, subject: &str, level: CompatibilityLevel) -> Result<()> {
        let change = Change::SetSubjectLevel {
            subject: subject.to_owned(),
            level,
        };
        self.write(|_| Ok(((), vec![change]))).await
    }

    /// Removes a subject's own level; returns the level that applied before.
    pub async fn delete_subject_level(&self, subject: &str) -> Result<CompatibilityLevel> {
        self.write(|c| c.delete_subject_level(subject)).await
    }
}

async fn persist(pool: &SqlitePool, changes: &[Change]) -> Result<()> {
    let mut tx = pool.begin().await?;
    for change in changes {
        match change {
            Change::InsertSchema { id, schema } => {
                sqlx::query("INSERT INTO schemas (id, schema) VALUES (?, ?)")
                    .bind(id.0)
                    .bind(schema.text())
                    .execute(&mut *tx)
                    .await?;
            }
            Change::InsertVersion {
                subject,
                version,
                id,
            } => {
                sqlx::query("INSERT INTO versions (subject, version, schema_id) VALUES (?, ?, ?)")
                    .bind(subject)
                    .bind(version)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            Change::SoftDeleteVersions { subject, versions } => {
                for version in versions {
                    sqlx::query(
                        "UPDATE versions SET deleted = 1 WHERE subject = ? AND version = ?",
                    )
                    .bind(subject)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Change::HardDeleteVersions { subject, versions } => {
                for version in versions {
                    sqlx::query("DELETE FROM versions WHERE subject = ? AND version = ?")
                        .bind(subject)
                        .bind(version)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Change::SetGlobalLevel(level) => {
                sqlx::query(
                    "INSERT INTO global_config (singleton, level) VALUES (1, ?)
                     ON CONFLICT (singleton) DO UPDATE SET level = excluded.level",
                )
                .bind(level.as_str())
                .execute(&mut *tx)
                .await?;
            }
            Change::SetSubjectLevel { subject, level } => {
                sqlx::query(
                    "INSERT INTO subject_config (subject, level) VALUES (?, ?)
                     ON CONFLICT (subject) DO UPDATE SET level = excluded.level",
                )
                .bind(subject)
                .bind(level.as_str())
                .execute(&mut *tx)
                .await?;
            }
            Change::DeleteSubjectLevel { subject } => {
                sqlx::query("DELETE FROM subject_config WHERE subject = ?")
                    .bind(subject)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Rebuilds the catalog by replaying the database as changes, so loading
/// and live writes share one code path into memory.
async fn load(pool: &SqlitePool) -> Result<Catalog> {
    let mut catalog = Catalog::default();

    for row in sqlx::query("SELECT id, schema FROM schemas ORDER BY id")
        .fetch_all(pool)
        .await?
    {
        let id = SchemaId(row.try_get("id")?);
        let text: String = row.try_get("schema")?;
        // Re-parsing (rather than storing the identity key) means a change
        // to how identity is computed applies to old schemas too.
        let schema = AvroSchema::parse(&text)
            .map_err(|e| Error::CorruptStore(format!("schema {id}: {e}")))?;
        catalog.apply(Change::InsertSchema { id, schema });
    }

    for row in sqlx::query(
        "SELECT subject, version, schema_id, deleted FROM versions ORDER BY subject, version",
    )
    .fetch_all(pool)
    .await?
    {
        let subject: String = row.try_get("subject")?;
        let version: u32 = row.try_get("version")?;
        catalog.apply(Change::InsertVersion {
            subject: subject.clone(),
            version,
            id: SchemaId(row.try_get("schema_id")?),
        });
        if row.try_get::<bool, _>("deleted")? {
            catalog.apply(Change::SoftDeleteVersions {
                subject,
                versions: vec![version],
            });
        }
    }

    if let Some(row) = sqlx::query("SELECT level FROM global_config")
        .fetch_optional(pool)
        .await?
    {
        let level: String = row.try_get("level")?;
        catalog.apply(Change::SetGlobalLevel(parse_level(&level)?));
    }
    for row in sqlx::query("SELECT subject, level FROM subject_config")
        .fetch_all(pool)
        .await?
    {
        let level: String = row.try_get("level")?;
        catalog.apply(Change::SetSubjectLevel {
            subject: row.try_get("subject")?,
            level: parse_level(&level)?,
        });
    }
    Ok(catalog)
}

fn parse_level(level: &str) -> Result<CompatibilityLevel> {
    level
        .parse()
        .map_err(|e| Error::CorruptStore(format!("compatibility level: {e}")))
}
