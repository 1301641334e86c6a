//! The HTTP API through the built application's router (no broker needed:
//! nothing here consumes; emitting goes to the outbox through an
//! in-process registry).

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

use choreo_bus::ServiceSettings;
use choreo_events::{reasons, PaymentCompleted};
use choreo_order::{Application, Settings};

use crate::common::{deliver, meta, start_registry, TestRegistry};

struct TestApp {
    app: Application,
    router: Router,
    _registry: TestRegistry,
    _dir: TempDir,
}

async fn spawn_app(deadline_ms: u64) -> TestApp {
    let registry = start_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let vars: Vec<(String, String)> = [
        ("CHOREO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("CHOREO_REGISTRY_URL", registry.url.clone()),
        ("CHOREO_DATA_DIR", dir.path().display().to_string()),
        ("CHOREO_ORDER_DEADLINE_MS", deadline_ms.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let app = Application::build(Settings::from_vars(&vars).unwrap())
        .await
        .unwrap();
    assert_ne!(app.port(), 0);
    let router = app.router();
    TestApp {
        app,
        router,
        _registry: registry,
        _dir: dir,
    }
}

fn order_body() -> Value {
    json!({
        "customer_id": "c-1",
        "customer_email": "ada@example.com",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1999}],
        "currency": "EUR",
        "shipping_address": {"name": "Ada", "line1": "Main St 1", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"}
    })
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    json: Value,
}

impl TestApp {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
        key: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            location,
            json,
        }
    }

    async fn post(&self, body: &Value, key: Option<&str>) -> Reply {
        self.call(Method::POST, "/orders", Some(&body.to_string()), key)
            .await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None, None).await
    }

    async fn place(&self) -> String {
        let reply = self.post(&order_body(), None).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
        reply.json["order_id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn post_places_an_order_and_get_shows_it() {
    let t = spawn_app(30_000).await;
    let reply = t.post(&order_body(), None).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.json);
    let id = reply.json["order_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(reply.json, json!({"order_id": id, "status": "PENDING"}));
    assert_eq!(
        reply.location.as_deref(),
        Some(format!("/orders/{id}").as_str())
    );

    let got = t.get(&format!("/orders/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    let o = &got.json;
    assert_eq!(o["order_id"], id.as_str());
    assert_eq!(o["status"], "PENDING");
    assert_eq!(o["reason"], Value::Null);
    assert_eq!(o["customer_id"], "c-1");
    assert_eq!(o["total_minor"], 3998);
    assert_eq!(o["currency"], "EUR");
    let created = o["created_at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(created).unwrap();
    chrono::DateTime::parse_from_rfc3339(o["updated_at"].as_str().unwrap()).unwrap();
    let timeline = o["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["event_type"], "OrderPlaced");
    assert_eq!(timeline[0]["topic"], "orders");
    chrono::DateTime::parse_from_rfc3339(timeline[0]["at"].as_str().unwrap()).unwrap();

    let missing = t.get("/orders/no-such-order").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json["error"]
        .as_str()
        .unwrap()
        .contains("no-such-order"));
}

#[tokio::test]
async fn idempotency_key_returns_the_same_order() {
    let t = spawn_app(30_000).await;
    let first = t.post(&order_body(), Some("key-1")).await;
    let again = t.post(&order_body(), Some("key-1")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json, first.json);
    assert_eq!(again.location, first.location);
    let other = t.post(&order_body(), Some("key-2")).await;
    assert_ne!(other.json["order_id"], first.json["order_id"]);

    let list = t.get("/orders").await;
    assert_eq!(list.json["orders"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_orders_get_one_message_per_field() {
    let t = spawn_app(30_000).await;
    let mut body = order_body();
    body["customer_email"] = json!("ada.example.com");
    body["currency"] = json!("XYZ");
    body["items"][0]["quantity"] = json!(0);
    body["shipping_address"]["country"] = json!("Germany");
    let reply = t.post(&body, None).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.json,
        json!({
            "error": "invalid order",
            "fields": {
                "customer_email": "not an email address",
                "currency": "unknown currency code XYZ",
                "items[0].quantity": "must be > 0",
                "shipping_address.country": "must be two uppercase letters (ISO 3166-1 alpha-2)",
            }
        })
    );

    let empty = t.post(&json!({"items": []}), None).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty.json["fields"]["items"], "must not be empty");
    assert_eq!(empty.json["fields"]["customer_id"], "must not be empty");

    let malformed = t
        .call(Method::POST, "/orders", Some("{\"items\": ["), None)
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.json["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed JSON"));

    let mut wrong_type = order_body();
    wrong_type["items"][0]["quantity"] = json!("two");
    let reply = t.post(&wrong_type, None).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.json["error"].as_str().unwrap().contains("quantity"),
        "{}",
        reply.json
    );

    let list = t.get("/orders").await;
    assert_eq!(list.json["orders"], json!([]));
}

#[tokio::test]
async fn list_filters_and_pages() {
    let t = spawn_app(30_000).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(t.place().await);
    }
    let cancelled = t
        .call(Method::DELETE, &format!("/orders/{}", ids[1]), None, None)
        .await;
    assert_eq!(cancelled.status, StatusCode::ACCEPTED);

    let mut seen = Vec::new();
    let mut uri = "/orders?limit=2".to_owned();
    loop {
        let page = t.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.json);
        let orders = page.json["orders"].as_array().unwrap();
        assert!(orders.len() <= 2);
        seen.extend(
            orders
                .iter()
                .map(|o| o["order_id"].as_str().unwrap().to_owned()),
        );
        match page.json["next_after"].as_str() {
            Some(after) => uri = format!("/orders?limit=2&after={after}"),
            None => break,
        }
    }
    // Pages concatenate to the one-page listing, which holds every order
    // exactly once.
    let all: Vec<String> = t.get("/orders?limit=500").await.json["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, all);
    let (mut sorted_seen, mut sorted_ids) = (seen.clone(), ids.clone());
    sorted_seen.sort();
    sorted_ids.sort();
    assert_eq!(sorted_seen, sorted_ids);

    let only = t.get("/orders?status=CANCELLED").await;
    let orders = only.json["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["order_id"], ids[1].as_str());
    assert_eq!(orders[0]["reason"], reasons::CUSTOMER_CANCELLED);
    assert_eq!(
        t.get("/orders?status=PENDING").await.json["orders"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    assert_eq!(
        t.get("/orders?status=SHIPPED").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        t.get("/orders?limit=0").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        t.get("/orders?limit=ten").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.get("/orders?after=nope").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn delete_cancels_pending_and_refuses_terminal() {
    let t = spawn_app(30_000).await;
    let id = t.place().await;
    let uri = format!("/orders/{id}");
    let reply = t.call(Method::DELETE, &uri, None, None).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.json["status"], "CANCELLED");
    assert_eq!(reply.json["reason"], reasons::CUSTOMER_CANCELLED);
    let types: Vec<&str> = reply.json["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderCancelled"]);

    let again = t.call(Method::DELETE, &uri, None, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json, json!({"error": "order is already CANCELLED"}));

    // Confirmed by the saga, then cancelled by the customer: refused.
    let confirmed = t.place().await;
    let paid = PaymentCompleted {
        metadata: meta(&confirmed, "payment"),
        payment_id: "p-1".into(),
        customer_id: "c-1".into(),
        amount_minor: 3998,
        currency: "EUR".into(),
    };
    deliver(t.app.service().orders(), "payments", paid)
        .await
        .unwrap();
    let refused = t
        .call(Method::DELETE, &format!("/orders/{confirmed}"), None, None)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.json, json!({"error": "order is already CONFIRMED"}));

    let unknown = t.call(Method::DELETE, "/orders/nope", None, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn long_poll_answers_on_change_or_timeout() {
    let t = spawn_app(30_000).await;
    let id = t.place().await;

    let started = Instant::now();
    let reply = t
        .get(&format!("/orders/{id}?wait=terminal&timeout_ms=300"))
        .await;
    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["status"], "PENDING");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");

    let canceller = {
        let router = t.router.clone();
        let uri = format!("/orders/{id}");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let request = Request::builder()
                .method(Method::DELETE)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        })
    };
    let started = Instant::now();
    let reply = t
        .get(&format!("/orders/{id}?wait=terminal&timeout_ms=10000"))
        .await;
    assert_eq!(reply.json["status"], "CANCELLED");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(canceller.await.unwrap(), StatusCode::ACCEPTED);

    let bad = t.get(&format!("/orders/{id}?wait=forever")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn expired_orders_are_cancelled_by_the_timer() {
    let t = spawn_app(1).await;
    let id = t.place().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(t.app.service().orders().expire_due().await.unwrap(), 1);
    let got = t.get(&format!("/orders/{id}")).await;
    assert_eq!(got.json["status"], "CANCELLED");
    assert_eq!(got.json["reason"], reasons::TIMEOUT);
}

#[tokio::test]
async fn running_app_serves_http_and_expires_orders_until_stopped() {
    let registry = start_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let vars: Vec<(String, String)> = [
        ("CHOREO_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("CHOREO_REGISTRY_URL", registry.url.clone()),
        ("CHOREO_DATA_DIR", dir.path().display().to_string()),
        // Nothing listens there: the consumer and relay just retry.
        ("CHOREO_BROKERS", "127.0.0.1:1".to_owned()),
        // The relay's in-flight publish is not interrupted by shutdown;
        // give up on it quickly.
        ("CHOREO_KAFKA_MESSAGE_TIMEOUT_MS", "500".to_owned()),
        ("CHOREO_ORDER_DEADLINE_MS", "50".to_owned()),
        ("CHOREO_ORDER_TIMER_TICK_MS", "20".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let app = Application::build(Settings::from_vars(&vars).unwrap())
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let placed: Value = client
        .post(format!("{base}/orders"))
        .json(&order_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = placed["order_id"].as_str().unwrap();
    let order: Value = client
        .get(format!("{base}/orders/{id}?wait=terminal&timeout_ms=5000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["reason"], reasons::TIMEOUT);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stops after shutdown")
        .unwrap()
        .unwrap();
}
