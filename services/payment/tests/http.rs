//! The HTTP API through the axum router, on a fresh SQLite database.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use choreo_outbox::Db;
use choreo_payment::domain::{money, Capture, CustomerId, OrderId, PaymentId, PaymentState};
use choreo_payment::{http, storage};
use common::{fresh_db, Kind};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn app() -> (Router, Db, common::Guard) {
    let (db, guard) = fresh_db(Kind::Sqlite).await;
    (
        choreo_bus::host::http_app(
            "payment",
            http::router(db.clone(), &choreo_bus::AdminToken::none()),
        ),
        db,
        guard,
    )
}

#[tokio::test]
async fn put_creates_then_replaces_and_get_reads_back() {
    let (app, _db, _guard) = app().await;
    let body = json!({"balance_minor": 1200, "currency": "EUR", "blocked": false});
    let (status, created) = call(&app, "PUT", "/accounts/alice", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        created,
        json!({"customer_id": "alice", "balance_minor": 1200, "currency": "EUR", "blocked": false})
    );

    let body =
        json!({"customer_id": "alice", "balance_minor": 5, "currency": "USD", "blocked": true});
    let (status, _) = call(&app, "PUT", "/accounts/alice", Some(body)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, read) = call(&app, "GET", "/accounts/alice", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        read,
        json!({"customer_id": "alice", "balance_minor": 5, "currency": "USD", "blocked": true})
    );
}

#[tokio::test]
async fn unknown_account_is_404_json() {
    let (app, _db, _guard) = app().await;
    let (status, body) = call(&app, "GET", "/accounts/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("nobody"), "{body}");
}

#[tokio::test]
async fn invalid_account_bodies_are_422_per_field() {
    let (app, _db, _guard) = app().await;
    let bad = json!({"balance_minor": -1, "currency": "euro", "blocked": "no"});
    let (status, body) = call(&app, "PUT", "/accounts/alice", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["balance_minor", "currency", "blocked"] {
        assert!(body["fields"][field].is_string(), "{field} in {body}");
    }

    let other_id = json!({"customer_id": "bob", "balance_minor": 1, "currency": "EUR"});
    let (status, body) = call(&app, "PUT", "/accounts/alice", Some(other_id)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["fields"]["customer_id"].is_string(), "{body}");

    // No JSON at all: 400, as on every service.
    let (status, body) = call(&app, "PUT", "/accounts/alice", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{body}"
    );

    // Nothing was written by the rejected requests.
    let (status, _) = call(&app, "GET", "/accounts/alice", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn payment_view_reports_the_net_charge() {
    let (app, db, _guard) = app().await;
    let (status, body) = call(&app, "GET", "/payments/o1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());

    let order_id = OrderId::parse("o1").unwrap();
    let capture = Capture {
        payment_id: PaymentId::parse("p-1").unwrap(),
        customer_id: CustomerId::parse("alice").unwrap(),
        amount: money("amount_minor", 250, "EUR").unwrap(),
    };
    let captured = PaymentState::Captured(capture.clone());
    let mut uow = db.begin().await.unwrap();
    storage::save_payment(uow.conn(), &order_id, &PaymentState::None, &captured)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let (status, body) = call(&app, "GET", "/payments/o1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "CAPTURED");
    assert_eq!(body["payment_id"], "p-1");
    assert_eq!(body["customer_id"], "alice");
    assert_eq!(body["amount_minor"], 250);
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["net_charge_minor"], 250);

    let refunded = PaymentState::Refunded {
        capture,
        reason: "TIMEOUT".into(),
    };
    let mut uow = db.begin().await.unwrap();
    storage::save_payment(uow.conn(), &order_id, &captured, &refunded)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let (_, body) = call(&app, "GET", "/payments/o1", None).await;
    assert_eq!(body["status"], "REFUNDED");
    assert_eq!(body["net_charge_minor"], 0);
    assert_eq!(body["reason"], "TIMEOUT");
}
