//! "No input may stop the saga": hostile values at every entrance, through
//! the real broker, registry and service binaries. Each defect test proves
//! the saga goes on: an order placed right after the hostile input is
//! CONFIRMED within [`NEXT_ORDER`].
//!
//! The hostile values come from the small generator below
//! ([`hostile_text`], [`hostile_id_extras`], …), kept here rather than in the
//! test kit: it encodes this file's expectations of the field contract.

use std::time::Duration;

use choreo_bus::Codec;
use choreo_cli::dlq;
use choreo_cli::output::Progress;
use choreo_cli::reconcile;
use choreo_cli::{Connection, Output};
use choreo_events::{
    reasons, Address, AnyEvent, Event, EventMetadata, OrderConfirmed, OrderLine, OrderPlaced,
    PaymentsEvent, ShipmentManifested,
};
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, topics, TestStack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

mod common;

/// How long the order placed after a hostile input may take.
const NEXT_ORDER: Duration = Duration::from_secs(10);
/// How long a hostile input's own consequence may take to show.
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------
// The generator of hostile values.

/// Strings no text field accepts: empty, blank, control characters
/// (newline, CRLF header injection, escape sequences, NUL, DEL), invisible
/// formatting (bidi override U+202E, BOM) and far too long.
fn hostile_text() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("blank", "   ".into()),
        ("newline", "Ada\nLovelace".into()),
        ("crlf-injection", "Ada\r\nBcc: evil@example.com".into()),
        ("escape-sequence", "\u{1b}[2J\u{1b}]0;pwned\u{7}".into()),
        ("nul", "a\0b".into()),
        ("del", "a\u{7f}b".into()),
        ("tab", "a\tb".into()),
        ("bidi-override", "evil\u{202E}gnp.exe".into()),
        ("bom", "\u{FEFF}Ada".into()),
        ("line-separator", "a\u{2028}b".into()),
        ("64k", "x".repeat(64 * 1024)),
    ]
}

/// Strings that are harmless text but no id, code or postal code: path
/// separators and traversal, percent escapes, URL syntax, spaces,
/// non-ASCII.
fn hostile_id_extras() -> Vec<(&'static str, String)> {
    vec![
        ("slash", "a/b".into()),
        ("dot-dot", "../etc/passwd".into()),
        ("percent", "50%2F".into()),
        ("query", "a?b=c#d".into()),
        ("backslash", "a\\b".into()),
        ("non-ascii", "Zoë".into()),
        ("too-long", "a".repeat(65)),
    ]
}

/// Numbers outside the contract or not numbers at all.
fn hostile_numbers(max: i64, min: i64) -> Vec<(&'static str, Value)> {
    vec![
        ("below-min", json!(min - 1)),
        ("above-max", json!(max + 1)),
        ("i64-max", json!(i64::MAX)),
        ("i64-min", json!(i64::MIN)),
        (
            "beyond-i64",
            serde_json::from_str("9223372036854775808").unwrap_or(Value::Null),
        ),
        ("fraction", json!(1.5)),
        ("string", json!("1")),
        ("null", Value::Null),
        ("array", json!([1])),
    ]
}

/// Every field of the POST /orders body with the hostile values for it.
fn hostile_bodies() -> Vec<(String, Value)> {
    let valid = order_body("alice", "WIDGET-1", 1, 1_250, "DE");
    let id_like = || {
        let mut v = hostile_text();
        v.extend(hostile_id_extras());
        v
    };
    let string_fields: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/customer_id", id_like()),
        ("/customer_email", {
            let mut v = id_like();
            v.push(("no-at", "alice.example.com".into()));
            v.push(("quoted", "\"a\"@example.com".into()));
            v.push((
                "header-injection",
                "a@example.com\r\nBcc: b@example.com".into(),
            ));
            v
        }),
        ("/items/0/sku", id_like()),
        ("/currency", {
            let mut v = id_like();
            v.push(("unknown", "XYZ".into()));
            v.push(("lowercase", "eur".into()));
            v
        }),
        ("/shipping_address/name", hostile_text()),
        ("/shipping_address/line1", hostile_text()),
        ("/shipping_address/city", hostile_text()),
        ("/shipping_address/postal_code", id_like()),
        ("/shipping_address/country", {
            let mut v = id_like();
            v.push(("lowercase", "de".into()));
            v.push(("three-letters", "DEU".into()));
            v
        }),
    ];
    let mut bodies = Vec::new();
    for (pointer, values) in string_fields {
        for (label, value) in values {
            let mut body = valid.clone();
            if let Some(slot) = body.pointer_mut(pointer) {
                *slot = Value::String(value);
            }
            bodies.push((format!("{pointer} {label}"), body));
        }
    }
    for (pointer, max, min) in [
        ("/items/0/quantity", 10_000, 1),
        ("/items/0/unit_price_minor", 1_000_000_000_000, 0),
    ] {
        for (label, value) in hostile_numbers(max, min) {
            let mut body = valid.clone();
            if let Some(slot) = body.pointer_mut(pointer) {
                *slot = value;
            }
            bodies.push((format!("{pointer} {label}"), body));
        }
    }
    let line = valid["items"][0].clone();
    for (label, items) in [
        ("none", json!([])),
        ("101 lines", Value::Array(vec![line.clone(); 101])),
        ("not a list", json!("WIDGET-1")),
        ("total over the money limit", {
            json!([{"sku": "WIDGET-1", "quantity": 10_000, "unit_price_minor": 1_000_000_000_000i64}])
        }),
    ] {
        let mut body = valid.clone();
        body["items"] = items;
        bodies.push((format!("/items {label}"), body));
    }
    for (label, address) in [("null", Value::Null), ("string", json!("Berlin"))] {
        let mut body = valid.clone();
        body["shipping_address"] = address;
        bodies.push((format!("/shipping_address {label}"), body));
    }
    bodies
}

// ---------------------------------------------------------------------
// Helpers.

async fn full_stack() -> anyhow::Result<TestStack> {
    TestStack::builder().all_services().start().await
}

fn conn(stack: &TestStack) -> Connection {
    Connection::new(stack.brokers(), stack.registry_url())
}

/// `POST /orders` with `body` (and an Idempotency-Key); status and JSON.
async fn post_order(
    stack: &TestStack,
    body: &Value,
    key: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .post(format!("{}/orders", stack.service_url("order")))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

async fn producer(stack: &TestStack) -> anyhow::Result<FutureProducer> {
    Ok(choreo_bus::KafkaSettings::new(stack.brokers())
        .producer_config()
        .create()?)
}

async fn produce(stack: &TestStack, topic: &str, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
    producer(stack)
        .await?
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Produces `event` Confluent-Avro encoded, keyed by its order id, as an
/// older or foreign producer that skipped the contract might.
async fn produce_event<E: Event>(stack: &TestStack, event: &E) -> anyhow::Result<()> {
    let bytes = Codec::new(&stack.registry_url()).encode(event).await?;
    produce(
        stack,
        E::TOPIC.name(),
        event.metadata().order_id.as_bytes(),
        &bytes,
    )
    .await
}

/// An order placed now completes: the saga was not stopped.
async fn next_order_confirms(api: &Api) -> anyhow::Result<String> {
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 100, "DE"))
        .await?;
    let order = api.wait_terminal(&id, NEXT_ORDER).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    Ok(id)
}

async fn mail_text(api: &Api, order_id: &str, template: &str) -> anyhow::Result<String> {
    let files = eventually("the mail file", SETTLE, || async {
        let files: Vec<_> = api
            .mail_files(order_id)
            .into_iter()
            .filter(|f| f.to_string_lossy().contains(template))
            .collect();
        Ok((!files.is_empty()).then_some(files))
    })
    .await?;
    assert_eq!(files.len(), 1, "{files:?}");
    Ok(std::fs::read_to_string(&files[0])?)
}

/// The header block of a mail, continuation lines unfolded.
fn headers(mail: &str) -> String {
    mail.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ")
}

fn placed(order_id: &str, name: &str) -> OrderPlaced {
    OrderPlaced {
        metadata: EventMetadata::new(order_id, "order", None),
        customer_id: "alice".into(),
        customer_email: "alice@example.com".into(),
        items: vec![OrderLine {
            sku: "GADGET-2".into(),
            quantity: 1,
            unit_price_minor: 100,
        }],
        total_minor: 100,
        currency: "EUR".into(),
        shipping_address: Address {
            name: name.into(),
            line1: "1 Way".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
    }
}

async fn dead_letters(stack: &TestStack, service: &str) -> anyhow::Result<Vec<dlq::DeadLetter>> {
    dlq::list(&conn(stack), Some(service), &mut Progress::hidden()).await
}

// ---------------------------------------------------------------------
// The tests.

/// Every field of the HTTP body, every hostile value: 422 naming the
/// field (or the body, for a value of the wrong type), never 5xx, never 202.
#[tokio::test]
async fn every_hostile_body_field_is_refused_with_422() -> anyhow::Result<()> {
    let stack = TestStack::builder().services(&["order"]).start().await?;
    let bodies = hostile_bodies();
    assert!(bodies.len() > 150, "the generator shrank: {}", bodies.len());
    let mut wrong = Vec::new();
    for (label, body) in &bodies {
        let (status, answer) = post_order(&stack, body, None).await?;
        let field = label.split(' ').next().unwrap_or_default();
        // `/items/0/sku` → `items[0].sku`, `/shipping_address/name` → …
        let path = field
            .trim_start_matches('/')
            .replace("/0/", "[0].")
            .replace('/', ".");
        let named = answer["fields"].get(&path).is_some()
            || answer["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("invalid order"));
        if status != 422 || !named {
            wrong.push(format!("{label}: {status} {answer}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as expected:\n{}",
        wrong.join("\n")
    );

    // The generator's base body is valid: the test can tell the difference.
    let (status, answer) = post_order(
        &stack,
        &order_body("alice", "WIDGET-1", 1, 1_250, "DE"),
        None,
    )
    .await?;
    assert_eq!(status, 202, "{answer}");
    stack.shutdown().await;
    Ok(())
}

/// (a) A newline in `shipping_address.name`: Order refuses it with 422;
/// an `OrderPlaced` that carries one anyway (an older producer) is mailed
/// with a sanitised `To` header, and Communication lives on.
#[tokio::test]
async fn a_newline_in_the_name_does_not_kill_communication() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);

    let mut body = order_body("alice", "WIDGET-1", 1, 100, "DE");
    body["shipping_address"]["name"] = json!("Ada\r\nBcc: evil@example.com");
    let (status, answer) = post_order(&stack, &body, None).await?;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["fields"]["shipping_address.name"]
            .as_str()
            .is_some_and(|p| p.contains("control characters")),
        "{answer}"
    );

    // Past Order: the event as the defect report had it, confirmed.
    let order_id = format!("hostile-a-{}", uuid::Uuid::new_v4());
    let hostile = placed(&order_id, "Ada\r\nBcc: evil@example.com");
    produce_event(&stack, &hostile).await?;
    let confirmed = OrderConfirmed {
        metadata: EventMetadata::caused_by(&hostile.metadata, "order"),
        total_minor: 100,
        currency: "EUR".into(),
    };
    produce_event(&stack, &confirmed).await?;
    let mail = mail_text(&api, &order_id, "ORDER_CONFIRMED").await?;
    let headers = headers(&mail);
    let to = headers
        .lines()
        .find(|l| l.starts_with("To:"))
        .unwrap_or_default();
    assert!(to.contains("alice@example.com"), "{headers}");
    assert!(!headers.contains("\nBcc:"), "header injected:\n{headers}");
    assert!(
        !headers
            .lines()
            .any(|l| l.contains("evil@example.com") && !l.starts_with("To:")),
        "{headers}"
    );

    // Communication is alive and the saga goes on.
    let next = next_order_confirms(&api).await?;
    mail_text(&api, &next, "ORDER_CONFIRMED").await?;
    assert_eq!(api.notifications(&order_id).await?.len(), 1);
    // One dead letter, the test's own doing: Inventory refused to reserve
    // for the injected order (its name breaks the contract) and Order, which
    // never placed it, dead-letters that answer.
    common::assert_reconciled(&stack, 1).await?;
    stack.shutdown().await;
    Ok(())
}

/// (b) One contract everywhere: Order refuses what Payment would refuse;
/// Payment answers a charge request it cannot act on with `PaymentFailed`
/// instead of a dead letter; an order with an unusual but valid id is
/// mailed; a command with a control character in its id is dead-lettered.
#[tokio::test]
async fn services_agree_on_what_is_valid() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);

    let mut huge = order_body("alice", "WIDGET-1", 1, 100, "DE");
    huge["customer_id"] = json!("c".repeat(1 << 20));
    let (status, answer) = post_order(&stack, &huge, None).await?;
    assert_eq!(status, 422, "{}", answer["error"]);
    assert!(
        answer["fields"]["customer_id"].is_string(),
        "{}",
        answer["fields"]
    );
    let mut xyz = order_body("alice", "WIDGET-1", 1, 100, "DE");
    xyz["currency"] = json!("XYZ");
    let (status, answer) = post_order(&stack, &xyz, None).await?;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["fields"]["currency"].is_string(), "{answer}");

    // A charge request outside the contract fails the payment at once.
    let bad_charge = format!("hostile-b-{}", uuid::Uuid::new_v4());
    produce_event(
        &stack,
        &ShipmentManifested {
            metadata: EventMetadata::new(&bad_charge, "courier", None),
            shipment_id: uuid::Uuid::new_v4().to_string(),
            carrier: "x".into(),
            tracking_number: "CH0000000000".into(),
            customer_id: "c".repeat(300),
            amount_minor: 100,
            currency: "XYZ".into(),
        },
    )
    .await?;
    let failed = eventually("PaymentFailed for the invalid charge", SETTLE, || async {
        let events = topics::order_events(
            &stack.brokers(),
            &stack.registry_url(),
            "payments",
            &bad_charge,
        )
        .await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    assert!(
        matches!(&failed[..], [AnyEvent::Payments(PaymentsEvent::PaymentFailed(f))]
            if f.reason == reasons::INVALID_DATA),
        "{failed:?}"
    );
    assert!(dead_letters(&stack, "payment").await?.is_empty());

    // A PlaceOrder command whose id holds a newline: dead-lettered with
    // its reason, nothing placed.
    let cmd = json!({
        "type": "PlaceOrder", "order_id": "b\n1", "customer_id": "alice",
        "customer_email": "alice@example.com",
        "items": [{"sku": "WIDGET-1", "quantity": 1, "unit_price_minor": 100}],
        "currency": "EUR",
        "shipping_address": {"name": "Ada", "line1": "1 Way", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"}
    });
    produce(
        &stack,
        "order-requests",
        b"b\n1",
        cmd.to_string().as_bytes(),
    )
    .await?;
    let letters = eventually("the command in dlq.order", SETTLE, || async {
        let letters: Vec<_> = dead_letters(&stack, "order")
            .await?
            .into_iter()
            .filter(|l| l.source_topic.as_deref() == Some("order-requests"))
            .collect();
        Ok((!letters.is_empty()).then_some(letters))
    })
    .await?;
    assert!(
        letters[0].reason.contains("order_id"),
        "{}",
        letters[0].reason
    );

    // An unusual but valid id goes all the way, cancellation mail included.
    let odd = format!(
        "b:odd.id_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut cmd = cmd.clone();
    cmd["order_id"] = json!(odd);
    cmd["items"] = json!([{"sku": "SOLDOUT-0", "quantity": 1, "unit_price_minor": 100}]);
    produce(
        &stack,
        "order-requests",
        odd.as_bytes(),
        cmd.to_string().as_bytes(),
    )
    .await?;
    let order = eventually("the odd-id order", SETTLE, || async {
        Ok(api.order(&odd).await.ok())
    })
    .await?;
    assert_eq!(order["order_id"], odd.as_str());
    let order = api.wait_terminal(&odd, SETTLE).await?;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    mail_text(&api, &odd, "ORDER_CANCELLED").await?;

    next_order_confirms(&api).await?;
    // Three dead letters, all the test's own doing: the command with a
    // newline in its id, and the ShipmentManifested and PaymentFailed of a
    // charge for an order Order never placed.
    common::assert_reconciled(&stack, 3).await?;
    stack.shutdown().await;
    Ok(())
}

/// (c) The CLI: `dlq list` escapes a key full of escape sequences and
/// newlines; `reconcile` runs to its report with such a dead letter about.
#[tokio::test]
async fn the_cli_escapes_what_it_prints_and_reconcile_completes() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);
    let key = "\u{1b}[2J\u{1b}]0;pwned\u{7}a/../b\n2026-01-01T00:00:00Z INFO forged line";
    let cmd = json!({"type": "CancelOrder", "order_id": key, "reason": "\u{1b}[31mred"});
    produce(
        &stack,
        "order-requests",
        key.as_bytes(),
        cmd.to_string().as_bytes(),
    )
    .await?;
    eventually("the command in dlq.order", SETTLE, || async {
        Ok((!dead_letters(&stack, "order").await?.is_empty()).then_some(()))
    })
    .await?;

    let mut out = Vec::new();
    dlq::run_list(
        &conn(&stack),
        Some("order"),
        Output::plain(),
        &mut out,
        &mut Progress::hidden(),
    )
    .await?;
    let listed = String::from_utf8(out)?;
    assert!(
        !listed.contains('\u{1b}') && !listed.contains('\u{7}'),
        "{listed:?}"
    );
    assert!(
        !listed
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z INFO")),
        "a key forged a line: {listed}"
    );
    assert!(listed.contains("key \\u{1b}[2J"), "{listed}");

    let id = next_order_confirms(&api).await?;
    mail_text(&api, &id, "ORDER_CONFIRMED").await?;
    let reconciler = common::reconciler(&stack)?;
    // With the one dead letter expected, every invariant holds.
    let report = reconciler
        .clone()
        .expect_dlq(1)
        .run_settled(Duration::from_secs(20), &mut Progress::hidden())
        .await?;
    assert!(report.is_clean(), "{:#?}", report.violations);
    assert_eq!(report.for_order(&id).count(), 0);
    // Without, the dead letter is reported under its key — escaped.
    let report = reconciler.run().await?;
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    let mut printed = Vec::new();
    reconcile::print_report(&report, Output::plain(), &mut printed)?;
    let printed = String::from_utf8(printed)?;
    assert!(!printed.contains('\u{1b}'), "{printed:?}");
    assert!(
        !printed
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z INFO")),
        "{printed}"
    );
    stack.shutdown().await;
    Ok(())
}

/// (d) A reused Idempotency-Key with another body is refused with 422
/// naming the key; the same body still answers the first order.
#[tokio::test]
async fn a_reused_idempotency_key_with_another_body_is_refused() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);
    let key = format!("idem-{}", uuid::Uuid::new_v4());
    let first = order_body("alice", "WIDGET-1", 1, 100, "DE");
    let mut other = first.clone();
    other["items"][0]["quantity"] = json!(5);

    let (status, a) = post_order(&stack, &first, Some(&key)).await?;
    assert_eq!(status, 202, "{a}");
    let (status, b) = post_order(&stack, &other, Some(&key)).await?;
    assert_eq!(status, 422, "{b}");
    assert!(b["fields"]["Idempotency-Key"].is_string(), "{b}");
    assert!(
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("different body")),
        "{b}"
    );
    let (status, again) = post_order(&stack, &first, Some(&key)).await?;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["order_id"], a["order_id"]);

    let id = a["order_id"].as_str().unwrap_or_default().to_owned();
    let order = api.wait_terminal(&id, NEXT_ORDER).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["items"][0]["quantity"], 1, "the first body stands");
    next_order_confirms(&api).await?;
    common::assert_reconciled(&stack, 0).await?;
    stack.shutdown().await;
    Ok(())
}
