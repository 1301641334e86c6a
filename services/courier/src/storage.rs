//! The `shipments` table through sqlx's `Any` driver, on SQLite and
//! PostgreSQL alike, plus the service's migrations.
//!
//! Writes inside a saga step take the unit of work's connection, so they
//! commit or roll back with its inbox and outbox rows. Every write is
//! conditional on the state it was decided from; a row that changed under
//! us shows up as "0 rows changed" and the step is retried.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use crate::domain::{Consignment, Currency, Manifest, Money, OrderId, Shipment, Status};

choreo_outbox::service_migrations!();

/// The workspace's one storage error: a row that cannot be read back is
/// [`Error::Corrupt`] (permanent); a database failure is retried when
/// trying again may work — in place by the consumer, with 503 by the API.
pub use choreo_outbox::{Error, Result};

pub use choreo_outbox::Locking;
use choreo_outbox::{changed_one, Table};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const COLUMNS: &str = "status, shipment_id, carrier, tracking_number, country, customer_id, \
                       amount_minor, currency";

const SHIPMENTS: Table = Table::new("shipments", "order_id", COLUMNS, "reading a shipment");

/// The order's shipment (locked for the rest of the transaction when
/// `locking` says so).
pub async fn load_shipment(
    conn: &mut AnyConnection,
    locking: Locking,
    order_id: &OrderId,
) -> Result<Shipment> {
    match SHIPMENTS.load(conn, locking, order_id.as_str()).await? {
        None => Ok(Shipment::Absent),
        Some(row) => shipment_from_row(order_id, &row),
    }
}

fn shipment_from_row(order_id: &OrderId, row: &AnyRow) -> Result<Shipment> {
    let corrupt = Error::corrupt("shipments", order_id);
    let status: String = row.try_get("status")?;
    let status: Status = status
        .parse()
        .map_err(|_| corrupt(format!("unknown shipment status `{status}`")))?;
    let text = |column: &str| -> Result<String> {
        row.try_get::<Option<String>, _>(column)?
            .ok_or_else(|| corrupt(format!("{column} is NULL")))
    };
    let consignment = || -> Result<Consignment> {
        let currency = Currency::parse(&text("currency")?).map_err(|e| corrupt(e.to_string()))?;
        Ok(Consignment {
            country: text("country")?,
            customer_id: text("customer_id")?,
            amount: Money::new(
                row.try_get::<Option<i64>, _>("amount_minor")?
                    .ok_or_else(|| corrupt("amount_minor is NULL".into()))?,
                currency,
            ),
        })
    };
    let manifest = || -> Result<Manifest> {
        Ok(Manifest {
            shipment_id: text("shipment_id")?,
            carrier: text("carrier")?,
            tracking_number: text("tracking_number")?,
        })
    };
    Ok(match status {
        Status::Manifested => Shipment::Manifested {
            manifest: manifest()?,
            consignment: consignment()?,
        },
        Status::Cancelled => Shipment::Cancelled {
            manifest: manifest()?,
            consignment: consignment()?,
        },
        // A refused consignment keeps only its country. So did none before
        // it had a variant of its own: such a row kept the event's fields,
        // and its currency may be the one that broke the contract.
        Status::Failed => match row.try_get::<Option<String>, _>("currency")? {
            Some(code) if Currency::parse(&code).is_ok() => Shipment::Failed {
                consignment: consignment()?,
            },
            _ => Shipment::Refused {
                country: text("country")?,
            },
        },
        Status::Void => Shipment::Void,
    })
}

/// Writes `next` for an order that had no row. Returns `false` when a row
/// appeared meanwhile (a concurrent step won): the caller retries and
/// decides again on what is there now.
pub async fn insert_shipment(
    conn: &mut AnyConnection,
    order_id: &OrderId,
    next: &Shipment,
) -> Result<bool> {
    let Some(status) = next.status() else {
        return Ok(true);
    };
    let sql = format!(
        "INSERT INTO shipments ({COLUMNS}, updated_at, order_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (order_id) DO NOTHING"
    );
    let insert = bind_row(sqlx::query(&sql), order_id, status, next);
    changed_one(insert, conn, "inserting a shipment").await
}

/// Moves an order's shipment from `from` to `next` (every column, so the
/// row is exactly `next`). Returns `false` when the stored status is no
/// longer `from`.
pub async fn update_shipment(
    conn: &mut AnyConnection,
    order_id: &OrderId,
    from: Status,
    next: &Shipment,
) -> Result<bool> {
    let Some(status) = next.status() else {
        return Ok(false);
    };
    let update = sqlx::query(
        "UPDATE shipments SET status = $1, shipment_id = $2, carrier = $3, tracking_number = $4, \
         country = $5, customer_id = $6, amount_minor = $7, currency = $8, updated_at = $9 \
         WHERE order_id = $10 AND status = $11",
    );
    let update = bind_row(update, order_id, status, next).bind(from.as_str());
    changed_one(update, conn, "updating a shipment").await
}

/// Binds `next` as `COLUMNS`, `updated_at` (now), `order_id` — the first
/// ten parameters of both writes.
fn bind_row<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    order_id: &OrderId,
    status: Status,
    next: &Shipment,
) -> Query<'q, Any, AnyArguments<'q>> {
    let (manifest, consignment, country) = (next.manifest(), next.consignment(), next.country());
    query
        .bind(status.as_str())
        .bind(manifest.map(|m| m.shipment_id.clone()))
        .bind(manifest.map(|m| m.carrier.clone()))
        .bind(manifest.map(|m| m.tracking_number.clone()))
        .bind(country.map(str::to_owned))
        .bind(consignment.map(|c| c.customer_id.clone()))
        .bind(consignment.map(|c| c.amount.minor))
        .bind(consignment.map(|c| c.amount.currency.to_string()))
        .bind(now_ms())
        .bind(order_id.as_str().to_owned())
}

/// An order's shipment for the HTTP API; `Absent` when unknown.
pub async fn get_shipment(pool: &AnyPool, order_id: &OrderId) -> Result<Shipment> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(Error::sql("acquiring a connection"))?;
    load_shipment(&mut conn, Locking::None, order_id).await
}
