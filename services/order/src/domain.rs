//! The order's business rules, pure: validating a new order, and the state
//! machine of services/README.md ("order") as [`decide`].
//!
//! Nothing here does I/O. Callers load an [`OrderState`], map what happened
//! to an [`Input`], call [`decide`] and then persist the returned state and
//! turn the returned [`Effect`] into an event with metadata. Keeping the
//! rules here is what lets the HTTP API, the `order-requests` commands, the
//! saga events and the deadline timer share one set of transitions.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::collections::BTreeMap;
use std::fmt;

use choreo_events::{contract, reasons, Address, OrderLine};

/// The contract's value types ([`choreo_events::values`]), under the paths
/// the rest of this crate uses.
pub use choreo_events::{Currency, Money, OrderId};

/// The ISO 4217 codes of the shared [field contract](choreo_events::contract).
pub use choreo_events::contract::ISO_4217;

/// A new order as a client or a `PlaceOrder` command describes it, before
/// validation. Quantities are `i64` so an HTTP body with a quantity beyond
/// the contract's `int` is reported per field rather than as a parse error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderDraft {
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<DraftLine>,
    pub currency: String,
    pub shipping_address: DraftAddress,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftAddress {
    pub name: String,
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

impl From<&OrderLine> for DraftLine {
    fn from(line: &OrderLine) -> Self {
        DraftLine {
            sku: line.sku.clone(),
            quantity: line.quantity.into(),
            unit_price_minor: line.unit_price_minor,
        }
    }
}

impl From<&Address> for DraftAddress {
    fn from(a: &Address) -> Self {
        DraftAddress {
            name: a.name.clone(),
            line1: a.line1.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }
    }
}

/// Why a draft is not an order: one message per offending field, keyed by
/// the field's path (`items[0].quantity`, `shipping_address.country`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        // The first problem found for a field is the one worth fixing first.
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid order: ")?;
        for (i, (field, message)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field} {message}")?;
        }
        Ok(())
    }
}

/// An order that passed validation: what `OrderPlaced` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidOrder {
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<OrderLine>,
    pub total: Money,
    pub shipping_address: Address,
}

impl OrderDraft {
    /// Parses the draft into an order, or reports every field that breaks
    /// the [field contract](choreo_events::contract).
    pub fn validate(self) -> Result<ValidOrder, FieldErrors> {
        let mut v = contract::Violations::new();
        v.check("customer_id", contract::check_id(&self.customer_id));
        v.check(
            "customer_email",
            contract::check_email(&self.customer_email),
        );
        v.check("items", contract::check_item_count(self.items.len()));
        let mut items = Vec::with_capacity(self.items.len().min(contract::MAX_ITEMS));
        let mut total: Option<i64> = Some(0);
        for (i, line) in self.items.iter().enumerate() {
            let sku = contract::check_id(&line.sku);
            let quantity = contract::check_quantity(line.quantity)
                .and_then(|()| i32::try_from(line.quantity).map_err(|e| e.to_string()));
            let price = contract::check_money(line.unit_price_minor);
            match (&sku, &quantity, &price) {
                (Ok(()), Ok(quantity), Ok(())) => {
                    total = total.and_then(|t| {
                        line.unit_price_minor
                            .checked_mul(i64::from(*quantity))
                            .and_then(|amount| t.checked_add(amount))
                    });
                    items.push(OrderLine {
                        sku: line.sku.clone(),
                        quantity: *quantity,
                        unit_price_minor: line.unit_price_minor,
                    });
                }
                _ => total = None,
            }
            v.check(format!("items[{i}].sku"), sku);
            v.check(format!("items[{i}].quantity"), quantity.map(drop));
            v.check(format!("items[{i}].unit_price_minor"), price);
        }
        if total.is_some_and(|t| t > contract::MAX_MONEY_MINOR) {
            v.add(
                "items",
                format!("order total must be at most {}", contract::MAX_MONEY_MINOR),
            );
        }
        v.check("currency", contract::check_currency(&self.currency));
        let a = &self.shipping_address;
        let shipping_address = Address {
            name: a.name.clone(),
            line1: a.line1.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        };
        contract::check_address(&mut v, "shipping_address", &shipping_address);
        // Checked above with the other fields; `None` only with a violation.
        let currency = Currency::parse(&self.currency).ok();
        match (v.into_result(), total, currency) {
            (Ok(()), Some(minor), Some(currency)) => Ok(ValidOrder {
                customer_id: self.customer_id,
                customer_email: self.customer_email,
                items,
                total: Money { minor, currency },
                shipping_address,
            }),
            (Err(violations), _, _) => Err(FieldErrors::from(violations)),
            // Unreachable: a valid currency and lines always give both.
            (Ok(()), _, _) => Err(FieldErrors::from(vec![contract::Violation {
                field: "items".into(),
                problem: "order total cannot be computed".into(),
            }])),
        }
    }
}

impl OrderDraft {
    /// SHA-256 (hex) of the draft's canonical form: every field in a fixed
    /// order, each length-prefixed so no two drafts encode alike. Stored
    /// with an idempotency key, it tells a retry (same body) from a reuse
    /// of the key for another order.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(self.customer_id.as_bytes());
        field(self.customer_email.as_bytes());
        field(&(self.items.len() as u64).to_be_bytes());
        for line in &self.items {
            field(line.sku.as_bytes());
            field(&line.quantity.to_be_bytes());
            field(&line.unit_price_minor.to_be_bytes());
        }
        field(self.currency.as_bytes());
        let a = &self.shipping_address;
        for part in [&a.name, &a.line1, &a.city, &a.postal_code, &a.country] {
            field(part.as_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl From<Vec<contract::Violation>> for FieldErrors {
    fn from(violations: Vec<contract::Violation>) -> Self {
        let mut errors = FieldErrors::default();
        for v in violations {
            errors.add(v.field, v.problem);
        }
        errors
    }
}

/// Where an order is in its saga. The terminal states are final: nothing
/// leaves them, which is what makes `OrderCancelled` a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Placed; the saga is running.
    Pending,
    /// A step failed; waiting for the compensations to come back before
    /// cancelling, so nothing is released twice.
    Cancelling { reason: String },
    /// Paid and shipped. Terminal.
    Confirmed,
    /// Cancelled for `reason`. Terminal.
    Cancelled { reason: String },
}

impl Status {
    pub const PENDING: &'static str = "PENDING";
    pub const CANCELLING: &'static str = "CANCELLING";
    pub const CONFIRMED: &'static str = "CONFIRMED";
    pub const CANCELLED: &'static str = "CANCELLED";
    /// Every status name, as stored and as the API spells it.
    pub const NAMES: [&'static str; 4] = [
        Self::PENDING,
        Self::CANCELLING,
        Self::CONFIRMED,
        Self::CANCELLED,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Status::Pending => Self::PENDING,
            Status::Cancelling { .. } => Self::CANCELLING,
            Status::Confirmed => Self::CONFIRMED,
            Status::Cancelled { .. } => Self::CANCELLED,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Status::Cancelling { reason } | Status::Cancelled { reason } => Some(reason),
            Status::Pending | Status::Confirmed => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Status::Confirmed | Status::Cancelled { .. })
    }

    /// Rebuilds a status from its stored name and reason; `None` when the
    /// pair is not one [`Status`] can produce.
    pub fn from_parts(name: &str, reason: Option<String>) -> Option<Status> {
        match (name, reason) {
            (Self::PENDING, None) => Some(Status::Pending),
            (Self::CONFIRMED, None) => Some(Status::Confirmed),
            (Self::CANCELLING, Some(reason)) => Some(Status::Cancelling { reason }),
            (Self::CANCELLED, Some(reason)) => Some(Status::Cancelled { reason }),
            _ => None,
        }
    }
}

/// What [`decide`] needs to know about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub status: Status,
    pub total: Money,
}

/// Everything that can happen to an existing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Inventory could not reserve every line.
    StockReservationFailed { missing_skus: Vec<String> },
    /// No courier can ship the order; inventory will release the stock.
    ShipmentManifestFailed { reason: String },
    /// The customer could not be charged; courier and inventory will undo.
    PaymentFailed { reason: String },
    /// Inventory gave the stock back: the last compensation step.
    StockReleased { reason: String },
    /// The customer was charged: the last step of the happy path.
    PaymentCompleted,
    /// The order's deadline passed without an outcome.
    DeadlinePassed,
    /// The customer (DELETE or `CancelOrder`) withdrew the order.
    CustomerCancelled { detail: Option<String> },
    /// An event that changes nothing here (`StockReserved`, a duplicate
    /// `PlaceOrder`, …); only recorded in the timeline.
    Observed,
}

/// An event to emit, without metadata: the caller knows the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Emit `OrderConfirmed`.
    Confirm { total: Money },
    /// Emit `OrderCancelled`.
    Cancel {
        reason: String,
        detail: Option<String>,
    },
}

/// The outcome of [`decide`]: the order's next status and what to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: Status,
    pub emit: Option<Effect>,
}

impl Decision {
    fn stay(state: &OrderState) -> Self {
        Decision {
            status: state.status.clone(),
            emit: None,
        }
    }

    fn wait(reason: &str) -> Self {
        Decision {
            status: Status::Cancelling {
                reason: reason.to_owned(),
            },
            emit: None,
        }
    }

    fn cancel(reason: &str, detail: Option<String>) -> Self {
        Decision {
            status: Status::Cancelled {
                reason: reason.to_owned(),
            },
            emit: Some(Effect::Cancel {
                reason: reason.to_owned(),
                detail,
            }),
        }
    }
}

/// The order state machine (services/README.md, section "order").
///
/// Terminal states absorb every input; a non-terminal state ignores inputs
/// its row of the table does not name. Applying an input to a state that
/// already reflects it therefore changes nothing and emits nothing.
pub fn decide(state: &OrderState, input: &Input) -> Decision {
    use Status::{Cancelling, Pending};
    match (&state.status, input) {
        (Pending, Input::StockReservationFailed { missing_skus }) => {
            let detail = if missing_skus.is_empty() {
                "stock could not be reserved".to_owned()
            } else {
                format!("out of stock: {}", missing_skus.join(", "))
            };
            Decision::cancel(reasons::OUT_OF_STOCK, Some(detail))
        }
        (Pending, Input::ShipmentManifestFailed { .. }) => {
            Decision::wait(reasons::SHIPPING_UNAVAILABLE)
        }
        (Pending, Input::PaymentFailed { .. }) => Decision::wait(reasons::PAYMENT_DECLINED),
        (Pending | Cancelling { .. }, Input::StockReleased { reason }) => {
            Decision::cancel(reason, Some(format!("stock released ({reason})")))
        }
        (Pending, Input::PaymentCompleted) => Decision {
            status: Status::Confirmed,
            emit: Some(Effect::Confirm {
                total: state.total.clone(),
            }),
        },
        (Pending, Input::DeadlinePassed) => Decision::cancel(
            reasons::TIMEOUT,
            Some("no outcome before the order deadline".to_owned()),
        ),
        (Cancelling { reason }, Input::DeadlinePassed) => Decision::cancel(
            reason,
            Some("deadline passed while waiting for compensation".to_owned()),
        ),
        (Pending | Cancelling { .. }, Input::CustomerCancelled { detail }) => Decision::cancel(
            reasons::CUSTOMER_CANCELLED,
            Some(
                detail
                    .clone()
                    .unwrap_or_else(|| "cancelled by the customer".to_owned()),
            ),
        ),
        _ => Decision::stay(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money {
            minor,
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    fn state(status: Status) -> OrderState {
        OrderState {
            status,
            total: eur(3998),
        }
    }

    fn cancelling(reason: &str) -> Status {
        Status::Cancelling {
            reason: reason.into(),
        }
    }

    fn cancelled(reason: &str) -> Status {
        Status::Cancelled {
            reason: reason.into(),
        }
    }

    fn released(reason: &str) -> Input {
        Input::StockReleased {
            reason: reason.into(),
        }
    }

    fn all_inputs() -> Vec<Input> {
        vec![
            Input::StockReservationFailed {
                missing_skus: vec!["SKU-1".into()],
            },
            Input::ShipmentManifestFailed {
                reason: reasons::NO_ROUTE.into(),
            },
            Input::PaymentFailed {
                reason: reasons::INSUFFICIENT_FUNDS.into(),
            },
            released(reasons::PAYMENT_DECLINED),
            Input::PaymentCompleted,
            Input::DeadlinePassed,
            Input::CustomerCancelled { detail: None },
            Input::Observed,
        ]
    }

    fn cancel_reason(decision: &Decision) -> Option<&str> {
        match &decision.emit {
            Some(Effect::Cancel { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn stock_reservation_failed_cancels_a_pending_order() {
        let d = decide(
            &state(Status::Pending),
            &Input::StockReservationFailed {
                missing_skus: vec!["SKU-1".into(), "SKU-2".into()],
            },
        );
        assert_eq!(d.status, cancelled(reasons::OUT_OF_STOCK));
        assert_eq!(
            d.emit,
            Some(Effect::Cancel {
                reason: reasons::OUT_OF_STOCK.into(),
                detail: Some("out of stock: SKU-1, SKU-2".into()),
            })
        );
    }

    #[test]
    fn shipment_failure_waits_for_the_stock_release() {
        let d = decide(
            &state(Status::Pending),
            &Input::ShipmentManifestFailed {
                reason: reasons::NO_ROUTE.into(),
            },
        );
        assert_eq!(d.status, cancelling(reasons::SHIPPING_UNAVAILABLE));
        assert_eq!(d.emit, None);

        let done = decide(&state(d.status), &released(reasons::SHIPPING_UNAVAILABLE));
        assert_eq!(done.status, cancelled(reasons::SHIPPING_UNAVAILABLE));
        assert_eq!(cancel_reason(&done), Some(reasons::SHIPPING_UNAVAILABLE));
    }

    #[test]
    fn payment_failure_waits_for_the_compensations() {
        let d = decide(
            &state(Status::Pending),
            &Input::PaymentFailed {
                reason: reasons::CUSTOMER_BLOCKED.into(),
            },
        );
        assert_eq!(d.status, cancelling(reasons::PAYMENT_DECLINED));
        assert_eq!(d.emit, None);

        // ShipmentCancelled changes nothing; the stock release ends it.
        let waiting = state(d.status);
        assert_eq!(decide(&waiting, &Input::Observed), Decision::stay(&waiting));
        let done = decide(&waiting, &released(reasons::PAYMENT_DECLINED));
        assert_eq!(done.status, cancelled(reasons::PAYMENT_DECLINED));
        assert_eq!(cancel_reason(&done), Some(reasons::PAYMENT_DECLINED));
    }

    #[test]
    fn stock_released_cancels_pending_with_its_reason() {
        let d = decide(&state(Status::Pending), &released("WHATEVER_NEW"));
        assert_eq!(d.status, cancelled("WHATEVER_NEW"));
        assert_eq!(cancel_reason(&d), Some("WHATEVER_NEW"));
    }

    #[test]
    fn payment_completed_confirms_a_pending_order() {
        let d = decide(&state(Status::Pending), &Input::PaymentCompleted);
        assert_eq!(d.status, Status::Confirmed);
        assert_eq!(d.emit, Some(Effect::Confirm { total: eur(3998) }));
    }

    #[test]
    fn deadline_cancels_pending_with_timeout_and_cancelling_with_its_reason() {
        let d = decide(&state(Status::Pending), &Input::DeadlinePassed);
        assert_eq!(d.status, cancelled(reasons::TIMEOUT));
        assert_eq!(cancel_reason(&d), Some(reasons::TIMEOUT));

        let d = decide(
            &state(cancelling(reasons::PAYMENT_DECLINED)),
            &Input::DeadlinePassed,
        );
        assert_eq!(d.status, cancelled(reasons::PAYMENT_DECLINED));
        assert_eq!(cancel_reason(&d), Some(reasons::PAYMENT_DECLINED));
    }

    #[test]
    fn customer_cancel_works_while_pending_or_cancelling() {
        for status in [Status::Pending, cancelling(reasons::SHIPPING_UNAVAILABLE)] {
            let d = decide(
                &state(status),
                &Input::CustomerCancelled {
                    detail: Some("changed my mind".into()),
                },
            );
            assert_eq!(d.status, cancelled(reasons::CUSTOMER_CANCELLED));
            assert_eq!(
                d.emit,
                Some(Effect::Cancel {
                    reason: reasons::CUSTOMER_CANCELLED.into(),
                    detail: Some("changed my mind".into()),
                })
            );
        }
    }

    #[test]
    fn terminal_states_absorb_everything() {
        for status in [
            Status::Confirmed,
            cancelled(reasons::OUT_OF_STOCK),
            cancelled(reasons::CUSTOMER_CANCELLED),
        ] {
            let s = state(status);
            for input in all_inputs() {
                assert_eq!(decide(&s, &input), Decision::stay(&s), "{s:?} + {input:?}");
            }
        }
    }

    #[test]
    fn cancelling_ignores_all_but_release_deadline_and_customer() {
        let s = state(cancelling(reasons::SHIPPING_UNAVAILABLE));
        for input in [
            Input::StockReservationFailed {
                missing_skus: vec![],
            },
            Input::ShipmentManifestFailed {
                reason: reasons::NO_ROUTE.into(),
            },
            Input::PaymentFailed {
                reason: reasons::INSUFFICIENT_FUNDS.into(),
            },
            Input::PaymentCompleted,
            Input::Observed,
        ] {
            assert_eq!(decide(&s, &input), Decision::stay(&s), "{input:?}");
        }
    }

    #[test]
    fn applying_an_input_twice_changes_nothing_the_second_time() {
        for input in all_inputs() {
            let first = decide(&state(Status::Pending), &input);
            let again = decide(&state(first.status.clone()), &input);
            assert_eq!(again.status, first.status, "{input:?}");
            assert_eq!(again.emit, None, "{input:?}");
        }
    }

    #[test]
    fn pending_ignores_observed_events() {
        let s = state(Status::Pending);
        assert_eq!(decide(&s, &Input::Observed), Decision::stay(&s));
    }

    fn draft() -> OrderDraft {
        OrderDraft {
            customer_id: "c-1".into(),
            customer_email: "ada@example.com".into(),
            items: vec![
                DraftLine {
                    sku: "SKU-1".into(),
                    quantity: 2,
                    unit_price_minor: 1999,
                },
                DraftLine {
                    sku: "SKU-2".into(),
                    quantity: 1,
                    unit_price_minor: 500,
                },
            ],
            currency: "EUR".into(),
            shipping_address: DraftAddress {
                name: "Ada".into(),
                line1: "Main St 1".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    #[test]
    fn a_valid_draft_gets_its_total() {
        let order = draft().validate().unwrap();
        assert_eq!(order.total, eur(2 * 1999 + 500));
        assert_eq!(order.items.len(), 2);
        assert_eq!(order.items[0].quantity, 2);
        assert_eq!(order.shipping_address.country, "DE");
    }

    #[test]
    fn every_invalid_field_is_reported_once() {
        let mut bad = draft();
        bad.customer_id = " ".into();
        bad.customer_email = "ada@example".into();
        bad.currency = "XYZ".into();
        bad.items[0].quantity = 0;
        bad.items[0].sku = String::new();
        bad.items[1].unit_price_minor = -1;
        bad.shipping_address.city = String::new();
        bad.shipping_address.country = "de".into();
        let errors = bad.validate().unwrap_err().0;
        let expected: BTreeMap<String, String> = [
            (
                "customer_id",
                "may only contain letters A-Z a-z, digits and . _ : -",
            ),
            ("customer_email", "not an email address"),
            ("currency", "unknown currency code XYZ"),
            ("items[0].sku", "must not be empty"),
            ("items[0].quantity", "must be > 0"),
            ("items[1].unit_price_minor", "must be >= 0"),
            ("shipping_address.city", "must not be empty"),
            (
                "shipping_address.country",
                "must be two uppercase letters (ISO 3166-1 alpha-2)",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(errors, expected);
    }

    #[test]
    fn empty_items_and_overflowing_totals_are_rejected() {
        let mut empty = draft();
        empty.items.clear();
        assert_eq!(
            empty
                .validate()
                .unwrap_err()
                .0
                .get("items")
                .map(String::as_str),
            Some("must not be empty")
        );

        let mut huge = draft();
        huge.items[0].quantity = contract::MAX_QUANTITY;
        huge.items[0].unit_price_minor = contract::MAX_MONEY_MINOR;
        assert_eq!(
            huge.validate()
                .unwrap_err()
                .0
                .get("items")
                .map(String::as_str),
            Some("order total must be at most 1000000000000")
        );

        let mut too_many = draft();
        too_many.items[1].quantity = i64::from(i32::MAX) + 1;
        assert!(too_many
            .validate()
            .unwrap_err()
            .0
            .contains_key("items[1].quantity"));
    }

    #[test]
    fn fingerprint_tells_bodies_apart() {
        let base = draft();
        assert_eq!(base.fingerprint(), draft().fingerprint());
        assert_eq!(base.fingerprint().len(), 64);
        let mut other = draft();
        other.items[0].quantity = 3;
        assert_ne!(base.fingerprint(), other.fingerprint());
        // Moving text between adjacent fields must not collide.
        let mut shifted = draft();
        shifted.shipping_address.name = "Ad".into();
        shifted.shipping_address.line1 = "aMain St 1".into();
        assert_ne!(base.fingerprint(), shifted.fingerprint());
    }

    #[test]
    fn contract_violations_are_reported_per_field() {
        let mut bad = draft();
        bad.customer_id = "c".repeat(1 << 20);
        bad.shipping_address.name = "Ada\nBcc: x@y.z".into();
        bad.items[0].sku = "../x".into();
        bad.items[1].quantity = contract::MAX_QUANTITY + 1;
        let errors = bad.validate().unwrap_err().0;
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "customer_id",
                "items[0].sku",
                "items[1].quantity",
                "shipping_address.name"
            ]
        );
    }

    #[test]
    fn status_round_trips_through_its_parts() {
        for status in [
            Status::Pending,
            cancelling(reasons::PAYMENT_DECLINED),
            Status::Confirmed,
            cancelled(reasons::TIMEOUT),
        ] {
            let back = Status::from_parts(status.name(), status.reason().map(str::to_owned));
            assert_eq!(back, Some(status));
        }
        assert_eq!(Status::from_parts("PENDING", Some("x".into())), None);
        assert_eq!(Status::from_parts("CANCELLED", None), None);
        assert_eq!(Status::from_parts("SHIPPED", None), None);
    }

    #[test]
    fn an_order_converts_back_to_the_draft_it_came_from() {
        let valid = draft().validate().unwrap();
        let lines: Vec<DraftLine> = valid.items.iter().map(DraftLine::from).collect();
        assert_eq!(lines, draft().items);
        assert_eq!(
            DraftAddress::from(&valid.shipping_address),
            draft().shipping_address
        );
    }

    #[test]
    fn field_errors_list_every_field_in_one_line() {
        let mut errors = FieldErrors::default();
        assert!(errors.is_empty());
        errors.add("currency", "is not ISO 4217");
        errors.add("customer_id", "must not be empty");
        errors.add("currency", "a second problem is not listed");
        assert!(!errors.is_empty());
        assert_eq!(
            errors.to_string(),
            "invalid order: currency is not ISO 4217; customer_id must not be empty"
        );
    }

    #[test]
    fn the_total_may_reach_the_money_limit_but_not_pass_it() {
        let mut at = draft();
        at.items = vec![DraftLine {
            sku: "SKU-1".into(),
            quantity: 100,
            unit_price_minor: contract::MAX_MONEY_MINOR / 100,
        }];
        assert!(at.clone().validate().is_ok());
        let mut over = at;
        over.items.push(DraftLine {
            sku: "SKU-2".into(),
            quantity: 1,
            unit_price_minor: 1,
        });
        let errors = over.validate().unwrap_err();
        assert!(errors.0.contains_key("items"), "{errors}");
    }

    #[test]
    fn only_confirmed_and_cancelled_are_terminal() {
        assert!(Status::Confirmed.is_terminal());
        assert!(cancelled("TIMEOUT").is_terminal());
        assert!(!Status::Pending.is_terminal());
        assert!(!cancelling("TIMEOUT").is_terminal());
    }
}
