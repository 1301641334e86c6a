//! The messaging runtime's consumer loop against the real broker and
//! registry, with a handler that misbehaves on purpose.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_bus::{Codec, Consumer, ConsumerSpec, Handler, HandlerError, Incoming, KafkaSettings};
use choreo_events::{Event, EventMetadata, OrderConfirmed};
use choreo_outbox::{Db, UnitOfWork};
use choreo_testkit::{eventually, topics, TestStack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Produces an `OrderConfirmed` of `total` for `order_id` (the order's key,
/// so one partition); returns its partition and offset.
async fn confirm(
    producer: &FutureProducer,
    codec: &Codec,
    order_id: &str,
    total: i64,
) -> anyhow::Result<(i32, i64)> {
    let event = OrderConfirmed {
        metadata: EventMetadata::new(order_id, "test", None),
        total_minor: total,
        currency: "EUR".into(),
    };
    let bytes = codec.encode(&event).await?;
    let delivered = producer
        .send(
            FutureRecord::to(OrderConfirmed::TOPIC.name())
                .key(order_id)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivered.partition, delivered.offset))
}

/// Inbox entries of the `inventory` consumer: one per event applied.
async fn inbox_entries(db: &Db) -> anyhow::Result<i64> {
    let mut uow = db.begin().await?;
    let seen: i64 = choreo_outbox::sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbox WHERE consumer = 'inventory'",
    )
    .fetch_one(uow.conn())
    .await?;
    uow.rollback().await?;
    Ok(seen)
}

/// Fails the event with `total_minor == 1` three times (retryable), then
/// succeeds; records the order in which events were applied.
#[derive(Default)]
struct Flaky {
    attempts: Mutex<HashMap<i64, u32>>,
    applied: Mutex<Vec<i64>>,
}

impl Handler for Flaky {
    async fn handle(&self, _uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let choreo_events::AnyEvent::Orders(choreo_events::OrdersEvent::OrderConfirmed(e)) =
            &msg.event
        else {
            return Err(HandlerError::permanent("unexpected event"));
        };
        let n = {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(e.total_minor).or_default();
            *n += 1;
            *n
        };
        if e.total_minor == 1 && n <= 3 {
            return Err(HandlerError::retryable(format!("flaky attempt {n}")));
        }
        self.applied.lock().unwrap().push(e.total_minor);
        Ok(())
    }
}

#[tokio::test]
async fn a_retryable_failure_is_retried_in_place_and_nothing_overtakes_it() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let codec = Arc::new(Codec::new(&stack.registry_url()));
    let kafka = KafkaSettings::new(stack.brokers());
    let dir = tempfile::tempdir()?;
    let db = Db::connect(&format!("sqlite://{}/bus.db", dir.path().display())).await?;

    // Two events for one order: same key, same partition, in this order.
    let order_id = uuid::Uuid::new_v4().to_string();
    let producer: FutureProducer = kafka.producer_config().create()?;
    for total in [1, 2] {
        confirm(&producer, &codec, &order_id, total).await?;
    }

    let handler = Arc::new(Flaky::default());
    // "inventory" so that its dead-letter topic exists; no service runs.
    let consumer = Consumer::new(
        ConsumerSpec::new("inventory", &["orders"]),
        kafka,
        codec,
        db.clone(),
        handler.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    eventually("both events applied", Duration::from_secs(60), || async {
        Ok((handler.applied.lock().unwrap().len() == 2).then_some(()))
    })
    .await?;
    shutdown.cancel();
    running.await??;

    assert_eq!(
        *handler.applied.lock().unwrap(),
        [1, 2],
        "the second waited behind the first"
    );
    let attempts = handler.attempts.lock().unwrap().clone();
    assert_eq!(attempts[&1], 4, "three retryable failures, then success");
    assert_eq!(
        attempts[&2], 1,
        "the second was tried once, after the first succeeded"
    );
    assert!(
        topics::read_all(&stack.brokers(), "dlq.inventory")
            .await?
            .is_empty(),
        "nothing dead-lettered"
    );
    // Each event's effect was committed once: its inbox entry exists once.
    assert_eq!(inbox_entries(&db).await?, 2);
    Ok(())
}

/// Counts how often each event (by `total_minor`) reached the handler.
#[derive(Default)]
struct Counting {
    applied: Mutex<HashMap<i64, u32>>,
}

impl Handler for Counting {
    async fn handle(&self, _uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let choreo_events::AnyEvent::Orders(choreo_events::OrdersEvent::OrderConfirmed(e)) =
            &msg.event
        else {
            return Err(HandlerError::permanent("unexpected event"));
        };
        *self
            .applied
            .lock()
            .unwrap()
            .entry(e.total_minor)
            .or_default() += 1;
        Ok(())
    }
}

/// The group's committed offset of `orders`/`partition`, `None` if none.
fn committed(brokers: &str, group: &str, partition: i32) -> anyhow::Result<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = KafkaSettings::new(brokers)
        .consumer_config(group)
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("orders", partition);
    let offsets = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(offsets
        .find_partition("orders", partition)
        .and_then(|p| p.offset().to_raw()))
}

/// A crash between a transaction's commit and the storing of its offsets —
/// the one window the design names — chosen exactly, not hit by luck: no
/// offset of the committed messages reaches the group, so they are
/// delivered again after the restart, and the inbox keeps every event from
/// being applied twice.
#[tokio::test]
async fn a_crash_after_commit_before_the_offset_store_redelivers_and_applies_once(
) -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let brokers = stack.brokers();
    let codec = Arc::new(Codec::new(&stack.registry_url()));
    let kafka = KafkaSettings::new(&brokers);
    let dir = tempfile::tempdir()?;
    let db = Db::connect(&format!("sqlite://{}/bus.db", dir.path().display())).await?;

    let order_id = uuid::Uuid::new_v4().to_string();
    let producer: FutureProducer = kafka.producer_config().create()?;
    let mut positions = Vec::new();
    for total in [1, 2, 3] {
        positions.push(confirm(&producer, &codec, &order_id, total).await?);
    }
    let (partition, second) = positions[1];

    // First life: dies right after committing the batch holding event 2.
    let first = Arc::new(Counting::default());
    let crashing = Consumer::new(
        ConsumerSpec::new("inventory", &["orders"]),
        kafka.clone(),
        codec.clone(),
        db.clone(),
        first.clone(),
    )?
    .crash_at(choreo_bus::consumer::CrashPoint::after_commit(
        move |topic, p, offset| topic == "orders" && p == partition && offset == second,
    ));
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        crashing.run(CancellationToken::new()),
    )
    .await?;
    assert!(
        matches!(outcome, Err(choreo_bus::Error::Crashed { offset, .. }) if offset == second),
        "{outcome:?}"
    );
    let applied_first = first.applied.lock().unwrap().clone();
    assert_eq!(applied_first.get(&2), Some(&1), "event 2 committed once");
    // Nothing of the committed batch reached the group.
    let after_crash = committed(&brokers, "inventory", partition)?;
    assert!(
        after_crash.is_none_or(|o| o <= second),
        "offset {after_crash:?} committed past the crashed batch (event 2 at {second})"
    );

    // Second life: the batch comes again; nothing is applied twice and the
    // rest is applied.
    let second_life = Arc::new(Counting::default());
    let consumer = Consumer::new(
        ConsumerSpec::new("inventory", &["orders"]),
        kafka,
        codec,
        db.clone(),
        second_life.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let last = positions[2].1;
    eventually(
        "every offset committed",
        Duration::from_secs(60),
        || async {
            Ok((committed(&brokers, "inventory", partition)? == Some(last + 1)).then_some(()))
        },
    )
    .await?;
    shutdown.cancel();
    running.await??;

    let mut total: HashMap<i64, u32> = applied_first;
    for (k, n) in second_life.applied.lock().unwrap().iter() {
        *total.entry(*k).or_default() += n;
    }
    assert_eq!(
        total,
        HashMap::from([(1, 1), (2, 1), (3, 1)]),
        "each event applied exactly once over both lives"
    );
    assert_eq!(inbox_entries(&db).await?, 3);
    Ok(())
}
