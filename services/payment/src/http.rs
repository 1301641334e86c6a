//! The payment service's HTTP API: accounts (read, create or replace) and
//! the payment of an order. Errors are JSON `{"error": "..."}`; invalid
//! bodies answer 422 with a message per field under `"fields"`.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use choreo_bus::api_error::{admin_only, find_by_order, JsonBody};
use choreo_bus::openapi::{routes, ErrorBody, OpenApiRouter};
use choreo_bus::AdminToken;
use choreo_outbox::Db;
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::domain::{Account, Currency, CustomerId, Invalid, Money, OrderId, PaymentState};
use crate::storage;

/// The service's routes with their OpenAPI description (the host adds
/// `/healthz`, `/readyz`, `/metrics`); setting an account needs `admin`
/// when one is set.
pub fn router(db: Db, admin: &AdminToken) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(get_account))
        .routes(admin_only(admin, routes!(put_account)))
        .routes(routes!(payment))
        .with_state(db)
}

/// `PUT /accounts/{customer_id}` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `parse_account` reads field by field
struct AccountUpdate {
    /// Optional; when given, the customer id of the path.
    customer_id: Option<String>,
    /// The balance, in minor units of `currency`.
    #[schema(minimum = 0)]
    balance_minor: i64,
    /// ISO 4217 code, three capital letters.
    #[schema(example = "EUR")]
    currency: String,
    /// A blocked account declines every payment (default false).
    blocked: Option<bool>,
}

pub use choreo_bus::ApiError;

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid_fields([(e.field, e.message)])
    }
}

/// `GET /accounts/{customer_id}` and `PUT` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub customer_id: String,
    pub balance_minor: i64,
    pub currency: String,
    pub blocked: bool,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            customer_id: a.customer_id.to_string(),
            balance_minor: a.balance.minor,
            currency: a.balance.currency.to_string(),
            blocked: a.blocked,
        }
    }
}

/// `GET /payments/{order_id}` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub order_id: String,
    pub status: &'static str,
    pub payment_id: Option<String>,
    pub customer_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    /// Captured minus refunded.
    pub net_charge_minor: i64,
    /// Failure reason code, or the cancellation reason of a refund.
    pub reason: Option<String>,
}

impl PaymentView {
    fn new(order_id: &OrderId, state: &PaymentState) -> Option<Self> {
        let status = state.status()?;
        let mut view = Self {
            order_id: order_id.to_string(),
            status,
            payment_id: None,
            customer_id: None,
            amount_minor: None,
            currency: None,
            net_charge_minor: state.net_charge_minor(),
            reason: None,
        };
        let mut amount = |customer: &CustomerId, money: &Money| {
            view.customer_id = Some(customer.to_string());
            view.amount_minor = Some(money.minor);
            view.currency = Some(money.currency.to_string());
        };
        match state {
            PaymentState::None | PaymentState::Void => {}
            PaymentState::Captured(c) => {
                amount(&c.customer_id, &c.amount);
                view.payment_id = Some(c.payment_id.to_string());
            }
            PaymentState::Refunded { capture: c, reason } => {
                amount(&c.customer_id, &c.amount);
                view.payment_id = Some(c.payment_id.to_string());
                view.reason = Some(reason.clone());
            }
            PaymentState::Failed(f) => {
                amount(&f.customer_id, &f.amount);
                view.reason = Some(f.reason.code().to_owned());
            }
        }
        Some(view)
    }
}

/// A customer's account.
#[utoipa::path(get, path = "/accounts/{customer_id}", tag = "accounts",
    params(("customer_id" = String, Path, description = "The customer's id")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 404, description = "No account for this customer", body = ErrorBody),
        (status = 422, description = "Not a customer id", body = ErrorBody)))]
async fn get_account(
    State(db): State<Db>,
    Path(customer_id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let customer_id = CustomerId::parse(customer_id)?;
    match storage::get_account(&db, &customer_id).await? {
        Some(account) => Ok(Json(AccountView::from(&account))),
        None => Err(ApiError::NotFound(format!(
            "no account for customer {customer_id}"
        ))),
    }
}

/// Body fields are checked one by one so a client learns every problem at
/// once; `customer_id` in the body is optional but must match the path.
fn parse_account(path_id: String, body: &Value) -> Result<Account, ApiError> {
    let mut fields = BTreeMap::new();
    if !body.is_object() {
        fields.insert("body", "must be a JSON object".to_owned());
        return Err(ApiError::invalid_fields(fields));
    }
    let customer_id = match CustomerId::parse(path_id) {
        Ok(id) => Some(id),
        Err(e) => {
            fields.insert(e.field, e.message);
            None
        }
    };
    match (&customer_id, body.get("customer_id")) {
        (_, None) => {}
        (Some(id), Some(Value::String(given))) if given == id.as_str() => {}
        (_, Some(_)) => {
            fields.insert(
                "customer_id",
                "must match the customer id in the path".into(),
            );
        }
    }
    let balance_minor = match body.get("balance_minor") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= 0 => Some(v),
            Some(v) => {
                fields.insert("balance_minor", format!("must not be negative, got {v}"));
                None
            }
            None => {
                fields.insert("balance_minor", "must be an integer (minor units)".into());
                None
            }
        },
        Some(_) => {
            fields.insert("balance_minor", "must be an integer (minor units)".into());
            None
        }
        None => {
            fields.insert("balance_minor", "is required".into());
            None
        }
    };
    let currency = match body.get("currency") {
        Some(Value::String(code)) => match Currency::parse(code) {
            Ok(c) => Some(c),
            Err(e) => {
                fields.insert(e.field, e.problem);
                None
            }
        },
        Some(_) => {
            fields.insert("currency", "must be a string".into());
            None
        }
        None => {
            fields.insert("currency", "is required".into());
            None
        }
    };
    let blocked = match body.get("blocked") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            fields.insert("blocked", "must be true or false".into());
            false
        }
    };
    if let Some(unknown) = body
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| !["customer_id", "balance_minor", "currency", "blocked"].contains(&k.as_str()))
    {
        fields.insert("body", format!("unknown field `{unknown}`"));
    }
    match (customer_id, balance_minor, currency) {
        (Some(customer_id), Some(minor), Some(currency)) if fields.is_empty() => Ok(Account {
            customer_id,
            balance: Money { minor, currency },
            blocked,
        }),
        _ => Err(ApiError::invalid_fields(fields)),
    }
}

/// Creates (201) or replaces (200) an account (admin).
#[utoipa::path(put, path = "/accounts/{customer_id}", tag = "accounts",
    params(("customer_id" = String, Path, description = "The customer's id")),
    request_body = AccountUpdate,
    responses(
        (status = 200, description = "The account, replaced", body = AccountView),
        (status = 201, description = "The account, created", body = AccountView)))]
async fn put_account(
    State(db): State<Db>,
    Path(customer_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let account = parse_account(customer_id, &body)?;
    let created = storage::put_account(&db, &account).await?;
    info!(customer_id = %account.customer_id, balance = %account.balance,
        blocked = account.blocked, created, "account written");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(AccountView::from(&account))))
}

/// The payment of an order.
#[utoipa::path(get, path = "/payments/{order_id}", tag = "payments",
    params(("order_id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order's payment", body = PaymentView),
        (status = 404, description = "No payment for this order", body = ErrorBody)))]
async fn payment(
    State(db): State<Db>,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    find_by_order("payment", &order_id, |id| find_payment(db, id)).await
}

async fn find_payment(db: Db, id: OrderId) -> Result<Option<PaymentView>, ApiError> {
    let state = storage::get_payment(&db, &id).await?;
    Ok(PaymentView::new(&id, &state))
}
