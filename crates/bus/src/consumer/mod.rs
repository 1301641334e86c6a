//! Kafka → inbox + handler → offsets, retries, dead-letter topic.
//!
//! For every message, in partition order:
//!
//! 1. decode it (Confluent-Avro by schema id, or JSON on `order-requests`);
//! 2. open a unit of work, record the `event_id` in the inbox — a duplicate
//!    stops here with no effect;
//! 3. run the service's [`Handler`] inside that unit of work and commit;
//! 4. only then store the offset (librdkafka auto-commits stored offsets).
//!
//! A *retryable* failure at any step rolls back and retries the same
//! message with capped exponential backoff — nothing behind it moves, so
//! per-partition order holds. A *permanent* failure sends the original
//! bytes, key and headers to `dlq.<service>` with the reason and source
//! coordinates in headers, and the partition moves on.
//!
//! Whatever librdkafka has already fetched is applied as one batch: one
//! transaction, one multi-row inbox insert, the handlers in order. Any
//! failure in a batch rolls it back and replays it one message at a time,
//! where the rules above apply per message.
//!
//! No input may stop a partition:
//!
//! - a handler (or decoder) that panics is caught; the panic is the
//!   message's permanent error and the message is dead-lettered with the
//!   panic's text as its reason;
//! - a dead-letter copy that would not fit in `message.max.bytes` (the
//!   original is near the limit and the `choreo.*` headers tip it over) is
//!   sent with its payload truncated, headed [`dlq_headers::TRUNCATED`] and
//!   [`dlq_headers::ORIGINAL_SIZE`] ([`DeadLetter::fitted`]);
//! - a dead-letter send that fails permanently is retried once as a bare
//!   reference (coordinates and reason, no payload), then given up with an
//!   error log and `choreo_dead_letter_lost_total`; only retryable produce
//!   errors are retried in place.
//!
//! # Layout
//!
//! - this file: the [`Consumer`], its receive loop ([`Consumer::run`]:
//!   receive, gather a batch, apply it, store offsets) and the test-only
//!   [`CrashPoint`];
//! - [`step`]: applying one message or a batch — decoding, the apply step
//!   ([`crate::apply`]), retry in place with backoff, the batch's fallback to
//!   one message at a time;
//! - [`dead_letter`]: the dead-letter writer and the copy ([`DeadLetter`])
//!   the relay uses too;
//! - [`group`]: the consumer group's rebalance callbacks (readiness).
//!
//! All partitions of all subscribed topics are processed by this one loop,
//! in the order librdkafka hands messages over: a service is a single
//! writer to its database (SQLite has one connection), so a task per
//! partition would only queue on the same connection, and one loop keeps
//! each partition's order without any coordination. Replicas scale it out
//! across partitions (see "Scale a service").
// Everything here handles bytes from the broker: no unwrap, expect or
// indexing may turn one of them into a panic of the loop.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_events::AnyEvent;
use choreo_outbox::{Db, UnitOfWork};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod dead_letter;
mod group;
mod step;

pub use dead_letter::{dlq_headers, DeadLetter};
pub(crate) use dead_letter::{panic_message, send_dead_letter, Sent};
use group::GroupContext;
use step::Outcome;

use crate::apply;
use crate::codec::Codec;
use crate::error::{produce_failure, HandlerError, ProduceFailure};
use crate::trace::TraceContext;
use crate::{headers, relay, KafkaSettings};

/// Retries in place (handlers, dead-letter produces): 100 ms up to 10 s,
/// so a busy database is retried at once and an outage is not hammered.
const BACKOFF: apply::Backoff = apply::Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(10),
};
/// Most messages applied in one transaction.
const MAX_BATCH: usize = 256;

/// A decoded message, as a handler sees it.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub event: AnyEvent,
}

/// A service's reaction to one event. Runs inside a unit of work whose
/// inbox entry is already recorded; everything it writes through `uow`
/// (state changes, emitted events) commits atomically with it.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        uow: &mut UnitOfWork<'_>,
        msg: &Incoming,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Which topics a service consumes, in which group.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Service name: the inbox's consumer name and the `dlq.<service>` topic.
    pub service: String,
    pub group_id: String,
    pub topics: Vec<String>,
}

impl ConsumerSpec {
    pub fn new(service: &str, topics: &[&str]) -> Self {
        Self {
            service: service.to_owned(),
            group_id: service.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

/// Set once the group has assigned partitions to this consumer: the
/// service's `/readyz`.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Where a test makes the consumer stop as if its process were killed:
/// right after a transaction committed, before the offsets of its messages
/// are stored. [`Consumer::run`] then returns [`Error::Crashed`] without
/// storing or committing anything, so the test can show that the messages
/// are delivered again and the inbox keeps them from being applied twice.
#[derive(Clone)]
pub struct CrashPoint(Arc<CrashWhen>);

/// `(topic, partition, offset)` → whether to crash after it committed.
type CrashWhen = dyn Fn(&str, i32, i64) -> bool + Send + Sync;

impl CrashPoint {
    /// Crash after committing a batch that holds a message for which
    /// `when(topic, partition, offset)` is true.
    pub fn after_commit(when: impl Fn(&str, i32, i64) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(when))
    }
}

impl std::fmt::Debug for CrashPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashPoint(after_commit)")
    }
}

pub struct Consumer<H> {
    spec: ConsumerSpec,
    kafka: KafkaSettings,
    codec: Arc<Codec>,
    db: Db,
    handler: Arc<H>,
    readiness: Readiness,
    dlq: FutureProducer,
    dlq_topic: String,
    /// The dead-letter producer's `message.max.bytes`: what a copy must fit.
    dlq_limit: usize,
    crash: Option<CrashPoint>,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("spec", &self.spec)
            .finish()
    }
}

impl<H: Handler> Consumer<H> {
    pub fn new(
        spec: ConsumerSpec,
        kafka: KafkaSettings,
        codec: Arc<Codec>,
        db: Db,
        handler: Arc<H>,
    ) -> crate::Result<Self> {
        let dlq = kafka.producer_config().create()?;
        let dlq_limit = relay::max_message_bytes(&kafka)?;
        let dlq_topic = choreo_events::dlq_topic(&spec.service);
        Ok(Self {
            spec,
            kafka,
            codec,
            db,
            handler,
            readiness: Readiness::default(),
            dlq,
            dlq_topic,
            dlq_limit,
            crash: None,
        })
    }

    /// Stops at `point` (tests only: see [`CrashPoint`]).
    pub fn crash_at(mut self, point: CrashPoint) -> Self {
        self.crash = Some(point);
        self
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Consumes until `shutdown`; the message in flight finishes (or its
    /// retry is abandoned uncommitted, to be redelivered), then stored
    /// offsets are committed.
    pub async fn run(self, shutdown: CancellationToken) -> crate::Result<()> {
        let context = GroupContext {
            service: self.spec.service.clone(),
            readiness: self.readiness.clone(),
        };
        let consumer: StreamConsumer<GroupContext> = self
            .kafka
            .consumer_config(&self.spec.group_id)
            .create_with_context(context)?;
        let topics: Vec<&str> = self.spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(service = %self.spec.service, topics = ?topics, "consumer started");

        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = consumer.recv() => m,
            };
            let msg = match received {
                Ok(m) => m,
                Err(e) => {
                    warn!(service = %self.spec.service, error = %e, "consume error");
                    tokio::time::sleep(BACKOFF.first).await;
                    continue;
                }
            };
            // Whatever librdkafka has already fetched joins this batch: one
            // transaction for all of it instead of one per message.
            let mut batch = vec![msg];
            while batch.len() < MAX_BATCH {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        warn!(service = %self.spec.service, error = %e, "consume error");
                        break;
                    }
                    None => break,
                }
            }
            let outcome = match batch.as_slice() {
                [one] => self.process(one, &shutdown).await,
                many => self.process_batch(many, &shutdown).await,
            };
            match outcome {
                Outcome::Done => {
                    if let Some(crashed) = self.crash_point_reached(&batch) {
                        return Err(crashed);
                    }
                    for m in &batch {
                        consumer.store_offset_from_message(m)?;
                    }
                }
                Outcome::Interrupted => break,
            }
        }

        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(service = %self.spec.service, error = %e, "final commit failed"),
        }
        info!(service = %self.spec.service, "consumer stopped");
        Ok(())
    }

    /// The [`Error::Crashed`] to stop with, when a [`CrashPoint`] is set and
    /// the batch just committed holds the message it waits for.
    fn crash_point_reached(&self, batch: &[BorrowedMessage<'_>]) -> Option<crate::Error> {
        let point = self.crash.as_ref()?;
        let m = batch
            .iter()
            .find(|m| (point.0)(m.topic(), m.partition(), m.offset()))?;
        warn!(service = %self.spec.service, topic = m.topic(), partition = m.partition(), offset = m.offset(), "crash point reached: stopping before storing offsets");
        Some(crate::Error::Crashed {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        })
    }
}
