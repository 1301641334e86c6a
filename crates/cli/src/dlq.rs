//! `choreo dlq list` and `choreo dlq replay`: the dead-letter topics
//! (`dlq.<service>`) — what failed, why, where it came from — and putting
//! a dead letter back on its source topic once the cause is fixed.
//!
//! A replay re-produces the original key, value and headers to the source
//! topic and partition (so it keeps its place in per-order ordering),
//! minus the dead-letter headers, plus `choreo.replay=<dlq>/<p>/<offset>`
//! so the replayed copy can be told from the original.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use choreo_bus::consumer::dlq_headers;
use choreo_bus::{headers, KafkaSettings};
use choreo_events::{dlq_topic, AnyEvent, SERVICES};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::decode::Decoder;
use crate::output::{human_ms, now_ms, printable, printable_or_dash, rfc3339_ms, Output, Progress};
use crate::reader::{list_topics, read_to_end, Record};
use crate::render::{preview, summary};
use crate::Connection;

/// Headers the consumer loop and the relay add when dead-lettering; a
/// replay drops them.
const DLQ_HEADERS: [&str; 13] = [
    headers::ERROR,
    headers::SOURCE_TOPIC,
    headers::SOURCE_PARTITION,
    headers::SOURCE_OFFSET,
    headers::ATTEMPTS,
    headers::SERVICE,
    headers::FAILED_AT,
    headers::REPLAY,
    dlq_headers::TRUNCATED,
    dlq_headers::ORIGINAL_SIZE,
    dlq_headers::HEADERS_DROPPED,
    dlq_headers::KEY_DROPPED,
    dlq_headers::OUTBOX_SEQ,
];

#[derive(Clone, Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Dead letters of every service, or of one.
    List {
        /// order, inventory, courier, payment or communication.
        service: Option<String>,
    },
    /// Re-produce dead letters of a service to their source topic.
    Replay(ReplayArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// The service whose dead letters to replay.
    pub service: String,
    /// Replay the dead letter at this offset of `dlq.<service>`.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    pub offset: Option<i64>,
    /// Replay every dead letter of the service.
    #[arg(long)]
    pub all: bool,
}

/// One dead letter.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub record: Record,
    pub reason: String,
    pub service: String,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub attempts: Option<u32>,
    pub failed_at_ms: Option<i64>,
    /// The value, decoded as an event of its source topic, when it is one.
    pub decoded: Option<AnyEvent>,
}

impl DeadLetter {
    fn from_record(record: Record) -> Self {
        let service = record
            .header(headers::SERVICE)
            .or_else(|| record.topic.strip_prefix("dlq.").map(str::to_owned))
            .unwrap_or_default();
        Self {
            reason: record
                .header(headers::ERROR)
                .unwrap_or_else(|| "(no reason header)".into()),
            source_topic: record.header(headers::SOURCE_TOPIC),
            source_partition: record
                .header(headers::SOURCE_PARTITION)
                .and_then(|v| v.parse().ok()),
            source_offset: record
                .header(headers::SOURCE_OFFSET)
                .and_then(|v| v.parse().ok()),
            attempts: record
                .header(headers::ATTEMPTS)
                .and_then(|v| v.parse().ok()),
            failed_at_ms: record
                .header(headers::FAILED_AT)
                .and_then(|v| v.parse().ok()),
            service,
            decoded: None,
            record,
        }
    }

    /// The original payload's size when this copy was cut to fit
    /// (`choreo.truncated`), `None` for a whole copy.
    pub fn truncated(&self) -> Option<u64> {
        (self.record.header(dlq_headers::TRUNCATED).as_deref() == Some("true")).then(|| {
            self.record
                .header(dlq_headers::ORIGINAL_SIZE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
    }

    /// `source-topic/partition/offset` of the original message.
    pub fn source(&self) -> String {
        format!(
            "{}/{}/{}",
            self.source_topic.as_deref().unwrap_or("?"),
            self.source_partition.map_or("?".into(), |p| p.to_string()),
            self.source_offset.map_or("?".into(), |o| o.to_string())
        )
    }

    /// The decoded event's summary, or a text/hex preview of the value.
    pub fn value_preview(&self) -> String {
        match (&self.decoded, &self.record.value) {
            (Some(e), _) => format!("{} {}", e.event_type(), summary(e)),
            (None, Some(v)) => preview(v),
            (None, None) => "null".into(),
        }
    }
}

fn check_service(service: &str) -> anyhow::Result<()> {
    if SERVICES.contains(&service) {
        Ok(())
    } else {
        bail!(
            "unknown service `{service}` (expected one of: {})",
            SERVICES.join(", ")
        )
    }
}

/// The dead-letter topics on the broker: `dlq.<service>` of `service`, or
/// every `dlq.*` topic.
pub async fn dlq_topics(conn: &Connection, service: Option<&str>) -> anyhow::Result<Vec<String>> {
    let all = list_topics(&conn.brokers).await?;
    Ok(match service {
        Some(s) => {
            check_service(s)?;
            let topic = dlq_topic(s);
            if !all.contains(&topic) {
                bail!(
                    "topic {topic} does not exist on {} (run `choreo init`)",
                    conn.brokers
                );
            }
            vec![topic]
        }
        None => all.into_iter().filter(|t| t.starts_with("dlq.")).collect(),
    })
}

/// Every dead letter of `service` (or of all services), decoded where the
/// value is an event of its source topic.
pub async fn list(
    conn: &Connection,
    service: Option<&str>,
    progress: &mut Progress,
) -> anyhow::Result<Vec<DeadLetter>> {
    let topics = dlq_topics(conn, service).await?;
    progress.set_label("reading dead-letter topics");
    let records = read_to_end(&conn.brokers, &topics, progress).await?;
    let decoder = Decoder::new(&conn.registry);
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let mut letter = DeadLetter::from_record(record);
        if let Some(topic) = &letter.source_topic {
            letter.decoded = decoder
                .decode(topic, &letter.source(), letter.record.value.as_deref())
                .await
                .ok();
        }
        out.push(letter);
    }
    out.sort_by(|a, b| {
        (&a.record.topic, a.record.partition, a.record.offset).cmp(&(
            &b.record.topic,
            b.record.partition,
            b.record.offset,
        ))
    });
    Ok(out)
}

/// `choreo dlq list`.
pub async fn run_list(
    conn: &Connection,
    service: Option<&str>,
    output: Output,
    out: &mut impl Write,
    progress: &mut Progress,
) -> anyhow::Result<Vec<DeadLetter>> {
    let letters = list(conn, service, progress).await?;
    let now = now_ms();
    for l in &letters {
        let age = l.failed_at_ms.or(l.record.timestamp_ms).map(|t| now - t);
        if output.json {
            output.json_line(
                out,
                &json!({
                    "dlq": l.record.position(),
                    "service": l.service,
                    "reason": l.reason,
                    "source": l.source(),
                    "key": l.record.key_str(),
                    "attempts": l.attempts,
                    "failed_at": l.failed_at_ms.map(rfc3339_ms),
                    "age_ms": age,
                    "replay_of": l.record.header(headers::REPLAY),
                    "truncated_from": l.truncated(),
                    "event_type": l.decoded.as_ref().map(|e| e.event_type()),
                    "event": l.decoded.as_ref().map(|e| e.to_json()),
                    "value": l.value_preview(),
                }),
            )?;
        } else {
            writeln!(
                out,
                "{}  {}  from {}  key {}  {} ago  attempts {}",
                output.paint("1", &l.record.position()),
                output.paint("31", &l.reason),
                printable(&l.source()),
                // Keys are bytes from outside: escaped, so a key cannot
                // repaint the terminal or forge a line.
                printable_or_dash(l.record.key_str().as_deref()),
                age.map_or_else(|| "?".into(), human_ms),
                l.attempts.map_or_else(|| "?".into(), |a| a.to_string()),
            )?;
            let replay = l
                .record
                .header(headers::REPLAY)
                .map(|r| format!("  (a replay of {})", printable(&r)))
                .unwrap_or_default();
            let cut = l
                .truncated()
                .map(|size| format!("  (truncated copy of {size} bytes; not replayable)"))
                .unwrap_or_default();
            writeln!(
                out,
                "    value: {}{replay}{cut}",
                printable(&l.value_preview())
            )?;
        }
    }
    if !output.json && letters.is_empty() {
        eprintln!("no dead letters");
    }
    Ok(letters)
}

/// What a replay produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// `dlq.<service>/<partition>/<offset>` of the dead letter.
    pub from: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
}

/// Which dead letters to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Offset(i64),
    All,
}

/// Re-produces dead letters of `service` to their source topic and
/// partition with their original key, value and headers, plus
/// `choreo.replay`.
pub async fn replay(
    conn: &Connection,
    service: &str,
    which: Which,
    progress: &mut Progress,
) -> anyhow::Result<Vec<Replayed>> {
    check_service(service)?;
    let letters = list(conn, Some(service), progress).await?;
    let chosen: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| match which {
            Which::All => true,
            Which::Offset(o) => l.record.offset == o,
        })
        .collect();
    // A truncated copy is not the message that failed: replaying it would
    // only dead-letter a different, cut message.
    if let (Which::Offset(_), [letter]) = (which, &chosen[..]) {
        if let Some(size) = letter.truncated() {
            bail!(
                "{} is a truncated copy (the original was {size} bytes); it cannot be replayed. \
                 The original is at {}",
                letter.record.position(),
                letter.source()
            );
        }
    }
    let (truncated, chosen): (Vec<&DeadLetter>, Vec<&DeadLetter>) =
        chosen.into_iter().partition(|l| l.truncated().is_some());
    for l in truncated {
        tracing::warn!(
            dead_letter = %l.record.position(),
            "skipped: a truncated copy cannot be replayed (the original is at {})",
            l.source()
        );
    }
    if let (Which::Offset(o), true) = (which, chosen.is_empty()) {
        let offsets: Vec<String> = letters
            .iter()
            .map(|l| l.record.offset.to_string())
            .collect();
        bail!(
            "no dead letter at offset {o} of {} (offsets: {})",
            dlq_topic(service),
            if offsets.is_empty() {
                "none".into()
            } else {
                offsets.join(", ")
            }
        );
    }
    let producer: FutureProducer = KafkaSettings::new(&conn.brokers)
        .producer_config()
        .set("log_level", "0")
        .create()
        .context("creating a Kafka producer")?;
    let mut done = Vec::new();
    for l in chosen {
        let topic = l.source_topic.clone().ok_or_else(|| {
            anyhow!(
                "{} has no {} header; cannot replay",
                l.record.position(),
                headers::SOURCE_TOPIC
            )
        })?;
        let from = l.record.position();
        let mut hdrs = OwnedHeaders::new();
        for (k, v) in &l.record.headers {
            if !DLQ_HEADERS.contains(&k.as_str()) {
                hdrs = hdrs.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
        }
        hdrs = hdrs.insert(Header {
            key: headers::REPLAY,
            value: Some(from.as_bytes()),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(hdrs);
        if let Some(p) = l.source_partition {
            record = record.partition(p);
        }
        if let Some(k) = &l.record.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &l.record.value {
            record = record.payload(v.as_slice());
        }
        let delivered = producer
            .send(record, Duration::from_secs(15))
            .await
            .map_err(|(e, _)| anyhow!("producing {from} to {topic} on {}: {e}", conn.brokers))?;
        done.push(Replayed {
            from,
            topic,
            partition: delivered.partition,
            offset: delivered.offset,
            key: l.record.key_str(),
        });
    }
    Ok(done)
}

/// `choreo dlq replay`.
pub async fn run_replay(
    conn: &Connection,
    args: &ReplayArgs,
    output: Output,
    out: &mut impl Write,
    progress: &mut Progress,
) -> anyhow::Result<Vec<Replayed>> {
    let which = match args.offset {
        Some(o) => Which::Offset(o),
        None if args.all => Which::All,
        None => bail!("say which dead letters to replay: --offset N or --all"),
    };
    let done = replay(conn, &args.service, which, progress).await?;
    for r in &done {
        if output.json {
            output.json_line(
                out,
                &json!({
                    "from": r.from,
                    "to": format!("{}/{}/{}", r.topic, r.partition, r.offset),
                    "key": r.key,
                }),
            )?;
        } else {
            writeln!(
                out,
                "replayed {} → {}/{}/{}  key {}",
                r.from,
                r.topic,
                r.partition,
                r.offset,
                r.key.as_deref().unwrap_or("-")
            )?;
        }
    }
    if !output.json && done.is_empty() {
        eprintln!("nothing to replay in {}", dlq_topic(&args.service));
    }
    Ok(done)
}
