//! The whole saga, end to end: a real Apache Kafka broker, `choreo-registry` and
//! all five service binaries, started fresh per test on free ports. Every
//! assertion reads an observable outcome: the services' HTTP answers, the
//! topics, and the mail files.

use std::time::Duration;

use choreo_events::{AnyEvent, NotificationsEvent, OrdersEvent};
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, topics, TestStack};
use serde_json::Value;

const SAGA: Duration = Duration::from_secs(60);

async fn full_stack() -> anyhow::Result<TestStack> {
    TestStack::builder().all_services().start().await
}

/// A number field of a JSON answer, or an error naming what is missing.
fn number(v: &Value, field: &str) -> anyhow::Result<i64> {
    v[field]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no number `{field}` in {v}"))
}

async fn stock(api: &Api, sku: &str) -> anyhow::Result<(i64, i64, i64)> {
    let s = api.stock(sku).await?;
    Ok((
        number(&s, "available")?,
        number(&s, "reserved")?,
        number(&s, "committed")?,
    ))
}

async fn balance(api: &Api, customer: &str) -> anyhow::Result<i64> {
    number(&api.account(customer).await?, "balance_minor")
}

/// Waits until a mail of `template` exists for the order, then checks for a
/// while that it stays the only one (a duplicate send comes after the
/// first), and returns its text.
async fn one_mail(api: &Api, order_id: &str, template: &str) -> anyhow::Result<String> {
    eventually("the mail file", SAGA, || async {
        Ok((!api.mail_files(order_id).is_empty()).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let files = api.mail_files(order_id);
    assert_eq!(files.len(), 1, "exactly one mail for {order_id}: {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains(template), "mail {name} is a {template}");
    Ok(std::fs::read_to_string(&files[0])?)
}

async fn terminal_events(stack: &TestStack, order_id: &str) -> anyhow::Result<Vec<&'static str>> {
    let events =
        topics::order_events(&stack.brokers(), &stack.registry_url(), "orders", order_id).await?;
    Ok(events
        .iter()
        .filter_map(|e| match e {
            AnyEvent::Orders(OrdersEvent::OrderConfirmed(_)) => Some("OrderConfirmed"),
            AnyEvent::Orders(OrdersEvent::OrderCancelled(_)) => Some("OrderCancelled"),
            _ => None,
        })
        .collect())
}

#[tokio::test]
async fn happy_path_confirms_charges_ships_and_mails_once() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);
    let before = stock(&api, "WIDGET-1").await?;
    let balance_before = balance(&api, "alice").await?;

    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 2, 1_250, "DE"))
        .await?;
    let order = api.wait_terminal(&id, SAGA).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["total_minor"], 2_500);

    // Stock: reserved, then committed on confirmation.
    let after = eventually("stock committed", SAGA, || async {
        let s = stock(&api, "WIDGET-1").await?;
        Ok((s.2 == before.2 + 2).then_some(s))
    })
    .await?;
    assert_eq!(after, (before.0 - 2, before.1, before.2 + 2));

    let shipment = api.shipment(&id).await?.expect("a shipment");
    assert_eq!(shipment["status"], "MANIFESTED", "{shipment}");
    assert!(shipment["tracking_number"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    assert_eq!(balance(&api, "alice").await?, balance_before - 2_500);
    let payment = api.payment(&id).await?.expect("a payment");
    assert_eq!(payment["net_charge_minor"], 2_500, "{payment}");

    let mail = one_mail(&api, &id, "ORDER_CONFIRMED").await?;
    assert!(
        mail.contains("alice@example.com"),
        "mail is addressed to the customer"
    );
    assert!(
        mail.contains(&format!("Message-ID: <{id}.ORDER_CONFIRMED@choreo>"))
            || mail.contains(&format!("Message-Id: <{id}.ORDER_CONFIRMED@choreo>")),
        "{mail}"
    );

    let notified = eventually("CustomerNotified on notifications", SAGA, || async {
        let events = topics::order_events(
            &stack.brokers(),
            &stack.registry_url(),
            "notifications",
            &id,
        )
        .await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    assert_eq!(notified.len(), 1);
    assert!(matches!(
        &notified[0],
        AnyEvent::Notifications(NotificationsEvent::CustomerNotified(n)) if n.template == "ORDER_CONFIRMED"
    ));
    assert_eq!(terminal_events(&stack, &id).await?, ["OrderConfirmed"]);
    let timeline: Vec<&str> = order["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["event_type"].as_str()).collect())
        .unwrap_or_default();
    for step in [
        "OrderPlaced",
        "StockReserved",
        "ShipmentManifested",
        "PaymentCompleted",
        "OrderConfirmed",
    ] {
        assert!(
            timeline.contains(&step),
            "timeline has {step}: {timeline:?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

/// What was held before an order, to compare with after its cancellation.
struct Before<'a> {
    sku: &'a str,
    stock: (i64, i64, i64),
    customer: &'a str,
    balance: i64,
}

/// What every cancelled order must look like once the saga settled.
async fn assert_cancelled_and_undone(
    stack: &TestStack,
    api: &Api,
    id: &str,
    reason: &str,
    before: Before<'_>,
) -> anyhow::Result<Value> {
    let Before {
        sku,
        stock: stock_before,
        customer,
        balance: balance_before,
    } = before;
    let order = api.wait_terminal(id, SAGA).await?;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["reason"], reason, "{order}");
    let mail = one_mail(api, id, "ORDER_CANCELLED").await?;
    assert!(mail.contains(&format!("{customer}@example.com")));
    eventually("stock back to where it was", SAGA, || async {
        Ok((stock(api, sku).await? == stock_before).then_some(()))
    })
    .await?;
    // What each participant keeps of a cancelled order depends on how far
    // it got; each case is stated, so an API that answers nothing cannot
    // pass for "nothing held".
    let shipment = api
        .shipment(id)
        .await?
        .map(|s| s["status"].as_str().unwrap_or("?").to_owned());
    let payment = api.payment(id).await?;
    let payment_status = payment
        .as_ref()
        .map(|p| p["status"].as_str().unwrap_or("?").to_owned());
    let (shipments, payments): (&[Option<&str>], &[Option<&str>]) = match reason {
        "OUT_OF_STOCK" => (&[None, Some("VOID")], &[None, Some("VOID")]),
        "SHIPPING_UNAVAILABLE" => (&[Some("FAILED")], &[None, Some("VOID")]),
        "PAYMENT_DECLINED" => (&[Some("CANCELLED")], &[Some("FAILED")]),
        other => anyhow::bail!("no expectation for reason {other}"),
    };
    assert!(
        shipments.contains(&shipment.as_deref()),
        "{reason}: shipment {shipment:?}, expected one of {shipments:?}"
    );
    assert!(
        payments.contains(&payment_status.as_deref()),
        "{reason}: payment {payment:?}, expected one of {payments:?}"
    );
    if let Some(p) = &payment {
        assert_eq!(p["net_charge_minor"], 0, "{reason}: {p}");
    }
    assert_eq!(
        balance(api, customer).await?,
        balance_before,
        "no net charge"
    );
    assert_eq!(terminal_events(stack, id).await?, ["OrderCancelled"]);
    Ok(order)
}

#[tokio::test]
async fn every_compensation_ends_cancelled_with_nothing_held() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);

    // Out of stock: nothing was ever reserved.
    let s = stock(&api, "SOLDOUT-0").await?;
    let b = balance(&api, "alice").await?;
    let id = api
        .place_order(&order_body("alice", "SOLDOUT-0", 1, 100, "DE"))
        .await?;
    assert_cancelled_and_undone(
        &stack,
        &api,
        &id,
        "OUT_OF_STOCK",
        Before {
            sku: "SOLDOUT-0",
            stock: s,
            customer: "alice",
            balance: b,
        },
    )
    .await?;
    // The courier only ever saw the cancellation: a tombstone, no shipment.
    let shipment = api.shipment(&id).await?;
    assert!(
        shipment.as_ref().is_none_or(|s| s["status"] == "VOID"),
        "no shipment for an out-of-stock order: {shipment:?}"
    );

    // Unserved country: reserved, manifest failed, released.
    let s = stock(&api, "GADGET-2").await?;
    let id = api
        .place_order(&order_body("alice", "GADGET-2", 3, 700, "JP"))
        .await?;
    assert_cancelled_and_undone(
        &stack,
        &api,
        &id,
        "SHIPPING_UNAVAILABLE",
        Before {
            sku: "GADGET-2",
            stock: s,
            customer: "alice",
            balance: b,
        },
    )
    .await?;
    assert_eq!(
        api.shipment(&id).await?.expect("a shipment record")["status"],
        "FAILED"
    );

    // Insufficient funds: reserved, manifested, payment failed, shipment
    // cancelled, stock released.
    let s = stock(&api, "GIZMO-3").await?;
    let bob = balance(&api, "bob").await?;
    let id = api
        .place_order(&order_body("bob", "GIZMO-3", 1, 10_000, "FR"))
        .await?;
    assert_cancelled_and_undone(
        &stack,
        &api,
        &id,
        "PAYMENT_DECLINED",
        Before {
            sku: "GIZMO-3",
            stock: s,
            customer: "bob",
            balance: bob,
        },
    )
    .await?;
    assert_eq!(
        api.shipment(&id).await?.expect("a shipment record")["status"],
        "CANCELLED"
    );
    assert_eq!(
        api.payment(&id).await?.expect("a payment record")["status"],
        "FAILED"
    );

    // Blocked customer: the same backward chain.
    let s = stock(&api, "GIZMO-3").await?;
    let m = balance(&api, "mallory").await?;
    let id = api
        .place_order(&order_body("mallory", "GIZMO-3", 1, 100, "NL"))
        .await?;
    assert_cancelled_and_undone(
        &stack,
        &api,
        &id,
        "PAYMENT_DECLINED",
        Before {
            sku: "GIZMO-3",
            stock: s,
            customer: "mallory",
            balance: m,
        },
    )
    .await?;
    assert_eq!(
        api.shipment(&id).await?.expect("a shipment record")["status"],
        "CANCELLED"
    );

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn deadline_cancels_and_a_late_courier_leaves_nothing_held() -> anyhow::Result<()> {
    let mut stack = TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "3000")
        .start()
        .await?;
    let api = Api::new(&stack);
    let s = stock(&api, "WIDGET-1").await?;
    let b = balance(&api, "alice").await?;

    stack.stop_service("courier", 0).await;
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 999, "DE"))
        .await?;
    let order = api.wait_terminal(&id, SAGA).await?;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["reason"], "TIMEOUT");

    // The courier comes back and finds both StockReserved and
    // OrderCancelled waiting: whatever order it takes them in, nothing
    // may stay held.
    stack.restart_service("courier", 0).await?;
    eventually("the courier to settle the order", SAGA, || async {
        Ok(api
            .shipment(&id)
            .await?
            .filter(|s| matches!(s["status"].as_str(), Some("CANCELLED" | "VOID"))))
    })
    .await?;
    eventually("stock released", SAGA, || async {
        Ok((stock(&api, "WIDGET-1").await? == s).then_some(()))
    })
    .await?;
    if let Some(p) = api.payment(&id).await? {
        assert_eq!(p["net_charge_minor"], 0, "{p}");
    }
    assert_eq!(balance(&api, "alice").await?, b);
    one_mail(&api, &id, "ORDER_CANCELLED").await?;
    assert_eq!(terminal_events(&stack, &id).await?, ["OrderCancelled"]);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn customer_cancels_a_pending_order_but_not_a_confirmed_one() -> anyhow::Result<()> {
    let mut stack = full_stack().await?;
    let api = Api::new(&stack);

    let confirmed = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 100, "GB"))
        .await?;
    assert_eq!(
        api.wait_terminal(&confirmed, SAGA).await?["status"],
        "CONFIRMED"
    );
    let (status, body) = api.cancel(&confirmed).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().is_some(),
        "409 explains itself: {body}"
    );

    // The confirmed order's reservation is committed asynchronously; wait
    // for it so the stock figures below are settled.
    eventually("the confirmed order's stock committed", SAGA, || async {
        Ok(api
            .reservation(&confirmed)
            .await?
            .filter(|r| r["status"] == "COMMITTED"))
    })
    .await?;
    let s = stock(&api, "WIDGET-1").await?;
    stack.stop_service("courier", 0).await;
    let pending = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 100, "GB"))
        .await?;
    // Wait until the stock is reserved, so the cancel has something to undo.
    eventually("the reservation", SAGA, || async {
        Ok(api
            .reservation(&pending)
            .await?
            .filter(|r| r["status"] == "RESERVED"))
    })
    .await?;
    let (status, body) = api.cancel(&pending).await?;
    assert_eq!(status, 202, "{body}");
    let order = api.wait_terminal(&pending, SAGA).await?;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(order["reason"], "CUSTOMER_CANCELLED");
    eventually("stock released", SAGA, || async {
        Ok((stock(&api, "WIDGET-1").await? == s).then_some(()))
    })
    .await?;
    one_mail(&api, &pending, "ORDER_CANCELLED").await?;
    let (status, _) = api.cancel(&pending).await?;
    assert_eq!(status, 409, "a cancelled order cannot be cancelled again");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_order_typed_into_kcat_as_json_completes() -> anyhow::Result<()> {
    let stack = full_stack().await?;
    let api = Api::new(&stack);
    let id = uuid::Uuid::new_v4().to_string();
    let line = serde_json::json!({
        "type": "PlaceOrder", "order_id": id,
        "customer_id": "alice", "customer_email": "alice@example.com",
        "items": [{"sku": "WIDGET-1", "quantity": 1, "unit_price_minor": 4_200}],
        "currency": "EUR",
        "shipping_address": {"name": "Ada", "line1": "1 Way", "city": "Paris", "postal_code": "75001", "country": "FR"}
    })
    .to_string();
    let mut kcat = tokio::process::Command::new(choreo_testkit::kcat())
        .args([
            "-b",
            &stack.brokers(),
            "-P",
            "-t",
            "order-requests",
            "-k",
            &id,
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = kcat.stdin.take().expect("stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
    }
    assert!(kcat.wait().await?.success());

    let order = eventually("the order to exist", SAGA, || async {
        Ok(api.order(&id).await.ok())
    })
    .await?;
    assert_eq!(order["order_id"], id.as_str());
    let order = api.wait_terminal(&id, SAGA).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    one_mail(&api, &id, "ORDER_CONFIRMED").await?;
    stack.shutdown().await;
    Ok(())
}
