//! Shared by several end-to-end suites (each includes it with `mod common;`
//! and uses part of it).
#![allow(dead_code)]

use choreo_cli::output::Progress;
use choreo_cli::reconcile::{self, Endpoints, Reconciler};
use choreo_cli::trace::{self, TraceArgs};
use choreo_cli::{Connection, Output};
use choreo_testkit::{repo_root, TestStack};

/// The HTTP endpoints of a test stack's five services.
pub fn endpoints(stack: &TestStack) -> Endpoints {
    Endpoints {
        order: stack.service_url("order"),
        inventory: stack.service_url("inventory"),
        payment: stack.service_url("payment"),
        courier: stack.service_url("courier"),
        communication: stack.service_url("communication"),
    }
}

/// `choreo reconcile`'s checker for a test stack: its broker, registry and
/// services, the seed stock and balances, Communication's mail folder.
/// Callers add `expect_dlq` and run it.
pub fn reconciler(stack: &TestStack) -> anyhow::Result<Reconciler> {
    let seeds = repo_root().join("deploy/seed");
    Ok(Reconciler::new(
        Connection::new(stack.brokers(), stack.registry_url()),
        endpoints(stack),
    )
    .initial_stock(reconcile::load_stock(&seeds.join("stock.json"))?)
    .initial_balances(reconcile::load_balances(&seeds.join("accounts.json"))?)
    .mail_dir(stack.service_data_dir("communication").join("mail")))
}

/// Runs the checker until it settles (at most 120 s) and fails the test
/// with every violation, and every dead letter, when any violation is left;
/// `dead_letters` is the number of dead letters the test itself caused.
pub async fn assert_reconciled(
    stack: &TestStack,
    dead_letters: usize,
) -> anyhow::Result<reconcile::Report> {
    let report = reconciler(stack)?
        .expect_dlq(dead_letters)
        .run_settled(
            std::time::Duration::from_secs(120),
            &mut choreo_cli::output::Progress::hidden(),
        )
        .await?;
    if !report.is_clean() {
        let letters = choreo_cli::dlq::list(
            &Connection::new(stack.brokers(), stack.registry_url()),
            None,
            &mut choreo_cli::output::Progress::hidden(),
        )
        .await?;
        let letters: Vec<String> = letters
            .iter()
            .map(|l| format!("{} {}: {}", l.record.position(), l.source(), l.reason))
            .collect();
        anyhow::bail!(
            "choreo reconcile: {} violations over {} orders:\n{:#?}\nall {} dead letters:\n{}",
            report.violations.len(),
            report.orders,
            report.violations,
            letters.len(),
            letters.join("\n")
        );
    }
    Ok(report)
}

/// An event encoded in the Confluent wire format against the stack's
/// registry (its id the registered one), produced to Kafka, comes back
/// decoded to the same value through a consumer group.
pub async fn avro_round_trip(stack: &TestStack) -> anyhow::Result<()> {
    use std::time::Duration;

    use choreo_bus::{Codec, KafkaSettings};
    use choreo_events::{Event, EventMetadata, OrderConfirmed};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::Message;

    let codec = Codec::new(&stack.registry_url());
    let order_id = uuid::Uuid::new_v4().to_string();
    let event = OrderConfirmed {
        metadata: EventMetadata::new(&order_id, "smoke-test", None),
        total_minor: 4_200,
        currency: "EUR".into(),
    };
    let bytes = codec.encode(&event).await?;
    assert_eq!(bytes[0], 0, "Confluent magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into()?);
    let registered: serde_json::Value = reqwest::get(format!(
        "{}/subjects/{}/versions/latest",
        stack.registry_url(),
        OrderConfirmed::subject()
    ))
    .await?
    .json()
    .await?;
    assert_eq!(
        registered["id"], id,
        "schema id in the bytes is the registered one"
    );

    let kafka = KafkaSettings::new(stack.brokers());
    let producer: FutureProducer = kafka.producer_config().create()?;
    producer
        .send(
            FutureRecord::to("orders").key(&order_id).payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;

    let consumer: StreamConsumer = kafka.consumer_config("smoke-group").create()?;
    consumer.subscribe(&["orders"])?;
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    assert_eq!(msg.key(), Some(order_id.as_bytes()));
    let decoded = codec.decode("orders", "orders/0/0", msg.payload()).await?;
    assert_eq!(decoded, event.clone().into_any());
    Ok(())
}

/// `choreo trace ORDER_ID` on a test stack: the saga and its plain text.
pub async fn trace_text(
    stack: &TestStack,
    order_id: &str,
) -> anyhow::Result<(choreo_cli::saga::Saga, String)> {
    let mut out = Vec::new();
    let saga = trace::run_trace(
        &Connection::new(stack.brokers(), stack.registry_url()),
        &TraceArgs {
            order_id: order_id.to_owned(),
        },
        Output::plain(),
        &mut out,
        &mut Progress::hidden(),
    )
    .await?;
    Ok((saga, String::from_utf8(out)?))
}

/// Produces one record with `key` and `value` to `topic` of `stack`.
pub async fn produce(
    stack: &TestStack,
    topic: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = choreo_bus::KafkaSettings::new(stack.brokers())
        .producer_config()
        .create()?;
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
    Ok(())
}

/// Where `choreo dlq replay` asks `service` of `stack`, with its token.
pub fn replay_target(
    stack: &TestStack,
    service: &str,
) -> anyhow::Result<choreo_cli::dlq::ReplayTarget> {
    choreo_cli::dlq::ReplayTarget::new(
        service,
        Some(&stack.service_url(service)),
        stack.admin_token().expose(),
    )
}
