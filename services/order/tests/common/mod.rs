//! Shared test set-up: an in-process schema registry (emitting encodes
//! through it), a fresh database on the backend under test, and helpers
//! to deliver events through a real unit of work and read the outbox.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use choreo_bus::{Codec, Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    Address, AnyEvent, EventMetadata, OrderLine, OrderRequest, PlaceOrder, INGRESS_PRODUCER,
};
use choreo_order::handlers::Orders;
use choreo_order::startup::migrator;
use choreo_outbox::sqlx::{self, Row};
use choreo_outbox::testing::{fresh_postgres_url, sqlite_url, TestDatabase};
use choreo_outbox::Db;

pub use choreo_testkit::service::Kind;

/// A running registry; stopped on drop.
pub struct TestRegistry {
    pub url: String,
    stop: CancellationToken,
    _dir: TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start_registry() -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let registry = choreo_registry::Registry::open(dir.path()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let _ = choreo_registry::run(listener, registry, async move { stopped.cancelled().await })
            .await;
    });
    TestRegistry {
        url,
        stop,
        _dir: dir,
    }
}

/// Everything a storage test needs; keeps the database alive.
pub struct TestEnv {
    pub db: Db,
    pub registry: TestRegistry,
    pub codec: Arc<Codec>,
    pub url: String,
    _dir: TempDir,
    _pg: Option<TestDatabase>,
}

impl TestEnv {
    pub async fn new(backend: Kind) -> TestEnv {
        let registry = start_registry().await;
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match backend {
            Kind::Sqlite => (sqlite_url(dir.path()), None),
            Kind::Postgres => {
                let (url, guard) = fresh_postgres_url().await;
                (url, Some(guard))
            }
        };
        let db = Db::connect(&url).await.unwrap();
        db.migrate(migrator(db.backend())).await.unwrap();
        let codec = Arc::new(Codec::new(&registry.url));
        TestEnv {
            db,
            codec,
            registry,
            url,
            _dir: dir,
            _pg: pg,
        }
    }

    /// Service operations with the given deadline, on this database.
    pub fn orders(&self, deadline: Duration) -> Orders {
        Orders::new(self.db.clone(), Emitter::new(self.codec.clone()), deadline)
    }

    /// A second "replica": its own pool on the same database.
    pub async fn replica(&self, deadline: Duration) -> Orders {
        let db = Db::connect(&self.url).await.unwrap();
        Orders::new(db, Emitter::new(self.codec.clone()), deadline)
    }

    /// Outbox rows as (topic, key, decoded event), in publish order.
    pub async fn outbox(&self) -> Vec<(String, String, AnyEvent)> {
        let rows = sqlx::query("SELECT seq, topic, key, payload FROM outbox ORDER BY seq")
            .fetch_all(self.db.pool())
            .await
            .unwrap();
        let mut out = Vec::new();
        for row in rows {
            let topic: String = row.get("topic");
            let key: String = row.get("key");
            let payload: Vec<u8> = row.get("payload");
            let event = self
                .codec
                .decode(&topic, "test", Some(&payload))
                .await
                .unwrap();
            out.push((topic, key, event));
        }
        out
    }

    /// `(status, reason)` of an order.
    pub async fn status(&self, order_id: &str) -> (String, Option<String>) {
        let row = sqlx::query("SELECT status, reason FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        (row.get("status"), row.get("reason"))
    }

    pub async fn count_orders(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    pub async fn timeline(&self, order_id: &str) -> Vec<(String, String)> {
        sqlx::query("SELECT event_type, topic FROM order_timeline WHERE order_id = $1 ORDER BY seq")
            .bind(order_id)
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("event_type"), r.get("topic")))
            .collect()
    }
}

/// Delivers `event` the way the consumer does: inbox entry and handler in
/// one unit of work, committed on success, rolled back on failure.
pub async fn deliver(
    orders: &Orders,
    topic: &str,
    event: impl Into<AnyEvent>,
) -> Result<(), HandlerError> {
    let event = event.into();
    let mut uow = orders.db().begin().await.unwrap();
    if !uow
        .record_inbox("order", &event.metadata().event_id)
        .await
        .unwrap()
    {
        uow.rollback().await.unwrap();
        return Ok(());
    }
    let incoming = Incoming {
        topic: topic.to_owned(),
        partition: 0,
        offset: 0,
        key: Some(event.order_id().to_owned()),
        event,
    };
    match orders.handle(&mut uow, &incoming).await {
        Ok(()) => {
            uow.commit().await.unwrap();
            Ok(())
        }
        Err(e) => {
            uow.rollback().await.unwrap();
            Err(e)
        }
    }
}

/// Metadata of an event from `producer` about `order_id`.
pub fn meta(order_id: &str, producer: &str) -> EventMetadata {
    EventMetadata::new(order_id, producer, None)
}

pub fn place_order(order_id: &str, request_id: Option<&str>) -> PlaceOrder {
    PlaceOrder {
        metadata: meta(order_id, INGRESS_PRODUCER),
        request_id: request_id.map(str::to_owned),
        customer_id: "c-1".into(),
        customer_email: "ada@example.com".into(),
        items: vec![
            OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 1999,
            },
            OrderLine {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price_minor: 500,
            },
        ],
        currency: "EUR".into(),
        shipping_address: Address {
            name: "Ada".into(),
            line1: "Main St 1".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
    }
}

pub fn request(cmd: PlaceOrder) -> AnyEvent {
    AnyEvent::Request(OrderRequest::PlaceOrder(cmd))
}
