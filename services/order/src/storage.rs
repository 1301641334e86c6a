//! The order service's tables (`orders`, `order_timeline`), through sqlx's
//! `Any` driver so one set of queries serves SQLite and PostgreSQL.
//!
//! Every function takes a connection: the one inside a
//! [`UnitOfWork`](choreo_outbox::UnitOfWork) for writes, so state, inbox and
//! outbox commit together, or a pooled one for reads. Status changes are
//! compare-and-set on the previous status ([`set_status`]): with several
//! replicas on one PostgreSQL database, two of them deciding on the same
//! order cannot both win.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use choreo_events::{Address, OrderLine};
use choreo_outbox::sqlx::any::AnyRow;
use choreo_outbox::sqlx::{self, AnyConnection, Row};
use choreo_outbox::{changed_one, Backend, Table};

use crate::domain::{Currency, Money, OrderState, Status};

/// The workspace's one storage error: database errors keep the sqlx error
/// (and what was being done) for the retry classification; a row this code
/// cannot read back is [`Error::Corrupt`], permanent.
pub use choreo_outbox::{Error, Result};

fn corrupt(order_id: &str, problem: String) -> Error {
    Error::corrupt("orders", order_id)(problem)
}

/// One row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub order_id: String,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request body ([`crate::domain::OrderDraft::fingerprint`]);
    /// `None` for orders placed before it was recorded.
    pub request_hash: Option<String>,
    pub status: Status,
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub shipping_address: Address,
    pub created_at: i64,
    pub updated_at: i64,
    pub deadline_at: i64,
    /// The `traceparent` of the span the order was placed in, which the
    /// deadline's cancellation continues; `None` when untraced.
    pub trace_context: Option<String>,
}

impl OrderRecord {
    /// The part of the record [`decide`](crate::domain::decide) reads.
    pub fn state(&self) -> Result<OrderState> {
        let currency =
            Currency::parse(&self.currency).map_err(|e| corrupt(&self.order_id, e.to_string()))?;
        Ok(OrderState {
            status: self.status.clone(),
            total: Money {
                minor: self.total_minor,
                currency,
            },
        })
    }
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub event_type: String,
    pub topic: String,
    pub event_id: String,
    /// The event's own `occurred_at`, epoch milliseconds.
    pub occurred_at: i64,
}

/// A row of `GET /orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    pub order_id: String,
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
}

const ORDER_COLUMNS: &str = "order_id, idempotency_key, status, reason, customer_id, \
     customer_email, items, total_minor, currency, shipping_address, created_at, updated_at, \
     deadline_at, request_hash, trace_context";

const ORDERS: Table = Table::new(
    "orders",
    "order_id",
    ORDER_COLUMNS,
    "reading an order for update",
);

fn status_of(row: &AnyRow, order_id: &str) -> Result<Status> {
    let name: String = row
        .try_get("status")
        .map_err(Error::sql("reading status"))?;
    let reason: Option<String> = row
        .try_get("reason")
        .map_err(Error::sql("reading reason"))?;
    Status::from_parts(&name, reason.clone())
        .ok_or_else(|| corrupt(order_id, format!("status {name} with reason {reason:?}")))
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &'static str,
    order_id: &str,
) -> Result<T> {
    let text: String = row
        .try_get(column)
        .map_err(Error::sql("reading a JSON column"))?;
    serde_json::from_str(&text).map_err(|e| corrupt(order_id, format!("{column}: {e}")))
}

fn order_from_row(row: &AnyRow) -> Result<OrderRecord> {
    let order_id: String = row
        .try_get("order_id")
        .map_err(Error::sql("reading order_id"))?;
    let get_text = |c: &'static str| -> Result<String> { row.try_get(c).map_err(Error::sql(c)) };
    let get_ms = |c: &'static str| -> Result<i64> { row.try_get(c).map_err(Error::sql(c)) };
    Ok(OrderRecord {
        idempotency_key: row
            .try_get("idempotency_key")
            .map_err(Error::sql("idempotency_key"))?,
        request_hash: row
            .try_get("request_hash")
            .map_err(Error::sql("request_hash"))?,
        status: status_of(row, &order_id)?,
        customer_id: get_text("customer_id")?,
        customer_email: get_text("customer_email")?,
        items: json_column(row, "items", &order_id)?,
        total_minor: get_ms("total_minor")?,
        currency: get_text("currency")?,
        shipping_address: json_column(row, "shipping_address", &order_id)?,
        created_at: get_ms("created_at")?,
        updated_at: get_ms("updated_at")?,
        deadline_at: get_ms("deadline_at")?,
        trace_context: row
            .try_get("trace_context")
            .map_err(Error::sql("trace_context"))?,
        order_id,
    })
}

/// The order, if it exists.
pub async fn find(conn: &mut AnyConnection, order_id: &str) -> Result<Option<OrderRecord>> {
    let query = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1");
    sqlx::query(&query)
        .bind(order_id)
        .fetch_optional(conn)
        .await
        .map_err(Error::sql("reading an order"))?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// The order, locked for the rest of the transaction on PostgreSQL so a
/// concurrent replica deciding on it waits for this decision. SQLite has a
/// single connection, so nothing can interleave there anyway.
pub async fn find_for_update(
    conn: &mut AnyConnection,
    backend: Backend,
    order_id: &str,
) -> Result<Option<OrderRecord>> {
    ORDERS
        .load(conn, backend, order_id)
        .await?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// The order created with this idempotency key, if any.
pub async fn find_by_key(conn: &mut AnyConnection, key: &str) -> Result<Option<OrderRecord>> {
    let query = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE idempotency_key = $1");
    sqlx::query(&query)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(Error::sql("reading an order by idempotency key"))?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// Inserts a new order. Returns `false`, writing nothing, when its id or
/// idempotency key is already taken (on PostgreSQL after waiting for a
/// concurrent insert of the same key to commit or roll back).
pub async fn insert(conn: &mut AnyConnection, order: &OrderRecord) -> Result<bool> {
    let unwritable = |column: &str, e: serde_json::Error| Error::Inconsistent {
        table: "orders",
        key: order.order_id.clone(),
        problem: format!("{column} do not serialize: {e}"),
    };
    let items = serde_json::to_string(&order.items).map_err(|e| unwritable("items", e))?;
    let address = serde_json::to_string(&order.shipping_address)
        .map_err(|e| unwritable("shipping_address", e))?;
    let query = format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT DO NOTHING"
    );
    let insert = sqlx::query(&query)
        .bind(&order.order_id)
        .bind(&order.idempotency_key)
        .bind(order.status.name())
        .bind(order.status.reason())
        .bind(&order.customer_id)
        .bind(&order.customer_email)
        .bind(items)
        .bind(order.total_minor)
        .bind(&order.currency)
        .bind(address)
        .bind(order.created_at)
        .bind(order.updated_at)
        .bind(order.deadline_at)
        .bind(&order.request_hash)
        .bind(&order.trace_context);
    changed_one(insert, conn, "inserting an order").await
}

/// Moves the order from `from` to `to`. Returns `false`, changing nothing,
/// when the order is no longer in `from`: somebody else decided first.
pub async fn set_status(
    conn: &mut AnyConnection,
    order_id: &str,
    from: &Status,
    to: &Status,
    now_ms: i64,
) -> Result<bool> {
    // `reason IS NOT DISTINCT FROM` is not portable; compare the reason
    // through COALESCE so NULL equals NULL on both backends.
    let update = sqlx::query(
        "UPDATE orders SET status = $1, reason = $2, updated_at = $3 \
         WHERE order_id = $4 AND status = $5 AND COALESCE(reason, '') = $6",
    )
    .bind(to.name())
    .bind(to.reason())
    .bind(now_ms)
    .bind(order_id)
    .bind(from.name())
    .bind(from.reason().unwrap_or(""));
    changed_one(update, conn, "updating an order's status").await
}

/// Appends to the order's timeline.
pub async fn add_timeline(
    conn: &mut AnyConnection,
    order_id: &str,
    entry: &TimelineEntry,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO order_timeline (order_id, event_type, topic, event_id, occurred_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(order_id)
    .bind(&entry.event_type)
    .bind(&entry.topic)
    .bind(&entry.event_id)
    .bind(entry.occurred_at)
    .execute(conn)
    .await
    .map_err(Error::sql("appending to an order's timeline"))?;
    Ok(())
}

/// The order's timeline in the order this service handled the events
/// (not by `occurred_at`: producers' clocks differ).
pub async fn timeline(conn: &mut AnyConnection, order_id: &str) -> Result<Vec<TimelineEntry>> {
    let rows = sqlx::query(
        "SELECT event_type, topic, event_id, occurred_at FROM order_timeline \
         WHERE order_id = $1 ORDER BY seq",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
    .map_err(Error::sql("reading an order's timeline"))?;
    rows.iter()
        .map(|row| {
            Ok(TimelineEntry {
                event_type: row
                    .try_get("event_type")
                    .map_err(Error::sql("event_type"))?,
                topic: row.try_get("topic").map_err(Error::sql("topic"))?,
                event_id: row.try_get("event_id").map_err(Error::sql("event_id"))?,
                occurred_at: row
                    .try_get("occurred_at")
                    .map_err(Error::sql("occurred_at"))?,
            })
        })
        .collect()
}

/// Why a page of orders could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("unknown cursor: no order {0}")]
    UnknownCursor(String),
    #[error(transparent)]
    Storage(#[from] Error),
}

/// Up to `limit` orders after the order `after` in (created_at, order_id)
/// order, optionally only those with status `status`. Returns the page and
/// the cursor of the next one, if there is more.
pub async fn list(
    conn: &mut AnyConnection,
    status: Option<&str>,
    limit: i64,
    after: Option<&str>,
) -> Result<(Vec<OrderSummary>, Option<String>), ListError> {
    // Without a cursor, start before everything: no real order sorts
    // before (i64::MIN, "").
    let (after_created, after_id) = match after {
        None => (i64::MIN, String::new()),
        Some(id) => {
            let created: Option<i64> =
                sqlx::query_scalar("SELECT created_at FROM orders WHERE order_id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(Error::sql("reading the list cursor"))?;
            let created = created.ok_or_else(|| ListError::UnknownCursor(id.to_owned()))?;
            (created, id.to_owned())
        }
    };
    let status_filter = if status.is_some() {
        "AND status = $4"
    } else {
        "AND $4 = ''"
    };
    let query = format!(
        "SELECT order_id, status, reason, created_at, updated_at FROM orders \
         WHERE (created_at > $1 OR (created_at = $1 AND order_id > $2)) {status_filter} \
         ORDER BY created_at, order_id LIMIT $3"
    );
    // One row more than asked tells whether a next page exists.
    let rows = sqlx::query(&query)
        .bind(after_created)
        .bind(after_id)
        .bind(limit + 1)
        .bind(status.unwrap_or(""))
        .fetch_all(conn)
        .await
        .map_err(Error::sql("listing orders"))?;
    let mut page = rows
        .iter()
        .map(|row| {
            let order_id: String = row.try_get("order_id").map_err(Error::sql("order_id"))?;
            Ok(OrderSummary {
                status: status_of(row, &order_id)?,
                created_at: row
                    .try_get("created_at")
                    .map_err(Error::sql("created_at"))?,
                updated_at: row
                    .try_get("updated_at")
                    .map_err(Error::sql("updated_at"))?,
                order_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let next = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|o| o.order_id.clone())
    } else {
        None
    };
    Ok((page, next))
}

/// Open orders whose deadline is at or before `now_ms`, earliest first:
/// each id with the trace context it was placed in.
pub async fn due(
    conn: &mut AnyConnection,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<(String, Option<String>)>> {
    sqlx::query_as(
        "SELECT order_id, trace_context FROM orders \
         WHERE status IN ('PENDING', 'CANCELLING') AND deadline_at <= $1 \
         ORDER BY deadline_at, order_id LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(Error::sql("finding orders past their deadline"))
}
