//! Group-less topic reading: assign every partition of the wanted topics
//! (no consumer group, so no join delay and no committed offsets to
//! disturb), start at the beginning or at the end, and either follow or
//! stop at the high watermarks seen when reading began.
//!
//! librdkafka's consumer API is blocking; a reader runs on its own thread
//! and hands records over a channel, so commands stay async.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::KafkaSettings;

/// Why topics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "cannot reach the Kafka broker at {brokers} ({source}); is the stack running? \
         (--brokers / CHOREO_BROKERS)"
    )]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic `{topic}` does not exist on {brokers} (topics: {known})")]
    NoSuchTopic {
        topic: String,
        brokers: String,
        known: String,
    },
    #[error("{doing}: {source}")]
    Kafka {
        doing: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("the reader thread: {0}")]
    Thread(String),
}

/// How long a metadata or watermark request may take before the broker
/// counts as unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(8);

/// Where reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained record of every partition.
    Beginning,
    /// Only what arrives after reading began.
    End,
}

/// One record as it is on the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Broker or producer timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The key as text (keys are order ids).
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// `topic/partition/offset`.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A running reader; dropping it stops its thread.
#[derive(Debug)]
pub struct TopicReader {
    rx: mpsc::Receiver<Result<Record, ReadError>>,
    stop: Arc<AtomicBool>,
    /// Records between the start position and the high watermarks when
    /// reading began (what `--exit-at-end` reads).
    pub pending: u64,
}

impl TopicReader {
    /// Opens a reader on `topics`. With `follow == false` the reader ends
    /// once every partition reached the high watermark read at the start.
    /// Fails when the broker is unreachable or a topic does not exist.
    pub async fn open(
        brokers: &str,
        topics: &[String],
        start: Start,
        follow: bool,
    ) -> Result<Self, ReadError> {
        let (tx, rx) = mpsc::channel(1024);
        let (opened_tx, opened_rx) = oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let settings = KafkaSettings::new(brokers);
        let topics = topics.to_vec();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("choreo-reader".into())
            .spawn(move || read_thread(settings, topics, start, follow, thread_stop, opened_tx, tx))
            .map_err(|e| ReadError::Thread(format!("starting: {e}")))?;
        let pending = opened_rx
            .await
            .map_err(|_| ReadError::Thread("it ended before opening".into()))??;
        Ok(Self { rx, stop, pending })
    }

    /// The next record; `None` once the end is reached (not following).
    pub async fn next(&mut self) -> Option<Result<Record, ReadError>> {
        self.rx.recv().await
    }
}

impl Drop for TopicReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Every record of `topics`, from the beginning up to the current end;
/// `each` is called with `(records read, records to read)` as they arrive.
pub async fn read_to_end(
    brokers: &str,
    topics: &[String],
    mut each: impl FnMut(u64, u64),
) -> Result<Vec<Record>, ReadError> {
    let mut reader = TopicReader::open(brokers, topics, Start::Beginning, false).await?;
    let total = reader.pending;
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    while let Some(record) = reader.next().await {
        out.push(record?);
        each(out.len() as u64, total);
    }
    Ok(out)
}

/// Names of every topic on the broker.
pub async fn list_topics(brokers: &str) -> Result<Vec<String>, ReadError> {
    let settings = KafkaSettings::new(brokers);
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings
            .reader_config()
            .set("log_level", "0")
            .create()
            .map_err(|source| ReadError::Kafka {
                doing: "creating a Kafka client",
                source,
            })?;
        let md = consumer
            .fetch_metadata(None, BROKER_TIMEOUT)
            .map_err(|e| unreachable(&brokers, e))?;
        let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_owned()).collect();
        names.sort();
        Ok(names)
    })
    .await
    .map_err(|e| ReadError::Thread(e.to_string()))?
}

fn unreachable(brokers: &str, source: KafkaError) -> ReadError {
    ReadError::Unreachable {
        brokers: brokers.to_owned(),
        source,
    }
}

fn read_thread(
    settings: KafkaSettings,
    topics: Vec<String>,
    start: Start,
    follow: bool,
    stop: Arc<AtomicBool>,
    opened: oneshot::Sender<Result<u64, ReadError>>,
    tx: mpsc::Sender<Result<Record, ReadError>>,
) {
    let (consumer, mut ends) = match open_consumer(&settings, &topics, start) {
        Ok(v) => v,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let pending: u64 = ends
        .values()
        .map(|(next, end)| (end - next).max(0) as u64)
        .sum();
    if opened.send(Ok(pending)).is_err() {
        return;
    }
    ends.retain(|_, (next, end)| next < end);
    while !stop.load(Ordering::Acquire) {
        if !follow && ends.is_empty() {
            return;
        }
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let record = match polled {
            Ok(msg) => {
                let key = (msg.topic().to_owned(), msg.partition());
                if let Some((next, end)) = ends.get_mut(&key) {
                    *next = msg.offset() + 1;
                    if *next >= *end {
                        ends.remove(&key);
                    }
                }
                Record {
                    topic: msg.topic().to_owned(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    timestamp_ms: msg.timestamp().to_millis(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec),
                    headers: msg
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            }
            Err(e) => {
                // Transient fetch errors are retried by librdkafka itself;
                // only tell the caller when it cannot continue.
                tracing::debug!(error = %e, "fetch error");
                continue;
            }
        };
        if tx.blocking_send(Ok(record)).is_err() {
            return;
        }
    }
}

/// Assigns every partition of `topics`; returns the consumer and, per
/// partition, `(start offset, high watermark)`.
#[allow(
    clippy::type_complexity,
    reason = "private helper; a named type would only be used here"
)]
fn open_consumer(
    settings: &KafkaSettings,
    topics: &[String],
    start: Start,
) -> Result<(BaseConsumer, HashMap<(String, i32), (i64, i64)>), ReadError> {
    let consumer: BaseConsumer = settings
        .reader_config()
        // The command reports an unreachable broker itself, once.
        .set("log_level", "0")
        .create()
        .map_err(|source| ReadError::Kafka {
            doing: "creating a Kafka client",
            source,
        })?;
    let md = consumer
        .fetch_metadata(None, BROKER_TIMEOUT)
        .map_err(|e| unreachable(&settings.brokers, e))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for topic in topics {
        let Some(meta) = md.topics().iter().find(|t| t.name() == topic) else {
            let mut known: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
            known.sort_unstable();
            return Err(ReadError::NoSuchTopic {
                topic: topic.clone(),
                brokers: settings.brokers.clone(),
                known: known.join(", "),
            });
        };
        for p in meta.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), BROKER_TIMEOUT)
                .map_err(|e| unreachable(&settings.brokers, e))?;
            let from = match start {
                Start::Beginning => low,
                Start::End => high,
            };
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(from))
                .map_err(|source| ReadError::Kafka {
                    doing: "choosing where to start",
                    source,
                })?;
            ends.insert((topic.clone(), p.id()), (from, high));
        }
    }
    consumer.assign(&tpl).map_err(|source| ReadError::Kafka {
        doing: "assigning partitions",
        source,
    })?;
    Ok((consumer, ends))
}
