//! The HTTP API through the axum router, over a SQLite database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use choreo_bus::Incoming;
use choreo_courier::domain::{Country, FreshIds, Routing};
use choreo_courier::handlers::Courier;
use choreo_courier::{http, storage, SERVICE};
use choreo_events::{
    reasons, Address, AnyEvent, Event, EventMetadata, OrderCancelled, StockReserved,
};
use choreo_outbox::testing::sqlite_url;
use choreo_outbox::Db;

async fn get(db: &Db, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = choreo_bus::host::http_app("courier", http::router(db.pool().clone()))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn apply(db: &Db, event: AnyEvent) {
    let courier = Courier::new(
        db.backend(),
        Routing {
            countries: [Country::parse("NL").unwrap()].into(),
            carrier: "choreo-express".into(),
        },
    );
    let msg = Incoming {
        topic: event.topic().name().into(),
        partition: 0,
        offset: 0,
        key: Some(event.order_id().into()),
        event,
    };
    let mut uow = db.begin().await.unwrap();
    uow.record_inbox(SERVICE, &msg.event.metadata().event_id)
        .await
        .unwrap();
    let ids = FreshIds {
        shipment_id: "7d3c2a4e-0000-4000-8000-000000000001".into(),
        tracking_number: "CH1234567890".into(),
    };
    courier.apply(&mut uow, &msg, ids).await.unwrap();
    uow.commit().await.unwrap();
}

fn reserved(order_id: &str, country: &str) -> AnyEvent {
    StockReserved {
        metadata: EventMetadata::new(order_id, "inventory", None),
        items: Vec::new(),
        customer_id: "c".into(),
        customer_email: "c@example.com".into(),
        total_minor: 100,
        currency: "EUR".into(),
        shipping_address: Address {
            name: "n".into(),
            line1: "l".into(),
            city: "c".into(),
            postal_code: "p".into(),
            country: country.into(),
        },
    }
    .into_any()
}

#[tokio::test]
async fn get_shipment_for_every_status_and_404_for_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&sqlite_url(dir.path())).await.unwrap();
    db.migrate(storage::migrator(db.backend())).await.unwrap();

    let (status, body) = get(&db, "/shipments/o-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("o-1"), "{body}");

    apply(&db, reserved("o-1", "NL")).await;
    let (status, body) = get(&db, "/shipments/o-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "order_id": "o-1",
            "status": "MANIFESTED",
            "shipment_id": "7d3c2a4e-0000-4000-8000-000000000001",
            "carrier": "choreo-express",
            "tracking_number": "CH1234567890",
            "country": "NL",
        })
    );

    apply(&db, reserved("o-2", "US")).await;
    let (status, body) = get(&db, "/shipments/o-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "order_id": "o-2", "status": "FAILED", "shipment_id": null,
            "carrier": null, "tracking_number": null, "country": "US",
        })
    );

    let cancel = OrderCancelled {
        metadata: EventMetadata::new("o-3", "order", None),
        reason: reasons::TIMEOUT.into(),
        detail: None,
    };
    apply(&db, cancel.into_any()).await;
    let (_, body) = get(&db, "/shipments/o-3").await;
    assert_eq!(body["status"], "VOID");
    assert_eq!(body["country"], Value::Null);
}

#[tokio::test]
async fn an_invalid_stock_reserved_shows_as_failed_with_its_country() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&sqlite_url(dir.path())).await.unwrap();
    db.migrate(storage::migrator(db.backend())).await.unwrap();

    let AnyEvent::Inventory(choreo_events::InventoryEvent::StockReserved(mut bad)) =
        reserved("o-4", "nl")
    else {
        unreachable!()
    };
    bad.currency = "XYZ".into();
    apply(&db, bad.into_any()).await;
    let (status, body) = get(&db, "/shipments/o-4").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "order_id": "o-4", "status": "FAILED", "shipment_id": null,
            "carrier": null, "tracking_number": null, "country": "NL",
        })
    );
}

/// Storage errors over HTTP: a row that cannot be read back is 500 (a
/// retry reads it again), a database that is away is 503 with
/// `Retry-After`; neither body shows the cause.
#[tokio::test]
async fn storage_errors_answer_500_or_503() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&sqlite_url(dir.path())).await.unwrap();
    db.migrate(storage::migrator(db.backend())).await.unwrap();
    choreo_outbox::sqlx::query(
        "INSERT INTO shipments (order_id, status, updated_at) VALUES ('o-5', 'LOST', 0)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let (status, body) = get(&db, "/shipments/o-5").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "internal error"}));

    db.pool().close().await;
    let request = Request::builder()
        .uri("/shipments/o-5")
        .body(Body::empty())
        .unwrap();
    let response = choreo_bus::host::http_app("courier", http::router(db.pool().clone()))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}
