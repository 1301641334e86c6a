//! The read side for the relay: a batch of unpublished rows and the act of
//! marking them published, or set aside when Kafka can never take them.
// Rows come from the database, which other processes write: nothing here
// may panic on what they contain.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::fmt;

use sqlx::{Any, AnyConnection, AnyPool, Transaction};

use crate::db::now_ms;
use crate::error::{Error, Result};

/// One unpublished outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Global, monotonic; publish in this order.
    pub seq: i64,
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub created_at_ms: i64,
}

/// A row the relay could not publish and moved to its dead-letter path, so
/// that the rows behind it go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub seq: i64,
    /// Why Kafka refused it (and why it can never take it).
    pub reason: String,
    /// Where its copy went (`dlq.<service>/<partition>/<offset>`), or `None`
    /// when not even a copy could be produced.
    pub dead_letter: Option<String>,
}

/// Rows returned by [`Db::next_batch`](crate::Db::next_batch).
///
/// Publish [`rows`](Self::rows) in order, then call
/// [`mark_published`](Self::mark_published). If publishing fails, drop the
/// batch (or call [`release`](Self::release)): nothing is marked and the
/// same rows come back in the next batch. On PostgreSQL the batch holds the
/// relay lease until it is marked or dropped.
pub struct RelayBatch {
    rows: Vec<OutboxRow>,
    hold: Hold,
}

enum Hold {
    /// Nothing to publish, or another replica holds the lease.
    Nothing,
    /// SQLite: no transaction is held; marking opens a short one.
    Pool(AnyPool),
    /// PostgreSQL: the transaction holding the relay lease.
    Lease(Transaction<'static, Any>),
}

/// Seqs per UPDATE; well under both backends' bind-parameter limits.
const MARK_CHUNK: usize = 500;

impl fmt::Debug for RelayBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hold = match self.hold {
            Hold::Nothing => "nothing",
            Hold::Pool(_) => "pool",
            Hold::Lease(_) => "lease",
        };
        f.debug_struct("RelayBatch")
            .field("rows", &self.rows.len())
            .field("hold", &hold)
            .finish()
    }
}

impl RelayBatch {
    pub(crate) fn empty() -> Self {
        Self {
            rows: Vec::new(),
            hold: Hold::Nothing,
        }
    }

    pub(crate) fn unleased(rows: Vec<OutboxRow>, pool: AnyPool) -> Self {
        Self {
            rows,
            hold: Hold::Pool(pool),
        }
    }

    pub(crate) fn leased(rows: Vec<OutboxRow>, tx: Transaction<'static, Any>) -> Self {
        Self {
            rows,
            hold: Hold::Lease(tx),
        }
    }

    /// The rows to publish, in `seq` order.
    pub fn rows(&self) -> &[OutboxRow] {
        &self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Sets `published_at` on exactly these rows and commits (on PostgreSQL
    /// this also gives up the lease).
    pub async fn mark_published(self) -> Result<()> {
        let seqs: Vec<i64> = self.rows.iter().map(|r| r.seq).collect();
        self.settle(&seqs, &[]).await
    }

    /// Ends the batch with what happened to its rows: `published` were
    /// acknowledged by Kafka, `set_aside` were moved to the dead-letter path
    /// (both leave the queue: `published_at` is set; set-aside rows also get
    /// their reason and copy location). Rows of the batch in neither list
    /// stay unpublished and come back first in the next batch. One
    /// transaction; on PostgreSQL it also gives up the lease.
    pub async fn settle(self, published: &[i64], set_aside: &[SetAside]) -> Result<()> {
        if published.is_empty() && set_aside.is_empty() {
            return self.release().await;
        }
        let seqs = published;
        let (mut tx, leased) = match self.hold {
            Hold::Lease(tx) => (tx, true),
            Hold::Pool(pool) => (
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(Error::sql("beginning to mark published"))?,
                false,
            ),
            // Only an empty batch holds nothing, and it has nothing to mark.
            Hold::Nothing => return Ok(()),
        };
        let marked = mark(&mut tx, seqs).await?;
        for row in set_aside {
            sqlx::query(
                "UPDATE outbox SET published_at = $1, dead_reason = $2, dead_letter = $3 \
                 WHERE published_at IS NULL AND seq = $4",
            )
            .bind(now_ms())
            .bind(&row.reason)
            .bind(row.dead_letter.as_deref())
            .bind(row.seq)
            .execute(&mut *tx)
            .await
            .map_err(Error::sql("setting an outbox row aside"))?;
        }
        tx.commit()
            .await
            .map_err(Error::sql("committing published marks"))?;
        if marked != seqs.len() as u64 {
            // Under the lease this cannot happen; on SQLite it means two
            // relays ran on one file. Either way the rows went out at least
            // once, which the consumers' inboxes absorb.
            tracing::warn!(
                marked,
                expected = seqs.len(),
                leased,
                "outbox rows were already marked published by someone else"
            );
        }
        Ok(())
    }

    /// Gives the batch back unmarked (publishing failed); its rows will be
    /// returned again.
    pub async fn release(self) -> Result<()> {
        if let Hold::Lease(tx) = self.hold {
            tx.rollback()
                .await
                .map_err(Error::sql("releasing the relay lease"))?;
        }
        Ok(())
    }
}

/// Marks by explicit seq list, never by range: on PostgreSQL a lower seq can
/// commit after this batch was read and must stay unpublished.
async fn mark(conn: &mut AnyConnection, seqs: &[i64]) -> Result<u64> {
    let now = now_ms();
    let mut marked = 0;
    for chunk in seqs.chunks(MARK_CHUNK) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND seq IN ({})",
            placeholders.join(", ")
        );
        // Not persistent: the text varies with the batch size and would
        // crowd the per-connection statement cache.
        let mut query = sqlx::query(&sql).persistent(false).bind(now);
        for seq in chunk {
            query = query.bind(*seq);
        }
        marked += query
            .execute(&mut *conn)
            .await
            .map_err(Error::sql("marking outbox rows published"))?
            .rows_affected();
    }
    Ok(marked)
}
