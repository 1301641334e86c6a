//! Storage scenarios written once and run on SQLite (tempdir) and
//! PostgreSQL (`choreo_outbox::testing`): the handler's decide-and-persist
//! half through real units of work, checked against the rows.

use std::sync::Arc;

use choreo_bus::{Codec, Emitter, Handler, HandlerError, Incoming};
use choreo_events::{
    reasons, Address, AnyEvent, Event, EventMetadata, InventoryEvent, OrderCancelled,
    OrderConfirmed, OrderLine, OrderPlaced, ShipmentCancelled, ShipmentManifestFailed,
};
use choreo_inventory::domain::{OrderId, Reservation, Sku, Status};
use choreo_inventory::handlers::{apply, InventoryHandler};
use choreo_inventory::storage::{self, Locking, SeedEntry, StockRow};
use choreo_inventory::SERVICE;
use choreo_outbox::Db;
use choreo_testkit::service::{fresh_db, Guard, Kind};

async fn open(kind: Kind) -> (Db, Guard) {
    let (db, guard) = fresh_db(kind, storage::migrator).await;
    let seed = [("A", 5), ("B", 2), ("C", 1)]
        .map(|(sku, available)| SeedEntry {
            sku: Sku::parse(sku).unwrap(),
            available,
        })
        .to_vec();
    assert_eq!(storage::seed(db.pool(), &seed).await.unwrap(), 3);
    (db, guard)
}

fn line(sku: &str, quantity: i32) -> OrderLine {
    OrderLine {
        sku: sku.into(),
        quantity,
        unit_price_minor: 100,
    }
}

fn placed(order_id: &str, items: Vec<OrderLine>) -> OrderPlaced {
    let total_minor = items
        .iter()
        .map(|l| i64::from(l.quantity) * l.unit_price_minor)
        .sum();
    OrderPlaced {
        metadata: EventMetadata::new(order_id, "order", None),
        customer_id: "cust-7".into(),
        customer_email: "seven@example.com".into(),
        items,
        total_minor,
        currency: "EUR".into(),
        shipping_address: Address {
            name: "Grace".into(),
            line1: "Quay 2".into(),
            city: "Paris".into(),
            postal_code: "75001".into(),
            country: "FR".into(),
        },
    }
}

fn cancelled(order_id: &str, reason: &str) -> OrderCancelled {
    OrderCancelled {
        metadata: EventMetadata::new(order_id, "order", None),
        reason: reason.into(),
        detail: None,
    }
}

fn incoming(event: AnyEvent) -> Incoming {
    Incoming {
        topic: event.topic().name().to_owned(),
        partition: 0,
        offset: 0,
        key: Some(event.order_id().to_owned()),
        event,
    }
}

/// One consumer step without the emitting: inbox + apply + commit.
async fn try_step(db: &Db, event: AnyEvent) -> Result<Vec<AnyEvent>, HandlerError> {
    let msg = incoming(event);
    let mut uow = db.begin().await?;
    assert!(
        uow.record_inbox(SERVICE, &msg.event.metadata().event_id)
            .await?
    );
    let out = apply(&mut uow, Locking::for_backend(db.backend()), &msg).await?;
    uow.commit().await?;
    Ok(out)
}

async fn step(db: &Db, event: impl Event) -> Vec<AnyEvent> {
    try_step(db, event.into_any()).await.expect("step")
}

async fn stock(db: &Db, sku: &str) -> (i64, i64, i64) {
    let StockRow {
        available,
        reserved,
        committed,
        ..
    } = storage::get_stock(db.pool(), &Sku::parse(sku).unwrap())
        .await
        .unwrap()
        .expect("sku exists");
    (available, reserved, committed)
}

async fn status(db: &Db, order_id: &str) -> Option<Status> {
    storage::get_reservation(db.pool(), &OrderId::parse(order_id).unwrap())
        .await
        .unwrap()
        .status()
}

fn only(events: Vec<AnyEvent>) -> InventoryEvent {
    assert_eq!(events.len(), 1, "{events:?}");
    match events.into_iter().next().unwrap() {
        AnyEvent::Inventory(event) => event,
        other => panic!("not an inventory event: {other:?}"),
    }
}

async fn saga_steps(kind: Kind) {
    let (db, _guard) = open(kind).await;
    // Reserve: A is listed twice and summed; the summary is carried on.
    let o1 = placed("o1", vec![line("A", 2), line("B", 1), line("A", 1)]);
    let InventoryEvent::StockReserved(reserved) = only(step(&db, o1.clone()).await) else {
        panic!("expected StockReserved")
    };
    assert_eq!(reserved.items, o1.items);
    assert_eq!(reserved.customer_id, "cust-7");
    assert_eq!(reserved.customer_email, "seven@example.com");
    assert_eq!(reserved.total_minor, 400);
    assert_eq!(reserved.currency, "EUR");
    assert_eq!(reserved.shipping_address, o1.shipping_address);
    assert_eq!(reserved.metadata.order_id, "o1");
    assert_eq!(reserved.metadata.producer, SERVICE);
    assert_eq!(
        reserved.metadata.causation_id.as_deref(),
        Some(o1.metadata.event_id.as_str())
    );
    assert_eq!(stock(&db, "A").await, (2, 3, 0));
    assert_eq!(stock(&db, "B").await, (1, 1, 0));
    assert_eq!(status(&db, "o1").await, Some(Status::Reserved));

    // The same logical step again (new event id, so past the inbox):
    // nothing moves twice.
    let mut again = o1.clone();
    again.metadata = EventMetadata::new("o1", "order", None);
    assert!(step(&db, again).await.is_empty());
    assert_eq!(stock(&db, "A").await, (2, 3, 0));

    // All or nothing: B would fit, A does not, and the unknown SKU is
    // missing too.
    let o2 = placed("o2", vec![line("B", 1), line("A", 3), line("NOPE-1", 1)]);
    let InventoryEvent::StockReservationFailed(failed) = only(step(&db, o2).await) else {
        panic!("expected StockReservationFailed")
    };
    assert_eq!(failed.reason, reasons::OUT_OF_STOCK);
    assert_eq!(
        failed.missing_skus,
        vec!["A".to_owned(), "NOPE-1".to_owned()]
    );
    assert_eq!(stock(&db, "A").await, (2, 3, 0));
    assert_eq!(stock(&db, "B").await, (1, 1, 0));
    assert_eq!(status(&db, "o2").await, Some(Status::Failed));

    // Confirm commits what was reserved; a late cancel changes nothing.
    let confirmed = OrderConfirmed {
        metadata: EventMetadata::new("o1", "order", None),
        total_minor: 400,
        currency: "EUR".into(),
    };
    assert!(step(&db, confirmed).await.is_empty());
    assert_eq!(stock(&db, "A").await, (2, 0, 3));
    assert_eq!(stock(&db, "B").await, (1, 0, 1));
    assert_eq!(status(&db, "o1").await, Some(Status::Committed));
    assert!(step(&db, cancelled("o1", reasons::TIMEOUT))
        .await
        .is_empty());
    assert_eq!(stock(&db, "A").await, (2, 0, 3));

    // Shipment cancelled releases with its reason; the order's own cancel
    // that follows finds nothing left to release.
    assert!(matches!(
        only(step(&db, placed("o3", vec![line("B", 1)])).await),
        InventoryEvent::StockReserved(_)
    ));
    assert_eq!(stock(&db, "B").await, (0, 1, 1));
    let shipment_cancelled = ShipmentCancelled {
        metadata: EventMetadata::new("o3", "courier", None),
        shipment_id: "s3".into(),
        reason: reasons::PAYMENT_DECLINED.into(),
    };
    let InventoryEvent::StockReleased(released) = only(step(&db, shipment_cancelled).await) else {
        panic!("expected StockReleased")
    };
    assert_eq!(released.reason, reasons::PAYMENT_DECLINED);
    assert_eq!(released.items, vec![line("B", 1)]);
    assert_eq!(stock(&db, "B").await, (1, 0, 1));
    assert!(step(&db, cancelled("o3", reasons::PAYMENT_DECLINED))
        .await
        .is_empty());
    assert_eq!(stock(&db, "B").await, (1, 0, 1));
    assert_eq!(status(&db, "o3").await, Some(Status::Released));

    // No courier: released with SHIPPING_UNAVAILABLE.
    only(step(&db, placed("o5", vec![line("C", 1)])).await);
    let no_route = ShipmentManifestFailed {
        metadata: EventMetadata::new("o5", "courier", None),
        reason: reasons::NO_ROUTE.into(),
    };
    let InventoryEvent::StockReleased(released) = only(step(&db, no_route).await) else {
        panic!("expected StockReleased")
    };
    assert_eq!(released.reason, reasons::SHIPPING_UNAVAILABLE);
    assert_eq!(stock(&db, "C").await, (1, 0, 0));

    // Cancel before the order arrives: a tombstone, and the late order
    // reserves nothing.
    assert!(step(&db, cancelled("o4", reasons::CUSTOMER_CANCELLED))
        .await
        .is_empty());
    assert_eq!(status(&db, "o4").await, Some(Status::Void));
    assert!(step(&db, placed("o4", vec![line("A", 1)])).await.is_empty());
    assert_eq!(stock(&db, "A").await, (2, 0, 3));
    assert_eq!(status(&db, "o4").await, Some(Status::Void));

    // Invariant: initial = available + reserved + committed, per SKU.
    for (sku, initial) in [("A", 5), ("B", 2), ("C", 1)] {
        let (a, r, c) = stock(&db, sku).await;
        assert_eq!(a + r + c, initial, "{sku}");
    }

    // Data outside the field contract fails the step at once (the saga
    // compensates instead of waiting for the deadline); nothing is held and
    // a redelivery changes nothing.
    let events = try_step(&db, placed("o6", vec![line("A", 0)]).into_any())
        .await
        .unwrap();
    let [AnyEvent::Inventory(InventoryEvent::StockReservationFailed(failed))] = events.as_slice()
    else {
        panic!("expected StockReservationFailed, got {events:?}");
    };
    assert_eq!(failed.reason, reasons::INVALID_DATA);
    assert_eq!(status(&db, "o6").await, Some(Status::Failed));
    assert!(step(&db, placed("o6", vec![line("A", 0)])).await.is_empty());
    assert_eq!(stock(&db, "A").await, (2, 0, 3));

    // The HTTP write keeps reserved/committed and creates new SKUs.
    let row = storage::put_stock(db.pool(), &Sku::parse("A").unwrap(), 9)
        .await
        .unwrap();
    assert_eq!((row.available, row.reserved, row.committed), (9, 0, 3));
    let row = storage::put_stock(db.pool(), &Sku::parse("NEW-1").unwrap(), 4)
        .await
        .unwrap();
    assert_eq!((row.available, row.reserved, row.committed), (4, 0, 0));
    let skus: Vec<String> = storage::list_stock(db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sku)
        .collect();
    assert_eq!(skus, ["A", "B", "C", "NEW-1"]);
}

/// Many orders race for the last units of one SKU: exactly as many as fit
/// are reserved and stock never goes negative. On PostgreSQL the steps
/// really overlap (row locks serialise them); on SQLite the pool does.
async fn last_units_race(kind: Kind) {
    let (db, _guard) = open(kind).await;
    const ORDERS: usize = 8;
    let mut tasks = Vec::new();
    for i in 0..ORDERS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let event = placed(&format!("race-{i}"), vec![line("C", 1), line("B", 1)]).into_any();
            loop {
                match try_step(&db, event.clone()).await {
                    Ok(events) => return only(events),
                    Err(e) if e.is_retryable() => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut reserved = 0;
    for task in tasks {
        if let InventoryEvent::StockReserved(_) = task.await.unwrap() {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 1, "C has one unit");
    assert_eq!(stock(&db, "C").await, (0, 1, 0));
    assert_eq!(stock(&db, "B").await, (1, 1, 0));
}

/// The whole handler, emitting through a schema registry run in process:
/// the events land in the outbox of the same transaction.
async fn handler_emits_into_the_outbox(kind: Kind) {
    let (db, _guard) = open(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = choreo_registry::Registry::open(dir.path()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(choreo_registry::run(
        listener,
        registry,
        stop.clone().cancelled_owned(),
    ));

    let handler = Arc::new(InventoryHandler::new(
        Emitter::new(Arc::new(Codec::new(&url))),
        db.backend(),
    ));
    let msg = incoming(placed("h1", vec![line("A", 1)]).into_any());
    let mut uow = db.begin().await.unwrap();
    handler.handle(&mut uow, &msg).await.unwrap();
    assert_eq!(uow.appended(), 1);
    uow.commit().await.unwrap();
    let batch = db.next_batch(10).await.unwrap();
    let rows = batch.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].topic, "inventory");
    assert_eq!(rows[0].key, "h1");
    assert_eq!(rows[0].payload[0], 0, "Confluent magic byte");
    drop(batch);
    assert_eq!(stock(&db, "A").await, (4, 1, 0));

    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn stored_reservation_reads_back() {
    let (db, _guard) = open(Kind::Sqlite).await;
    step(&db, placed("r1", vec![line("A", 2)])).await;
    let reservation = storage::get_reservation(db.pool(), &OrderId::parse("r1").unwrap())
        .await
        .unwrap();
    let Reservation::Reserved { lines } = reservation else {
        panic!("expected RESERVED")
    };
    assert_eq!(lines[0].sku.as_str(), "A");
    assert_eq!(lines[0].quantity, 2);
}

choreo_testkit::on_both_backends!(saga_steps, last_units_race, handler_emits_into_the_outbox,);
