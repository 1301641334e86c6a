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
        let event = OrderConfirmed {
            metadata: EventMetadata::new(&order_id, "test", None),
            total_minor: total,
            currency: "EUR".into(),
        };
        let bytes = codec.encode(&event).await?;
        producer
            .send(
                FutureRecord::to(OrderConfirmed::TOPIC.name())
                    .key(&order_id)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
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
    let mut uow = db.begin().await?;
    let seen: i64 = choreo_outbox::sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbox WHERE consumer = 'inventory'",
    )
    .fetch_one(uow.conn())
    .await?;
    uow.rollback().await?;
    assert_eq!(seen, 2);
    Ok(())
}
