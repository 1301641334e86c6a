//! Hostile messages on every consumed topic, from a generator: bytes that
//! are not UTF-8, not Confluent-Avro, an unknown schema id, an empty value,
//! a tombstone, a key full of escape sequences, and values at the size
//! limit. Whatever arrives, every consumer dead-letters what it cannot
//! read, its group catches up (nothing stalls), an order placed right
//! after completes within 10 s, and `choreo reconcile` finds every
//! invariant intact.

use std::time::{Duration, Instant};

use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, topics, TestStack};
use rdkafka::producer::{FutureProducer, FutureRecord};

mod common;

/// The services' producer `message.max.bytes` (librdkafka's default): what
/// every event they publish, dead-letter copies included, must fit in.
const LIMIT: usize = 1_000_000;

/// The broker's `message.max.bytes` (Kafka's default, 1 MiB + 12): the
/// largest record batch a topic takes from any producer, so the most a
/// consumer can ever be handed.
const BROKER_LIMIT: usize = 1_048_588;

/// `(name, key, value)` of each hostile message for one topic.
fn hostile(topic: &str) -> Vec<(String, Vec<u8>, Option<Vec<u8>>)> {
    let key = |what: &str| format!("hostile-{topic}-{what}").into_bytes();
    vec![
        (
            "not-utf8".into(),
            key("not-utf8"),
            Some(vec![0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]),
        ),
        (
            "not-avro".into(),
            key("not-avro"),
            Some(b"\x07hello".to_vec()),
        ),
        (
            "unknown-schema".into(),
            key("unknown-schema"),
            Some(vec![0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3]),
        ),
        (
            "truncated".into(),
            key("truncated"),
            Some(vec![0, 0, 0, 0, 1]),
        ),
        ("empty".into(), key("empty"), Some(Vec::new())),
        ("tombstone".into(), key("tombstone"), None),
        (
            "escape-key".into(),
            format!("hostile-{topic}-\u{1b}[2J\u{1b}[H\n\u{202e}evil").into_bytes(),
            Some(b"\x07x".to_vec()),
        ),
        (
            "near-limit".into(),
            key("near-limit"),
            Some(vec![0x55; LIMIT - 2_000]),
        ),
        // Over the services' limit, under the broker's: a producer with a
        // larger `message.max.bytes` can write it; its dead-letter copy
        // cannot fit and is stored truncated.
        (
            "over-limit".into(),
            key("over-limit"),
            Some(vec![0x55; LIMIT + 40_000]),
        ),
    ]
}

/// Over the broker's limit: no producer gets it onto a topic.
fn over_broker_limit() -> Vec<u8> {
    vec![0x55; BROKER_LIMIT + 1_000]
}

#[tokio::test]
async fn hostile_messages_on_every_consumed_topic_never_stall_the_saga() -> anyhow::Result<()> {
    let stack = TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "120000")
        .start()
        .await?;
    let api = Api::new(&stack);
    // As large a batch as the broker takes, one record per batch.
    let producer: FutureProducer = choreo_bus::KafkaSettings::new(stack.brokers())
        .producer_config()
        .set("message.max.bytes", (BROKER_LIMIT + 100_000).to_string())
        .set("linger.ms", "0")
        .create()?;
    let mut consumed: Vec<&str> = choreo_events::CONSUMERS
        .iter()
        .flat_map(|(_, topics)| topics.iter().copied())
        .collect();
    consumed.sort_unstable();
    consumed.dedup();
    let mut sent = 0;
    for topic in &consumed {
        for (name, key, value) in hostile(topic) {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(&key);
            if let Some(v) = &value {
                record = record.payload(v);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("producing {name} to {topic}: {e}"))?;
            sent += 1;
        }
    }

    // Over the broker's limit: refused by the broker, so it never reaches a
    // consumer.
    for topic in &consumed {
        let value = over_broker_limit();
        let refused = producer
            .send(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .key(b"hostile-over-broker-limit")
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await;
        match refused {
            Err((rdkafka::error::KafkaError::MessageProduction(code), _)) => assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge,
                "{topic}"
            ),
            other => panic!("{topic}: a record over the broker's limit: {other:?}"),
        }
    }

    // The saga goes on: an order placed right after completes within 10 s.
    let placed_at = Instant::now();
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 100, "DE"))
        .await?;
    let order = api.wait_terminal(&id, Duration::from_secs(10)).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    println!(
        "{sent} hostile messages on {} topics; the next order confirmed in {:.1}s",
        consumed.len(),
        placed_at.elapsed().as_secs_f64()
    );

    // Nothing stalls: every group reads past all of it.
    topics::wait_groups_caught_up(&stack.brokers(), Duration::from_secs(60)).await?;

    // Every consumer dead-lettered every hostile message of each topic it
    // reads, with a reason.
    for (service, topics_read) in choreo_events::CONSUMERS {
        let dlq = choreo_events::dlq_topic(service);
        let expected: usize = topics_read.iter().map(|t| hostile(t).len()).sum();
        let records = eventually(
            &format!("{expected} records on {dlq}"),
            Duration::from_secs(60),
            || {
                let brokers = stack.brokers();
                let dlq = dlq.clone();
                async move {
                    let r = topics::read_all(&brokers, &dlq).await?;
                    Ok((r.len() >= expected).then_some(r))
                }
            },
        )
        .await?;
        for topic in topics_read.iter() {
            for (name, key, _) in hostile(topic) {
                let letter = records
                    .iter()
                    .find(|r| r.key.as_deref() == Some(key.as_slice()))
                    .unwrap_or_else(|| panic!("{service}: no dead letter for {name} on {topic}"));
                assert_eq!(
                    letter.header("choreo.source.topic"),
                    Some(*topic),
                    "{service} {name}"
                );
                assert!(
                    letter.header("choreo.error").is_some_and(|e| !e.is_empty()),
                    "{service} {name}: a reason"
                );
                if name == "over-limit" {
                    assert_eq!(
                        letter.header(choreo_bus::consumer::dlq_headers::TRUNCATED),
                        Some("true"),
                        "{service} {name}"
                    );
                    assert_eq!(
                        letter.header(choreo_bus::consumer::dlq_headers::ORIGINAL_SIZE),
                        Some((LIMIT + 40_000).to_string().as_str()),
                        "{service} {name}"
                    );
                }
            }
        }
    }
    // The invariants hold, with exactly the dead letters above and no more.
    let expected_dlq: usize = choreo_events::CONSUMERS
        .iter()
        .flat_map(|(_, topics)| topics.iter())
        .map(|t| hostile(t).len())
        .sum();
    common::assert_reconciled(&stack, expected_dlq).await?;

    // Every service is still up and ready.
    for service in choreo_events::SERVICES {
        let url = format!("{}/readyz", stack.service_url(service));
        let status = reqwest::get(&url).await?.status();
        assert!(status.is_success(), "{service} /readyz {status}");
    }
    stack.shutdown().await;
    Ok(())
}
