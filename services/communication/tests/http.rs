//! `GET /notifications` through the axum router, on a fresh SQLite
//! database.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use choreo_communication::http;
use choreo_communication::storage::{self, Notification};
use common::{fresh_db, Kind};
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test]
async fn lists_notifications_newest_first_and_by_order() {
    let (db, _guard) = fresh_db(Kind::Sqlite).await;
    let mut uow = db.begin().await.unwrap();
    for (order_id, template, sent_at) in [
        ("o1", "ORDER_CONFIRMED", 100),
        ("o2", "ORDER_CANCELLED", 300),
        ("o3", "ORDER_CONFIRMED", 200),
    ] {
        let n = Notification {
            order_id: order_id.into(),
            template: template.into(),
            recipient: "alice@example.org".into(),
            message_id: format!("<{order_id}.{template}@choreo>"),
            sent_at,
        };
        storage::insert_notification(uow.conn(), &n).await.unwrap();
    }
    uow.commit().await.unwrap();
    let app = choreo_bus::host::http_app("communication", http::router(db.clone()));

    let get = |uri: &str| {
        let app = app.clone();
        let request = Request::get(uri).body(Body::empty()).unwrap();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };

    let (status, all) = get("/notifications").await;
    assert_eq!(status, StatusCode::OK);
    let order: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["o2", "o3", "o1"]);

    let (status, one) = get("/notifications?order_id=o3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        one,
        json!([{
            "order_id": "o3",
            "template": "ORDER_CONFIRMED",
            "recipient": "alice@example.org",
            "message_id": "<o3.ORDER_CONFIRMED@choreo>",
            "sent_at": 200
        }])
    );

    let (status, none) = get("/notifications?order_id=unknown").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(none, json!([]));
}
