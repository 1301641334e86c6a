//! Pure payment decisions: the per-order payment state machine and the
//! money rules. No I/O here — [`decide`] returns the new state, the ledger
//! movement and the events to emit, and the handler performs them.
//!
//! | state    | input                | result                                        |
//! |----------|----------------------|-----------------------------------------------|
//! | none     | `ShipmentManifested` | blocked → FAILED(CUSTOMER_BLOCKED); no account, other currency or balance < amount → FAILED(INSUFFICIENT_FUNDS); else CAPTURED, debit, `PaymentCompleted` |
//! | CAPTURED | `OrderCancelled`     | REFUNDED, credit, `PaymentRefunded(reason)`   |
//! | none     | `OrderCancelled`     | VOID (a later `ShipmentManifested` charges nothing) |
//! | any other combination  | | nothing                                       |

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::fmt;

use choreo_events::{reasons, InvalidValue};

/// Why a value from an event, a request or the seed file is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// An id by the shared [field contract](choreo_events::contract::check_id).
            pub fn parse(value: impl Into<String>) -> Result<Self, Invalid> {
                let value = value.into();
                choreo_events::contract::check_id(&value)
                    .map_err(|problem| Invalid::new($field, problem))?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// The customer an account belongs to.
    CustomerId,
    "customer_id"
);
id_newtype!(
    /// This service's id of a captured payment.
    PaymentId,
    "payment_id"
);

/// The contract's value types ([`choreo_events::values`]), under the paths
/// the rest of this crate uses.
pub use choreo_events::{Currency, Money, OrderId};

/// A contract value that does not parse, as the field it was read from.
impl From<InvalidValue> for Invalid {
    fn from(e: InvalidValue) -> Self {
        Self::new(e.field, e.problem)
    }
}

/// An amount payment accepts: `minor` not negative, in a contract currency.
/// `field` names the amount in error messages (`balance_minor`,
/// `amount_minor`).
pub fn money(field: &'static str, minor: i64, currency: &str) -> Result<Money, Invalid> {
    if minor < 0 {
        return Err(Invalid::new(
            field,
            format!("must not be negative, got {minor}"),
        ));
    }
    Ok(Money::new(minor, Currency::parse(currency)?))
}

/// A customer's account as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub customer_id: CustomerId,
    pub balance: Money,
    pub blocked: bool,
}

/// Why a payment failed; the `PaymentFailed.reason` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    CustomerBlocked,
    InsufficientFunds,
}

impl FailReason {
    pub fn code(self) -> &'static str {
        match self {
            FailReason::CustomerBlocked => reasons::CUSTOMER_BLOCKED,
            FailReason::InsufficientFunds => reasons::INSUFFICIENT_FUNDS,
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            reasons::CUSTOMER_BLOCKED => Some(FailReason::CustomerBlocked),
            reasons::INSUFFICIENT_FUNDS => Some(FailReason::InsufficientFunds),
            _ => None,
        }
    }
}

/// A successful charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub payment_id: PaymentId,
    pub customer_id: CustomerId,
    pub amount: Money,
}

/// A charge that was refused; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub reason: FailReason,
}

/// Per-order payment state. `None` is "payment has not heard of the order
/// yet"; every other state is final for the input that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentState {
    None,
    Captured(Capture),
    Failed(Failure),
    Refunded {
        capture: Capture,
        reason: String,
    },
    /// Cancelled before any charge: a later `ShipmentManifested` charges
    /// nothing.
    Void,
}

impl PaymentState {
    /// Status column / API value; `None` has no row.
    pub fn status(&self) -> Option<&'static str> {
        match self {
            PaymentState::None => None,
            PaymentState::Captured(_) => Some("CAPTURED"),
            PaymentState::Failed(_) => Some("FAILED"),
            PaymentState::Refunded { .. } => Some("REFUNDED"),
            PaymentState::Void => Some("VOID"),
        }
    }

    /// What the customer is out of pocket for this order: captured minus
    /// refunded.
    pub fn net_charge_minor(&self) -> i64 {
        match self {
            PaymentState::Captured(capture) => capture.amount.minor,
            PaymentState::None
            | PaymentState::Failed(_)
            | PaymentState::Refunded { .. }
            | PaymentState::Void => 0,
        }
    }
}

/// What payment reacts to, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Charge `amount` to `customer_id`. `account` is the customer's account
    /// as read (and, on PostgreSQL, locked) in the same transaction;
    /// `payment_id` is the id to use if the charge is captured.
    ShipmentManifested {
        customer_id: CustomerId,
        amount: Money,
        account: Option<Account>,
        payment_id: PaymentId,
    },
    /// Undo whatever is held for the order.
    OrderCancelled { reason: String },
}

/// A balance movement the handler must apply with the state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ledger {
    Debit {
        customer_id: CustomerId,
        amount: Money,
    },
    Credit {
        customer_id: CustomerId,
        amount: Money,
    },
}

/// An event to emit; the handler adds metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    Completed(Capture),
    Failed(FailReason),
    Refunded { capture: Capture, reason: String },
}

/// The outcome of one input: the state to store (equal to the old one when
/// nothing changes), the balance movement and the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: PaymentState,
    pub ledger: Option<Ledger>,
    pub emit: Vec<Emit>,
}

impl Decision {
    fn unchanged(state: &PaymentState) -> Self {
        Self {
            state: state.clone(),
            ledger: None,
            emit: Vec::new(),
        }
    }

    /// True when the decision changes nothing (a duplicate or late input).
    pub fn is_noop(&self, current: &PaymentState) -> bool {
        self.state == *current && self.ledger.is_none() && self.emit.is_empty()
    }
}

/// The payment saga step. See the module table.
pub fn decide(state: &PaymentState, input: &Input) -> Decision {
    match (state, input) {
        (
            PaymentState::None,
            Input::ShipmentManifested {
                customer_id,
                amount,
                account,
                payment_id,
            },
        ) => match charge_refusal(account.as_ref(), amount) {
            Some(reason) => Decision {
                state: PaymentState::Failed(Failure {
                    customer_id: customer_id.clone(),
                    amount: amount.clone(),
                    reason,
                }),
                ledger: None,
                emit: vec![Emit::Failed(reason)],
            },
            None => {
                let capture = Capture {
                    payment_id: payment_id.clone(),
                    customer_id: customer_id.clone(),
                    amount: amount.clone(),
                };
                Decision {
                    state: PaymentState::Captured(capture.clone()),
                    ledger: Some(Ledger::Debit {
                        customer_id: customer_id.clone(),
                        amount: amount.clone(),
                    }),
                    emit: vec![Emit::Completed(capture)],
                }
            }
        },
        (PaymentState::Captured(capture), Input::OrderCancelled { reason }) => Decision {
            state: PaymentState::Refunded {
                capture: capture.clone(),
                reason: reason.clone(),
            },
            ledger: Some(Ledger::Credit {
                customer_id: capture.customer_id.clone(),
                amount: capture.amount.clone(),
            }),
            emit: vec![Emit::Refunded {
                capture: capture.clone(),
                reason: reason.clone(),
            }],
        },
        (PaymentState::None, Input::OrderCancelled { .. }) => Decision {
            state: PaymentState::Void,
            ledger: None,
            emit: Vec::new(),
        },
        // A second charge, a charge after cancellation, a second refund or a
        // cancellation of a failed payment: nothing to do.
        (_, _) => Decision::unchanged(state),
    }
}

/// Blocked first: a blocked customer is refused whatever the balance.
fn charge_refusal(account: Option<&Account>, amount: &Money) -> Option<FailReason> {
    let Some(account) = account else {
        return Some(FailReason::InsufficientFunds);
    };
    if account.blocked {
        Some(FailReason::CustomerBlocked)
    } else if account.balance.currency != amount.currency || account.balance.minor < amount.minor {
        Some(FailReason::InsufficientFunds)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        money("amount_minor", minor, "EUR").unwrap()
    }

    fn alice() -> CustomerId {
        CustomerId::parse("alice").unwrap()
    }

    fn account(balance: Money, blocked: bool) -> Account {
        Account {
            customer_id: alice(),
            balance,
            blocked,
        }
    }

    fn manifested(account: Option<Account>, amount: Money) -> Input {
        Input::ShipmentManifested {
            customer_id: alice(),
            amount,
            account,
            payment_id: PaymentId::parse("pay-1").unwrap(),
        }
    }

    fn cancelled(reason: &str) -> Input {
        Input::OrderCancelled {
            reason: reason.to_owned(),
        }
    }

    fn capture(minor: i64) -> Capture {
        Capture {
            payment_id: PaymentId::parse("pay-1").unwrap(),
            customer_id: alice(),
            amount: eur(minor),
        }
    }

    fn failed(reason: FailReason, minor: i64) -> Decision {
        Decision {
            state: PaymentState::Failed(Failure {
                customer_id: alice(),
                amount: eur(minor),
                reason,
            }),
            ledger: None,
            emit: vec![Emit::Failed(reason)],
        }
    }

    #[test]
    fn manifested_with_funds_captures_and_debits() {
        let d = decide(
            &PaymentState::None,
            &manifested(Some(account(eur(1000), false)), eur(1000)),
        );
        assert_eq!(d.state, PaymentState::Captured(capture(1000)));
        assert_eq!(
            d.ledger,
            Some(Ledger::Debit {
                customer_id: alice(),
                amount: eur(1000)
            })
        );
        assert_eq!(d.emit, vec![Emit::Completed(capture(1000))]);
        assert_eq!(d.state.net_charge_minor(), 1000);
    }

    #[test]
    fn blocked_customer_fails_even_with_funds() {
        let d = decide(
            &PaymentState::None,
            &manifested(Some(account(eur(1_000_000), true)), eur(10)),
        );
        assert_eq!(d, failed(FailReason::CustomerBlocked, 10));
    }

    #[test]
    fn blocked_wins_over_insufficient_funds() {
        let d = decide(
            &PaymentState::None,
            &manifested(Some(account(eur(0), true)), eur(10)),
        );
        assert_eq!(d, failed(FailReason::CustomerBlocked, 10));
    }

    #[test]
    fn no_account_fails_with_insufficient_funds() {
        let d = decide(&PaymentState::None, &manifested(None, eur(10)));
        assert_eq!(d, failed(FailReason::InsufficientFunds, 10));
    }

    #[test]
    fn other_currency_fails_with_insufficient_funds() {
        let usd = money("balance_minor", 1_000_000, "USD").unwrap();
        let d = decide(
            &PaymentState::None,
            &manifested(Some(account(usd, false)), eur(10)),
        );
        assert_eq!(d, failed(FailReason::InsufficientFunds, 10));
    }

    #[test]
    fn low_balance_fails_with_insufficient_funds() {
        let d = decide(
            &PaymentState::None,
            &manifested(Some(account(eur(999), false)), eur(1000)),
        );
        assert_eq!(d, failed(FailReason::InsufficientFunds, 1000));
        assert_eq!(d.state.net_charge_minor(), 0);
    }

    #[test]
    fn cancel_after_capture_refunds_with_the_reason() {
        let state = PaymentState::Captured(capture(500));
        let d = decide(&state, &cancelled(reasons::TIMEOUT));
        assert_eq!(
            d.state,
            PaymentState::Refunded {
                capture: capture(500),
                reason: reasons::TIMEOUT.into()
            }
        );
        assert_eq!(
            d.ledger,
            Some(Ledger::Credit {
                customer_id: alice(),
                amount: eur(500)
            })
        );
        assert_eq!(
            d.emit,
            vec![Emit::Refunded {
                capture: capture(500),
                reason: reasons::TIMEOUT.into()
            }]
        );
        assert_eq!(d.state.net_charge_minor(), 0);
    }

    #[test]
    fn cancel_before_any_charge_voids() {
        let d = decide(&PaymentState::None, &cancelled(reasons::OUT_OF_STOCK));
        assert_eq!(d.state, PaymentState::Void);
        assert!(d.ledger.is_none() && d.emit.is_empty());
    }

    #[test]
    fn void_charges_nothing_later() {
        let d = decide(
            &PaymentState::Void,
            &manifested(Some(account(eur(1000), false)), eur(10)),
        );
        assert!(d.is_noop(&PaymentState::Void));
    }

    #[test]
    fn replaying_an_applied_input_changes_nothing() {
        let funded = || manifested(Some(account(eur(1000), false)), eur(10));
        // Applying each input once more in the state it produced.
        let captured = decide(&PaymentState::None, &funded()).state;
        assert!(decide(&captured, &funded()).is_noop(&captured));

        let refunded = decide(&captured, &cancelled(reasons::TIMEOUT)).state;
        assert!(decide(&refunded, &cancelled(reasons::TIMEOUT)).is_noop(&refunded));
        assert!(decide(&refunded, &funded()).is_noop(&refunded));

        let failed = decide(&PaymentState::None, &manifested(None, eur(10))).state;
        assert!(decide(&failed, &funded()).is_noop(&failed));

        let void = decide(&PaymentState::None, &cancelled(reasons::TIMEOUT)).state;
        assert!(decide(&void, &cancelled(reasons::TIMEOUT)).is_noop(&void));
    }

    #[test]
    fn cancel_after_a_failed_payment_refunds_nothing() {
        let state = failed(FailReason::InsufficientFunds, 10).state;
        assert!(decide(&state, &cancelled(reasons::PAYMENT_DECLINED)).is_noop(&state));
    }

    #[test]
    fn money_and_ids_are_validated() {
        assert_eq!(
            money("amount_minor", -1, "EUR").unwrap_err().to_string(),
            "amount_minor: must not be negative, got -1"
        );
        assert_eq!(
            money("amount_minor", 0, "EURO").unwrap_err().to_string(),
            "currency: unknown currency code EURO"
        );
        assert_eq!(
            money("amount_minor", 0, "JPY").unwrap().to_string(),
            "0 JPY"
        );
        assert!(CustomerId::parse("  ").is_err());
        assert!(CustomerId::parse("a\nb").is_err());
        assert_eq!(
            FailReason::from_code(FailReason::CustomerBlocked.code()),
            Some(FailReason::CustomerBlocked)
        );
    }

    #[test]
    fn fail_reasons_round_trip_through_their_codes() {
        for reason in [FailReason::CustomerBlocked, FailReason::InsufficientFunds] {
            assert_eq!(FailReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(FailReason::from_code("SOMETHING_ELSE"), None);
    }

    #[test]
    fn every_state_has_its_status_name() {
        let failure = Failure {
            customer_id: alice(),
            amount: eur(1),
            reason: FailReason::InsufficientFunds,
        };
        let named = [
            (PaymentState::None, None),
            (PaymentState::Captured(capture(1)), Some("CAPTURED")),
            (PaymentState::Failed(failure), Some("FAILED")),
            (
                PaymentState::Refunded {
                    capture: capture(1),
                    reason: "TIMEOUT".into(),
                },
                Some("REFUNDED"),
            ),
            (PaymentState::Void, Some("VOID")),
        ];
        for (state, status) in named {
            assert_eq!(state.status(), status, "{state:?}");
        }
    }

    #[test]
    fn a_decision_is_a_noop_only_when_it_changes_nothing() {
        let current = PaymentState::Captured(capture(5));
        assert!(Decision::unchanged(&current).is_noop(&current));
        let other_state = Decision::unchanged(&PaymentState::Void);
        assert!(!other_state.is_noop(&current));
        let mut with_ledger = Decision::unchanged(&current);
        with_ledger.ledger = Some(Ledger::Debit {
            customer_id: alice(),
            amount: eur(5),
        });
        assert!(!with_ledger.is_noop(&current));
        let mut with_event = Decision::unchanged(&current);
        with_event.emit.push(Emit::Completed(capture(5)));
        assert!(!with_event.is_noop(&current));
    }
}
