//! Test helpers shared by the integration tests: the test kit's service
//! helpers, bound to this service's name and migrations.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses a different subset"
)]

use choreo_bus::{Handler, HandlerError};
use choreo_events::AnyEvent;
use choreo_outbox::Db;
use choreo_payment::config::SERVICE;
use choreo_payment::storage;
pub use choreo_testkit::service::{emitter, meta, outbox, registry, Guard, Kind, TestRegistry};

pub async fn fresh_db(kind: Kind) -> (Db, Guard) {
    choreo_testkit::service::fresh_db(kind, storage::migrator).await
}

/// Runs `handler` on `event` the way the consumer does.
pub async fn deliver<H: Handler>(
    db: &Db,
    handler: &H,
    event: impl Into<AnyEvent>,
) -> Result<(), HandlerError> {
    choreo_testkit::service::deliver(SERVICE, db, handler, event).await
}

/// Like [`deliver`], retrying retryable errors as the consumer would.
pub async fn deliver_with_retries<H: Handler>(
    db: &Db,
    handler: &H,
    event: impl Into<AnyEvent>,
) -> Result<(), HandlerError> {
    choreo_testkit::service::deliver_with_retries(SERVICE, db, handler, event).await
}
