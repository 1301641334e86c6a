//! Helpers for a service's own integration tests: a fresh migrated database
//! on either backend, an in-process schema registry, and a `deliver` that
//! runs a handler exactly as the consumer loop does (inbox + handler +
//! commit, rollback on error).

use std::sync::Arc;

use choreo_bus::{Codec, Emitter, Handler, HandlerError, Incoming};
use choreo_events::{AnyEvent, EventMetadata};
use choreo_outbox::sqlx::migrate::Migrator;
use choreo_outbox::sqlx::{self, Row};
use choreo_outbox::testing::{fresh_postgres_url, sqlite_url, TestDatabase};
use choreo_outbox::{Backend, Db};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Keeps a test database alive.
pub enum Guard {
    Dir(TempDir),
    Pg(TestDatabase),
}

/// A fresh database of `kind`, migrated with the service's `migrator`.
pub async fn fresh_db(kind: Kind, migrator: fn(Backend) -> &'static Migrator) -> (Db, Guard) {
    let (url, guard) = match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (sqlite_url(dir.path()), Guard::Dir(dir))
        }
        Kind::Postgres => {
            let (url, db) = fresh_postgres_url().await;
            (url, Guard::Pg(db))
        }
    };
    let db = Db::connect(&url).await.unwrap();
    db.migrate(migrator(db.backend())).await.unwrap();
    (db, guard)
}

/// A `choreo-registry` on a free port, stopped when the returned token is
/// dropped... or cancelled; keep both values alive for the test.
pub struct TestRegistry {
    pub url: String,
    pub stop: CancellationToken,
    _dir: TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn registry() -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let registry = choreo_registry::Registry::open(dir.path()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(choreo_registry::run(
        listener,
        registry,
        stop.clone().cancelled_owned(),
    ));
    TestRegistry {
        url,
        stop,
        _dir: dir,
    }
}

pub fn emitter(registry: &TestRegistry) -> Emitter {
    Emitter::new(Arc::new(Codec::new(&registry.url)))
}

/// Runs `handler` on `event` through the consumer's own apply step
/// ([`choreo_bus::apply`]), with `service`'s inbox.
pub async fn deliver<H: Handler>(
    service: &str,
    db: &Db,
    handler: &H,
    event: impl Into<AnyEvent>,
) -> Result<(), HandlerError> {
    let event = event.into();
    let incoming = Incoming {
        topic: event.topic().name().to_owned(),
        partition: 0,
        offset: 0,
        key: Some(event.order_id().to_owned()),
        event,
    };
    choreo_bus::apply(
        service,
        db,
        handler,
        &incoming,
        choreo_bus::trace::TraceContext::new_root(),
    )
    .await
    .map(drop)
}

/// Like [`deliver`], retrying retryable errors as the consumer would.
pub async fn deliver_with_retries<H: Handler>(
    service: &str,
    db: &Db,
    handler: &H,
    event: impl Into<AnyEvent>,
) -> Result<(), HandlerError> {
    let event = event.into();
    for _ in 0..50 {
        match deliver(service, db, handler, event.clone()).await {
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
    Err(HandlerError::permanent(
        "still conflicting after 50 attempts",
    ))
}

pub fn meta(order_id: &str, producer: &str) -> EventMetadata {
    EventMetadata::new(order_id, producer, None)
}

/// Everything in the outbox, decoded, in publish order.
pub async fn outbox(db: &Db, registry: &TestRegistry) -> Vec<AnyEvent> {
    let codec = Codec::new(&registry.url);
    let rows = sqlx::query("SELECT topic, payload FROM outbox ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let mut events = Vec::new();
    for row in rows {
        let topic: String = row.get("topic");
        let payload: Vec<u8> = row.get("payload");
        events.push(codec.decode(&topic, "test", Some(&payload)).await.unwrap());
    }
    events
}

/// Runs each scenario — an `async fn(Kind)` of the calling module — once on
/// SQLite and once on PostgreSQL, as tests `sqlite::<scenario>` and
/// `postgres::<scenario>`: every backend test is written once. The runtime
/// has two workers, so scenarios that race connections really race on
/// PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::service::Kind::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::service::Kind::Postgres).await;
                }
            )+
        }
    };
}
