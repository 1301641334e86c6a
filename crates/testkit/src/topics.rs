//! Reading what is on a topic, from the beginning, outside any group.

use std::time::{Duration, Instant};

use choreo_bus::{Codec, KafkaSettings};
use choreo_events::AnyEvent;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// One raw record.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every record currently on `topic` (all partitions, up to the high
/// watermarks read at the start).
pub async fn read_all(brokers: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_all_blocking(&brokers, &topic)).await?
}

fn read_all_blocking(brokers: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = KafkaSettings::new(brokers).reader_config().create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0usize;
    let mut ends = std::collections::HashMap::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))?;
            ends.insert(*p, high);
            remaining += (high - low) as usize;
        }
    }
    let mut out = Vec::with_capacity(remaining);
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < remaining {
        if Instant::now() > deadline {
            anyhow::bail!("read {} of {remaining} records of {topic}", out.len());
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        if msg.offset() >= ends[&msg.partition()] {
            continue;
        }
        out.push(Record {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Every event on `topic`, decoded through the registry.
pub async fn events(brokers: &str, registry: &str, topic: &str) -> anyhow::Result<Vec<AnyEvent>> {
    let codec = Codec::new(registry);
    let mut out = Vec::new();
    for r in read_all(brokers, topic).await? {
        let source = format!("{}/{}/{}", r.topic, r.partition, r.offset);
        out.push(codec.decode(topic, &source, r.payload.as_deref()).await?);
    }
    Ok(out)
}

/// The events on `topic` that belong to `order_id`.
pub async fn order_events(
    brokers: &str,
    registry: &str,
    topic: &str,
    order_id: &str,
) -> anyhow::Result<Vec<AnyEvent>> {
    Ok(events(brokers, registry, topic)
        .await?
        .into_iter()
        .filter(|e| e.metadata().order_id == order_id)
        .collect())
}

/// Total lag of a group over its topics (see [`choreo_bus::lag`]).
pub async fn group_lag(brokers: &str, group: &str, topics: &[&str]) -> anyhow::Result<i64> {
    let kafka = KafkaSettings::new(brokers);
    let group = group.to_owned();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        Ok(choreo_bus::lag::group_lag(&kafka, &group, &topics)?)
    })
    .await?
}

/// Waits until every service group has committed up to the end of its
/// topics: everything produced so far has been processed.
pub async fn wait_groups_caught_up(brokers: &str, timeout: Duration) -> anyhow::Result<()> {
    crate::eventually("every consumer group to catch up", timeout, || async {
        for (group, topics) in choreo_events::CONSUMERS {
            if group_lag(brokers, group, topics).await? > 0 {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

/// Produces every record now on `topic` once more, byte for byte (key,
/// value and headers, so the same event ids), as a redelivery would;
/// returns how many.
pub async fn reproduce_all(brokers: &str, topic: &str) -> anyhow::Result<usize> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = KafkaSettings::new(brokers).producer_config().create()?;
    let records = read_all(brokers, topic).await?;
    for r in &records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(p) = &r.payload {
            record = record.payload(p);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("re-producing to {topic}: {e}"))?;
    }
    Ok(records.len())
}
