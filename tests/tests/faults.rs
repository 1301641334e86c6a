//! Fault suite: the saga keeps its promises when things break. Every
//! scenario runs against the real broker, registry and service binaries as
//! child processes, and ends with the invariant checker
//! (`choreo_cli::reconcile`, the same code as `choreo reconcile`) finding
//! zero violations. Outcomes are chosen by data (deploy/seed); waits are on
//! observable state with deadlines.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use choreo_cli::reconcile::Report;
use choreo_events::AnyEvent;
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::load::{self, LoadSpec, Placed};
use choreo_testkit::{eventually, topics, TestStack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

mod common;

const SETTLE: Duration = Duration::from_secs(120);

/// Every service, with an order deadline far beyond any recovery here: these
/// scenarios test crashes and redelivery, not the timer, and a slow machine
/// must not turn a late confirmation into a TIMEOUT.
fn fault_stack() -> choreo_testkit::TestStackBuilder {
    TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "120000")
}

/// Runs the checker until it is clean (the saga settles asynchronously) and
/// fails with every violation otherwise.
async fn assert_invariants(stack: &TestStack, expect_dlq: usize) -> anyhow::Result<Report> {
    common::assert_reconciled(stack, expect_dlq).await
}

async fn run_load(stack: &TestStack, spec: LoadSpec) -> anyhow::Result<Vec<Placed>> {
    let api = Api::new(stack);
    let placed = load::place(stack, &spec).await?;
    let finals = load::wait_terminal(&api, &placed, Duration::from_secs(240)).await?;
    load::assert_outcomes(&placed, &finals);
    Ok(placed)
}

/// Waits until the Order service knows at least `n` orders.
async fn orders_exist(api_order_url: &str, n: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    eventually(
        &format!("{n} orders to exist"),
        Duration::from_secs(120),
        || async {
            let v: Value = http
                .get(format!("{api_order_url}/orders?limit=500"))
                .send()
                .await?
                .json()
                .await?;
            Ok((v["orders"].as_array().map_or(0, Vec::len) >= n).then_some(()))
        },
    )
    .await
}

#[tokio::test]
async fn mixed_load_of_500_orders_reaches_every_outcome() -> anyhow::Result<()> {
    let stack = fault_stack().start().await?;
    let placed = run_load(&stack, LoadSpec::mixed(500)).await?;
    assert!(placed.iter().any(|p| p.via_kafka) && placed.iter().any(|p| !p.via_kafka));
    let report = assert_invariants(&stack, 0).await?;
    assert_eq!(report.orders, 500);
    assert_eq!(report.confirmed, 100);
    assert_eq!(report.cancelled, 400);
    stack.shutdown().await;
    Ok(())
}

/// `kill -9` one service while 300 orders are in flight, restart it after a
/// few seconds: every order still terminal, nothing done twice.
async fn crash_mid_saga(service: &str) -> anyhow::Result<()> {
    let mut stack = fault_stack().start().await?;
    let (brokers, order_url) = (stack.brokers(), stack.service_url("order"));
    let spec = LoadSpec::mixed(300);
    // Orders keep being placed while the service dies and comes back.
    let (placed, crashed) = tokio::join!(load::place_at(&brokers, &order_url, &spec), async {
        orders_exist(&order_url, 40).await?;
        stack.kill_service(service, 0).await;
        // Deliberate downtime: the rest of the saga goes on meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stack.restart_service(service, 0).await?;
        Ok::<_, anyhow::Error>(())
    });
    crashed?;
    let placed = placed?;
    let api = Api::new(&stack);
    let finals = load::wait_terminal(&api, &placed, Duration::from_secs(240)).await?;
    load::assert_outcomes(&placed, &finals);
    assert_invariants(&stack, 0).await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn crash_order_mid_saga() -> anyhow::Result<()> {
    crash_mid_saga("order").await
}

#[tokio::test]
async fn crash_inventory_mid_saga() -> anyhow::Result<()> {
    crash_mid_saga("inventory").await
}

#[tokio::test]
async fn crash_payment_mid_saga() -> anyhow::Result<()> {
    crash_mid_saga("payment").await
}

#[tokio::test]
async fn crash_courier_mid_saga() -> anyhow::Result<()> {
    crash_mid_saga("courier").await
}

#[tokio::test]
async fn crash_communication_mid_saga() -> anyhow::Result<()> {
    crash_mid_saga("communication").await
}

/// Scenario 3: the broker stopped mid-run with SIGTERM (Kafka's
/// controlled shutdown) and started again on the same data: every order
/// placed before, during and after completes once, and nothing is lost.
#[tokio::test]
async fn broker_restart_loses_nothing() -> anyhow::Result<()> {
    broker_outage(false).await
}

/// Scenario 3b: the same with SIGKILL, as on a power cut: the broker
/// recovers its logs on start; idempotent producers and the consumers'
/// inbox make the retried sends harmless.
#[tokio::test]
async fn broker_kill_loses_nothing() -> anyhow::Result<()> {
    broker_outage(true).await
}

async fn broker_outage(kill: bool) -> anyhow::Result<()> {
    let mut stack = fault_stack().start().await?;
    let api = Api::new(&stack);
    let placed = load::place(&stack, &LoadSpec::mixed(150)).await?;
    orders_exist(&stack.service_url("order"), 100).await?;
    let old_pid = broker_pid(&stack)?;
    let down = std::time::Instant::now();
    if kill {
        stack.kill_broker().await;
    } else {
        stack.stop_broker().await;
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{old_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_pid}/stat"))?.contains(") Z "),
        "broker {old_pid} still running"
    );
    let stopped_after = down.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = std::time::Instant::now();
    stack.start_broker().await?;
    let broker_ready = restarted.elapsed();
    // Recovery: how long until an order placed after the restart completes.
    let probe = load::place(&stack, &LoadSpec::mixed(1)).await?;
    load::wait_terminal(&api, &probe, Duration::from_secs(120)).await?;
    let saga_again = restarted.elapsed();
    let more = load::place(&stack, &LoadSpec::mixed(50)).await?;
    let all: Vec<Placed> = placed.into_iter().chain(probe).chain(more).collect();
    let finals = load::wait_terminal(&api, &all, Duration::from_secs(240)).await?;
    load::assert_outcomes(&all, &finals);
    assert_invariants(&stack, 0).await?;
    println!(
        "broker {}: stopped in {:.1}s, answering {:.1}s after start, first new saga done {:.1}s after start",
        if kill { "SIGKILL" } else { "SIGTERM" },
        stopped_after.as_secs_f64(),
        broker_ready.as_secs_f64(),
        saga_again.as_secs_f64(),
    );
    stack.shutdown().await;
    Ok(())
}

/// The order deadline is stored, not held in memory: it passes while
/// Order is down (killed, SIGKILL) and fires once Order is back, so the
/// order is cancelled with TIMEOUT and everything it held is released.
#[tokio::test]
async fn a_deadline_that_passes_while_order_is_down_fires_after_its_restart() -> anyhow::Result<()>
{
    let mut stack = TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "4000")
        .start()
        .await?;
    let api = Api::new(&stack);
    let before = api.stock("WIDGET-1").await?;
    // Without the courier the saga stops after the reservation.
    stack.stop_service("courier", 0).await;
    let id = api
        .place_order(&order_body("alice", "WIDGET-1", 2, 100, "DE"))
        .await?;
    eventually("the stock reserved", SETTLE, || async {
        Ok(api
            .reservation(&id)
            .await?
            .filter(|r| r["status"] == "RESERVED"))
    })
    .await?;
    stack.kill_service("order", 0).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restarted = std::time::Instant::now();
    stack.restart_service("order", 0).await?;
    let order = api.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(
        (order["status"].as_str(), order["reason"].as_str()),
        (Some("CANCELLED"), Some("TIMEOUT")),
        "{order}"
    );
    println!(
        "deadline fired {:.1}s after Order's restart",
        restarted.elapsed().as_secs_f64()
    );
    eventually("the reservation released", SETTLE, || async {
        let s = api.stock("WIDGET-1").await?;
        Ok(
            (s["available"] == before["available"] && s["reserved"] == before["reserved"])
                .then_some(()),
        )
    })
    .await?;
    stack.restart_service("courier", 0).await?;
    assert_invariants(&stack, 0).await?;
    stack.shutdown().await;
    Ok(())
}

fn broker_pid(stack: &TestStack) -> anyhow::Result<u32> {
    stack
        .pids()
        .into_iter()
        .find(|(name, _)| name == "broker")
        .map(|(_, pid)| pid)
        .ok_or_else(|| anyhow::anyhow!("no broker running"))
}

/// Sum of `choreo_duplicates_total` a service reports.
async fn duplicates(url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("choreo_duplicates_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[tokio::test]
async fn redelivered_events_have_no_second_effect() -> anyhow::Result<()> {
    let stack = fault_stack().start().await?;
    run_load(&stack, LoadSpec::mixed(60)).await?;
    assert_invariants(&stack, 0).await?;
    topics::wait_groups_caught_up(&stack.brokers(), SETTLE).await?;
    let api = Api::new(&stack);
    let mails_before: usize =
        std::fs::read_dir(stack.service_data_dir("communication").join("mail"))?.count();

    // Re-produce every saga event byte for byte: same event_ids.
    let mut replayed = 0;
    for topic in ["orders", "inventory", "shipments", "payments"] {
        replayed += topics::reproduce_all(&stack.brokers(), topic).await?;
    }
    assert!(replayed > 300, "replayed {replayed} records");
    // Every group processes the replay (observable: committed offsets
    // reach the end), and every service counted duplicates.
    topics::wait_groups_caught_up(&stack.brokers(), SETTLE).await?;
    for service in choreo_events::SERVICES {
        let d = duplicates(&stack.service_url(service)).await?;
        assert!(
            d > 0.0,
            "{service} saw the redelivered events as duplicates ({d})"
        );
    }
    let report = assert_invariants(&stack, 0).await?;
    assert_eq!(report.orders, 60);
    let mails_after: usize =
        std::fs::read_dir(stack.service_data_dir("communication").join("mail"))?.count();
    assert_eq!(mails_after, mails_before, "no second mail");
    let _ = api;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn poison_messages_go_to_the_right_dlq_and_nothing_stalls() -> anyhow::Result<()> {
    let stack = fault_stack().start().await?;
    let producer: FutureProducer = choreo_bus::KafkaSettings::new(stack.brokers())
        .producer_config()
        .create()?;
    let send = |topic: &'static str, key: &'static str, payload: Vec<u8>| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    };
    // Garbage on `orders`: inventory, courier, payment and communication
    // each dead-letter it.
    send("orders", "poison-garbage", b"\x07not avro at all".to_vec()).await?;
    // An unknown schema id on `payments`: order and courier.
    send(
        "payments",
        "poison-unknown-id",
        vec![0, 0x7f, 0xff, 0xff, 0xf0, 1, 2, 3],
    )
    .await?;
    // JSON that is not a PlaceOrder, and a PlaceOrder with invalid data,
    // on `order-requests`: order.
    send(
        "order-requests",
        "poison-json",
        br#"{"hello":"world"}"#.to_vec(),
    )
    .await?;
    let mut bad = order_body("alice", "WIDGET-1", 0, 100, "DE");
    bad["type"] = json!("PlaceOrder");
    bad["order_id"] = json!(uuid::Uuid::new_v4().to_string());
    send(
        "order-requests",
        "poison-invalid",
        bad.to_string().into_bytes(),
    )
    .await?;

    // Orders placed after the poison complete.
    run_load(&stack, LoadSpec::mixed(20)).await?;

    let expected: [(&str, &[&str]); 5] = [
        ("inventory", &["poison-garbage"]),
        ("courier", &["poison-garbage", "poison-unknown-id"]),
        ("payment", &["poison-garbage"]),
        ("communication", &["poison-garbage"]),
        (
            "order",
            &["poison-unknown-id", "poison-json", "poison-invalid"],
        ),
    ];
    for (service, keys) in expected {
        let dlq = choreo_events::dlq_topic(service);
        let records = eventually(
            &format!("{} records on {dlq}", keys.len()),
            SETTLE,
            || async {
                let r = topics::read_all(&stack.brokers(), &dlq).await?;
                Ok((r.len() >= keys.len()).then_some(r))
            },
        )
        .await?;
        assert_eq!(records.len(), keys.len(), "{dlq}: {records:?}");
        for key in keys {
            let r = records
                .iter()
                .find(|r| r.key.as_deref() == Some(key.as_bytes()))
                .unwrap_or_else(|| panic!("{key} on {dlq}"));
            let reason = r.header("choreo.error").unwrap_or_default();
            assert!(!reason.is_empty(), "{dlq}/{key} has a reason");
            let source = r.header("choreo.source.topic").unwrap_or_default();
            assert!(
                ["orders", "payments", "order-requests"].contains(&source),
                "{source}"
            );
            assert!(r.header("choreo.source.offset").is_some());
            assert_eq!(r.header("choreo.service"), Some(service));
            let reason_l = reason.to_lowercase();
            let fits = match *key {
                "poison-garbage" => reason_l.contains("bytes") || reason_l.contains("undecodable"),
                "poison-unknown-id" => reason_l.contains("schema") || reason_l.contains("registry"),
                "poison-json" => reason_l.contains("type"),
                "poison-invalid" => reason_l.contains("quantity"),
                _ => false,
            };
            assert!(fits, "{dlq}/{key} reason explains it: {reason}");
        }
    }
    let report = assert_invariants(&stack, 8).await?;
    assert_eq!(
        report.dead_letters, 8,
        "exactly the poison messages are dead letters"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn race_for_the_last_ten_units() -> anyhow::Result<()> {
    let stack = fault_stack().start().await?;
    let api = Api::new(&stack);
    let start = api.stock("LIMITED-9").await?;
    assert_eq!(start["available"], 10);

    // Watch the stock the whole time: it must never go below zero.
    let watch_api = api.clone();
    let stop = tokio_util_like::Flag::default();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // Every reading must succeed: a watcher that saw nothing would
            // prove nothing.
            let mut min = i64::MAX;
            let mut readings = 0_u32;
            while !stop.is_set() {
                let s = watch_api.stock("LIMITED-9").await?;
                let available = s["available"]
                    .as_i64()
                    .ok_or_else(|| anyhow::anyhow!("no `available` in {s}"))?;
                min = min.min(available);
                readings += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok((min, readings))
        })
    };
    let ids = futures::future::try_join_all((0..50).map(|_| {
        let api = api.clone();
        async move {
            api.place_order(&order_body("alice", "LIMITED-9", 1, 100, "DE"))
                .await
        }
    }))
    .await?;
    let mut confirmed = 0;
    let mut out_of_stock = 0;
    for id in &ids {
        let o = api.wait_terminal(id, SETTLE).await?;
        match (o["status"].as_str(), o["reason"].as_str()) {
            (Some("CONFIRMED"), _) => confirmed += 1,
            (Some("CANCELLED"), Some("OUT_OF_STOCK")) => out_of_stock += 1,
            other => panic!("unexpected outcome {other:?}: {o}"),
        }
    }
    stop.set();
    let (min, readings) = watcher.await??;
    assert_eq!((confirmed, out_of_stock), (10, 40));
    assert!(readings >= 10, "the stock was watched: {readings} readings");
    assert!(min >= 0, "stock went below zero: {min}");
    let end = eventually("the stock to settle", SETTLE, || async {
        let s = api.stock("LIMITED-9").await?;
        Ok((s["committed"] == 10).then_some(s))
    })
    .await?;
    assert_eq!(
        (end["available"].as_i64(), end["reserved"].as_i64()),
        (Some(0), Some(0))
    );
    assert_invariants(&stack, 0).await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn replicas_on_postgres_survive_losing_one() -> anyhow::Result<()> {
    let inventory_db = choreo_outbox::testing::fresh_postgres().await;
    let payment_db = choreo_outbox::testing::fresh_postgres().await;
    let mut stack = fault_stack()
        .database_url("inventory", inventory_db.url())
        .database_url("payment", payment_db.url())
        .start()
        .await?;
    for service in ["inventory", "payment"] {
        let index = stack.spawn_service(service)?;
        stack.wait_service_ready(service, index).await?;
    }
    let (brokers, order_url) = (stack.brokers(), stack.service_url("order"));
    let api = Api::new(&stack);
    let spec = LoadSpec::mixed(200);
    let (placed, killed) = tokio::join!(load::place_at(&brokers, &order_url, &spec), async {
        orders_exist(&order_url, 40).await?;
        stack.kill_service("inventory", 1).await;
        stack.kill_service("payment", 1).await;
        Ok::<_, anyhow::Error>(())
    });
    killed?;
    let placed = placed?;
    let finals = load::wait_terminal(&api, &placed, Duration::from_secs(240)).await?;
    load::assert_outcomes(&placed, &finals);
    assert_invariants(&stack, 0).await?;

    // No effect twice: per order and event type, one distinct event id on
    // the replicas' topics (a republished row keeps its event id).
    for topic in ["inventory", "payments"] {
        let events = topics::events(&stack.brokers(), &stack.registry_url(), topic).await?;
        let mut ids: HashMap<(String, &'static str), HashSet<String>> = HashMap::new();
        for e in &events {
            ids.entry((e.order_id().to_owned(), e.event_type()))
                .or_default()
                .insert(e.metadata().event_id.clone());
        }
        let twice: Vec<_> = ids.iter().filter(|(_, v)| v.len() > 1).collect();
        assert!(twice.is_empty(), "decided twice on {topic}: {twice:?}");
        let republished = events.len() - ids.values().map(HashSet::len).sum::<usize>();
        eprintln!(
            "{topic}: {} events, {republished} republished copies",
            events.len()
        );
    }
    stack.shutdown().await;
    inventory_db.drop_database().await;
    payment_db.drop_database().await;
    Ok(())
}

#[tokio::test]
async fn a_backward_compatible_v2_is_processed_and_an_incompatible_one_refused(
) -> anyhow::Result<()> {
    let stack = fault_stack().start().await?;
    let api = Api::new(&stack);
    let subject = "orders-io.choreo.orders.OrderPlaced";
    let http = reqwest::Client::new();
    let mut v2: Value =
        serde_json::from_str(<choreo_events::OrderPlaced as choreo_events::Event>::avsc())?;
    v2["fields"].as_array_mut().unwrap().push(json!({
        "name": "gift_message", "type": ["null", "string"], "default": null,
        "doc": "Added in v2: a message to print on the packing slip."
    }));
    let r = http
        .post(format!(
            "{}/subjects/{subject}/versions",
            stack.registry_url()
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": v2.to_string()}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200, "v2 accepted");
    let id = r.json::<Value>().await?["id"].as_u64().unwrap() as u32;

    // An OrderPlaced written with v2 (with a gift message): services built
    // against v1 still process it.
    let order_id = uuid::Uuid::new_v4().to_string();
    let schema = apache_avro::Schema::parse_str(&v2.to_string())?;
    let base = choreo_events::OrderPlaced {
        metadata: choreo_events::EventMetadata::new(&order_id, "order", None),
        customer_id: "alice".into(),
        customer_email: "alice@example.com".into(),
        items: vec![choreo_events::OrderLine {
            sku: "GADGET-2".into(),
            quantity: 1,
            unit_price_minor: 100,
        }],
        total_minor: 100,
        currency: "EUR".into(),
        shipping_address: choreo_events::Address {
            name: "Ada".into(),
            line1: "1 Way".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
    };
    // The record as v1 sees it, plus the field v2 added (last, as in v2).
    let avro = match choreo_events::Event::to_avro_value(&base)? {
        apache_avro::types::Value::Record(mut fields) => {
            fields.push((
                "gift_message".into(),
                apache_avro::types::Value::Union(1, Box::new("Happy birthday".into())),
            ));
            apache_avro::types::Value::Record(fields)
        }
        other => panic!("not a record: {other:?}"),
    };
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    #[allow(deprecated)] // the plain datum writer is what a foreign producer uses
    bytes.extend(apache_avro::to_avro_datum(&schema, avro)?);
    let producer: FutureProducer = choreo_bus::KafkaSettings::new(stack.brokers())
        .producer_config()
        .create()?;
    producer
        .send(
            FutureRecord::to("orders").key(&order_id).payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let reservation = eventually("inventory to reserve the v2 order", SETTLE, || async {
        api.reservation(&order_id).await
    })
    .await?;
    assert_eq!(reservation["status"], "RESERVED", "{reservation}");
    let reserved = eventually("StockReserved for the v2 order", SETTLE, || async {
        let e = topics::order_events(
            &stack.brokers(),
            &stack.registry_url(),
            "inventory",
            &order_id,
        )
        .await?;
        Ok((!e.is_empty()).then_some(e))
    })
    .await?;
    assert!(matches!(reserved[0], AnyEvent::Inventory(_)));

    // A BACKWARD-incompatible change: a new field without a default.
    let mut bad = v2.clone();
    bad["fields"].as_array_mut().unwrap().push(json!({
        "name": "loyalty_tier", "type": "string", "doc": "no default"
    }));
    let r = http
        .post(format!(
            "{}/subjects/{subject}/versions",
            stack.registry_url()
        ))
        .json(&json!({"schema": bad.to_string()}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.json::<Value>().await?["error_code"], 409);
    stack.shutdown().await;
    Ok(())
}

/// A tiny shared stop flag for the stock watcher.
mod tokio_util_like {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub struct Flag(Arc<AtomicBool>);

    impl Flag {
        pub fn set(&self) {
            self.0.store(true, Ordering::Release);
        }
        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }
}
