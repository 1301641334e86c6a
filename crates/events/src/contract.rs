//! The field contract: what every value in an event or command may hold,
//! shared by every service so they cannot disagree about what is valid.
//!
//! Order enforces it where data enters (HTTP `POST /orders`, `PlaceOrder`
//! and `CancelOrder` on `order-requests`); every other participant checks
//! the same rules on what it consumes and, for data it cannot act on, emits
//! its failure event (reason [`INVALID_DATA`](crate::reasons::INVALID_DATA))
//! so the saga compensates at once. services/README.md has the table.
//!
//! | field | limit |
//! |---|---|
//! | ids (`order_id`, `customer_id`, `sku`, `payment_id`, …) | 1–[`ID_MAX_LEN`] of `A-Z a-z 0-9 . _ : -`, starting with a letter or digit, no `..` |
//! | `customer_email` | ASCII `local@domain`, at most [`EMAIL_MAX_LEN`]; see [`check_email`] |
//! | `shipping_address.name`, `.city` | 1–[`NAME_MAX_LEN`] characters; `.line1` 1–[`LINE_MAX_LEN`]; no control or invisible formatting characters |
//! | `shipping_address.postal_code` | 1–[`POSTAL_CODE_MAX_LEN`] of `A-Z a-z 0-9`, space, `-` |
//! | `shipping_address.country` | ISO 3166-1 alpha-2 shape: two capital letters |
//! | `items` | 1–[`MAX_ITEMS`] lines |
//! | `quantity` | 1–[`MAX_QUANTITY`] |
//! | `unit_price_minor`, totals, amounts | 0–[`MAX_MONEY_MINOR`] |
//! | `currency` | one of [`ISO_4217`] |
//! | idempotency key (`Idempotency-Key`, `request_id`) | 1–[`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII characters |
//! | free text (`CancelOrder.reason`, `detail`) | at most [`TEXT_MAX_LEN`] characters, no control or invisible formatting characters |
//!
//! Ids are deliberately narrow: they become Kafka keys, URL path segments,
//! file names (mail files) and log fields, and every one of those breaks on
//! something (`/`, `%`, `..`, newlines, terminal escapes). UUIDs fit.
//!
//! Each `check_*` returns the problem in words, suitable after the field
//! name: `customer_id must be at most 64 characters`.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::fmt;

use crate::common::{Address, OrderLine};

/// Longest id, in characters (all ASCII, so also bytes).
pub const ID_MAX_LEN: usize = 64;
/// Longest e-mail address (RFC 5321 path limit).
pub const EMAIL_MAX_LEN: usize = 254;
/// Longest local part of an e-mail address (RFC 5321).
pub const EMAIL_LOCAL_MAX_LEN: usize = 64;
/// Longest recipient name and city, in characters.
pub const NAME_MAX_LEN: usize = 100;
/// Longest street line, in characters.
pub const LINE_MAX_LEN: usize = 200;
/// Longest postal code.
pub const POSTAL_CODE_MAX_LEN: usize = 16;
/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 10_000;
/// Largest unit price, total or amount in minor units (10^12: ten billion
/// in a two-decimal currency). With [`MAX_ITEMS`] and [`MAX_QUANTITY`] no
/// sum of valid lines can overflow an `i64`.
pub const MAX_MONEY_MINOR: i64 = 1_000_000_000_000;
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;
/// Longest free-text field (cancel reason, detail).
pub const TEXT_MAX_LEN: usize = 500;

/// What is wrong with one field: its path (`items[0].quantity`) and the
/// problem in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

/// Every violation, `; `-separated, for a DLQ reason or a log line.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The problem with a value, in words.
pub type Problem = String;

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Invisible formatting characters that reorder or hide text (bidi
/// overrides and isolates, zero-width characters, line and paragraph
/// separators): harmless to a machine, misleading to a person reading a
/// mail, a log or a terminal.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{061C}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// True for characters no text field may hold: control characters
/// (including newline and tab) and [invisible formatting](is_invisible_format).
pub fn is_forbidden_in_text(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// An id: 1–[`ID_MAX_LEN`] of `A-Z a-z 0-9 . _ : -`, starting with a
/// letter or digit, without `..`. Safe as a Kafka key, a URL path segment,
/// a file name and a log field as it is.
pub fn check_id(value: &str) -> Result<(), Problem> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > ID_MAX_LEN {
        return Err(format!("must be at most {ID_MAX_LEN} characters"));
    }
    if !value.chars().all(is_id_char) {
        return Err("may only contain letters A-Z a-z, digits and . _ : -".into());
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    if value.contains("..") {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

/// An id with every byte outside `[A-Za-z0-9_-]` percent-encoded: safe as
/// a file name and inside a Message-ID on any filesystem (`.` and `:` are
/// not), unchanged for UUIDs, and injective, so two ids never share a name.
/// Communication names its mail files with it; `choreo reconcile` finds
/// them with it.
pub fn file_safe_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn check_length(value: &str, max: usize) -> Result<(), Problem> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(())
}

fn check_characters(value: &str) -> Result<(), Problem> {
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if value.chars().any(is_invisible_format) {
        return Err("must not contain invisible formatting characters (such as U+202E)".into());
    }
    Ok(())
}

/// A required line of text (name, street, city): not blank, at most `max`
/// characters, nothing [forbidden](is_forbidden_in_text).
pub fn check_line(value: &str, max: usize) -> Result<(), Problem> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    check_length(value, max)?;
    check_characters(value)
}

/// Optional free text (a cancel reason): at most [`TEXT_MAX_LEN`]
/// characters, nothing [forbidden](is_forbidden_in_text).
pub fn check_text(value: &str) -> Result<(), Problem> {
    check_length(value, TEXT_MAX_LEN)?;
    check_characters(value)
}

/// An e-mail address in the plain ASCII form every mail library accepts:
/// `local@domain`, the local part 1–64 of `A-Z a-z 0-9 !#$%&'*+/=?^_`{|}~-`
/// and dots (not first, last or doubled), the domain at least two labels
/// of letters, digits and inner hyphens, each 1–63 long; at most
/// [`EMAIL_MAX_LEN`] in all. Quoted local parts and address literals are
/// not accepted.
pub fn check_email(value: &str) -> Result<(), Problem> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > EMAIL_MAX_LEN {
        return Err(format!("must be at most {EMAIL_MAX_LEN} characters"));
    }
    let not_email = || Problem::from("not an email address");
    let (local, domain) = value.split_once('@').ok_or_else(not_email)?;
    let local_ok = !local.is_empty()
        && local.len() <= EMAIL_LOCAL_MAX_LEN
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(not_email())
    }
}

/// 1–[`POSTAL_CODE_MAX_LEN`] of letters, digits, spaces and `-`.
pub fn check_postal_code(value: &str) -> Result<(), Problem> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > POSTAL_CODE_MAX_LEN {
        return Err(format!("must be at most {POSTAL_CODE_MAX_LEN} characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        return Err("may only contain letters, digits, spaces and -".into());
    }
    Ok(())
}

/// Two capital letters (ISO 3166-1 alpha-2 shape; whether a courier
/// serves it is the courier's business decision, not a contract matter).
pub fn check_country(value: &str) -> Result<(), Problem> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err("must be two uppercase letters (ISO 3166-1 alpha-2)".into())
    }
}

/// One of [`ISO_4217`].
pub fn check_currency(value: &str) -> Result<(), Problem> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if is_currency(value) {
        Ok(())
    } else if value.len() <= 8 && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        // Short and harmless: worth echoing, it is usually a typo.
        Err(format!("unknown currency code {value}"))
    } else {
        Err("unknown currency code (expected ISO 4217, e.g. EUR)".into())
    }
}

/// True when `code` is in [`ISO_4217`].
pub fn is_currency(code: &str) -> bool {
    ISO_4217.binary_search(&code).is_ok()
}

/// 1–[`MAX_QUANTITY`].
pub fn check_quantity(value: i64) -> Result<(), Problem> {
    if value < 1 {
        return Err("must be > 0".into());
    }
    if value > MAX_QUANTITY {
        return Err(format!("must be at most {MAX_QUANTITY}"));
    }
    Ok(())
}

/// 0–[`MAX_MONEY_MINOR`].
pub fn check_money(value: i64) -> Result<(), Problem> {
    if value < 0 {
        return Err("must be >= 0".into());
    }
    if value > MAX_MONEY_MINOR {
        return Err(format!("must be at most {MAX_MONEY_MINOR}"));
    }
    Ok(())
}

/// 1–[`MAX_ITEMS`] lines.
pub fn check_item_count(count: usize) -> Result<(), Problem> {
    if count == 0 {
        return Err("must not be empty".into());
    }
    if count > MAX_ITEMS {
        return Err(format!("must have at most {MAX_ITEMS} lines"));
    }
    Ok(())
}

/// 1–[`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII characters (`!` to `~`).
pub fn check_idempotency_key(value: &str) -> Result<(), Problem> {
    if value.is_empty() || value.len() > IDEMPOTENCY_KEY_MAX_LEN {
        return Err(format!(
            "must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters"
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be 1 to {IDEMPOTENCY_KEY_MAX_LEN} visible ASCII characters"
        ));
    }
    Ok(())
}

/// Collects violations field by field, keeping the first problem per field.
#[derive(Debug, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `result`'s problem, if any, under `field`.
    pub fn check(&mut self, field: impl Into<String>, result: Result<(), Problem>) {
        if let Err(problem) = result {
            self.add(field, problem);
        }
    }

    pub fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        let field = field.into();
        if !self.0.iter().any(|v| v.field == field) {
            self.0.push(Violation {
                field,
                problem: problem.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }

    /// `Ok` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Vec<Violation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Checks an address's five fields under `prefix` (`shipping_address`).
pub fn check_address(out: &mut Violations, prefix: &str, a: &Address) {
    out.check(format!("{prefix}.name"), check_line(&a.name, NAME_MAX_LEN));
    out.check(
        format!("{prefix}.line1"),
        check_line(&a.line1, LINE_MAX_LEN),
    );
    out.check(format!("{prefix}.city"), check_line(&a.city, NAME_MAX_LEN));
    out.check(
        format!("{prefix}.postal_code"),
        check_postal_code(&a.postal_code),
    );
    out.check(format!("{prefix}.country"), check_country(&a.country));
}

/// Checks order lines (count, sku, quantity, unit price) and that their
/// sum fits [`MAX_MONEY_MINOR`]; returns the sum when every line is valid.
pub fn check_lines(out: &mut Violations, lines: &[OrderLine]) -> Option<i64> {
    out.check("items", check_item_count(lines.len()));
    let mut total: Option<i64> = Some(0);
    for (i, line) in lines.iter().enumerate() {
        let quantity = i64::from(line.quantity);
        let sku = check_id(&line.sku);
        let qty = check_quantity(quantity);
        let price = check_money(line.unit_price_minor);
        let valid = sku.is_ok() && qty.is_ok() && price.is_ok();
        out.check(format!("items[{i}].sku"), sku);
        out.check(format!("items[{i}].quantity"), qty);
        out.check(format!("items[{i}].unit_price_minor"), price);
        total = match (total, valid) {
            (Some(t), true) => line
                .unit_price_minor
                .checked_mul(quantity)
                .and_then(|amount| t.checked_add(amount)),
            _ => None,
        };
    }
    if let Some(t) = total {
        if t > MAX_MONEY_MINOR {
            out.add(
                "items",
                format!("order total must be at most {MAX_MONEY_MINOR}"),
            );
            return None;
        }
    }
    total
}

/// Everything an `OrderPlaced` or `StockReserved` carries about the order,
/// as participants downstream of Order re-check it.
pub struct OrderFields<'a> {
    pub order_id: &'a str,
    pub customer_id: &'a str,
    pub customer_email: &'a str,
    pub items: &'a [OrderLine],
    pub total_minor: i64,
    pub currency: &'a str,
    pub shipping_address: &'a Address,
}

/// Every violation in `order`, including a total that is not the sum of
/// its lines.
pub fn check_order(order: &OrderFields<'_>) -> Vec<Violation> {
    let mut out = Violations::new();
    out.check("order_id", check_id(order.order_id));
    out.check("customer_id", check_id(order.customer_id));
    out.check("customer_email", check_email(order.customer_email));
    let sum = check_lines(&mut out, order.items);
    out.check("total_minor", check_money(order.total_minor));
    if let Some(sum) = sum {
        if sum != order.total_minor {
            out.add(
                "total_minor",
                format!("must equal the sum of the lines ({sum})"),
            );
        }
    }
    out.check("currency", check_currency(order.currency));
    check_address(&mut out, "shipping_address", order.shipping_address);
    out.into_vec()
}

/// Active ISO 4217 codes that a shop can charge in (funds and precious
/// metals, test and "no currency" codes left out), sorted for binary
/// search. Order and Payment both use this list.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> Address {
        Address {
            name: "Ada Lovelace".into(),
            line1: "Main St 1".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        }
    }

    fn line(sku: &str, quantity: i32, price: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price_minor: price,
        }
    }

    #[test]
    fn iso_list_is_sorted_and_three_capitals() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_4217
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
        assert!(check_currency("EUR").is_ok());
        assert!(check_currency("XYZ").is_err());
        assert!(check_currency("eur").is_err());
        assert!(check_currency("").is_err());
    }

    #[test]
    fn ids_used_by_the_project_are_valid() {
        for id in [
            "550e8400-e29b-41d4-a716-446655440000",
            "alice",
            "c-1",
            "o-1",
            "o3",
            "WIDGET-1",
            "SOLDOUT-0",
            "bench-rich",
            "urn:x:1",
            "a.b_c",
            "x",
        ] {
            assert_eq!(check_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn ids_at_and_over_the_length_limit() {
        assert_eq!(check_id(&"a".repeat(ID_MAX_LEN)), Ok(()));
        assert!(check_id(&"a".repeat(ID_MAX_LEN + 1))
            .unwrap_err()
            .contains("at most 64"));
        assert!(check_id(&"a".repeat(1 << 20)).is_err());
        assert_eq!(check_id("").unwrap_err(), "must not be empty");
    }

    #[test]
    fn hostile_ids_are_rejected() {
        for id in [
            "a/b",
            "../etc",
            "a..b",
            "..",
            ".",
            ".hidden",
            "-x",
            "50%25",
            "a%2Fb",
            "a b",
            "a\nb",
            "a\rb",
            "a\tb",
            "\u{1b}[2J",
            "a\u{202E}b",
            "a\u{200B}b",
            "ä",
            "a?b",
            "a#b",
            "a\\b",
            "a\0b",
        ] {
            assert!(check_id(id).is_err(), "{id:?} accepted");
        }
    }

    #[test]
    fn text_lines_reject_control_and_bidi_characters() {
        assert_eq!(check_line("Ada Lovelace", NAME_MAX_LEN), Ok(()));
        assert_eq!(check_line("Zoë Ångström-Łukasiewicz", NAME_MAX_LEN), Ok(()));
        assert_eq!(check_line("O'Brien / Flat 2", NAME_MAX_LEN), Ok(()));
        for bad in ["a\nb", "a\rb", "a\tb", "\u{1b}[31m", "a\u{7f}", "a\u{85}b"] {
            assert!(
                check_line(bad, NAME_MAX_LEN)
                    .unwrap_err()
                    .contains("control characters"),
                "{bad:?}"
            );
        }
        for bad in [
            "evil\u{202E}gnp.exe",
            "a\u{2066}b",
            "a\u{2028}b",
            "\u{FEFF}a",
        ] {
            assert!(
                check_line(bad, NAME_MAX_LEN)
                    .unwrap_err()
                    .contains("U+202E"),
                "{bad:?}"
            );
        }
        assert!(check_line("   ", NAME_MAX_LEN).is_err());
        assert!(check_line("", NAME_MAX_LEN).is_err());
    }

    #[test]
    fn text_lines_at_and_over_the_length_limit_count_characters() {
        let at = "é".repeat(NAME_MAX_LEN);
        assert_eq!(check_line(&at, NAME_MAX_LEN), Ok(()));
        let over = "é".repeat(NAME_MAX_LEN + 1);
        assert!(check_line(&over, NAME_MAX_LEN)
            .unwrap_err()
            .contains("at most 100"));
        assert_eq!(check_text(""), Ok(()));
        assert_eq!(check_text(&"x".repeat(TEXT_MAX_LEN)), Ok(()));
        assert!(check_text(&"x".repeat(TEXT_MAX_LEN + 1)).is_err());
        assert!(check_text("a\u{1b}b").is_err());
    }

    #[test]
    fn emails() {
        for ok in [
            "ada@example.com",
            "a.b+tag@sub.example.co.uk",
            "x_y-z@e-x.org",
            "o'neil@example.com",
        ] {
            assert_eq!(check_email(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "ada@example..com",
            "ada@-example.com",
            ".ada@example.com",
            "a..da@example.com",
            "ada @example.com",
            "ada@exa mple.com",
            "ada\n@example.com",
            "ada@example.com\r\nBcc: x@y.z",
            "\"ada\"@example.com",
            "ädä@example.com",
            "ada@example.com\u{202E}",
            "a/b@exa/mple.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} accepted");
        }
        let local = "a".repeat(EMAIL_LOCAL_MAX_LEN);
        assert_eq!(check_email(&format!("{local}@example.com")), Ok(()));
        assert!(check_email(&format!("{local}a@example.com")).is_err());
        let domain = format!("{}.com", vec!["a".repeat(63); 3].join("."));
        let at_limit = format!("{}@{domain}", "b".repeat(EMAIL_MAX_LEN - domain.len() - 1));
        assert_eq!(at_limit.len(), EMAIL_MAX_LEN);
        assert_eq!(check_email(&at_limit), Ok(()));
        assert!(check_email(&format!("b{at_limit}")).is_err());
    }

    #[test]
    fn postal_codes_and_countries() {
        for ok in ["10115", "SW1A 1AA", "1234-567"] {
            assert_eq!(check_postal_code(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_postal_code(&"1".repeat(POSTAL_CODE_MAX_LEN)), Ok(()));
        for bad in [
            "",
            " ",
            "1/2",
            "1%2",
            "1\n2",
            &"1".repeat(POSTAL_CODE_MAX_LEN + 1),
        ] {
            assert!(check_postal_code(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_country("DE"), Ok(()));
        for bad in ["", "de", "DEU", "D", "D\n", "ÄÖ"] {
            assert!(check_country(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_at_and_over_their_limits() {
        assert!(check_quantity(0).is_err());
        assert!(check_quantity(-1).is_err());
        assert_eq!(check_quantity(1), Ok(()));
        assert_eq!(check_quantity(MAX_QUANTITY), Ok(()));
        assert!(check_quantity(MAX_QUANTITY + 1).is_err());
        assert_eq!(check_money(0), Ok(()));
        assert_eq!(check_money(MAX_MONEY_MINOR), Ok(()));
        assert!(check_money(MAX_MONEY_MINOR + 1).is_err());
        assert!(check_money(-1).is_err());
        assert!(check_money(i64::MIN).is_err());
        assert!(check_item_count(0).is_err());
        assert_eq!(check_item_count(MAX_ITEMS), Ok(()));
        assert!(check_item_count(MAX_ITEMS + 1).is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(check_idempotency_key("k-1/2%3"), Ok(()));
        assert_eq!(check_idempotency_key(&"k".repeat(255)), Ok(()));
        for bad in ["", "a b", "a\nb", "ä", &"k".repeat(256)] {
            assert!(check_idempotency_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_valid_order_passes_and_each_bad_field_is_named() {
        let items = [line("WIDGET-1", 2, 1999)];
        let address = address();
        let good = OrderFields {
            order_id: "o-1",
            customer_id: "alice",
            customer_email: "alice@example.com",
            items: &items,
            total_minor: 3998,
            currency: "EUR",
            shipping_address: &address,
        };
        assert_eq!(check_order(&good), vec![]);

        let mut bad_address = address.clone();
        bad_address.name = "Ada\nBcc: evil@example.com".into();
        let bad_items = [line("a/b", 0, -1), line("WIDGET-1", 1, 5)];
        let long_customer = "c".repeat(1 << 20);
        let bad = OrderFields {
            order_id: "o\n1",
            customer_id: &long_customer,
            customer_email: "nope",
            items: &bad_items,
            total_minor: 7,
            currency: "XYZ",
            shipping_address: &bad_address,
        };
        let fields: Vec<String> = check_order(&bad).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "order_id",
                "customer_id",
                "customer_email",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price_minor",
                "currency",
                "shipping_address.name",
            ]
        );

        let wrong_total = OrderFields {
            total_minor: 1,
            ..good
        };
        let v = check_order(&wrong_total);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "total_minor");
    }

    #[test]
    fn totals_beyond_the_money_limit_are_rejected_without_overflow() {
        let items: Vec<OrderLine> = (0..MAX_ITEMS)
            .map(|_| line("A", MAX_QUANTITY as i32, MAX_MONEY_MINOR))
            .collect();
        let mut out = Violations::new();
        assert_eq!(check_lines(&mut out, &items), None);
        let v = out.into_vec();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].problem.contains("order total"));
    }
}
