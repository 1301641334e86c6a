//! The parts a Confluent client uses, against a third-party registry:
//! Apicurio Registry (in memory, fetched by `make tools`) through its
//! Confluent-compatible API. The Avro round trip of smoke.rs, and the
//! saga — every service and the checker pointed at Apicurio — with a
//! confirmed and a compensated order and `choreo reconcile` at zero
//! violations. Differences from choreo-registry: crates/registry/README.md.

use std::time::Duration;

use choreo_testkit::api::{order_body, Api};
use choreo_testkit::TestStack;

mod common;

#[tokio::test]
async fn avro_round_trip_through_apicurio_and_broker() -> anyhow::Result<()> {
    let stack = TestStack::builder().apicurio().start().await?;
    assert!(stack.registry_url().ends_with("/apis/ccompat/v7"));
    common::avro_round_trip(&stack).await
}

#[tokio::test]
async fn the_saga_runs_with_every_service_on_apicurio() -> anyhow::Result<()> {
    let stack = TestStack::builder()
        .apicurio()
        .all_services()
        .start()
        .await?;
    let api = Api::new(&stack);
    let confirmed = api
        .place_order(&order_body("alice", "WIDGET-1", 2, 1250, "DE"))
        .await?;
    let declined = api
        .place_order(&order_body("bob", "WIDGET-1", 1, 1250, "DE"))
        .await?;
    let saga = Duration::from_secs(60);
    assert_eq!(
        api.wait_terminal(&confirmed, saga).await?["status"],
        "CONFIRMED"
    );
    let order = api.wait_terminal(&declined, saga).await?;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    let report = common::assert_reconciled(&stack, 0).await?;
    assert_eq!(report.orders, 2);
    // Every schema the services produce with is Apicurio's.
    let subjects: Vec<String> = reqwest::get(format!("{}/subjects", stack.registry_url()))
        .await?
        .json()
        .await?;
    assert!(
        subjects.iter().any(|s| s.contains("OrderConfirmed")),
        "{subjects:?}"
    );
    stack.shutdown().await;
    Ok(())
}

/// One registry under comparison: its URL and the ids it gave so far.
struct Side {
    base: String,
    ids: Vec<u64>,
}

/// One call's answer: status and JSON body, with what only Apicurio adds
/// and what differs in prose only taken out (`references: []`, `reason:
/// null`; the `message` beside an `error_code`, which clients key on).
/// Both registries hold the contract's schemas from their start, so ids
/// are compared by the order they were first given in (`{id}` in a path
/// is the first one this test registered) and subject lists only by the
/// test's own subjects (`t-…`).
async fn call(
    http: &reqwest::Client,
    side: &mut Side,
    (method, path, body): &(&str, &str, Option<&str>),
) -> anyhow::Result<(u16, serde_json::Value)> {
    use serde_json::Value;
    let path = match side.ids.first() {
        Some(id) => path.replace("{id}", &id.to_string()),
        None => path.to_string(),
    };
    let mut request = http
        .request(method.parse()?, format!("{}{path}", side.base))
        .header("content-type", "application/vnd.schemaregistry.v1+json");
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let mut json: Value = response.json().await?;
    if let Some(map) = json.as_object_mut() {
        map.remove("references");
        if map.get("reason") == Some(&Value::Null) {
            map.remove("reason");
        }
        if map.contains_key("error_code") {
            map.remove("message");
        }
        if let Some(id) = map.get("id").and_then(Value::as_u64) {
            if !side.ids.contains(&id) {
                side.ids.push(id);
            }
            let nth = side.ids.iter().position(|&i| i == id).unwrap_or_default();
            map.insert("id".into(), Value::from(format!("#{nth}")));
        }
    }
    if let Value::Array(items) = &mut json {
        items.retain(|i| {
            i.as_str()
                .is_none_or(|s| s.starts_with("t-") || !s.contains('-'))
        });
    }
    Ok((status, json))
}

/// The calls choreo's clients (schema_registry_converter, kcat's serdes,
/// `choreo`, a person with curl) make, in order on a fresh registry, and
/// the answers both registries give alike — but for the differences
/// recorded in crates/registry/README.md, asserted here so the table
/// cannot drift.
#[tokio::test]
async fn apicurio_answers_as_choreo_registry_does_but_for_the_recorded_differences(
) -> anyhow::Result<()> {
    let apicurio = TestStack::builder().apicurio().start().await?;
    let dir = tempfile::tempdir()?;
    let registry = choreo_registry::Registry::open(dir.path()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(choreo_registry::run(
        listener,
        registry,
        std::future::pending(),
    ));

    let v1 = r#"{"schema":"{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}"}"#;
    let v2 = r#"{"schema":"{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"string\"}]}"}"#;
    let v2_ok = r#"{"schema":"{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"string\",\"default\":\"\"}]}"}"#;
    let calls: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET", "/config", None),
        ("GET", "/subjects/nope/versions", None),
        ("POST", "/subjects/t-value/versions", Some(v1)),
        ("POST", "/subjects/t-value/versions", Some(v1)),
        ("POST", "/subjects/t-value", Some(v1)),
        ("GET", "/subjects/t-value/versions/latest", None),
        ("GET", "/subjects/t-value/versions", None),
        ("GET", "/schemas/ids/{id}", None),
        ("GET", "/schemas/ids/999", None),
        ("GET", "/config/t-value", None),
        ("POST", "/subjects/t-value/versions", Some(v2)),
        (
            "POST",
            "/compatibility/subjects/t-value/versions/latest",
            Some(v2),
        ),
        (
            "POST",
            "/compatibility/subjects/t-value/versions/latest",
            Some(v2_ok),
        ),
        ("POST", "/subjects/t-value/versions", Some(v2_ok)),
        ("GET", "/subjects/t-value/versions", None),
        (
            "PUT",
            "/config/t-value",
            Some(r#"{"compatibility":"NONE"}"#),
        ),
        ("DELETE", "/subjects/t-value/versions/1", None),
        ("DELETE", "/subjects/t-value", None),
        ("GET", "/subjects", None),
        ("GET", "/subjects?deleted=true", None),
        ("DELETE", "/subjects/t-value", None),
        ("GET", "/schemas/types", None),
    ];
    let http = reqwest::Client::new();
    let mut differences = Vec::new();
    let mut a_side = Side {
        base: ours,
        ids: Vec::new(),
    };
    let mut b_side = Side {
        base: apicurio.registry_url(),
        ids: Vec::new(),
    };
    for c in &calls {
        let a = call(&http, &mut a_side, c).await?;
        let b = call(&http, &mut b_side, c).await?;
        if a != b {
            differences.push(format!("{} {}: {a:?} / {b:?}", c.0, c.1));
        }
    }
    assert_eq!(
        differences,
        [
            // No subject level set: Confluent answers 40408; Apicurio the
            // level that applies.
            r#"GET /config/t-value: (404, Object {"error_code": Number(40408)}) / (200, Object {"compatibilityLevel": String("NONE")})"#,
            // Only Avro here.
            r#"GET /schemas/types: (200, Array [String("AVRO")]) / (200, Array [String("JSON"), String("PROTOBUF"), String("AVRO")])"#,
        ],
        "choreo-registry / Apicurio"
    );
    server.abort();
    apicurio.shutdown().await;
    Ok(())
}
