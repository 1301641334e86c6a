//! The communication service's tables: `orders_replica` (what the mails
//! need to know about an order, from `OrderPlaced`) and `notifications`
//! (one row per mail sent, keyed by order and template). Order lines and
//! address are stored as JSON text so the replica follows the event's
//! shape without a table per nested type.

use choreo_events::{Address, OrderLine};
use choreo_outbox::Db;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::domain::{Currency, Money, OrderId, OrderReplica, Template};

/// Most rows `GET /notifications` returns.
pub const LIST_LIMIT: i64 = 500;

choreo_outbox::service_migrations!();

/// The workspace's one storage error: a notification recorded by another
/// transaction first is [`Error::Conflict`] (retryable: the retry finds
/// it); a row that cannot be read back is [`Error::Corrupt`] (permanent).
/// Retryable errors are retried in place by the consumer and answered 503
/// by the API.
pub use choreo_outbox::{Error, Result};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Inserts or replaces the order's replica row. Replaying `OrderPlaced`
/// (a redelivery or `rebuild-replica`) writes the same values again.
pub async fn upsert_replica(conn: &mut AnyConnection, order: &OrderReplica) -> Result<()> {
    let lines = serde_json::to_string(&order.lines).expect("order lines serialize");
    let address = serde_json::to_string(&order.address).expect("an address serializes");
    sqlx::query(
        "INSERT INTO orders_replica (order_id, customer_id, customer_email, lines, total_minor, \
         currency, address, placed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
         customer_email = excluded.customer_email, lines = excluded.lines, \
         total_minor = excluded.total_minor, currency = excluded.currency, \
         address = excluded.address, placed_at = excluded.placed_at",
    )
    .bind(order.order_id.as_str())
    .bind(&order.customer_id)
    .bind(&order.customer_email)
    .bind(lines)
    .bind(order.total.minor)
    .bind(order.total.currency.as_str())
    .bind(address)
    .bind(order.placed_at)
    .execute(&mut *conn)
    .await
    .map_err(Error::sql("writing an order replica"))?;
    Ok(())
}

fn replica_from_row(order_id: &OrderId, row: &AnyRow) -> Result<OrderReplica> {
    let corrupt = Error::corrupt("orders_replica", order_id);
    let lines: String = row.try_get("lines")?;
    let address: String = row.try_get("address")?;
    let currency: String = row.try_get("currency")?;
    Ok(OrderReplica {
        order_id: order_id.clone(),
        customer_id: row.try_get("customer_id")?,
        customer_email: row.try_get("customer_email")?,
        lines: serde_json::from_str::<Vec<OrderLine>>(&lines)
            .map_err(|e| corrupt(format!("lines: {e}")))?,
        total: Money::new(
            row.try_get("total_minor")?,
            Currency::parse(&currency).map_err(|e| corrupt(e.to_string()))?,
        ),
        address: serde_json::from_str::<Address>(&address)
            .map_err(|e| corrupt(format!("address: {e}")))?,
        placed_at: row.try_get("placed_at")?,
    })
}

pub async fn load_replica(
    conn: &mut AnyConnection,
    order_id: &OrderId,
) -> Result<Option<OrderReplica>> {
    let row = sqlx::query(
        "SELECT customer_id, customer_email, lines, total_minor, currency, address, placed_at \
         FROM orders_replica WHERE order_id = $1",
    )
    .bind(order_id.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(Error::sql("reading an order replica"))?;
    row.as_ref()
        .map(|row| replica_from_row(order_id, row))
        .transpose()
}

/// Number of orders in the replica.
pub async fn count_replica(db: &Db) -> Result<i64> {
    Ok(sqlx::query("SELECT COUNT(*) FROM orders_replica")
        .fetch_one(db.pool())
        .await?
        .try_get(0)?)
}

/// A sent mail, as recorded and as `GET /notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub order_id: String,
    pub template: String,
    pub recipient: String,
    pub message_id: String,
    /// Epoch millis.
    pub sent_at: i64,
}

pub async fn notification_exists(
    conn: &mut AnyConnection,
    order_id: &OrderId,
    template: Template,
) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM notifications WHERE order_id = $1 AND template = $2")
            .bind(order_id.as_str())
            .bind(template.code())
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Records a sent mail. If the row is already there another transaction
/// recorded it concurrently: [`Error::Conflict`], and the retry finds it.
pub async fn insert_notification(conn: &mut AnyConnection, n: &Notification) -> Result<()> {
    let insert = sqlx::query(
        "INSERT INTO notifications (order_id, template, recipient, message_id, sent_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id, template) DO NOTHING",
    )
    .bind(&n.order_id)
    .bind(&n.template)
    .bind(&n.recipient)
    .bind(&n.message_id)
    .bind(n.sent_at);
    choreo_outbox::change_one(insert, conn, "recording a notification", || {
        Error::Conflict {
            table: "notifications",
            key: format!("({}, {})", n.order_id, n.template),
            doing: "recording the mail".into(),
        }
    })
    .await
}

/// Newest first, at most [`LIST_LIMIT`]; one order's when `order_id` is set.
pub async fn list_notifications(db: &Db, order_id: Option<&str>) -> Result<Vec<Notification>> {
    let rows = match order_id {
        Some(order_id) => {
            sqlx::query(
                "SELECT order_id, template, recipient, message_id, sent_at FROM notifications \
                 WHERE order_id = $1 ORDER BY sent_at DESC, template LIMIT $2",
            )
            .bind(order_id)
            .bind(LIST_LIMIT)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query(
                "SELECT order_id, template, recipient, message_id, sent_at FROM notifications \
                 ORDER BY sent_at DESC, order_id, template LIMIT $1",
            )
            .bind(LIST_LIMIT)
            .fetch_all(db.pool())
            .await?
        }
    };
    rows.iter()
        .map(|row| {
            Ok(Notification {
                order_id: row.try_get("order_id")?,
                template: row.try_get("template")?,
                recipient: row.try_get("recipient")?,
                message_id: row.try_get("message_id")?,
                sent_at: row.try_get("sent_at")?,
            })
        })
        .collect()
}
