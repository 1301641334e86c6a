//! The write side: one local transaction holding a service's state change,
//! the inbox record of the event that caused it and the events it emits.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use sqlx::{Any, AnyConnection, Transaction};

use crate::db::{now_ms, Backend, Db};
use crate::error::{Error, Result};

/// An event to publish, as the relay will hand it to the producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub topic: String,
    /// Kafka message key; per-key publish order is append (commit) order.
    pub key: String,
    /// The encoded record (e.g. Confluent-Avro bytes).
    pub payload: Vec<u8>,
    /// Kafka headers, in order (e.g. `traceparent`).
    pub headers: Vec<(String, String)>,
}

impl OutboxMessage {
    /// Upper bound of this message's size as a Kafka record; what
    /// [`UnitOfWork::append`] compares with the publisher's limit.
    pub fn record_size(&self) -> usize {
        record_size_bound(
            self.key.len(),
            self.payload.len(),
            self.headers.iter().map(|(k, v)| (k.len(), v.len())),
        )
    }
}

/// Bytes of framing librdkafka counts per v2 record before comparing with
/// `message.max.bytes`: length, attributes, timestamp delta, offset delta,
/// key length, value length, header count, each varint at its widest
/// (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`).
const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
/// A v2 record batch header (`RD_KAFKAP_MSGSET_V2_SIZE`). The broker checks
/// its `max.message.bytes` against whole batches, so a message alone in a
/// batch must fit with this added.
const BATCH_OVERHEAD: usize = 61;
/// Name length and value length varints of one header, at their widest for
/// anything under 32 GiB.
const HEADER_OVERHEAD: usize = 5 + 5;

/// Upper bound of the size of one Kafka record with a key of `key_len`
/// bytes, a value of `value_len` bytes and headers of the given (name,
/// value) lengths, as sent alone in a record batch: the number to compare
/// with `message.max.bytes` (producer) or `max.message.bytes` (topic). It
/// errs on the large side by a few bytes, never on the small side, so a
/// message that passes is one librdkafka and the broker accept.
pub fn record_size_bound(
    key_len: usize,
    value_len: usize,
    headers: impl IntoIterator<Item = (usize, usize)>,
) -> usize {
    let headers: usize = headers
        .into_iter()
        .map(|(k, v)| k.saturating_add(v).saturating_add(HEADER_OVERHEAD))
        .fold(0, usize::saturating_add);
    BATCH_OVERHEAD
        .saturating_add(RECORD_OVERHEAD)
        .saturating_add(key_len)
        .saturating_add(value_len)
        .saturating_add(headers)
}

/// Events per multi-row inbox insert (3 bind parameters for the first row,
/// one more per row: far below either backend's limit).
const INBOX_CHUNK: usize = 300;

/// Class id of the per-key append locks (two-int4 advisory key space, which
/// does not overlap the relay lease's bigint key space): "obox".
const APPEND_LOCK_CLASS: i32 = 0x6f62_6f78;

/// A transaction. Commit to apply everything; [`rollback`](Self::rollback)
/// or drop to apply nothing.
///
/// The usual consumer pattern:
/// ```no_run
/// # async fn handle(db: &choreo_outbox::Db, event_id: &str) -> choreo_outbox::Result<()> {
/// let mut uow = db.begin().await?;
/// if !uow.record_inbox("inventory", event_id).await? {
///     return uow.rollback().await; // a redelivery: already applied
/// }
/// // ... the service's own writes through uow.conn() ...
/// // uow.append(message).await?;
/// uow.commit().await // then commit the consumer offset
/// # }
/// ```
pub struct UnitOfWork<'c> {
    tx: Transaction<'c, Any>,
    db: Db,
    appended: usize,
    locked_keys: HashSet<String>,
    before_commit: Vec<(String, BeforeCommit)>,
}

/// Work that must finish before the transaction commits.
type BeforeCommit = Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>>;

impl fmt::Debug for UnitOfWork<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("backend", &self.db.backend())
            .field("appended", &self.appended)
            .finish_non_exhaustive()
    }
}

impl<'c> UnitOfWork<'c> {
    pub(crate) fn new(tx: Transaction<'c, Any>, db: Db) -> Self {
        Self {
            tx,
            db,
            appended: 0,
            locked_keys: HashSet::new(),
            before_commit: Vec::new(),
        }
    }

    /// Records that `consumer` has seen `event_id`. Returns `true` the first
    /// time, `false` for a duplicate, in which case the caller should roll
    /// back (or commit nothing else) and acknowledge the input.
    ///
    /// On PostgreSQL a concurrent unit of work recording the same id waits
    /// for this one to finish, then gets `false` (or `true` if this one
    /// rolled back), so a duplicate never slips through a race.
    pub async fn record_inbox(&mut self, consumer: &str, event_id: &str) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await
        .map_err(Error::sql("recording inbox entry"))?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// [`record_inbox`](Self::record_inbox) for many events in one
    /// statement per 300: returns the ids that were new, each once (an id
    /// listed twice is new at most once). One round trip instead of one per
    /// event is what a consumer applying a fetched batch needs.
    pub async fn record_inbox_many(
        &mut self,
        consumer: &str,
        event_ids: &[&str],
    ) -> Result<HashSet<String>> {
        let mut fresh = HashSet::with_capacity(event_ids.len());
        let now = now_ms();
        for chunk in event_ids.chunks(INBOX_CHUNK) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, $2)", i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO inbox (consumer, event_id, seen_at) VALUES {} \
                 ON CONFLICT DO NOTHING RETURNING event_id",
                rows.join(", ")
            );
            // Not persistent: the text varies with the batch size.
            let mut query = sqlx::query_scalar::<_, String>(&sql)
                .persistent(false)
                .bind(consumer)
                .bind(now);
            for id in chunk {
                query = query.bind(*id);
            }
            fresh.extend(
                query
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(Error::sql("recording inbox entries"))?,
            );
        }
        Ok(fresh)
    }

    /// Adds `msg` to the outbox; it is published after [`commit`](Self::commit).
    ///
    /// On PostgreSQL the first append for a key in this unit of work takes a
    /// transaction-scoped advisory lock on the key. `seq` values are handed
    /// out at INSERT but become visible at COMMIT, so without the lock two
    /// concurrent transactions for one key could commit in the opposite
    /// order of their seqs, and the relay could publish the later seq first.
    /// With it, per-key seq order is per-key commit order. (SQLite has one
    /// connection, so transactions never overlap.)
    ///
    /// A message larger than the publisher can ever send
    /// ([`Db::max_message_bytes`], compared with
    /// [`OutboxMessage::record_size`]) is refused with
    /// [`Error::MessageTooLarge`], a permanent error: once committed it could
    /// only be dead-lettered by the relay, and the state change that caused
    /// it would have happened without its event.
    pub async fn append(&mut self, msg: OutboxMessage) -> Result<()> {
        let size = msg.record_size();
        let limit = self.db.max_message_bytes();
        if size > limit {
            return Err(Error::MessageTooLarge {
                topic: msg.topic,
                key: msg.key,
                size,
                limit,
            });
        }
        if self.db.backend() == Backend::Postgres && !self.locked_keys.contains(&msg.key) {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(APPEND_LOCK_CLASS)
                .bind(&msg.key)
                .execute(&mut *self.tx)
                .await
                .map_err(Error::sql("locking outbox key"))?;
            self.locked_keys.insert(msg.key.clone());
        }
        let headers = serde_json::to_string(&msg.headers).map_err(Error::EncodeHeaders)?;
        sqlx::query(
            "INSERT INTO outbox (topic, key, payload, headers, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(msg.topic)
        .bind(msg.key)
        .bind(msg.payload)
        .bind(headers)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await
        .map_err(Error::sql("appending to the outbox"))?;
        self.appended += 1;
        Ok(())
    }

    /// The transaction's connection, for the service's own reads and writes.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Number of messages appended so far.
    pub fn appended(&self) -> usize {
        self.appended
    }

    /// Commits, then wakes the relay if anything was appended.
    /// Registers work that must be done before this unit commits, once per
    /// `key` however often it is registered: e.g. making files durable that
    /// the transaction's rows speak of, with one flush for a whole batch
    /// instead of one per message. [`commit`](Self::commit) runs the work in
    /// registration order; if any fails, the transaction is rolled back and
    /// commit returns [`Error::BeforeCommit`] (retryable).
    pub fn before_commit<F>(&mut self, key: &str, work: F)
    where
        F: Future<Output = std::result::Result<(), String>> + Send + 'static,
    {
        if self.before_commit.iter().all(|(k, _)| k != key) {
            self.before_commit.push((key.to_owned(), Box::pin(work)));
        }
    }

    pub async fn commit(mut self) -> Result<()> {
        for (what, work) in std::mem::take(&mut self.before_commit) {
            if let Err(reason) = work.await {
                if let Err(e) = self.tx.rollback().await {
                    tracing::warn!(error = %e, "rollback after failed before-commit work");
                }
                return Err(Error::BeforeCommit { what, reason });
            }
        }
        self.tx
            .commit()
            .await
            .map_err(Error::sql("committing a unit of work"))?;
        if self.appended > 0 {
            self.db.notify_relay();
        }
        Ok(())
    }

    /// Discards everything done in this unit of work. Dropping it does the
    /// same; this form reports errors.
    pub async fn rollback(self) -> Result<()> {
        self.tx
            .rollback()
            .await
            .map_err(Error::sql("rolling back a unit of work"))
    }
}
