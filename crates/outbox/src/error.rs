//! The crate's one error type and its retry classification: for the
//! outbox and inbox, and for a service's own tables (a service's storage
//! module uses it as its error, so every storage error of the workspace is
//! classified by one rule, over the bus and over HTTP alike).
//!
//! The messaging runtime decides between *retry in place* (the partition
//! waits, nothing is skipped) and *dead-letter* (the partition moves on) from
//! [`Error::is_retryable`]. The rule applied here: an error is retryable when
//! the environment caused it (lock contention, a lost connection, a server
//! shutting down, a full pool or disk) and a later attempt of the very same
//! work can succeed; it is permanent when the work itself is wrong (a
//! constraint violation, bad SQL, a value that does not decode). When in
//! doubt about an *infrastructure* condition we say retryable: dead-lettering
//! a good message loses a saga step, while retrying a bad one only delays a
//! partition until an operator looks.

use std::fmt;
use std::path::PathBuf;

use sqlx::migrate::MigrateError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// Result with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in outbox/inbox storage, and in a
/// service's storage of its own rows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database operation failed; `context` says which. Retryable as
    /// [`is_retryable_sqlx`] says.
    #[error("{context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A stored row this code cannot read back: a column NULL that must
    /// not be, a value that does not parse. Permanent: a retry reads the
    /// same row.
    #[error("unreadable {table} row {key}: {problem}")]
    Corrupt {
        table: &'static str,
        key: String,
        problem: String,
    },

    /// Another transaction changed the row between this one's read and its
    /// write (a compare-and-set changed nothing). Retryable: the next
    /// attempt reads what the other one wrote.
    #[error("concurrent update: {table} row {key} changed while {doing}")]
    Conflict {
        table: &'static str,
        key: String,
        doing: String,
    },

    /// Rows that no longer fit what a write expects of them (an account
    /// gone or in another currency when a refund comes), or a change no
    /// state allows. Permanent: only a person can reconcile them.
    #[error("inconsistent {table} row {key}: {problem}")]
    Inconsistent {
        table: &'static str,
        key: String,
        problem: String,
    },

    /// Running a migrator failed.
    #[error("database migration failed: {0}")]
    Migrate(#[source] MigrateError),

    /// The database URL is not one this crate understands. The URL itself
    /// is not included: it may carry credentials.
    #[error("unsupported database url: {reason}")]
    InvalidUrl { reason: String },

    /// The folder for a SQLite database file could not be created.
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Work registered with
    /// [`UnitOfWork::before_commit`](crate::UnitOfWork::before_commit)
    /// failed, so the transaction was rolled back instead of committed.
    #[error("before commit ({what}): {reason}")]
    BeforeCommit { what: String, reason: String },

    /// A message too large for the publisher to ever send
    /// ([`Db::max_message_bytes`](crate::Db::max_message_bytes)): rejected at
    /// append so it never enters the outbox, where it would be dead weight.
    /// Permanent: the same message is just as large next time.
    #[error(
        "message for {topic} (key {key}) is {size} bytes as a Kafka record, over the \
         {limit}-byte limit (message.max.bytes)"
    )]
    MessageTooLarge {
        topic: String,
        key: String,
        size: usize,
        limit: usize,
    },

    /// An outbox message's headers could not be stored as JSON.
    #[error("outbox message headers do not serialize")]
    EncodeHeaders(#[source] serde_json::Error),

    /// An outbox row's headers column is not the JSON this crate writes.
    #[error("outbox row {seq} has malformed headers")]
    Headers {
        seq: i64,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// For `map_err`: a failed database operation, `context` saying which
    /// (`reading a shipment`).
    pub fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |source| Error::Sql { context, source }
    }

    /// For reading a row back: the row of `table` keyed `key` is
    /// [`Error::Corrupt`], for the problem the returned function is given.
    pub fn corrupt(table: &'static str, key: impl fmt::Display) -> impl Fn(String) -> Error {
        let key = key.to_string();
        move |problem| Error::Corrupt {
            table,
            key: key.clone(),
            problem,
        }
    }

    /// True when the same operation may succeed if retried later (database
    /// busy or locked, pool exhausted, connection lost, serialization
    /// failure, deadlock, server shutting down); false when retrying cannot
    /// help (constraint violation, bad SQL, undecodable data, bad config).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Sql { source, .. } => is_retryable_sqlx(source),
            Error::Migrate(e) => is_retryable_migrate(e),
            // Durability work (an fsync, say) failing is the environment.
            Error::CreateDir { .. } | Error::BeforeCommit { .. } => true,
            Error::Conflict { .. } => true,
            Error::Corrupt { .. }
            | Error::Inconsistent { .. }
            | Error::InvalidUrl { .. }
            | Error::Headers { .. }
            | Error::MessageTooLarge { .. }
            | Error::EncodeHeaders(_) => false,
        }
    }
}

/// Lets services use `?` on their own sqlx calls made through
/// [`UnitOfWork::conn`](crate::UnitOfWork::conn) and keep one error type.
impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        Error::Sql {
            context: "database operation",
            source,
        }
    }
}

impl From<MigrateError> for Error {
    fn from(e: MigrateError) -> Self {
        Error::Migrate(e)
    }
}

/// The classification behind [`Error::is_retryable`], for callers holding a
/// bare `sqlx::Error` (a service's own storage code).
pub fn is_retryable_sqlx(err: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match err {
        E::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                pg_sqlstate_is_retryable(pg.code())
            } else if db.try_downcast_ref::<SqliteError>().is_some() {
                db.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(sqlite_code_is_retryable)
            } else {
                false
            }
        }
        // Lost or unusable connection, or nothing to run on right now.
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::WorkerCrashed
        | E::BeginFailed => true,
        // Shutting down: the message must be redelivered, never dead-lettered.
        E::PoolClosed => true,
        E::Migrate(e) => is_retryable_migrate(e),
        // Configuration, decoding, missing rows/columns, type mapping, bad
        // savepoint use: the same call fails the same way next time.
        _ => false,
    }
}

fn is_retryable_migrate(err: &MigrateError) -> bool {
    match err {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => is_retryable_sqlx(e),
        _ => false,
    }
}

/// PostgreSQL SQLSTATE codes worth retrying.
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
pub(crate) fn pg_sqlstate_is_retryable(code: &str) -> bool {
    matches!(
        code,
        // transaction rollback: serialization failure, statement completion
        // unknown, deadlock detected
        "40001" | "40003" | "40P01"
        // lock_not_available (lock_timeout / NOWAIT)
        | "55P03"
        // query_canceled (statement_timeout), admin/crash shutdown,
        // cannot_connect_now (server starting up)
        | "57014" | "57P01" | "57P02" | "57P03"
        // read_only_sql_transaction: connected to a standby during failover
        | "25006"
    ) || code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: disk full, out of memory, too many connections
        || code.starts_with("58") // system error: I/O error
}

/// SQLite (extended) result codes worth retrying.
/// <https://www.sqlite.org/rescode.html>
pub(crate) fn sqlite_code_is_retryable(code: i32) -> bool {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const NOMEM: i32 = 7;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    const PROTOCOL: i32 = 15;
    // READONLY_RECOVERY / READONLY_CANTLOCK: WAL recovery in progress or
    // the shared-memory lock is briefly unavailable.
    const READONLY_RECOVERY: i32 = 8 | (1 << 8);
    const READONLY_CANTLOCK: i32 = 8 | (2 << 8);

    matches!(
        code & 0xff,
        BUSY | LOCKED | NOMEM | IOERR | FULL | CANTOPEN | PROTOCOL
    ) || matches!(code, READONLY_RECOVERY | READONLY_CANTLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_sqlstates() {
        for code in [
            "40001", "40P01", "40003", "55P03", "57014", "57P01", "57P02", "57P03", "08000",
            "08006", "08003", "08P01", "53300", "53100", "58030", "25006",
        ] {
            assert!(pg_sqlstate_is_retryable(code), "{code} should be retryable");
        }
        for code in [
            "23505", // unique_violation
            "23503", // foreign_key_violation
            "23502", // not_null_violation
            "42601", // syntax_error
            "42P01", // undefined_table
            "22P02", // invalid_text_representation
            "XX000", // internal_error
            "40002", // integrity_constraint_violation (transaction rollback class)
        ] {
            assert!(
                !pg_sqlstate_is_retryable(code),
                "{code} should be permanent"
            );
        }
    }

    #[test]
    fn sqlite_codes() {
        for code in [
            5,            // BUSY
            5 | (2 << 8), // BUSY_SNAPSHOT
            5 | (1 << 8), // BUSY_RECOVERY
            6,            // LOCKED
            6 | (1 << 8), // LOCKED_SHAREDCACHE
            10,           // IOERR
            10 | (3 << 8),
            13, // FULL
            264,
        ] {
            assert!(sqlite_code_is_retryable(code), "{code} should be retryable");
        }
        for code in [
            1,             // ERROR (bad SQL)
            19,            // CONSTRAINT
            19 | (8 << 8), // CONSTRAINT_UNIQUE (2067)
            19 | (6 << 8), // CONSTRAINT_PRIMARYKEY
            20,            // MISMATCH
            11,            // CORRUPT
            8,             // READONLY
        ] {
            assert!(
                !sqlite_code_is_retryable(code),
                "{code} should be permanent"
            );
        }
    }

    #[test]
    fn non_database_sqlx_errors() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_retryable_sqlx(&io));
        assert!(is_retryable_sqlx(&sqlx::Error::PoolTimedOut));
        assert!(is_retryable_sqlx(&sqlx::Error::PoolClosed));
        assert!(is_retryable_sqlx(&sqlx::Error::WorkerCrashed));
        assert!(is_retryable_sqlx(&sqlx::Error::Protocol("eof".into())));

        assert!(!is_retryable_sqlx(&sqlx::Error::RowNotFound));
        assert!(!is_retryable_sqlx(&sqlx::Error::ColumnNotFound("x".into())));
        assert!(!is_retryable_sqlx(&sqlx::Error::Decode("bad".into())));
        assert!(!is_retryable_sqlx(&sqlx::Error::Configuration(
            "bad".into()
        )));

        let migrate = Error::Migrate(MigrateError::Execute(sqlx::Error::PoolTimedOut));
        assert!(migrate.is_retryable());
        assert!(!Error::Migrate(MigrateError::VersionMissing(3)).is_retryable());
        assert!(!Error::InvalidUrl { reason: "x".into() }.is_retryable());
        assert!(Error::from(sqlx::Error::PoolTimedOut).is_retryable());
        let too_large = Error::MessageTooLarge {
            topic: "orders".into(),
            key: "k".into(),
            size: 2_000_000,
            limit: 1_000_000,
        };
        assert!(
            !too_large.is_retryable(),
            "a too-large message stays too large"
        );
        assert!(too_large.to_string().contains("2000000 bytes"));
    }

    #[test]
    fn a_service_row_is_retried_only_after_a_conflict() {
        let conflict = Error::Conflict {
            table: "accounts",
            key: "alice".into(),
            doing: "debiting 500 EUR".into(),
        };
        assert!(conflict.is_retryable());
        assert_eq!(
            conflict.to_string(),
            "concurrent update: accounts row alice changed while debiting 500 EUR"
        );
        let corrupt = Error::corrupt("shipments", "o-1")("amount_minor is NULL".into());
        assert!(!corrupt.is_retryable());
        assert_eq!(
            corrupt.to_string(),
            "unreadable shipments row o-1: amount_minor is NULL"
        );
        let inconsistent = Error::Inconsistent {
            table: "accounts",
            key: "alice".into(),
            problem: "gone".into(),
        };
        assert!(!inconsistent.is_retryable());
        assert_eq!(
            inconsistent.to_string(),
            "inconsistent accounts row alice: gone"
        );
        let busy = Error::sql("reading a shipment")(sqlx::Error::PoolTimedOut);
        assert!(busy.is_retryable());
        assert!(
            busy.to_string().starts_with("reading a shipment: "),
            "{busy}"
        );
    }
}
