//! Consumer-group lag, read from outside the group: what a group has still
//! to process.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaSettings;

/// Sum over every partition of `topics` of (high watermark − the group's
/// committed offset; the low watermark when nothing is committed yet).
///
/// Blocking (librdkafka's offset and watermark requests): call it from
/// `spawn_blocking` in async code.
pub fn group_lag(kafka: &KafkaSettings, group: &str, topics: &[&str]) -> crate::Result<i64> {
    // A consumer configured for the group that never subscribes: it reads
    // the group's offsets without joining it.
    let consumer: BaseConsumer = kafka.consumer_config(group).create()?;
    Ok(partition_lags(&consumer, topics)?
        .iter()
        .map(|p| p.lag)
        .sum())
}

/// Where a group stands on one partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; `None` when it has committed none.
    pub committed: Option<i64>,
    /// The partition's high watermark.
    pub high: i64,
    /// high − committed (− the low watermark when nothing is committed).
    pub lag: i64,
}

/// Every partition of `topics` as `consumer`'s group stands on it.
/// `consumer` is configured with the group's id and never subscribes.
///
/// Blocking, like [`group_lag`].
pub fn partition_lags(
    consumer: &BaseConsumer,
    topics: &[&str],
) -> crate::Result<Vec<PartitionLag>> {
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..choreo_events::Topic::PARTITIONS {
            tpl.add_partition(t, p);
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let committed = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        out.push(PartitionLag {
            topic: e.topic().to_owned(),
            partition: e.partition(),
            committed,
            high,
            lag: (high - committed.unwrap_or(low)).max(0),
        });
    }
    Ok(out)
}
