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
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use choreo_bus::{Codec, KafkaSettings};
use choreo_events::{
    Address, AnyEvent, EventMetadata, NotificationsEvent, OrderLine, OrdersEvent, PlaceOrder,
};
use choreo_stack::{LogSink, Ports, Stack, StackConfig};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::Connection;

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
        return Ok(Target {
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
    eprintln!("starting a stack in {} …", dir.path().display());
    let stack = Stack::start(config).await.context("starting the stack")?;
    Ok(Target {
        brokers: stack.brokers(),
        registry: stack.registry_url(),
        order: stack.service_url("order"),
        inventory: stack.service_url("inventory"),
        payment: stack.service_url("payment"),
        _stack: Some((stack, dir)),
    })
}

async fn seed(t: &Target) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for (sku, available) in [(SKU, 1_000_000_000i64), (SKU_SOLDOUT, 0)] {
        put(
            &http,
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
            &format!("{}/accounts/{customer}", t.payment),
            json!({"customer_id": customer, "balance_minor": balance, "currency": "EUR", "blocked": blocked}),
        )
        .await?;
    }
    Ok(())
}

async fn put(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<()> {
    let r = http
        .put(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    if !r.status().is_success() {
        bail!(
            "PUT {url} answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// The kind of order to place: its data decides the outcome.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Happy,
    OutOfStock,
    NoRoute,
    Poor,
    Blocked,
}

impl Kind {
    fn pick(n: u64, fail_share: f64) -> Kind {
        // Deterministic spread: order n fails when its position in a block
        // of 100 falls below the share.
        let fails = ((n % 100) as f64) < fail_share * 100.0;
        if !fails {
            return Kind::Happy;
        }
        match (n / 100) % 4 {
            0 => Kind::OutOfStock,
            1 => Kind::NoRoute,
            2 => Kind::Poor,
            _ => Kind::Blocked,
        }
    }
}

fn place_order(order_id: &str, kind: Kind) -> PlaceOrder {
    let (customer, sku, country) = match kind {
        Kind::Happy => (RICH, SKU, "DE"),
        Kind::OutOfStock => (RICH, SKU_SOLDOUT, "DE"),
        Kind::NoRoute => (RICH, SKU, "JP"),
        Kind::Poor => (POOR, SKU, "DE"),
        Kind::Blocked => (BLOCKED, SKU, "DE"),
    };
    PlaceOrder {
        metadata: EventMetadata::new(order_id, "bench", None),
        request_id: None,
        customer_id: customer.into(),
        customer_email: format!("{customer}@bench.invalid"),
        items: vec![OrderLine {
            sku: sku.into(),
            quantity: 1,
            unit_price_minor: 100,
        }],
        currency: "EUR".into(),
        shipping_address: Address {
            name: "Bench".into(),
            line1: "1 Load St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: country.into(),
        },
    }
}

struct Driver<'a> {
    args: &'a BenchArgs,
    target: &'a Target,
    codec: Arc<Codec>,
    producer: FutureProducer,
    http: reqwest::Client,
    tracker: Tracker,
    measure_from: Instant,
    counter: AtomicU64,
}

impl Driver<'_> {
    /// Places one order; resolves once it is on its way (not terminal).
    /// Returns a receiver that fires when the order is terminal.
    async fn place(&self) -> anyhow::Result<oneshot::Receiver<()>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let kind = Kind::pick(n, self.args.fail_share);
        let placed = Instant::now();
        let measured = placed >= self.measure_from;
        match self.args.via {
            Via::Requests => {
                let id = uuid::Uuid::new_v4().to_string();
                let rx = self.tracker.expect(&id, placed, measured);
                let cmd = place_order(&id, kind);
                let bytes = self.codec.encode(&cmd).await?;
                let record = FutureRecord::to("order-requests").key(&id).payload(&bytes);
                self.producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)?;
                Ok(rx)
            }
            Via::Http => {
                let cmd = place_order("", kind);
                let body = json!({
                    "customer_id": cmd.customer_id,
                    "customer_email": cmd.customer_email,
                    "items": [{"sku": cmd.items[0].sku, "quantity": 1, "unit_price_minor": 100}],
                    "currency": "EUR",
                    "shipping_address": {
                        "name": "Bench", "line1": "1 Load St", "city": "Berlin",
                        "postal_code": "10115", "country": cmd.shipping_address.country,
                    }
                });
                let r = self
                    .http
                    .post(format!("{}/orders", self.target.order))
                    .json(&body)
                    .send()
                    .await?;
                if r.status().as_u16() != 202 {
                    bail!("POST /orders answered {}", r.status());
                }
                let v: Value = r.json().await?;
                let id = v["order_id"].as_str().context("no order_id")?.to_owned();
                Ok(self.tracker.expect(&id, placed, measured))
            }
        }
    }

    async fn open_loop(&self, rate: u64, stop_at: Instant) -> anyhow::Result<()> {
        let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let mut next = Instant::now();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        while Instant::now() < stop_at {
            // Schedule by the clock, not by completions: an open loop keeps
            // offering load however slowly the system answers.
            while next <= Instant::now() {
                in_flight.push(self.place());
                next += period;
            }
            tokio::select! {
                Some(r) = in_flight.next(), if !in_flight.is_empty() => { r?; }
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
        while let Some(r) = in_flight.next().await {
            r?;
        }
        Ok(())
    }

    async fn closed_loop(&self, concurrency: usize, stop_at: Instant) -> anyhow::Result<()> {
        let workers = (0..concurrency.max(1)).map(|_| async {
            while Instant::now() < stop_at {
                let done = self.place().await?;
                // A lost order would stall this worker forever; bound it.
                let _ = tokio::time::timeout(Duration::from_secs(60), done).await;
            }
            Ok::<_, anyhow::Error>(())
        });
        for r in futures::future::join_all(workers).await {
            r?;
        }
        Ok(())
    }
}

struct TrackerState {
    pending: HashMap<String, Pending>,
    /// Terminal events for orders not yet registered (HTTP answers race the
    /// saga).
    early_terminal: HashMap<String, (Instant, bool)>,
    early_notified: HashMap<String, Instant>,
    terminal: Histogram<u64>,
    notified: Histogram<u64>,
    placed: u64,
    completed: u64,
    confirmed: u64,
    cancelled: u64,
    completed_total: u64,
    first_placed: Option<Instant>,
    last_completed: Option<Instant>,
}

struct Pending {
    placed: Instant,
    measured: bool,
    terminal: bool,
    notified: bool,
    waiter: Option<oneshot::Sender<()>>,
}

#[derive(Clone)]
struct Tracker(Arc<Mutex<TrackerState>>);

impl Tracker {
    async fn start(kafka: &KafkaSettings, codec: Arc<Codec>) -> anyhow::Result<Tracker> {
        // Microseconds, up to an hour, three significant digits.
        let state = TrackerState {
            pending: HashMap::new(),
            early_terminal: HashMap::new(),
            early_notified: HashMap::new(),
            terminal: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            notified: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            placed: 0,
            completed: 0,
            confirmed: 0,
            cancelled: 0,
            completed_total: 0,
            first_placed: None,
            last_completed: None,
        };
        let tracker = Tracker(Arc::new(Mutex::new(state)));
        let consumer: StreamConsumer = kafka.reader_config().create()?;
        // Start at the current end so only this run's events are read.
        let mut tpl = TopicPartitionList::new();
        for topic in ["orders", "notifications"] {
            for p in 0..choreo_events::Topic::PARTITIONS {
                let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
                tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
            }
        }
        consumer.assign(&tpl)?;
        let t = tracker.clone();
        tokio::spawn(async move {
            loop {
                let Ok(msg) = consumer.recv().await else {
                    continue;
                };
                let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
                let Ok(event) = codec.decode(msg.topic(), &source, msg.payload()).await else {
                    continue;
                };
                t.observe(&event, Instant::now());
            }
        });
        Ok(tracker)
    }

    fn expect(&self, id: &str, placed: Instant, measured: bool) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.0.lock().expect("tracker");
        s.placed += 1;
        if measured && s.first_placed.is_none() {
            s.first_placed = Some(placed);
        }
        let mut p = Pending {
            placed,
            measured,
            terminal: false,
            notified: false,
            waiter: Some(tx),
        };
        if let Some((at, confirmed)) = s.early_terminal.remove(id) {
            record_terminal(&mut s, &mut p, at, confirmed);
        }
        if let Some(at) = s.early_notified.remove(id) {
            record_notified(&mut s, &mut p, at);
        }
        s.pending.insert(id.to_owned(), p);
        rx
    }

    fn observe(&self, event: &AnyEvent, at: Instant) {
        let id = event.order_id().to_owned();
        let mut s = self.0.lock().expect("tracker");
        let s = &mut *s;
        match event {
            AnyEvent::Orders(OrdersEvent::OrderConfirmed(_) | OrdersEvent::OrderCancelled(_)) => {
                let confirmed = matches!(event, AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)));
                match s.pending.remove(&id) {
                    Some(mut p) => {
                        record_terminal(s, &mut p, at, confirmed);
                        s.pending.insert(id, p);
                    }
                    None => {
                        s.early_terminal.insert(id, (at, confirmed));
                    }
                }
            }
            AnyEvent::Notifications(NotificationsEvent::CustomerNotified(_)) => {
                match s.pending.remove(&id) {
                    Some(mut p) => {
                        record_notified(s, &mut p, at);
                        s.pending.insert(id, p);
                    }
                    None => {
                        s.early_notified.insert(id, at);
                    }
                }
            }
            _ => {}
        }
    }

    fn outstanding(&self) -> usize {
        let s = self.0.lock().expect("tracker");
        s.pending
            .values()
            .filter(|p| p.measured && !p.terminal)
            .count()
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        let s = self.0.lock().expect("tracker");
        (
            s.placed,
            s.completed_total,
            s.terminal.value_at_quantile(0.5),
        )
    }

    fn report(
        &self,
        args: &BenchArgs,
        measure_from: Instant,
        ceiling: Option<Ceiling>,
        lag: HashMap<String, i64>,
        processes: Vec<ProcStats>,
    ) -> Value {
        let s = self.0.lock().expect("tracker");
        let window = match (s.first_placed, s.last_completed) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => Duration::from_secs(1),
        };
        let rate = s.completed as f64 / window.as_secs_f64();
        let _ = measure_from;
        let ceiling_sagas = ceiling
            .as_ref()
            .map(|c| c.messages_per_second / deliveries_per_saga() as f64);
        // CPU cost per saga: CPU time over the whole run (warm-up and drain
        // included) divided by every saga that finished in it. The stack
        // excludes this load generator, which shares the machine here.
        let finished = s.completed_total.max(1) as f64;
        let per_saga = |p: &ProcStats| p.cpu_seconds * 1000.0 / finished;
        let stack_ms: f64 = processes
            .iter()
            .filter(|p| p.name != LOAD_GENERATOR)
            .map(per_saga)
            .sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        json!({
            "mode": if args.rate.is_some() { "open" } else { "closed" },
            "rate_offered": args.rate,
            "concurrency": if args.rate.is_none() { Some(args.concurrency) } else { None },
            "via": format!("{:?}", args.via).to_lowercase(),
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "fail_share": args.fail_share,
            "placed": s.placed,
            "completed": s.completed,
            "confirmed": s.confirmed,
            "cancelled": s.cancelled,
            "unfinished": s.pending.values().filter(|p| p.measured && !p.terminal).count(),
            "window_s": window.as_secs_f64(),
            "sagas_per_second": round(rate),
            "latency_ms": quantiles(&s.terminal),
            "notified_latency_ms": quantiles(&s.notified),
            "bus_ceiling_messages_per_second": ceiling.as_ref().map(|c| round(c.messages_per_second)),
            "bus_ceiling_produce_per_second": ceiling.as_ref().map(|c| round(c.produce_per_second)),
            "deliveries_per_saga": deliveries_per_saga(),
            "bus_ceiling_sagas_per_second": ceiling_sagas.map(round),
            "consumer_lag": lag,
            "broker": if args.target_running { "unknown (running stack)".to_owned() } else { format!("Apache Kafka {}", choreo_stack::broker::KAFKA_VERSION) },
            "processes": processes.iter().map(|p| json!({
                "name": p.name, "pid": p.pid,
                "cpu_percent": round(p.cpu_percent),
                "cpu_ms_per_saga": round2(per_saga(p)),
                "peak_rss_mib": round(p.peak_rss_mib),
            })).collect::<Vec<_>>(),
            "stack_cpu_ms_per_saga": round2(stack_ms),
            "cores": cores,
            "cpu_bound_sagas_per_second": (stack_ms > 0.0).then(|| round(cores * 1000.0 / stack_ms)),
        })
    }
}

fn record_terminal(s: &mut TrackerState, p: &mut Pending, at: Instant, confirmed: bool) {
    if p.terminal {
        return;
    }
    p.terminal = true;
    s.completed_total += 1;
    if let Some(w) = p.waiter.take() {
        let _ = w.send(());
    }
    if !p.measured {
        return;
    }
    let us = at.saturating_duration_since(p.placed).as_micros().max(1) as u64;
    let _ = s.terminal.record(us);
    s.completed += 1;
    if confirmed {
        s.confirmed += 1;
    } else {
        s.cancelled += 1;
    }
    s.last_completed = Some(s.last_completed.map_or(at, |l| l.max(at)));
}

fn record_notified(s: &mut TrackerState, p: &mut Pending, at: Instant) {
    if p.notified {
        return;
    }
    p.notified = true;
    if p.measured {
        let us = at.saturating_duration_since(p.placed).as_micros().max(1) as u64;
        let _ = s.notified.record(us);
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn quantiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| round(us as f64 / 1000.0);
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.5)),
        "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": round(h.mean() / 1000.0),
    })
}

async fn progress_loop(tracker: Tracker, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let (placed, done, p50) = tracker.snapshot();
        let rate = done - last;
        last = done;
        let line = format!(
            "[{:>4.0}s] placed {placed:>8}  completed {done:>8}  {rate:>6}/s  p50 {:.1} ms",
            started.elapsed().as_secs_f64(),
            p50 as f64 / 1000.0
        );
        if tty {
            eprint!("\r{line}   ");
        } else if n.is_multiple_of(5) {
            eprintln!("{line}");
        }
    }
}

struct Ceiling {
    messages_per_second: f64,
    produce_per_second: f64,
}

/// Raw produce→consume on the same broker with the same client settings:
/// what the bus allows before any service logic runs.
async fn bus_ceiling(brokers: &str, messages: u64) -> anyhow::Result<Ceiling> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let kafka = KafkaSettings::new(brokers);
    let topic = format!("bench.ceiling.{}", uuid::Uuid::new_v4().simple());
    let admin: AdminClient<_> = kafka.admin_config().create()?;
    admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                choreo_events::Topic::PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?;
    // Clients must see the new topic fully formed before they use it.
    let brokers_owned = brokers.to_owned();
    let topic_owned = topic.clone();
    tokio::task::spawn_blocking(move || {
        let probe: BaseConsumer = KafkaSettings::new(&brokers_owned)
            .reader_config()
            .create()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let md = probe.fetch_metadata(Some(&topic_owned), Duration::from_secs(5))?;
            let ready = md.topics().iter().any(|t| {
                t.error().is_none()
                    && t.partitions().len() == choreo_events::Topic::PARTITIONS as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok::<_, anyhow::Error>(());
            }
            if Instant::now() > deadline {
                bail!("topic {topic_owned} never became ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await??;
    eprintln!("measuring the bus ceiling with {messages} messages …");
    // The size of a typical encoded event.
    let payload = vec![7u8; 220];
    let producer: FutureProducer = kafka.producer_config().create()?;
    let consumer: StreamConsumer = kafka.reader_config().create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..choreo_events::Topic::PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let consume = async {
        let mut n = 0u64;
        while n < messages {
            match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
                Ok(r) => {
                    r?;
                    n += 1;
                }
                Err(_) => bail!("bus ceiling: consumed {n} of {messages}, then nothing for 30 s"),
            }
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let produce = async {
        // Windows of sends, each awaited before the next: the producer's
        // queue never fills, so no record is ever handed back for a retry.
        const WINDOW: u64 = 10_000;
        let mut failed = 0u64;
        let mut sent = 0u64;
        while sent < messages {
            let end = (sent + WINDOW).min(messages);
            let mut deliveries = Vec::with_capacity((end - sent) as usize);
            for i in sent..end {
                let key = (i % 1024).to_string();
                let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                match producer.send_result(record) {
                    Ok(d) => deliveries.push(d),
                    Err((e, _)) => bail!("bus ceiling: enqueue failed: {e}"),
                }
            }
            for d in deliveries {
                if !matches!(d.await, Ok(Ok(_))) {
                    failed += 1;
                }
            }
            sent = end;
        }
        if failed > 0 {
            bail!("bus ceiling: {failed} of {messages} messages were not delivered");
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    };
    let (produced, consumed) = tokio::try_join!(produce, consume)?;
    Ok(Ceiling {
        messages_per_second: messages as f64 / consumed.as_secs_f64(),
        produce_per_second: messages as f64 / produced.as_secs_f64(),
    })
}

/// Lag per service group over the topics it consumes.
async fn consumer_lag(brokers: &str) -> anyhow::Result<HashMap<String, i64>> {
    let kafka = KafkaSettings::new(brokers);
    tokio::task::spawn_blocking(move || {
        let mut lag = HashMap::new();
        for (group, topics) in choreo_events::CONSUMERS {
            lag.insert(
                group.to_owned(),
                choreo_bus::lag::group_lag(&kafka, group, topics)?,
            );
        }
        Ok(lag)
    })
    .await?
}

/// This process in the per-process table: it drives and tracks the load.
const LOAD_GENERATOR: &str = "bench (load generator)";

struct ProcStats {
    name: String,
    pid: u32,
    cpu_percent: f64,
    /// CPU time (user + system) used while the benchmark ran.
    cpu_seconds: f64,
    peak_rss_mib: f64,
}

/// Samples CPU time and resident memory of the stack's processes from
/// /proc once a second while the benchmark runs.
struct ProcSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<ProcStats>>,
}

impl ProcSampler {
    fn start(processes: Vec<(String, u32)>) -> ProcSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let first: Vec<(u32, String)> = processes.into_iter().map(|(n, p)| (p, n)).collect();
            let cpu0: HashMap<u32, u64> = first
                .iter()
                .map(|(pid, _)| (*pid, cpu_ticks(*pid)))
                .collect();
            let mut peak: HashMap<u32, u64> = HashMap::new();
            while !s.load(Ordering::Relaxed) {
                for (pid, _) in &first {
                    let rss = rss_kib(*pid);
                    let e = peak.entry(*pid).or_default();
                    *e = (*e).max(rss);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            let wall = started.elapsed().as_secs_f64();
            // Linux reports CPU time in clock ticks of 100 Hz (USER_HZ).
            first
                .into_iter()
                .map(|(pid, name)| {
                    let cpu_seconds = cpu_ticks(pid).saturating_sub(cpu0[&pid]) as f64 / 100.0;
                    ProcStats {
                        cpu_percent: cpu_seconds / wall * 100.0,
                        cpu_seconds,
                        peak_rss_mib: peak.get(&pid).copied().unwrap_or_default() as f64 / 1024.0,
                        name,
                        pid,
                    }
                })
                .collect()
        });
        ProcSampler { stop, handle }
    }

    fn finish(self) -> Vec<ProcStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// (pid, name) of the Kafka broker (`kafka`), choreo-registry and
/// choreo-<service> processes.
fn stack_processes() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let arg0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(arg0);
        let base = name.rsplit('/').next().unwrap_or_default().to_owned();
        let is_kafka =
            base == "java" && cmdline.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka");
        if is_kafka {
            out.push((pid, "kafka".to_owned()));
        } else if base.starts_with("choreo-") && base != "choreo-bench" {
            out.push((pid, base));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn print_report(out: &mut impl Write, r: &Value) -> anyhow::Result<()> {
    let l = &r["latency_ms"];
    let n = &r["notified_latency_ms"];
    writeln!(out)?;
    writeln!(
        out,
        "choreo bench — {} loop via {}, fail share {}",
        r["mode"].as_str().unwrap_or(""),
        r["via"].as_str().unwrap_or(""),
        r["fail_share"]
    )?;
    writeln!(
        out,
        "  placed {}  completed {} (confirmed {}, cancelled {})  unfinished {}",
        r["placed"], r["completed"], r["confirmed"], r["cancelled"], r["unfinished"]
    )?;
    let ceiling = match r["bus_ceiling_sagas_per_second"].as_f64() {
        Some(c) => format!(
            "bus allows {c} sagas/s: {} msgs/s ÷ {} deliveries",
            r["bus_ceiling_messages_per_second"], r["deliveries_per_saga"]
        ),
        None => "bus ceiling not measured".to_owned(),
    };
    writeln!(
        out,
        "  throughput            {} sagas/s   ({ceiling})",
        r["sagas_per_second"]
    )?;
    writeln!(
        out,
        "  placed → terminal     p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
        l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
    )?;
    writeln!(
        out,
        "  placed → notified     p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
        n["p50"], n["p90"], n["p99"], n["p999"], n["max"]
    )?;
    writeln!(out, "  consumer lag at end   {}", r["consumer_lag"])?;
    writeln!(
        out,
        "  {:<24} {:>8} {:>14} {:>10}",
        "process", "cpu %", "cpu ms/saga", "peak MiB"
    )?;
    for p in r["processes"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<24} {:>8.1} {:>14.2} {:>10.1}",
            p["name"].as_str().unwrap_or(""),
            p["cpu_percent"].as_f64().unwrap_or_default(),
            p["cpu_ms_per_saga"].as_f64().unwrap_or_default(),
            p["peak_rss_mib"].as_f64().unwrap_or_default()
        )?;
    }
    if let Some(bound) = r["cpu_bound_sagas_per_second"].as_f64() {
        writeln!(
            out,
            "  the stack used {} ms of CPU per saga: {} cores allow at most {bound} sagas/s",
            r["stack_cpu_ms_per_saga"], r["cores"]
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
