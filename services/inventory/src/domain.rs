//! Pure reservation decisions: the per-order state machine of the
//! inventory table in `services/README.md`, and the value types it works
//! on (`Sku`, `Line`; `OrderId` and `Money` are the contract's).
//!
//! [`decide`] takes the order's reservation, the input and the stock it may
//! need, and *returns* the new reservation, the stock movements and the
//! events to emit. It does no I/O and stamps no metadata, so every row of
//! the table is a plain unit test; the handler loads, persists and emits.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use choreo_events::{reasons, Address, OrderLine};

/// Why an input or a request body is not acceptable. Data that fails here
/// can never become valid by retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The contract's value types ([`choreo_events::values`]), under the paths
/// the rest of this crate uses.
pub use choreo_events::{Currency, Money, OrderId};

/// A stock keeping unit: an id by the shared field contract
/// (`choreo_events::contract::check_id`), so it is safe in a URL path and
/// unambiguous in logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = choreo_events::contract::ID_MAX_LEN;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        choreo_events::contract::check_id(raw)
            .map_err(|problem| Invalid(format!("sku {raw:?} {problem}")))?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = Invalid;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Sku::parse(&raw)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> Self {
        sku.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One order line as the reservation keeps it: a valid SKU and a positive
/// quantity (the unit price travels on to `StockReserved`/`StockReleased`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    #[schema(value_type = String)]
    pub sku: Sku,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

impl Line {
    pub fn parse(line: &OrderLine) -> Result<Self, Invalid> {
        let sku = Sku::parse(&line.sku)?;
        if line.quantity <= 0 {
            return Err(Invalid(format!(
                "line {sku}: quantity must be positive, got {}",
                line.quantity
            )));
        }
        Ok(Self {
            sku,
            quantity: line.quantity,
            unit_price_minor: line.unit_price_minor,
        })
    }

    pub fn to_order_line(&self) -> OrderLine {
        OrderLine {
            sku: self.sku.to_string(),
            quantity: self.quantity,
            unit_price_minor: self.unit_price_minor,
        }
    }
}

/// Quantity per SKU over `lines`. An order may list a SKU twice; stock is
/// checked and moved per SKU, in SKU order (which is also the lock order).
pub fn totals(lines: &[Line]) -> BTreeMap<Sku, i64> {
    let mut totals = BTreeMap::new();
    for line in lines {
        *totals.entry(line.sku.clone()).or_insert(0) += i64::from(line.quantity);
    }
    totals
}

/// What `OrderPlaced` tells inventory, validated: the lines to reserve and
/// the order summary that `StockReserved` carries forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    pub lines: Vec<Line>,
    pub customer_id: String,
    pub customer_email: String,
    pub total: Money,
    pub shipping_address: Address,
}

/// The inputs inventory reacts to. Other events on its topics are ignored
/// before they get here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    OrderPlaced(PlacedOrder),
    /// An `OrderPlaced` whose data breaks the field contract
    /// (`choreo_events::contract`); `problems` says how. Nothing can be
    /// reserved for it.
    InvalidOrder {
        problems: String,
    },
    OrderConfirmed,
    OrderCancelled {
        reason: String,
    },
    ShipmentManifestFailed,
    ShipmentCancelled {
        reason: String,
    },
}

/// Stored reservation status, by its stored name (`RESERVED`, …).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::VariantArray,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Reserved,
    Failed,
    Released,
    Committed,
    Void,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An order's reservation. `Absent` is "no row yet"; `Void` is the
/// tombstone left by a cancel that came first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Absent,
    Reserved { lines: Vec<Line> },
    Failed { lines: Vec<Line> },
    Released { lines: Vec<Line> },
    Committed { lines: Vec<Line> },
    Void,
}

impl Reservation {
    /// Rebuilds a stored reservation.
    pub fn from_parts(status: Status, lines: Vec<Line>) -> Self {
        match status {
            Status::Reserved => Reservation::Reserved { lines },
            Status::Failed => Reservation::Failed { lines },
            Status::Released => Reservation::Released { lines },
            Status::Committed => Reservation::Committed { lines },
            Status::Void => Reservation::Void,
        }
    }

    /// `None` for [`Reservation::Absent`], which has no row.
    pub fn status(&self) -> Option<Status> {
        match self {
            Reservation::Absent => None,
            Reservation::Reserved { .. } => Some(Status::Reserved),
            Reservation::Failed { .. } => Some(Status::Failed),
            Reservation::Released { .. } => Some(Status::Released),
            Reservation::Committed { .. } => Some(Status::Committed),
            Reservation::Void => Some(Status::Void),
        }
    }

    pub fn lines(&self) -> &[Line] {
        match self {
            Reservation::Reserved { lines }
            | Reservation::Failed { lines }
            | Reservation::Released { lines }
            | Reservation::Committed { lines } => lines,
            Reservation::Absent | Reservation::Void => &[],
        }
    }
}

/// `available` per SKU, for the SKUs of one order. A SKU missing from the
/// map is unknown to inventory and counts as out of stock.
pub type StockLevels = BTreeMap<Sku, i64>;

/// A change to one stock row, applied by storage with a guard that keeps
/// every column non-negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockMove {
    /// available −q, reserved +q.
    Reserve { sku: Sku, quantity: i64 },
    /// reserved −q, available +q.
    Release { sku: Sku, quantity: i64 },
    /// reserved −q, committed +q.
    Commit { sku: Sku, quantity: i64 },
}

/// An event to emit, without metadata (the handler stamps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    StockReserved(PlacedOrder),
    StockReservationFailed {
        reason: String,
        missing_skus: Vec<Sku>,
    },
    StockReleased {
        reason: String,
        lines: Vec<Line>,
    },
}

/// The outcome of one input: the reservation afterwards, the stock
/// movements and the events, all applied in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: Reservation,
    pub stock: Vec<StockMove>,
    pub emit: Vec<Emit>,
}

impl Decision {
    fn unchanged(state: &Reservation) -> Self {
        Self {
            state: state.clone(),
            stock: Vec::new(),
            emit: Vec::new(),
        }
    }

    /// True when applying the decision would change nothing: a late,
    /// duplicate or irrelevant input.
    pub fn is_noop(&self, before: &Reservation) -> bool {
        self.state == *before && self.stock.is_empty() && self.emit.is_empty()
    }
}

/// The inventory saga step. `stock` needs only the order's SKUs, and only
/// for `OrderPlaced` on an absent reservation.
pub fn decide(state: &Reservation, input: &Input, stock: &StockLevels) -> Decision {
    match (state, input) {
        (Reservation::Absent, Input::OrderPlaced(order)) => reserve(order, stock),
        // Fail the step at once, so the order is cancelled now rather than
        // at its deadline; the Failed row makes a redelivery a no-op.
        (Reservation::Absent, Input::InvalidOrder { .. }) => Decision {
            state: Reservation::Failed { lines: Vec::new() },
            stock: Vec::new(),
            emit: vec![Emit::StockReservationFailed {
                reason: reasons::INVALID_DATA.to_owned(),
                missing_skus: Vec::new(),
            }],
        },
        // The cancel overtook the order: leave a tombstone so a late
        // OrderPlaced reserves nothing.
        (Reservation::Absent, Input::OrderCancelled { .. }) => Decision {
            state: Reservation::Void,
            stock: Vec::new(),
            emit: Vec::new(),
        },
        (Reservation::Reserved { lines }, Input::ShipmentManifestFailed) => {
            release(lines, reasons::SHIPPING_UNAVAILABLE)
        }
        (
            Reservation::Reserved { lines },
            Input::ShipmentCancelled { reason } | Input::OrderCancelled { reason },
        ) => release(lines, reason),
        (Reservation::Reserved { lines }, Input::OrderConfirmed) => Decision {
            state: Reservation::Committed {
                lines: lines.clone(),
            },
            stock: totals(lines)
                .into_iter()
                .map(|(sku, quantity)| StockMove::Commit { sku, quantity })
                .collect(),
            emit: Vec::new(),
        },
        // Everything else is late, duplicate or meaningless for this state
        // (e.g. a second cancel after a release): no second effect.
        _ => Decision::unchanged(state),
    }
}

fn reserve(order: &PlacedOrder, stock: &StockLevels) -> Decision {
    let wanted = totals(&order.lines);
    let missing: Vec<Sku> = wanted
        .iter()
        .filter(|(sku, quantity)| {
            stock
                .get(*sku)
                .is_none_or(|available| available < *quantity)
        })
        .map(|(sku, _)| sku.clone())
        .collect();
    if !missing.is_empty() {
        return Decision {
            state: Reservation::Failed {
                lines: order.lines.clone(),
            },
            stock: Vec::new(),
            emit: vec![Emit::StockReservationFailed {
                reason: reasons::OUT_OF_STOCK.to_owned(),
                missing_skus: missing,
            }],
        };
    }
    Decision {
        state: Reservation::Reserved {
            lines: order.lines.clone(),
        },
        stock: wanted
            .into_iter()
            .map(|(sku, quantity)| StockMove::Reserve { sku, quantity })
            .collect(),
        emit: vec![Emit::StockReserved(order.clone())],
    }
}

fn release(lines: &[Line], reason: &str) -> Decision {
    Decision {
        state: Reservation::Released {
            lines: lines.to_vec(),
        },
        stock: totals(lines)
            .into_iter()
            .map(|(sku, quantity)| StockMove::Release { sku, quantity })
            .collect(),
        emit: vec![Emit::StockReleased {
            reason: reason.to_owned(),
            lines: lines.to_vec(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray as _;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn line(s: &str, quantity: i32) -> Line {
        Line {
            sku: sku(s),
            quantity,
            unit_price_minor: 250,
        }
    }

    fn order(lines: Vec<Line>) -> PlacedOrder {
        PlacedOrder {
            lines,
            customer_id: "cust-1".into(),
            customer_email: "c1@example.com".into(),
            total: Money::new(1_000, Currency::parse("EUR").unwrap()),
            shipping_address: Address {
                name: "Ada".into(),
                line1: "Main St 1".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    fn levels(pairs: &[(&str, i64)]) -> StockLevels {
        pairs.iter().map(|(s, q)| (sku(s), *q)).collect()
    }

    fn cancelled(reason: &str) -> Input {
        Input::OrderCancelled {
            reason: reason.into(),
        }
    }

    /// Every input, for "nothing happens in this state" checks.
    fn all_inputs() -> Vec<Input> {
        vec![
            Input::OrderPlaced(order(vec![line("A", 1)])),
            Input::OrderConfirmed,
            cancelled(reasons::TIMEOUT),
            Input::ShipmentManifestFailed,
            Input::ShipmentCancelled {
                reason: reasons::PAYMENT_DECLINED.into(),
            },
        ]
    }

    #[test]
    fn an_invalid_order_fails_at_once_and_only_once() {
        let input = Input::InvalidOrder {
            problems: "customer_id must not be empty".into(),
        };
        let d = decide(&Reservation::Absent, &input, &StockLevels::new());
        assert_eq!(d.state, Reservation::Failed { lines: Vec::new() });
        assert!(d.stock.is_empty());
        assert_eq!(
            d.emit,
            vec![Emit::StockReservationFailed {
                reason: reasons::INVALID_DATA.into(),
                missing_skus: Vec::new(),
            }]
        );
        assert!(decide(&d.state, &input, &StockLevels::new()).is_noop(&d.state));
    }

    #[test]
    fn order_placed_with_enough_stock_reserves_every_line() {
        let placed = order(vec![line("A", 2), line("B", 1), line("A", 3)]);
        let d = decide(
            &Reservation::Absent,
            &Input::OrderPlaced(placed.clone()),
            &levels(&[("A", 5), ("B", 1)]),
        );
        assert_eq!(
            d.state,
            Reservation::Reserved {
                lines: placed.lines.clone()
            }
        );
        // Quantities are summed per SKU: A is moved once, by 5.
        assert_eq!(
            d.stock,
            vec![
                StockMove::Reserve {
                    sku: sku("A"),
                    quantity: 5
                },
                StockMove::Reserve {
                    sku: sku("B"),
                    quantity: 1
                },
            ]
        );
        assert_eq!(d.emit, vec![Emit::StockReserved(placed)]);
    }

    #[test]
    fn order_placed_short_on_one_sku_reserves_nothing() {
        // 3 + 3 of A exceeds 5 even though each line alone would fit.
        let placed = order(vec![line("A", 3), line("B", 1), line("A", 3)]);
        let d = decide(
            &Reservation::Absent,
            &Input::OrderPlaced(placed.clone()),
            &levels(&[("A", 5), ("B", 10)]),
        );
        assert_eq!(
            d.state,
            Reservation::Failed {
                lines: placed.lines
            }
        );
        assert!(d.stock.is_empty(), "all lines or none");
        assert_eq!(
            d.emit,
            vec![Emit::StockReservationFailed {
                reason: reasons::OUT_OF_STOCK.into(),
                missing_skus: vec![sku("A")],
            }]
        );
    }

    #[test]
    fn unknown_skus_count_as_missing() {
        let placed = order(vec![line("Z", 1), line("A", 1), line("Y", 1)]);
        let d = decide(
            &Reservation::Absent,
            &Input::OrderPlaced(placed),
            &levels(&[("A", 1)]),
        );
        assert_eq!(
            d.emit,
            vec![Emit::StockReservationFailed {
                reason: reasons::OUT_OF_STOCK.into(),
                missing_skus: vec![sku("Y"), sku("Z")],
            }]
        );
    }

    #[test]
    fn exact_stock_is_enough() {
        let d = decide(
            &Reservation::Absent,
            &Input::OrderPlaced(order(vec![line("A", 4)])),
            &levels(&[("A", 4)]),
        );
        assert_eq!(d.state.status(), Some(Status::Reserved));
    }

    #[test]
    fn shipment_manifest_failed_releases_with_shipping_unavailable() {
        let lines = vec![line("A", 2), line("A", 1)];
        let d = decide(
            &Reservation::Reserved {
                lines: lines.clone(),
            },
            &Input::ShipmentManifestFailed,
            &StockLevels::new(),
        );
        assert_eq!(
            d.state,
            Reservation::Released {
                lines: lines.clone()
            }
        );
        assert_eq!(
            d.stock,
            vec![StockMove::Release {
                sku: sku("A"),
                quantity: 3
            }]
        );
        assert_eq!(
            d.emit,
            vec![Emit::StockReleased {
                reason: reasons::SHIPPING_UNAVAILABLE.into(),
                lines
            }]
        );
    }

    #[test]
    fn shipment_cancelled_releases_with_its_reason() {
        let lines = vec![line("B", 1)];
        let d = decide(
            &Reservation::Reserved {
                lines: lines.clone(),
            },
            &Input::ShipmentCancelled {
                reason: reasons::PAYMENT_DECLINED.into(),
            },
            &StockLevels::new(),
        );
        assert_eq!(d.state.status(), Some(Status::Released));
        assert_eq!(
            d.emit,
            vec![Emit::StockReleased {
                reason: reasons::PAYMENT_DECLINED.into(),
                lines
            }]
        );
        assert_eq!(
            d.stock,
            vec![StockMove::Release {
                sku: sku("B"),
                quantity: 1
            }]
        );
    }

    #[test]
    fn order_cancelled_releases_a_reservation_with_its_reason() {
        let lines = vec![line("B", 2)];
        let d = decide(
            &Reservation::Reserved {
                lines: lines.clone(),
            },
            &cancelled(reasons::TIMEOUT),
            &StockLevels::new(),
        );
        assert_eq!(
            d.state,
            Reservation::Released {
                lines: lines.clone()
            }
        );
        assert_eq!(
            d.emit,
            vec![Emit::StockReleased {
                reason: reasons::TIMEOUT.into(),
                lines
            }]
        );
    }

    #[test]
    fn order_cancelled_before_any_reservation_leaves_a_tombstone() {
        let d = decide(
            &Reservation::Absent,
            &cancelled(reasons::CUSTOMER_CANCELLED),
            &StockLevels::new(),
        );
        assert_eq!(d.state, Reservation::Void);
        assert!(d.stock.is_empty() && d.emit.is_empty());

        // The late OrderPlaced then reserves nothing and emits nothing.
        let late = decide(
            &d.state,
            &Input::OrderPlaced(order(vec![line("A", 1)])),
            &levels(&[("A", 100)]),
        );
        assert!(late.is_noop(&Reservation::Void));
    }

    #[test]
    fn order_confirmed_commits_the_reservation() {
        let lines = vec![line("A", 1), line("B", 2), line("A", 1)];
        let d = decide(
            &Reservation::Reserved {
                lines: lines.clone(),
            },
            &Input::OrderConfirmed,
            &StockLevels::new(),
        );
        assert_eq!(d.state, Reservation::Committed { lines });
        assert_eq!(
            d.stock,
            vec![
                StockMove::Commit {
                    sku: sku("A"),
                    quantity: 2
                },
                StockMove::Commit {
                    sku: sku("B"),
                    quantity: 2
                },
            ]
        );
        assert!(d.emit.is_empty(), "committing is internal");
    }

    #[test]
    fn applying_the_same_input_twice_changes_nothing_the_second_time() {
        let placed = order(vec![line("A", 1)]);
        let stock = levels(&[("A", 10)]);
        for input in all_inputs().into_iter().chain([Input::OrderPlaced(placed)]) {
            let first = decide(&Reservation::Absent, &input, &stock);
            let second = decide(&first.state, &input, &stock);
            assert!(
                second.is_noop(&first.state),
                "{input:?} applied twice: {second:?}"
            );
        }
        // And from RESERVED, each input that moves it once moves it once.
        let reserved = Reservation::Reserved {
            lines: vec![line("A", 1)],
        };
        for input in all_inputs() {
            let first = decide(&reserved, &input, &stock);
            let second = decide(&first.state, &input, &stock);
            assert!(
                second.is_noop(&first.state),
                "{input:?} applied twice: {second:?}"
            );
        }
    }

    #[test]
    fn terminal_states_ignore_every_input() {
        let lines = vec![line("A", 1)];
        for state in [
            Reservation::Failed {
                lines: lines.clone(),
            },
            Reservation::Released {
                lines: lines.clone(),
            },
            Reservation::Committed {
                lines: lines.clone(),
            },
            Reservation::Void,
        ] {
            for input in all_inputs() {
                let d = decide(&state, &input, &levels(&[("A", 10)]));
                assert!(d.is_noop(&state), "{state:?} + {input:?} → {d:?}");
            }
        }
    }

    #[test]
    fn absent_ignores_inputs_that_need_a_reservation() {
        for input in [
            Input::OrderConfirmed,
            Input::ShipmentManifestFailed,
            Input::ShipmentCancelled {
                reason: reasons::PAYMENT_DECLINED.into(),
            },
        ] {
            let d = decide(&Reservation::Absent, &input, &StockLevels::new());
            assert!(d.is_noop(&Reservation::Absent), "{input:?} → {d:?}");
        }
    }

    #[test]
    fn reserved_ignores_a_second_order_placed() {
        let reserved = Reservation::Reserved {
            lines: vec![line("A", 1)],
        };
        let d = decide(
            &reserved,
            &Input::OrderPlaced(order(vec![line("A", 1)])),
            &levels(&[("A", 10)]),
        );
        assert!(d.is_noop(&reserved));
    }

    #[test]
    fn skus_and_lines_are_validated() {
        assert!(Sku::parse("WIDGET-1").is_ok());
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("A B").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
        let bad = OrderLine {
            sku: "A".into(),
            quantity: 0,
            unit_price_minor: 1,
        };
        assert!(Line::parse(&bad).is_err());
        // The stored names are data on disk: pinned, and each parses back.
        let names: Vec<&str> = Status::VARIANTS.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["RESERVED", "FAILED", "RELEASED", "COMMITTED", "VOID"]
        );
        for status in Status::VARIANTS {
            assert_eq!(status.as_str().parse::<Status>(), Ok(*status));
        }
        assert!("reserved".parse::<Status>().is_err());
    }

    #[test]
    fn skus_show_what_they_hold() {
        let widget = sku("WIDGET-1");
        assert_eq!(widget.as_str(), "WIDGET-1");
        assert_eq!(widget.to_string(), "WIDGET-1");
        assert_eq!(String::from(widget.clone()), "WIDGET-1");
        // Through serde, as the HTTP API and the seed file read it.
        let json = serde_json::to_string(&widget).unwrap();
        assert_eq!(json, "\"WIDGET-1\"");
        assert_eq!(serde_json::from_str::<Sku>(&json).unwrap(), widget);
        assert!(serde_json::from_str::<Sku>("\"a/b\"").is_err());
    }

    #[test]
    fn a_reservation_keeps_its_lines_until_void() {
        let lines = vec![line("WIDGET-1", 2)];
        let reserved = Reservation::Reserved {
            lines: lines.clone(),
        };
        assert_eq!(reserved.lines(), lines.as_slice());
        assert!(Reservation::Void.lines().is_empty());
        assert!(Reservation::Absent.lines().is_empty());
    }

    #[test]
    fn a_decision_is_a_noop_only_when_it_changes_nothing() {
        let before = Reservation::Reserved {
            lines: vec![line("WIDGET-1", 2)],
        };
        assert!(Decision::unchanged(&before).is_noop(&before));
        assert!(!Decision::unchanged(&Reservation::Void).is_noop(&before));
        let mut moves = Decision::unchanged(&before);
        moves.stock.push(StockMove::Release {
            sku: sku("WIDGET-1"),
            quantity: 2,
        });
        assert!(!moves.is_noop(&before));
        let mut emits = Decision::unchanged(&before);
        emits.emit.push(Emit::StockReservationFailed {
            reason: "OUT_OF_STOCK".into(),
            missing_skus: vec![],
        });
        assert!(!emits.is_noop(&before));
    }
}
