//! `choreo dlq list` and `choreo dlq replay`: the dead-letter topics
//! (`dlq.<service>`) — what failed, why, where it came from — and putting
//! a dead letter back on its source topic once the cause is fixed.
//!
//! Listing reads the topics ([`choreo_bus::dlq::read`]). A replay is a
//! write outside the saga, so it asks the service whose dead letters they
//! are (`POST /dlq/replay`, [`choreo_bus::dlq`]) with the admin token; the
//! service re-produces the original key, value and headers to the source
//! topic and partition, minus the dead-letter headers, plus
//! `choreo.replay=<dlq>/<p>/<offset>`.

use std::io::Write;
use std::ops::Deref;

use anyhow::{bail, Context};
use choreo_bus::dlq::Letter;
pub use choreo_bus::dlq::{Replay, Replayed, Skipped, Which};
use choreo_bus::{headers, AdminToken};
use choreo_events::{dlq_topic, AnyEvent, SERVICES};
use serde_json::json;

use crate::decode::Decoder;
use crate::output::{human_ms, now_ms, printable, printable_or_dash, rfc3339_ms, Output, Progress};
use crate::reader::list_topics;
use crate::render::{preview, summary};
use crate::Connection;

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
    /// The service's base URL (default: `CHOREO_<SERVICE>_URL`, else the
    /// address `make run` gives it).
    #[arg(long)]
    pub url: Option<String>,
    /// The stack's admin token (default: `./data/admin-token`, where `make
    /// run` keeps it).
    #[arg(long, env = "CHOREO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// One dead letter, with its value decoded as an event of its source
/// topic when it is one.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub letter: Letter,
    pub decoded: Option<AnyEvent>,
}

impl Deref for DeadLetter {
    type Target = Letter;

    fn deref(&self) -> &Letter {
        &self.letter
    }
}

impl DeadLetter {
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
    let mut total_set = false;
    let letters = choreo_bus::dlq::read(&conn.brokers, &topics, |_, total| {
        if !total_set {
            progress.set_total(Some(total));
            total_set = true;
        }
        progress.inc(1);
    })
    .await?;
    progress.finish();
    let decoder = Decoder::new(&conn.registry);
    let mut out = Vec::with_capacity(letters.len());
    for letter in letters {
        let decoded = match &letter.source_topic {
            Some(topic) => decoder
                .decode(topic, &letter.source(), letter.record.value.as_deref())
                .await
                .ok(),
            None => None,
        };
        out.push(DeadLetter { letter, decoded });
    }
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

/// Where a replay is asked for: a service's base URL and the admin token.
#[derive(Clone, Debug)]
pub struct ReplayTarget {
    pub service: String,
    pub url: String,
    pub admin: AdminToken,
}

impl ReplayTarget {
    /// `service` at `url` (or `CHOREO_<SERVICE>_URL`, or `make run`'s
    /// address), with `admin_token` (or the one `make run` keeps).
    pub fn new(
        service: &str,
        url: Option<&str>,
        admin_token: Option<&str>,
    ) -> anyhow::Result<Self> {
        check_service(service)?;
        let url = match url {
            Some(u) => u.to_owned(),
            None => std::env::var(format!("CHOREO_{}_URL", service.to_uppercase())).unwrap_or_else(
                |_| {
                    crate::reconcile::Endpoints::default()
                        .of(service)
                        .to_owned()
                },
            ),
        };
        Ok(Self {
            service: service.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            admin: crate::conn::running_admin_token(admin_token)?,
        })
    }
}

/// Asks `target`'s service to re-produce its dead letters to their source
/// topic and partition (`POST /dlq/replay`).
pub async fn replay(target: &ReplayTarget, which: Which) -> anyhow::Result<Replay> {
    let body = match which {
        Which::Offset(o) => json!({ "offset": o }),
        Which::All => json!({ "all": true }),
    };
    let endpoint = format!("{}/dlq/replay", target.url);
    let mut request = reqwest::Client::new().post(&endpoint).json(&body);
    if let Some(token) = target.admin.expose() {
        request = request.bearer_auth(token);
    }
    let service = &target.service;
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach the {service} service at {} (is the stack running? --url / CHOREO_{}_URL)",
            target.url,
            service.to_uppercase()
        )
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            " (pass --admin-token or CHOREO_ADMIN_TOKEN; `make run` keeps it in data/admin-token)"
        } else {
            ""
        };
        bail!("{service} refused the replay ({status}): {message}{hint}");
    }
    serde_json::from_str(&text)
        .with_context(|| format!("{endpoint} answered something that is not a replay: {text}"))
}

/// `choreo dlq replay`.
pub async fn run_replay(
    args: &ReplayArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<Replay> {
    let which = match args.offset {
        Some(o) => Which::Offset(o),
        None if args.all => Which::All,
        None => bail!("say which dead letters to replay: --offset N or --all"),
    };
    let target = ReplayTarget::new(
        &args.service,
        args.url.as_deref(),
        args.admin_token.as_deref(),
    )?;
    let done = replay(&target, which).await?;
    for skipped in &done.skipped {
        eprintln!(
            "skipped {}: {}",
            skipped.dead_letter,
            printable(&skipped.reason)
        );
    }
    for r in &done.replayed {
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
                printable_or_dash(r.key.as_deref())
            )?;
        }
    }
    if !output.json && done.replayed.is_empty() && done.skipped.is_empty() {
        eprintln!("nothing to replay in {}", dlq_topic(&args.service));
    }
    Ok(done)
}
