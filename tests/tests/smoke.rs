//! The foundation works end to end: an event encoded in the Confluent wire
//! format against `choreo-registry`, produced to Kafka, comes back decoded
//! to the same value through a consumer group; and Debian's kcat talks
//! to Kafka.

use std::time::Duration;

use choreo_bus::{Codec, KafkaSettings};
use choreo_events::{Event, EventMetadata, OrderConfirmed};
use choreo_testkit::TestStack;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

#[tokio::test]
async fn avro_round_trip_through_registry_and_broker() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
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

#[tokio::test]
async fn kcat_produces_and_consumes() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    let line = format!(
        r#"{{"type":"CancelOrder","order_id":"{}"}}"#,
        uuid::Uuid::new_v4()
    );
    let mut produce = tokio::process::Command::new(choreo_testkit::kcat())
        .args([
            "-b",
            &stack.brokers(),
            "-P",
            "-t",
            "order-requests",
            "-k",
            "k1",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = produce.stdin.take().expect("stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), produce.wait()).await??;
    assert!(status.success(), "kcat -P failed: {status}");

    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(choreo_testkit::kcat())
            .args([
                "-b",
                &stack.brokers(),
                "-C",
                "-t",
                "order-requests",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k %s\n",
            ])
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("k1 {line}")),
        "kcat read back: {stdout}"
    );
    Ok(())
}
