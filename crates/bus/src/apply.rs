//! The apply step: one decoded message's whole effect on a service —
//! its inbox entry, its handler, the commit — exactly as the consumer loop
//! runs it for every message. Public so that the services' storage tests
//! and the simulation drive the services through this very code instead of
//! a copy of it; the loop adds only Kafka around it (decoding, retries,
//! dead letters, offsets).
// Handles data from outside: nothing here may panic on it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::panic::AssertUnwindSafe;

use choreo_outbox::{Db, UnitOfWork};
use futures::FutureExt;
use tracing::{debug, info_span, warn, Instrument};

use crate::consumer::{panic_message, Handler, Incoming};
use crate::error::HandlerError;
use crate::trace::{self, TraceContext};

/// What applying a message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// New: the handler ran and everything it wrote is committed.
    Applied,
    /// Its `event_id` was in `service`'s inbox already: nothing changed.
    Duplicate,
}

/// Applies `incoming` to `service` in a unit of work of its own: records
/// the `event_id` in the inbox (a duplicate stops there), runs `handler`
/// (a panic is the message's permanent error) and commits; on any error
/// rolls everything back, the inbox entry included, and returns the error
/// for the caller to retry or dead-letter.
pub async fn apply<H: Handler>(
    service: &str,
    db: &Db,
    handler: &H,
    incoming: &Incoming,
    trace_ctx: TraceContext,
) -> Result<Applied, HandlerError> {
    let mut uow = db.begin().await?;
    match apply_in(&mut uow, service, handler, incoming, trace_ctx).await {
        Ok(Applied::Applied) => {
            uow.commit().await?;
            Ok(Applied::Applied)
        }
        Ok(Applied::Duplicate) => {
            uow.rollback().await?;
            Ok(Applied::Duplicate)
        }
        Err(e) => {
            if let Err(rb) = uow.rollback().await {
                warn!(error = %rb, "rollback failed");
            }
            Err(e)
        }
    }
}

/// The inbox check and the handler inside `uow`, which the caller commits
/// or rolls back (the consumer applies a batch in one unit of work).
pub async fn apply_in<H: Handler>(
    uow: &mut UnitOfWork<'_>,
    service: &str,
    handler: &H,
    incoming: &Incoming,
    trace_ctx: TraceContext,
) -> Result<Applied, HandlerError> {
    let event_id = &incoming.event.metadata().event_id;
    if !uow.record_inbox(service, event_id).await? {
        note_duplicate(service, incoming);
        return Ok(Applied::Duplicate);
    }
    handle(uow, service, handler, incoming, trace_ctx).await?;
    Ok(Applied::Applied)
}

/// Counts and logs a duplicate delivery.
pub(crate) fn note_duplicate(service: &str, incoming: &Incoming) {
    metrics::counter!("choreo_duplicates_total", "service" => service.to_owned()).increment(1);
    debug!(
        service,
        event_id = ?incoming.event.metadata().event_id,
        topic = %incoming.topic, offset = incoming.offset,
        "duplicate event; no effect"
    );
}

/// The handler for an event whose inbox entry is already recorded, in its
/// span and trace context. A panicking handler is the message's permanent
/// error: caught here, the caller rolls the unit of work back and
/// dead-letters the message, and the partition goes on instead of the task
/// dying with it.
pub(crate) async fn handle<H: Handler>(
    uow: &mut UnitOfWork<'_>,
    service: &str,
    handler: &H,
    incoming: &Incoming,
    trace_ctx: TraceContext,
) -> Result<(), HandlerError> {
    let span = info_span!(
        "handle",
        service,
        topic = %incoming.topic,
        partition = incoming.partition,
        offset = incoming.offset,
        event_type = incoming.event.event_type(),
        order_id = ?incoming.event.metadata().order_id,
        trace_id = %trace_ctx.trace_id,
    );
    AssertUnwindSafe(trace::scope(trace_ctx, handler.handle(uow, incoming)))
        .catch_unwind()
        .instrument(span)
        .await
        .unwrap_or_else(|panic| {
            metrics::counter!("choreo_handler_panics_total", "service" => service.to_owned())
                .increment(1);
            Err(HandlerError::permanent(format!(
                "handler panicked: {}",
                panic_message(&*panic)
            )))
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use choreo_events::{AnyEvent, EventMetadata, OrderConfirmed};

    use super::*;

    /// Writes one outbox row per call (an observable effect), and fails,
    /// panics or succeeds as `mode` says.
    struct Effect {
        mode: AtomicU32,
        calls: AtomicU32,
    }

    const OK: u32 = 0;
    const RETRYABLE: u32 = 1;
    const PANIC: u32 = 2;

    impl Handler for Effect {
        async fn handle(
            &self,
            uow: &mut UnitOfWork<'_>,
            msg: &Incoming,
        ) -> Result<(), HandlerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            uow.append(choreo_outbox::OutboxMessage {
                topic: "orders".into(),
                key: msg.key.clone().unwrap_or_default(),
                payload: b"effect".to_vec(),
                headers: Vec::new(),
            })
            .await?;
            match self.mode.load(Ordering::SeqCst) {
                RETRYABLE => Err(HandlerError::retryable("not yet")),
                PANIC => panic!("boom"),
                _ => Ok(()),
            }
        }
    }

    fn incoming() -> Incoming {
        let event: AnyEvent = OrderConfirmed {
            metadata: EventMetadata::new("o1", "test", None),
            total_minor: 1,
            currency: "EUR".into(),
        }
        .into();
        Incoming {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
            key: Some("o1".into()),
            event,
        }
    }

    async fn rows(db: &Db, table: &str) -> i64 {
        let mut uow = db.begin().await.unwrap();
        let n: i64 = choreo_outbox::sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(uow.conn())
            .await
            .unwrap();
        uow.rollback().await.unwrap();
        n
    }

    #[tokio::test]
    async fn applies_once_and_a_failed_attempt_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/a.db", dir.path().display()))
            .await
            .unwrap();
        let handler = Effect {
            mode: AtomicU32::new(RETRYABLE),
            calls: AtomicU32::new(0),
        };
        let msg = incoming();
        let root = TraceContext::new_root;

        // A retryable failure: rolled back, inbox entry included.
        let failed = apply("svc", &db, &handler, &msg, root()).await;
        assert!(matches!(&failed, Err(e) if e.is_retryable()), "{failed:?}");
        assert_eq!(
            (rows(&db, "outbox").await, rows(&db, "inbox").await),
            (0, 0)
        );

        // A panic: the message's permanent error, nothing kept.
        handler.mode.store(PANIC, Ordering::SeqCst);
        let panicked = apply("svc", &db, &handler, &msg, root()).await;
        assert!(
            matches!(&panicked, Err(e) if !e.is_retryable() && e.reason().contains("handler panicked: boom")),
            "{panicked:?}"
        );
        assert_eq!(
            (rows(&db, "outbox").await, rows(&db, "inbox").await),
            (0, 0)
        );

        // Then it succeeds, once; the same event again is a duplicate that
        // never reaches the handler.
        handler.mode.store(OK, Ordering::SeqCst);
        assert_eq!(
            apply("svc", &db, &handler, &msg, root()).await.unwrap(),
            Applied::Applied
        );
        let calls = handler.calls.load(Ordering::SeqCst);
        assert_eq!(
            apply("svc", &db, &handler, &msg, root()).await.unwrap(),
            Applied::Duplicate
        );
        assert_eq!(
            handler.calls.load(Ordering::SeqCst),
            calls,
            "handler not run again"
        );
        assert_eq!(
            (rows(&db, "outbox").await, rows(&db, "inbox").await),
            (1, 1)
        );

        // Another service's inbox is its own.
        assert_eq!(
            apply("other", &db, &handler, &msg, root()).await.unwrap(),
            Applied::Applied
        );
    }
}
