//! `choreo-communication rebuild-replica`: rebuilds `orders_replica` by
//! reading the `orders` topic from the beginning and upserting every
//! `OrderPlaced`. No mails are sent, no events emitted, no consumer group
//! offsets touched: the reader belongs to no group and assigns every
//! partition itself, from its low watermark up to the high watermark seen
//! at start.
//!
//! librdkafka's `poll` blocks, so the Kafka side runs on a blocking thread
//! and hands records over a bounded channel to the async side, which
//! decodes them through the registry and writes the replica — one short
//! transaction per order, so a service running on the same database is
//! never locked out for long.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use choreo_bus::{Host, KafkaSettings};
use choreo_events::{AnyEvent, OrdersEvent, Topic};
use choreo_outbox::Db;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::warn;

use crate::config::Settings;
use crate::handlers::replica_from;
use crate::storage;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Give up when the broker sends nothing for this long before the end.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
const PROGRESS_EVERY: u64 = 1000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Records read from the topic.
    pub read: u64,
    /// Records on the topic when the rebuild started.
    pub total: u64,
    /// `OrderPlaced` events upserted into the replica.
    pub upserted: u64,
    /// Records that could not be decoded (logged and skipped).
    pub skipped: u64,
}

/// Runs the whole rebuild and prints progress and the result to stdout.
pub async fn rebuild_replica(settings: Settings) -> anyhow::Result<RebuildReport> {
    let host = Host::connect(settings.common)
        .await
        .context("connecting the communication database")?;
    host.db
        .migrate(storage::migrator(host.db.backend()))
        .await
        .context("running communication migrations")?;
    let codec = Arc::clone(host.emitter.codec());
    let kafka = host.settings.kafka.clone();

    let (tx, mut rx) = mpsc::channel(1024);
    let reader = tokio::task::spawn_blocking(move || read_topic(&kafka, Topic::Orders.name(), &tx));
    let mut report = RebuildReport::default();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Total(total) => {
                report.total = total;
                println!("rebuilding the order replica from {total} records on `orders`");
            }
            Item::Record {
                partition,
                offset,
                payload,
            } => {
                report.read += 1;
                let source = format!("{}/{partition}/{offset}", Topic::Orders);
                match codec
                    .decode(Topic::Orders.name(), &source, payload.as_deref())
                    .await
                {
                    Ok(event) => {
                        if apply(&host.db, &event).await? {
                            report.upserted += 1;
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        return Err(anyhow!("decoding {source}: {e}"));
                    }
                    Err(e) => {
                        warn!(%source, error = %e, "undecodable record skipped");
                        report.skipped += 1;
                    }
                }
                if report.read % PROGRESS_EVERY == 0 {
                    println!("read {}/{} records", report.read, report.total);
                }
            }
        }
    }
    reader.await.context("kafka reader thread")??;
    println!(
        "read {}/{} records; {} orders upserted into the replica ({} skipped); replica holds {} orders",
        report.read,
        report.total,
        report.upserted,
        report.skipped,
        storage::count_replica(&host.db).await?
    );
    Ok(report)
}

/// Upserts `event` into the replica if it is an `OrderPlaced`; returns
/// whether it did. Sends nothing and emits nothing.
pub async fn apply(db: &Db, event: &AnyEvent) -> anyhow::Result<bool> {
    let AnyEvent::Orders(OrdersEvent::OrderPlaced(placed)) = event else {
        return Ok(false);
    };
    let replica = match replica_from(placed) {
        Ok(replica) => replica,
        Err(e) => {
            warn!(order_id = ?placed.metadata.order_id, error = %e, "invalid OrderPlaced skipped");
            return Ok(false);
        }
    };
    let mut uow = db.begin().await?;
    storage::upsert_replica(uow.conn(), &replica).await?;
    uow.commit().await?;
    Ok(true)
}

enum Item {
    Total(u64),
    Record {
        partition: i32,
        offset: i64,
        payload: Option<Vec<u8>>,
    },
}

/// Blocking: assigns every non-empty partition of `topic` from its low
/// watermark and sends records until each partition reaches the high
/// watermark read at start. Stops early, without error, if the receiver
/// is gone (the async side failed and reports why).
fn read_topic(kafka: &KafkaSettings, topic: &str, tx: &mpsc::Sender<Item>) -> anyhow::Result<()> {
    let mut config = kafka.reader_config();
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().context("creating the kafka reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .with_context(|| format!("reading metadata of `{topic}`"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(anyhow!(
            "topic `{topic}` has no partitions (does it exist?)"
        ));
    }

    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let mut total = 0u64;
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .with_context(|| format!("reading watermarks of `{topic}`/{partition}"))?;
        if high > low {
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
            ends.insert(partition, high);
            total += (high - low) as u64;
        }
    }
    if tx.blocking_send(Item::Total(total)).is_err() || ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment)?;

    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None if last_progress.elapsed() > IDLE_LIMIT => {
                return Err(anyhow!(
                    "no records for {}s with {} partitions unfinished",
                    IDLE_LIMIT.as_secs(),
                    ends.len()
                ));
            }
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ends.remove(&partition);
            }
            Some(Err(e)) => return Err(e).context("reading `orders`"),
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let partition = message.partition();
                let Some(&end) = ends.get(&partition) else {
                    continue;
                };
                if message.offset() < end {
                    let item = Item::Record {
                        partition,
                        offset: message.offset(),
                        payload: message.payload().map(<[u8]>::to_vec),
                    };
                    if tx.blocking_send(item).is_err() {
                        return Ok(());
                    }
                }
                if message.offset() + 1 >= end {
                    ends.remove(&partition);
                }
            }
        }
    }
    Ok(())
}
