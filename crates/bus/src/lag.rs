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
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..choreo_events::Topic::PARTITIONS {
            tpl.add_partition(t, p);
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}
