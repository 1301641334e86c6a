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

use std::future::Future;
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
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::codec::Codec;
use crate::error::HandlerError;
use crate::trace::{self, TraceContext};
use crate::{headers, KafkaSettings};

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

pub struct Consumer<H> {
    spec: ConsumerSpec,
    kafka: KafkaSettings,
    codec: Arc<Codec>,
    db: Db,
    handler: Arc<H>,
    readiness: Readiness,
    dlq: FutureProducer,
    dlq_topic: String,
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
        })
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
            let outcome = if batch.len() == 1 {
                self.process(&batch[0], &shutdown).await
            } else {
                self.process_batch(&batch, &shutdown).await
            };
            match outcome {
                Outcome::Done => {
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
                Err(HandlerError::Permanent(reason)) => {
                    return self.dead_letter(msg, &reason, attempts, shutdown).await;
                }
                Err(HandlerError::Retryable(reason)) => {
                    metrics::counter!("choreo_retried_total", "service" => self.spec.service.clone()).increment(1);
                    warn!(
                        service = %self.spec.service,
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        attempts, %reason, "retryable failure; retrying in place"
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
        let event = self
            .codec
            .decode(msg.topic(), &source, msg.payload())
            .await?;
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

    /// Inbox + handler for one message inside `uow`. `Ok(false)`: a
    /// duplicate, nothing applied.
    async fn apply(
        &self,
        uow: &mut UnitOfWork<'_>,
        incoming: &Incoming,
        trace_ctx: TraceContext,
    ) -> Result<bool, HandlerError> {
        let event_id = &incoming.event.metadata().event_id;
        if !uow.record_inbox(&self.spec.service, event_id).await? {
            self.duplicate(incoming);
            return Ok(false);
        }
        self.handle(uow, incoming, trace_ctx).await?;
        Ok(true)
    }

    fn duplicate(&self, incoming: &Incoming) {
        metrics::counter!("choreo_duplicates_total", "service" => self.spec.service.clone())
            .increment(1);
        debug!(
            service = %self.spec.service,
            event_id = %incoming.event.metadata().event_id,
            topic = %incoming.topic, offset = incoming.offset,
            "duplicate event; no effect"
        );
    }

    /// The handler for an event whose inbox entry is already recorded.
    async fn handle(
        &self,
        uow: &mut UnitOfWork<'_>,
        incoming: &Incoming,
        trace_ctx: TraceContext,
    ) -> Result<(), HandlerError> {
        let span = info_span!(
            "handle",
            service = %self.spec.service,
            topic = %incoming.topic,
            partition = incoming.partition,
            offset = incoming.offset,
            event_type = incoming.event.event_type(),
            order_id = %incoming.event.metadata().order_id,
            trace_id = %trace_ctx.trace_id,
        );
        trace::scope(trace_ctx, self.handler.handle(uow, incoming))
            .instrument(span)
            .await
    }

    async fn try_process(&self, msg: &BorrowedMessage<'_>) -> Result<(), HandlerError> {
        let (incoming, trace_ctx) = self.incoming(msg).await?;
        let mut uow = self.db.begin().await?;
        match self.apply(&mut uow, &incoming, trace_ctx).await {
            Ok(true) => {
                uow.commit().await?;
                Ok(())
            }
            Ok(false) => {
                uow.rollback().await?;
                Ok(())
            }
            Err(e) => {
                // Nothing of a failed attempt may stay, inbox entry included.
                if let Err(rb) = uow.rollback().await {
                    warn!(error = %rb, "rollback failed");
                }
                Err(e)
            }
        }
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
                    self.handle(&mut uow, &incoming, trace_ctx).await?;
                } else {
                    self.duplicate(&incoming);
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

    /// Sends the original message to the dead-letter topic. Retries until
    /// the broker takes it: skipping a message without a trace is the one
    /// thing this loop must never do.
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
            %reason, "permanent failure; sending to {}", self.dlq_topic
        );
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut hdrs = OwnedHeaders::new();
            if let Some(original) = msg.headers() {
                for h in original.iter() {
                    hdrs = hdrs.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            let partition = msg.partition().to_string();
            let offset = msg.offset().to_string();
            let attempts_s = attempts.to_string();
            let failed_at = chrono_now_ms().to_string();
            for (k, v) in [
                (headers::ERROR, reason),
                (headers::SOURCE_TOPIC, msg.topic()),
                (headers::SOURCE_PARTITION, partition.as_str()),
                (headers::SOURCE_OFFSET, offset.as_str()),
                (headers::ATTEMPTS, attempts_s.as_str()),
                (headers::SERVICE, self.spec.service.as_str()),
                (headers::FAILED_AT, failed_at.as_str()),
            ] {
                hdrs = hdrs.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).headers(hdrs);
            if let Some(k) = msg.key() {
                record = record.key(k);
            }
            if let Some(p) = msg.payload() {
                record = record.payload(p);
            }
            match self.dlq.send(record, Duration::from_secs(10)).await {
                Ok(_) => {
                    metrics::counter!("choreo_dead_lettered_total", "service" => self.spec.service.clone()).increment(1);
                    return Outcome::Done;
                }
                Err((e, _)) => {
                    warn!(error = %e, "dead-letter produce failed; retrying");
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
