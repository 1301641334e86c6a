//! One order's saga, reconstructed from its events alone: the timeline in
//! causal order, what caused each step, the outcome, and — while the saga
//! is not finished — the step it waits on.
//!
//! Pure: no I/O, no clock (the caller passes "now"), so every branch of
//! the saga table in `services/README.md` is unit-tested here.

use std::collections::HashMap;

use choreo_events::{
    AnyEvent, InventoryEvent, NotificationsEvent, OrderRequest, OrdersEvent, PaymentsEvent,
    ShipmentsEvent,
};

/// An event and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaEvent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event: AnyEvent,
    /// The OpenTelemetry trace id in the message's `traceparent` header.
    pub trace_id: Option<String>,
}

impl SagaEvent {
    /// `event`, decoded from `record`, with where it was read and the
    /// trace id of its `traceparent` header.
    pub fn from_record(record: &crate::reader::Record, event: AnyEvent) -> Self {
        Self {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            event,
            trace_id: record
                .header("traceparent")
                .as_deref()
                .and_then(trace_id_of),
        }
    }

    pub fn occurred_at(&self) -> i64 {
        self.event.metadata().occurred_at
    }
}

/// Where the order stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `OrderConfirmed` is on `orders`.
    Confirmed,
    /// `OrderCancelled` is on `orders`, with its reason.
    Cancelled(String),
    /// `OrderPlaced` (or at least the request) and no terminal event yet.
    InProgress,
}

impl Outcome {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Outcome::InProgress)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Confirmed => f.write_str("CONFIRMED"),
            Outcome::Cancelled(reason) => write!(f, "CANCELLED({reason})"),
            Outcome::InProgress => f.write_str("in progress"),
        }
    }
}

/// The step the saga waits on: which service should publish which event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The service expected to act.
    pub service: &'static str,
    /// The events it may answer with.
    pub events: &'static [&'static str],
    /// When the last event happened (ms since the epoch): the wait began
    /// then.
    pub since_ms: i64,
}

impl Waiting {
    /// `waiting for courier (ShipmentManifested or ShipmentManifestFailed)`.
    pub fn describe(&self) -> String {
        format!(
            "waiting for {} ({})",
            self.service,
            self.events.join(" or ")
        )
    }
}

/// One order's saga.
#[derive(Clone, Debug, PartialEq)]
pub struct Saga {
    pub order_id: String,
    /// In causal order: by time, a cause always before its effects.
    pub events: Vec<SagaEvent>,
    pub outcome: Outcome,
    /// When `OrderPlaced` happened (or the request, if that is all).
    pub placed_at: Option<i64>,
    /// The step not yet taken: before the terminal event, the saga's next
    /// step; after it, a compensation or the customer mail still due.
    pub waiting: Option<Waiting>,
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let id = traceparent.trim().split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_ascii_lowercase())
}

impl Saga {
    /// The distinct trace ids the saga's messages carry, first seen first
    /// (one, when every service traces; none without tracing).
    pub fn trace_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for id in self.events.iter().filter_map(|e| e.trace_id.as_deref()) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Builds the saga of `order_id` from its events (any order).
    pub fn new(order_id: impl Into<String>, mut events: Vec<SagaEvent>) -> Saga {
        let depth = causal_depths(&events);
        events.sort_by_key(|e| {
            (
                e.occurred_at(),
                depth
                    .get(&e.event.metadata().event_id)
                    .copied()
                    .unwrap_or(0),
                e.topic.clone(),
                e.offset,
            )
        });
        let facts = Facts::of(&events);
        let placed_at = events
            .iter()
            .find(|e| e.event.event_type() == "OrderPlaced")
            .or_else(|| events.iter().find(|e| e.event.event_type() == "PlaceOrder"))
            .map(SagaEvent::occurred_at);
        let outcome = if facts.confirmed {
            Outcome::Confirmed
        } else if let Some(reason) = &facts.cancelled {
            Outcome::Cancelled(reason.clone())
        } else {
            Outcome::InProgress
        };
        let since_ms = events
            .last()
            .map(SagaEvent::occurred_at)
            .unwrap_or_default();
        let waiting = facts.next_step().map(|(service, events)| Waiting {
            service,
            events,
            since_ms,
        });
        Saga {
            order_id: order_id.into(),
            events,
            outcome,
            placed_at,
            waiting,
        }
    }

    /// The earlier event of this saga that caused `event`, if it is here.
    pub fn cause_of(&self, event: &SagaEvent) -> Option<&SagaEvent> {
        let cause = event.event.metadata().causation_id.as_deref()?;
        self.events
            .iter()
            .find(|e| e.event.metadata().event_id == cause)
    }

    /// Milliseconds from `OrderPlaced` to `event`.
    pub fn since_placed(&self, event: &SagaEvent) -> Option<i64> {
        self.placed_at.map(|p| event.occurred_at() - p)
    }

    /// `OrderPlaced` is older than `age_ms` (relative to `now_ms`) and the
    /// order has no terminal event.
    pub fn is_stuck(&self, now_ms: i64, age_ms: i64) -> bool {
        !self.outcome.is_terminal() && self.placed_at.is_some_and(|p| now_ms - p >= age_ms)
    }
}

/// Length of each event's causation chain within the saga, so events of
/// the same millisecond still sort cause first.
fn causal_depths(events: &[SagaEvent]) -> HashMap<String, usize> {
    let causes: HashMap<&str, Option<&str>> = events
        .iter()
        .map(|e| {
            let m = e.event.metadata();
            (m.event_id.as_str(), m.causation_id.as_deref())
        })
        .collect();
    causes
        .keys()
        .map(|id| {
            let mut depth = 0;
            let mut at = *id;
            while let Some(Some(cause)) = causes.get(at) {
                depth += 1;
                at = cause;
                if depth > events.len() {
                    break; // a cycle would be a producer bug; do not loop
                }
            }
            ((*id).to_owned(), depth)
        })
        .collect()
}

/// What has happened to the order, one flag per event type.
#[derive(Debug, Default)]
struct Facts {
    requested: bool,
    placed: bool,
    reserved: bool,
    reservation_failed: bool,
    released: bool,
    manifested: bool,
    manifest_failed: bool,
    shipment_cancelled: bool,
    paid: bool,
    payment_failed: bool,
    refunded: bool,
    confirmed: bool,
    cancelled: Option<String>,
    notified: bool,
}

impl Facts {
    fn of(events: &[SagaEvent]) -> Facts {
        let mut f = Facts::default();
        for e in events {
            match &e.event {
                AnyEvent::Request(OrderRequest::PlaceOrder(_)) => f.requested = true,
                AnyEvent::Request(OrderRequest::CancelOrder(_)) => {}
                AnyEvent::Orders(OrdersEvent::OrderPlaced(_)) => f.placed = true,
                AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)) => f.confirmed = true,
                AnyEvent::Orders(OrdersEvent::OrderCancelled(c)) => {
                    f.cancelled.get_or_insert_with(|| c.reason.clone());
                }
                AnyEvent::Inventory(InventoryEvent::StockReserved(_)) => f.reserved = true,
                AnyEvent::Inventory(InventoryEvent::StockReservationFailed(_)) => {
                    f.reservation_failed = true
                }
                AnyEvent::Inventory(InventoryEvent::StockReleased(_)) => f.released = true,
                AnyEvent::Shipments(ShipmentsEvent::ShipmentManifested(_)) => f.manifested = true,
                AnyEvent::Shipments(ShipmentsEvent::ShipmentManifestFailed(_)) => {
                    f.manifest_failed = true
                }
                AnyEvent::Shipments(ShipmentsEvent::ShipmentCancelled(_)) => {
                    f.shipment_cancelled = true
                }
                AnyEvent::Payments(PaymentsEvent::PaymentCompleted(_)) => f.paid = true,
                AnyEvent::Payments(PaymentsEvent::PaymentFailed(_)) => f.payment_failed = true,
                AnyEvent::Payments(PaymentsEvent::PaymentRefunded(_)) => f.refunded = true,
                AnyEvent::Notifications(NotificationsEvent::CustomerNotified(_)) => {
                    f.notified = true
                }
            }
        }
        f
    }

    /// The saga table of `services/README.md`, read as "who acts next".
    fn next_step(&self) -> Option<(&'static str, &'static [&'static str])> {
        if self.confirmed || self.cancelled.is_some() {
            // Terminal: what is still to be undone or mailed.
            if self.cancelled.is_some() {
                if self.reserved && !self.released {
                    return Some(("inventory", &["StockReleased"]));
                }
                if self.manifested && !self.shipment_cancelled {
                    return Some(("courier", &["ShipmentCancelled"]));
                }
                if self.paid && !self.refunded {
                    return Some(("payment", &["PaymentRefunded"]));
                }
            }
            if !self.notified {
                return Some(("communication", &["CustomerNotified"]));
            }
            return None;
        }
        if !self.placed {
            return self.requested.then_some(("order", &["OrderPlaced"]));
        }
        if self.reservation_failed {
            return Some(("order", &["OrderCancelled"]));
        }
        if !self.reserved {
            return Some(("inventory", &["StockReserved", "StockReservationFailed"]));
        }
        if self.manifest_failed || self.payment_failed {
            if self.payment_failed && self.manifested && !self.shipment_cancelled {
                return Some(("courier", &["ShipmentCancelled"]));
            }
            if !self.released {
                return Some(("inventory", &["StockReleased"]));
            }
            return Some(("order", &["OrderCancelled"]));
        }
        if !self.manifested {
            return Some(("courier", &["ShipmentManifested", "ShipmentManifestFailed"]));
        }
        if self.paid {
            return Some(("order", &["OrderConfirmed"]));
        }
        Some(("payment", &["PaymentCompleted", "PaymentFailed"]))
    }
}

#[cfg(test)]
mod tests {
    use choreo_events::*;

    use super::*;

    #[test]
    fn a_traceparent_names_its_trace() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("00-abc-def-01"), None);
        assert_eq!(trace_id_of("garbage"), None);
    }

    /// Every step `next_step` can name, over every combination of facts,
    /// is an event of the catalogue that the named service produces (owns
    /// the topic of), and every one of those events is one its producer's
    /// consumers may wait on: the table cannot drift from the topology.
    #[test]
    fn every_step_names_an_event_its_service_produces() {
        let mut named = std::collections::BTreeSet::new();
        for bits in 0u32..(1 << 14) {
            let bit = |i: u32| bits & (1 << i) != 0;
            let facts = Facts {
                requested: bit(0),
                placed: bit(1),
                reserved: bit(2),
                reservation_failed: bit(3),
                released: bit(4),
                manifested: bit(5),
                manifest_failed: bit(6),
                shipment_cancelled: bit(7),
                paid: bit(8),
                payment_failed: bit(9),
                refunded: bit(10),
                confirmed: bit(11),
                cancelled: bit(12).then(|| reasons::TIMEOUT.to_owned()),
                notified: bit(13),
            };
            let Some((service, events)) = facts.next_step() else {
                continue;
            };
            assert!(SERVICES.contains(&service), "{service} is not a service");
            for event in events {
                let entry = SchemaEntry::by_event_type(event)
                    .unwrap_or_else(|| panic!("{event} is not in the catalogue"));
                assert_eq!(
                    entry.topic.owner(),
                    service,
                    "{event} is on {}, which {service} does not produce",
                    entry.topic.name()
                );
                named.insert(*event);
            }
        }
        // Every saga event but the customer's commands is waited on somewhere.
        for entry in catalogue() {
            if entry.topic != Topic::OrderRequests {
                assert!(
                    named.contains(entry.event_type),
                    "{} is never a step",
                    entry.event_type
                );
            }
        }
    }

    struct Chain {
        order: String,
        events: Vec<SagaEvent>,
        at: i64,
    }

    impl Chain {
        fn new() -> Self {
            Chain {
                order: "o-1".into(),
                events: Vec::new(),
                at: 1_000,
            }
        }

        fn meta(&mut self, producer: &str, cause: Option<usize>) -> EventMetadata {
            self.at += 10;
            let mut m = EventMetadata::new(&self.order, producer, None);
            m.occurred_at = self.at;
            if let Some(i) = cause {
                m.causation_id = Some(self.events[i].event.metadata().event_id.clone());
            }
            m
        }

        fn push(&mut self, event: AnyEvent) -> usize {
            self.events.push(SagaEvent {
                topic: event.topic().name().into(),
                partition: 0,
                offset: self.events.len() as i64,
                event,
                trace_id: None,
            });
            self.events.len() - 1
        }

        fn placed(&mut self) -> usize {
            let metadata = self.meta("order", None);
            self.push(
                OrderPlaced {
                    metadata,
                    customer_id: "bob".into(),
                    customer_email: "bob@example.com".into(),
                    items: vec![],
                    total_minor: 2_500,
                    currency: "EUR".into(),
                    shipping_address: Address {
                        name: "B".into(),
                        line1: "l".into(),
                        city: "c".into(),
                        postal_code: "p".into(),
                        country: "DE".into(),
                    },
                }
                .into(),
            )
        }

        fn reserved(&mut self, cause: usize) -> usize {
            let metadata = self.meta("inventory", Some(cause));
            self.push(
                StockReserved {
                    metadata,
                    items: vec![],
                    customer_id: "bob".into(),
                    customer_email: "bob@example.com".into(),
                    total_minor: 2_500,
                    currency: "EUR".into(),
                    shipping_address: Address {
                        name: "B".into(),
                        line1: "l".into(),
                        city: "c".into(),
                        postal_code: "p".into(),
                        country: "DE".into(),
                    },
                }
                .into(),
            )
        }

        fn manifested(&mut self, cause: usize) -> usize {
            let metadata = self.meta("courier", Some(cause));
            self.push(
                ShipmentManifested {
                    metadata,
                    shipment_id: "s".into(),
                    carrier: "c".into(),
                    tracking_number: "t".into(),
                    customer_id: "bob".into(),
                    amount_minor: 2_500,
                    currency: "EUR".into(),
                }
                .into(),
            )
        }

        fn payment_failed(&mut self, cause: usize) -> usize {
            let metadata = self.meta("payment", Some(cause));
            self.push(
                PaymentFailed {
                    metadata,
                    reason: "INSUFFICIENT_FUNDS".into(),
                }
                .into(),
            )
        }

        fn shipment_cancelled(&mut self, cause: usize) -> usize {
            let metadata = self.meta("courier", Some(cause));
            self.push(
                ShipmentCancelled {
                    metadata,
                    shipment_id: "s".into(),
                    reason: "PAYMENT_DECLINED".into(),
                }
                .into(),
            )
        }

        fn released(&mut self, cause: usize) -> usize {
            let metadata = self.meta("inventory", Some(cause));
            self.push(
                StockReleased {
                    metadata,
                    reason: "PAYMENT_DECLINED".into(),
                    items: vec![],
                }
                .into(),
            )
        }

        fn cancelled(&mut self, cause: usize, reason: &str) -> usize {
            let metadata = self.meta("order", Some(cause));
            self.push(
                OrderCancelled {
                    metadata,
                    reason: reason.into(),
                    detail: None,
                }
                .into(),
            )
        }

        fn notified(&mut self, cause: usize) -> usize {
            let metadata = self.meta("communication", Some(cause));
            self.push(
                CustomerNotified {
                    metadata,
                    template: "ORDER_CANCELLED".into(),
                    recipient: "bob@example.com".into(),
                    message_id: "m".into(),
                }
                .into(),
            )
        }

        fn saga(&self) -> Saga {
            Saga::new(&self.order, self.events.clone())
        }

        fn waits_on(&self) -> Option<&'static str> {
            self.saga().waiting.map(|w| w.service)
        }
    }

    #[test]
    fn compensated_saga_is_ordered_by_cause_and_ends_cancelled() {
        let mut c = Chain::new();
        let placed = c.placed();
        assert_eq!(c.waits_on(), Some("inventory"));
        let reserved = c.reserved(placed);
        assert_eq!(c.waits_on(), Some("courier"));
        let manifested = c.manifested(reserved);
        assert_eq!(c.waits_on(), Some("payment"));
        let failed = c.payment_failed(manifested);
        assert_eq!(c.waits_on(), Some("courier"));
        let cancelled_shipment = c.shipment_cancelled(failed);
        assert_eq!(c.waits_on(), Some("inventory"));
        let released = c.released(cancelled_shipment);
        assert_eq!(c.waits_on(), Some("order"));
        let cancelled = c.cancelled(released, "PAYMENT_DECLINED");
        assert_eq!(c.waits_on(), Some("communication"));
        c.notified(cancelled);
        let saga = c.saga();
        assert_eq!(saga.waiting, None);
        assert_eq!(saga.outcome, Outcome::Cancelled("PAYMENT_DECLINED".into()));
        assert_eq!(saga.outcome.to_string(), "CANCELLED(PAYMENT_DECLINED)");

        let types: Vec<&str> = saga.events.iter().map(|e| e.event.event_type()).collect();
        assert_eq!(
            types,
            [
                "OrderPlaced",
                "StockReserved",
                "ShipmentManifested",
                "PaymentFailed",
                "ShipmentCancelled",
                "StockReleased",
                "OrderCancelled",
                "CustomerNotified"
            ]
        );
        let released_event = &saga.events[5];
        assert_eq!(
            saga.cause_of(released_event).map(|e| e.event.event_type()),
            Some("ShipmentCancelled")
        );
        assert_eq!(saga.since_placed(released_event), Some(50));
    }

    #[test]
    fn same_millisecond_events_sort_cause_first() {
        let mut c = Chain::new();
        let placed = c.placed();
        let reserved = c.reserved(placed);
        let manifested = c.manifested(reserved);
        for e in &mut c.events {
            if let AnyEvent::Shipments(ShipmentsEvent::ShipmentManifested(m)) = &mut e.event {
                m.metadata.occurred_at = 1_000;
            }
            if let AnyEvent::Inventory(InventoryEvent::StockReserved(m)) = &mut e.event {
                m.metadata.occurred_at = 1_000;
            }
            if let AnyEvent::Orders(OrdersEvent::OrderPlaced(m)) = &mut e.event {
                m.metadata.occurred_at = 1_000;
            }
        }
        c.events.reverse();
        let saga = c.saga();
        let types: Vec<&str> = saga.events.iter().map(|e| e.event.event_type()).collect();
        assert_eq!(
            types,
            ["OrderPlaced", "StockReserved", "ShipmentManifested"]
        );
        assert_eq!(manifested, 2);
    }

    #[test]
    fn stuck_means_old_and_not_terminal() {
        let mut c = Chain::new();
        let placed = c.placed();
        let reserved = c.reserved(placed);
        let saga = c.saga();
        let waiting = saga.waiting.clone().expect("waiting");
        assert_eq!(
            waiting.describe(),
            "waiting for courier (ShipmentManifested or ShipmentManifestFailed)"
        );
        assert_eq!(waiting.since_ms, c.events[reserved].occurred_at());
        let placed_at = saga.placed_at.unwrap();
        assert!(saga.is_stuck(placed_at + 30_000, 30_000));
        assert!(!saga.is_stuck(placed_at + 29_999, 30_000));
        c.cancelled(reserved, "TIMEOUT");
        let saga = c.saga();
        assert!(!saga.is_stuck(placed_at + 60_000, 30_000));
        // Cancelled while stock is held: inventory must still release.
        assert_eq!(saga.waiting.map(|w| w.service), Some("inventory"));
    }

    #[test]
    fn out_of_stock_and_no_route_branches() {
        let mut c = Chain::new();
        let placed = c.placed();
        let metadata = c.meta("inventory", Some(placed));
        c.push(
            StockReservationFailed {
                metadata,
                reason: "OUT_OF_STOCK".into(),
                missing_skus: vec!["SOLDOUT-0".into()],
            }
            .into(),
        );
        assert_eq!(c.waits_on(), Some("order"));

        let mut c = Chain::new();
        let placed = c.placed();
        let reserved = c.reserved(placed);
        let metadata = c.meta("courier", Some(reserved));
        let failed = c.push(
            ShipmentManifestFailed {
                metadata,
                reason: "NO_ROUTE".into(),
            }
            .into(),
        );
        assert_eq!(c.waits_on(), Some("inventory"));
        let released = c.released(failed);
        assert_eq!(c.waits_on(), Some("order"));
        c.cancelled(released, "SHIPPING_UNAVAILABLE");
        assert_eq!(c.waits_on(), Some("communication"));
    }

    #[test]
    fn paid_order_waits_for_confirmation_and_refund_after_cancel() {
        let mut c = Chain::new();
        let placed = c.placed();
        let reserved = c.reserved(placed);
        let manifested = c.manifested(reserved);
        let metadata = c.meta("payment", Some(manifested));
        let paid = c.push(
            PaymentCompleted {
                metadata,
                payment_id: "p".into(),
                customer_id: "bob".into(),
                amount_minor: 2_500,
                currency: "EUR".into(),
            }
            .into(),
        );
        assert_eq!(c.waits_on(), Some("order"));
        let cancelled = c.cancelled(paid, "CUSTOMER_CANCELLED");
        // Stock, shipment and payment all still to undo, inventory first.
        assert_eq!(c.waits_on(), Some("inventory"));
        let released = c.released(cancelled);
        c.shipment_cancelled(released);
        assert_eq!(c.waits_on(), Some("payment"));
    }
}
