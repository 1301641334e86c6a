//! The apply step: one decoded message's whole effect on a service —
//! its inbox entry, its handler, the commit — exactly as the consumer loop
//! runs it for every message. Public so that the services' storage tests
//! and the simulation drive the services through this very code instead of
//! a copy of it.
//!
//! - [`apply`]: one message, one unit of work.
//! - [`apply_batch`]: several messages in one unit of work, all or nothing.
//! - [`with_retries`]: any attempt retried in place while its failure is
//!   retryable, with a doubling wait, until shutdown.
//! - [`apply_all`]: what the consumer does with what it received — the
//!   batch at once; if that fails, each message alone with retries, where a
//!   permanent failure marks only its own message for the dead-letter topic.
//!
//! The loop adds only Kafka around these: decoding, producing dead
//! letters, storing offsets.
// Handles data from outside: nothing here may panic on it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use choreo_outbox::{Db, UnitOfWork};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

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

/// Applies `batch` to `service` in one unit of work: one statement records
/// every inbox entry (an event id repeated inside the batch is a duplicate
/// like any other), each new message's handler runs, one commit. Any error
/// rolls the whole batch back and is returned.
pub async fn apply_batch<H: Handler>(
    service: &str,
    db: &Db,
    handler: &H,
    batch: &[(Incoming, TraceContext)],
) -> Result<Vec<Applied>, HandlerError> {
    let mut uow = db.begin().await?;
    let result = async {
        let ids: Vec<&str> = batch
            .iter()
            .map(|(i, _)| i.event.metadata().event_id.as_str())
            .collect();
        let mut fresh = uow.record_inbox_many(service, &ids).await?;
        let mut applied = Vec::with_capacity(batch.len());
        for (incoming, trace_ctx) in batch {
            if fresh.remove(&incoming.event.metadata().event_id) {
                handle(&mut uow, service, handler, incoming, trace_ctx.clone()).await?;
                applied.push(Applied::Applied);
            } else {
                note_duplicate(service, incoming);
                applied.push(Applied::Duplicate);
            }
        }
        Ok::<_, HandlerError>(applied)
    }
    .await;
    match result {
        Ok(applied) => {
            uow.commit().await?;
            Ok(applied)
        }
        Err(e) => {
            if let Err(rb) = uow.rollback().await {
                warn!(error = %rb, "rollback failed");
            }
            Err(e)
        }
    }
}

/// How long to wait between retries in place: `first`, doubled per
/// attempt, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// How one message ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// It succeeded on attempt `attempts`.
    Done { value: T, attempts: u32 },
    /// It failed permanently on attempt `attempts`: the caller moves it to
    /// the dead-letter topic with `error.reason()`.
    DeadLetter { error: HandlerError, attempts: u32 },
    /// Shutdown came while waiting to retry: nothing was committed and the
    /// message is delivered again after a restart.
    Interrupted,
}

/// Runs `attempt` (of `what`, for the log) until it succeeds or fails permanently, waiting per
/// `backoff` after each retryable failure (the partition waits with it:
/// what follows the message must not overtake it), until `shutdown`.
pub async fn with_retries<T, F, Fut>(
    service: &str,
    what: &str,
    backoff: Backoff,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Outcome<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HandlerError>>,
{
    let mut attempts: u32 = 0;
    let mut wait = backoff.first;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(value) => return Outcome::Done { value, attempts },
            Err(error) if !error.is_retryable() => {
                return Outcome::DeadLetter { error, attempts };
            }
            Err(error) => {
                metrics::counter!("choreo_retried_total", "service" => service.to_owned())
                    .increment(1);
                warn!(service, what, attempts, reason = %error.reason(), "retryable failure; retrying in place");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Outcome::Interrupted,
                }
                wait = (wait * 2).min(backoff.max);
            }
        }
    }
}

/// What the consumer does with a batch it received, without the broker:
/// [`apply_batch`] first; if the batch fails it is rolled back and each
/// message is applied alone through [`with_retries`], so a retryable
/// failure is retried in place and a permanent one marks only its own
/// message. One outcome per message, in order; after an
/// [`Outcome::Interrupted`] the rest are not tried (and not returned).
pub async fn apply_all<H: Handler>(
    service: &str,
    db: &Db,
    handler: &H,
    batch: &[(Incoming, TraceContext)],
    backoff: Backoff,
    shutdown: &CancellationToken,
) -> Vec<Outcome<Applied>> {
    if batch.len() > 1 {
        match apply_batch(service, db, handler, batch).await {
            Ok(applied) => {
                return applied
                    .into_iter()
                    .map(|value| Outcome::Done { value, attempts: 1 })
                    .collect();
            }
            Err(e) => {
                debug!(service, size = batch.len(), error = %e, "batch failed; one message at a time");
            }
        }
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for (incoming, trace_ctx) in batch {
        let what = format!(
            "{}/{}/{}",
            incoming.topic, incoming.partition, incoming.offset
        );
        let outcome = with_retries(service, &what, backoff, shutdown, || {
            apply(service, db, handler, incoming, trace_ctx.clone())
        })
        .await;
        let stop = matches!(outcome, Outcome::Interrupted);
        outcomes.push(outcome);
        if stop {
            break;
        }
    }
    outcomes
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
    let span = trace::process_span(service, incoming, trace_ctx);
    AssertUnwindSafe(handler.handle(uow, incoming))
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

    /// Writes one outbox row per new message, keyed by its order id, and
    /// behaves by that id: `poison-*` fails permanently, `panic-*` panics,
    /// `flaky-*` fails retryably on its first two calls.
    #[derive(Default)]
    struct Scripted {
        calls: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    }

    impl Scripted {
        fn calls(&self, order_id: &str) -> u32 {
            self.calls
                .lock()
                .unwrap()
                .get(order_id)
                .copied()
                .unwrap_or(0)
        }
    }

    impl Handler for Scripted {
        async fn handle(
            &self,
            uow: &mut UnitOfWork<'_>,
            msg: &Incoming,
        ) -> Result<(), HandlerError> {
            let id = msg.event.metadata().order_id.clone();
            let calls = {
                let mut calls = self.calls.lock().unwrap();
                let n = calls.entry(id.clone()).or_default();
                *n += 1;
                *n
            };
            uow.append(choreo_outbox::OutboxMessage {
                topic: "orders".into(),
                key: id.clone(),
                payload: b"effect".to_vec(),
                headers: Vec::new(),
            })
            .await?;
            if id.starts_with("poison") {
                return Err(HandlerError::permanent(format!("{id} is refused")));
            }
            if id.starts_with("panic") {
                panic!("boom on {id}");
            }
            if id.starts_with("flaky") && calls <= 2 {
                return Err(HandlerError::retryable("database busy"));
            }
            Ok(())
        }
    }

    fn message(order_id: &str, offset: i64) -> (Incoming, TraceContext) {
        let event: AnyEvent = OrderConfirmed {
            metadata: EventMetadata::new(order_id, "test", None),
            total_minor: 1,
            currency: "EUR".into(),
        }
        .into();
        let incoming = Incoming {
            topic: "orders".into(),
            partition: 0,
            offset,
            key: Some(order_id.into()),
            event,
        };
        (incoming, TraceContext::new_root())
    }

    async fn sqlite() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/a.db", dir.path().display()))
            .await
            .unwrap();
        (db, dir)
    }

    /// The keys of the outbox rows, in order: what was committed.
    async fn committed(db: &Db) -> Vec<String> {
        let mut uow = db.begin().await.unwrap();
        let keys: Vec<String> =
            choreo_outbox::sqlx::query_scalar("SELECT key FROM outbox ORDER BY seq")
                .fetch_all(uow.conn())
                .await
                .unwrap();
        uow.rollback().await.unwrap();
        keys
    }

    const FAST: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(4),
    };

    /// [`apply_all`] of `batch` with no shutdown, summarised.
    async fn run(db: &Db, handler: &Scripted, batch: &[(Incoming, TraceContext)]) -> Vec<String> {
        summary(&apply_all("svc", db, handler, batch, FAST, &CancellationToken::new()).await)
    }

    fn summary(outcomes: &[Outcome<Applied>]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Done { value, attempts } => format!("{value:?} after {attempts}"),
                Outcome::DeadLetter { error, attempts } => {
                    format!("dead letter after {attempts}: {}", error.reason())
                }
                Outcome::Interrupted => "interrupted".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_commits_at_once_and_a_repeat_inside_it_is_a_duplicate() {
        let metrics = choreo_telemetry::Metrics::global();
        let (db, _dir) = sqlite().await;
        let handler = Scripted::default();
        let (a, b) = (message("a", 0), message("b", 1));
        let repeat = (a.0.clone(), a.1.clone());
        assert_eq!(
            summary(
                &apply_all(
                    "batch-svc",
                    &db,
                    &handler,
                    &[a, b, repeat],
                    FAST,
                    &CancellationToken::new()
                )
                .await
            ),
            ["Applied after 1", "Applied after 1", "Duplicate after 1"]
        );
        assert_eq!(committed(&db).await, ["a", "b"]);
        assert_eq!((handler.calls("a"), handler.calls("b")), (1, 1));
        // Duplicates are counted where operators see them.
        let shown = metrics.render();
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("choreo_duplicates_total{service=\"batch-svc\"} 1")),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_failing_batch_falls_back_to_one_message_at_a_time() {
        let (db, _dir) = sqlite().await;
        let handler = Scripted::default();
        let batch = [
            message("a", 0),
            message("poison-1", 1),
            message("flaky-1", 2),
            message("panic-1", 3),
            message("b", 4),
        ];
        assert_eq!(
            run(&db, &handler, &batch).await,
            [
                "Applied after 1",
                "dead letter after 1: poison-1 is refused",
                // The batch stopped at poison-1 before reaching it; alone it
                // fails twice and is retried in place.
                "Applied after 3",
                "dead letter after 1: handler panicked: boom on panic-1",
                "Applied after 1",
            ]
        );
        // The batch's writes were rolled back: each message's effect is
        // there once, the failed ones' not at all.
        assert_eq!(committed(&db).await, ["a", "flaky-1", "b"]);
        // Delivered again: what was applied is a duplicate, what was
        // refused is refused again, nothing new is written.
        assert_eq!(
            run(&db, &handler, &batch).await,
            [
                "Duplicate after 1",
                "dead letter after 1: poison-1 is refused",
                "Duplicate after 1",
                "dead letter after 1: handler panicked: boom on panic-1",
                "Duplicate after 1",
            ]
        );
        assert_eq!(committed(&db).await, ["a", "flaky-1", "b"]);
    }

    #[tokio::test]
    async fn a_retryable_failure_is_retried_in_place_until_it_succeeds() {
        let (db, _dir) = sqlite().await;
        let handler = Scripted::default();
        assert_eq!(
            run(&db, &handler, &[message("flaky-1", 0)]).await,
            ["Applied after 3"]
        );
        assert_eq!(handler.calls("flaky-1"), 3);
        assert_eq!(committed(&db).await, ["flaky-1"]);
    }

    #[tokio::test]
    async fn shutdown_during_a_retry_leaves_the_message_and_the_rest_untried() {
        let (db, _dir) = sqlite().await;
        let handler = Scripted::default();
        let stopped = CancellationToken::new();
        stopped.cancel();
        let batch = [message("flaky-1", 0), message("b", 1)];
        let outcomes = apply_all("svc", &db, &handler, &batch, FAST, &stopped).await;
        assert_eq!(summary(&outcomes), ["interrupted"]);
        assert!(committed(&db).await.is_empty());
        // The batch stopped at flaky-1's failure; alone, flaky-1 waits to
        // be retried, shutdown ends the wait, b is never tried.
        assert_eq!(handler.calls("b"), 0);
        assert_eq!(handler.calls("flaky-1"), 2);
    }

    #[tokio::test]
    async fn waits_double_up_to_the_maximum() {
        let started = tokio::time::Instant::now();
        let mut seen = Vec::new();
        let backoff = Backoff {
            first: Duration::from_millis(10),
            max: Duration::from_millis(25),
        };
        let outcome = with_retries("svc", "test", backoff, &CancellationToken::new(), || {
            seen.push(started.elapsed());
            let n = seen.len();
            async move {
                if n < 4 {
                    Err(HandlerError::retryable("not yet"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert!(
            matches!(
                outcome,
                Outcome::Done {
                    value: 4,
                    attempts: 4
                }
            ),
            "{outcome:?}"
        );
        // 10, 20, then capped at 25: at least 55 ms in all.
        assert!(seen[3] >= Duration::from_millis(55), "{seen:?}");
    }
}
