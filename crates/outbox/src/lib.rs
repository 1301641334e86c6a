//! Transactional outbox and idempotent inbox storage for choreo services, on
//! SQLite or PostgreSQL through one code path (sqlx's `Any` driver).
//!
//! # What this crate owns
//!
//! The two storage halves of the service guarantees in `DESIGN.md`:
//!
//! - **Inbox**: [`UnitOfWork::record_inbox`] inserts `(consumer, event_id)`
//!   in the same transaction as the effects of handling that event. A
//!   redelivered event finds its row and the caller rolls back, so it has
//!   no second effect.
//! - **Outbox**: [`UnitOfWork::append`] writes the events a state change
//!   causes in the same transaction as the change. Nothing reaches Kafka
//!   that was not committed, and nothing committed is lost: a relay (in the
//!   messaging crate, not here) reads [`Db::next_batch`], publishes with an
//!   idempotent producer and calls [`RelayBatch::mark_published`]. A crash
//!   between publish and mark republishes; consumers' inboxes absorb that.
//!
//! A row Kafka can never take (too large, invalid, for a topic that does
//! not exist) must not hold back the rows behind it: the relay copies it to
//! its dead-letter path and calls [`RelayBatch::settle`] with it as
//! [`SetAside`]; the row leaves the queue with its reason recorded
//! ([`Db::dead_rows`]). And a message too large to ever publish is refused
//! at [`UnitOfWork::append`] ([`Error::MessageTooLarge`],
//! [`Db::max_message_bytes`]), so it is never written at all.
//!
//! Plus the tables' lifecycle: migrations ([`Db::migrate`] also runs a
//! service's own migrator the same way), backlog for metrics
//! ([`Db::outbox_backlog`]) and retention ([`Db::purge`]). No Kafka and no
//! business logic live here.
//!
//! # Design decisions
//!
//! **One SQLite connection.** SQLite allows one writer per file. With a
//! pool of several connections, two transactions that both read and then
//! write race for the lock, and one fails with `SQLITE_BUSY` — or waits out
//! the busy timeout — in ways that depend on timing. With `max_connections
//! = 1` transactions queue in the pool instead, in order, and never fail on
//! each other. The price is that a caller must not hold two connections at
//! once (e.g. call [`Db::outbox_backlog`] while holding a [`UnitOfWork`]):
//! that waits for itself until the acquire timeout. Every connection gets
//! WAL, `synchronous=NORMAL`, `busy_timeout=5000` and `foreign_keys=ON`.
//!
//! **A relay lease on PostgreSQL, not `SKIP LOCKED`.** Several replicas of a
//! service share one database and each runs a relay. With `FOR UPDATE SKIP
//! LOCKED` two relays would take disjoint batches and publish them
//! concurrently, so a later event for an order could reach Kafka before an
//! earlier one. Instead [`Db::next_batch`] takes
//! `pg_try_advisory_xact_lock(<constant>)` in the transaction that reads the
//! batch and keeps it until the batch is marked: one relay publishes at a
//! time, strictly in `seq` order; the others get empty batches and stand
//! by. A relay that dies loses its connection and so its lease.
//!
//! **Per-key order on PostgreSQL.** `seq` is allocated at INSERT but visible
//! at COMMIT, so concurrent transactions can become visible out of `seq`
//! order. [`UnitOfWork::append`] therefore takes a transaction-scoped lock
//! on the message key: transactions appending for one key are serialised,
//! and within a key `seq` order is commit order, which is the order the
//! relay publishes in.
//!
//! **Portable types only.** `Any` maps basic types: times are `BIGINT`
//! epoch milliseconds, payloads `BLOB`/`BYTEA`, headers JSON text.
//!
//! **Migrations share one table.** This crate's migrations use versions
//! 1–99 and services use 100 and up, all recorded in `_sqlx_migrations`;
//! every migrator runs with `ignore_missing` so it tolerates the others.
//!
//! # Layout
//!
//! - [`db`](Db): connecting, migrations, relay read, backlog, retention.
//! - [`UnitOfWork`]: the write-side transaction (inbox + outbox + `conn()`).
//! - [`RelayBatch`]: rows to publish, marking them published or set aside.
//! - [`Error`]: one error type, classified by [`Error::is_retryable`];
//!   also the error of every service's own storage module (a row that
//!   cannot be read back, a compare-and-set that lost, rows that disagree).
//! - `testing` (feature `testing`): fresh PostgreSQL databases and SQLite
//!   URLs for tests in this and other crates.

mod db;
mod error;
mod relay;
pub mod rows;
mod uow;

#[cfg(feature = "testing")]
pub mod testing;

pub use db::{Backend, Db, DbOptions, DeadRow, Locking, DEFAULT_MAX_MESSAGE_BYTES};
pub use error::{is_retryable_sqlx, Error, Result};
pub use relay::{OutboxRow, RelayBatch, SetAside};
pub use rows::{change_one, changed_one, Table};
pub use uow::{record_size_bound, OutboxMessage, UnitOfWork};

/// Services write their own state with sqlx in the same transaction; the
/// re-export keeps their sqlx version in lockstep with ours.
pub use sqlx;

/// Defines a service's `pub fn migrator(backend: Backend) -> &'static
/// Migrator` over its `migrations/sqlite` and `migrations/postgres`
/// folders (versions 100 and up; this crate's own are 1–99). The calling
/// crate depends on `sqlx`, whose `migrate!` reads the folders at compile
/// time relative to the caller's manifest.
#[macro_export]
macro_rules! service_migrations {
    () => {
        /// The service's own migrations for `backend` (versions 100 and up).
        pub fn migrator(backend: $crate::Backend) -> &'static ::sqlx::migrate::Migrator {
            static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/sqlite");
            static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/postgres");
            match backend {
                $crate::Backend::Sqlite => &SQLITE,
                $crate::Backend::Postgres => &POSTGRES,
            }
        }
    };
}
