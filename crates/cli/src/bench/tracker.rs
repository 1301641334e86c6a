//! Following each order from placed to terminal and notified on the
//! topics, into HDR histograms; the progress line.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use choreo_bus::{Codec, KafkaSettings};
use choreo_events::{AnyEvent, NotificationsEvent, OrdersEvent};

use super::ceiling::Ceiling;
use super::procstat::{ProcStats, LOAD_GENERATOR};
use super::{deliveries_per_saga, BenchArgs};

pub(super) struct TrackerState {
    pub(super) pending: HashMap<String, Pending>,
    /// Terminal events for orders not yet registered (HTTP answers race the
    /// saga).
    pub(super) early_terminal: HashMap<String, (Instant, bool)>,
    pub(super) early_notified: HashMap<String, Instant>,
    pub(super) terminal: Histogram<u64>,
    pub(super) notified: Histogram<u64>,
    pub(super) placed: u64,
    pub(super) completed: u64,
    pub(super) confirmed: u64,
    pub(super) cancelled: u64,
    pub(super) completed_total: u64,
    pub(super) first_placed: Option<Instant>,
    pub(super) last_completed: Option<Instant>,
}

pub(super) struct Pending {
    pub(super) placed: Instant,
    pub(super) measured: bool,
    pub(super) terminal: bool,
    pub(super) notified: bool,
    pub(super) waiter: Option<oneshot::Sender<()>>,
}

#[derive(Clone)]
pub(super) struct Tracker(Arc<Mutex<TrackerState>>);

impl Tracker {
    pub(super) async fn start(kafka: &KafkaSettings, codec: Arc<Codec>) -> anyhow::Result<Tracker> {
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

    pub(super) fn expect(
        &self,
        id: &str,
        placed: Instant,
        measured: bool,
    ) -> oneshot::Receiver<()> {
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

    pub(super) fn observe(&self, event: &AnyEvent, at: Instant) {
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

    pub(super) fn outstanding(&self) -> usize {
        let s = self.0.lock().expect("tracker");
        s.pending
            .values()
            .filter(|p| p.measured && !p.terminal)
            .count()
    }

    pub(super) fn snapshot(&self) -> (u64, u64, u64) {
        let s = self.0.lock().expect("tracker");
        (
            s.placed,
            s.completed_total,
            s.terminal.value_at_quantile(0.5),
        )
    }

    pub(super) fn report(
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

pub(super) fn record_terminal(s: &mut TrackerState, p: &mut Pending, at: Instant, confirmed: bool) {
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

pub(super) fn record_notified(s: &mut TrackerState, p: &mut Pending, at: Instant) {
    if p.notified {
        return;
    }
    p.notified = true;
    if p.measured {
        let us = at.saturating_duration_since(p.placed).as_micros().max(1) as u64;
        let _ = s.notified.record(us);
    }
}

pub(super) fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(super) fn quantiles(h: &Histogram<u64>) -> Value {
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

pub(super) async fn progress_loop(tracker: Tracker, started: Instant) {
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
