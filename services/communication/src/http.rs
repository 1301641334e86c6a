//! The communication service's HTTP API: the mails sent, per order or all
//! (newest first). Errors are JSON `{"error": "..."}`.

use axum::extract::{Query, State};
use axum::Json;
use choreo_bus::openapi::{routes, OpenApiRouter};
use choreo_outbox::Db;
use serde::Deserialize;

use crate::storage::{self, Notification};

/// The service's routes with their OpenAPI description (the host adds
/// `/healthz`, `/readyz`, `/metrics`).
pub fn router(db: Db) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .with_state(db)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this order's mails.
    order_id: Option<String>,
}

use choreo_bus::ApiError;

/// `GET /notifications[?order_id=…]`: an unknown order is an empty list,
/// not a 404 — "no mail yet" is the answer a poller wants.
#[utoipa::path(get, path = "/notifications", tag = "notifications", params(ListParams),
    responses(
        (status = 200, description = "The mails sent, newest first", body = Vec<Notification>),
        (status = 400, description = "The query cannot be read",
            body = choreo_bus::openapi::ErrorBody)))]
async fn list_notifications(
    State(db): State<Db>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    let order_id = params.order_id.filter(|id| !id.is_empty());
    // A storage error answers 503 when retryable, else 500.
    Ok(Json(
        storage::list_notifications(&db, order_id.as_deref()).await?,
    ))
}
