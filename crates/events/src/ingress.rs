//! Plain-JSON commands on `order-requests`, so a person can place or
//! cancel an order by typing one line into kcat:
//!
//! ```text
//! {"type":"PlaceOrder","customer_id":"c-1","customer_email":"c@example.com",
//!  "items":[{"sku":"SKU-1","quantity":1,"unit_price_minor":1999}],"currency":"EUR",
//!  "shipping_address":{"name":"Ada","line1":"Main St 1","city":"Berlin","postal_code":"10115","country":"DE"}}
//! {"type":"CancelOrder","order_id":"...","reason":"changed my mind"}
//! ```
//!
//! Only the shape is checked here; business rules (quantities, e-mail
//! syntax) belong to the order service. Ids missing from the JSON are
//! derived from the message's position (the caller's `fallback_event_id`)
//! with UUID v5, so a redelivered message maps to the same command and the
//! order service's inbox drops it.

use serde::Deserialize;
use serde_json::{Map, Value as JsonValue};
use uuid::Uuid;

use crate::requests::{CancelOrder, PlaceOrder};
use crate::{Address, Error, EventMetadata, OrderLine, OrderRequest, Result};

/// `producer` of commands that arrived as JSON.
pub const INGRESS_PRODUCER: &str = "order-requests";

const REQUEST_TYPES: &str = "PlaceOrder, CancelOrder";

/// UUID v5 namespace of ids derived by the ingress. Fixed forever: changing
/// it would give redelivered old messages new ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1b_3f0e_8a47_4d59_9c2e_58f1_a0d3_7b64);

// Nested types reuse `OrderLine` and `Address`: all their fields are
// required, so a misspelt nested field already fails as "missing field".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrderJson {
    order_id: Option<String>,
    request_id: Option<String>,
    customer_id: String,
    customer_email: String,
    items: Vec<OrderLine>,
    currency: String,
    shipping_address: Address,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelOrderJson {
    order_id: String,
    reason: Option<String>,
}

impl OrderRequest {
    /// Reads a JSON command (see the [module docs](crate::ingress)).
    /// `fallback_event_id` identifies the message stably across
    /// redeliveries, e.g. `order-requests/3/1042` (topic/partition/offset).
    pub fn from_json_bytes(bytes: &[u8], fallback_event_id: &str) -> Result<OrderRequest> {
        let json: JsonValue = serde_json::from_slice(bytes).map_err(Error::NotJson)?;
        let JsonValue::Object(mut fields) = json else {
            return Err(Error::invalid_json(
                "order request",
                format!("expected a JSON object with a `type` ({REQUEST_TYPES})"),
            ));
        };
        let request_type = match fields.remove("type") {
            None => {
                return Err(Error::MissingType {
                    expected: REQUEST_TYPES,
                })
            }
            Some(JsonValue::String(request_type)) => request_type,
            Some(other) => {
                return Err(Error::invalid_json(
                    "order request",
                    format!("`type` must be a string, got {other}"),
                ))
            }
        };
        let event_id = derived_id("event", fallback_event_id);
        match request_type.as_str() {
            "PlaceOrder" => {
                let json: PlaceOrderJson = parse("PlaceOrder", fields)?;
                let order_id = json
                    .order_id
                    .unwrap_or_else(|| derived_id("order", fallback_event_id));
                Ok(OrderRequest::PlaceOrder(PlaceOrder {
                    metadata: ingress_metadata(event_id, order_id),
                    request_id: json.request_id,
                    customer_id: json.customer_id,
                    customer_email: json.customer_email,
                    items: json.items,
                    currency: json.currency,
                    shipping_address: json.shipping_address,
                }))
            }
            "CancelOrder" => {
                let json: CancelOrderJson = parse("CancelOrder", fields)?;
                Ok(OrderRequest::CancelOrder(CancelOrder {
                    metadata: ingress_metadata(event_id, json.order_id),
                    reason: json.reason,
                }))
            }
            _ => Err(Error::UnknownType {
                got: request_type,
                expected: REQUEST_TYPES,
            }),
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    fields: Map<String, JsonValue>,
) -> Result<T> {
    serde_json::from_value(JsonValue::Object(fields)).map_err(|e| Error::invalid_json(what, e))
}

/// A stable UUID for `fallback`; `kind` keeps the order id and the event id
/// of the same message apart.
fn derived_id(kind: &str, fallback: &str) -> String {
    Uuid::new_v5(&ID_NAMESPACE, format!("{kind}:{fallback}").as_bytes()).to_string()
}

fn ingress_metadata(event_id: String, order_id: String) -> EventMetadata {
    EventMetadata {
        event_id,
        occurred_at: chrono::Utc::now().timestamp_millis(),
        order_id,
        causation_id: None,
        producer: INGRESS_PRODUCER.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: &str = r#"{
        "type": "PlaceOrder",
        "request_id": "req-7",
        "customer_id": "c-1",
        "customer_email": "ada@example.com",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1999}],
        "currency": "EUR",
        "shipping_address": {"name": "Ada", "line1": "Main St 1", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"}
    }"#;

    fn place(bytes: &str, fallback: &str) -> PlaceOrder {
        match OrderRequest::from_json_bytes(bytes.as_bytes(), fallback).unwrap() {
            OrderRequest::PlaceOrder(place) => place,
            other => panic!("expected PlaceOrder, got {other:?}"),
        }
    }

    fn error(bytes: &str) -> String {
        OrderRequest::from_json_bytes(bytes.as_bytes(), "p/0/1")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn place_order_is_read_with_derived_ids() {
        let cmd = place(PLACE, "order-requests/0/42");
        assert_eq!(cmd.request_id.as_deref(), Some("req-7"));
        assert_eq!(cmd.customer_id, "c-1");
        assert_eq!(cmd.customer_email, "ada@example.com");
        assert_eq!(
            cmd.items,
            vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 1999
            }]
        );
        assert_eq!(cmd.currency, "EUR");
        assert_eq!(cmd.shipping_address.country, "DE");
        assert_eq!(cmd.metadata.producer, INGRESS_PRODUCER);
        assert_eq!(cmd.metadata.causation_id, None);
        let order_id = Uuid::parse_str(&cmd.metadata.order_id).unwrap();
        let event_id = Uuid::parse_str(&cmd.metadata.event_id).unwrap();
        assert_eq!(order_id.get_version_num(), 5);
        assert_ne!(order_id, event_id);
        // Must also be encodable: event_id has to satisfy logicalType uuid.
        crate::Event::to_avro_value(&cmd).unwrap();
    }

    #[test]
    fn same_fallback_gives_same_ids_and_another_gives_others() {
        let first = place(PLACE, "order-requests/0/42");
        let again = place(PLACE, "order-requests/0/42");
        let other = place(PLACE, "order-requests/0/43");
        assert_eq!(first.metadata.order_id, again.metadata.order_id);
        assert_eq!(first.metadata.event_id, again.metadata.event_id);
        assert_ne!(first.metadata.order_id, other.metadata.order_id);
        assert_ne!(first.metadata.event_id, other.metadata.event_id);
    }

    #[test]
    fn explicit_order_id_wins() {
        let json = PLACE.replacen("\"request_id\"", "\"order_id\": \"o-9\", \"request_id\"", 1);
        assert_eq!(place(&json, "x").metadata.order_id, "o-9");
    }

    #[test]
    fn cancel_order_is_read() {
        let got = OrderRequest::from_json_bytes(
            br#"{"type":"CancelOrder","order_id":"o-1","reason":"changed my mind"}"#,
            "order-requests/1/7",
        )
        .unwrap();
        let OrderRequest::CancelOrder(cmd) = got else {
            panic!("expected CancelOrder, got {got:?}");
        };
        assert_eq!(cmd.metadata.order_id, "o-1");
        assert_eq!(cmd.reason.as_deref(), Some("changed my mind"));
        assert_eq!(
            cmd.metadata.event_id,
            derived_id("event", "order-requests/1/7")
        );

        let bare =
            OrderRequest::from_json_bytes(br#"{"type":"CancelOrder","order_id":"o-1"}"#, "f")
                .unwrap();
        assert!(matches!(
            bare,
            OrderRequest::CancelOrder(CancelOrder { reason: None, .. })
        ));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let missing_type = error(r#"{"order_id":"o-1"}"#);
        assert!(
            missing_type.contains("missing field `type`"),
            "{missing_type}"
        );

        let unknown = error(r#"{"type":"RefundOrder","order_id":"o-1"}"#);
        assert!(unknown.contains("unknown type `RefundOrder`"), "{unknown}");
        assert!(unknown.contains("PlaceOrder, CancelOrder"), "{unknown}");

        let not_json = OrderRequest::from_json_bytes(b"\0\0\0\0\x01binary", "f").unwrap_err();
        assert!(matches!(not_json, Error::NotJson(_)), "{not_json}");
        assert!(not_json.to_string().starts_with("not JSON"));

        let not_object = error(r#"["PlaceOrder"]"#);
        assert!(
            not_object.contains("expected a JSON object"),
            "{not_object}"
        );

        let no_order = error(r#"{"type":"CancelOrder"}"#);
        assert!(no_order.contains("CancelOrder"), "{no_order}");
        assert!(no_order.contains("missing field `order_id`"), "{no_order}");

        let no_email = error(&PLACE.replace("\"customer_email\": \"ada@example.com\",", ""));
        assert!(
            no_email.contains("missing field `customer_email`"),
            "{no_email}"
        );

        let typo = error(&PLACE.replace("\"request_id\"", "\"requestid\""));
        assert!(typo.contains("unknown field `requestid`"), "{typo}");

        let bad_type = error(r#"{"type":7}"#);
        assert!(bad_type.contains("`type` must be a string"), "{bad_type}");
    }
}
