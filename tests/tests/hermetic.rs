//! Test stacks are hermetic: what the runner has exported does not reach
//! their children. This file holds one test, so the variables it sets on
//! its own process touch nothing else.

use std::time::Duration;

use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, TestStack};

#[tokio::test]
async fn the_runners_environment_does_not_reach_a_test_stack() -> anyhow::Result<()> {
    // Each of these, inherited, would break the saga: Order on a database
    // that does not exist, a deadline that fires at once, mail to nowhere,
    // a JVM option the broker cannot start with.
    for (var, value) in [
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing"),
        ("CHOREO_ORDER_DEADLINE_MS", "1"),
        ("CHOREO_SMTP_URL", "smtp://127.0.0.1:1"),
        ("JAVA_TOOL_OPTIONS", "-Xmx1k"),
    ] {
        std::env::set_var(var, value);
    }
    let stack = TestStack::builder().all_services().start().await?;
    let api = Api::new(&stack);
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 100, "DE"))
        .await?;
    let order = api.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    eventually(
        "the mail in the stack's folder",
        Duration::from_secs(10),
        || async { Ok((api.mail_files(&id).len() == 1).then_some(())) },
    )
    .await?;
    stack.shutdown().await;
    Ok(())
}
