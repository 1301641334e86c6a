//! The communication handler on a real unit of work, written once and run
//! on SQLite and PostgreSQL: replica rows, one mail file and one
//! notification per order and template, `CustomerNotified` in the outbox,
//! the DLQ case, a crash between sending and committing, and the replica
//! rebuild's upserts.

mod common;

use std::path::Path;

use choreo_bus::{Handler, Incoming};
use choreo_communication::domain::OrderId;
use choreo_communication::transport::Transport;
use choreo_communication::{rebuild, storage, CommunicationHandler};
use choreo_events::{
    reasons, Address, AnyEvent, NotificationsEvent, OrderCancelled, OrderConfirmed, OrderLine,
    OrderPlaced,
};
use choreo_outbox::Db;
use common::{deliver, fresh_db, meta, outbox, registry, Kind};
use sqlx::Row;

fn placed(order_id: &str) -> OrderPlaced {
    OrderPlaced {
        metadata: meta(order_id, "order"),
        customer_id: "alice".into(),
        customer_email: "alice@example.org".into(),
        items: vec![OrderLine {
            sku: "SKU-1".into(),
            quantity: 3,
            unit_price_minor: 1999,
        }],
        total_minor: 5997,
        currency: "EUR".into(),
        shipping_address: Address {
            name: "Alice Liddell".into(),
            line1: "Main St 1".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
    }
}

fn confirmed(order_id: &str) -> OrderConfirmed {
    OrderConfirmed {
        metadata: meta(order_id, "order"),
        total_minor: 5997,
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

fn mail_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `<order>.<TEMPLATE>` of every mail file, one entry per file (a second,
/// different mail for the same order and template shows as a repeat).
fn mail_stems(dir: &Path) -> Vec<String> {
    mail_files(dir)
        .iter()
        .map(|n| n.splitn(3, '.').take(2).collect::<Vec<_>>().join("."))
        .collect()
}

/// The one mail file of `stem` (`<order>.<TEMPLATE>`).
fn mail_file(dir: &Path, stem: &str) -> std::path::PathBuf {
    let files: Vec<String> = mail_files(dir)
        .into_iter()
        .filter(|n| n.starts_with(&format!("{stem}.")) && n.ends_with(".eml"))
        .collect();
    assert_eq!(files.len(), 1, "one mail file for {stem}: {files:?}");
    dir.join(&files[0])
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(db.pool()).await.unwrap().get(0)
}

async fn mails_once_per_order_and_template(kind: Kind) {
    let (db, _guard) = fresh_db(kind).await;
    let registry = registry().await;
    let data = tempfile::tempdir().unwrap();
    let mail_dir = data.path().join("mail");
    let handler = CommunicationHandler::new(
        common::emitter(&registry),
        Transport::new(None, mail_dir.clone()).unwrap(),
        "shop@choreo.local".parse().unwrap(),
    );

    // A terminal event without its OrderPlaced can never be mailed: DLQ.
    let err = deliver(&db, &handler, confirmed("o0")).await.unwrap_err();
    assert!(
        !err.is_retryable() && err.reason().contains("no OrderPlaced seen for order o0"),
        "{err}"
    );
    assert!(mail_files(&mail_dir).is_empty());

    // An OrderPlaced in a currency outside the contract gives no replica
    // (its mail could not say what was paid): DLQ, with the reason.
    let mut xyz = placed("o-xyz");
    xyz.currency = "XYZ".into();
    let err = deliver(&db, &handler, xyz).await.unwrap_err();
    assert!(
        !err.is_retryable() && err.reason().contains(r#"currency "XYZ""#),
        "{err}"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders_replica").await, 0);

    // The replica follows OrderPlaced; a replay writes the same row.
    deliver(&db, &handler, placed("o1")).await.unwrap();
    deliver(&db, &handler, placed("o1")).await.unwrap();
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders_replica").await, 1);
    let mut uow = db.begin().await.unwrap();
    let replica = storage::load_replica(uow.conn(), &OrderId::parse("o1").unwrap())
        .await
        .unwrap()
        .unwrap();
    uow.rollback().await.unwrap();
    assert_eq!(replica.lines, placed("o1").items);
    assert_eq!(replica.address, placed("o1").shipping_address);
    assert_eq!(replica.total.to_string(), "5997 EUR");

    // Confirmation: one file, one row, one event — however often it comes.
    deliver(&db, &handler, confirmed("o1")).await.unwrap();
    let file = mail_file(&mail_dir, "o1.ORDER_CONFIRMED");
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(
        first.contains("Subject: Your order o1 is confirmed"),
        "{first}"
    );
    assert!(first.contains("59.97 EUR"), "{first}");
    deliver(&db, &handler, confirmed("o1")).await.unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    assert_eq!(mail_stems(&mail_dir), ["o1.ORDER_CONFIRMED"]);

    // A crash after sending, before the commit: the redelivery rewrites
    // the same file and records the mail once.
    deliver(&db, &handler, placed("o2")).await.unwrap();
    let cancel = cancelled("o2", reasons::OUT_OF_STOCK);
    let incoming = Incoming {
        topic: "orders".into(),
        partition: 0,
        offset: 7,
        key: Some("o2".into()),
        event: cancel.clone().into(),
    };
    let mut uow = db.begin().await.unwrap();
    handler.handle(&mut uow, &incoming).await.unwrap();
    drop(uow); // the process dies here: nothing commits
    let crashed = std::fs::read(mail_file(&mail_dir, "o2.ORDER_CANCELLED")).unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM notifications WHERE order_id = 'o2'"
        )
        .await,
        0
    );
    deliver(&db, &handler, cancel).await.unwrap();
    let resent = std::fs::read(mail_file(&mail_dir, "o2.ORDER_CANCELLED")).unwrap();
    assert_eq!(resent, crashed, "the resent mail differs from the first");
    // Undo quoted-printable's soft line breaks before looking for words.
    let text = String::from_utf8(resent).unwrap().replace("=\r\n", "");
    assert!(
        text.contains("some of the items are out of stock"),
        "{text}"
    );
    assert_eq!(
        mail_stems(&mail_dir),
        ["o1.ORDER_CONFIRMED", "o2.ORDER_CANCELLED"]
    );

    // Rows and events: exactly one per mail.
    let rows = storage::list_notifications(&db, None).await.unwrap();
    let mut keys: Vec<_> = rows
        .iter()
        .map(|n| format!("{}:{}", n.order_id, n.template))
        .collect();
    keys.sort();
    assert_eq!(keys, ["o1:ORDER_CONFIRMED", "o2:ORDER_CANCELLED"]);
    let events = outbox(&db, &registry).await;
    let notified: Vec<String> = events
        .iter()
        .map(|e| match e {
            AnyEvent::Notifications(NotificationsEvent::CustomerNotified(n)) => {
                assert_eq!(n.recipient, "alice@example.org");
                assert_eq!(n.metadata.producer, "communication");
                format!("{}:{}:{}", n.metadata.order_id, n.template, n.message_id)
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        notified,
        [
            "o1:ORDER_CONFIRMED:<o1.ORDER_CONFIRMED@choreo>",
            "o2:ORDER_CANCELLED:<o2.ORDER_CANCELLED@choreo>"
        ]
    );
}

async fn rebuild_upserts_only_the_replica(kind: Kind) {
    let (db, _guard) = fresh_db(kind).await;
    assert!(rebuild::apply(&db, &placed("r1").into()).await.unwrap());
    assert!(rebuild::apply(&db, &placed("r1").into()).await.unwrap());
    assert!(rebuild::apply(&db, &placed("r2").into()).await.unwrap());
    assert!(!rebuild::apply(&db, &confirmed("r1").into()).await.unwrap());
    assert!(
        !rebuild::apply(&db, &cancelled("r2", reasons::TIMEOUT).into())
            .await
            .unwrap()
    );
    assert_eq!(storage::count_replica(&db).await.unwrap(), 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM notifications").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 0);
}

choreo_testkit::on_both_backends!(
    mails_once_per_order_and_template,
    rebuild_upserts_only_the_replica,
);
