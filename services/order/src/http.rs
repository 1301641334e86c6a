//! The order API (axum): place, read, list, long-poll and cancel orders.
//!
//! Errors are JSON `{"error": "..."}` (plus `"fields"` for an invalid order,
//! one message per field). Requests that change state run in one unit of
//! work, so the outbox guarantee covers them as it covers consumed events.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use choreo_bus::openapi::{routes, ErrorBody, OpenApiRouter};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use choreo_events::{contract, Address, OrderLine};

use crate::domain::{DraftAddress, DraftLine, FieldErrors, OrderDraft, OrderId, Status};
use crate::handlers::{OrderError, Orders, PlaceCommand, Placed};
use crate::storage::{self, ListError, OrderRecord, TimelineEntry};

/// Longest a `?wait=terminal` request is held.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Hold time of `?wait=terminal` without `timeout_ms`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// A long-poll reads the database at most this often, however many
/// orders change meanwhile.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(50);
/// After a wake-up that found the order unchanged, read again this soon:
/// a consumed event signals before its transaction commits.
const RECHECK_AFTER_WAKE: Duration = Duration::from_millis(100);
/// Without any wake-up, read this often anyway: another replica may have
/// changed the order, and its signal does not reach this process.
const FALLBACK_READ: Duration = Duration::from_secs(1);

pub const DEFAULT_LIST_LIMIT: i64 = 50;
pub const MAX_LIST_LIMIT: i64 = 500;
const MAX_IDEMPOTENCY_KEY_LEN: usize = contract::IDEMPOTENCY_KEY_MAX_LEN;

/// The service's routes with their OpenAPI description;
/// [`choreo_bus::Host`] adds the probes.
pub fn router(orders: Orders) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, cancel))
        .with_state(orders)
}

pub use choreo_bus::ApiError;

/// 422 for a reused Idempotency-Key with another body, naming the order.
fn key_reused(order_id: String) -> ApiError {
    ApiError::Invalid {
        error: format!(
            "Idempotency-Key was already used for order {order_id} with a different body; use a \
             new key for a new order"
        ),
        fields: [(
            "Idempotency-Key".to_owned(),
            "already used with a different body".to_owned(),
        )]
        .into(),
        extra: [("order_id".to_owned(), serde_json::Value::String(order_id))]
            .into_iter()
            .collect(),
    }
}

/// 422 `invalid order` with one entry per offending field.
fn invalid_order(fields: FieldErrors) -> ApiError {
    ApiError::Invalid {
        error: "invalid order".into(),
        fields: fields.0,
        extra: serde_json::Map::new(),
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Invalid(fields) => invalid_order(fields),
            OrderError::UnknownOrder(id) => ApiError::NotFound(format!("order {id} not found")),
            OrderError::KeyReused { order_id, .. } => key_reused(order_id),
            OrderError::Conflict(id) => {
                ApiError::Conflict(format!("order {id} changed concurrently; try again"))
            }
            other => ApiError::server(other.is_retryable(), &other),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            ApiError::Unprocessable(format!("invalid order: {}", e.body_text()))
        }
        other => choreo_bus::api_error::json_rejection(other),
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid query: {}", rejection.body_text()))
}

/// `POST /orders` body. Every field is required, but defaults to empty so
/// a missing field is reported by validation, with the others, instead of
/// alone by serde. The schema states the field contract
/// (`choreo_events::contract`; a unit test keeps the limits equal).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        max_length = 64
    )]
    customer_id: String,
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$",
        max_length = 254
    )]
    customer_email: String,
    #[serde(default)]
    #[schema(required = true, min_items = 1, max_items = 100)]
    items: Vec<LineBody>,
    #[serde(default)]
    #[schema(required = true, pattern = r"^[A-Z]{3}$", example = "EUR")]
    currency: String,
    #[serde(default)]
    #[schema(required = true)]
    shipping_address: AddressBody,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LineBody {
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        max_length = 64
    )]
    sku: String,
    #[serde(default)]
    #[schema(required = true, minimum = 1, maximum = 10000)]
    quantity: i64,
    #[serde(default)]
    #[schema(required = true, minimum = 0, maximum = 1000000000000_i64)]
    unit_price_minor: i64,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddressBody {
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 100
    )]
    name: String,
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 200
    )]
    line1: String,
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 100
    )]
    city: String,
    #[serde(default)]
    #[schema(
        required = true,
        pattern = r"^[A-Za-z0-9 -]*[A-Za-z0-9-][A-Za-z0-9 -]*$",
        max_length = 16
    )]
    postal_code: String,
    #[serde(default)]
    #[schema(required = true, pattern = r"^[A-Z]{2}$", example = "DE")]
    country: String,
}

impl From<OrderBody> for OrderDraft {
    fn from(b: OrderBody) -> Self {
        OrderDraft {
            customer_id: b.customer_id,
            customer_email: b.customer_email,
            items: b
                .items
                .into_iter()
                .map(|l| DraftLine {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            currency: b.currency,
            shipping_address: DraftAddress {
                name: b.shipping_address.name,
                line1: b.shipping_address.line1,
                city: b.shipping_address.city,
                postal_code: b.shipping_address.postal_code,
                country: b.shipping_address.country,
            },
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Accepted {
    order_id: String,
    status: &'static str,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| contract::check_idempotency_key(k).is_ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// Places an order; the saga runs from here.
#[utoipa::path(post, path = "/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A retry with the same key and body answers the first order")),
    request_body = OrderBody,
    responses(
        (status = 202, description = "Placed, PENDING", body = Accepted,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 422, description = "Invalid order, one message per field", body = ErrorBody)))]
async fn create(
    State(orders): State<Orders>,
    headers: HeaderMap,
    body: Result<Json<OrderBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(json_rejection)?;
    let key = idempotency_key(&headers)?;
    let draft = OrderDraft::from(body);
    // Reject before taking a database connection.
    draft.clone().validate().map_err(invalid_order)?;

    let mut uow = orders.db().begin().await?;
    let placed = orders
        .place(
            &mut uow,
            PlaceCommand {
                order_id: OrderId::random(),
                idempotency_key: key,
                draft,
                cause: None,
            },
        )
        .await?;
    uow.commit().await?;
    if let Placed::Created(_) = placed {
        orders.notify_changed();
    }
    let order_id = placed.order().order_id.clone();
    // A replay answers exactly what the first request got.
    let location = format!("/orders/{order_id}");
    let body = Accepted {
        order_id,
        status: Status::PENDING,
    };
    Ok((StatusCode::ACCEPTED, [(LOCATION, location)], Json(body)).into_response())
}

/// `GET /orders/{id}` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    order_id: String,
    status: &'static str,
    reason: Option<String>,
    customer_id: String,
    customer_email: String,
    items: Vec<OrderLine>,
    total_minor: i64,
    currency: String,
    shipping_address: Address,
    created_at: String,
    updated_at: String,
    deadline_at: String,
    timeline: Vec<TimelineView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TimelineView {
    event_type: String,
    topic: String,
    event_id: String,
    at: String,
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

impl OrderView {
    fn new(order: OrderRecord, timeline: Vec<TimelineEntry>) -> Self {
        OrderView {
            status: order.status.name(),
            reason: order.status.reason().map(str::to_owned),
            order_id: order.order_id,
            customer_id: order.customer_id,
            customer_email: order.customer_email,
            items: order.items,
            total_minor: order.total_minor,
            currency: order.currency,
            shipping_address: order.shipping_address,
            created_at: rfc3339(order.created_at),
            updated_at: rfc3339(order.updated_at),
            deadline_at: rfc3339(order.deadline_at),
            timeline: timeline
                .into_iter()
                .map(|t| TimelineView {
                    at: rfc3339(t.occurred_at),
                    event_type: t.event_type,
                    topic: t.topic,
                    event_id: t.event_id,
                })
                .collect(),
        }
    }
}

async fn load(orders: &Orders, order_id: &str) -> Result<(OrderRecord, OrderView), ApiError> {
    let mut conn = orders.connection().await?;
    let order = storage::find(&mut conn, order_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("order {order_id} not found")))?;
    let timeline = storage::timeline(&mut conn, order_id).await?;
    Ok((order.clone(), OrderView::new(order, timeline)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ShowQuery {
    /// `terminal`: answer once the order is terminal or `timeout_ms` passed.
    wait: Option<String>,
    /// How long `wait=terminal` holds, at most 60000 (default 30000).
    timeout_ms: Option<u64>,
}

/// An order with its timeline, now or once terminal (`wait=terminal`).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order's id"), ShowQuery),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "The query cannot be read", body = ErrorBody),
        (status = 404, description = "Unknown order", body = ErrorBody),
        (status = 422, description = "A bad `wait`", body = ErrorBody)))]
async fn show(
    State(orders): State<Orders>,
    Path(order_id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    match query.wait.as_deref() {
        None | Some("") => Ok(Json(load(&orders, &order_id).await?.1)),
        Some("terminal") => {
            let timeout = query
                .timeout_ms
                .map_or(DEFAULT_WAIT, Duration::from_millis)
                .min(MAX_WAIT);
            Ok(Json(wait_for_terminal(&orders, &order_id, timeout).await?))
        }
        Some(other) => Err(ApiError::Unprocessable(format!(
            "wait must be `terminal`, got `{other}`"
        ))),
    }
}

/// Answers once the order is terminal or `timeout` has passed, with its
/// state at that moment. Woken by the status-change signal of this
/// process; re-reads the database rather than trusting the signal, never
/// more often than [`MIN_READ_INTERVAL`].
async fn wait_for_terminal(
    orders: &Orders,
    order_id: &str,
    timeout: Duration,
) -> Result<OrderView, ApiError> {
    let give_up = Instant::now() + timeout;
    let mut changes = orders.changes();
    let mut woken = false;
    loop {
        // Mark the current tick seen before reading, so a change committed
        // after our read still wakes us.
        changes.borrow_and_update();
        let last_read = Instant::now();
        let (order, view) = load(orders, order_id).await?;
        if order.status.is_terminal() || Instant::now() >= give_up {
            return Ok(view);
        }
        let pause = if woken {
            RECHECK_AFTER_WAKE
        } else {
            FALLBACK_READ
        };
        let wake_at = give_up.min(Instant::now() + pause);
        woken = tokio::select! {
            changed = changes.changed() => changed.is_ok(),
            _ = tokio::time::sleep_until(wake_at) => false,
        };
        if !woken {
            // A timer wake-up has already slept; a lost sender (cannot
            // happen while `orders` lives) must not turn into a spin.
            tokio::time::sleep_until(wake_at).await;
        }
        tokio::time::sleep_until(give_up.min(last_read + MIN_READ_INTERVAL)).await;
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only orders in this state.
    status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// The `next_after` of the previous page.
    after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OrderSummaryView {
    order_id: String,
    status: &'static str,
    reason: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OrderPage {
    orders: Vec<OrderSummaryView>,
    next_after: Option<String>,
}

/// Orders, newest first, a page at a time.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListQuery),
    responses(
        (status = 200, description = "One page of orders", body = OrderPage),
        (status = 400, description = "The query cannot be read", body = ErrorBody),
        (status = 422, description = "A bad status, limit or cursor", body = ErrorBody)))]
async fn list(
    State(orders): State<Orders>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<OrderPage>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let status = query.status.filter(|s| !s.is_empty());
    if let Some(status) = &status {
        if !Status::NAMES.contains(&status.as_str()) {
            return Err(ApiError::Unprocessable(format!(
                "status must be one of {}, got `{status}`",
                Status::NAMES.join(", ")
            )));
        }
    }
    let limit = match query.limit {
        None => DEFAULT_LIST_LIMIT,
        Some(n) if n >= 1 => n.min(MAX_LIST_LIMIT),
        Some(n) => {
            return Err(ApiError::Unprocessable(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}, got {n}"
            )))
        }
    };
    let after = query.after.filter(|a| !a.is_empty());
    let mut conn = orders.connection().await?;
    let (page, next_after) = storage::list(&mut conn, status.as_deref(), limit, after.as_deref())
        .await
        .map_err(|e| match e {
            ListError::UnknownCursor(_) => ApiError::Unprocessable(e.to_string()),
            ListError::Storage(e) => e.into(),
        })?;
    Ok(Json(OrderPage {
        orders: page
            .into_iter()
            .map(|o| OrderSummaryView {
                reason: o.status.reason().map(str::to_owned),
                status: o.status.name(),
                order_id: o.order_id,
                created_at: rfc3339(o.created_at),
                updated_at: rfc3339(o.updated_at),
            })
            .collect(),
        next_after,
    }))
}

/// Cancels an order that is not terminal yet; compensation follows.
#[utoipa::path(delete, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order's id")),
    responses(
        (status = 202, description = "Cancelled", body = OrderView),
        (status = 404, description = "Unknown order", body = ErrorBody),
        (status = 409, description = "Already terminal", body = ErrorBody)))]
async fn cancel(
    State(orders): State<Orders>,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let applied = orders.cancel(&order_id).await?;
    if applied.before.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "order is already {}",
            applied.before.name()
        )));
    }
    // Read after commit: on SQLite the unit of work held the only
    // connection.
    let (_, view) = load(&orders, &order_id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use utoipa::PartialSchema;

    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    #[test]
    fn the_body_schema_states_the_field_contract_limits() {
        let order = schema::<OrderBody>();
        let line = schema::<LineBody>();
        let address = schema::<AddressBody>();
        for (s, field, key, limit) in [
            (
                &order,
                "customer_id",
                "maxLength",
                json!(contract::ID_MAX_LEN),
            ),
            (
                &order,
                "customer_email",
                "maxLength",
                json!(contract::EMAIL_MAX_LEN),
            ),
            (&order, "items", "maxItems", json!(contract::MAX_ITEMS)),
            (&line, "sku", "maxLength", json!(contract::ID_MAX_LEN)),
            (&line, "quantity", "maximum", json!(contract::MAX_QUANTITY)),
            (
                &line,
                "unit_price_minor",
                "maximum",
                json!(contract::MAX_MONEY_MINOR),
            ),
            (&address, "name", "maxLength", json!(contract::NAME_MAX_LEN)),
            (
                &address,
                "line1",
                "maxLength",
                json!(contract::LINE_MAX_LEN),
            ),
            (&address, "city", "maxLength", json!(contract::NAME_MAX_LEN)),
            (
                &address,
                "postal_code",
                "maxLength",
                json!(contract::POSTAL_CODE_MAX_LEN),
            ),
        ] {
            assert_eq!(s["properties"][field][key], limit, "{field}.{key}");
        }
        for (s, fields) in [
            (
                &order,
                json!([
                    "customer_id",
                    "customer_email",
                    "items",
                    "currency",
                    "shipping_address"
                ]),
            ),
            (&line, json!(["sku", "quantity", "unit_price_minor"])),
            (
                &address,
                json!(["name", "line1", "city", "postal_code", "country"]),
            ),
        ] {
            assert_eq!(s["required"], fields);
            assert_eq!(s["additionalProperties"], json!(false));
        }
    }
}
