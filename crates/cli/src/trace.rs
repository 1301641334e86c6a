//! `choreo trace ORDER_ID` and `choreo stuck`: read every saga topic from
//! the beginning to the current end and rebuild sagas with [`crate::saga`].

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use choreo_events::Topic;
use serde_json::json;

use crate::decode::Decoder;
use crate::output::{event_color, human_ms, now_ms, parse_duration, rfc3339_ms, Output, Progress};
use crate::reader::{read_to_end, Record};
use crate::render::summary;
use crate::saga::{Saga, SagaEvent};
use crate::Connection;

#[derive(Clone, Debug, clap::Args)]
pub struct TraceArgs {
    /// The order to trace.
    pub order_id: String,
}

#[derive(Clone, Debug, clap::Args)]
pub struct StuckArgs {
    /// Only orders placed at least this long ago (30s, 5m, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub older_than: Duration,
}

fn saga_topics() -> Vec<String> {
    Topic::ALL.iter().map(|t| t.name().to_owned()).collect()
}

/// Reads every saga topic and decodes the records `keep` selects. Records
/// that do not decode are skipped: `watch` and `dlq list` show them.
async fn load_events(
    conn: &Connection,
    progress: &mut Progress,
    keep: impl Fn(&Record) -> bool,
) -> anyhow::Result<Vec<SagaEvent>> {
    progress.set_label("reading topics");
    let records = read_to_end(&conn.brokers, &saga_topics(), progress).await?;
    let decoder = Decoder::new(&conn.registry);
    let mut events = Vec::new();
    for record in records.iter().filter(|r| keep(r)) {
        match decoder.decode_record(record).await {
            Ok(event) => events.push(SagaEvent::from_record(record, event)),
            Err(e) if e.is_retryable() => return Err(decoder.explain(e)),
            Err(e) => tracing::debug!(position = %record.position(), error = %e, "skipping"),
        }
    }
    Ok(events)
}

/// The saga of one order, from the topics alone.
pub async fn saga(
    conn: &Connection,
    order_id: &str,
    progress: &mut Progress,
) -> anyhow::Result<Saga> {
    let events = load_events(conn, progress, |r| {
        // Keys are order ids; a JSON request may be keyed by anything.
        r.key.as_deref() == Some(order_id.as_bytes()) || r.topic == Topic::OrderRequests.name()
    })
    .await?;
    let events = events
        .into_iter()
        .filter(|e| e.event.order_id() == order_id)
        .collect();
    Ok(Saga::new(order_id, events))
}

/// Every order's saga (orders known by an `OrderPlaced` or a
/// `PlaceOrder`), by order id.
pub async fn all_sagas(
    conn: &Connection,
    progress: &mut Progress,
) -> anyhow::Result<BTreeMap<String, Saga>> {
    let events = load_events(conn, progress, |_| true).await?;
    let mut by_order: BTreeMap<String, Vec<SagaEvent>> = BTreeMap::new();
    for e in events {
        by_order
            .entry(e.event.order_id().to_owned())
            .or_default()
            .push(e);
    }
    Ok(by_order
        .into_iter()
        .map(|(id, events)| {
            let saga = Saga::new(id.clone(), events);
            (id, saga)
        })
        .filter(|(_, saga)| saga.placed_at.is_some())
        .collect())
}

/// `choreo trace`: prints the timeline; fails when the order has no
/// event at all.
pub async fn run_trace(
    conn: &Connection,
    args: &TraceArgs,
    output: Output,
    out: &mut impl Write,
    progress: &mut Progress,
) -> anyhow::Result<Saga> {
    let saga = saga(conn, &args.order_id, progress).await?;
    if saga.events.is_empty() {
        bail!(
            "no event of order {} on any saga topic ({})",
            args.order_id,
            saga_topics().join(", ")
        );
    }
    print_saga(&saga, now_ms(), output, out)?;
    Ok(saga)
}

/// The timeline of `saga` as lines (or JSON objects), then its outcome and
/// the step it waits on.
pub fn print_saga(
    saga: &Saga,
    now: i64,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if !output.json {
        writeln!(
            out,
            "{}",
            output.paint("1", &format!("order {}", saga.order_id))
        )?;
        let traces = saga.trace_ids();
        if !traces.is_empty() {
            // The id to look up in a tracing UI (Jaeger: /trace/<id>).
            writeln!(out, "  trace {}", traces.join(", "))?;
        }
    }
    for e in &saga.events {
        let meta = e.event.metadata();
        let since = saga.since_placed(e);
        let cause = saga.cause_of(e);
        if output.json {
            output.json_line(
                out,
                &json!({
                    "order_id": saga.order_id,
                    "time": rfc3339_ms(meta.occurred_at),
                    "since_placed_ms": since,
                    "topic": e.topic,
                    "partition": e.partition,
                    "offset": e.offset,
                    "event_type": e.event.event_type(),
                    "producer": meta.producer,
                    "event_id": meta.event_id,
                    "causation_id": meta.causation_id,
                    "trace_id": e.trace_id,
                    "caused_by": cause.map(|c| c.event.event_type()),
                    "summary": summary(&e.event),
                    "event": e.event.to_json(),
                }),
            )?;
            continue;
        }
        let since = since.map_or_else(|| "?".to_owned(), |ms| format!("{ms:+} ms"));
        let caused_by = match (&meta.causation_id, cause) {
            (None, _) => String::new(),
            (Some(_), Some(c)) => format!("← {}", c.event.event_type()),
            (Some(id), None) => format!("← {}", short(id)),
        };
        let event_type = e.event.event_type();
        writeln!(
            out,
            "  {:>10}  {:<14} {}  by {:<14} {:<22} {}",
            since,
            e.topic,
            output.paint(event_color(event_type), &format!("{event_type:<22}")),
            crate::output::printable(&meta.producer),
            crate::output::printable(&caused_by),
            summary(&e.event)
        )?;
    }
    let waiting = saga
        .waiting
        .as_ref()
        .map(|w| (w.describe(), now - w.since_ms));
    if output.json {
        output.json_line(
            out,
            &json!({
                "order_id": saga.order_id,
                "state": saga.outcome.to_string(),
                "terminal": saga.outcome.is_terminal(),
                "duration_ms": saga.placed_at.zip(saga.events.last()).map(|(p, l)| l.occurred_at() - p),
                "waiting_for": saga.waiting.as_ref().map(|w| w.service),
                "waiting_events": saga.waiting.as_ref().map(|w| w.events),
                "waiting_ms": waiting.as_ref().map(|(_, ms)| ms),
                "trace_ids": saga.trace_ids(),
            }),
        )?;
        return Ok(());
    }
    let state = saga.outcome.to_string();
    let color = match &saga.outcome {
        crate::saga::Outcome::Confirmed => "32",
        crate::saga::Outcome::Cancelled(_) => "31",
        crate::saga::Outcome::InProgress => "33",
    };
    let took = match (saga.placed_at, saga.events.last()) {
        (Some(p), Some(last)) if saga.outcome.is_terminal() => {
            format!(" after {}", human_ms(last.occurred_at() - p))
        }
        _ => String::new(),
    };
    writeln!(out, "state: {}{took}", output.paint(color, &state))?;
    if let Some((what, ms)) = waiting {
        let note = if saga.outcome.is_terminal() {
            " (still to settle)"
        } else {
            ""
        };
        writeln!(
            out,
            "{} for {}{note}",
            output.paint("33", &what),
            human_ms(ms)
        )?;
    }
    Ok(())
}

fn short(id: &str) -> String {
    id.chars().take(8).collect::<String>() + "…"
}

/// `choreo stuck`: orders placed more than `older_than` ago with no
/// terminal event, each with the step it waits on. Returns them.
pub async fn run_stuck(
    conn: &Connection,
    args: &StuckArgs,
    output: Output,
    out: &mut impl Write,
    progress: &mut Progress,
) -> anyhow::Result<Vec<Saga>> {
    let sagas = all_sagas(conn, progress).await?;
    let now = now_ms();
    let age = args.older_than.as_millis() as i64;
    let stuck: Vec<Saga> = sagas
        .into_values()
        .filter(|s| s.is_stuck(now, age))
        .collect();
    for saga in &stuck {
        let placed = saga.placed_at.unwrap_or(now);
        let waiting = saga.waiting.as_ref();
        if output.json {
            output.json_line(
                out,
                &json!({
                    "order_id": saga.order_id,
                    "placed_at": rfc3339_ms(placed),
                    "age_ms": now - placed,
                    "last_event": saga.events.last().map(|e| e.event.event_type()),
                    "waiting_for": waiting.map(|w| w.service),
                    "waiting_events": waiting.map(|w| w.events),
                    "waiting_ms": waiting.map(|w| now - w.since_ms),
                }),
            )?;
        } else {
            let what = waiting.map_or_else(
                || "waiting (unknown step)".to_owned(),
                |w| format!("{} for {}", w.describe(), human_ms(now - w.since_ms)),
            );
            writeln!(
                out,
                "{}  placed {} ago  last {:<22} {}",
                output.paint("1", &saga.order_id),
                human_ms(now - placed),
                saga.events
                    .last()
                    .map(|e| e.event.event_type())
                    .unwrap_or("-"),
                output.paint("33", &what)
            )?;
        }
    }
    if !output.json && stuck.is_empty() {
        // On stderr: stdout lists stuck orders only, so scripts can count.
        eprintln!("no order older than {} is waiting", human_ms(age));
    }
    Ok(stuck)
}
