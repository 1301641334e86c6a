//! One event as one line: the fields that matter for following a purchase
//! (reason, amount, tracking number, template, …), and the same as JSON.

use choreo_events::{
    AnyEvent, InventoryEvent, NotificationsEvent, OrderLine, OrderRequest, OrdersEvent,
    PaymentsEvent, ShipmentsEvent,
};
use serde_json::{json, Value};

use crate::output::{money, rfc3339_ms};
use crate::reader::Record;

/// `key=value` pairs that say what the event means.
pub fn summary(event: &AnyEvent) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut kv = |k: &str, v: String| parts.push(format!("{k}={v}"));
    match event {
        AnyEvent::Orders(OrdersEvent::OrderPlaced(e)) => {
            kv("customer", e.customer_id.clone());
            kv("items", lines(&e.items));
            kv("total", money(e.total_minor, &e.currency));
            kv("country", e.shipping_address.country.clone());
        }
        AnyEvent::Orders(OrdersEvent::OrderConfirmed(e)) => {
            kv("total", money(e.total_minor, &e.currency));
        }
        AnyEvent::Orders(OrdersEvent::OrderCancelled(e)) => {
            kv("reason", e.reason.clone());
            if let Some(d) = &e.detail {
                kv("detail", format!("{d:?}"));
            }
        }
        AnyEvent::Inventory(InventoryEvent::StockReserved(e)) => {
            kv("items", lines(&e.items));
            kv("total", money(e.total_minor, &e.currency));
        }
        AnyEvent::Inventory(InventoryEvent::StockReservationFailed(e)) => {
            kv("reason", e.reason.clone());
            kv("missing", e.missing_skus.join(","));
        }
        AnyEvent::Inventory(InventoryEvent::StockReleased(e)) => {
            kv("reason", e.reason.clone());
            kv("items", lines(&e.items));
        }
        AnyEvent::Shipments(ShipmentsEvent::ShipmentManifested(e)) => {
            kv("carrier", e.carrier.clone());
            kv("tracking", e.tracking_number.clone());
            kv("amount", money(e.amount_minor, &e.currency));
        }
        AnyEvent::Shipments(ShipmentsEvent::ShipmentManifestFailed(e)) => {
            kv("reason", e.reason.clone());
        }
        AnyEvent::Shipments(ShipmentsEvent::ShipmentCancelled(e)) => {
            kv("reason", e.reason.clone());
            kv("shipment", e.shipment_id.clone());
        }
        AnyEvent::Payments(PaymentsEvent::PaymentCompleted(e)) => {
            kv("amount", money(e.amount_minor, &e.currency));
            kv("payment", e.payment_id.clone());
        }
        AnyEvent::Payments(PaymentsEvent::PaymentFailed(e)) => {
            kv("reason", e.reason.clone());
        }
        AnyEvent::Payments(PaymentsEvent::PaymentRefunded(e)) => {
            kv("amount", money(e.amount_minor, &e.currency));
            kv("reason", e.reason.clone());
        }
        AnyEvent::Notifications(NotificationsEvent::CustomerNotified(e)) => {
            kv("template", e.template.clone());
            kv("to", e.recipient.clone());
        }
        AnyEvent::Request(OrderRequest::PlaceOrder(e)) => {
            kv("customer", e.customer_id.clone());
            kv("items", lines(&e.items));
            kv("currency", e.currency.clone());
        }
        AnyEvent::Request(OrderRequest::CancelOrder(e)) => {
            if let Some(r) = &e.reason {
                kv("reason", format!("{r:?}"));
            }
        }
    }
    // Every value came from a topic: make it safe for a terminal.
    crate::output::printable(&parts.join(" ")).into_owned()
}

fn lines(items: &[OrderLine]) -> String {
    items
        .iter()
        .map(|l| format!("{}x{}@{}", l.sku, l.quantity, l.unit_price_minor))
        .collect::<Vec<_>>()
        .join(",")
}

/// An event as `choreo watch --json` prints it: where it was, what it is,
/// and its fields in the schema's shape (what `choreo encode` reads).
pub fn event_json(record: &Record, event: &AnyEvent) -> Value {
    let m = event.metadata();
    json!({
        "time": rfc3339_ms(m.occurred_at),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "event_type": event.event_type(),
        "order_id": m.order_id,
        "producer": m.producer,
        "event_id": m.event_id,
        "causation_id": m.causation_id,
        "summary": summary(event),
        "event": event.to_json(),
    })
}

/// A short view of bytes that are not an event: text when printable,
/// otherwise hex.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    match std::str::from_utf8(bytes) {
        Ok(text)
            if text
                .chars()
                .all(|c| !c.is_control() || c == '\n' || c == '\t') =>
        {
            let cut: String = text.chars().take(MAX).collect();
            let more = if text.chars().count() > MAX {
                "…"
            } else {
                ""
            };
            format!("utf8 {cut:?}{more}")
        }
        _ => {
            let hex: Vec<String> = bytes
                .iter()
                .take(MAX / 2)
                .map(|b| format!("{b:02x}"))
                .collect();
            let more = if bytes.len() > MAX / 2 { "…" } else { "" };
            format!("hex {}{more} ({} bytes)", hex.join(""), bytes.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use choreo_events::{EventMetadata, PaymentFailed, ShipmentManifested};

    use super::*;

    #[test]
    fn summaries_name_what_matters() {
        let failed: AnyEvent = PaymentFailed {
            metadata: EventMetadata::new("o-1", "payment", None),
            reason: "INSUFFICIENT_FUNDS".into(),
        }
        .into();
        assert_eq!(summary(&failed), "reason=INSUFFICIENT_FUNDS");
        let manifested: AnyEvent = ShipmentManifested {
            metadata: EventMetadata::new("o-1", "courier", None),
            shipment_id: "s-1".into(),
            carrier: "choreo-express".into(),
            tracking_number: "TN-9".into(),
            customer_id: "bob".into(),
            amount_minor: 2_500,
            currency: "EUR".into(),
        }
        .into();
        assert_eq!(
            summary(&manifested),
            "carrier=choreo-express tracking=TN-9 amount=25.00 EUR"
        );
    }

    #[test]
    fn previews_are_text_or_hex() {
        assert_eq!(preview(b"not avro"), "utf8 \"not avro\"");
        assert_eq!(preview(&[0xde, 0xad, 0x00]), "hex dead00 (3 bytes)");
    }
}
