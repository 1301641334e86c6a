//! Handler scenarios through real units of work, written once and run on
//! SQLite and PostgreSQL: rows, timeline and outbox are checked after each
//! step.

mod common;

use std::time::Duration;

use choreo_events::{
    reasons, AnyEvent, CancelOrder, OrderRequest, OrdersEvent, PaymentCompleted, PaymentFailed,
    ShipmentCancelled, StockReleased, StockReservationFailed, StockReserved,
};
use choreo_order::deadline::Clock;

use crate::common::{deliver, meta, place_order, request, Kind, TestEnv};

const DEADLINE: Duration = Duration::from_secs(30);

fn stock_reserved(order_id: &str) -> StockReserved {
    let cmd = place_order(order_id, None);
    StockReserved {
        metadata: meta(order_id, "inventory"),
        items: cmd.items,
        customer_id: cmd.customer_id,
        customer_email: cmd.customer_email,
        total_minor: 4498,
        currency: cmd.currency,
        shipping_address: cmd.shipping_address,
    }
}

fn payment_completed(order_id: &str) -> PaymentCompleted {
    PaymentCompleted {
        metadata: meta(order_id, "payment"),
        payment_id: "p-1".into(),
        customer_id: "c-1".into(),
        amount_minor: 4498,
        currency: "EUR".into(),
    }
}

async fn place_is_idempotent_and_compensation_cancels_once(backend: Kind) {
    let env = TestEnv::new(backend).await;
    let orders = env.orders(DEADLINE);

    let cmd = place_order("o-1", Some("req-1"));
    deliver(&orders, "order-requests", request(cmd.clone()))
        .await
        .unwrap();
    assert_eq!(env.status("o-1").await, ("PENDING".into(), None));
    let outbox = env.outbox().await;
    assert_eq!(outbox.len(), 1);
    let (topic, key, event) = &outbox[0];
    assert_eq!((topic.as_str(), key.as_str()), ("orders", "o-1"));
    let AnyEvent::Orders(OrdersEvent::OrderPlaced(placed)) = event else {
        panic!("expected OrderPlaced, got {event:?}");
    };
    assert_eq!(placed.total_minor, 2 * 1999 + 500);
    assert_eq!(placed.metadata.producer, "order");
    assert_eq!(
        placed.metadata.causation_id.as_deref(),
        Some(cmd.metadata.event_id.as_str())
    );

    // The same order id again (new event id), and the same request id under
    // another order id: neither creates anything.
    deliver(&orders, "order-requests", request(place_order("o-1", None)))
        .await
        .unwrap();
    deliver(
        &orders,
        "order-requests",
        request(place_order("o-2", Some("req-1"))),
    )
    .await
    .unwrap();
    assert_eq!(env.count_orders().await, 1);
    assert_eq!(env.outbox().await.len(), 1);

    // Payment fails: wait for the compensations.
    let failed = PaymentFailed {
        metadata: meta("o-1", "payment"),
        reason: reasons::INSUFFICIENT_FUNDS.into(),
    };
    deliver(&orders, "payments", failed).await.unwrap();
    assert_eq!(
        env.status("o-1").await,
        ("CANCELLING".into(), Some(reasons::PAYMENT_DECLINED.into()))
    );
    assert_eq!(env.outbox().await.len(), 1);

    let shipment_cancelled = ShipmentCancelled {
        metadata: meta("o-1", "courier"),
        shipment_id: "s-1".into(),
        reason: reasons::PAYMENT_DECLINED.into(),
    };
    deliver(&orders, "shipments", shipment_cancelled)
        .await
        .unwrap();
    assert_eq!(env.outbox().await.len(), 1);

    let released = StockReleased {
        metadata: meta("o-1", "inventory"),
        reason: reasons::PAYMENT_DECLINED.into(),
        items: vec![],
    };
    deliver(&orders, "inventory", released.clone())
        .await
        .unwrap();
    assert_eq!(
        env.status("o-1").await,
        ("CANCELLED".into(), Some(reasons::PAYMENT_DECLINED.into()))
    );
    let outbox = env.outbox().await;
    assert_eq!(outbox.len(), 2);
    let AnyEvent::Orders(OrdersEvent::OrderCancelled(cancelled)) = &outbox[1].2 else {
        panic!("expected OrderCancelled, got {:?}", outbox[1].2);
    };
    assert_eq!(cancelled.reason, reasons::PAYMENT_DECLINED);
    assert_eq!(
        cancelled.metadata.causation_id.as_deref(),
        Some(released.metadata.event_id.as_str())
    );

    // Late or repeated events change nothing and emit nothing.
    let mut again = released.clone();
    again.metadata = meta("o-1", "inventory");
    deliver(&orders, "inventory", again).await.unwrap();
    deliver(&orders, "payments", payment_completed("o-1"))
        .await
        .unwrap();
    let cancel = CancelOrder {
        metadata: meta("o-1", "order-requests"),
        reason: None,
    };
    deliver(
        &orders,
        "order-requests",
        AnyEvent::Request(OrderRequest::CancelOrder(cancel)),
    )
    .await
    .unwrap();
    assert_eq!(
        env.status("o-1").await,
        ("CANCELLED".into(), Some(reasons::PAYMENT_DECLINED.into()))
    );
    assert_eq!(env.outbox().await.len(), 2);

    let timeline: Vec<String> = env
        .timeline("o-1")
        .await
        .into_iter()
        .map(|(event_type, topic)| format!("{topic}/{event_type}"))
        .collect();
    assert_eq!(
        timeline,
        [
            "order-requests/PlaceOrder",
            "orders/OrderPlaced",
            "order-requests/PlaceOrder",
            "order-requests/PlaceOrder",
            "payments/PaymentFailed",
            "shipments/ShipmentCancelled",
            "inventory/StockReleased",
            "orders/OrderCancelled",
            "inventory/StockReleased",
            "payments/PaymentCompleted",
            "order-requests/CancelOrder",
        ]
    );
}

async fn happy_path_confirms_and_bad_input_is_permanent(backend: Kind) {
    let env = TestEnv::new(backend).await;
    let orders = env.orders(DEADLINE);

    deliver(&orders, "order-requests", request(place_order("o-9", None)))
        .await
        .unwrap();
    deliver(&orders, "inventory", stock_reserved("o-9"))
        .await
        .unwrap();
    deliver(&orders, "payments", payment_completed("o-9"))
        .await
        .unwrap();
    assert_eq!(env.status("o-9").await, ("CONFIRMED".into(), None));
    let outbox = env.outbox().await;
    assert_eq!(outbox.len(), 2);
    let AnyEvent::Orders(OrdersEvent::OrderConfirmed(confirmed)) = &outbox[1].2 else {
        panic!("expected OrderConfirmed, got {:?}", outbox[1].2);
    };
    assert_eq!(
        (confirmed.total_minor, confirmed.currency.as_str()),
        (4498, "EUR")
    );

    // Invalid data can never succeed: permanent, and nothing is written.
    let mut bad = place_order("o-10", None);
    bad.items[0].quantity = 0;
    bad.customer_email = "nobody".into();
    let err = deliver(&orders, "order-requests", request(bad))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "expected permanent, got {err:?}");
    let reason = err.reason();
    assert!(reason.contains("items[0].quantity must be > 0"), "{reason}");
    assert!(
        reason.contains("customer_email not an email address"),
        "{reason}"
    );
    assert_eq!(env.count_orders().await, 1);

    // Events about orders this service never created, likewise.
    let unknown = StockReservationFailed {
        metadata: meta("nope", "inventory"),
        reason: reasons::OUT_OF_STOCK.into(),
        missing_skus: vec!["SKU-1".into()],
    };
    let err = deliver(&orders, "inventory", unknown).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    let cancel = CancelOrder {
        metadata: meta("nope", "order-requests"),
        reason: None,
    };
    let err = deliver(
        &orders,
        "order-requests",
        AnyEvent::Request(OrderRequest::CancelOrder(cancel)),
    )
    .await
    .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    assert_eq!(env.outbox().await.len(), 2);
}

async fn deadline_cancels_once_across_replicas(backend: Kind) {
    let env = TestEnv::new(backend).await;
    // Both replicas read one clock, moved by the test: no sleeping.
    let clock = Clock::manual(1_767_225_600_000);
    let deadline = Duration::from_secs(30);
    let orders = env.orders(deadline).with_clock(clock.clone());
    let replica = env.replica(deadline).await.with_clock(clock.clone());

    for id in ["d-1", "d-2", "d-3"] {
        deliver(&orders, "order-requests", request(place_order(id, None)))
            .await
            .unwrap();
    }
    // d-2 is waiting for compensation: the deadline keeps its reason.
    let failed = PaymentFailed {
        metadata: meta("d-2", "payment"),
        reason: reasons::CUSTOMER_BLOCKED.into(),
    };
    deliver(&orders, "payments", failed).await.unwrap();
    // d-3 is already confirmed: the deadline does not touch it.
    deliver(&orders, "payments", payment_completed("d-3"))
        .await
        .unwrap();
    clock.set(clock.now_ms() + 29_999);
    assert_eq!(orders.expire_due().await.unwrap(), 0, "not due yet");
    clock.set(clock.now_ms() + 1);

    let (a, b) = tokio::join!(orders.expire_due(), replica.expire_due());
    assert_eq!(
        a.unwrap() + b.unwrap(),
        2,
        "each due order cancelled exactly once"
    );
    assert_eq!(orders.expire_due().await.unwrap(), 0);

    assert_eq!(
        env.status("d-1").await,
        ("CANCELLED".into(), Some(reasons::TIMEOUT.into()))
    );
    assert_eq!(
        env.status("d-2").await,
        ("CANCELLED".into(), Some(reasons::PAYMENT_DECLINED.into()))
    );
    assert_eq!(env.status("d-3").await, ("CONFIRMED".into(), None));
    let cancels: Vec<(String, String)> = env
        .outbox()
        .await
        .into_iter()
        .filter_map(|(_, key, event)| match event {
            AnyEvent::Orders(OrdersEvent::OrderCancelled(c)) => Some((key, c.reason)),
            _ => None,
        })
        .collect();
    let mut cancels = cancels;
    cancels.sort();
    assert_eq!(
        cancels,
        [
            ("d-1".to_owned(), reasons::TIMEOUT.to_owned()),
            ("d-2".to_owned(), reasons::PAYMENT_DECLINED.to_owned()),
        ]
    );
}

choreo_testkit::on_both_backends!(
    place_is_idempotent_and_compensation_cancels_once,
    happy_path_confirms_and_bad_input_is_permanent,
    deadline_cancels_once_across_replicas,
);
