//! The foundation works end to end: an event encoded in the Confluent wire
//! format against `choreo-registry`, produced to Kafka, comes back decoded
//! to the same value through a consumer group; and Debian's kcat talks
//! to Kafka.

use std::time::Duration;

use choreo_testkit::TestStack;

mod common;

#[tokio::test]
async fn avro_round_trip_through_registry_and_broker() -> anyhow::Result<()> {
    let stack = TestStack::builder().start().await?;
    common::avro_round_trip(&stack).await
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
