//! What the monitor knows, built from the saga topics alone: every recent
//! order's events (bounded), the counts since the topics began, and the
//! last two minutes as one-second buckets (event rates per topic, sagas
//! finished per second, placed → terminal latencies).
//!
//! Pure: the caller feeds decoded events and passes "now", so every figure
//! is unit-tested here. The saga rules (outcome, the step it waits on,
//! stuck) are [`crate::saga`]'s, the same `choreo trace` and `choreo stuck`
//! apply.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use choreo_events::{AnyEvent, OrdersEvent, Topic, CONSUMERS};
use serde::Serialize;
use serde_json::{json, Value};

use crate::render::summary;
use crate::saga::{Saga, SagaEvent, Waiting};

/// One-second buckets kept: two minutes and a margin.
const WINDOW_S: i64 = 130;
/// Rates are averaged over this many complete seconds.
const RATE_S: i64 = 10;
/// The chart's length in seconds.
const SERIES_S: i64 = 120;
/// Latencies are those of sagas finished in the last minute.
const LATENCY_MS: i64 = 60_000;

/// The node every command on `order-requests` comes from.
pub const CLIENTS: &str = "clients";

/// Counts per second, by the events' own time.
#[derive(Debug, Default)]
struct Buckets(BTreeMap<i64, u64>);

impl Buckets {
    fn add(&mut self, at_ms: i64, now_ms: i64) {
        let second = at_ms.div_euclid(1000);
        if second > now_ms.div_euclid(1000) - WINDOW_S {
            *self.0.entry(second).or_default() += 1;
        }
    }

    fn trim(&mut self, now_ms: i64) {
        let oldest = now_ms.div_euclid(1000) - WINDOW_S;
        while let Some((&s, _)) = self.0.first_key_value() {
            if s > oldest {
                break;
            }
            self.0.remove(&s);
        }
    }

    /// Per second over the last [`RATE_S`] complete seconds.
    fn rate(&self, now_ms: i64) -> f64 {
        let current = now_ms.div_euclid(1000);
        let sum: u64 = self
            .0
            .range(current - RATE_S..current)
            .map(|(_, n)| n)
            .sum();
        sum as f64 / RATE_S as f64
    }

    /// The last [`SERIES_S`] complete seconds, oldest first, zeros
    /// included.
    fn series(&self, now_ms: i64) -> Vec<(i64, u64)> {
        let current = now_ms.div_euclid(1000);
        (current - SERIES_S..current)
            .map(|s| (s * 1000, self.0.get(&s).copied().unwrap_or(0)))
            .collect()
    }
}

/// One order as the monitor keeps it.
#[derive(Debug, Default)]
struct Order {
    events: Vec<SagaEvent>,
    event_ids: HashSet<String>,
    customer_id: Option<String>,
    placed_at: Option<i64>,
    /// `Some(None)` confirmed, `Some(Some(reason))` cancelled.
    terminal: Option<Option<String>>,
}

impl Order {
    fn state(&self) -> &'static str {
        match &self.terminal {
            None => "IN_PROGRESS",
            Some(None) => "CONFIRMED",
            Some(Some(_)) => "CANCELLED",
        }
    }

    fn reason(&self) -> Option<&str> {
        self.terminal.as_ref().and_then(|r| r.as_deref())
    }
}

/// Counts since the topics began (not only of the orders still kept).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub total: u64,
    pub in_flight: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    pub cancelled_by_reason: BTreeMap<String, u64>,
}

/// Filters of the orders view.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct OrderQuery {
    /// `IN_PROGRESS`, `CONFIRMED` or `CANCELLED`; empty for all.
    #[serde(default)]
    pub state: Option<String>,
    /// A cancel reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// A part of the order id or the customer id.
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The monitor's state.
#[derive(Debug)]
pub struct Model {
    keep: usize,
    orders: HashMap<String, Order>,
    /// Order ids, oldest first: who is forgotten first.
    arrival: VecDeque<String>,
    totals: Totals,
    per_topic: BTreeMap<&'static str, Buckets>,
    finished: Buckets,
    /// (terminal time, placed → terminal ms), oldest first.
    latencies: VecDeque<(i64, i64)>,
    /// Records read, decodable or not.
    pub read: u64,
    /// Records that did not decode (`choreo watch` shows them).
    pub undecodable: u64,
    last_event_ms: Option<i64>,
    last_read_ms: Option<i64>,
}

impl Model {
    /// A model keeping the events of the `keep` most recent orders.
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            orders: HashMap::new(),
            arrival: VecDeque::new(),
            totals: Totals::default(),
            per_topic: Topic::ALL
                .iter()
                .map(|t| (t.name(), Buckets::default()))
                .collect(),
            finished: Buckets::default(),
            latencies: VecDeque::new(),
            read: 0,
            undecodable: 0,
            last_event_ms: None,
            last_read_ms: None,
        }
    }

    /// How many orders' events are kept.
    pub fn kept(&self) -> usize {
        self.orders.len()
    }

    /// A record that did not decode.
    pub fn skip(&mut self, now_ms: i64) {
        self.read += 1;
        self.undecodable += 1;
        self.last_read_ms = Some(now_ms);
    }

    /// One decoded event. A redelivered event (same event id) changes
    /// nothing.
    pub fn add(&mut self, event: SagaEvent, now_ms: i64) {
        self.read += 1;
        self.last_read_ms = Some(now_ms);
        let at = event.occurred_at();
        self.last_event_ms = Some(self.last_event_ms.map_or(at, |l| l.max(at)));
        let order_id = event.event.metadata().order_id.clone();
        if !self.orders.contains_key(&order_id) {
            self.arrival.push_back(order_id.clone());
            self.orders.insert(order_id.clone(), Order::default());
            while self.orders.len() > self.keep {
                match self.arrival.pop_front() {
                    Some(old) => {
                        self.orders.remove(&old);
                    }
                    None => break,
                }
            }
        }
        let Some(order) = self.orders.get_mut(&order_id) else {
            return;
        };
        if !order
            .event_ids
            .insert(event.event.metadata().event_id.clone())
        {
            return;
        }
        if let Some(b) = self.per_topic.get_mut(event.topic.as_str()) {
            b.add(at, now_ms);
        }
        match &event.event {
            AnyEvent::Orders(OrdersEvent::OrderPlaced(p)) if order.placed_at.is_none() => {
                order.placed_at = Some(at);
                order.customer_id = Some(p.customer_id.clone());
                self.totals.total += 1;
            }
            AnyEvent::Request(choreo_events::OrderRequest::PlaceOrder(p)) => {
                order
                    .customer_id
                    .get_or_insert_with(|| p.customer_id.clone());
            }
            AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)) if order.terminal.is_none() => {
                order.terminal = Some(None);
                self.totals.confirmed += 1;
                self.finish(order_id.as_str(), at, now_ms);
            }
            AnyEvent::Orders(OrdersEvent::OrderCancelled(c)) if order.terminal.is_none() => {
                order.terminal = Some(Some(c.reason.clone()));
                self.totals.cancelled += 1;
                *self
                    .totals
                    .cancelled_by_reason
                    .entry(c.reason.clone())
                    .or_default() += 1;
                self.finish(order_id.as_str(), at, now_ms);
            }
            _ => {}
        }
        if let Some(order) = self.orders.get_mut(&order_id) {
            order.events.push(event);
        }
    }

    fn finish(&mut self, order_id: &str, at: i64, now_ms: i64) {
        self.finished.add(at, now_ms);
        let placed = self.orders.get(order_id).and_then(|o| o.placed_at);
        if let Some(placed) = placed {
            if at > now_ms - LATENCY_MS {
                self.latencies.push_back((at, (at - placed).max(0)));
            }
        }
    }

    /// Drops what has left the windows.
    pub fn trim(&mut self, now_ms: i64) {
        for b in self.per_topic.values_mut() {
            b.trim(now_ms);
        }
        self.finished.trim(now_ms);
        while self
            .latencies
            .front()
            .is_some_and(|(at, _)| *at <= now_ms - LATENCY_MS)
        {
            self.latencies.pop_front();
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = self.totals.clone();
        t.in_flight = t.total.saturating_sub(t.confirmed + t.cancelled);
        t
    }

    /// Sagas finished per second over the last ten complete seconds.
    pub fn sagas_per_s(&self, now_ms: i64) -> f64 {
        self.finished.rate(now_ms)
    }

    /// The overview's figures, but for what the pollers add (readiness,
    /// dead letters).
    pub fn overview(&self, now_ms: i64) -> Value {
        let mut lat: Vec<i64> = self
            .latencies
            .iter()
            .filter(|(at, _)| *at > now_ms - LATENCY_MS)
            .map(|(_, l)| *l)
            .collect();
        lat.sort_unstable();
        let pct = |p: f64| -> Option<i64> {
            if lat.is_empty() {
                return None;
            }
            let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
            Some(lat[rank - 1])
        };
        let edges: Vec<Value> = edges()
            .into_iter()
            .map(|(topic, from, to)| {
                let rate = self.per_topic.get(topic).map_or(0.0, |b| b.rate(now_ms));
                json!({"topic": topic, "from": from, "to": to, "rate": round1(rate)})
            })
            .collect();
        let caught_up = match (self.last_read_ms, self.last_event_ms) {
            (None, _) => true,
            (Some(read), Some(event)) => now_ms - read > 1_000 || now_ms - event < 5_000,
            (Some(_), None) => true,
        };
        json!({
            "now_ms": now_ms,
            "caught_up": caught_up,
            "read": self.read,
            "undecodable": self.undecodable,
            "kept_orders": self.orders.len(),
            "nodes": nodes(),
            "edges": edges,
            "sagas": self.totals(),
            "latency": {"count": lat.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99)},
            "rate": {
                "sagas_per_s": round1(self.finished.rate(now_ms)),
                "series": self.finished.series(now_ms).into_iter()
                    .map(|(t, done)| json!({"t": t, "done": done}))
                    .collect::<Vec<_>>(),
            },
        })
    }

    fn saga(&self, order_id: &str, order: &Order) -> Saga {
        Saga::new(order_id, order.events.clone())
    }

    fn row(&self, order_id: &str, order: &Order, now_ms: i64) -> Value {
        let saga = self.saga(order_id, order);
        json!({
            "order_id": order_id,
            "customer_id": order.customer_id,
            "state": order.state(),
            "reason": order.reason(),
            "placed_at_ms": saga.placed_at,
            "age_ms": saga.placed_at.map(|p| now_ms - p),
            "last_event": saga.events.last().map(|e| e.event.event_type()),
            "events": saga.events.len(),
            "waiting": saga.waiting.as_ref().map(waiting_json),
        })
    }

    /// Recent orders, newest first, filtered.
    pub fn orders(&self, query: &OrderQuery, now_ms: i64) -> Value {
        let state = query.state.as_deref().filter(|s| !s.is_empty());
        let reason = query.reason.as_deref().filter(|s| !s.is_empty());
        let q = query.q.as_deref().filter(|s| !s.is_empty());
        let limit = query.limit.unwrap_or(200).min(1_000);
        let mut total = 0usize;
        let mut rows = Vec::new();
        for id in self.arrival.iter().rev() {
            let Some(order) = self.orders.get(id) else {
                continue;
            };
            if state.is_some_and(|s| s != order.state())
                || reason.is_some_and(|r| Some(r) != order.reason())
                || q.is_some_and(|q| {
                    !id.contains(q) && !order.customer_id.as_deref().is_some_and(|c| c.contains(q))
                })
            {
                continue;
            }
            total += 1;
            if rows.len() < limit {
                rows.push(self.row(id, order, now_ms));
            }
        }
        json!({"total_matching": total, "orders": rows})
    }

    /// Orders placed at least `older_than_ms` ago and not finished, with
    /// the step each waits on ([`Saga::is_stuck`]), oldest first.
    pub fn stuck(&self, older_than_ms: i64, now_ms: i64) -> Value {
        let rows: Vec<Value> = self
            .arrival
            .iter()
            .filter_map(|id| Some((id, self.orders.get(id)?)))
            .filter(|(_, o)| o.terminal.is_none())
            .filter(|(id, o)| self.saga(id, o).is_stuck(now_ms, older_than_ms))
            .map(|(id, o)| self.row(id, o, now_ms))
            .collect();
        json!({"older_than_ms": older_than_ms, "orders": rows})
    }

    /// One order's saga for the swim lanes; `None` when it is not kept.
    pub fn order(&self, order_id: &str, now_ms: i64) -> Option<Value> {
        let order = self.orders.get(order_id)?;
        let saga = self.saga(order_id, order);
        let mut lanes: Vec<&str> = Vec::new();
        if saga
            .events
            .iter()
            .any(|e| e.topic == Topic::OrderRequests.name())
        {
            lanes.push(CLIENTS);
        }
        lanes.extend(choreo_events::SERVICES);
        let events: Vec<Value> = saga
            .events
            .iter()
            .map(|e| {
                let m = e.event.metadata();
                json!({
                    "event_id": m.event_id,
                    "causation_id": m.causation_id,
                    "event_type": e.event.event_type(),
                    "producer": m.producer,
                    "lane": lane_of(&e.topic),
                    "kind": kind_of(e.event.event_type()),
                    "topic": e.topic,
                    "partition": e.partition,
                    "offset": e.offset,
                    "occurred_at_ms": e.occurred_at(),
                    "since_placed_ms": saga.since_placed(e),
                    "summary": summary(&e.event),
                    "trace_id": e.trace_id,
                    "event": e.event.to_json(),
                })
            })
            .collect();
        Some(json!({
            "order_id": order_id,
            "customer_id": order.customer_id,
            "state": order.state(),
            "reason": order.reason(),
            "placed_at_ms": saga.placed_at,
            "age_ms": saga.placed_at.map(|p| now_ms - p),
            "lanes": lanes,
            "waiting": saga.waiting.as_ref().map(waiting_json),
            "trace_ids": saga.trace_ids(),
            "events": events,
        }))
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn waiting_json(w: &Waiting) -> Value {
    json!({"service": w.service, "events": w.events, "since_ms": w.since_ms})
}

/// The lane of an event: the service owning its topic, or the clients for
/// commands.
pub fn lane_of(topic: &str) -> &'static str {
    match Topic::from_name(topic) {
        Some(Topic::OrderRequests) | None => CLIENTS,
        Some(t) => t.owner(),
    }
}

/// `failure` for a step that failed, `compensation` for what undoes or
/// cancels, `forward` for the rest.
pub fn kind_of(event_type: &str) -> &'static str {
    match event_type {
        "StockReservationFailed" | "ShipmentManifestFailed" | "PaymentFailed" => "failure",
        "StockReleased" | "ShipmentCancelled" | "PaymentRefunded" | "OrderCancelled"
        | "CancelOrder" => "compensation",
        _ => "forward",
    }
}

/// The graph's nodes: the clients, then the services.
pub fn nodes() -> Vec<&'static str> {
    std::iter::once(CLIENTS)
        .chain(choreo_events::SERVICES)
        .collect()
}

/// One edge per (topic, consuming service), from the topic's producer:
/// the topic catalogue's topology.
pub fn edges() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out = Vec::new();
    for topic in Topic::ALL {
        let from = lane_of(topic.name());
        for (service, topics) in CONSUMERS.iter().copied() {
            if topics.contains(&topic.name()) {
                out.push((topic.name(), from, service));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use choreo_events::*;

    use super::*;

    fn event(
        order: &str,
        producer: &str,
        at: i64,
        id: &str,
        cause: Option<&str>,
        e: impl FnOnce(EventMetadata) -> AnyEvent,
    ) -> SagaEvent {
        let mut m = EventMetadata::new(order, producer, None);
        m.occurred_at = at;
        m.event_id = id.into();
        m.causation_id = cause.map(str::to_owned);
        let event = e(m);
        SagaEvent {
            topic: event.topic().name().into(),
            partition: 0,
            offset: 0,
            event,
            trace_id: None,
        }
    }

    fn placed(order: &str, at: i64) -> SagaEvent {
        event(
            order,
            "order",
            at,
            &format!("{order}-p"),
            None,
            |metadata| {
                OrderPlaced {
                    metadata,
                    customer_id: format!("c-{order}"),
                    customer_email: "c@example.com".into(),
                    items: vec![],
                    total_minor: 100,
                    currency: "EUR".into(),
                    shipping_address: Address {
                        name: "N".into(),
                        line1: "l".into(),
                        city: "c".into(),
                        postal_code: "p".into(),
                        country: "DE".into(),
                    },
                }
                .into()
            },
        )
    }

    fn confirmed(order: &str, at: i64) -> SagaEvent {
        event(
            order,
            "order",
            at,
            &format!("{order}-c"),
            Some(&format!("{order}-p")),
            |metadata| {
                OrderConfirmed {
                    metadata,
                    total_minor: 100,
                    currency: "EUR".into(),
                }
                .into()
            },
        )
    }

    fn cancelled(order: &str, at: i64, reason: &str) -> SagaEvent {
        event(
            order,
            "order",
            at,
            &format!("{order}-x"),
            Some(&format!("{order}-p")),
            |metadata| {
                OrderCancelled {
                    metadata,
                    reason: reason.into(),
                    detail: None,
                }
                .into()
            },
        )
    }

    const NOW: i64 = 1_000_000_000;

    #[test]
    fn counts_once_per_order_whatever_is_redelivered() {
        let mut m = Model::new(100);
        m.add(placed("a", NOW - 5_000), NOW);
        m.add(placed("b", NOW - 5_000), NOW);
        m.add(placed("c", NOW - 5_000), NOW);
        m.add(confirmed("a", NOW - 4_900), NOW);
        m.add(confirmed("a", NOW - 4_900), NOW);
        m.add(cancelled("b", NOW - 4_800, "OUT_OF_STOCK"), NOW);
        m.add(placed("b", NOW - 5_000), NOW);
        let t = m.totals();
        assert_eq!(
            (t.total, t.in_flight, t.confirmed, t.cancelled),
            (3, 1, 1, 1)
        );
        assert_eq!(t.cancelled_by_reason.get("OUT_OF_STOCK"), Some(&1));
        assert_eq!(m.read, 7);
        let ov = m.overview(NOW);
        assert_eq!(ov["latency"]["count"], 2);
        assert_eq!(ov["latency"]["p50_ms"], 100);
        assert_eq!(ov["latency"]["p99_ms"], 200);
    }

    #[test]
    fn rates_are_per_second_over_complete_seconds_by_event_time() {
        let mut m = Model::new(10_000);
        let now = NOW + 500; // half-way through a second
                             // 30 sagas finished in each of the last 10 complete seconds, 99 in
                             // the current one (not counted yet), some too old to count.
        for s in 1..=10 {
            for i in 0..30 {
                let id = format!("o{s}-{i}");
                let at = NOW - s * 1000 + 10;
                m.add(placed(&id, at - 5), now);
                m.add(confirmed(&id, at), now);
            }
        }
        for i in 0..99 {
            let id = format!("now-{i}");
            m.add(placed(&id, NOW + 1), now);
            m.add(confirmed(&id, NOW + 2), now);
        }
        m.add(placed("old", NOW - 600_000), now);
        m.add(confirmed("old", NOW - 599_000), now);
        assert_eq!(m.sagas_per_s(now), 30.0);
        let ov = m.overview(now);
        let series = ov["rate"]["series"].as_array().unwrap();
        assert_eq!(series.len(), 120);
        assert_eq!(series[119]["done"], 30);
        assert_eq!(series[119]["t"], NOW - 1000);
        assert_eq!(series[0]["done"], 0);
        let orders = ov["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["topic"] == "orders" && e["to"] == "inventory")
            .unwrap()
            .clone();
        // orders carries OrderPlaced and OrderConfirmed: 60 events/s.
        assert_eq!(orders["rate"], 60.0);
        assert_eq!(orders["from"], "order");
        // The old saga counts in the totals, not in the latencies.
        assert_eq!(m.totals().confirmed, 300 + 99 + 1);
        assert_eq!(ov["latency"]["count"], 300 + 99);
        m.trim(now + 200_000);
        assert_eq!(m.sagas_per_s(now + 200_000), 0.0);
        assert_eq!(m.overview(now + 200_000)["latency"]["count"], 0);
    }

    #[test]
    fn keeps_only_the_most_recent_orders_but_counts_all() {
        let mut m = Model::new(2);
        for id in ["a", "b", "c"] {
            m.add(placed(id, NOW - 1_000), NOW);
        }
        assert_eq!(m.kept(), 2);
        assert!(m.order("a", NOW).is_none());
        assert!(m.order("c", NOW).is_some());
        assert_eq!(m.totals().total, 3);
        let rows = m.orders(&OrderQuery::default(), NOW);
        let ids: Vec<&str> = rows["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["order_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["c", "b"]);
    }

    #[test]
    fn filters_stuck_and_the_saga_view() {
        let mut m = Model::new(100);
        m.add(placed("a", NOW - 60_000), NOW);
        m.add(placed("b", NOW - 1_000), NOW);
        m.add(placed("c", NOW - 60_000), NOW);
        m.add(cancelled("c", NOW - 59_000, "TIMEOUT"), NOW);
        let q = |state: &str, q: &str| OrderQuery {
            state: Some(state.into()),
            q: Some(q.into()),
            ..OrderQuery::default()
        };
        assert_eq!(m.orders(&q("IN_PROGRESS", ""), NOW)["total_matching"], 2);
        assert_eq!(
            m.orders(&q("CANCELLED", ""), NOW)["orders"][0]["reason"],
            "TIMEOUT"
        );
        assert_eq!(m.orders(&q("", "c-b"), NOW)["orders"][0]["order_id"], "b");
        let reason = OrderQuery {
            reason: Some("OUT_OF_STOCK".into()),
            ..OrderQuery::default()
        };
        assert_eq!(m.orders(&reason, NOW)["total_matching"], 0);

        let stuck = m.stuck(30_000, NOW);
        let rows = stuck["orders"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{stuck}");
        assert_eq!(rows[0]["order_id"], "a");
        assert_eq!(rows[0]["waiting"]["service"], "inventory");

        let saga = m.order("c", NOW).unwrap();
        assert_eq!(saga["state"], "CANCELLED");
        assert_eq!(saga["lanes"][0], "order");
        let events = saga["events"].as_array().unwrap();
        assert_eq!(events[1]["causation_id"], events[0]["event_id"]);
        assert_eq!(events[1]["kind"], "compensation");
        assert_eq!(events[1]["since_placed_ms"], 1_000);
        // Cancelled before anything else happened: the mail is still due.
        assert_eq!(saga["waiting"]["service"], "communication");
    }

    #[test]
    fn the_graph_is_the_catalogue_topology() {
        let edges = edges();
        assert!(edges.contains(&("order-requests", CLIENTS, "order")));
        assert!(edges.contains(&("shipments", "courier", "payment")));
        assert!(edges.contains(&("orders", "order", "communication")));
        let consumed: usize = CONSUMERS.iter().map(|(_, t)| t.len()).sum();
        assert_eq!(edges.len(), consumed);
        assert_eq!(kind_of("PaymentFailed"), "failure");
        assert_eq!(kind_of("StockReleased"), "compensation");
        assert_eq!(kind_of("OrderPlaced"), "forward");
    }
}
