//! The inventory HTTP API: stock levels per SKU (read and set) and an
//! order's reservation. Errors are JSON `{"error": "..."}`; invalid bodies
//! are 422 with a message per field under `fields`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use choreo_bus::api_error::{admin_only, find_by_order, JsonBody};
use choreo_bus::openapi::{routes, ErrorBody, OpenApiRouter};
use choreo_bus::AdminToken;
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyPool;

use crate::domain::{Line, OrderId, Sku};
use crate::storage::{self, StockRow};

/// The service's routes, over its database pool, with their OpenAPI
/// description; setting stock needs `admin` when one is set.
pub fn router(pool: AnyPool, admin: &AdminToken) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_stock))
        .routes(routes!(get_stock))
        .routes(admin_only(admin, routes!(put_stock)))
        .routes(routes!(reservation))
        .with_state(pool)
}

/// `PUT /stock/{sku}` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `put_stock` reads field by field
struct StockUpdate {
    /// Units on hand to sell; reserved and committed units are kept.
    #[schema(minimum = 0)]
    available: i64,
}

pub use choreo_bus::ApiError;

/// Every SKU's stock.
#[utoipa::path(get, path = "/stock", tag = "stock",
    responses((status = 200, description = "Every SKU's stock", body = Vec<StockRow>)))]
async fn list_stock(State(pool): State<AnyPool>) -> Result<Json<Vec<StockRow>>, ApiError> {
    Ok(Json(storage::list_stock(&pool).await?))
}

/// One SKU's stock.
#[utoipa::path(get, path = "/stock/{sku}", tag = "stock",
    params(("sku" = String, Path, description = "The SKU")),
    responses(
        (status = 200, description = "The SKU's stock", body = StockRow),
        (status = 404, description = "Unknown SKU", body = ErrorBody)))]
async fn get_stock(
    State(pool): State<AnyPool>,
    Path(sku): Path<String>,
) -> Result<Json<StockRow>, ApiError> {
    let not_found = || ApiError::NotFound(format!("unknown sku `{sku}`"));
    // A string that cannot be a SKU names no SKU.
    let parsed = Sku::parse(&sku).map_err(|_| not_found())?;
    storage::get_stock(&pool, &parsed)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}

/// Sets a SKU's available units, creating the SKU if new (admin).
#[utoipa::path(put, path = "/stock/{sku}", tag = "stock",
    params(("sku" = String, Path, description = "The SKU")),
    request_body = StockUpdate,
    responses((status = 200, description = "The SKU's stock after the write", body = StockRow)))]
async fn put_stock(
    State(pool): State<AnyPool>,
    Path(sku): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<StockRow>, ApiError> {
    let mut errors = BTreeMap::new();
    let sku = Sku::parse(&sku)
        .map_err(|e| errors.insert("sku", e.to_string()))
        .ok();
    let available = match &body {
        Value::Object(fields) => {
            if let Some(unknown) = fields.keys().find(|k| k.as_str() != "available") {
                errors.insert("body", format!("unknown field `{unknown}`"));
            }
            match fields.get("available") {
                None => {
                    errors.insert("available", "is required".into());
                    None
                }
                Some(value) => match value.as_i64() {
                    Some(n) if n >= 0 => Some(n),
                    _ => {
                        errors.insert("available", format!("must be an integer >= 0, got {value}"));
                        None
                    }
                },
            }
        }
        _ => {
            errors.insert(
                "body",
                "must be a JSON object like {\"available\": 10}".into(),
            );
            None
        }
    };
    match (sku, available) {
        (Some(sku), Some(available)) if errors.is_empty() => {
            let row = storage::put_stock(&pool, &sku, available).await?;
            tracing::info!(%sku, available, "stock set");
            Ok(Json(row))
        }
        _ => Err(ApiError::invalid_fields(errors)),
    }
}

/// `GET /reservations/{order_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReservationView {
    pub order_id: String,
    pub status: &'static str,
    pub lines: Vec<Line>,
}

/// The stock reservation of an order.
#[utoipa::path(get, path = "/reservations/{order_id}", tag = "reservations",
    params(("order_id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order's reservation", body = ReservationView),
        (status = 404, description = "No reservation for this order", body = ErrorBody)))]
async fn reservation(
    State(pool): State<AnyPool>,
    Path(order_id): Path<String>,
) -> Result<Json<ReservationView>, ApiError> {
    find_by_order("reservation", &order_id, |id| find_reservation(pool, id)).await
}

async fn find_reservation(pool: AnyPool, id: OrderId) -> Result<Option<ReservationView>, ApiError> {
    let reservation = storage::get_reservation(&pool, &id).await?;
    Ok(reservation.status().map(|status| ReservationView {
        order_id: id.to_string(),
        status: status.as_str(),
        lines: reservation.lines().to_vec(),
    }))
}
