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

/// The order a mail is about (the saga's correlation id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(String);

impl OrderId {
    /// An id by the shared field contract
    /// ([`check_id`](choreo_events::contract::check_id)): it ends up in a
    /// mail header, a Message-ID and a file name.
    pub fn parse(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        choreo_events::contract::check_id(&value)
            .map_err(|problem| format!("order_id {value:?} {problem}"))?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a file name and Message-ID part
    /// ([`file_safe_id`](choreo_events::contract::file_safe_id)).
    pub fn file_safe(&self) -> String {
        choreo_events::contract::file_safe_id(&self.0)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

impl Money {
    pub fn new(minor: i64, currency: impl Into<String>) -> Self {
        Self {
            minor,
            currency: currency.into(),
        }
    }
}

/// Decimal places of a currency's minor unit (ISO 4217); 2 unless listed.
fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// `1234 EUR` → `12.34 EUR`; `500 JPY` → `500 JPY`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = minor_digits(&self.currency);
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if digits == 0 {
            return write!(f, "{sign}{abs} {}", self.currency);
        }
        let scale = 10u64.pow(digits);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.currency,
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
            total: Money::new(2500, "EUR"),
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
        assert_eq!(Money::new(2500, "EUR").to_string(), "25.00 EUR");
        assert_eq!(Money::new(5, "USD").to_string(), "0.05 USD");
        assert_eq!(Money::new(-1999, "GBP").to_string(), "-19.99 GBP");
        assert_eq!(Money::new(500, "JPY").to_string(), "500 JPY");
        assert_eq!(Money::new(1500, "KWD").to_string(), "1.500 KWD");
        assert_eq!(
            Money::new(0, "EUR").to_string(),
            "0.00 EUR",
            "no sign on zero"
        );
    }

    #[test]
    fn an_order_id_shows_what_it_holds() {
        let id = OrderId::parse("o-1").unwrap();
        assert_eq!((id.as_str(), id.to_string().as_str()), ("o-1", "o-1"));
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

    #[test]
    fn file_safe_ids_are_unchanged_for_uuids_and_escaped_otherwise() {
        let uuid = "0b7e0c9e-8d3c-4c4e-9a53-2f2a4a1a4a10";
        assert_eq!(OrderId::parse(uuid).unwrap().file_safe(), uuid);
        assert_eq!(OrderId::parse("a.b:c").unwrap().file_safe(), "a%2Eb%3Ac");
        for bad in ["../x.y", "a/b", "a\nb", "a\u{202E}b", ""] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
