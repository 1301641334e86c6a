//! Pure notification decisions and the words of the mails: which order
//! gets which mail, when a mail would be a duplicate, how money and reasons
//! read to a customer. No I/O here; rendering the MIME message is
//! [`crate::mail`], sending it [`crate::transport`].
//!
//! | input            | replica | already mailed | decision                                  |
//! |------------------|---------|----------------|-------------------------------------------|
//! | `OrderPlaced`    | any     | any            | upsert the replica                        |
//! | `OrderConfirmed` | present | no             | send ORDER_CONFIRMED                      |
//! | `OrderCancelled` | present | no             | send ORDER_CANCELLED (with the reason)    |
//! | confirm/cancel   | any     | yes            | nothing                                   |
//! | confirm/cancel   | missing | no             | reject: no `OrderPlaced` seen (DLQ)       |

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::fmt;

use choreo_events::{reasons, templates, Address, OrderLine};

/// The contract's value types ([`choreo_events::values`]), under the paths
/// the rest of this crate uses. A mail's order id ends up in a header, a
/// Message-ID and (through [`OrderId::file_safe`]) a file name.
pub use choreo_events::{Currency, Money, OrderId};

/// Decimal places of a currency's minor unit (ISO 4217); 2 unless listed.
fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// An amount as a customer reads it in a mail: `1234 EUR` → `12.34 EUR`;
/// `500 JPY` → `500 JPY`.
#[derive(Debug, Clone, Copy)]
pub struct InMajorUnits<'a>(pub &'a Money);

impl fmt::Display for InMajorUnits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Money { minor, currency } = self.0;
        let digits = minor_digits(currency.as_str());
        let sign = if *minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if digits == 0 {
            return write!(f, "{sign}{abs} {currency}");
        }
        let scale = 10u64.pow(digits);
        write!(
            f,
            "{sign}{}.{:0width$} {currency}",
            abs / scale,
            abs % scale,
            width = digits as usize
        )
    }
}

/// What the mails need to know about an order, from `OrderPlaced`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderReplica {
    pub order_id: OrderId,
    pub customer_id: String,
    pub customer_email: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub address: Address,
    /// `OrderPlaced.metadata.occurred_at`, epoch millis.
    pub placed_at: i64,
}

/// Which mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    OrderConfirmed,
    OrderCancelled,
}

impl Template {
    /// The `CustomerNotified.template` code and the notification key.
    pub fn code(self) -> &'static str {
        match self {
            Template::OrderConfirmed => templates::ORDER_CONFIRMED,
            Template::OrderCancelled => templates::ORDER_CANCELLED,
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why an order was cancelled, as `OrderCancelled` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason {
    pub code: String,
    pub detail: Option<String>,
}

impl CancelReason {
    /// The reason as a customer should read it, completing "because …".
    /// Unknown codes (the set is open) are shown as they are.
    pub fn in_words(&self) -> String {
        match self.code.as_str() {
            reasons::OUT_OF_STOCK => "some of the items are out of stock".into(),
            reasons::SHIPPING_UNAVAILABLE => "we cannot ship to your address".into(),
            reasons::PAYMENT_DECLINED => "the payment was declined".into(),
            reasons::TIMEOUT => "it could not be completed in time".into(),
            reasons::CUSTOMER_CANCELLED => "you cancelled it".into(),
            other => format!("of {other}"),
        }
    }
}

/// What communication reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Placed(Box<OrderReplica>),
    Confirmed,
    Cancelled(CancelReason),
}

/// A mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub template: Template,
    pub order: OrderReplica,
    /// Set for cancellations.
    pub reason: Option<CancelReason>,
}

/// The outcome of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    UpsertReplica(OrderReplica),
    Send(Notice),
    /// This mail went out already; a redelivery or a replay.
    AlreadySent(Template),
    /// Can never succeed: the order was never seen.
    Reject(String),
}

/// The template an input calls for, if any; the handler asks storage
/// whether that mail was sent before calling [`decide`].
pub fn template_for(input: &Input) -> Option<Template> {
    match input {
        Input::Placed(_) => None,
        Input::Confirmed => Some(Template::OrderConfirmed),
        Input::Cancelled(_) => Some(Template::OrderCancelled),
    }
}

/// See the module table. `replica` is the order as known; `already_sent`
/// whether the mail of [`template_for`]`(input)` has a notification row.
pub fn decide(
    order_id: &OrderId,
    input: &Input,
    replica: Option<&OrderReplica>,
    already_sent: bool,
) -> Decision {
    let (template, reason) = match input {
        Input::Placed(order) => return Decision::UpsertReplica((**order).clone()),
        Input::Confirmed => (Template::OrderConfirmed, None),
        Input::Cancelled(reason) => (Template::OrderCancelled, Some(reason.clone())),
    };
    if already_sent {
        return Decision::AlreadySent(template);
    }
    match replica {
        Some(order) => Decision::Send(Notice {
            template,
            order: order.clone(),
            reason,
        }),
        None => Decision::Reject(format!(
            "no OrderPlaced seen for order {order_id}; cannot send {template}"
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    pub(crate) fn replica() -> OrderReplica {
        OrderReplica {
            order_id: OrderId::parse("o1").unwrap(),
            customer_id: "alice".into(),
            customer_email: "alice@example.org".into(),
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 1250,
            }],
            total: eur(2500),
            address: Address {
                name: "Alice".into(),
                line1: "Main St 1".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
            placed_at: 0,
        }
    }

    fn id() -> OrderId {
        OrderId::parse("o1").unwrap()
    }

    fn cancel(code: &str) -> Input {
        Input::Cancelled(CancelReason {
            code: code.into(),
            detail: None,
        })
    }

    #[test]
    fn placed_upserts_the_replica_whatever_was_sent() {
        for sent in [false, true] {
            let d = decide(&id(), &Input::Placed(Box::new(replica())), None, sent);
            assert_eq!(d, Decision::UpsertReplica(replica()));
        }
        assert_eq!(template_for(&Input::Placed(Box::new(replica()))), None);
    }

    #[test]
    fn confirmed_sends_the_confirmation() {
        let d = decide(&id(), &Input::Confirmed, Some(&replica()), false);
        assert_eq!(
            d,
            Decision::Send(Notice {
                template: Template::OrderConfirmed,
                order: replica(),
                reason: None
            })
        );
        assert_eq!(
            template_for(&Input::Confirmed),
            Some(Template::OrderConfirmed)
        );
    }

    #[test]
    fn cancelled_sends_the_cancellation_with_its_reason() {
        let d = decide(&id(), &cancel(reasons::TIMEOUT), Some(&replica()), false);
        let Decision::Send(notice) = d else {
            panic!("expected a mail, got {d:?}");
        };
        assert_eq!(notice.template, Template::OrderCancelled);
        assert_eq!(notice.reason.unwrap().code, reasons::TIMEOUT);
    }

    #[test]
    fn a_sent_mail_is_not_sent_again() {
        for input in [Input::Confirmed, cancel(reasons::TIMEOUT)] {
            let d = decide(&id(), &input, Some(&replica()), true);
            assert!(matches!(d, Decision::AlreadySent(_)), "{d:?}");
            // Even without a replica (e.g. after a lost replica row).
            assert!(matches!(
                decide(&id(), &input, None, true),
                Decision::AlreadySent(_)
            ));
        }
    }

    #[test]
    fn without_order_placed_the_mail_is_rejected() {
        let d = decide(&id(), &Input::Confirmed, None, false);
        let Decision::Reject(reason) = d else {
            panic!("expected a rejection, got {d:?}");
        };
        assert!(
            reason.contains("no OrderPlaced seen for order o1"),
            "{reason}"
        );
    }

    #[test]
    fn money_reads_in_major_units() {
        let read = |minor: i64, code: &str| {
            InMajorUnits(&Money::new(minor, Currency::parse(code).unwrap())).to_string()
        };
        assert_eq!(read(2500, "EUR"), "25.00 EUR");
        assert_eq!(read(5, "USD"), "0.05 USD");
        assert_eq!(read(-1999, "GBP"), "-19.99 GBP");
        assert_eq!(read(500, "JPY"), "500 JPY");
        assert_eq!(read(1500, "KWD"), "1.500 KWD");
        assert_eq!(read(0, "EUR"), "0.00 EUR", "no sign on zero");
    }

    #[test]
    fn reasons_read_as_words() {
        let words = |code: &str| {
            CancelReason {
                code: code.into(),
                detail: None,
            }
            .in_words()
        };
        for code in reasons::ORDER_CANCELLED_REASONS {
            assert!(!words(code).contains(code), "{code} has no words");
        }
        assert_eq!(words("SOMETHING_NEW"), "of SOMETHING_NEW");
    }
}
