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

/// The producer's `message.max.bytes` (librdkafka's default, which the
/// services use): a value this size with its key and headers is the most
/// a consumer can be handed.
const LIMIT: usize = 1_000_000;

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
    ]
}

#[tokio::test]
async fn hostile_messages_on_every_consumed_topic_never_stall_the_saga() -> anyhow::Result<()> {
    let stack = TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "120000")
        .start()
        .await?;
    let api = Api::new(&stack);
    let producer: FutureProducer = choreo_bus::KafkaSettings::new(stack.brokers())
        .producer_config()
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
            }
        }
    }
    // The invariants hold, with exactly the dead letters above and no more.
    let expected_dlq: usize = choreo_events::CONSUMERS
        .iter()
        .flat_map(|(_, topics)| topics.iter())
        .map(|t| hostile(t).len())
        .sum();
    let report = common::reconciler(&stack)?
        .expect_dlq(expected_dlq)
        .run_settled(
            Duration::from_secs(60),
            &mut choreo_cli::output::Progress::hidden(),
        )
        .await?;
    assert!(
        report.is_clean(),
        "{} violations: {:?}",
        report.violations.len(),
        report.violations
    );

    // Every service is still up and ready.
    for service in choreo_events::SERVICES {
        let url = format!("{}/readyz", stack.service_url(service));
        let status = reqwest::get(&url).await?.status();
        assert!(status.is_success(), "{service} /readyz {status}");
    }
    stack.shutdown().await;
    Ok(())
}
