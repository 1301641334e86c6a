//! The inventory HTTP API: stock levels per SKU (read and set) and an
//! order's reservation. Errors are JSON `{"error": "..."}`; invalid bodies
//! are 422 with a message per field under `fields`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use choreo_bus::api_error::{admin_only, get_by_order, JsonBody};
use choreo_bus::AdminToken;
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyPool;

use crate::domain::{Line, OrderId, Sku};
use crate::storage::{self, StockRow};

/// The service's routes, over its database pool; setting stock needs
/// `admin` when one is set.
pub fn router(pool: AnyPool, admin: &AdminToken) -> Router {
    Router::new()
        .route("/stock", get(list_stock))
        .route(
            "/stock/{sku}",
            get(get_stock).merge(admin_only(admin, put(put_stock))),
        )
        .route(
            "/reservations/{order_id}",
            get_by_order("reservation", reservation),
        )
        .with_state(pool)
}

pub use choreo_bus::ApiError;

async fn list_stock(State(pool): State<AnyPool>) -> Result<Json<Vec<StockRow>>, ApiError> {
    Ok(Json(storage::list_stock(&pool).await?))
}

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
#[derive(Debug, Serialize)]
pub struct ReservationView {
    pub order_id: String,
    pub status: &'static str,
    pub lines: Vec<Line>,
}

async fn reservation(pool: AnyPool, id: OrderId) -> Result<Option<ReservationView>, ApiError> {
    let reservation = storage::get_reservation(&pool, &id).await?;
    Ok(reservation.status().map(|status| ReservationView {
        order_id: id.to_string(),
        status: status.as_str(),
        lines: reservation.lines().to_vec(),
    }))
}
