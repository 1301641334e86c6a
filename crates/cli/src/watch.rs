//! `choreo watch`: every event of the saga topics, decoded, one line each,
//! as it arrives (or from the beginning, optionally stopping at the end).

use std::io::Write;

use choreo_events::Topic;

use crate::decode::Decoder;
use crate::output::{event_color, printable, printable_or_dash, rfc3339_ms, Output};
use crate::reader::{Record, Start, TopicReader};
use crate::render::{event_json, preview, summary};
use crate::Connection;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct WatchArgs {
    /// Topic to watch (repeatable; default: every saga topic).
    #[arg(long = "topic", short = 't')]
    pub topics: Vec<String>,
    /// Only events of this order.
    #[arg(long = "order")]
    pub order_id: Option<String>,
    /// Start at the oldest record instead of the end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop once the end of every partition, as it was at start, is reached.
    #[arg(long)]
    pub exit_at_end: bool,
}

impl WatchArgs {
    fn topics(&self) -> Vec<String> {
        if self.topics.is_empty() {
            Topic::ALL.iter().map(|t| t.name().to_owned()).collect()
        } else {
            self.topics.clone()
        }
    }
}

/// Runs `watch`, writing one line per event to `out`; returns how many
/// events it printed. Runs until the end with `exit_at_end`, otherwise
/// until `out` fails or the process is stopped.
pub async fn run(
    conn: &Connection,
    args: &WatchArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let start = if args.from_beginning {
        Start::Beginning
    } else {
        Start::End
    };
    let mut reader =
        TopicReader::open(&conn.brokers, &args.topics(), start, !args.exit_at_end).await?;
    let decoder = Decoder::new(&conn.registry);
    let mut printed = 0;
    while let Some(record) = reader.next().await {
        let record = record?;
        if print_record(&decoder, &record, args.order_id.as_deref(), output, out).await? {
            printed += 1;
            out.flush()?;
        }
    }
    Ok(printed)
}

/// Prints one record if it belongs to `order` (or no order filter);
/// undecodable records are printed as such, never skipped silently.
async fn print_record(
    decoder: &Decoder,
    record: &Record,
    order: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let key = record.key_str();
    // Keys are order ids; only JSON requests may lack a matching key.
    if let Some(order) = order {
        if key.as_deref() != Some(order) && record.topic != Topic::OrderRequests.name() {
            return Ok(false);
        }
    }
    match decoder.decode_record(record).await {
        Ok(event) => {
            if order.is_some_and(|o| event.order_id() != o) {
                return Ok(false);
            }
            if output.json {
                output.json_line(out, &event_json(record, &event))?;
            } else {
                let event_type = event.event_type();
                writeln!(
                    out,
                    "{}  {:<14} {:<24} {}  {}",
                    rfc3339_ms(event.metadata().occurred_at),
                    record.topic,
                    output.paint(event_color(event_type), &format!("{event_type:<22}")),
                    output.paint("1", event.order_id()),
                    summary(&event)
                )?;
            }
        }
        Err(e) => {
            let what = record
                .value
                .as_deref()
                .map(preview)
                .unwrap_or_else(|| "null".into());
            let error = decoder.explain(e);
            if output.json {
                output.json_line(
                    out,
                    &serde_json::json!({
                        "time": record.timestamp_ms.map(rfc3339_ms),
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                        "order_id": key,
                        "error": error.to_string(),
                        "value": what,
                    }),
                )?;
            } else {
                writeln!(
                    out,
                    "{}  {:<14} {:<24} {}  {} ({what})",
                    record.timestamp_ms.map(rfc3339_ms).unwrap_or_default(),
                    record.topic,
                    output.paint("33", &format!("{:<22}", "(undecodable)")),
                    printable_or_dash(key.as_deref()),
                    printable(&error.to_string())
                )?;
            }
        }
    }
    Ok(true)
}
