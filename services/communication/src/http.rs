//! The communication service's HTTP API: the mails sent, per order or all
//! (newest first). Errors are JSON `{"error": "..."}`.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use choreo_outbox::Db;
use serde::Deserialize;

use crate::storage::{self, Notification};

/// The service's routes (the host adds `/healthz`, `/readyz`, `/metrics`).
pub fn router(db: Db) -> Router {
    Router::new()
        .route("/notifications", get(list_notifications))
        .with_state(db)
}

#[derive(Debug, Deserialize)]
struct ListParams {
    order_id: Option<String>,
}

use choreo_bus::ApiError;

/// `GET /notifications[?order_id=…]`: an unknown order is an empty list,
/// not a 404 — "no mail yet" is the answer a poller wants.
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
