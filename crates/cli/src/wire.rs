//! `choreo encode` and `choreo decode`: hand-written events to
//! Confluent-Avro bytes (for kcat) and back to JSON.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use choreo_events::catalogue::SchemaEntry;
use choreo_events::{AnyEvent, Topic};
use serde_json::{json, Value};

use crate::decode::Decoder;
use crate::output::Output;
use crate::Connection;

#[derive(Clone, Debug, clap::Args)]
pub struct EncodeArgs {
    /// Topic the event goes to (orders, inventory, shipments, payments,
    /// notifications, order-requests).
    pub topic: String,
    /// Event type, e.g. PaymentFailed.
    pub event_type: String,
    /// The event as JSON shaped like its schema; `-` or absent: stdin.
    /// Without `metadata`, a top-level `order_id` generates it.
    #[arg(value_name = "JSON")]
    pub event_json: Option<String>,
    /// Write the bytes here instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct DecodeArgs {
    /// File with one message value (Confluent-Avro, or a JSON command);
    /// `-` or absent: stdin.
    pub file: Option<PathBuf>,
}

/// Parses the event of `event_type` for `topic` from JSON text. Errors
/// say which event types exist and where the JSON is broken.
pub fn parse_event(topic: &str, event_type: &str, json_text: &str) -> anyhow::Result<AnyEvent> {
    let topic: Topic = topic.parse().map_err(|e: String| {
        anyhow!(
            "{e} (expected one of: {})",
            Topic::ALL.map(Topic::name).join(", ")
        )
    })?;
    let entry =
        SchemaEntry::by_event_type(event_type).or_else(|| SchemaEntry::by_full_name(event_type));
    let Some(entry) = entry else {
        let of_topic: Vec<&str> = SchemaEntry::of_topic(topic).map(|e| e.event_type).collect();
        bail!(
            "unknown event type `{event_type}`; on {topic}: {} (all: {})",
            of_topic.join(", "),
            choreo_events::catalogue()
                .iter()
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if entry.topic != topic {
        bail!(
            "{} belongs on topic {}, not {topic}; events of {topic}: {}",
            entry.event_type,
            entry.topic,
            SchemaEntry::of_topic(topic)
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let value: Value = serde_json::from_str(json_text).map_err(|e| {
        anyhow!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    Ok(AnyEvent::from_json(entry.event_type, value)?)
}

/// Confluent-Avro bytes of the event (schema registered or looked up).
pub async fn encode(
    conn: &Connection,
    topic: &str,
    event_type: &str,
    json_text: &str,
) -> anyhow::Result<Vec<u8>> {
    let event = parse_event(topic, event_type, json_text)?;
    Decoder::new(&conn.registry).encode(&event).await
}

/// `choreo encode`: reads the JSON (argument or stdin), writes the bytes
/// to the file or `out`.
pub async fn run_encode(
    conn: &Connection,
    args: &EncodeArgs,
    out: &mut impl Write,
) -> anyhow::Result<Vec<u8>> {
    let text = match args.event_json.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the event JSON from stdin")?;
            s
        }
        Some(text) => text.to_owned(),
    };
    let bytes = encode(conn, &args.topic, &args.event_type, &text).await?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(bytes)
}

/// The JSON `choreo decode` prints for an event.
pub fn decoded_json(event: &AnyEvent) -> Value {
    json!({
        "topic": event.topic().name(),
        "event_type": event.event_type(),
        "event": event.to_json(),
    })
}

/// Decodes one message value.
pub async fn decode(conn: &Connection, bytes: &[u8]) -> anyhow::Result<AnyEvent> {
    if bytes.is_empty() {
        bail!("no bytes to decode (empty input)");
    }
    Decoder::new(&conn.registry).decode_any(bytes).await
}

/// `choreo decode`: bytes from the file or stdin → JSON on `out` (pretty
/// for people, one line with `--json`).
pub async fn run_decode(
    conn: &Connection,
    args: &DecodeArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<AnyEvent> {
    let bytes = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading bytes from stdin")?;
            b
        }
    };
    let event = decode(conn, &bytes).await?;
    let value = decoded_json(&event);
    if output.json {
        output.json_line(out, &value)?;
    } else {
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_event_gets_metadata() {
        let e = parse_event(
            "payments",
            "PaymentFailed",
            r#"{"order_id": "o-1", "reason": "INSUFFICIENT_FUNDS"}"#,
        )
        .unwrap();
        assert_eq!(e.order_id(), "o-1");
        assert_eq!(e.metadata().producer, "cli");
        assert_eq!(e.event_type(), "PaymentFailed");
    }

    #[test]
    fn errors_say_what_is_valid_and_where() {
        let e = parse_event("payments", "PaymentFialed", "{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown event type `PaymentFialed`"), "{e}");
        assert!(
            e.contains("PaymentCompleted, PaymentFailed, PaymentRefunded"),
            "{e}"
        );

        let e = parse_event("orders", "PaymentFailed", "{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs on topic payments"), "{e}");

        let e = parse_event("paymnts", "PaymentFailed", "{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown topic `paymnts`"), "{e}");

        let e = parse_event(
            "payments",
            "PaymentFailed",
            "{\"order_id\": \"o\",\n \"reason\" }",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid JSON at line 2 column"), "{e}");

        let e = parse_event(
            "payments",
            "PaymentFailed",
            r#"{"order_id": "o", "reasn": "X"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `reasn`"), "{e}");
    }
}
