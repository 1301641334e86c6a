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
//! The module owns the dead-letter copy ([`DeadLetter`]) the relay uses too.
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
use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::apply;
use crate::codec::Codec;
use crate::error::{produce_failure, HandlerError, ProduceFailure};
use crate::trace::TraceContext;
use crate::{headers, relay, KafkaSettings};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Most messages applied in one transaction.
const MAX_BATCH: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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

struct GroupContext {
    service: String,
    readiness: Readiness,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(service = %self.service, partitions = tpl.count(), "partitions assigned");
                // Ready once the group has taken this member in, even with
                // no partitions: replicas may outnumber partitions.
                self.readiness.set();
            }
            Rebalance::Revoke(tpl) => {
                info!(service = %self.service, partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Error(e) => warn!(service = %self.service, error = %e, "rebalance error"),
        }
    }
}

enum Outcome {
    Done,
    Interrupted,
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
                    tokio::time::sleep(FIRST_BACKOFF).await;
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

    async fn process(&self, msg: &BorrowedMessage<'_>, shutdown: &CancellationToken) -> Outcome {
        let mut attempts: u32 = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            attempts += 1;
            let started = Instant::now();
            let result = self.try_process(msg).await;
            metrics::histogram!("choreo_handler_seconds", "service" => self.spec.service.clone())
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    metrics::counter!("choreo_consumed_total", "service" => self.spec.service.clone(), "topic" => msg.topic().to_owned()).increment(1);
                    return Outcome::Done;
                }
                Err(e) if !e.is_retryable() => {
                    return self.dead_letter(msg, e.reason(), attempts, shutdown).await;
                }
                Err(e) => {
                    let reason = e.reason();
                    metrics::counter!("choreo_retried_total", "service" => self.spec.service.clone()).increment(1);
                    warn!(
                        service = %self.spec.service,
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        attempts, ?reason, "retryable failure; retrying in place"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return Outcome::Interrupted,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Decodes a message into what a handler sees, with its trace context.
    async fn incoming(
        &self,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(Incoming, TraceContext), HandlerError> {
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        // A decoder that panics on hostile bytes is a permanent error of
        // those bytes, not the end of the consumer.
        let event = AssertUnwindSafe(self.codec.decode(msg.topic(), &source, msg.payload()))
            .catch_unwind()
            .await
            .map_err(|panic| {
                HandlerError::permanent(format!("decoder panicked: {}", panic_message(&*panic)))
            })??;
        let incoming = Incoming {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            event,
        };
        let trace_ctx = header(msg, headers::TRACEPARENT)
            .and_then(|h| TraceContext::parse(&h))
            .unwrap_or_else(TraceContext::new_root);
        Ok((incoming, trace_ctx))
    }

    async fn try_process(&self, msg: &BorrowedMessage<'_>) -> Result<(), HandlerError> {
        let (incoming, trace_ctx) = self.incoming(msg).await?;
        apply::apply(
            &self.spec.service,
            &self.db,
            &*self.handler,
            &incoming,
            trace_ctx,
        )
        .await
        .map(drop)
    }

    /// Several messages, one transaction. Any failure rolls the whole batch
    /// back and replays it one message at a time, where retries and the
    /// dead-letter topic apply per message exactly as without batching.
    async fn process_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        shutdown: &CancellationToken,
    ) -> Outcome {
        let started = Instant::now();
        match self.try_batch(batch).await {
            Ok(()) => {
                metrics::histogram!("choreo_batch_seconds", "service" => self.spec.service.clone())
                    .record(started.elapsed().as_secs_f64());
                for msg in batch {
                    metrics::counter!("choreo_consumed_total", "service" => self.spec.service.clone(), "topic" => msg.topic().to_owned()).increment(1);
                }
                Outcome::Done
            }
            Err(e) => {
                debug!(service = %self.spec.service, size = batch.len(), error = %e, "batch failed; one message at a time");
                for msg in batch {
                    if let Outcome::Interrupted = self.process(msg, shutdown).await {
                        return Outcome::Interrupted;
                    }
                }
                Outcome::Done
            }
        }
    }

    async fn try_batch(&self, batch: &[BorrowedMessage<'_>]) -> Result<(), HandlerError> {
        // Decoding (and any registry lookup) happens before the transaction.
        let mut decoded = Vec::with_capacity(batch.len());
        for msg in batch {
            decoded.push(self.incoming(msg).await?);
        }
        let mut uow = self.db.begin().await?;
        let result = async {
            // Every inbox entry of the batch in one statement; an event id
            // is new at most once, so a repeat inside the batch is a
            // duplicate like any other.
            let ids: Vec<&str> = decoded
                .iter()
                .map(|(i, _)| i.event.metadata().event_id.as_str())
                .collect();
            let mut fresh = uow.record_inbox_many(&self.spec.service, &ids).await?;
            for (incoming, trace_ctx) in decoded {
                if fresh.remove(&incoming.event.metadata().event_id) {
                    apply::handle(
                        &mut uow,
                        &self.spec.service,
                        &*self.handler,
                        &incoming,
                        trace_ctx,
                    )
                    .await?;
                } else {
                    apply::note_duplicate(&self.spec.service, &incoming);
                }
            }
            Ok::<_, HandlerError>(())
        }
        .await;
        if let Err(e) = result {
            if let Err(rb) = uow.rollback().await {
                warn!(error = %rb, "rollback failed");
            }
            return Err(e);
        }
        uow.commit().await?;
        Ok(())
    }

    /// Sends the original message to the dead-letter topic. Retryable
    /// produce errors are retried until the broker takes it: skipping a
    /// message without a trace is the one thing this loop must never do.
    /// A copy too large is truncated to fit; a permanent produce error is
    /// retried once as a bare reference, then the loss is logged and
    /// counted and the partition goes on — a message no copy of which Kafka
    /// accepts must not stop every message behind it.
    async fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        reason: &str,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Outcome {
        error!(
            service = %self.spec.service,
            topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
            ?reason, "permanent failure; sending to {}", self.dlq_topic
        );
        let mut letter = DeadLetter {
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            original: msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            choreo: vec![
                (headers::ERROR, reason.to_owned()),
                (headers::SOURCE_TOPIC, msg.topic().to_owned()),
                (headers::SOURCE_PARTITION, msg.partition().to_string()),
                (headers::SOURCE_OFFSET, msg.offset().to_string()),
                (headers::ATTEMPTS, attempts.to_string()),
                (headers::SERVICE, self.spec.service.clone()),
                (headers::FAILED_AT, chrono_now_ms().to_string()),
            ],
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match send_dead_letter(&self.dlq, &self.dlq_topic, letter, self.dlq_limit).await {
                Sent::Delivered { truncated, .. } => {
                    metrics::counter!("choreo_dead_lettered_total", "service" => self.spec.service.clone()).increment(1);
                    if truncated {
                        warn!(
                            service = %self.spec.service,
                            topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                            "dead-letter copy truncated to fit message.max.bytes"
                        );
                    }
                    return Outcome::Done;
                }
                Sent::Lost(e) => {
                    metrics::counter!("choreo_dead_letter_lost_total", "service" => self.spec.service.clone()).increment(1);
                    error!(
                        service = %self.spec.service,
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        ?reason, error = %e,
                        "{} refuses even a reference to this message; moving on without a dead letter",
                        self.dlq_topic
                    );
                    return Outcome::Done;
                }
                Sent::Retry(e, again) => {
                    warn!(error = %e, "dead-letter produce failed; retrying");
                    letter = again;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return Outcome::Interrupted,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Headers a dead letter carries besides the ones of [`headers`].
pub mod dlq_headers {
    /// `true` when the payload (or, see [`HEADERS_DROPPED`], more) was cut
    /// so the copy fits `message.max.bytes`.
    pub const TRUNCATED: &str = "choreo.truncated";
    /// Size in bytes of the original payload, when the copy is truncated.
    pub const ORIGINAL_SIZE: &str = "choreo.original.size";
    /// How many of the original headers were left off the copy.
    pub const HEADERS_DROPPED: &str = "choreo.headers.dropped";
    /// `true` when the original key was left off (it alone was too large).
    pub const KEY_DROPPED: &str = "choreo.key.dropped";
    /// The outbox `seq` of a row the relay could not publish.
    pub const OUTBOX_SEQ: &str = "choreo.outbox.seq";
}

/// Longest `choreo.error` reason kept; a reason quoting hostile input must
/// not be what makes the copy too large.
const MAX_REASON: usize = 4096;

/// A dead-letter copy before it is produced: the original key, payload and
/// headers, and the `choreo.*` headers saying why and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The original message's headers, in order.
    pub original: Vec<(String, Option<Vec<u8>>)>,
    /// The dead-letter headers, written after the original ones.
    pub choreo: Vec<(&'static str, String)>,
}

impl DeadLetter {
    /// Upper bound of the copy's size as a Kafka record.
    pub fn record_size(&self) -> usize {
        choreo_outbox::record_size_bound(
            self.key.as_ref().map_or(0, Vec::len),
            self.payload.as_ref().map_or(0, Vec::len),
            self.original
                .iter()
                .map(|(k, v)| (k.len(), v.as_ref().map_or(0, Vec::len)))
                .chain(self.choreo.iter().map(|(k, v)| (k.len(), v.len()))),
        )
    }

    fn is_truncated(&self) -> bool {
        self.choreo
            .iter()
            .any(|(k, _)| *k == dlq_headers::TRUNCATED)
    }

    fn original_size(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
    }

    /// The copy as it can be produced under `limit` bytes
    /// (`message.max.bytes`), cut as little as possible:
    ///
    /// 1. as it is, if it fits (the reason capped at 4 KiB regardless);
    /// 2. else the payload cut to what fits, headed `choreo.truncated=true`
    ///    and `choreo.original.size`;
    /// 3. else (the original headers or key alone are too large) a
    ///    reference: no payload, no original headers, and no key if even
    ///    that does not fit — the `choreo.*` coordinates still say which
    ///    message it was.
    pub fn fitted(mut self, limit: usize) -> DeadLetter {
        for (k, v) in &mut self.choreo {
            if *k == headers::ERROR && v.len() > MAX_REASON {
                let mut end = MAX_REASON;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v.truncate(end);
                v.push('…');
            }
        }
        if self.record_size() <= limit {
            return self;
        }
        let original_size = self.original_size();
        let mut cut = self.clone();
        cut.choreo.push((dlq_headers::TRUNCATED, "true".into()));
        cut.choreo
            .push((dlq_headers::ORIGINAL_SIZE, original_size.to_string()));
        let without_payload = DeadLetter {
            payload: None,
            ..cut.clone()
        }
        .record_size();
        if let Some(room) = limit.checked_sub(without_payload) {
            if let Some(p) = &mut cut.payload {
                p.truncate(room);
            }
            return cut;
        }
        self.reference(limit)
    }

    /// The least copy that still identifies the message: its key (if that
    /// fits), no payload, no original headers.
    pub fn reference(mut self, limit: usize) -> DeadLetter {
        // A copy already truncated knows the size of the original.
        let original_size = self
            .choreo
            .iter()
            .find(|(k, _)| *k == dlq_headers::ORIGINAL_SIZE)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| self.original_size());
        let dropped = self.original.len();
        self.payload = None;
        self.original.clear();
        self.choreo.retain(|(k, _)| {
            ![
                dlq_headers::TRUNCATED,
                dlq_headers::ORIGINAL_SIZE,
                dlq_headers::HEADERS_DROPPED,
            ]
            .contains(k)
        });
        self.choreo.push((dlq_headers::TRUNCATED, "true".into()));
        self.choreo
            .push((dlq_headers::ORIGINAL_SIZE, original_size.to_string()));
        self.choreo
            .push((dlq_headers::HEADERS_DROPPED, dropped.to_string()));
        if self.record_size() > limit && self.key.is_some() {
            self.key = None;
            self.choreo.push((dlq_headers::KEY_DROPPED, "true".into()));
        }
        self
    }

    fn is_reference(&self) -> bool {
        self.choreo
            .iter()
            .any(|(k, _)| *k == dlq_headers::HEADERS_DROPPED)
    }
}

/// How a dead-letter send ended.
pub(crate) enum Sent {
    /// On the topic at `partition`/`offset`.
    Delivered {
        partition: i32,
        offset: i64,
        truncated: bool,
    },
    /// Not even a reference was accepted, for a reason retrying cannot fix.
    Lost(KafkaError),
    /// A retryable failure: send this letter again later.
    Retry(KafkaError, DeadLetter),
}

/// Produces `letter` (fitted to `limit`) to `topic` and waits for the
/// acknowledgement. A permanent refusal of the full copy is retried at once
/// as a reference — a topic whose own `max.message.bytes` is smaller than
/// the producer's limit refuses a copy that fits `limit` — and a refused
/// reference is [`Sent::Lost`].
pub(crate) async fn send_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    letter: DeadLetter,
    limit: usize,
) -> Sent {
    let mut letter = letter.fitted(limit);
    loop {
        let mut hdrs = OwnedHeaders::new_with_capacity(letter.original.len() + letter.choreo.len());
        for (k, v) in &letter.original {
            hdrs = hdrs.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        for (k, v) in &letter.choreo {
            hdrs = hdrs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(hdrs);
        if let Some(k) = &letter.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &letter.payload {
            record = record.payload(p.as_slice());
        }
        let result = producer.send(record, Duration::from_secs(10)).await;
        match result {
            Ok(delivery) => {
                return Sent::Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                    truncated: letter.is_truncated(),
                }
            }
            Err((e, _)) => match produce_failure(&e) {
                ProduceFailure::Retryable => return Sent::Retry(e, letter),
                ProduceFailure::Permanent if letter.is_reference() => return Sent::Lost(e),
                ProduceFailure::Permanent => {
                    warn!(%topic, error = %e, "dead-letter copy refused; sending a reference");
                    letter = letter.reference(limit);
                }
            },
        }
    }
}

/// The text of a caught panic (`panic!("...")` payloads are `&str` or
/// `String`).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

fn header(msg: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    let hdrs = msg.headers()?;
    hdrs.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: usize) -> DeadLetter {
        DeadLetter {
            key: Some(b"order-1".to_vec()),
            payload: Some(vec![7; payload]),
            original: vec![("traceparent".into(), Some(b"00-abc-def-01".to_vec()))],
            choreo: vec![
                (headers::ERROR, "bad bytes".into()),
                (headers::SOURCE_TOPIC, "orders".into()),
                (headers::SOURCE_OFFSET, "42".into()),
            ],
        }
    }

    fn header<'a>(l: &'a DeadLetter, name: &str) -> Option<&'a str> {
        l.choreo
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_copy_that_fits_is_sent_whole() {
        let l = letter(1000);
        assert_eq!(l.clone().fitted(1_000_000), l);
    }

    #[test]
    fn a_copy_over_the_limit_is_truncated_to_fit_and_says_so() {
        let limit = 1_000_000;
        // The original fitted the limit; the dead-letter headers tip it over.
        let l = letter(limit - 150);
        assert!(l.record_size() > limit, "precondition: {}", l.record_size());
        let fitted = l.fitted(limit);
        assert!(fitted.record_size() <= limit, "{}", fitted.record_size());
        assert_eq!(header(&fitted, dlq_headers::TRUNCATED), Some("true"));
        assert_eq!(
            header(&fitted, dlq_headers::ORIGINAL_SIZE),
            Some((limit - 150).to_string().as_str())
        );
        let kept = fitted.payload.as_ref().map_or(0, Vec::len);
        assert!(
            kept > limit - 1000,
            "cut as little as possible: kept {kept}"
        );
        assert_eq!(fitted.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(fitted.original.len(), 1, "original headers kept");
        assert_eq!(header(&fitted, headers::ERROR), Some("bad bytes"));
    }

    #[test]
    fn huge_headers_leave_a_reference() {
        let mut l = letter(10);
        l.original.push(("junk".into(), Some(vec![b'x'; 5000])));
        let fitted = l.fitted(2000);
        assert!(fitted.record_size() <= 2000, "{}", fitted.record_size());
        assert_eq!(fitted.payload, None);
        assert!(fitted.original.is_empty());
        assert_eq!(header(&fitted, dlq_headers::HEADERS_DROPPED), Some("2"));
        assert_eq!(header(&fitted, dlq_headers::ORIGINAL_SIZE), Some("10"));
        assert_eq!(header(&fitted, headers::SOURCE_OFFSET), Some("42"));
        assert_eq!(fitted.key.as_deref(), Some(&b"order-1"[..]));
    }

    #[test]
    fn a_huge_key_is_dropped_from_a_reference() {
        let mut l = letter(10);
        l.key = Some(vec![b'k'; 5000]);
        let fitted = l.fitted(2000);
        assert!(fitted.record_size() <= 2000);
        assert_eq!(fitted.key, None);
        assert_eq!(header(&fitted, dlq_headers::KEY_DROPPED), Some("true"));
    }

    #[test]
    fn a_long_reason_is_capped_on_a_char_boundary() {
        let mut l = letter(10);
        if let Some((_, v)) = l.choreo.iter_mut().find(|(k, _)| *k == headers::ERROR) {
            *v = "é".repeat(10_000);
        }
        let fitted = l.fitted(1_000_000);
        let reason = header(&fitted, headers::ERROR).unwrap_or_default();
        assert!(
            reason.len() <= MAX_REASON + '…'.len_utf8(),
            "{}",
            reason.len()
        );
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn a_reference_keeps_the_original_size() {
        let once = letter(100).reference(1000);
        let twice = once.clone().reference(1000);
        assert_eq!(header(&twice, dlq_headers::HEADERS_DROPPED), Some("0"));
        assert_eq!(header(&once, dlq_headers::ORIGINAL_SIZE), Some("100"));
        assert_eq!(header(&twice, dlq_headers::ORIGINAL_SIZE), Some("100"));
        assert_eq!(header(&twice, dlq_headers::TRUNCATED), Some("true"));
        // A truncated copy refused by the broker: its reference still names
        // the size of the original, not of the truncated payload.
        let truncated = letter(5000).fitted(2000);
        assert_eq!(header(&truncated, dlq_headers::ORIGINAL_SIZE), Some("5000"));
        let reference = truncated.reference(2000);
        assert_eq!(header(&reference, dlq_headers::ORIGINAL_SIZE), Some("5000"));
        assert_eq!(reference.payload, None);
    }

    #[test]
    fn panic_payloads_become_reasons() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*caught), "boom 1");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*caught), "static");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(panic_message(&*caught), "a non-string panic payload");
    }
}
