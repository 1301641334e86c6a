//! The payment handler on a real unit of work, written once and run on
//! SQLite and PostgreSQL: state rows, balances, emitted events, idempotence
//! and money conservation under concurrency.

mod common;

use std::path::Path;
use std::sync::Arc;

use choreo_events::{reasons, AnyEvent, OrderCancelled, PaymentsEvent, ShipmentManifested};
use choreo_outbox::Db;
use choreo_payment::domain::{money, Account, CustomerId, OrderId, PaymentState};
use choreo_payment::{storage, PaymentHandler};
use common::{deliver, deliver_with_retries, fresh_db, meta, outbox, registry, Kind};

fn manifested(order_id: &str, customer: &str, amount_minor: i64) -> ShipmentManifested {
    ShipmentManifested {
        metadata: meta(order_id, "courier"),
        shipment_id: format!("ship-{order_id}"),
        carrier: "choreo-express".into(),
        tracking_number: "T1".into(),
        customer_id: customer.into(),
        amount_minor,
        currency: "EUR".into(),
    }
}

fn cancelled(order_id: &str, reason: &str) -> OrderCancelled {
    OrderCancelled {
        metadata: meta(order_id, "order"),
        reason: reason.into(),
        detail: None,
    }
}

async fn account(db: &Db, customer: &str, balance: i64, blocked: bool) {
    let account = Account {
        customer_id: CustomerId::parse(customer).unwrap(),
        balance: money("balance_minor", balance, "EUR").unwrap(),
        blocked,
    };
    storage::put_account(db, &account).await.unwrap();
}

async fn balance(db: &Db, customer: &str) -> i64 {
    storage::get_account(db, &CustomerId::parse(customer).unwrap())
        .await
        .unwrap()
        .unwrap()
        .balance
        .minor
}

async fn payment(db: &Db, order_id: &str) -> PaymentState {
    storage::get_payment(db, &OrderId::parse(order_id).unwrap())
        .await
        .unwrap()
}

async fn saga_steps(kind: Kind) {
    let (db, _guard) = fresh_db(kind).await;
    let registry = registry().await;
    let handler = PaymentHandler::new(common::emitter(&registry), db.backend());
    account(&db, "alice", 1000, false).await;
    account(&db, "bob", 5, false).await;
    account(&db, "mallory", 1_000_000, true).await;

    // Capture, then a redelivered-but-new-id duplicate changes nothing.
    let first = manifested("o1", "alice", 300);
    deliver(&db, &handler, first.clone()).await.unwrap();
    deliver(&db, &handler, first).await.unwrap(); // same event_id: inbox drops it
    deliver(&db, &handler, manifested("o1", "alice", 300))
        .await
        .unwrap();
    assert_eq!(balance(&db, "alice").await, 700);
    let PaymentState::Captured(capture) = payment(&db, "o1").await else {
        panic!("o1 not captured");
    };
    assert_eq!(capture.amount.minor, 300);

    // Refund once, however often the cancellation arrives.
    deliver(&db, &handler, cancelled("o1", reasons::TIMEOUT))
        .await
        .unwrap();
    deliver(&db, &handler, cancelled("o1", reasons::TIMEOUT))
        .await
        .unwrap();
    assert_eq!(balance(&db, "alice").await, 1000);
    assert!(matches!(
        payment(&db, "o1").await,
        PaymentState::Refunded { .. }
    ));

    // Cancelled before the shipment: VOID, and the late charge takes nothing.
    deliver(&db, &handler, cancelled("o2", reasons::OUT_OF_STOCK))
        .await
        .unwrap();
    deliver(&db, &handler, manifested("o2", "alice", 100))
        .await
        .unwrap();
    assert_eq!(payment(&db, "o2").await, PaymentState::Void);
    assert_eq!(balance(&db, "alice").await, 1000);

    // Failures decided by data.
    deliver(&db, &handler, manifested("o3", "mallory", 10))
        .await
        .unwrap();
    deliver(&db, &handler, manifested("o4", "bob", 10))
        .await
        .unwrap();
    deliver(&db, &handler, manifested("o5", "nobody", 10))
        .await
        .unwrap();
    assert_eq!(balance(&db, "mallory").await, 1_000_000);
    assert_eq!(balance(&db, "bob").await, 5);
    assert_eq!(payment(&db, "o3").await.status(), Some("FAILED"));

    // Data outside the field contract can never be charged: the payment
    // fails at once (PaymentFailed INVALID_DATA, so the saga compensates),
    // nothing is charged, and a redelivery changes nothing.
    deliver(&db, &handler, manifested("o6", "alice", -1))
        .await
        .unwrap();
    assert_eq!(payment(&db, "o6").await, PaymentState::Void);
    deliver(&db, &handler, manifested("o6", "alice", -1))
        .await
        .unwrap();
    assert_eq!(balance(&db, "alice").await, 1000);

    // The outbox holds exactly the events the table promises, in order.
    let events = outbox(&db, &registry).await;
    let summary: Vec<String> = events
        .iter()
        .map(|e| match e {
            AnyEvent::Payments(PaymentsEvent::PaymentCompleted(p)) => {
                assert!(uuid::Uuid::parse_str(&p.payment_id).is_ok());
                assert_eq!(p.payment_id, capture.payment_id.as_str());
                format!("{}:completed:{}", p.metadata.order_id, p.amount_minor)
            }
            AnyEvent::Payments(PaymentsEvent::PaymentRefunded(p)) => {
                assert_eq!(p.payment_id, capture.payment_id.as_str());
                format!(
                    "{}:refunded:{}:{}",
                    p.metadata.order_id, p.amount_minor, p.reason
                )
            }
            AnyEvent::Payments(PaymentsEvent::PaymentFailed(p)) => {
                format!("{}:failed:{}", p.metadata.order_id, p.reason)
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "o1:completed:300",
            "o1:refunded:300:TIMEOUT",
            "o3:failed:CUSTOMER_BLOCKED",
            "o4:failed:INSUFFICIENT_FUNDS",
            "o5:failed:INSUFFICIENT_FUNDS",
            "o6:failed:INVALID_DATA",
        ]
    );
    assert!(events
        .iter()
        .all(|e| e.metadata().producer == "payment" && e.metadata().causation_id.is_some()));
}

/// What the storage functions report when the rows are not what the
/// decision was made on: a lost race is retryable (the consumer tries the
/// event again, the API answers 503), a refund with nowhere to go is not.
async fn storage_errors_are_classified(kind: Kind) {
    let (db, _guard) = fresh_db(kind).await;
    account(&db, "alice", 100, false).await;
    let alice = CustomerId::parse("alice").unwrap();
    let order = OrderId::parse("o1").unwrap();
    let eur = |minor| money("amount_minor", minor, "EUR").unwrap();

    let mut uow = db.begin().await.unwrap();
    storage::save_payment(uow.conn(), &order, &PaymentState::None, &PaymentState::Void)
        .await
        .unwrap();
    // Decided on "no payment yet", but one is there by now.
    let lost = storage::save_payment(uow.conn(), &order, &PaymentState::None, &PaymentState::Void)
        .await
        .unwrap_err();
    assert!(lost.is_retryable(), "{lost:?}");
    assert_eq!(
        lost.to_string(),
        "concurrent update: payments row o1 changed while inserting it as VOID"
    );
    // The balance is no longer what the charge was decided on.
    let short = storage::debit(uow.conn(), &alice, &eur(101))
        .await
        .unwrap_err();
    assert!(short.is_retryable(), "{short:?}");
    assert!(short.to_string().contains("debiting 101 EUR"), "{short}");
    // A refund to an account that is gone needs a person.
    let nobody = CustomerId::parse("nobody").unwrap();
    let refund = storage::credit(uow.conn(), &nobody, &eur(5))
        .await
        .unwrap_err();
    assert!(!refund.is_retryable(), "{refund:?}");
    assert_eq!(
        refund.to_string(),
        "inconsistent accounts row nobody: cannot refund 5 EUR: the account is gone or \
         no longer in EUR"
    );
    uow.rollback().await.unwrap();
}

/// Many orders of one customer charged and cancelled concurrently (on
/// PostgreSQL really in parallel, through several connections): the
/// balance never goes negative and initial = balance + Σ net charges.
async fn money_is_conserved(kind: Kind) {
    let (db, _guard) = fresh_db(kind).await;
    let registry = registry().await;
    let handler = Arc::new(PaymentHandler::new(
        common::emitter(&registry),
        db.backend(),
    ));
    account(&db, "alice", 1000, false).await;

    let orders: Vec<String> = (0..24).map(|i| format!("c{i}")).collect();
    let mut tasks = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let (db, handler, order) = (db.clone(), Arc::clone(&handler), order.clone());
        tasks.push(tokio::spawn(async move {
            // Every third order is also cancelled, racing its own charge.
            let charge = deliver_with_retries(&db, &*handler, manifested(&order, "alice", 100));
            if i % 3 == 0 {
                let cancel =
                    deliver_with_retries(&db, &*handler, cancelled(&order, reasons::TIMEOUT));
                let (a, b) = tokio::join!(charge, cancel);
                a.and(b)
            } else {
                charge.await
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let mut net = 0;
    let mut captured = 0;
    for order in &orders {
        let state = payment(&db, order).await;
        assert_ne!(state, PaymentState::None, "{order} has no payment");
        net += state.net_charge_minor();
        captured += i64::from(state.status() == Some("CAPTURED"));
    }
    let left = balance(&db, "alice").await;
    assert!(left >= 0);
    assert_eq!(left + net, 1000, "balance {left} + net charges {net}");
    assert_eq!(net, captured * 100);
    // 24 × 100 requested against 1000: at most 10 can stay charged.
    assert!(captured <= 10, "{captured} captured");
}

async fn seeds_once(kind: Kind) {
    let (db, _guard) = fresh_db(kind).await;
    let missing = storage::seed_accounts_if_empty(&db, Path::new("/nonexistent/accounts.json"))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/accounts.json"),
        "{missing}"
    );

    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/seed/accounts.json");
    assert_eq!(
        storage::seed_accounts_if_empty(&db, &seed).await.unwrap(),
        4
    );
    assert_eq!(
        storage::seed_accounts_if_empty(&db, &seed).await.unwrap(),
        0
    );
    let mallory = storage::get_account(&db, &CustomerId::parse("mallory").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(mallory.blocked);
    assert_eq!(balance(&db, "bob").await, 500);
}

choreo_testkit::on_both_backends!(
    saga_steps,
    storage_errors_are_classified,
    money_is_conserved,
    seeds_once,
);
