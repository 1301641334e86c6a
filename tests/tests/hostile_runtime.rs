//! No input may stop the saga: the messaging runtime against the real
//! broker and registry, fed what can never succeed — outbox rows Kafka
//! refuses, a message whose dead-letter copy would not fit, a handler that
//! panics — and in each case the work behind it goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use choreo_bus::consumer::dlq_headers;
use choreo_bus::dlq::{ReplayError, Which};
use choreo_bus::{
    headers, Codec, Consumer, ConsumerSpec, Handler, HandlerError, Incoming, KafkaSettings, Relay,
};
use choreo_cli::output::Progress;
use choreo_cli::Connection;
use choreo_events::{Event, EventMetadata, OrderConfirmed};
use choreo_outbox::{Db, OutboxMessage, UnitOfWork};
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::topics::{self, Record};
use choreo_testkit::{eventually, TestStack};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

mod common;

/// A topic that takes records of at most this many bytes.
const TINY_LIMIT: usize = 4096;

async fn create_tiny_topic(brokers: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        KafkaSettings::new(brokers).admin_config().create()?;
    let limit = TINY_LIMIT.to_string();
    let topic =
        NewTopic::new("tiny", 1, TopicReplication::Fixed(1)).set("max.message.bytes", &limit);
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

fn row(topic: &str, key: &str, payload: Vec<u8>) -> OutboxMessage {
    OutboxMessage {
        topic: topic.into(),
        key: key.into(),
        payload,
        headers: vec![(headers::EVENT_TYPE.into(), "Test".into())],
    }
}

async fn sqlite_db(dir: &tempfile::TempDir) -> anyhow::Result<Db> {
    Ok(Db::connect(&format!("sqlite://{}/relay.db", dir.path().display())).await?)
}

fn payloads(records: &[Record], key: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

fn letter_for<'a>(letters: &'a [Record], source_topic: &str) -> anyhow::Result<&'a Record> {
    letters
        .iter()
        .find(|r| r.header(headers::SOURCE_TOPIC) == Some(source_topic))
        .ok_or_else(|| anyhow::anyhow!("no dead letter from {source_topic}: {letters:?}"))
}

/// Rows Kafka refuses — one larger than its topic's `max.message.bytes`,
/// one for a topic that does not exist — go to `dlq.order` with their
/// reason and are set aside; every other row is published, in order per
/// key, including the rows of the same key behind each poison row.
#[tokio::test]
async fn the_relay_sets_poison_rows_aside_and_publishes_the_rest_in_order() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    create_tiny_topic(&stack.brokers()).await?;
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;

    let mut uow = db.begin().await?;
    uow.append(row("tiny", "A", b"a1".to_vec())).await?;
    // Over the topic's limit, far under the producer's: only the broker
    // can refuse it, and it refuses the whole record batch it is in.
    uow.append(row("tiny", "A", vec![b'x'; 3 * TINY_LIMIT]))
        .await?;
    uow.append(row("tiny", "A", b"a3".to_vec())).await?;
    uow.append(row("tiny", "B", b"b1".to_vec())).await?;
    uow.append(row("no-such-topic", "C", b"c1".to_vec()))
        .await?;
    uow.append(row("tiny", "C", b"c2".to_vec())).await?;
    uow.commit().await?;

    // A missing topic is reported after this long (default 30 s).
    let kafka = KafkaSettings::new(stack.brokers())
        .set("producer.topic.metadata.propagation.max.ms", "1000");
    let relay = Relay::new(db.clone(), &kafka, "order")?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    eventually("the outbox emptied", Duration::from_secs(60), || async {
        Ok((db.outbox_backlog().await? == 0).then_some(()))
    })
    .await?;
    // A row appended after the poison rows were set aside goes out too.
    let mut uow = db.begin().await?;
    uow.append(row("tiny", "A", b"a4".to_vec())).await?;
    uow.commit().await?;
    let published = eventually(
        "the later row published",
        Duration::from_secs(30),
        || async {
            let records = topics::read_all(&stack.brokers(), "tiny").await?;
            Ok((payloads(&records, "A").len() == 3).then_some(records))
        },
    )
    .await?;
    shutdown.cancel();
    running.await??;

    assert_eq!(
        payloads(&published, "A"),
        ["a1", "a3", "a4"],
        "key A in order, poison left out"
    );
    assert_eq!(payloads(&published, "B"), ["b1"]);
    assert_eq!(
        payloads(&published, "C"),
        ["c2"],
        "C went on after its row for a missing topic"
    );

    let letters = topics::read_all(&stack.brokers(), "dlq.order").await?;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let big = letter_for(&letters, "tiny")?;
    let reason = big.header(headers::ERROR).unwrap_or_default();
    assert!(reason.to_lowercase().contains("too large"), "{reason}");
    assert_eq!(big.key.as_deref(), Some(&b"A"[..]));
    assert_eq!(
        big.payload.as_ref().map(Vec::len),
        Some(3 * TINY_LIMIT),
        "fits the DLQ whole"
    );
    assert_eq!(
        big.header(headers::EVENT_TYPE),
        Some("Test"),
        "original headers kept"
    );
    assert_eq!(big.header(headers::SERVICE), Some("order"));
    let missing = letter_for(&letters, "no-such-topic")?;
    let reason = missing.header(headers::ERROR).unwrap_or_default();
    assert!(reason.to_lowercase().contains("unknown topic"), "{reason}");

    // Set aside in the outbox with the reason and where the copy went.
    let dead = db.dead_rows().await?;
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        let seq = d.seq.to_string();
        let copy = letters
            .iter()
            .find(|r| r.header(dlq_headers::OUTBOX_SEQ) == Some(seq.as_str()))
            .ok_or_else(|| anyhow::anyhow!("no copy of row {seq}"))?;
        assert_eq!(
            d.dead_letter.as_deref(),
            Some(format!("dlq.order/{}/{}", copy.partition, copy.offset).as_str())
        );
    }

    // And `choreo dlq list` shows them like any dead letter.
    let conn = Connection::new(stack.brokers(), stack.registry_url());
    let listed = choreo_cli::dlq::list(&conn, Some("order"), &mut Progress::hidden()).await?;
    let mut sources: Vec<_> = listed
        .iter()
        .map(|l| (l.source_topic.clone(), l.reason.contains("refused")))
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            (Some("no-such-topic".into()), true),
            (Some("tiny".into()), true)
        ]
    );
    Ok(())
}

/// With the producer limited to 20 kB: an event over it is refused at
/// append (typed, permanent) and never written; a row already in the outbox
/// over it (written before the limit was lowered) goes to the DLQ
/// truncated, with its original size, and the next row is published.
#[tokio::test]
async fn a_row_over_the_producer_limit_is_refused_or_dead_lettered_truncated() -> anyhow::Result<()>
{
    let stack = TestStack::builder().start().await?;
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;
    let order_id = uuid::Uuid::new_v4().to_string();

    // Written under the default limit…
    let mut uow = db.begin().await?;
    uow.append(row("orders", &order_id, vec![b'x'; 50_000]))
        .await?;
    uow.commit().await?;
    // …then the relay comes up with a smaller one.
    let kafka = KafkaSettings::new(stack.brokers()).set("producer.message.max.bytes", "20000");
    let relay = Relay::new(db.clone(), &kafka, "order")?;
    assert_eq!(
        db.max_message_bytes(),
        20_000,
        "the relay set its limit on the db"
    );

    let mut uow = db.begin().await?;
    let err = uow
        .append(row("orders", &order_id, vec![b'y'; 30_000]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            choreo_outbox::Error::MessageTooLarge { limit: 20_000, .. }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    uow.append(row("orders", &order_id, b"after".to_vec()))
        .await?;
    uow.commit().await?;

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let published = eventually(
        "the later row published",
        Duration::from_secs(30),
        || async {
            let records = topics::read_all(&stack.brokers(), "orders").await?;
            Ok((!payloads(&records, &order_id).is_empty()).then_some(records))
        },
    )
    .await?;
    shutdown.cancel();
    running.await??;
    assert_eq!(
        payloads(&published, &order_id),
        ["after"],
        "neither large row published"
    );

    let letters = topics::read_all(&stack.brokers(), "dlq.order").await?;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let copy = letter_for(&letters, "orders")?;
    assert_eq!(copy.header(dlq_headers::TRUNCATED), Some("true"));
    assert_eq!(copy.header(dlq_headers::ORIGINAL_SIZE), Some("50000"));
    let kept = copy.payload.as_ref().map_or(0, Vec::len);
    assert!(kept > 15_000 && kept < 20_000, "truncated to fit: {kept}");
    assert!(
        copy.header(headers::ERROR)
            .unwrap_or_default()
            .contains("20000-byte limit"),
        "{:?}",
        copy.header(headers::ERROR)
    );
    assert_eq!(db.dead_rows().await?.len(), 1);
    Ok(())
}

/// The whole saga: a poison row in Order's outbox (2 MB, more than any
/// producer default allows) does not hold back the order placed right after
/// it, which completes within 10 s; the poison row is in `dlq.order`.
#[tokio::test]
async fn an_order_placed_behind_a_poison_row_still_completes() -> anyhow::Result<()> {
    let stack = TestStack::builder().all_services().start().await?;
    let api = Api::new(&stack);

    // Behind the service's back, as a bug or a hand-made row would.
    let url = format!(
        "sqlite://{}",
        stack.service_data_dir("order").join("order.db").display()
    );
    let db = Db::connect(&url).await?;
    let mut uow = db.begin().await?;
    choreo_outbox::sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind("orders")
    .bind("poison")
    .bind(vec![b'p'; 2_000_000])
    .bind("[]")
    .bind(0_i64)
    .execute(uow.conn())
    .await?;
    uow.commit().await?;
    drop(db);

    let started = std::time::Instant::now();
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 1_000, "DE"))
        .await?;
    let order = api.wait_terminal(&id, Duration::from_secs(10)).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let letters = eventually(
        "the poison row dead-lettered",
        Duration::from_secs(10),
        || async {
            let letters = topics::read_all(&stack.brokers(), "dlq.order").await?;
            Ok((!letters.is_empty()).then_some(letters))
        },
    )
    .await?;
    let copy = letter_for(&letters, "orders")?;
    assert_eq!(copy.key.as_deref(), Some(&b"poison"[..]));
    assert_eq!(copy.header(dlq_headers::ORIGINAL_SIZE), Some("2000000"));
    assert!(copy.payload.as_ref().map_or(0, Vec::len) < 1_000_000);
    // The poison row is the one dead letter; every invariant holds.
    common::assert_reconciled(&stack, 1).await?;
    stack.shutdown().await;
    Ok(())
}

/// Records which events (by `total_minor`) were applied; panics on the one
/// with `total_minor == 1`.
#[derive(Default)]
struct Recording {
    applied: Mutex<Vec<i64>>,
    seen: Mutex<HashMap<i64, u32>>,
}

impl Handler for Recording {
    async fn handle(&self, _uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        let choreo_events::AnyEvent::Orders(choreo_events::OrdersEvent::OrderConfirmed(e)) =
            &msg.event
        else {
            return Err(HandlerError::permanent("unexpected event"));
        };
        *self.seen.lock().unwrap().entry(e.total_minor).or_default() += 1;
        if e.total_minor == 1 {
            panic!("boom on order {}", e.metadata.order_id);
        }
        self.applied.lock().unwrap().push(e.total_minor);
        Ok(())
    }
}

async fn confirmed(codec: &Codec, order_id: &str, total: i64) -> anyhow::Result<Vec<u8>> {
    let event = OrderConfirmed {
        metadata: EventMetadata::new(order_id, "test", None),
        total_minor: total,
        currency: "EUR".into(),
    };
    Ok(codec.encode(&event).await?)
}

async fn produce(
    producer: &FutureProducer,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<(i32, i64)> {
    let delivery = producer
        .send(
            FutureRecord::to(OrderConfirmed::TOPIC.name())
                .key(key)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivery.partition, delivery.offset))
}

/// A handler that panics: the message is dead-lettered with the panic's
/// text, the ones after it (fetched in the same batch) are applied, and
/// the consumer keeps running.
#[tokio::test]
async fn a_panicking_handler_dead_letters_its_message_and_the_partition_goes_on(
) -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let codec = Arc::new(Codec::new(&stack.registry_url()));
    let kafka = KafkaSettings::new(stack.brokers());
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;

    // Produced before the consumer starts, so they arrive as one batch.
    let order_id = uuid::Uuid::new_v4().to_string();
    let producer: FutureProducer = kafka.producer_config().create()?;
    let mut panicked_at = None;
    for total in [1, 2, 3] {
        let at = produce(
            &producer,
            &order_id,
            &confirmed(&codec, &order_id, total).await?,
        )
        .await?;
        if total == 1 {
            panicked_at = Some(at);
        }
    }

    let handler = Arc::new(Recording::default());
    let consumer = Consumer::new(
        ConsumerSpec::new("inventory", &["orders"]),
        kafka,
        codec,
        db,
        handler.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    eventually("the others applied", Duration::from_secs(60), || async {
        Ok((handler.applied.lock().unwrap().len() == 2).then_some(()))
    })
    .await?;
    let letters = eventually(
        "the panic dead-lettered",
        Duration::from_secs(10),
        || async {
            let letters = topics::read_all(&stack.brokers(), "dlq.inventory").await?;
            Ok((!letters.is_empty()).then_some(letters))
        },
    )
    .await?;
    assert!(!running.is_finished(), "the consumer survived the panic");
    shutdown.cancel();
    running.await??;

    assert_eq!(*handler.applied.lock().unwrap(), [2, 3]);
    assert!(
        handler.seen.lock().unwrap().get(&1).copied().unwrap_or(0) >= 2,
        "the panicking message was tried in the batch and then alone"
    );
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    let reason = letter.header(headers::ERROR).unwrap_or_default();
    assert!(reason.contains("handler panicked"), "{reason}");
    assert!(reason.contains("boom on order"), "{reason}");
    let (partition, offset) = panicked_at.unwrap_or_default();
    assert_eq!(
        letter.header(headers::SOURCE_PARTITION),
        Some(partition.to_string().as_str())
    );
    assert_eq!(
        letter.header(headers::SOURCE_OFFSET),
        Some(offset.to_string().as_str())
    );
    Ok(())
}

/// A message just under 1 MB that cannot be decoded: its dead-letter copy
/// (payload + `choreo.*` headers) would exceed `message.max.bytes`, so the
/// copy is truncated with its original size, and the valid event behind it
/// is processed.
#[tokio::test]
async fn a_dead_letter_too_large_to_copy_is_truncated_and_the_consumer_goes_on(
) -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let codec = Arc::new(Codec::new(&stack.registry_url()));
    let kafka = KafkaSettings::new(stack.brokers());
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;

    let order_id = uuid::Uuid::new_v4().to_string();
    // A producer that may send a little more than the consumer's DLQ
    // producer (default 1,000,000): the broker takes up to 1,048,588.
    let producer: FutureProducer = kafka
        .producer_config()
        .set("message.max.bytes", "1040000")
        .create()?;
    const NEAR_MB: usize = 999_950;
    produce(&producer, &order_id, &vec![0xff; NEAR_MB]).await?;
    produce(
        &producer,
        &order_id,
        &confirmed(&codec, &order_id, 2).await?,
    )
    .await?;

    let handler = Arc::new(Recording::default());
    let consumer = Consumer::new(
        ConsumerSpec::new("inventory", &["orders"]),
        kafka,
        codec,
        db,
        handler.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    eventually(
        "the valid event applied",
        Duration::from_secs(60),
        || async { Ok((handler.applied.lock().unwrap().len() == 1).then_some(())) },
    )
    .await?;
    let letters = eventually(
        "the bad bytes dead-lettered",
        Duration::from_secs(10),
        || async {
            let letters = topics::read_all(&stack.brokers(), "dlq.inventory").await?;
            Ok((!letters.is_empty()).then_some(letters))
        },
    )
    .await?;
    shutdown.cancel();
    running.await??;

    assert_eq!(*handler.applied.lock().unwrap(), [2]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.header(dlq_headers::TRUNCATED), Some("true"));
    assert_eq!(
        letter.header(dlq_headers::ORIGINAL_SIZE),
        Some(NEAR_MB.to_string().as_str())
    );
    let kept = letter.payload.as_ref().map_or(0, Vec::len);
    assert!(
        kept < NEAR_MB && kept > NEAR_MB - 2000,
        "cut just enough: {kept}"
    );
    assert!(letter.header(headers::ERROR).is_some());
    assert_eq!(letter.key.as_deref(), Some(order_id.as_bytes()));

    // The cut copy is shown as such and never replayed.
    let conn = Connection::new(stack.brokers(), stack.registry_url());
    let mut listed = Vec::new();
    choreo_cli::dlq::run_list(
        &conn,
        Some("inventory"),
        choreo_cli::Output::plain(),
        &mut listed,
        &mut Progress::hidden(),
    )
    .await?;
    let listed = String::from_utf8(listed)?;
    assert!(
        listed.contains(&format!("truncated copy of {NEAR_MB} bytes")),
        "{listed}"
    );
    // The replay every service serves (`POST /dlq/replay`), run here
    // without one: the consumer is in this process.
    let settings = choreo_bus::KafkaSettings::new(stack.brokers());
    let refused = choreo_bus::dlq::replay(&settings, "inventory", Which::Offset(0))
        .await
        .expect_err("a truncated copy is not replayed");
    assert!(
        matches!(refused, ReplayError::Truncated { size, .. } if size == NEAR_MB as u64),
        "{refused}"
    );
    assert!(refused.to_string().contains("truncated copy"), "{refused}");
    let all = choreo_bus::dlq::replay(&settings, "inventory", Which::All).await?;
    assert!(all.replayed.is_empty(), "{all:?}");
    assert_eq!(all.skipped.len(), 1, "{all:?}");
    assert!(
        all.skipped[0].dead_letter == "dlq.inventory/0/0"
            && all.skipped[0].reason.contains("truncated copy"),
        "{all:?}"
    );
    let orders = topics::read_all(&stack.brokers(), "orders").await?;
    assert_eq!(orders.len(), 2, "nothing re-produced");
    Ok(())
}
