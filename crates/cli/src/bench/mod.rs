//! `choreo bench`: saga throughput and end-to-end latency, measured beside
//! the broker's own ceiling.
//!
//! The benchmark starts its own local stack on free ports (or targets a
//! running one with `--target-running`), seeds stock and balances large
//! enough, and drives orders either **open-loop** at a fixed rate
//! (`--rate R --duration D`) or **closed-loop** at max (`--concurrency C`),
//! over `order-requests` (Confluent-Avro `PlaceOrder`) or the Order API
//! (`--via http`). `--fail-share` makes that share of orders fail, spread
//! over the four compensations, so their cost is measured too.
//!
//! Per order it measures placed → terminal (`OrderConfirmed` /
//! `OrderCancelled` seen on `orders`) and placed → `CustomerNotified`, in
//! HDR histograms. It also reports consumer lag per service group, each
//! process's CPU% and peak RSS (sampled from /proc), and the **bus
//! ceiling**: raw produce→consume messages/s on the same broker with the
//! same client settings, divided by the deliveries one saga needs.
//!
//! Numbers, not assertions: nothing here is a timed test.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use choreo_bus::{AdminToken, Codec, KafkaSettings};
use choreo_stack::{LogSink, Ports, Stack, StackConfig};
use serde_json::{json, Value};

use crate::Connection;

mod ceiling;
mod driver;
mod procstat;
mod report;
mod tracker;

use ceiling::{bus_ceiling, consumer_lag};
pub(crate) use driver::address;
use driver::Driver;
use procstat::{stack_processes, ProcSampler, LOAD_GENERATOR};
use report::print_report;
use tracker::{progress_loop, Tracker};

/// Deliveries (consumer receptions) one happy-path saga causes, from the
/// topic catalogue ([`choreo_events::saga::deliveries_per_saga`]).
pub fn deliveries_per_saga() -> u64 {
    choreo_events::saga::deliveries_per_saga()
}

const SKU: &str = "BENCH-1";
const SKU_SOLDOUT: &str = "BENCH-SOLDOUT";
const RICH: &str = "bench-rich";
const POOR: &str = "bench-poor";
const BLOCKED: &str = "bench-blocked";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// `PlaceOrder` in Confluent-Avro on `order-requests`.
    Requests,
    /// `POST /orders` on the Order API.
    Http,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Open loop: orders per second offered. Without it, closed loop.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Closed loop: orders in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to place orders, e.g. 60s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Orders placed before this are not measured (caches, JIT of the OS).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    #[arg(long, value_enum, default_value_t = Via::Requests)]
    pub via: Via,
    /// Share of orders (0..1) that fail, spread over out of stock, no
    /// route, insufficient funds and blocked customer.
    #[arg(long, default_value_t = 0.0)]
    pub fail_share: f64,
    /// Use the stack already running at --brokers/--registry and the
    /// default service ports instead of starting one.
    #[arg(long)]
    pub target_running: bool,
    /// Messages for the bus-ceiling measurement (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub ceiling_messages: u64,
    /// Write the full report as JSON to this file (the global `--json`
    /// prints it on stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub order_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    pub inventory_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    pub payment_url: String,
    /// With --target-running: the stack's admin token, for seeding stock
    /// and accounts (default: `./data/admin-token`, where `make run` keeps
    /// it).
    #[arg(long, env = "CHOREO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit in {s}; use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Where the stack under test listens.
struct Target {
    brokers: String,
    registry: String,
    order: String,
    inventory: String,
    payment: String,
    admin: AdminToken,
    _stack: Option<(Stack, tempfile::TempDir)>,
}

/// Runs the benchmark; `conn` is the running stack's broker and registry
/// when `--target-running` is given.
pub async fn run(
    conn: &Connection,
    args: BenchArgs,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<Value> {
    if !(0.0..=1.0).contains(&args.fail_share) {
        bail!("--fail-share must be between 0 and 1");
    }
    let target = target(conn, &args).await?;
    seed(&target).await.context("seeding stock and balances")?;

    let ceiling = if args.ceiling_messages > 0 {
        Some(bus_ceiling(&target.brokers, args.ceiling_messages).await?)
    } else {
        None
    };

    let codec = Arc::new(Codec::new(&target.registry));
    let kafka = KafkaSettings::new(&target.brokers);
    let tracker = Tracker::start(&kafka, codec.clone()).await?;
    let procs = ProcSampler::start({
        let mut pids = match &target._stack {
            Some((stack, _)) => stack.pids(),
            None => stack_processes().into_iter().map(|(p, n)| (n, p)).collect(),
        };
        pids.push((LOAD_GENERATOR.to_owned(), std::process::id()));
        pids
    });
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let stop_at = started + args.warmup + args.duration;
    let driver = Driver {
        args: &args,
        target: &target,
        codec: codec.clone(),
        producer: kafka.producer_config().create()?,
        http: reqwest::Client::new(),
        tracker: tracker.clone(),
        measure_from,
        counter: AtomicU64::new(0),
    };
    let progress = tokio::spawn(progress_loop(tracker.clone(), started));
    match args.rate {
        Some(rate) => driver.open_loop(rate, stop_at).await?,
        None => driver.closed_loop(args.concurrency, stop_at).await?,
    }
    let lag = consumer_lag(&target.brokers).await.unwrap_or_else(|e| {
        eprintln!("consumer lag unavailable: {e:#}");
        HashMap::new()
    });
    // Stragglers: wait until every measured order is terminal (bounded).
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while tracker.outstanding() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.abort();
    let processes = procs.finish();
    let report = tracker.report(&args, measure_from, ceiling, lag, processes);
    if json {
        writeln!(out, "{report}")?;
    } else {
        print_report(out, &report)?;
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "report written to {}", path.display())?;
    }
    if let Some((stack, _dir)) = target._stack {
        stack.shutdown().await;
    }
    Ok(report)
}

async fn target(conn: &Connection, args: &BenchArgs) -> anyhow::Result<Target> {
    if args.target_running {
        let admin = crate::conn::running_admin_token(args.admin_token.as_deref())?;
        return Ok(Target {
            admin,
            brokers: conn.brokers.clone(),
            registry: conn.registry.clone(),
            order: args.order_url.clone(),
            inventory: args.inventory_url.clone(),
            payment: args.payment_url.clone(),
            _stack: None,
        });
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary has no folder")?
        .to_owned();
    let dir = tempfile::Builder::new().prefix("choreo-bench-").tempdir()?;
    let mut config = StackConfig::local(dir.path().to_owned(), bin_dir);
    config.ports = Ports::free()?;
    config.log = LogSink::Files;
    // A saga that waits behind a backlog must not be cancelled by its
    // deadline: the benchmark measures the saga, not the timer.
    config
        .service_env
        .entry("order".into())
        .or_default()
        .push(("CHOREO_ORDER_DEADLINE_MS".into(), "300000".into()));
    config.common_env.push(("RUST_LOG".into(), "warn".into()));
    config.admin_token = AdminToken::generate();
    eprintln!("starting a stack in {} …", dir.path().display());
    let stack = Stack::start(config).await.context("starting the stack")?;
    Ok(Target {
        brokers: stack.brokers(),
        registry: stack.registry_url(),
        order: stack.service_url("order"),
        inventory: stack.service_url("inventory"),
        payment: stack.service_url("payment"),
        admin: stack.admin_token().clone(),
        _stack: Some((stack, dir)),
    })
}

async fn seed(t: &Target) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for (sku, available) in [(SKU, 1_000_000_000i64), (SKU_SOLDOUT, 0)] {
        put(
            &http,
            &t.admin,
            &format!("{}/stock/{sku}", t.inventory),
            json!({"available": available}),
        )
        .await?;
    }
    for (customer, balance, blocked) in [
        (RICH, 1_000_000_000_000i64, false),
        (POOR, 0, false),
        (BLOCKED, 1_000_000_000_000, true),
    ] {
        put(
            &http,
            &t.admin,
            &format!("{}/accounts/{customer}", t.payment),
            json!({"customer_id": customer, "balance_minor": balance, "currency": "EUR", "blocked": blocked}),
        )
        .await?;
    }
    Ok(())
}

async fn put(
    http: &reqwest::Client,
    admin: &AdminToken,
    url: &str,
    body: Value,
) -> anyhow::Result<()> {
    let mut request = http.put(url).json(&body);
    if let Some(value) = admin.header_value() {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let r = request.send().await.with_context(|| format!("PUT {url}"))?;
    if !r.status().is_success() {
        bail!(
            "PUT {url} answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::driver::Kind;
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn fail_share_spreads_over_every_compensation() {
        let kinds: Vec<Kind> = (0..400).map(|n| Kind::pick(n, 0.2)).collect();
        let failing = kinds.iter().filter(|k| !matches!(k, Kind::Happy)).count();
        assert_eq!(failing, 80);
        for want in ["OutOfStock", "NoRoute", "Poor", "Blocked"] {
            assert!(
                kinds.iter().any(|k| format!("{k:?}") == want),
                "{want} present"
            );
        }
        assert!((0..100).all(|n| matches!(Kind::pick(n, 0.0), Kind::Happy)));
    }
}
