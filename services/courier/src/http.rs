//! The courier HTTP API: an order's shipment. Errors are JSON
//! `{"error": "..."}`.

use axum::Router;
use choreo_bus::api_error::get_by_order;
use serde::Serialize;
use sqlx::AnyPool;

use crate::domain::OrderId;
use crate::storage;

/// The service's routes, over its database pool.
pub fn router(pool: AnyPool) -> Router {
    Router::new()
        .route("/shipments/{order_id}", get_by_order("shipment", shipment))
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

async fn shipment(pool: AnyPool, id: OrderId) -> Result<Option<ShipmentView>, ApiError> {
    let shipment = storage::get_shipment(&pool, &id).await?;
    Ok(shipment.status().map(|status| {
        let manifest = shipment.manifest();
        ShipmentView {
            order_id: id.to_string(),
            status: status.as_str(),
            shipment_id: manifest.map(|m| m.shipment_id.clone()),
            carrier: manifest.map(|m| m.carrier.clone()),
            tracking_number: manifest.map(|m| m.tracking_number.clone()),
            country: shipment.country().map(str::to_owned),
        }
    }))
}
