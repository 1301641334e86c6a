//! The database handle: connecting (one pool per backend, configured for it),
//! migrations, and the relay/metrics/retention queries.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Row};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::relay::{OutboxRow, RelayBatch};
use crate::uow::UnitOfWork;

/// Which database a [`Db`] talks to. The SQL is the same for both; the
/// differences are in pool shape, transaction start and the relay lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Whether a read inside a saga step locks the rows it reads: the one
/// place the backends differ for the services' own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// `SELECT … FOR UPDATE`: PostgreSQL, where replicas share the database
    /// and steps for one order arrive on several topics, possibly at once.
    RowLocks,
    /// SQLite: its single connection already serialises every transaction
    /// (and it has no `FOR UPDATE`).
    None,
}

impl Locking {
    pub fn for_backend(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Locking::RowLocks,
            Backend::Sqlite => Locking::None,
        }
    }

    /// What to append to a `SELECT`: `" FOR UPDATE"` or nothing.
    pub fn clause(self) -> &'static str {
        match self {
            Locking::RowLocks => " FOR UPDATE",
            Locking::None => "",
        }
    }
}

impl From<Backend> for Locking {
    fn from(backend: Backend) -> Self {
        Locking::for_backend(backend)
    }
}

/// Pool settings for [`Db::connect_with`].
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// PostgreSQL pool size. SQLite ignores it and always uses one
    /// connection (see the crate docs).
    pub max_connections: u32,
    /// How long to wait for a free connection before failing with a
    /// retryable error.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// PRAGMAs applied to every SQLite connection. WAL lets readers outside
/// this process (the CLI, `sqlite3`) work while we write; NORMAL is durable
/// in WAL mode except for the last transactions on power loss, which is what
/// the outbox tolerates anyway (the consumer offset is not committed yet, so
/// the input is redelivered and deduplicated by the inbox).
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
];

/// Key of the PostgreSQL advisory lock that makes one relay at a time the
/// publisher (single-bigint key space; ASCII "choreoob").
const RELAY_LEASE_KEY: i64 = 0x6368_6f72_656f_6f62;

/// librdkafka's default `message.max.bytes`: the limit appends are checked
/// against until the relay, which knows its producer's configuration, sets
/// the real one with [`Db::set_max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// A row the relay set aside instead of publishing (see
/// [`RelayBatch::settle`](crate::RelayBatch::settle)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRow {
    pub seq: i64,
    pub topic: String,
    pub key: String,
    /// Length of the stored payload, which is kept in full.
    pub payload_len: usize,
    pub reason: String,
    /// Where the dead-letter copy went (`dlq.<service>/<partition>/<offset>`);
    /// `None` when no copy could be produced and this row is the only
    /// record of the event.
    pub dead_letter: Option<String>,
    pub created_at_ms: i64,
    pub set_aside_at_ms: i64,
}

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// A handle on one service's database. Cheap to clone; clones share the pool
/// and the relay signal.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    signal: Arc<Notify>,
    /// Shared by clones: the relay sets it on its clone, every unit of work
    /// of the service checks against it.
    max_message_bytes: Arc<AtomicUsize>,
}

impl Db {
    /// Connects with [`DbOptions::default`] and runs this crate's migrations.
    ///
    /// `url` is `sqlite://path/to/file.db` (file and parent folders are
    /// created when missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Db> {
        Self::connect_with(url, DbOptions::default()).await
    }

    /// Connects with explicit pool options and runs this crate's migrations.
    pub async fn connect_with(url: &str, opts: DbOptions) -> Result<Db> {
        // Idempotent; panics only if someone installed a different driver
        // set first, which this workspace does not do.
        sqlx::any::install_default_drivers();

        let backend = backend_of(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                let url = prepare_sqlite_url(url)?;
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(opts.acquire_timeout)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                conn.execute(*pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(opts.max_connections.max(1))
                    .acquire_timeout(opts.acquire_timeout)
                    .connect(url)
                    .await
            }
        }
        .map_err(Error::sql("connecting to the database"))?;

        let db = Db {
            pool,
            backend,
            signal: Arc::new(Notify::new()),
            max_message_bytes: Arc::new(AtomicUsize::new(DEFAULT_MAX_MESSAGE_BYTES)),
        };
        let own = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        db.migrate(own).await?;
        tracing::debug!(?backend, "outbox database ready");
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The largest message (as [`OutboxMessage::record_size`]) that
    /// [`UnitOfWork::append`] accepts: the publisher's `message.max.bytes`.
    ///
    /// [`OutboxMessage::record_size`]: crate::OutboxMessage::record_size
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    /// Sets [`max_message_bytes`](Self::max_message_bytes) for this handle
    /// and all its clones. The relay calls it with its producer's limit, so
    /// what it could never publish is refused when it is appended.
    pub fn set_max_message_bytes(&self, limit: usize) {
        self.max_message_bytes.store(limit, Ordering::Relaxed);
    }

    /// Runs `migrator` on this database the way this crate runs its own:
    /// with `ignore_missing`, because several migrators (this crate's,
    /// versions 1–99, and the service's, 100 and up) share one
    /// `_sqlx_migrations` table and each must tolerate the others' rows.
    /// Version numbers must not collide across migrators.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<()> {
        let shared = Migrator {
            migrations: migrator.migrations.clone(),
            ignore_missing: true,
            locking: migrator.locking,
            no_tx: migrator.no_tx,
        };
        shared.run(&self.pool).await?;
        Ok(())
    }

    /// Starts a unit of work: one local transaction for the service's state
    /// change, its inbox record and its outbox rows.
    ///
    /// On SQLite this takes the single connection (`BEGIN IMMEDIATE`, so the
    /// write lock is taken up front rather than upgraded mid-transaction);
    /// do not call other `Db` methods while holding it.
    pub async fn begin(&self) -> Result<UnitOfWork<'static>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(Error::sql("beginning a unit of work"))?;
        Ok(UnitOfWork::new(tx, self.clone()))
    }

    /// The relay's wake-up call. [`UnitOfWork::commit`] calls `notify_one`
    /// after committing appended rows, so a commit that happens while the
    /// relay is busy is not lost: the next `notified().await` returns at
    /// once. Meant for one waiter (the relay) per `Db`.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.signal)
    }

    /// The relay's read: up to `limit` unpublished rows in `seq` order.
    ///
    /// PostgreSQL: the rows are read inside a transaction holding the relay
    /// lease (`pg_try_advisory_xact_lock`); the batch keeps that transaction
    /// until [`RelayBatch::mark_published`] commits or the batch is dropped.
    /// If another replica holds the lease the batch is empty.
    ///
    /// SQLite: a plain read; nothing is held while the caller publishes.
    pub async fn next_batch(&self, limit: i64) -> Result<RelayBatch> {
        match self.backend {
            Backend::Sqlite => {
                let rows = select_unpublished(&self.pool, limit).await?;
                Ok(RelayBatch::unleased(rows, self.pool.clone()))
            }
            Backend::Postgres => {
                // READ COMMITTED explicitly: the SELECT below must see what
                // the previous lease holder committed, which a REPEATABLE
                // READ snapshot taken before the lock might not.
                let mut tx = self
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map_err(Error::sql("beginning relay transaction"))?;
                let leased: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(RELAY_LEASE_KEY)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(Error::sql("taking the relay lease"))?;
                if !leased {
                    tx.rollback()
                        .await
                        .map_err(Error::sql("ending relay transaction"))?;
                    return Ok(RelayBatch::empty());
                }
                let rows = select_unpublished(&mut *tx, limit).await?;
                if rows.is_empty() {
                    // Give the lease back at once rather than when the
                    // caller gets round to dropping the batch.
                    tx.rollback()
                        .await
                        .map_err(Error::sql("ending relay transaction"))?;
                    return Ok(RelayBatch::empty());
                }
                Ok(RelayBatch::leased(rows, tx))
            }
        }
    }

    /// Number of unpublished outbox rows, for metrics.
    pub async fn outbox_backlog(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::sql("counting the outbox backlog"))
    }

    /// Rows the relay set aside instead of publishing, oldest first.
    pub async fn dead_rows(&self) -> Result<Vec<DeadRow>> {
        let rows = sqlx::query(
            "SELECT seq, topic, key, payload, dead_reason, dead_letter, created_at, published_at \
             FROM outbox WHERE dead_reason IS NOT NULL ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Error::sql("reading set-aside outbox rows"))?;
        rows.iter()
            .map(|row| {
                let decode = |source| Error::Sql {
                    context: "decoding a set-aside outbox row",
                    source,
                };
                let payload: Vec<u8> = row.try_get("payload").map_err(decode)?;
                Ok(DeadRow {
                    seq: row.try_get("seq").map_err(decode)?,
                    topic: row.try_get("topic").map_err(decode)?,
                    key: row.try_get("key").map_err(decode)?,
                    payload_len: payload.len(),
                    reason: row.try_get("dead_reason").map_err(decode)?,
                    dead_letter: row.try_get("dead_letter").map_err(decode)?,
                    created_at_ms: row.try_get("created_at").map_err(decode)?,
                    set_aside_at_ms: row.try_get("published_at").map_err(decode)?,
                })
            })
            .collect()
    }

    /// Retention: deletes published outbox rows published more than
    /// `published_older_than` ago and inbox rows seen more than
    /// `inbox_older_than` ago; returns `(outbox rows, inbox rows)` deleted.
    ///
    /// Unpublished rows are never deleted, nor set-aside rows whose
    /// dead-letter copy could not be produced: they are the only record of
    /// their event. The inbox window must be longer
    /// than any redelivery can be late (consumer lag plus retention of the
    /// input topics), or a late duplicate would be processed twice.
    pub async fn purge(
        &self,
        published_older_than: Duration,
        inbox_older_than: Duration,
    ) -> Result<(u64, u64)> {
        let now = now_ms();
        let outbox = sqlx::query(
            "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 \
                 AND (dead_reason IS NULL OR dead_letter IS NOT NULL)",
        )
        .bind(now.saturating_sub(millis(published_older_than)))
        .execute(&self.pool)
        .await
        .map_err(Error::sql("purging published outbox rows"))?
        .rows_affected();
        let inbox = sqlx::query("DELETE FROM inbox WHERE seen_at < $1")
            .bind(now.saturating_sub(millis(inbox_older_than)))
            .execute(&self.pool)
            .await
            .map_err(Error::sql("purging inbox rows"))?
            .rows_affected();
        if outbox > 0 || inbox > 0 {
            tracing::debug!(outbox, inbox, "purged old outbox/inbox rows");
        }
        Ok((outbox, inbox))
    }

    pub(crate) fn notify_relay(&self) {
        self.signal.notify_one();
    }
}

async fn select_unpublished<'e, E>(executor: E, limit: i64) -> Result<Vec<OutboxRow>>
where
    E: Executor<'e, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT seq, topic, key, payload, headers, created_at FROM outbox \
         WHERE published_at IS NULL ORDER BY seq LIMIT $1",
    )
    .bind(limit.max(0))
    .fetch_all(executor)
    .await
    .map_err(Error::sql("reading unpublished outbox rows"))?;
    rows.iter().map(decode_row).collect()
}

fn decode_row(row: &AnyRow) -> Result<OutboxRow> {
    let decode = |source| Error::Sql {
        context: "decoding outbox row",
        source,
    };
    let seq: i64 = row.try_get("seq").map_err(decode)?;
    let headers: String = row.try_get("headers").map_err(decode)?;
    Ok(OutboxRow {
        seq,
        topic: row.try_get("topic").map_err(decode)?,
        key: row.try_get("key").map_err(decode)?,
        payload: row.try_get("payload").map_err(decode)?,
        headers: serde_json::from_str(&headers).map_err(|source| Error::Headers { seq, source })?,
        created_at_ms: row.try_get("created_at").map_err(decode)?,
    })
}

pub(crate) fn now_ms() -> i64 {
    millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(Error::InvalidUrl {
            reason: format!("scheme {scheme:?} is neither sqlite nor postgres"),
        })
    }
}

/// Creates the database file's folder and asks SQLite to create the file
/// (`mode=rwc`) unless the URL chose a mode itself.
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || query.is_some_and(|q| q.contains("mode=memory")) {
        // With a pool, connections come and go; an in-memory database would
        // vanish with its connection.
        return Err(Error::InvalidUrl {
            reason: "in-memory SQLite is not supported; use a file".into(),
        });
    }
    let file = percent_decode(path);
    if let Some(parent) = Path::new(&file).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(match query {
        Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    })
}

/// `%XX` decoding, as sqlx applies to the SQLite path.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_from_urls() {
        assert_eq!(backend_of("sqlite://a/b.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("sqlite:b.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            backend_of("postgres://u:p@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(backend_of("postgresql://h/db").unwrap(), Backend::Postgres);
        let err = backend_of("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        assert!(!err.is_retryable());
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b c/x.db");
        let url = format!(
            "sqlite://{}",
            file.display().to_string().replace(' ', "%20")
        );
        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.path().join("a/b c").is_dir());

        let url = format!("sqlite://{}?cache=private", file.display());
        assert!(prepare_sqlite_url(&url)
            .unwrap()
            .ends_with("?cache=private&mode=rwc"));
        let url = format!("sqlite://{}?mode=ro", file.display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), url);

        assert!(prepare_sqlite_url("sqlite::memory:").is_err());
        assert!(prepare_sqlite_url("sqlite://?mode=memory").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%3Fc"), "a b?c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
