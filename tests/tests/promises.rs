//! README promises, each with a test that fails when the promise does:
//! retention purges what it says when it says; a decodable dead letter,
//! replayed once its cause is fixed, is processed once — however often it
//! is replayed.

use std::time::Duration;

use choreo_bus::Codec;
use choreo_cli::dlq::{self, Which};
use choreo_cli::output::Progress;
use choreo_cli::Connection;
use choreo_events::{reasons, Event, EventMetadata, StockReservationFailed};
use choreo_outbox::Db;
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, topics, TestStack};
use serde_json::json;

mod common;

const SETTLE: Duration = Duration::from_secs(30);

async fn count(db: &Db, sql: &str) -> anyhow::Result<i64> {
    let mut uow = db.begin().await?;
    let n: i64 = choreo_outbox::sqlx::query_scalar(sql)
        .fetch_one(uow.conn())
        .await?;
    uow.rollback().await?;
    Ok(n)
}

/// `CHOREO_RETENTION_SECS` and `CHOREO_RETENTION_INTERVAL_SECS`: Order's
/// published outbox rows and inbox entries of a finished order are purged
/// by the running service once older than the setting, and not before.
#[tokio::test]
async fn retention_purges_published_rows_and_inbox_entries_once_they_are_old() -> anyhow::Result<()>
{
    const KEEP_MS: i64 = 8_000;
    let stack = TestStack::builder()
        .all_services()
        .env(
            "order",
            "CHOREO_RETENTION_SECS",
            (KEEP_MS / 1000).to_string(),
        )
        .env("order", "CHOREO_RETENTION_INTERVAL_SECS", "1")
        .start()
        .await?;
    let api = Api::new(&stack);
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 100, "DE"))
        .await?;
    let order = api.wait_terminal(&id, SETTLE).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");

    let url = format!(
        "sqlite://{}",
        stack.service_data_dir("order").join("order.db").display()
    );
    let db = Db::connect(&url).await?;
    // The order's rows, and when the youngest of them was written.
    let outbox = count(&db, "SELECT COUNT(*) FROM outbox").await?;
    let inbox = count(&db, "SELECT COUNT(*) FROM inbox").await?;
    let youngest = count(
        &db,
        "SELECT MAX(t) FROM (SELECT MAX(published_at) AS t FROM outbox \
         UNION ALL SELECT MAX(seen_at) AS t FROM inbox)",
    )
    .await?;
    assert!(outbox >= 2 && inbox >= 3, "outbox {outbox}, inbox {inbox}");
    eventually("the rows purged", SETTLE, || async {
        let left = count(&db, "SELECT COUNT(*) FROM outbox").await?
            + count(&db, "SELECT COUNT(*) FROM inbox").await?;
        Ok((left == 0).then_some(()))
    })
    .await?;
    let purged_by = chrono_ms();
    // Not before the setting: the youngest row had reached its age.
    assert!(
        purged_by >= youngest + KEEP_MS,
        "purged {} ms after the youngest row was written, under the {KEEP_MS} ms setting",
        purged_by - youngest
    );
    // The order itself stays.
    assert_eq!(api.order(&id).await?["status"], "CONFIRMED");
    stack.shutdown().await;
    Ok(())
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A decodable event dead-lettered for a cause that is then fixed (it
/// arrived for an order Order did not know yet), replayed twice: it is
/// applied once (one timeline entry, one cancellation), never
/// dead-lettered again, and every invariant holds.
#[tokio::test]
async fn a_replayed_dead_letter_is_processed_exactly_once() -> anyhow::Result<()> {
    let mut stack = TestStack::builder().all_services().start().await?;
    let api = Api::new(&stack);
    let conn = Connection::new(stack.brokers(), stack.registry_url());
    let id = format!("replay-{}", uuid::Uuid::new_v4());

    // Too early: Order does not know the order yet.
    let failed = StockReservationFailed {
        metadata: EventMetadata::new(&id, "inventory", None),
        reason: reasons::OUT_OF_STOCK.into(),
        missing_skus: vec!["WIDGET-1".into()],
    };
    let bytes = Codec::new(&stack.registry_url()).encode(&failed).await?;
    common::produce(&stack, StockReservationFailed::TOPIC.name(), &id, &bytes).await?;
    let letter = eventually("the early event in dlq.order", SETTLE, || async {
        let letters = dlq::list(&conn, Some("order"), &mut Progress::hidden()).await?;
        Ok(letters.into_iter().next())
    })
    .await?;
    assert!(letter.reason.contains("unknown order"), "{}", letter.reason);

    // The cause is fixed: the order exists, waiting on Inventory.
    stack.stop_service("inventory", 0).await;
    let cmd = json!({
        "type": "PlaceOrder", "order_id": id, "customer_id": "alice",
        "customer_email": "alice@example.com",
        "items": [{"sku": "WIDGET-1", "quantity": 1, "unit_price_minor": 100}],
        "currency": "EUR",
        "shipping_address": {"name": "Ada", "line1": "1 Way", "city": "Berlin",
                             "postal_code": "10115", "country": "DE"}
    });
    common::produce(&stack, "order-requests", &id, cmd.to_string().as_bytes()).await?;
    eventually("the order placed", SETTLE, || async {
        Ok(api
            .order(&id)
            .await
            .ok()
            .filter(|o| o["status"] == "PENDING"))
    })
    .await?;

    // Replayed twice: the first applies it, the second is a duplicate.
    for _ in 0..2 {
        let replayed = dlq::replay(
            &common::replay_target(&stack, "order")?,
            Which::Offset(letter.record.offset),
        )
        .await?;
        assert_eq!(replayed.replayed.len(), 1, "{replayed:?}");
    }
    let order = api.wait_terminal(&id, SETTLE).await?;
    assert_eq!(
        (order["status"].as_str(), order["reason"].as_str()),
        (Some("CANCELLED"), Some("OUT_OF_STOCK")),
        "{order}"
    );
    // Both replays consumed (the group is past them), then counted.
    stack.restart_service("inventory", 0).await?;
    topics::wait_groups_caught_up(&stack.brokers(), SETTLE).await?;
    let order = api.order(&id).await?;
    let entries = order["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|e| e["event_id"] == failed.metadata.event_id.as_str())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(entries, 1, "applied once: {}", order["timeline"]);
    let letters = dlq::list(&conn, Some("order"), &mut Progress::hidden()).await?;
    assert_eq!(letters.len(), 1, "not dead-lettered again");
    // One cancellation; stock, shipment, payment and mail as for any
    // cancelled order; the early event is the one dead letter.
    common::assert_reconciled(&stack, 1).await?;
    stack.shutdown().await;
    Ok(())
}

/// Communication's replica, lost with its database, is rebuilt from the
/// `orders` topic by `choreo-communication rebuild-replica`: an order whose
/// `OrderPlaced` was consumed before the loss is still mailed when it
/// completes after it (without the rebuild its confirmation would be a
/// dead letter: no `OrderPlaced` seen).
#[tokio::test]
async fn a_lost_replica_is_rebuilt_from_the_topic() -> anyhow::Result<()> {
    let mut stack = TestStack::builder().all_services().start().await?;
    let api = Api::new(&stack);
    // The saga waits at the courier while Communication records the order.
    stack.stop_service("courier", 0).await;
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 3, 250, "DE"))
        .await?;
    let data = stack.service_data_dir("communication");
    let db_path = data.join("communication.db");
    let replica_rows = |path: std::path::PathBuf, id: String| async move {
        let db = Db::connect(&format!("sqlite://{}", path.display())).await?;
        let mut uow = db.begin().await?;
        let n: i64 = choreo_outbox::sqlx::query_scalar(
            "SELECT COUNT(*) FROM orders_replica WHERE order_id = $1",
        )
        .bind(&id)
        .fetch_one(uow.conn())
        .await?;
        uow.rollback().await?;
        anyhow::Ok(n)
    };
    eventually("the order in Communication's replica", SETTLE, || async {
        Ok((replica_rows(db_path.clone(), id.clone()).await? == 1).then_some(()))
    })
    .await?;

    // The database is lost.
    stack.stop_service("communication", 0).await;
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("communication.db{suffix}"));
        if file.exists() {
            std::fs::remove_file(&file)?;
        }
    }
    let out = tokio::process::Command::new(choreo_testkit::bin_dir().join("choreo-communication"))
        .arg("rebuild-replica")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHOREO_BROKERS", stack.brokers())
        .env("CHOREO_REGISTRY_URL", stack.registry_url())
        .env("CHOREO_DATA_DIR", &data)
        .output()
        .await?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rebuild-replica: {printed}");
    assert_eq!(
        replica_rows(db_path.clone(), id.clone()).await?,
        1,
        "{printed}"
    );

    stack.restart_service("communication", 0).await?;
    stack.restart_service("courier", 0).await?;
    let order = api.wait_terminal(&id, SETTLE).await?;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let mail = eventually("the confirmation mail", SETTLE, || async {
        Ok(api.mail_files(&id).into_iter().next())
    })
    .await?;
    let text = std::fs::read_to_string(&mail)?.replace("=\r\n", "");
    assert!(
        text.contains("7.50 EUR"),
        "the total from the replica: {text}"
    );
    common::assert_reconciled(&stack, 0).await?;
    stack.shutdown().await;
    Ok(())
}
