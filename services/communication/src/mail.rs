//! Rendering a [`Notice`] into a MIME message with `lettre`: multipart
//! alternative, plain text and HTML, with the order lines, the total and,
//! for cancellations, the reason.
//!
//! Rendering is deterministic: the Message-ID is `<order.template@choreo>`,
//! the Date is the triggering event's time and the MIME boundary is derived
//! from the order and template. A redelivery therefore produces the very
//! same bytes, so rewriting the mail file after a crash changes nothing.

// Outside data must never panic a handler; tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use choreo_events::contract;

use crate::domain::{Currency, InMajorUnits, Money, Notice, Template};

/// Why a notice cannot become a mail. Data problems, never transient.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("order {order_id}: recipient {email:?} is not a mail address: {source}")]
    Recipient {
        order_id: String,
        email: String,
        source: lettre::address::AddressError,
    },
    #[error("order {order_id}: building the mail: {source}")]
    Build {
        order_id: String,
        source: lettre::error::Error,
    },
}

/// A rendered mail and the names it goes by.
#[derive(Debug, Clone)]
pub struct Mail {
    pub message: Message,
    /// `<order_id.TEMPLATE@choreo>`, as in the header.
    pub message_id: String,
    /// The recipient's address.
    pub recipient: String,
    /// `<file_safe_id>.<TEMPLATE>`: the start of the file transport's file
    /// name, which adds a hash of the Message-ID
    /// ([`transport::file_name`](crate::transport::file_name)).
    pub name: String,
}

/// The stable Message-ID of an order's mail.
pub fn message_id(notice: &Notice) -> String {
    format!(
        "<{}.{}@choreo>",
        notice.order.order_id.file_safe(),
        notice.template
    )
}

/// Renders `notice` from `from`, dated `sent_at_ms` (epoch millis; pass the
/// triggering event's `occurred_at` so a redelivery renders identically).
pub fn render(from: &Mailbox, notice: &Notice, sent_at_ms: i64) -> Result<Mail, RenderError> {
    let order = &notice.order;
    let order_id = order.order_id.to_string();
    let email = order
        .customer_email
        .parse()
        .map_err(|source| RenderError::Recipient {
            order_id: order_id.clone(),
            email: order.customer_email.clone(),
            source,
        })?;
    let to = recipient(&order.address.name, email);
    let message_id = message_id(notice);
    let stem = format!("{}.{}", order.order_id.file_safe(), notice.template);
    let date = SystemTime::UNIX_EPOCH + Duration::from_millis(sent_at_ms.max(0) as u64);

    let body = MultiPart::alternative()
        .boundary(boundary(&stem))
        .singlepart(SinglePart::plain(text_body(notice)))
        .singlepart(SinglePart::html(html_body(notice)));
    let message = Message::builder()
        .from(from.clone())
        .to(to.clone())
        .subject(header_text(&subject(notice), MAX_SUBJECT_CHARS).unwrap_or_default())
        .message_id(Some(message_id.clone()))
        .date(date)
        .multipart(body)
        .map_err(|source| RenderError::Build {
            order_id: order_id.clone(),
            source,
        })?;
    Ok(Mail {
        message,
        message_id,
        recipient: to.email.to_string(),
        name: stem,
    })
}

/// Longest display name put in the `To` header, in characters.
pub const MAX_HEADER_NAME_CHARS: usize = 64;
/// Longest `Subject`, in characters.
const MAX_SUBJECT_CHARS: usize = 200;

/// `raw` made safe for a mail header: control characters (CR and LF
/// above all, which would end the header), invisible formatting characters
/// (bidi overrides) and runs of whitespace become one space, the ends are
/// trimmed and the result is cut at `max` characters. `None` when nothing
/// is left. The order's data passed the field contract, but the mail must
/// not depend on that: a header is where a stray newline does harm.
pub fn header_text(raw: &str, max: usize) -> Option<String> {
    let mut out = String::new();
    let mut chars = 0;
    let mut gap = false;
    for c in raw.chars() {
        if c.is_whitespace() || contract::is_forbidden_in_text(c) {
            gap = !out.is_empty();
            continue;
        }
        if chars + usize::from(gap) >= max {
            break;
        }
        if gap {
            out.push(' ');
            chars += 1;
            gap = false;
        }
        out.push(c);
        chars += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// The `To` mailbox: the sanitised name with the address, or the bare
/// address when no name is left or lettre cannot write it (its header
/// writer panics on a name it cannot encode; writing it once through the
/// fallible `Display` first turns that into a fallback).
pub fn recipient(name: &str, email: Address) -> Mailbox {
    let Some(name) = header_text(name, MAX_HEADER_NAME_CHARS) else {
        return Mailbox::new(None, email);
    };
    let named = Mailbox::new(Some(name), email.clone());
    let mut probe = String::new();
    if write!(probe, "{named}").is_ok() {
        named
    } else {
        Mailbox::new(None, email)
    }
}

pub fn subject(notice: &Notice) -> String {
    let id = &notice.order.order_id;
    match notice.template {
        Template::OrderConfirmed => format!("Your order {id} is confirmed"),
        Template::OrderCancelled => format!("Your order {id} has been cancelled"),
    }
}

/// `=_` never occurs in quoted-printable or base64 output, so the boundary
/// cannot collide with an encoded body; the hash keeps it stable per mail.
fn boundary(stem: &str) -> String {
    // FNV-1a: tiny, and stable across Rust releases (unlike DefaultHasher).
    let hash = stem.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("=_choreo_{hash:016x}")
}

/// `minor` of the order's currency, as the customer reads it.
fn amount(minor: i64, currency: &Currency) -> String {
    InMajorUnits(&Money::new(minor, currency.clone())).to_string()
}

fn line_total(unit_price_minor: i64, quantity: i32, currency: &Currency) -> String {
    amount(
        unit_price_minor.saturating_mul(i64::from(quantity)),
        currency,
    )
}

fn greeting(notice: &Notice) -> String {
    let name = notice.order.address.name.trim();
    if name.is_empty() {
        "Hello,".to_owned()
    } else {
        format!("Hello {name},")
    }
}

fn lead(notice: &Notice) -> String {
    let id = &notice.order.order_id;
    match (&notice.template, &notice.reason) {
        (Template::OrderConfirmed, _) => {
            format!("thank you for your order {id}. It is confirmed, paid and on its way to you.")
        }
        (Template::OrderCancelled, Some(reason)) => format!(
            "we are sorry: your order {id} has been cancelled because {}.",
            reason.in_words()
        ),
        (Template::OrderCancelled, None) => {
            format!("we are sorry: your order {id} has been cancelled.")
        }
    }
}

fn reason_lines(notice: &Notice) -> Vec<String> {
    let Some(reason) = &notice.reason else {
        return Vec::new();
    };
    let mut lines = vec![format!("Reason: {}", reason.code)];
    if let Some(detail) = reason.detail.as_deref().filter(|d| !d.trim().is_empty()) {
        lines.push(format!("Details: {detail}"));
    }
    lines.push("Nothing stays charged for this order: any payment taken is refunded.".into());
    lines
}

fn text_body(notice: &Notice) -> String {
    let order = &notice.order;
    let currency = &order.total.currency;
    let mut out = String::new();
    let _ = writeln!(out, "{}\n\n{}\n", greeting(notice), lead(notice));
    for line in reason_lines(notice) {
        let _ = writeln!(out, "{line}");
    }
    if notice.reason.is_some() {
        out.push('\n');
    }
    let _ = writeln!(out, "Order {}:", order.order_id);
    for line in &order.lines {
        let _ = writeln!(
            out,
            "  {} x {}  at {}  = {}",
            line.quantity,
            line.sku,
            amount(line.unit_price_minor, currency),
            line_total(line.unit_price_minor, line.quantity, currency)
        );
    }
    let _ = writeln!(out, "Total: {}\n", InMajorUnits(&order.total));
    let a = &order.address;
    let _ = writeln!(
        out,
        "Shipping address:\n  {}\n  {}\n  {} {}\n  {}\n",
        a.name, a.line1, a.postal_code, a.city, a.country
    );
    out.push_str("-- \nchoreo shop\n");
    out
}

/// Everything from the order is customer input: escape it all.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_body(notice: &Notice) -> String {
    let order = &notice.order;
    let currency = &order.total.currency;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n",
        escape(&subject(notice))
    );
    let _ = writeln!(
        out,
        "<p>{}</p>\n<p>{}</p>",
        escape(&greeting(notice)),
        escape(&lead(notice))
    );
    for line in reason_lines(notice) {
        let _ = writeln!(out, "<p>{}</p>", escape(&line));
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>SKU</th><th>Quantity</th><th>Unit price</th><th>Amount</th></tr>"
    );
    for line in &order.lines {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&line.sku),
            line.quantity,
            escape(&amount(line.unit_price_minor, currency)),
            escape(&line_total(line.unit_price_minor, line.quantity, currency))
        );
    }
    let _ = writeln!(
        out,
        "<tr><td colspan=\"3\"><strong>Total</strong></td><td><strong>{}</strong></td></tr>\n</table>",
        escape(&InMajorUnits(&order.total).to_string())
    );
    let a = &order.address;
    let _ = writeln!(
        out,
        "<p>Shipping address:<br>{}<br>{}<br>{} {}<br>{}</p>",
        escape(&a.name),
        escape(&a.line1),
        escape(&a.postal_code),
        escape(&a.city),
        escape(&a.country)
    );
    out.push_str("<p>choreo shop</p>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use choreo_events::{reasons, OrderLine};

    use super::*;
    use crate::domain::tests::replica;
    use crate::domain::CancelReason;

    fn from() -> Mailbox {
        "shop@choreo.local".parse().unwrap()
    }

    fn confirmed() -> Notice {
        let mut order = replica();
        order.lines.push(OrderLine {
            sku: "<b>SKU-2</b>".into(),
            quantity: 1,
            unit_price_minor: 99,
        });
        order.total = crate::domain::tests::eur(2599);
        Notice {
            template: Template::OrderConfirmed,
            order,
            reason: None,
        }
    }

    fn cancelled() -> Notice {
        Notice {
            template: Template::OrderCancelled,
            order: replica(),
            reason: Some(CancelReason {
                code: reasons::PAYMENT_DECLINED.into(),
                detail: Some("card expired".into()),
            }),
        }
    }

    fn formatted(mail: &Mail) -> String {
        String::from_utf8(mail.message.formatted()).unwrap()
    }

    #[test]
    fn confirmation_has_subject_ids_and_both_parts_with_lines_and_total() {
        let mail = render(&from(), &confirmed(), 1_700_000_000_000).unwrap();
        assert_eq!(mail.message_id, "<o1.ORDER_CONFIRMED@choreo>");
        assert_eq!(mail.recipient, "alice@example.org");
        assert_eq!(mail.name, "o1.ORDER_CONFIRMED");
        assert_eq!(
            crate::transport::FileTransport::new("mail".into()).path_for(&mail),
            std::path::Path::new("mail/o1.ORDER_CONFIRMED.e41813ee2e6cdbcd.eml")
        );

        let raw = formatted(&mail);
        assert!(
            raw.contains("Subject: Your order o1 is confirmed\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("Message-ID: <o1.ORDER_CONFIRMED@choreo>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("From: shop@choreo.local\r\n"), "{raw}");
        assert!(raw.contains("To: Alice <alice@example.org>\r\n"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");

        let text = text_body(&confirmed());
        let html = html_body(&confirmed());
        for part in [&text, &html] {
            assert!(part.contains("SKU-1"), "{part}");
            assert!(
                part.contains("12.50 EUR") && part.contains("25.00 EUR"),
                "{part}"
            );
            assert!(part.contains("25.99 EUR"), "total in {part}");
        }
        assert!(text.contains("Total: 25.99 EUR"));
        // Customer input cannot inject markup.
        assert!(html.contains("&lt;b&gt;SKU-2&lt;/b&gt;") && !html.contains("<b>SKU-2"));
        // And both parts travel in the message.
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        assert!(raw.contains("Berlin"), "{raw}");
    }

    #[test]
    fn cancellation_states_the_reason_in_words_and_as_code() {
        let mail = render(&from(), &cancelled(), 0).unwrap();
        assert_eq!(mail.message_id, "<o1.ORDER_CANCELLED@choreo>");
        let raw = formatted(&mail);
        assert!(
            raw.contains("Subject: Your order o1 has been cancelled\r\n"),
            "{raw}"
        );
        for part in [text_body(&cancelled()), html_body(&cancelled())] {
            assert!(part.contains("the payment was declined"), "{part}");
            assert!(part.contains("PAYMENT_DECLINED") && part.contains("card expired"));
            assert!(
                part.contains("SKU-1") && part.contains("25.00 EUR"),
                "{part}"
            );
        }
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = render(&from(), &cancelled(), 1_700_000_000_000).unwrap();
        let b = render(&from(), &cancelled(), 1_700_000_000_000).unwrap();
        assert_eq!(a.message.formatted(), b.message.formatted());
        let c = render(&from(), &confirmed(), 1_700_000_000_000).unwrap();
        assert_ne!(boundary(&a.name), boundary(&c.name));
    }

    #[test]
    fn a_hostile_name_gives_a_sanitised_to_header_and_never_panics() {
        for name in [
            "Ada\nLovelace",
            "Ada\r\nBcc: evil@example.com",
            "\r\n",
            "\n",
            "Ada\u{202E}ecalevoL",
            "\u{1b}[2JAda",
            "\"Ada\" \\ <x@y.z>",
            "\u{0}\u{7f}",
            &"Ä".repeat(10_000),
        ] {
            let mut notice = confirmed();
            notice.order.address.name = name.to_owned();
            let mail = render(&from(), &notice, 0).unwrap();
            let raw = formatted(&mail);
            // Unfolded: a long encoded name continues on indented lines.
            let headers = raw
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .replace("\r\n ", " ");
            let to = headers
                .split("\r\n")
                .find(|l| l.starts_with("To: "))
                .unwrap_or_else(|| panic!("no To header for {name:?}:\n{raw}"));
            assert!(
                to.contains("<alice@example.org>") || to == "To: alice@example.org",
                "{to}"
            );
            assert!(!headers.contains("\r\nBcc:"), "header injected: {headers}");
            assert!(!headers.contains('\u{202E}'), "{name:?}");
            assert!(!headers.contains('\u{1b}'), "{name:?}");
        }
        assert_eq!(
            header_text("Ada\r\n  Lovelace\u{202E}", 64).as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(header_text("\n\t ", 64), None);
        assert_eq!(header_text(&"x".repeat(100), 64).map(|s| s.len()), Some(64));
        let bare = recipient("\r\n", "a@example.com".parse().unwrap());
        assert_eq!(bare.name, None);
        let named = recipient("  Ada  ", "a@example.com".parse().unwrap());
        assert_eq!(named.name.as_deref(), Some("Ada"));
    }

    #[test]
    fn every_contract_valid_email_is_a_lettre_address() {
        for email in [
            "ada@example.com",
            "a.b+tag@sub.example.co.uk",
            "o'neil@example.com",
            "x_y-z@e-x.org",
            "!#$%&'*+/=?^_`{|}~-@example.com",
        ] {
            assert_eq!(contract::check_email(email), Ok(()), "{email}");
            assert!(email.parse::<Address>().is_ok(), "{email}");
        }
    }

    #[test]
    fn a_bad_recipient_is_a_render_error() {
        let mut notice = confirmed();
        notice.order.customer_email = "not-an-address".into();
        assert!(matches!(
            render(&from(), &notice, 0),
            Err(RenderError::Recipient { .. })
        ));
    }
}
