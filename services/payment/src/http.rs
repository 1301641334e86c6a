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
use axum::routing::{get, put};
use axum::{Json, Router};
use choreo_bus::api_error::{admin_only, get_by_order, JsonBody};
use choreo_bus::AdminToken;
use choreo_outbox::Db;
use serde::Serialize;
use serde_json::Value;
use tracing::info;

use crate::domain::{Account, Currency, CustomerId, Invalid, Money, OrderId, PaymentState};
use crate::storage;

/// The service's routes (the host adds `/healthz`, `/readyz`, `/metrics`);
/// setting an account needs `admin` when one is set.
pub fn router(db: Db, admin: &AdminToken) -> Router {
    Router::new()
        .route(
            "/accounts/{customer_id}",
            get(get_account).merge(admin_only(admin, put(put_account))),
        )
        .route("/payments/{order_id}", get_by_order("payment", payment))
        .with_state(db)
}

pub use choreo_bus::ApiError;

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::invalid_fields([(e.field, e.message)])
    }
}

/// `GET /accounts/{customer_id}` and `PUT` answers.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
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

/// Creates (201) or replaces (200) an account.
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

async fn payment(db: Db, id: OrderId) -> Result<Option<PaymentView>, ApiError> {
    let state = storage::get_payment(&db, &id).await?;
    Ok(PaymentView::new(&id, &state))
}
