//! The inventory tables (`stock`, `reservations`) through sqlx's `Any`
//! driver, on SQLite and PostgreSQL alike, plus the service's migrations
//! and the stock seed.
//!
//! Writes that happen inside a saga step take the unit of work's
//! connection, so they commit or roll back with its inbox and outbox rows.
//! Every stock write is conditional (`WHERE available >= q` …): a row that
//! changed under us shows up as "0 rows changed", never as negative stock.

use std::time::{SystemTime, UNIX_EPOCH};

use choreo_outbox::{changed_one, Table};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::domain::{Line, OrderId, Reservation, Sku, Status, StockLevels, StockMove};

choreo_outbox::service_migrations!();

/// The workspace's one storage error: a row that cannot be read back is
/// [`Error::Corrupt`] (permanent); a database failure is retried when
/// trying again may work — in place by the consumer, with 503 by the API.
pub use choreo_outbox::{Error, Result};

/// One row of `stock`, as the HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockRow {
    pub sku: String,
    pub available: i64,
    pub reserved: i64,
    pub committed: i64,
}

/// One entry of the seed file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    pub sku: Sku,
    pub available: i64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub use choreo_outbox::Locking;

const RESERVATIONS: Table = Table::new(
    "reservations",
    "order_id",
    "status, lines",
    "reading a reservation",
);

/// The order's reservation, locked for the rest of the transaction on
/// PostgreSQL so a concurrent step for the same order (from another topic,
/// on another replica) waits and then sees our result.
pub async fn load_reservation(
    conn: &mut AnyConnection,
    locking: Locking,
    order_id: &OrderId,
) -> Result<Reservation> {
    let Some(row) = RESERVATIONS.load(conn, locking, order_id.as_str()).await? else {
        return Ok(Reservation::Absent);
    };
    let corrupt = Error::corrupt("reservations", order_id);
    let status: String = row.try_get("status")?;
    let status: Status = status
        .parse()
        .map_err(|_| corrupt(format!("unknown reservation status `{status}`")))?;
    let lines: String = row.try_get("lines")?;
    let lines: Vec<Line> =
        serde_json::from_str(&lines).map_err(|e| corrupt(format!("lines: {e}")))?;
    Ok(Reservation::from_parts(status, lines))
}

/// Writes `next` for an order that had no row. Returns `false` when a row
/// appeared meanwhile (a concurrent step won): the caller retries and
/// decides again on what is there now.
pub async fn insert_reservation(
    conn: &mut AnyConnection,
    order_id: &OrderId,
    next: &Reservation,
) -> Result<bool> {
    let Some(status) = next.status() else {
        return Ok(true);
    };
    let insert = sqlx::query(
        "INSERT INTO reservations (order_id, status, lines, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id.as_str())
    .bind(status.as_str())
    .bind(lines_json(next.lines()))
    .bind(now_ms());
    changed_one(insert, conn, "inserting a reservation").await
}

/// Moves an order's reservation from `from` to `next`. Returns `false`
/// when the stored status is no longer `from`.
pub async fn update_reservation(
    conn: &mut AnyConnection,
    order_id: &OrderId,
    from: Status,
    next: &Reservation,
) -> Result<bool> {
    let Some(status) = next.status() else {
        return Ok(false);
    };
    let update = sqlx::query(
        "UPDATE reservations SET status = $1, lines = $2, updated_at = $3 \
         WHERE order_id = $4 AND status = $5",
    )
    .bind(status.as_str())
    .bind(lines_json(next.lines()))
    .bind(now_ms())
    .bind(order_id.as_str())
    .bind(from.as_str());
    changed_one(update, conn, "updating a reservation").await
}

fn lines_json(lines: &[Line]) -> String {
    serde_json::to_string(lines).expect("lines are plain strings and integers")
}

/// `available` of each known SKU in `skus`. On PostgreSQL the rows are
/// locked in SKU order (callers pass a sorted set), so two orders touching
/// the same SKUs cannot deadlock and the check stays true until commit.
pub async fn load_available<'a>(
    conn: &mut AnyConnection,
    locking: Locking,
    skus: impl IntoIterator<Item = &'a Sku>,
) -> Result<StockLevels> {
    let sql = format!(
        "SELECT available FROM stock WHERE sku = $1{}",
        locking.clause()
    );
    let mut levels = StockLevels::new();
    for sku in skus {
        let available: Option<i64> = sqlx::query_scalar(&sql)
            .bind(sku.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(Error::sql("reading stock"))?;
        if let Some(available) = available {
            levels.insert(sku.clone(), available);
        }
    }
    Ok(levels)
}

/// Applies one movement. Returns `false` when the guard did not hold (the
/// row is gone or would go negative): nothing was changed.
pub async fn apply_move(conn: &mut AnyConnection, mv: &StockMove) -> Result<bool> {
    let (sql, sku, quantity) = match mv {
        StockMove::Reserve { sku, quantity } => (
            "UPDATE stock SET available = available - $1, reserved = reserved + $1 \
             WHERE sku = $2 AND available >= $1",
            sku,
            quantity,
        ),
        StockMove::Release { sku, quantity } => (
            "UPDATE stock SET available = available + $1, reserved = reserved - $1 \
             WHERE sku = $2 AND reserved >= $1",
            sku,
            quantity,
        ),
        StockMove::Commit { sku, quantity } => (
            "UPDATE stock SET committed = committed + $1, reserved = reserved - $1 \
             WHERE sku = $2 AND reserved >= $1",
            sku,
            quantity,
        ),
    };
    let update = sqlx::query(sql).bind(*quantity).bind(sku.as_str());
    changed_one(update, conn, "moving stock").await
}

/// Every SKU, sorted.
pub async fn list_stock(pool: &AnyPool) -> Result<Vec<StockRow>> {
    let rows: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT sku, available, reserved, committed FROM stock ORDER BY sku")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(stock_row).collect())
}

pub async fn get_stock(pool: &AnyPool, sku: &Sku) -> Result<Option<StockRow>> {
    let row: Option<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT sku, available, reserved, committed FROM stock WHERE sku = $1")
            .bind(sku.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(stock_row))
}

/// Sets `available` (creating the SKU when new); reserved and committed
/// stay, because they belong to orders in flight or done.
pub async fn put_stock(pool: &AnyPool, sku: &Sku, available: i64) -> Result<StockRow> {
    let row: (String, i64, i64, i64) = sqlx::query_as(
        "INSERT INTO stock (sku, available, reserved, committed) VALUES ($1, $2, 0, 0) \
         ON CONFLICT (sku) DO UPDATE SET available = excluded.available \
         RETURNING sku, available, reserved, committed",
    )
    .bind(sku.as_str())
    .bind(available)
    .fetch_one(pool)
    .await?;
    Ok(stock_row(row))
}

fn stock_row((sku, available, reserved, committed): (String, i64, i64, i64)) -> StockRow {
    StockRow {
        sku,
        available,
        reserved,
        committed,
    }
}

/// An order's reservation for the HTTP API; `Absent` when unknown.
pub async fn get_reservation(pool: &AnyPool, order_id: &OrderId) -> Result<Reservation> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(Error::sql("acquiring a connection"))?;
    load_reservation(&mut conn, Locking::None, order_id).await
}

/// True when no SKU exists yet.
pub async fn stock_is_empty(pool: &AnyPool) -> Result<bool> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock")
        .fetch_one(pool)
        .await?;
    Ok(count == 0)
}

/// Inserts the seed in one transaction. `DO NOTHING` because replicas
/// sharing a PostgreSQL database may seed at the same time.
pub async fn seed(pool: &AnyPool, entries: &[SeedEntry]) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for entry in entries {
        inserted += sqlx::query(
            "INSERT INTO stock (sku, available, reserved, committed) VALUES ($1, $2, 0, 0) \
             ON CONFLICT (sku) DO NOTHING",
        )
        .bind(entry.sku.as_str())
        .bind(entry.available)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}
