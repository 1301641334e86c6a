//! The verdict half of `choreo reconcile`: plain data in, [`Report`] out.
//!
//! [`Reconciler`](super::Reconciler) does the I/O and fills an [`Observed`];
//! [`judge`] compares it with the [`Expectations`] without touching the
//! network or the disk. Keeping the verdict pure is what lets each check be
//! shown to fire: a unit test builds an `Observed` that breaks exactly one
//! invariant and asserts the one violation reported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use choreo_events::{templates, AnyEvent, OrdersEvent};

use super::{Check, Report, Violation};

/// What the checker expects beyond the saga's own invariants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Initial `available` per SKU; SKUs not given are not checked, and no
    /// stock is checked when empty.
    pub initial_stock: HashMap<String, i64>,
    /// Initial balance per customer; customers not given are not checked.
    pub initial_balances: HashMap<String, i64>,
    /// How many dead letters are expected: fewer or more is a violation.
    pub dead_letters: usize,
}

/// Everything one run gathered from the services, the topics and the mail
/// folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every order `GET /orders` lists, in its order.
    pub orders: Vec<ObservedOrder>,
    /// `GET /stock` rows by SKU (only gathered when initial stock is given).
    pub stock: BTreeMap<String, StockRow>,
    /// `balance_minor` per customer with an account, for the customers
    /// given an initial balance; a customer missing here has no account.
    pub balances: BTreeMap<String, i64>,
    /// The mail folder that was read, `None` when mails are not checked.
    pub mail_dir: Option<PathBuf>,
    /// Every message on the `dlq.*` topics.
    pub dead_letters: Vec<ObservedDeadLetter>,
}

/// One order as the services and the `orders` topic show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedOrder {
    pub id: String,
    /// Order's `status` (`?` when it gave none).
    pub status: String,
    pub customer: Option<String>,
    pub total: i64,
    /// `GET /reservations/{id}`; `None` when inventory has none (404).
    pub reservation: Option<ObservedReservation>,
    /// Shipment `status`; `None` when courier has none (404).
    pub shipment: Option<String>,
    /// Payment's `net_charge_minor` (0 when payment has no record).
    pub net_charge: i64,
    /// Terminal events on `orders` in topic order, duplicates by event id
    /// removed: `OrderConfirmed` or `OrderCancelled(<reason>)`.
    pub terminal_events: Vec<String>,
    /// Communication's notifications per template.
    pub notifications: BTreeMap<String, usize>,
    /// Distinct Message-IDs in the mail folder per template (empty when the
    /// folder is not read).
    pub mails: BTreeMap<String, usize>,
}

/// An order's reservation as inventory reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedReservation {
    /// `RESERVED`, `RELEASED`, `COMMITTED`, `FAILED`, `VOID`.
    pub status: String,
    /// Quantity per SKU of its lines.
    pub lines: Vec<(String, i64)>,
}

/// One `GET /stock` row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StockRow {
    pub available: i64,
    /// Inventory's own `reserved` counter: shown, never trusted (see
    /// [`judge`]).
    pub reserved: i64,
    pub committed: i64,
}

/// One dead letter, as reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedDeadLetter {
    /// The message key (an order id for saga events).
    pub key: Option<String>,
    /// `topic/partition/offset` on its `dlq.*` topic.
    pub position: String,
    /// Reason, source and a preview of the value.
    pub detail: String,
}

/// How [`ObservedOrder::terminal_events`] names `event`: `OrderConfirmed`,
/// `OrderCancelled(<reason>)`, or `None` for any other event.
pub fn terminal_event(event: &AnyEvent) -> Option<String> {
    match event {
        AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)) => Some("OrderConfirmed".to_owned()),
        AnyEvent::Orders(OrdersEvent::OrderCancelled(e)) => {
            Some(format!("OrderCancelled({})", e.reason))
        }
        _ => None,
    }
}

/// The two outcomes an order may end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Confirmed,
    Cancelled,
}

impl Outcome {
    fn of(status: &str) -> Option<Self> {
        match status {
            "CONFIRMED" => Some(Self::Confirmed),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }

    fn status(self) -> &'static str {
        match self {
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The terminal event's name (a cancellation's carries its reason).
    fn event(self) -> &'static str {
        match self {
            Self::Confirmed => "OrderConfirmed",
            Self::Cancelled => "OrderCancelled",
        }
    }

    /// The template the customer must get exactly once.
    fn template(self) -> &'static str {
        match self {
            Self::Confirmed => templates::ORDER_CONFIRMED,
            Self::Cancelled => templates::ORDER_CANCELLED,
        }
    }

    /// The template the customer must never get.
    fn other_template(self) -> &'static str {
        match self {
            Self::Confirmed => templates::ORDER_CANCELLED,
            Self::Cancelled => templates::ORDER_CONFIRMED,
        }
    }
}

/// Every violation `observed` shows against `expected`, sorted by check,
/// order and subject.
///
/// Stock conservation counts `available + Σ quantities of the reservations
/// whose status is RESERVED + committed`. Inventory's `reserved` column is a
/// counter moved by the same transaction that changes a reservation's
/// status, so a release that flips the status to RELEASED but never gives
/// the stock back would leave `available + reserved + committed` intact and
/// hide the loss; counting the active reservations themselves exposes it.
pub fn judge(observed: &Observed, expected: &Expectations) -> Report {
    let mut report = Report {
        orders: observed.orders.len(),
        ..Report::default()
    };
    for order in &observed.orders {
        match Outcome::of(&order.status) {
            Some(Outcome::Confirmed) => report.confirmed += 1,
            Some(Outcome::Cancelled) => report.cancelled += 1,
            None => {}
        }
        report
            .violations
            .extend(judge_order(order, observed.mail_dir.as_deref()));
    }
    judge_stock(observed, expected, &mut report);
    judge_money(observed, expected, &mut report);
    judge_dead_letters(observed, expected, &mut report);
    report.violations.sort_by(|a, b| {
        (a.check, &a.order_id, &a.subject).cmp(&(b.check, &b.order_id, &b.subject))
    });
    report
}

fn judge_order(order: &ObservedOrder, mail_dir: Option<&Path>) -> Vec<Violation> {
    let Some(outcome) = Outcome::of(&order.status) else {
        return not_terminal(order);
    };
    [
        terminal_events(order, outcome),
        reservation(order, outcome),
        shipment(order, outcome),
        payment(order, outcome),
        notification(order, outcome),
        mail_dir.and_then(|dir| mail(order, outcome, dir)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn not_terminal(order: &ObservedOrder) -> Vec<Violation> {
    let (id, status) = (&order.id, &order.status);
    let mut v = vec![Violation::order(
        Check::NotTerminal,
        id,
        format!("status {status}, expected CONFIRMED or CANCELLED"),
    )];
    if !order.terminal_events.is_empty() {
        v.push(Violation::order(
            Check::TerminalEvents,
            id,
            format!(
                "status {status} but `orders` has {}",
                order.terminal_events.join(", ")
            ),
        ));
    }
    v
}

fn terminal_events(order: &ObservedOrder, outcome: Outcome) -> Option<Violation> {
    let events = &order.terminal_events;
    let expected = outcome.event();
    let agrees = matches!(events.as_slice(), [only] if only.starts_with(expected));
    (!agrees).then(|| {
        Violation::order(
            Check::TerminalEvents,
            &order.id,
            format!(
                "status {}; expected exactly one {expected} on orders, found [{}]",
                outcome.status(),
                events.join(", ")
            ),
        )
    })
}

fn reservation(order: &ObservedOrder, outcome: Outcome) -> Option<Violation> {
    let status = order
        .reservation
        .as_ref()
        .map_or("none", |r| r.status.as_str());
    let detail = match outcome {
        Outcome::Confirmed if status != "COMMITTED" => {
            format!("CONFIRMED but reservation is {status}, expected COMMITTED")
        }
        Outcome::Cancelled if status == "RESERVED" || status == "COMMITTED" => {
            format!("CANCELLED but reservation is still {status}")
        }
        _ => return None,
    };
    Some(Violation::order(Check::Reservation, &order.id, detail))
}

fn shipment(order: &ObservedOrder, outcome: Outcome) -> Option<Violation> {
    let status = order.shipment.as_deref().unwrap_or("none");
    let detail = match outcome {
        Outcome::Confirmed if status != "MANIFESTED" => {
            format!("CONFIRMED but shipment is {status}, expected MANIFESTED")
        }
        Outcome::Cancelled if status == "MANIFESTED" => {
            "CANCELLED but shipment is still MANIFESTED".to_owned()
        }
        _ => return None,
    };
    Some(Violation::order(Check::Shipment, &order.id, detail))
}

fn payment(order: &ObservedOrder, outcome: Outcome) -> Option<Violation> {
    let (net, total) = (order.net_charge, order.total);
    let detail = match outcome {
        Outcome::Confirmed if net != total => {
            format!("CONFIRMED with total {total} but net charge {net}")
        }
        Outcome::Cancelled if net != 0 => {
            format!("CANCELLED but net charge is {net}, expected 0")
        }
        _ => return None,
    };
    Some(Violation::order(Check::Payment, &order.id, detail))
}

/// How many of `template` a per-template count holds.
fn count(counts: &BTreeMap<String, usize>, template: &str) -> usize {
    counts.get(template).copied().unwrap_or(0)
}

/// Exactly one of the outcome's template and none of the other.
fn exactly_one(counts: &BTreeMap<String, usize>, outcome: Outcome) -> bool {
    count(counts, outcome.template()) == 1 && count(counts, outcome.other_template()) == 0
}

fn notification(order: &ObservedOrder, outcome: Outcome) -> Option<Violation> {
    let counts = &order.notifications;
    let (template, other) = (outcome.template(), outcome.other_template());
    (!exactly_one(counts, outcome)).then(|| {
        Violation::order(
            Check::Notification,
            &order.id,
            format!(
                "{}: {} {template} and {} {other} notifications, expected exactly one {template}",
                outcome.status(),
                count(counts, template),
                count(counts, other)
            ),
        )
    })
}

fn mail(order: &ObservedOrder, outcome: Outcome, dir: &Path) -> Option<Violation> {
    let counts = &order.mails;
    let (template, other) = (outcome.template(), outcome.other_template());
    (!exactly_one(counts, outcome)).then(|| {
        Violation::order(
            Check::Mail,
            &order.id,
            format!(
                "{}: {} {template} and {} {other} mails (distinct Message-IDs) in {}, expected exactly one {template}",
                outcome.status(),
                count(counts, template),
                count(counts, other),
                dir.display()
            ),
        )
    })
}

/// Quantity per SKU held by reservations whose status is RESERVED.
fn active_reservations(orders: &[ObservedOrder]) -> HashMap<&str, i64> {
    let mut held = HashMap::new();
    let active = orders
        .iter()
        .filter_map(|o| o.reservation.as_ref())
        .filter(|r| r.status == "RESERVED");
    for reservation in active {
        for (sku, quantity) in &reservation.lines {
            *held.entry(sku.as_str()).or_default() += quantity;
        }
    }
    held
}

fn judge_stock(observed: &Observed, expected: &Expectations, report: &mut Report) {
    if expected.initial_stock.is_empty() {
        return;
    }
    let held = active_reservations(&observed.orders);
    let mut skus: Vec<(&String, &i64)> = expected.initial_stock.iter().collect();
    skus.sort();
    for (sku, &initial) in skus {
        report.skus_checked += 1;
        let row = observed.stock.get(sku);
        let active = held.get(sku.as_str()).copied().unwrap_or(0);
        report.violations.extend(stock(sku, initial, row, active));
    }
    report.skus_unchecked = observed
        .stock
        .keys()
        .filter(|s| !expected.initial_stock.contains_key(*s))
        .cloned()
        .collect();
}

fn stock(sku: &str, initial: i64, row: Option<&StockRow>, active: i64) -> Option<Violation> {
    let Some(row) = row else {
        return Some(Violation::subject(
            Check::StockConservation,
            sku,
            format!("initial stock {initial}, but inventory does not know the SKU"),
        ));
    };
    let (a, c) = (row.available, row.committed);
    let sum = a + active + c;
    (sum != initial).then(|| {
        Violation::subject(
            Check::StockConservation,
            sku,
            format!(
                "initial {initial} ≠ available {a} + RESERVED reservations {active} + committed {c} = {sum} (inventory's reserved counter: {})",
                row.reserved
            ),
        )
    })
}

fn judge_money(observed: &Observed, expected: &Expectations, report: &mut Report) {
    let mut net: HashMap<&str, i64> = HashMap::new();
    for order in &observed.orders {
        if let Some(customer) = &order.customer {
            *net.entry(customer.as_str()).or_default() += order.net_charge;
        }
    }
    let mut customers: Vec<(&String, &i64)> = expected.initial_balances.iter().collect();
    customers.sort();
    for (customer, &initial) in customers {
        report.customers_checked += 1;
        let balance = observed.balances.get(customer).copied();
        let charged = net.get(customer.as_str()).copied().unwrap_or(0);
        report
            .violations
            .extend(money(customer, initial, balance, charged));
    }
}

fn money(customer: &str, initial: i64, balance: Option<i64>, charged: i64) -> Option<Violation> {
    let detail = match balance {
        None => format!("initial balance {initial}, but payment has no account"),
        Some(balance) if balance + charged != initial => format!(
            "initial balance {initial} ≠ balance {balance} + net charges {charged} = {}",
            balance + charged
        ),
        Some(_) => return None,
    };
    Some(Violation::subject(
        Check::MoneyConservation,
        customer,
        detail,
    ))
}

fn judge_dead_letters(observed: &Observed, expected: &Expectations, report: &mut Report) {
    let letters = &observed.dead_letters;
    report.dead_letters = letters.len();
    if letters.len() < expected.dead_letters {
        report.violations.push(Violation {
            check: Check::DeadLetter,
            order_id: None,
            subject: None,
            detail: format!(
                "expected {} dead letters, found {}",
                expected.dead_letters,
                letters.len()
            ),
        });
    }
    for letter in letters.iter().skip(expected.dead_letters) {
        report.violations.push(Violation {
            check: Check::DeadLetter,
            order_id: letter.key.clone(),
            subject: Some(letter.position.clone()),
            detail: letter.detail.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_events_are_named_and_nothing_else_is() {
        use choreo_events::{EventMetadata, OrderCancelled, OrderConfirmed, PaymentFailed};
        let confirmed: AnyEvent = OrderConfirmed {
            metadata: EventMetadata::new("o-1", "order", None),
            total_minor: 2500,
            currency: "EUR".into(),
        }
        .into();
        let cancelled: AnyEvent = OrderCancelled {
            metadata: EventMetadata::new("o-1", "order", None),
            reason: "PAYMENT_DECLINED".into(),
            detail: None,
        }
        .into();
        let failed: AnyEvent = PaymentFailed {
            metadata: EventMetadata::new("o-1", "payment", None),
            reason: "INSUFFICIENT_FUNDS".into(),
        }
        .into();
        assert_eq!(
            terminal_event(&confirmed).as_deref(),
            Some("OrderConfirmed")
        );
        assert_eq!(
            terminal_event(&cancelled).as_deref(),
            Some("OrderCancelled(PAYMENT_DECLINED)")
        );
        assert_eq!(terminal_event(&failed), None);
    }

    const SKU: &str = "WIDGET-1";

    fn counts(template: &str, n: usize) -> BTreeMap<String, usize> {
        BTreeMap::from([(template.to_owned(), n)])
    }

    fn reservation(status: &str, quantity: i64) -> Option<ObservedReservation> {
        Some(ObservedReservation {
            status: status.into(),
            lines: vec![(SKU.into(), quantity)],
        })
    }

    /// o1: alice, confirmed, 2 × WIDGET-1 committed, charged its 300.
    fn confirmed() -> ObservedOrder {
        ObservedOrder {
            id: "o1".into(),
            status: "CONFIRMED".into(),
            customer: Some("alice".into()),
            total: 300,
            reservation: reservation("COMMITTED", 2),
            shipment: Some("MANIFESTED".into()),
            net_charge: 300,
            terminal_events: vec!["OrderConfirmed".into()],
            notifications: counts(templates::ORDER_CONFIRMED, 1),
            mails: counts(templates::ORDER_CONFIRMED, 1),
        }
    }

    /// o2: bob, cancelled, its 1 × WIDGET-1 released, charged nothing.
    fn cancelled() -> ObservedOrder {
        ObservedOrder {
            id: "o2".into(),
            status: "CANCELLED".into(),
            customer: Some("bob".into()),
            total: 200,
            reservation: reservation("RELEASED", 1),
            shipment: None,
            net_charge: 0,
            terminal_events: vec!["OrderCancelled(PAYMENT_DECLINED)".into()],
            notifications: counts(templates::ORDER_CANCELLED, 1),
            mails: counts(templates::ORDER_CANCELLED, 1),
        }
    }

    fn stock_row(available: i64, reserved: i64, committed: i64) -> StockRow {
        StockRow {
            available,
            reserved,
            committed,
        }
    }

    fn dead_letter(key: &str, offset: u32) -> ObservedDeadLetter {
        ObservedDeadLetter {
            key: Some(key.into()),
            position: format!("dlq.payment/0/{offset}"),
            detail: "poison (from orders/0/7): ?".into(),
        }
    }

    /// Initial: 10 × WIDGET-1, alice 1000, bob 500; one dead letter.
    fn expected() -> Expectations {
        Expectations {
            initial_stock: HashMap::from([(SKU.into(), 10)]),
            initial_balances: HashMap::from([("alice".into(), 1000), ("bob".into(), 500)]),
            dead_letters: 1,
        }
    }

    /// A run where every invariant holds.
    fn clean() -> Observed {
        Observed {
            orders: vec![confirmed(), cancelled()],
            stock: BTreeMap::from([
                (SKU.into(), stock_row(8, 0, 2)),
                ("GADGET-9".into(), stock_row(5, 0, 0)),
            ]),
            balances: BTreeMap::from([("alice".into(), 700), ("bob".into(), 500)]),
            mail_dir: Some(PathBuf::from("/data/communication/mail")),
            dead_letters: vec![dead_letter("o9", 0)],
        }
    }

    fn order_mut<'a>(observed: &'a mut Observed, id: &str) -> &'a mut ObservedOrder {
        observed
            .orders
            .iter_mut()
            .find(|o| o.id == id)
            .expect("the fixture has the order")
    }

    /// The one violation `observed` yields against [`expected`].
    fn only_violation(observed: &Observed) -> Violation {
        let report = judge(observed, &expected());
        assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
        report.violations[0].clone()
    }

    /// Asserts exactly one violation, of `check`, about order `id`.
    fn assert_order_violation(observed: &Observed, check: Check, id: &str) -> Violation {
        let v = only_violation(observed);
        assert_eq!((v.check, v.order_id.as_deref()), (check, Some(id)), "{v}");
        v
    }

    /// Asserts exactly one violation, of `check`, about `subject`.
    fn assert_subject_violation(observed: &Observed, check: Check, subject: &str) -> Violation {
        let v = only_violation(observed);
        assert_eq!(
            (v.check, v.order_id.as_deref(), v.subject.as_deref()),
            (check, None, Some(subject)),
            "{v}"
        );
        v
    }

    #[test]
    fn a_clean_run_reports_nothing_and_counts_everything() {
        let report = judge(&clean(), &expected());
        assert!(report.is_clean(), "{:#?}", report.violations);
        assert_eq!(
            (report.orders, report.confirmed, report.cancelled),
            (2, 1, 1)
        );
        assert_eq!(report.skus_checked, 1);
        assert_eq!(report.skus_unchecked, ["GADGET-9"]);
        assert_eq!(report.customers_checked, 2);
        assert_eq!(report.dead_letters, 1);
    }

    #[test]
    fn an_order_not_terminal() {
        let mut observed = clean();
        observed.orders.push(ObservedOrder {
            id: "o3".into(),
            status: "PAYMENT_PENDING".into(),
            ..ObservedOrder::default()
        });
        let v = assert_order_violation(&observed, Check::NotTerminal, "o3");
        assert!(v.detail.contains("status PAYMENT_PENDING"), "{v}");
    }

    #[test]
    fn an_order_not_terminal_with_a_terminal_event() {
        let mut observed = clean();
        observed.orders.push(ObservedOrder {
            id: "o3".into(),
            status: "PAYMENT_PENDING".into(),
            terminal_events: vec!["OrderConfirmed".into()],
            ..ObservedOrder::default()
        });
        let report = judge(&observed, &expected());
        let found: Vec<_> = report
            .violations
            .iter()
            .map(|v| (v.check, v.order_id.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (Check::NotTerminal, Some("o3")),
                (Check::TerminalEvents, Some("o3"))
            ]
        );
    }

    #[test]
    fn two_terminal_events_for_one_order() {
        let mut observed = clean();
        order_mut(&mut observed, "o1")
            .terminal_events
            .push("OrderConfirmed".into());
        let v = assert_order_violation(&observed, Check::TerminalEvents, "o1");
        assert!(v.detail.contains("[OrderConfirmed, OrderConfirmed]"), "{v}");
    }

    #[test]
    fn no_terminal_event_for_a_terminal_order() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").terminal_events.clear();
        assert_order_violation(&observed, Check::TerminalEvents, "o2");
    }

    #[test]
    fn a_terminal_event_disagreeing_with_the_status() {
        let mut observed = clean();
        order_mut(&mut observed, "o1").terminal_events = vec!["OrderCancelled(X)".into()];
        let v = assert_order_violation(&observed, Check::TerminalEvents, "o1");
        assert!(
            v.detail.contains("expected exactly one OrderConfirmed"),
            "{v}"
        );
    }

    #[test]
    fn stock_still_reserved_by_a_cancelled_order() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").reservation = reservation("RESERVED", 1);
        // The stock itself is consistent: still held, not lost.
        observed.stock.insert(SKU.into(), stock_row(7, 1, 2));
        let v = assert_order_violation(&observed, Check::Reservation, "o2");
        assert!(v.detail.contains("still RESERVED"), "{v}");
    }

    #[test]
    fn stock_committed_for_a_cancelled_order() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").reservation = reservation("COMMITTED", 1);
        observed.stock.insert(SKU.into(), stock_row(7, 0, 3));
        let v = assert_order_violation(&observed, Check::Reservation, "o2");
        assert!(v.detail.contains("still COMMITTED"), "{v}");
    }

    #[test]
    fn a_confirmed_order_whose_reservation_is_not_committed() {
        let mut observed = clean();
        order_mut(&mut observed, "o1").reservation = reservation("RELEASED", 2);
        observed.stock.insert(SKU.into(), stock_row(10, 0, 0));
        let v = assert_order_violation(&observed, Check::Reservation, "o1");
        assert!(v.detail.contains("reservation is RELEASED"), "{v}");

        order_mut(&mut observed, "o1").reservation = None;
        let v = assert_order_violation(&observed, Check::Reservation, "o1");
        assert!(v.detail.contains("reservation is none"), "{v}");
    }

    #[test]
    fn a_shipment_still_manifested_for_a_cancelled_order() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").shipment = Some("MANIFESTED".into());
        assert_order_violation(&observed, Check::Shipment, "o2");
    }

    #[test]
    fn a_confirmed_order_without_a_manifested_shipment() {
        let mut observed = clean();
        order_mut(&mut observed, "o1").shipment = None;
        let v = assert_order_violation(&observed, Check::Shipment, "o1");
        assert!(v.detail.contains("shipment is none"), "{v}");
    }

    #[test]
    fn a_charge_on_a_cancelled_order() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").net_charge = 200;
        // The money went somewhere consistent: only the outcome is wrong.
        observed.balances.insert("bob".into(), 300);
        let v = assert_order_violation(&observed, Check::Payment, "o2");
        assert!(v.detail.contains("net charge is 200, expected 0"), "{v}");
    }

    #[test]
    fn a_confirmed_order_charged_a_different_amount_than_its_total() {
        let mut observed = clean();
        order_mut(&mut observed, "o1").net_charge = 250;
        observed.balances.insert("alice".into(), 750);
        let v = assert_order_violation(&observed, Check::Payment, "o1");
        assert!(v.detail.contains("total 300 but net charge 250"), "{v}");
    }

    #[test]
    fn a_refund_without_a_capture() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").net_charge = -200;
        observed.balances.insert("bob".into(), 700);
        let v = assert_order_violation(&observed, Check::Payment, "o2");
        assert!(v.detail.contains("net charge is -200"), "{v}");
    }

    #[test]
    fn a_second_notification() {
        let mut observed = clean();
        order_mut(&mut observed, "o1").notifications = counts(templates::ORDER_CONFIRMED, 2);
        let v = assert_order_violation(&observed, Check::Notification, "o1");
        assert!(v.detail.contains("2 ORDER_CONFIRMED"), "{v}");
    }

    #[test]
    fn a_notification_of_the_other_template() {
        let mut observed = clean();
        order_mut(&mut observed, "o2")
            .notifications
            .insert(templates::ORDER_CONFIRMED.into(), 1);
        let v = assert_order_violation(&observed, Check::Notification, "o2");
        assert!(v.detail.contains("1 ORDER_CONFIRMED"), "{v}");
    }

    #[test]
    fn a_missing_notification() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").notifications.clear();
        let v = assert_order_violation(&observed, Check::Notification, "o2");
        assert!(v.detail.contains("0 ORDER_CANCELLED"), "{v}");
    }

    #[test]
    fn a_second_mail() {
        let mut observed = clean();
        order_mut(&mut observed, "o1").mails = counts(templates::ORDER_CONFIRMED, 2);
        let v = assert_order_violation(&observed, Check::Mail, "o1");
        assert!(v.detail.contains("2 ORDER_CONFIRMED"), "{v}");
        assert!(v.detail.starts_with("CONFIRMED: "), "names the status: {v}");
    }

    #[test]
    fn a_missing_mail() {
        let mut observed = clean();
        order_mut(&mut observed, "o2").mails.clear();
        let v = assert_order_violation(&observed, Check::Mail, "o2");
        assert!(v.detail.contains("0 ORDER_CANCELLED"), "{v}");
        assert!(v.detail.starts_with("CANCELLED: "), "names the status: {v}");
    }

    #[test]
    fn a_mail_of_the_other_template() {
        let mut observed = clean();
        order_mut(&mut observed, "o1")
            .mails
            .insert(templates::ORDER_CANCELLED.into(), 1);
        assert_order_violation(&observed, Check::Mail, "o1");
    }

    #[test]
    fn mails_are_not_judged_without_a_mail_folder() {
        let mut observed = clean();
        observed.mail_dir = None;
        order_mut(&mut observed, "o2").mails.clear();
        assert!(judge(&observed, &expected()).is_clean());
    }

    #[test]
    fn a_release_that_never_gives_the_stock_back() {
        let mut observed = clean();
        // o2's reservation says RELEASED, but its unit never went back to
        // `available` and inventory's counter still holds it.
        let leaked = stock_row(7, 1, 2);
        assert_eq!(
            leaked.available + leaked.reserved + leaked.committed,
            10,
            "the counter alone would hide the loss"
        );
        observed.stock.insert(SKU.into(), leaked);
        let v = assert_subject_violation(&observed, Check::StockConservation, SKU);
        assert!(
            v.detail
                .contains("initial 10 ≠ available 7 + RESERVED reservations 0 + committed 2 = 9"),
            "{v}"
        );
    }

    #[test]
    fn stock_held_by_an_order_in_flight_is_conserved() {
        let mut observed = clean();
        observed.orders.push(ObservedOrder {
            id: "o3".into(),
            status: "PAYMENT_PENDING".into(),
            reservation: reservation("RESERVED", 3),
            ..ObservedOrder::default()
        });
        observed.stock.insert(SKU.into(), stock_row(5, 3, 2));
        // Only the order itself is wrong: its 3 units are accounted for.
        assert_order_violation(&observed, Check::NotTerminal, "o3");
    }

    #[test]
    fn stock_lost_outright() {
        let mut observed = clean();
        observed.stock.insert(SKU.into(), stock_row(9, 0, 2));
        assert_subject_violation(&observed, Check::StockConservation, SKU);
        observed.stock.remove(SKU);
        let v = assert_subject_violation(&observed, Check::StockConservation, SKU);
        assert!(v.detail.contains("does not know the SKU"), "{v}");
    }

    #[test]
    fn money_conservation_broken() {
        let mut observed = clean();
        observed.balances.insert("alice".into(), 800);
        let v = assert_subject_violation(&observed, Check::MoneyConservation, "alice");
        assert!(
            v.detail
                .contains("initial balance 1000 ≠ balance 800 + net charges 300 = 1100"),
            "{v}"
        );
        observed.balances.remove("alice");
        let v = assert_subject_violation(&observed, Check::MoneyConservation, "alice");
        assert!(v.detail.contains("no account"), "{v}");
    }

    #[test]
    fn one_dead_letter_more_than_expected() {
        let mut observed = clean();
        observed.dead_letters.push(dead_letter("o8", 1));
        let v = assert_order_violation(&observed, Check::DeadLetter, "o8");
        assert_eq!(v.subject.as_deref(), Some("dlq.payment/0/1"));
        assert_eq!(v.detail, "poison (from orders/0/7): ?");
    }

    #[test]
    fn one_dead_letter_fewer_than_expected() {
        let mut observed = clean();
        observed.dead_letters.clear();
        let v = only_violation(&observed);
        assert_eq!(
            (v.check, v.order_id, v.subject),
            (Check::DeadLetter, None, None)
        );
        assert_eq!(v.detail, "expected 1 dead letters, found 0");
    }

    #[test]
    fn violations_come_sorted_by_check_then_order() {
        let mut observed = clean();
        observed.dead_letters.clear();
        order_mut(&mut observed, "o2").mails.clear();
        order_mut(&mut observed, "o1").mails.clear();
        order_mut(&mut observed, "o1").shipment = None;
        let report = judge(&observed, &expected());
        let found: Vec<_> = report
            .violations
            .iter()
            .map(|v| (v.check, v.order_id.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (Check::Shipment, Some("o1")),
                (Check::Mail, Some("o1")),
                (Check::Mail, Some("o2")),
                (Check::DeadLetter, None),
            ]
        );
    }
}
