//! The courier HTTP API: an order's shipment. Errors are JSON
//! `{"error": "..."}`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sqlx::AnyPool;

use crate::domain::OrderId;
use crate::storage;

/// The service's routes, over its database pool.
pub fn router(pool: AnyPool) -> Router {
    Router::new()
        .route("/shipments/{order_id}", get(get_shipment))
        .with_state(pool)
}

/// A storage error answers 503 when retryable, else 500
/// (`From<choreo_outbox::Error>`).
pub use choreo_bus::ApiError;

/// `GET /shipments/{order_id}`. Shipment fields are `null` until a
/// shipment exists (FAILED, VOID); `country` is `null` for VOID.
#[derive(Debug, Serialize)]
pub struct ShipmentView {
    pub order_id: String,
    pub status: &'static str,
    pub shipment_id: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub country: Option<String>,
}

async fn get_shipment(
    State(pool): State<AnyPool>,
    Path(order_id): Path<String>,
) -> Result<Json<ShipmentView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no shipment for order `{order_id}`"));
    // A blank id names no order.
    let id = OrderId::parse(&order_id).map_err(|_| not_found())?;
    let shipment = storage::get_shipment(&pool, &id).await?;
    let status = shipment.status().ok_or_else(not_found)?;
    let manifest = shipment.manifest();
    Ok(Json(ShipmentView {
        status: status.as_str(),
        shipment_id: manifest.map(|m| m.shipment_id.clone()),
        carrier: manifest.map(|m| m.carrier.clone()),
        tracking_number: manifest.map(|m| m.tracking_number.clone()),
        country: shipment.country().map(str::to_owned),
        order_id,
    }))
}
