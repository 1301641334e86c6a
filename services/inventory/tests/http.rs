//! The HTTP API through the axum router, over a seeded SQLite database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use choreo_bus::Incoming;
use choreo_events::{Address, Event, EventMetadata, OrderLine, OrderPlaced};
use choreo_inventory::domain::Sku;
use choreo_inventory::storage::{self, Locking, SeedEntry};
use choreo_inventory::{handlers, http, SERVICE};
use choreo_outbox::testing::sqlite_url;
use choreo_outbox::Db;

struct TestApi {
    db: Db,
    router: Router,
    _dir: tempfile::TempDir,
}

async fn api() -> TestApi {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&sqlite_url(dir.path())).await.unwrap();
    db.migrate(storage::migrator(db.backend())).await.unwrap();
    let seed = [("WIDGET-1", 10), ("GADGET-2", 3)]
        .map(|(sku, available)| SeedEntry {
            sku: Sku::parse(sku).unwrap(),
            available,
        })
        .to_vec();
    storage::seed(db.pool(), &seed).await.unwrap();
    TestApi {
        router: choreo_bus::host::http_app(
            "inventory",
            http::router(db.pool().clone(), &choreo_bus::AdminToken::none()),
        ),
        db,
        _dir: dir,
    }
}

async fn call(api: &TestApi, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn list_stock_is_sorted_by_sku() {
    let api = api().await;
    let (status, body) = call(&api, "GET", "/stock", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!([
            {"sku": "GADGET-2", "available": 3, "reserved": 0, "committed": 0},
            {"sku": "WIDGET-1", "available": 10, "reserved": 0, "committed": 0},
        ])
    );
}

#[tokio::test]
async fn get_stock_by_sku_and_404_for_unknown() {
    let api = api().await;
    let (status, body) = call(&api, "GET", "/stock/WIDGET-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"sku": "WIDGET-1", "available": 10, "reserved": 0, "committed": 0})
    );
    let (status, body) = call(&api, "GET", "/stock/NOPE", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("NOPE"), "{body}");
}

#[tokio::test]
async fn put_stock_sets_available_and_creates_new_skus() {
    let api = api().await;
    let (status, body) = call(&api, "PUT", "/stock/WIDGET-1", Some(r#"{"available": 42}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"sku": "WIDGET-1", "available": 42, "reserved": 0, "committed": 0})
    );
    let (status, body) = call(&api, "PUT", "/stock/NEW-7", Some(r#"{"available": 0}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["available"], 0);
    let (status, _) = call(&api, "GET", "/stock/NEW-7", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn put_stock_rejects_invalid_bodies_with_422_per_field() {
    let api = api().await;
    for (body, field) in [
        (r#"{"available": -1}"#, "available"),
        (r#"{"available": 1.5}"#, "available"),
        (r#"{"available": "3"}"#, "available"),
        (r#"{}"#, "available"),
        (r#"{"available": 1, "reserved": 2}"#, "body"),
        (r#"[1]"#, "body"),
    ] {
        let (status, json) = call(&api, "PUT", "/stock/WIDGET-1", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(json["fields"][field].is_string(), "{body} → {json}");
        assert!(json["error"].is_string(), "{json}");
    }
    let (status, json) = call(&api, "PUT", "/stock/WIDGET-1", Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json["error"].is_string());
    // Nothing was changed by the rejected requests.
    let (_, body) = call(&api, "GET", "/stock/WIDGET-1", None).await;
    assert_eq!(body["available"], 10);
}

#[tokio::test]
async fn get_reservation_shows_status_and_lines() {
    let api = api().await;
    let (status, body) = call(&api, "GET", "/reservations/o-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());

    let event = OrderPlaced {
        metadata: EventMetadata::new("o-1", "order", None),
        customer_id: "c".into(),
        customer_email: "c@example.com".into(),
        items: vec![OrderLine {
            sku: "GADGET-2".into(),
            quantity: 2,
            unit_price_minor: 999,
        }],
        total_minor: 1998,
        currency: "EUR".into(),
        shipping_address: Address {
            name: "n".into(),
            line1: "l".into(),
            city: "c".into(),
            postal_code: "p".into(),
            country: "DE".into(),
        },
    }
    .into_any();
    let msg = Incoming {
        topic: "orders".into(),
        partition: 0,
        offset: 0,
        key: Some("o-1".into()),
        event,
    };
    let mut uow = api.db.begin().await.unwrap();
    uow.record_inbox(SERVICE, &msg.event.metadata().event_id)
        .await
        .unwrap();
    handlers::apply(&mut uow, Locking::None, &msg)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    let (status, body) = call(&api, "GET", "/reservations/o-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "order_id": "o-1",
            "status": "RESERVED",
            "lines": [{"sku": "GADGET-2", "quantity": 2, "unit_price_minor": 999}],
        })
    );
    let (_, stock) = call(&api, "GET", "/stock/GADGET-2", None).await;
    assert_eq!(
        stock,
        json!({"sku": "GADGET-2", "available": 1, "reserved": 2, "committed": 0})
    );
}
