//! Outbox rows → Kafka.
//!
//! The relay wakes as soon as a unit of work that appended rows commits (and
//! on a slow poll, for rows left by a crash), publishes a batch with the
//! idempotent producer, waits for every acknowledgement and only then marks
//! the rows published. A crash between the two publishes the batch again on
//! restart: at-least-once, and the consumers' inbox makes it exactly-once in
//! effect. Per-key order holds because rows are read in sequence order and
//! librdkafka keeps send order per partition with idempotence on.

use std::time::Duration;

use choreo_outbox::{Db, OutboxRow};
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{Error, KafkaSettings};

/// How long the relay sleeps when no commit woke it: the safety net for
/// rows committed by another process (a restarted replica) or lost wakeups.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const BATCH: i64 = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct Relay {
    db: Db,
    producer: FutureProducer,
    service: String,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("service", &self.service)
            .finish()
    }
}

impl Relay {
    pub fn new(db: Db, kafka: &KafkaSettings, service: &str) -> crate::Result<Self> {
        let producer: FutureProducer = kafka.producer_config().create()?;
        Ok(Self {
            db,
            producer,
            service: service.to_owned(),
        })
    }

    /// Publishes until `shutdown`, then drains what is already committed
    /// and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> crate::Result<()> {
        let signal = self.db.outbox_signal();
        let mut backoff = Duration::from_millis(50);
        loop {
            // An abandoned batch (shutdown mid-publish) is published again on
            // the next start; consumers' inboxes drop the duplicates.
            let published = tokio::select! {
                r = self.publish_batch() => r,
                _ = shutdown.cancelled() => break,
            };
            match published {
                Ok(0) => {
                    backoff = Duration::from_millis(50);
                    tokio::select! {
                        _ = signal.notified() => {}
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    warn!(service = %self.service, error = %e, "outbox relay failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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
        let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
        // A broker that is already gone must not hold the process: what is
        // not acknowledged stays unpublished in the outbox for next time.
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            producer.flush(Timeout::After(Duration::from_secs(2)))
        })
        .await
        .map_err(|e| Error::Config(format!("flush task: {e}")))?;
        if let Err(e) = flushed {
            warn!(service = %self.service, error = %e, "producer flush at shutdown incomplete");
        }
        Ok(())
    }

    /// Publishes one batch; returns how many rows it published.
    pub async fn publish_batch(&self) -> crate::Result<usize> {
        let batch = self.db.next_batch(BATCH).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let rows = batch.rows();
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            deliveries.push(self.send(row).await?);
        }
        for result in join_all(deliveries).await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(Error::Kafka(e)),
                Err(_) => {
                    return Err(Error::Config("producer dropped a delivery".into()));
                }
            }
        }
        let n = rows.len();
        batch.mark_published().await?;
        metrics::counter!("choreo_produced_total", "service" => self.service.clone())
            .increment(n as u64);
        debug!(service = %self.service, rows = n, "outbox batch published");
        Ok(n)
    }

    async fn send(&self, row: &OutboxRow) -> crate::Result<rdkafka::producer::DeliveryFuture> {
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
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Error::Kafka(e)),
            }
        }
    }
}
