//! The value types of the contract that every service works with: the
//! saga's [`OrderId`], a [`Currency`] and an amount of [`Money`].
//!
//! Each one can only hold what the [field contract](crate::contract)
//! allows, so a service that has one need not check it again. They carry
//! no business rule: whether an amount may be negative, or how a customer
//! reads it, is the service's to say.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::fmt;

use crate::contract::{self, Problem};

/// Why a string is not a contract value. A service turns it into its own
/// error (with `From`) where it needs another shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} {problem}")]
pub struct InvalidValue {
    /// The field as the contract names it (`order_id`, `currency`).
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it, in words that follow the field's name
    /// (`must not be empty`), as [`contract`] says it.
    pub problem: Problem,
}

impl InvalidValue {
    fn check(field: &'static str, value: &str, check: Result<(), Problem>) -> Result<(), Self> {
        check.map_err(|problem| Self {
            field,
            value: value.to_owned(),
            problem,
        })
    }
}

/// The identifier of an order: the saga's correlation id and the Kafka key
/// of every event about it. An id by the contract's
/// [id rule](contract::check_id), so it is also safe in a URL, a log field,
/// a mail header and (through [`file_safe`](Self::file_safe)) a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: impl AsRef<str>) -> Result<Self, InvalidValue> {
        let raw = raw.as_ref();
        InvalidValue::check("order_id", raw, contract::check_id(raw))?;
        Ok(Self(raw.to_owned()))
    }

    /// A fresh random (v4) id, for an order created without one.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a file name and Message-ID part
    /// ([`file_safe_id`](contract::file_safe_id)).
    pub fn file_safe(&self) -> String {
        contract::file_safe_id(&self.0)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 4217 currency code from the contract's list
/// ([`ISO_4217`](contract::ISO_4217)): the one list every service accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, InvalidValue> {
        InvalidValue::check("currency", code, contract::check_currency(code))?;
        Ok(Self(code.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount in minor units of a currency, as the events carry it
/// (`total_minor` / `amount_minor` with `currency`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }
}

/// `1250 EUR`: minor units and the code, for logs and error messages. How
/// a customer reads an amount is the service's business.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_follow_the_id_rule() {
        let id = OrderId::parse("o-1").unwrap();
        assert_eq!((id.as_str(), id.to_string().as_str()), ("o-1", "o-1"));
        assert_eq!(OrderId::parse(String::from("o-1")), Ok(id));
        for bad in ["", " ", "../x.y", "a/b", "a\nb", "a\u{202E}b", "-a"] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(OrderId::parse("o".repeat(contract::ID_MAX_LEN)).is_ok());
        assert!(OrderId::parse("o".repeat(contract::ID_MAX_LEN + 1)).is_err());
    }

    #[test]
    fn an_invalid_order_id_says_which_value_and_why() {
        let e = OrderId::parse("a b").unwrap_err();
        assert_eq!(e.field, "order_id");
        assert_eq!(e.value, "a b");
        assert_eq!(
            e.to_string(),
            r#"order_id "a b" may only contain letters A-Z a-z, digits and . _ : -"#
        );
        assert_eq!(
            OrderId::parse("").unwrap_err().to_string(),
            r#"order_id "" must not be empty"#
        );
    }

    #[test]
    fn random_order_ids_are_valid_and_distinct() {
        let (a, b) = (OrderId::random(), OrderId::random());
        assert_ne!(a, b);
        assert_eq!(OrderId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn file_safe_ids_are_unchanged_for_uuids_and_escaped_otherwise() {
        let uuid = "0b7e0c9e-8d3c-4c4e-9a53-2f2a4a1a4a10";
        assert_eq!(OrderId::parse(uuid).unwrap().file_safe(), uuid);
        assert_eq!(OrderId::parse("a.b:c").unwrap().file_safe(), "a%2Eb%3Ac");
    }

    #[test]
    fn currencies_are_iso_4217_codes_from_the_list() {
        assert!(
            contract::ISO_4217.windows(2).all(|w| w[0] < w[1]),
            "not sorted"
        );
        for code in ["EUR", "USD", "GBP", "JPY", "CHF"] {
            let currency = Currency::parse(code).unwrap();
            assert_eq!(
                (currency.as_str(), currency.to_string().as_str()),
                (code, code)
            );
        }
        for code in ["eur", "XYZ", "EU", "EURO", "XXX", "", " EUR"] {
            let e = Currency::parse(code).unwrap_err();
            assert_eq!((e.field, e.value.as_str()), ("currency", code));
        }
        assert_eq!(
            Currency::parse("XYZ").unwrap_err().problem,
            "unknown currency code XYZ"
        );
    }

    #[test]
    fn money_shows_minor_units_and_code() {
        let money = Money::new(1250, Currency::parse("EUR").unwrap());
        assert_eq!(money.currency.as_str(), "EUR");
        assert_eq!(money.to_string(), "1250 EUR");
        assert_eq!(
            Money::new(-5, Currency::parse("JPY").unwrap()).to_string(),
            "-5 JPY"
        );
    }
}
