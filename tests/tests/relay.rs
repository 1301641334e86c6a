//! The real outbox relay against the real broker: per-key order over many
//! keys, partitions and units of work, and rows marked published only once
//! the broker has acknowledged them — shown by a broker that is down when
//! the rows are committed, so every first send fails. (Kafka bounds
//! `min.insync.replicas` by the replica count, so a one-node broker cannot
//! be made to refuse `acks=all` writes with NOT_ENOUGH_REPLICAS.)

use std::collections::HashMap;
use std::time::Duration;

use choreo_bus::{headers, KafkaSettings, Relay};
use choreo_outbox::{Db, OutboxMessage};
use choreo_testkit::topics::{self, Record};
use choreo_testkit::{eventually, TestStack};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio_util::sync::CancellationToken;

const KEYS: usize = 8;
const PER_KEY: usize = 60;

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(KafkaSettings::new(brokers).admin_config().create()?)
}

async fn create_topic(brokers: &str, name: &str, config: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut topic = NewTopic::new(name, 6, TopicReplication::Fixed(1));
    for (k, v) in config {
        topic = topic.set(k, v);
    }
    for result in admin(brokers)?
        .create_topics([&topic], &AdminOptions::new())
        .await?
    {
        result.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    // Created is not yet visible: wait until the broker's metadata lists
    // every partition with a leader, so a producer with a short metadata
    // wait does not take the new topic for one that does not exist.
    let brokers = brokers.to_owned();
    let name = name.to_owned();
    eventually(
        "the new topic in the metadata",
        Duration::from_secs(30),
        || {
            let (brokers, name) = (brokers.clone(), name.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    use rdkafka::consumer::{BaseConsumer, Consumer};
                    let consumer: BaseConsumer = KafkaSettings::new(&brokers)
                        .consumer_config("relay-test-metadata")
                        .create()?;
                    let md = consumer.fetch_metadata(Some(&name), Duration::from_secs(5))?;
                    let ready = md.topics().iter().any(|t| {
                        t.name() == name
                            && t.error().is_none()
                            && t.partitions().len() == 6
                            && t.partitions()
                                .iter()
                                .all(|p| p.leader() >= 0 && p.error().is_none())
                    });
                    anyhow::Ok(ready.then_some(()))
                })
                .await?
            }
        },
    )
    .await
}

/// `KEYS × per_key` rows, the keys interleaved, committed in units of work
/// of `per_key / chunks` rows per key; the payload of the n-th row of key k
/// is `k:n`.
async fn append_rows(db: &Db, topic: &str, per_key: usize, chunks: usize) -> anyhow::Result<()> {
    for chunk in 0..chunks {
        let mut uow = db.begin().await?;
        for n in (chunk * per_key / chunks)..((chunk + 1) * per_key / chunks) {
            for k in 0..KEYS {
                uow.append(OutboxMessage {
                    topic: topic.into(),
                    key: format!("key-{k}"),
                    payload: format!("{k}:{n}").into_bytes(),
                    headers: vec![(headers::EVENT_TYPE.into(), "Test".into())],
                })
                .await?;
            }
        }
        uow.commit().await?;
    }
    Ok(())
}

/// Every key's payloads, exactly once each and in the order appended.
fn assert_in_order_once(records: &[Record], per_key: usize) {
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for r in records {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let payload =
            String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned();
        by_key.entry(key).or_default().push(payload);
    }
    assert_eq!(by_key.len(), KEYS, "{:?}", by_key.keys());
    for k in 0..KEYS {
        let expected: Vec<String> = (0..per_key).map(|n| format!("{k}:{n}")).collect();
        assert_eq!(by_key[&format!("key-{k}")], expected, "key-{k}");
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(since.map(|d| d.as_millis()).unwrap_or_default()).unwrap_or(i64::MAX)
}

async fn sqlite_db(dir: &tempfile::TempDir) -> anyhow::Result<Db> {
    Ok(Db::connect(&format!("sqlite://{}/relay.db", dir.path().display())).await?)
}

#[tokio::test]
async fn every_row_is_published_once_in_order_per_key() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let brokers = stack.brokers();
    create_topic(&brokers, "relay-order", &[]).await?;
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;

    let relay = Relay::new(db.clone(), &KafkaSettings::new(&brokers), "order")?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    // Committed while the relay runs: batches and waves of every size.
    append_rows(&db, "relay-order", PER_KEY, 4).await?;
    eventually("the outbox emptied", Duration::from_secs(60), || async {
        Ok((db.outbox_backlog().await? == 0).then_some(()))
    })
    .await?;
    let records = topics::read_all(&brokers, "relay-order").await?;
    assert_eq!(records.len(), KEYS * PER_KEY);
    assert_in_order_once(&records, PER_KEY);

    shutdown.cancel();
    running.await??;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_broker_that_is_down_leaves_every_row_unpublished_until_it_is_back() -> anyhow::Result<()>
{
    let mut stack = TestStack::builder().start().await?;
    let brokers = stack.brokers();
    create_topic(&brokers, "relay-down", &[]).await?;
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;

    // Short delivery timeouts, so the relay sees its sends fail and retries
    // while the broker is away.
    let kafka = KafkaSettings::new(&brokers).set("producer.message.timeout.ms", "2000");
    let relay = Relay::new(db.clone(), &kafka, "order")?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // Two rows per key: two waves, each failing within 2 s, so a relay
    // that took a failed send for a published one would have settled them
    // all well within the wait.
    stack.stop_broker().await;
    append_rows(&db, "relay-down", 2, 1).await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        db.outbox_backlog().await?,
        (KEYS * 2) as i64,
        "rows marked published while the broker was down"
    );

    stack.start_broker().await?;
    eventually("the outbox emptied", Duration::from_secs(90), || async {
        Ok((db.outbox_backlog().await? == 0).then_some(()))
    })
    .await?;
    let records = topics::read_all(&brokers, "relay-down").await?;
    // A send whose acknowledgement was lost may go out twice (at least
    // once); per key, the first appearance of each row is in order.
    let mut first_seen: Vec<Record> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in records {
        if seen.insert((r.key.clone(), r.payload.clone())) {
            first_seen.push(r);
        }
    }
    assert_eq!(first_seen.len(), KEYS * 2);
    assert_in_order_once(&first_seen, 2);

    shutdown.cancel();
    running.await??;
    stack.shutdown().await;
    Ok(())
}

/// Shutdown publishes what was committed before it — here two and a half
/// batches, committed just before the stop — before `run` returns; a batch
/// whose only row is set aside does not stop the relay.
#[tokio::test]
async fn shutdown_publishes_every_row_committed_before_it() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let brokers = stack.brokers();
    create_topic(&brokers, "relay-drain", &[]).await?;
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;
    // A topic that does not exist is refused after a second, not after
    // librdkafka's default 30 s wait for it to appear.
    let kafka =
        KafkaSettings::new(&brokers).set("producer.topic.metadata.propagation.max.ms", "1000");
    let relay = Relay::new(db.clone(), &kafka, "order")?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // One row published first, so the producer has its metadata and its
    // idempotence id before the stop.
    let row = |n: usize| OutboxMessage {
        topic: "relay-drain".into(),
        key: format!("key-{n}"),
        payload: n.to_string().into_bytes(),
        headers: vec![(headers::EVENT_TYPE.into(), "Test".into())],
    };
    let mut uow = db.begin().await?;
    uow.append(row(0)).await?;
    uow.commit().await?;
    eventually(
        "the first row published",
        Duration::from_secs(60),
        || async { Ok((db.outbox_backlog().await? == 0).then_some(())) },
    )
    .await?;
    assert!(
        db.dead_rows().await?.is_empty(),
        "the first row was published, not set aside"
    );

    // A batch of nothing but a row that can never be published (its topic
    // does not exist): set aside, and the relay goes on.
    let before_ms = now_ms();
    let mut uow = db.begin().await?;
    uow.append(OutboxMessage {
        topic: "relay-no-such-topic".into(),
        ..row(0)
    })
    .await?;
    uow.commit().await?;
    eventually("the row set aside", Duration::from_secs(60), || async {
        Ok((db.dead_rows().await?.len() == 1).then_some(()))
    })
    .await?;
    let after_ms = now_ms();
    let letters = topics::read_all(&brokers, "dlq.order").await?;
    let [letter] = letters.as_slice() else {
        anyhow::bail!("expected one dead letter, got {}", letters.len());
    };
    assert_eq!(
        letter.header(headers::SOURCE_TOPIC),
        Some("relay-no-such-topic")
    );
    let failed_at: i64 = letter
        .header(headers::FAILED_AT)
        .unwrap_or_default()
        .parse()?;
    assert!(
        (before_ms..=after_ms).contains(&failed_at),
        "{failed_at} outside {before_ms}..={after_ms}"
    );

    // 2,500 rows (every key its own, so each batch is one wave), then the
    // stop at once: the relay is at most inside its first batch of 1,000.
    const ROWS: usize = 2_500;
    let mut uow = db.begin().await?;
    for n in 1..=ROWS {
        uow.append(row(n)).await?;
    }
    uow.commit().await?;
    shutdown.cancel();
    running.await??;
    assert_eq!(
        db.outbox_backlog().await?,
        0,
        "rows committed before the stop left unpublished"
    );
    let records = topics::read_all(&brokers, "relay-drain").await?;
    let payloads: std::collections::HashSet<Vec<u8>> =
        records.into_iter().filter_map(|r| r.payload).collect();
    assert_eq!(payloads.len(), ROWS + 1);

    stack.shutdown().await;
    Ok(())
}

/// A row exactly at the producer's limit (`message.max.bytes`, counted as
/// the relay counts a record) is published, not set aside: the limit is
/// inclusive, as it is for librdkafka and the broker.
#[tokio::test]
async fn a_row_exactly_at_the_producer_limit_is_published() -> anyhow::Result<()> {
    const LIMIT: usize = 20_000;
    let stack = TestStack::builder().start().await?;
    let brokers = stack.brokers();
    create_topic(&brokers, "relay-limit", &[]).await?;
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(&dir).await?;
    let kafka = KafkaSettings::new(&brokers).set("producer.message.max.bytes", LIMIT.to_string());
    let relay = Relay::new(db.clone(), &kafka, "order")?;

    let (key, event_type) = ("at-limit", (headers::EVENT_TYPE, "Test"));
    let header = [(event_type.0.len(), event_type.1.len())];
    let payload_len = LIMIT - choreo_outbox::record_size_bound(key.len(), 0, header);
    assert_eq!(
        choreo_outbox::record_size_bound(key.len(), payload_len, header),
        LIMIT
    );
    let mut uow = db.begin().await?;
    uow.append(OutboxMessage {
        topic: "relay-limit".into(),
        key: key.into(),
        payload: vec![b'x'; payload_len],
        headers: vec![(event_type.0.into(), event_type.1.into())],
    })
    .await?;
    uow.commit().await?;

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    eventually("the row settled", Duration::from_secs(60), || async {
        Ok((db.outbox_backlog().await? == 0).then_some(()))
    })
    .await?;
    shutdown.cancel();
    running.await??;
    assert_eq!(db.dead_rows().await?.len(), 0, "the row was set aside");
    let records = topics::read_all(&brokers, "relay-limit").await?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload.as_ref().map(Vec::len), Some(payload_len));

    stack.shutdown().await;
    Ok(())
}
