//! Storage scenarios written once and run on SQLite (tempdir) and
//! PostgreSQL (`choreo_outbox::testing`): the handler's decide-and-persist
//! half through real units of work, checked against the rows.

use std::sync::Arc;

use choreo_bus::{Codec, Emitter, Handler, HandlerError, Incoming};
use choreo_courier::domain::{Country, FreshIds, OrderId, Routing, Shipment, Status};
use choreo_courier::handlers::{Courier, CourierHandler};
use choreo_courier::storage;
use choreo_courier::SERVICE;
use choreo_events::{
    reasons, Address, AnyEvent, Event, EventMetadata, OrderCancelled, OrderLine, PaymentFailed,
    ShipmentsEvent, StockReserved,
};
use choreo_outbox::Db;
use choreo_testkit::service::{fresh_db, Guard, Kind};

async fn open(kind: Kind) -> (Db, Guard) {
    fresh_db(kind, storage::migrator).await
}

fn routing() -> Routing {
    Routing {
        countries: ["DE", "FR"]
            .iter()
            .map(|c| Country::parse(c).unwrap())
            .collect(),
        carrier: "choreo-express".into(),
    }
}

fn courier(db: &Db) -> Courier {
    Courier::new(db.backend(), routing())
}

fn fresh(n: u32) -> FreshIds {
    FreshIds {
        shipment_id: format!("ship-{n}"),
        tracking_number: format!("CH{n:010}"),
    }
}

fn reserved(order_id: &str, country: &str) -> StockReserved {
    StockReserved {
        metadata: EventMetadata::new(order_id, "inventory", None),
        items: vec![OrderLine {
            sku: "WIDGET-1".into(),
            quantity: 2,
            unit_price_minor: 1_250,
        }],
        customer_id: "cust-9".into(),
        customer_email: "nine@example.com".into(),
        total_minor: 2_500,
        currency: "EUR".into(),
        shipping_address: Address {
            name: "Alan".into(),
            line1: "Bletchley 1".into(),
            city: "Milton Keynes".into(),
            postal_code: "MK3".into(),
            country: country.into(),
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

fn payment_failed(order_id: &str) -> PaymentFailed {
    PaymentFailed {
        metadata: EventMetadata::new(order_id, "payment", None),
        reason: reasons::INSUFFICIENT_FUNDS.into(),
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
async fn try_step(db: &Db, event: AnyEvent, ids: FreshIds) -> Result<Vec<AnyEvent>, HandlerError> {
    let msg = incoming(event);
    let mut uow = db.begin().await?;
    assert!(
        uow.record_inbox(SERVICE, &msg.event.metadata().event_id)
            .await?
    );
    let out = courier(db).apply(&mut uow, &msg, ids).await?;
    uow.commit().await?;
    Ok(out)
}

async fn step(db: &Db, event: impl Event, ids: FreshIds) -> Vec<AnyEvent> {
    try_step(db, event.into_any(), ids).await.expect("step")
}

async fn shipment(db: &Db, order_id: &str) -> Shipment {
    storage::get_shipment(db.pool(), &OrderId::parse(order_id).unwrap())
        .await
        .unwrap()
}

fn only(events: Vec<AnyEvent>) -> ShipmentsEvent {
    assert_eq!(events.len(), 1, "{events:?}");
    match events.into_iter().next().unwrap() {
        AnyEvent::Shipments(event) => event,
        other => panic!("not a shipments event: {other:?}"),
    }
}

async fn saga_steps(kind: Kind) {
    let (db, _guard) = open(kind).await;
    // Served country: manifested with the ids given, amount = order total.
    let r1 = reserved("o1", "de");
    let ShipmentsEvent::ShipmentManifested(m) = only(step(&db, r1.clone(), fresh(1)).await) else {
        panic!("expected ShipmentManifested")
    };
    assert_eq!(m.shipment_id, "ship-1");
    assert_eq!(m.tracking_number, "CH0000000001");
    assert_eq!(m.carrier, "choreo-express");
    assert_eq!(m.customer_id, "cust-9");
    assert_eq!((m.amount_minor, m.currency.as_str()), (2_500, "EUR"));
    assert_eq!(m.metadata.producer, SERVICE);
    assert_eq!(
        m.metadata.causation_id.as_deref(),
        Some(r1.metadata.event_id.as_str())
    );
    let stored = shipment(&db, "o1").await;
    assert_eq!(stored.status(), Some(Status::Manifested));
    assert_eq!(stored.manifest().unwrap().shipment_id, "ship-1");
    let consignment = stored.consignment().unwrap();
    assert_eq!(consignment.country, "DE");
    assert_eq!(consignment.amount.minor, 2_500);

    // The same reservation again, with new ids: still the first shipment.
    let mut again = r1.clone();
    again.metadata = EventMetadata::new("o1", "inventory", None);
    assert!(step(&db, again, fresh(2)).await.is_empty());
    assert_eq!(shipment(&db, "o1").await, stored);

    // Payment failed: cancelled with PAYMENT_DECLINED; the order's cancel
    // that follows finds nothing left to cancel.
    let ShipmentsEvent::ShipmentCancelled(c) =
        only(step(&db, payment_failed("o1"), fresh(3)).await)
    else {
        panic!("expected ShipmentCancelled")
    };
    assert_eq!(c.shipment_id, "ship-1");
    assert_eq!(c.reason, reasons::PAYMENT_DECLINED);
    assert!(
        step(&db, cancelled("o1", reasons::PAYMENT_DECLINED), fresh(4))
            .await
            .is_empty()
    );
    let after = shipment(&db, "o1").await;
    assert_eq!(after.status(), Some(Status::Cancelled));
    assert_eq!(after.manifest(), stored.manifest());

    // Unserved country: NO_ROUTE, nothing manifested.
    let ShipmentsEvent::ShipmentManifestFailed(f) =
        only(step(&db, reserved("o2", "US"), fresh(5)).await)
    else {
        panic!("expected ShipmentManifestFailed")
    };
    assert_eq!(f.reason, reasons::NO_ROUTE);
    let failed = shipment(&db, "o2").await;
    assert_eq!(failed.status(), Some(Status::Failed));
    assert_eq!(failed.manifest(), None);
    assert!(step(
        &db,
        cancelled("o2", reasons::SHIPPING_UNAVAILABLE),
        fresh(6)
    )
    .await
    .is_empty());
    assert_eq!(shipment(&db, "o2").await.status(), Some(Status::Failed));

    // Order cancelled (timeout) while manifested: cancelled with its reason.
    only(step(&db, reserved("o3", "FR"), fresh(7)).await);
    let ShipmentsEvent::ShipmentCancelled(c) =
        only(step(&db, cancelled("o3", reasons::TIMEOUT), fresh(8)).await)
    else {
        panic!("expected ShipmentCancelled")
    };
    assert_eq!(
        (c.shipment_id.as_str(), c.reason.as_str()),
        ("ship-7", reasons::TIMEOUT)
    );

    // Cancel or failed payment first: tombstone; the late reservation
    // manifests nothing.
    for (order_id, first) in [
        (
            "o4",
            cancelled("o4", reasons::CUSTOMER_CANCELLED).into_any(),
        ),
        ("o5", payment_failed("o5").into_any()),
    ] {
        assert!(try_step(&db, first, fresh(9)).await.unwrap().is_empty());
        assert_eq!(shipment(&db, order_id).await, Shipment::Void);
        assert!(step(&db, reserved(order_id, "DE"), fresh(10))
            .await
            .is_empty());
        assert_eq!(shipment(&db, order_id).await, Shipment::Void);
    }

    // Unrelated events are ignored and write nothing.
    let confirmed = choreo_events::OrderConfirmed {
        metadata: EventMetadata::new("o6", "order", None),
        total_minor: 1,
        currency: "EUR".into(),
    };
    assert!(step(&db, confirmed, fresh(11)).await.is_empty());
    assert_eq!(shipment(&db, "o6").await, Shipment::Absent);

    // A currency outside the contract: refused at once (INVALID_DATA) and
    // kept with its country only; the cancel that follows changes nothing.
    let mut bad = reserved("o7", "de");
    bad.currency = "XYZ".into();
    let ShipmentsEvent::ShipmentManifestFailed(f) = only(step(&db, bad, fresh(12)).await) else {
        panic!("expected ShipmentManifestFailed")
    };
    assert_eq!(f.reason, reasons::INVALID_DATA);
    let refused = Shipment::Refused {
        country: "DE".into(),
    };
    assert_eq!(shipment(&db, "o7").await, refused);
    assert!(step(
        &db,
        cancelled("o7", reasons::SHIPPING_UNAVAILABLE),
        fresh(13)
    )
    .await
    .is_empty());
    assert_eq!(shipment(&db, "o7").await, refused);
}

/// Rows this code did not write: a FAILED row of an older version (which
/// kept every field of a refused event, its bad currency too) reads as
/// refused; a shipment whose currency is unknown cannot be read back, and
/// that is permanent.
async fn rows_read_back(kind: Kind) {
    let (db, _guard) = open(kind).await;
    let insert = "INSERT INTO shipments (order_id, status, shipment_id, carrier, \
                  tracking_number, country, customer_id, amount_minor, currency, updated_at) \
                  VALUES ($1, $2, $3, $3, $3, 'DE', 'cust-9', 2500, 'XYZ', 0)";
    for (order_id, status, shipment_id) in [
        ("old-failed", "FAILED", None),
        ("bad-currency", "MANIFESTED", Some("ship-1")),
    ] {
        choreo_outbox::sqlx::query(insert)
            .bind(order_id)
            .bind(status)
            .bind(shipment_id)
            .execute(db.pool())
            .await
            .unwrap();
    }
    assert_eq!(
        shipment(&db, "old-failed").await,
        Shipment::Refused {
            country: "DE".into()
        }
    );
    let err = storage::get_shipment(db.pool(), &OrderId::parse("bad-currency").unwrap())
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("bad-currency") && message.contains("XYZ"),
        "{message}"
    );
}

/// `StockReserved` and `OrderCancelled` for one order race (different
/// topics, possibly different replicas). Whichever wins, the order ends
/// with no active shipment and at most one shipment was ever manifested.
async fn reservation_and_cancel_race(kind: Kind) {
    let (db, _guard) = open(kind).await;
    for round in 0..6 {
        let order_id = format!("race-{round}");
        let events = [
            reserved(&order_id, "DE").into_any(),
            cancelled(&order_id, reasons::TIMEOUT).into_any(),
        ];
        let tasks: Vec<_> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                let db = db.clone();
                tokio::spawn(async move {
                    loop {
                        match try_step(&db, event.clone(), fresh(i as u32)).await {
                            Ok(out) => return out,
                            Err(e) if e.is_retryable() => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let mut emitted = Vec::new();
        for task in tasks {
            emitted.extend(task.await.unwrap());
        }
        let types: Vec<&str> = emitted.iter().map(AnyEvent::event_type).collect();
        let end = shipment(&db, &order_id).await;
        match end.status() {
            Some(Status::Void) => assert!(types.is_empty(), "{types:?}"),
            Some(Status::Cancelled) => {
                assert_eq!(types, ["ShipmentManifested", "ShipmentCancelled"])
            }
            other => panic!("round {round}: ended {other:?} after {types:?}"),
        }
    }
}

/// The whole handler, emitting through a schema registry run in process:
/// the event lands in the outbox of the same transaction.
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

    let handler = Arc::new(CourierHandler::new(
        Emitter::new(Arc::new(Codec::new(&url))),
        db.backend(),
        routing(),
    ));
    let msg = incoming(reserved("h1", "FR").into_any());
    let mut uow = db.begin().await.unwrap();
    handler.handle(&mut uow, &msg).await.unwrap();
    assert_eq!(uow.appended(), 1);
    uow.commit().await.unwrap();
    let batch = db.next_batch(10).await.unwrap();
    let rows = batch.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].topic, "shipments");
    assert_eq!(rows[0].key, "h1");
    assert_eq!(rows[0].payload[0], 0, "Confluent magic byte");
    drop(batch);
    let stored = shipment(&db, "h1").await;
    let manifest = stored.manifest().expect("manifested");
    assert!(uuid::Uuid::parse_str(&manifest.shipment_id).is_ok());
    assert!(manifest.tracking_number.starts_with("CH"));

    stop.cancel();
    server.await.unwrap().unwrap();
}

choreo_testkit::on_both_backends!(
    rows_read_back,
    saga_steps,
    reservation_and_cancel_race,
    handler_emits_into_the_outbox,
);
