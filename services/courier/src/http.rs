//! The courier HTTP API: an order's shipment. Errors are JSON
//! `{"error": "..."}`.

use axum::extract::{Path, State};
use axum::Json;
use choreo_bus::api_error::find_by_order;
use choreo_bus::openapi::{routes, ErrorBody, OpenApiRouter};
use serde::Serialize;
use sqlx::AnyPool;

use crate::domain::OrderId;
use crate::storage;

/// The service's routes, over its database pool, with their OpenAPI
/// description.
pub fn router(pool: AnyPool) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(shipment))
        .with_state(pool)
}

/// A storage error answers 503 when retryable, else 500
/// (`From<choreo_outbox::Error>`).
pub use choreo_bus::ApiError;

/// `GET /shipments/{order_id}`. Shipment fields are `null` until a
/// shipment exists (FAILED, VOID); `country` is `null` for VOID.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ShipmentView {
    pub order_id: String,
    pub status: &'static str,
    pub shipment_id: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub country: Option<String>,
}

/// The shipment of an order.
#[utoipa::path(get, path = "/shipments/{order_id}", tag = "shipments",
    params(("order_id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order's shipment", body = ShipmentView),
        (status = 404, description = "No shipment for this order", body = ErrorBody)))]
async fn shipment(
    State(pool): State<AnyPool>,
    Path(order_id): Path<String>,
) -> Result<Json<ShipmentView>, ApiError> {
    find_by_order("shipment", &order_id, |id| find_shipment(pool, id)).await
}

async fn find_shipment(pool: AnyPool, id: OrderId) -> Result<Option<ShipmentView>, ApiError> {
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
