//! The `choreo` command end to end: the real broker, registry and service
//! binaries, and the command's library functions (or the built binary)
//! reading the topics. Two stacks: one for the happy and compensated sagas
//! (watch, trace, encode/decode, dead letters, reconcile), one with
//! services stopped on purpose (a stuck order, a hand-injected failure).

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use choreo_cli::dlq::{self, ReplayArgs};
use choreo_cli::order::{self, PlaceArgs};
use choreo_cli::output::Progress;
use choreo_cli::reconcile::{self, Check, Reconciler, Report};
use choreo_cli::trace::{self, StuckArgs};
use choreo_cli::watch::{self, WatchArgs};
use choreo_cli::{wire, Connection, Output};
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{bin_dir, eventually, kcat, repo_root, topics, TestStack};
use serde_json::Value;

mod common;

const SAGA: Duration = Duration::from_secs(60);

fn conn(stack: &TestStack) -> Connection {
    Connection::new(stack.brokers(), stack.registry_url())
}

fn seeds() -> (HashMap<String, i64>, HashMap<String, i64>) {
    let dir = repo_root().join("deploy/seed");
    (
        reconcile::load_stock(&dir.join("stock.json")).expect("stock seed"),
        reconcile::load_balances(&dir.join("accounts.json")).expect("accounts seed"),
    )
}

fn choreo() -> tokio::process::Command {
    tokio::process::Command::new(bin_dir().join("choreo"))
}

/// Runs the built `choreo` with the stack's addresses; returns (exit code,
/// stdout, stderr).
async fn run_choreo(stack: &TestStack, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        choreo()
            .args(args)
            .env("CHOREO_BROKERS", stack.brokers())
            .env("CHOREO_REGISTRY_URL", stack.registry_url())
            .env("CHOREO_ORDER_URL", stack.service_url("order"))
            .env("NO_COLOR", "1")
            .output(),
    )
    .await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Asserts `needles` occur in `text` in this order, each on a later line.
fn assert_in_order(text: &str, needles: &[&str]) {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0;
    for needle in needles {
        match lines[at..].iter().position(|l| l.contains(needle)) {
            Some(i) => at += i + 1,
            None => panic!("`{needle}` not found after line {at} in:\n{text}"),
        }
    }
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with `{needle}` in:\n{text}"))
}

async fn settled_report(reconciler: &Reconciler) -> anyhow::Result<Report> {
    // The saga is eventually consistent (a confirmed order's stock is
    // committed a moment after OrderConfirmed): re-check for a while.
    reconciler
        .run_settled(Duration::from_secs(30), &mut Progress::hidden())
        .await
}

#[tokio::test]
async fn follow_purchases_on_the_topics_and_reconcile() -> anyhow::Result<()> {
    let stack = TestStack::builder().all_services().start().await?;
    let api = Api::new(&stack);
    let conn = conn(&stack);

    // order place --wait, through the built binary.
    let (code, stdout, stderr) = run_choreo(
        &stack,
        &[
            "order",
            "place",
            "--customer",
            "alice",
            "--item",
            "WIDGET-1:2:1250",
            "--wait",
        ],
    )
    .await?;
    assert_eq!(code, 0, "order place failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let alice = lines[0].trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&alice).is_ok(),
        "order id line: {stdout}"
    );
    assert_eq!(lines[1], "CONFIRMED total 25.00 EUR");
    assert_eq!(api.order(&alice).await?["status"], "CONFIRMED");

    // watch --from-beginning --exit-at-end --order: the order's events.
    eventually("CustomerNotified for alice", SAGA, || async {
        let n = api.notifications(&alice).await?;
        Ok((!n.is_empty()).then_some(()))
    })
    .await?;
    let mut out = Vec::new();
    let printed = watch::run(
        &conn,
        &WatchArgs {
            topics: vec![],
            order_id: Some(alice.clone()),
            from_beginning: true,
            exit_at_end: true,
        },
        Output::plain(),
        &mut out,
    )
    .await?;
    let watched = String::from_utf8(out)?;
    assert_eq!(printed, 6, "{watched}");
    for step in [
        "OrderPlaced",
        "StockReserved",
        "ShipmentManifested",
        "PaymentCompleted",
        "OrderConfirmed",
        "CustomerNotified",
    ] {
        let line = line_with(&watched, step);
        assert!(line.contains(&alice), "{line}");
    }
    assert!(line_with(&watched, "OrderPlaced").contains("customer=alice"));
    assert!(line_with(&watched, "PaymentCompleted").contains("amount=25.00 EUR"));
    assert!(line_with(&watched, "ShipmentManifested").contains("tracking="));
    assert!(line_with(&watched, "CustomerNotified").contains("template=ORDER_CONFIRMED"));

    // trace a compensated order: bob cannot pay 25.00 (balance 5.00).
    let bob = api
        .place_order(&order_body("bob", "WIDGET-1", 2, 1_250, "DE"))
        .await?;
    let order = api.wait_terminal(&bob, SAGA).await?;
    assert_eq!(order["reason"], "PAYMENT_DECLINED", "{order}");
    let (saga, text) = eventually("bob's saga settled", SAGA, || async {
        let (saga, text) = common::trace_text(&stack, &bob).await?;
        Ok(saga.waiting.is_none().then_some((saga, text)))
    })
    .await?;
    assert_eq!(saga.events.len(), 8, "{text}");
    assert_in_order(
        &text,
        &[
            &format!("order {bob}"),
            "OrderPlaced",
            "StockReserved",
            "ShipmentManifested",
            "PaymentFailed",
            "ShipmentCancelled",
            "StockReleased",
            "OrderCancelled",
            "CustomerNotified",
            "state: CANCELLED(PAYMENT_DECLINED) after",
        ],
    );
    assert!(
        line_with(&text, "OrderPlaced")
            .trim_start()
            .starts_with("+0 ms"),
        "{text}"
    );
    for (event, producer, cause) in [
        ("StockReserved", "by inventory", "← OrderPlaced"),
        ("ShipmentManifested", "by courier", "← StockReserved"),
        ("PaymentFailed", "by payment", "← ShipmentManifested"),
        ("ShipmentCancelled", "by courier", "← PaymentFailed"),
        ("StockReleased", "by inventory", "← ShipmentCancelled"),
        ("OrderCancelled", "by order", "← StockReleased"),
        ("CustomerNotified", "by communication", "← OrderCancelled"),
    ] {
        let line = line_with(&text, event);
        assert!(line.contains(producer) && line.contains(cause), "{line}");
        let since = line.trim_start().split(' ').next().unwrap_or_default();
        let ms: i64 = since.trim_start_matches('+').parse().unwrap_or(-1);
        assert!(
            (0..SAGA.as_millis() as i64).contains(&ms),
            "timing in {line}"
        );
    }
    assert!(line_with(&text, "PaymentFailed").contains("reason=INSUFFICIENT_FUNDS"));
    assert!(!text.contains("waiting for"), "{text}");
    let times: Vec<i64> = saga
        .events
        .iter()
        .map(|e| saga.since_placed(e).expect("placed"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // encode → decode round trip, library and binary.
    let json = format!(r#"{{"order_id": "{bob}", "reason": "INSUFFICIENT_FUNDS"}}"#);
    let bytes = wire::encode(&conn, "payments", "PaymentFailed", &json).await?;
    assert_eq!(bytes[0], 0, "Confluent magic byte");
    let decoded = wire::decode(&conn, &bytes).await?;
    assert_eq!(decoded.event_type(), "PaymentFailed");
    assert_eq!(decoded.order_id(), bob);
    assert_eq!(decoded.to_json()["reason"], "INSUFFICIENT_FUNDS");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("failed.avro");
    let file_s = file.display().to_string();
    let (code, _, stderr) = run_choreo(
        &stack,
        &["encode", "payments", "PaymentFailed", &json, "-o", &file_s],
    )
    .await?;
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run_choreo(&stack, &["--json", "decode", &file_s]).await?;
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(v["event_type"], "PaymentFailed");
    assert_eq!(v["topic"], "payments");
    assert_eq!(v["event"]["metadata"]["order_id"], bob.as_str());
    assert_eq!(v["event"]["metadata"]["producer"], "cli");
    // Errors say what is valid.
    let (code, _, stderr) =
        run_choreo(&stack, &["encode", "payments", "PaymentFialed", &json]).await?;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("PaymentCompleted, PaymentFailed, PaymentRefunded"),
        "{stderr}"
    );

    // reconcile: a clean run has no violation…
    let (stock, balances) = seeds();
    let mail_dir = stack.service_data_dir("communication").join("mail");
    let reconciler = Reconciler::new(conn.clone(), common::endpoints(&stack))
        .initial_stock(stock.clone())
        .initial_balances(balances)
        .mail_dir(&mail_dir);
    let report = settled_report(&reconciler).await?;
    assert!(report.is_clean(), "violations: {:#?}", report.violations);
    assert_eq!(
        (report.orders, report.confirmed, report.cancelled),
        (2, 1, 1)
    );
    assert_eq!(report.skus_checked, stock.len());
    assert_eq!(report.customers_checked, 4);

    // …and finds a broken conservation law.
    let widget = api.stock("WIDGET-1").await?;
    let available = widget["available"].as_i64().unwrap_or_default();
    api.set_stock("WIDGET-1", available + 5).await?;
    let report = reconciler.run().await?;
    let broken: Vec<_> = report.of(Check::StockConservation).collect();
    assert_eq!(broken.len(), 1, "{:#?}", report.violations);
    assert_eq!(broken[0].subject.as_deref(), Some("WIDGET-1"));
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    // The command prints it and fails.
    let seed = repo_root().join("deploy/seed");
    let args = reconcile_args(&stack, &seed, &mail_dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_choreo(&stack, &args).await?;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        line_with(&stdout, "VIOLATION").contains("stock_conservation WIDGET-1"),
        "{stdout}"
    );
    assert!(stdout.contains("1 violation(s)"), "{stdout}");
    // With the changed stock as the initial stock, the law holds again.
    let mut fixed = stock.clone();
    fixed.insert("WIDGET-1".into(), stock["WIDGET-1"] + 5);
    let report = reconciler.clone().initial_stock(fixed).run().await?;
    assert!(report.is_clean(), "{:#?}", report.violations);

    // dlq list: garbage on `orders` is dead-lettered by its consumers.
    let mut child = tokio::process::Command::new(kcat())
        .args([
            "-b",
            &stack.brokers(),
            "-P",
            "-t",
            "orders",
            "-k",
            "poison-1",
            "-H",
            "origin=test",
        ])
        .stdin(Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"this is not avro\n").await?;
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert!(exit.success(), "kcat -P failed");
    let letters = eventually("the poison message in dlq.inventory", SAGA, || async {
        let letters = dlq::list(&conn, Some("inventory"), &mut Progress::hidden()).await?;
        Ok((!letters.is_empty()).then_some(letters))
    })
    .await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].source_topic.as_deref(), Some("orders"));
    assert!(
        letters[0].reason.contains("magic byte"),
        "{}",
        letters[0].reason
    );
    let mut out = Vec::new();
    dlq::run_list(
        &conn,
        None,
        Output::plain(),
        &mut out,
        &mut Progress::hidden(),
    )
    .await?;
    let listed = String::from_utf8(out)?;
    let first = line_with(&listed, "dlq.inventory/0/0");
    assert!(
        first.contains("from orders/") && first.contains("key poison-1"),
        "{listed}"
    );
    assert!(
        first.contains("attempts 1") && first.contains("ago"),
        "{listed}"
    );
    assert!(
        listed.contains("value: utf8 \"this is not avro\""),
        "{listed}"
    );

    // dlq replay: back to the source topic and partition, with its
    // headers and the replay header.
    // A replay is an admin write: the service refuses it without the
    // token (and re-produces nothing: two copies below, not three).
    let args = |admin_token: Option<String>| ReplayArgs {
        service: "inventory".into(),
        offset: Some(0),
        all: false,
        url: Some(stack.service_url("inventory")),
        admin_token,
    };
    let refused = dlq::run_replay(
        &args(Some("not-the-token".into())),
        Output::plain(),
        &mut Vec::new(),
    )
    .await
    .expect_err("a wrong token is refused");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("401") && refused.contains("--admin-token"),
        "{refused}"
    );
    let bare = reqwest::Client::new()
        .post(format!("{}/dlq/replay", stack.service_url("inventory")))
        .json(&serde_json::json!({"all": true}))
        .send()
        .await?;
    assert_eq!(bare.status(), reqwest::StatusCode::UNAUTHORIZED);
    let mut out = Vec::new();
    let replayed = dlq::run_replay(
        &args(stack.admin_token().expose().map(str::to_owned)),
        Output::plain(),
        &mut out,
    )
    .await?;
    assert_eq!(replayed.replayed.len(), 1, "{replayed:?}");
    let printed = String::from_utf8(out)?;
    assert!(
        printed.starts_with("replayed dlq.inventory/0/0 → orders/"),
        "{printed}"
    );
    let records = topics::read_all(&stack.brokers(), "orders").await?;
    let copies: Vec<_> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"poison-1".as_slice()))
        .collect();
    assert_eq!(copies.len(), 2, "the original and the replay");
    let original = copies
        .iter()
        .find(|r| r.header("choreo.replay").is_none())
        .expect("original");
    let replay = copies
        .iter()
        .find(|r| r.header("choreo.replay").is_some())
        .expect("replay");
    assert_eq!(replay.header("choreo.replay"), Some("dlq.inventory/0/0"));
    assert_eq!(
        replay.header("origin"),
        Some("test"),
        "original headers kept"
    );
    assert_eq!(
        replay.header("choreo.error"),
        None,
        "dead-letter headers dropped"
    );
    assert_eq!(replay.payload, original.payload);
    assert_eq!(replay.partition, original.partition);
    assert_eq!(
        (replay.topic.as_str(), replay.offset),
        (
            replayed.replayed[0].topic.as_str(),
            replayed.replayed[0].offset
        )
    );

    // reconcile counts every dead letter beyond the expected ones.
    let report = reconciler.clone().expect_dlq(0).run().await?;
    let dead: Vec<_> = report.of(Check::DeadLetter).collect();
    assert!(!dead.is_empty(), "{:#?}", report.violations);
    assert!(
        dead.iter()
            .all(|v| v.order_id.as_deref() == Some("poison-1")),
        "{dead:#?}"
    );
    let report = reconciler
        .clone()
        .expect_dlq(report.dead_letters)
        .run()
        .await?;
    assert_eq!(report.of(Check::DeadLetter).count(), 0);

    stack.shutdown().await;
    Ok(())
}

fn reconcile_args(stack: &TestStack, seed: &Path, mail_dir: &Path) -> Vec<String> {
    [
        "reconcile",
        "--order-url",
        &stack.service_url("order"),
        "--inventory-url",
        &stack.service_url("inventory"),
        "--payment-url",
        &stack.service_url("payment"),
        "--courier-url",
        &stack.service_url("courier"),
        "--communication-url",
        &stack.service_url("communication"),
        "--stock-seed",
        &seed.join("stock.json").display().to_string(),
        "--accounts-seed",
        &seed.join("accounts.json").display().to_string(),
        "--mail-dir",
        &mail_dir.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[tokio::test]
async fn stuck_order_names_its_step_and_a_hand_encoded_failure_compensates() -> anyhow::Result<()> {
    // A long deadline, so the order stays pending while services are down.
    let mut stack = TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "600000")
        .start()
        .await?;
    let api = Api::new(&stack);
    let conn = conn(&stack);
    stack.stop_service("courier", 0).await;
    stack.stop_service("payment", 0).await;

    let (id, _) = order::run_place(
        &PlaceArgs {
            customer: "alice".into(),
            email: None,
            items: vec!["WIDGET-1:1:1250".parse().map_err(anyhow::Error::msg)?],
            currency: "EUR".into(),
            country: "DE".into(),
            name: None,
            line1: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            order_url: stack.service_url("order"),
            wait: false,
            timeout: SAGA,
        },
        Output::plain(),
        &mut Vec::new(),
    )
    .await?;

    // trace names the missing step: the courier.
    let text = eventually("the order waiting for the courier", SAGA, || async {
        let (saga, text) = common::trace_text(&stack, &id).await?;
        Ok((saga.waiting.as_ref().map(|w| w.service) == Some("courier")).then_some(text))
    })
    .await?;
    assert_in_order(
        &text,
        &["OrderPlaced", "StockReserved", "state: in progress"],
    );
    let waiting = line_with(&text, "waiting for courier");
    assert!(
        waiting.contains("(ShipmentManifested or ShipmentManifestFailed) for "),
        "{waiting}"
    );

    // stuck lists it with that step; not when it is younger than asked.
    let mut out = Vec::new();
    let stuck = trace::run_stuck(
        &conn,
        &StuckArgs {
            older_than: Duration::ZERO,
        },
        Output::plain(),
        &mut out,
        &mut Progress::hidden(),
    )
    .await?;
    let listed = String::from_utf8(out)?;
    assert_eq!(stuck.len(), 1, "{listed}");
    assert!(
        line_with(&listed, &id).contains("waiting for courier"),
        "{listed}"
    );
    let (code, stdout, stderr) =
        run_choreo(&stack, &["--json", "stuck", "--older-than", "10m"]).await?;
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    let (code, stdout, stderr) =
        run_choreo(&stack, &["--json", "stuck", "--older-than", "0s"]).await?;
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(
        (v["order_id"].as_str(), v["waiting_for"].as_str()),
        (Some(id.as_str()), Some("courier"))
    );

    // Courier back, payment still down: manifested, not paid.
    stack.restart_service("courier", 0).await?;
    eventually("the shipment MANIFESTED", SAGA, || async {
        let s = api.shipment(&id).await?;
        Ok(s.filter(|s| s["status"] == "MANIFESTED"))
    })
    .await?;

    // choreo encode … | kcat: a hand-written PaymentFailed, as one message.
    let json = format!(r#"{{"order_id": "{id}", "reason": "INSUFFICIENT_FUNDS"}}"#);
    let script = format!(
        "set -euo pipefail; '{choreo}' encode payments PaymentFailed '{json}' \
         | '{kcat}' -b {brokers} -P -t payments -k {id} -D '<<choreo-end-of-message>>'",
        choreo = bin_dir().join("choreo").display(),
        kcat = kcat().display(),
        brokers = stack.brokers(),
    );
    let out = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env("CHOREO_REGISTRY_URL", stack.registry_url())
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected =
        topics::order_events(&stack.brokers(), &stack.registry_url(), "payments", &id).await?;
    assert_eq!(injected.len(), 1, "exactly one message: {injected:?}");
    assert_eq!(injected[0].metadata().producer, "cli");

    // The courier cancels, inventory releases, the order is cancelled.
    eventually("the shipment CANCELLED", SAGA, || async {
        let s = api.shipment(&id).await?;
        Ok(s.filter(|s| s["status"] == "CANCELLED"))
    })
    .await?;
    let http = reqwest::Client::new();
    let reservations = format!("{}/reservations/{id}", stack.service_url("inventory"));
    eventually("the reservation RELEASED", SAGA, || async {
        let r: Value = http.get(&reservations).send().await?.json().await?;
        Ok((r["status"] == "RELEASED").then_some(()))
    })
    .await?;
    let order = api.wait_terminal(&id, SAGA).await?;
    assert_eq!(
        (order["status"].as_str(), order["reason"].as_str()),
        (Some("CANCELLED"), Some("PAYMENT_DECLINED"))
    );
    let (_, text) = common::trace_text(&stack, &id).await?;
    assert_in_order(
        &text,
        &[
            "PaymentFailed",
            "ShipmentCancelled",
            "StockReleased",
            "OrderCancelled",
        ],
    );
    assert!(
        line_with(&text, "PaymentFailed").contains("by cli"),
        "{text}"
    );

    stack.shutdown().await;
    Ok(())
}
