//! Outbox rows → Kafka.
//!
//! The relay wakes as soon as a unit of work that appended rows commits (and
//! on a slow poll, for rows left by a crash), publishes a batch with the
//! idempotent producer, waits for the acknowledgements and only then marks
//! the rows published. A crash between the two publishes the rows again on
//! restart: at-least-once, and the consumers' inbox makes it exactly-once in
//! effect.
//!
//! # Per-key order
//!
//! A batch goes out in *waves*: wave *n* holds the *n*-th row of every key
//! in the batch, in `seq` order, and starts only when every row of wave
//! *n − 1* is acknowledged or set aside. Most batches have one row per key
//! and so one wave. The point is what happens when a row fails: no later
//! row of its key is in flight, so a failure can never be overtaken by its
//! successor, whether the failed row is then retried or set aside.
//!
//! # Poison rows never block
//!
//! A produce error is classified ([`produce_failure`]):
//!
//! - *retryable* (broker down, leader moving, timeout): the failed row and
//!   everything of later waves stay unpublished; the batch settles what did
//!   go out and the relay retries with backoff — nothing is skipped;
//! - *permanent* (the row is larger than `message.max.bytes` or the topic's
//!   `max.message.bytes`, an invalid record, a topic that does not exist):
//!   the row is first sent again **alone**, because the broker refuses whole
//!   record batches and so rows innocent of the error fail with it; if it
//!   fails alone too, it is a poison row: it is copied to `dlq.<service>`
//!   (reason in `choreo.error`, intended topic in `choreo.source.topic`, its
//!   seq in `choreo.outbox.seq`, the payload truncated to fit if need be —
//!   see [`DeadLetter`]), set aside in the outbox with its reason
//!   ([`choreo_outbox::RelayBatch::settle`], [`choreo_outbox::Db::dead_rows`])
//!   and the rows behind it go on. `choreo dlq list` shows the copy like any
//!   dead letter. If even a reference copy is refused, the row is set aside
//!   with no copy and stays in the outbox as the only record (retention
//!   keeps it).
//!
//! The producer's `message.max.bytes` is read from the settings
//! ([`max_message_bytes`]) and set on the database handle, so a unit of work
//! refuses to append what this relay could never publish.
// Rows come from the database, written by services and by hand: nothing
// here may panic on what they contain.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::collections::HashMap;
use std::time::Duration;

use choreo_outbox::{record_size_bound, Db, OutboxRow, SetAside, DEFAULT_MAX_MESSAGE_BYTES};
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::consumer::{dlq_headers, send_dead_letter, DeadLetter, Sent};
use crate::error::{produce_failure, ProduceFailure};
use crate::{headers, Error, KafkaSettings};

/// How long the relay sleeps when no commit woke it: the safety net for
/// rows committed by another process (a restarted replica) or lost wakeups.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const BATCH: i64 = 1000;
/// The wait after a first failed batch; it doubles with each failure in a
/// row up to [`MAX_BACKOFF`], and starts again after a success.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long shutdown may spend publishing what is already committed.
const DRAIN_BOUND: Duration = Duration::from_secs(3);

/// The wait after another failed batch in a row.
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// The producer's `message.max.bytes` in `kafka` (librdkafka's default,
/// 1,000,000, when it is not overridden): the largest record the relay and
/// the dead-letter path may produce.
pub fn max_message_bytes(kafka: &KafkaSettings) -> crate::Result<usize> {
    match kafka.producer_config().get("message.max.bytes") {
        None => Ok(DEFAULT_MAX_MESSAGE_BYTES),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| Error::Setting {
                name: "message.max.bytes",
                value: v.to_owned(),
                reason: e.to_string(),
            }),
    }
}

pub struct Relay {
    db: Db,
    producer: FutureProducer,
    service: String,
    dlq_topic: String,
    limit: usize,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("service", &self.service)
            .field("limit", &self.limit)
            .finish()
    }
}

/// Why a row is being set aside, and how many times it was tried.
struct Poison<'r> {
    row: &'r OutboxRow,
    reason: String,
    attempts: u32,
}

/// What one batch achieved.
#[derive(Default)]
struct Settled {
    published: Vec<i64>,
    set_aside: Vec<SetAside>,
    /// The first retryable failure; the rows it held back stay unpublished.
    retry: Option<Error>,
}

impl Relay {
    /// A relay for `service`'s outbox. Also sets the database handle's
    /// append limit to the producer's `message.max.bytes`.
    pub fn new(db: Db, kafka: &KafkaSettings, service: &str) -> crate::Result<Self> {
        let producer: FutureProducer = kafka.producer_config().create()?;
        let limit = max_message_bytes(kafka)?;
        db.set_max_message_bytes(limit);
        Ok(Self {
            db,
            producer,
            service: service.to_owned(),
            dlq_topic: choreo_events::dlq_topic(service),
            limit,
        })
    }

    /// Publishes until `shutdown`, then drains what is already committed
    /// and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> crate::Result<()> {
        let signal = self.db.outbox_signal();
        let mut backoff = FIRST_BACKOFF;
        loop {
            // An abandoned batch (shutdown mid-publish) is published again on
            // the next start; consumers' inboxes drop the duplicates.
            let published = tokio::select! {
                r = self.publish_batch() => r,
                _ = shutdown.cancelled() => break,
            };
            match published {
                Ok(0) => {
                    backoff = FIRST_BACKOFF;
                    tokio::select! {
                        _ = signal.notified() => {}
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Ok(_) => backoff = FIRST_BACKOFF,
                Err(e) => {
                    warn!(service = %self.service, error = %e, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = next_backoff(backoff);
                }
            }
        }
        // Drain: what was committed before shutdown leaves now, bounded so a
        // dead broker cannot hold the process forever.
        let drain = async {
            while let Ok(n) = self.publish_batch().await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_BOUND, drain).await;
        // A broker that is already gone must not hold the process: what is
        // not acknowledged stays unpublished in the outbox for next time.
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            producer.flush(Timeout::After(Duration::from_secs(2)))
        })
        .await
        .map_err(|source| Error::Task {
            task: "producer flush",
            source,
        })?;
        if let Err(e) = flushed {
            warn!(service = %self.service, error = %e, "producer flush at shutdown incomplete");
        }
        Ok(())
    }

    /// Publishes one batch; returns how many rows left the outbox
    /// (published or set aside). An error means a retryable failure held
    /// rows back; whatever went out before it is settled all the same.
    pub async fn publish_batch(&self) -> crate::Result<usize> {
        let batch = self.db.next_batch(BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut settled = Settled::default();
        for wave in waves(batch.rows()) {
            self.publish_wave(&wave, &mut settled).await;
            if settled.retry.is_some() {
                // Later waves hold later rows of keys that may have just
                // failed; they wait for the retry.
                break;
            }
        }
        let Settled {
            published,
            set_aside,
            retry,
        } = settled;
        batch.settle(&published, &set_aside).await?;
        let n = published.len() + set_aside.len();
        metrics::counter!("choreo_produced_total", "service" => self.service.clone())
            .increment(published.len() as u64);
        if !set_aside.is_empty() {
            metrics::counter!("choreo_relay_dead_lettered_total", "service" => self.service.clone())
                .increment(set_aside.len() as u64);
        }
        debug!(service = %self.service, published = published.len(), set_aside = set_aside.len(), "outbox batch settled");
        match retry {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// One wave: at most one row per key, all in flight at once.
    async fn publish_wave(&self, wave: &[&OutboxRow], settled: &mut Settled) {
        let mut in_flight = Vec::with_capacity(wave.len());
        let mut poison = Vec::new();
        for &row in wave {
            match self.send(row).await {
                Ok(delivery) => in_flight.push((row, delivery)),
                // Refused before it was queued: nothing of it is in flight,
                // so there is nothing innocent to tell apart.
                Err(Refused::Permanent(reason)) => poison.push(Poison {
                    row,
                    reason,
                    attempts: 1,
                }),
                Err(Refused::Retryable(e)) => {
                    settled.retry.get_or_insert(e);
                }
            }
        }
        let rows: Vec<&OutboxRow> = in_flight.iter().map(|(r, _)| *r).collect();
        let results = join_all(in_flight.into_iter().map(|(_, d)| d)).await;
        let mut suspects = Vec::new();
        for (row, result) in rows.into_iter().zip(results) {
            match delivered(result) {
                Ok(()) => settled.published.push(row.seq),
                Err(Refused::Permanent(reason)) => suspects.push((row, reason)),
                Err(Refused::Retryable(e)) => {
                    settled.retry.get_or_insert(e);
                }
            }
        }
        // The broker refuses a whole record batch for one bad record, so a
        // permanent delivery error may belong to a neighbour. Alone, each
        // suspect shows whether it is the poison. Within a wave the keys are
        // distinct, so sending them later reorders nothing per key.
        for (row, first) in suspects {
            let alone = match self.send(row).await {
                Ok(delivery) => delivered(delivery.await),
                Err(refused) => Err(refused),
            };
            match alone {
                Ok(()) => settled.published.push(row.seq),
                Err(Refused::Permanent(reason)) => {
                    debug!(seq = row.seq, %first, "refused alone too");
                    poison.push(Poison {
                        row,
                        reason,
                        attempts: 2,
                    });
                }
                Err(Refused::Retryable(e)) => {
                    settled.retry.get_or_insert(e);
                }
            }
        }
        for p in poison {
            match self.set_aside(&p).await {
                Ok(aside) => settled.set_aside.push(aside),
                Err(e) => {
                    settled.retry.get_or_insert(e);
                }
            }
        }
    }

    /// Queues one row with the producer.
    async fn send(&self, row: &OutboxRow) -> Result<DeliveryFuture, Refused> {
        let size = record_size_bound(
            row.key.len(),
            row.payload.len(),
            row.headers.iter().map(|(k, v)| (k.len(), v.len())),
        );
        if size > self.limit {
            // librdkafka would refuse it the same way; saying so here names
            // the sizes.
            return Err(Refused::Permanent(format!(
                "outbox row {} for {} is {size} bytes as a Kafka record, over the {}-byte \
                 limit (message.max.bytes)",
                row.seq, row.topic, self.limit
            )));
        }
        let mut headers = OwnedHeaders::new_with_capacity(row.headers.len());
        for (k, v) in &row.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&row.topic)
            .key(row.key.as_bytes())
            .payload(&row.payload)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Refused::classify(row, e)),
            }
        }
    }

    /// Copies a poison row to `dlq.<service>` and says how to set it aside.
    /// `Err` only for a retryable failure of that copy: then the row stays
    /// and is tried again with its batch.
    async fn set_aside(&self, p: &Poison<'_>) -> crate::Result<SetAside> {
        let row = p.row;
        error!(
            service = %self.service, seq = row.seq, topic = %row.topic, key = ?row.key,
            reason = %p.reason, "outbox row can never be published; setting it aside to {}",
            self.dlq_topic
        );
        let letter = DeadLetter {
            key: Some(row.key.clone().into_bytes()),
            payload: Some(row.payload.clone()),
            original: row
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone().into_bytes())))
                .collect(),
            choreo: vec![
                (headers::ERROR, p.reason.clone()),
                (headers::SOURCE_TOPIC, row.topic.clone()),
                (dlq_headers::OUTBOX_SEQ, row.seq.to_string()),
                (headers::ATTEMPTS, p.attempts.to_string()),
                (headers::SERVICE, self.service.clone()),
                (headers::FAILED_AT, now_ms().to_string()),
            ],
        };
        match send_dead_letter(&self.producer, &self.dlq_topic, letter, self.limit).await {
            Sent::Delivered {
                partition, offset, ..
            } => Ok(SetAside {
                seq: row.seq,
                reason: p.reason.clone(),
                dead_letter: Some(format!("{}/{partition}/{offset}", self.dlq_topic)),
            }),
            Sent::Lost(e) => {
                metrics::counter!("choreo_dead_letter_lost_total", "service" => self.service.clone())
                    .increment(1);
                error!(
                    service = %self.service, seq = row.seq, error = %e,
                    "{} refuses even a reference; the row stays in the outbox as the only record",
                    self.dlq_topic
                );
                Ok(SetAside {
                    seq: row.seq,
                    reason: format!("{}; no dead-letter copy: {e}", p.reason),
                    dead_letter: None,
                })
            }
            Sent::Retry(e, _) => Err(Error::Kafka(e)),
        }
    }
}

/// A produce that did not succeed, classified.
enum Refused {
    Permanent(String),
    Retryable(Error),
}

impl Refused {
    fn classify(row: &OutboxRow, e: KafkaError) -> Self {
        match produce_failure(&e) {
            ProduceFailure::Permanent => Refused::Permanent(format!(
                "kafka refused outbox row {} for {}: {e}",
                row.seq, row.topic
            )),
            ProduceFailure::Retryable => Refused::Retryable(Error::Kafka(e)),
        }
    }
}

/// A delivery report, classified. The row is needed only for the reason's
/// wording, so the report's own error text stands in.
fn delivered(
    result: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Result<(), Refused> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, msg))) => match produce_failure(&e) {
            ProduceFailure::Permanent => {
                use rdkafka::Message as _;
                Err(Refused::Permanent(format!(
                    "kafka refused the event for {}: {e}",
                    msg.topic()
                )))
            }
            ProduceFailure::Retryable => Err(Refused::Retryable(Error::Kafka(e))),
        },
        Err(_) => Err(Refused::Retryable(Error::DeliveryDropped)),
    }
}

/// Splits rows (in `seq` order) into waves: wave *n* holds the *n*-th row
/// of each key, in `seq` order.
fn waves(rows: &[OutboxRow]) -> Vec<Vec<&OutboxRow>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut waves: Vec<Vec<&OutboxRow>> = Vec::new();
    for row in rows {
        let n = seen.entry(row.key.as_str()).or_insert(0);
        match waves.get_mut(*n) {
            Some(wave) => wave.push(row),
            None => waves.push(vec![row]),
        }
        *n += 1;
    }
    waves
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, key: &str) -> OutboxRow {
        OutboxRow {
            seq,
            topic: "orders".into(),
            key: key.into(),
            payload: vec![],
            headers: vec![],
            created_at_ms: 0,
        }
    }

    #[test]
    fn waves_hold_one_row_per_key_in_seq_order() {
        let rows = [
            row(1, "a"),
            row(2, "b"),
            row(3, "a"),
            row(4, "c"),
            row(5, "a"),
            row(6, "b"),
        ];
        let seqs: Vec<Vec<i64>> = waves(&rows)
            .iter()
            .map(|w| w.iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(seqs, [vec![1, 2, 4], vec![3, 6], vec![5]]);
        assert!(waves(&[]).is_empty());
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound() {
        let mut waits = vec![FIRST_BACKOFF];
        for _ in 0..8 {
            let last = *waits.last().unwrap();
            waits.push(next_backoff(last));
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn the_limit_comes_from_the_producer_settings() {
        let default = KafkaSettings::new("b:9092");
        assert_eq!(max_message_bytes(&default).unwrap(), 1_000_000);
        let small = KafkaSettings::new("b:9092").set("producer.message.max.bytes", "5000");
        assert_eq!(max_message_bytes(&small).unwrap(), 5000);
        let global = KafkaSettings::new("b:9092").set("message.max.bytes", "20000");
        assert_eq!(max_message_bytes(&global).unwrap(), 20000);
        let consumer_only = KafkaSettings::new("b:9092").set("consumer.message.max.bytes", "1");
        assert_eq!(max_message_bytes(&consumer_only).unwrap(), 1_000_000);
        let bad = KafkaSettings::new("b:9092").set("message.max.bytes", "lots");
        assert!(max_message_bytes(&bad).is_err());
    }
}
