//! The parts a Confluent client uses, against a third-party registry:
//! Apicurio Registry (in memory, fetched by `make tools`) through its
//! Confluent-compatible API. The Avro round trip of smoke.rs, and the
//! saga — every service and the checker pointed at Apicurio — with a
//! confirmed and a compensated order and `choreo reconcile` at zero
//! violations. Differences from choreo-registry: crates/registry/README.md.

use std::time::Duration;

use choreo_testkit::api::{order_body, Api};
use choreo_testkit::TestStack;
use serde_json::json;

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
    let text = response.text().await?;
    // A body that is not JSON is compared as such (its text cut short).
    let mut json: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        Value::String(format!(
            "non-JSON: {}",
            text.chars().take(60).collect::<String>()
        ))
    });
    if let Some(map) = json.as_object_mut() {
        map.remove("references");
        if map.get("reason") == Some(&Value::Null) {
            map.remove("reason");
        }
        if map.contains_key("error_code") {
            map.remove("message");
        }
        // A verbose compatibility check's explanation: its shape, not its
        // prose.
        if let Some(Value::Array(messages)) = map.get("messages") {
            let n = messages.len();
            map.insert("messages".into(), Value::from(format!("{n} message(s)")));
        }
        if map.get("reason").is_some_and(Value::is_string) {
            map.insert("reason".into(), Value::from("…"));
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
    // The calls of crates/registry/tests/conformance.rs a Confluent client
    // makes (that suite pins choreo-registry to Confluent's answers; this
    // pins Apicurio to choreo-registry's), on fresh subjects.
    let record = |fields: &str| {
        json!({"schema": format!(
            r#"{{"type":"record","name":"C","namespace":"choreo.test","fields":[{fields}]}}"#
        )})
        .to_string()
    };
    let id = r#"{"name":"id","type":"string"}"#;
    let qty = r#"{"name":"qty","type":"int"}"#;
    let qty_default = r#"{"name":"qty","type":"int","default":0}"#;
    let note_default = r#"{"name":"note","type":"string","default":""}"#;
    let c1 = record(id);
    let c2 = record(&format!("{id},{qty_default}"));
    let c_spaced = c1.replace(',', " ,\\n  ");
    let c_unknown = record(&format!("{id},{note_default}"));
    let c_needs_qty = record(&format!("{id},{qty}"));
    let c_required = record(&format!(
        "{id},{qty_default},{{\"name\":\"n\",\"type\":\"int\"}}"
    ));
    let c_int_id = record(r#"{"name":"id","type":"int"}"#);
    let conformance: Vec<(&str, String, Option<String>)> = vec![
        // subject_version_and_schema_endpoints
        ("POST", "/subjects/t-c/versions".into(), Some(c1.clone())),
        ("POST", "/subjects/t-d/versions".into(), Some(c1.clone())),
        ("POST", "/subjects/t-c/versions".into(), Some(c2.clone())),
        ("GET", "/subjects/t-c/versions".into(), None),
        ("GET", "/subjects/t-c/versions/1".into(), None),
        ("GET", "/subjects/t-c/versions/-1".into(), None),
        ("GET", "/subjects/t-c/versions/1/schema".into(), None),
        ("POST", "/subjects/t-c".into(), Some(c_spaced)),
        ("POST", "/subjects/t-c".into(), Some(c_unknown.clone())),
        ("POST", "/subjects/nope".into(), Some(c1.clone())),
        ("GET", "/subjects/nope/versions/1".into(), None),
        ("GET", "/subjects/t-c/versions/9".into(), None),
        ("GET", "/subjects/t-c/versions/abc".into(), None),
        ("GET", "/subjects/t-c/versions/0".into(), None),
        ("GET", "/schemas/ids/{id}/schema".into(), None),
        ("GET", "/schemas/ids/999/versions".into(), None),
        ("DELETE", "/subjects/t-c/versions/1".into(), None),
        ("GET", "/subjects/t-c/versions/1".into(), None),
        ("GET", "/subjects/t-c/versions/1?deleted=true".into(), None),
        ("GET", "/subjects/t-c/versions?deleted=true".into(), None),
        ("DELETE", "/subjects/t-c/versions/1".into(), None),
        ("DELETE", "/subjects/t-c/versions/7".into(), None),
        (
            "DELETE",
            "/subjects/t-c/versions/2?permanent=true".into(),
            None,
        ),
        (
            "DELETE",
            "/subjects/t-c/versions/1?permanent=true".into(),
            None,
        ),
        ("DELETE", "/subjects/nope".into(), None),
        ("DELETE", "/subjects/t-d?permanent=true".into(), None),
        // request_bodies_and_schema_validation
        (
            "POST",
            "/subjects/t-e/versions".into(),
            Some(json!({"schema": "{\"type\":\"record\"}"}).to_string()),
        ),
        (
            "POST",
            "/subjects/t-e/versions".into(),
            Some(json!({"schema": "not json"}).to_string()),
        ),
        ("POST", "/subjects/t-e/versions".into(), Some("{}".into())),
        (
            "POST",
            "/subjects/t-e/versions".into(),
            Some("{not json".into()),
        ),
        // config_endpoints
        (
            "PUT",
            "/config".into(),
            Some(r#"{"compatibility":"FULL"}"#.into()),
        ),
        ("GET", "/config".into(), None),
        (
            "PUT",
            "/config".into(),
            Some(r#"{"compatibility":"SIDEWAYS"}"#.into()),
        ),
        ("GET", "/config/t-c?defaultToGlobal=true".into(), None),
        (
            "PUT",
            "/config".into(),
            Some(r#"{"compatibility":"BACKWARD"}"#.into()),
        ),
        // backward_is_the_default_and_identical_schemas_keep_their_id
        ("POST", "/subjects/t-f/versions".into(), Some(c1.clone())),
        (
            "POST",
            "/subjects/t-f/versions".into(),
            Some(c_needs_qty.clone()),
        ),
        ("POST", "/subjects/t-f/versions".into(), Some(c2.clone())),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/latest".into(),
            Some(c_required.clone()),
        ),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/latest?verbose=true".into(),
            Some(c_required),
        ),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/latest?verbose=true".into(),
            Some(c_unknown.clone()),
        ),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/1".into(),
            Some(c_needs_qty.clone()),
        ),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/2".into(),
            Some(c_needs_qty.clone()),
        ),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/9".into(),
            Some(c_unknown.clone()),
        ),
        (
            "POST",
            "/compatibility/subjects/nope/versions/latest".into(),
            Some(c_unknown.clone()),
        ),
        (
            "POST",
            "/compatibility/subjects/t-f/versions/zero".into(),
            Some(c_unknown),
        ),
        // forward_full_and_none: levels set once a subject has a version
        ("POST", "/subjects/t-full/versions".into(), Some(c1.clone())),
        (
            "PUT",
            "/config/t-full".into(),
            Some(r#"{"compatibility":"FULL"}"#.into()),
        ),
        (
            "POST",
            "/subjects/t-full/versions".into(),
            Some(c_needs_qty.clone()),
        ),
        ("POST", "/subjects/t-full/versions".into(), Some(c2.clone())),
        (
            "POST",
            "/subjects/t-full/versions".into(),
            Some(c_int_id.clone()),
        ),
        // transitive_levels_check_every_live_version
        (
            "POST",
            "/subjects/t-trans/versions".into(),
            Some(c1.clone()),
        ),
        (
            "PUT",
            "/config/t-trans".into(),
            Some(r#"{"compatibility":"BACKWARD_TRANSITIVE"}"#.into()),
        ),
        ("POST", "/subjects/t-trans/versions".into(), Some(c2)),
        (
            "POST",
            "/subjects/t-trans/versions".into(),
            Some(c_needs_qty.clone()),
        ),
        ("DELETE", "/subjects/t-trans/versions/1".into(), None),
        (
            "POST",
            "/subjects/t-trans/versions".into(),
            Some(c_needs_qty),
        ),
        ("GET", "/subjects/t-trans/versions".into(), None),
        // A subject level of NONE (last: its difference changes which ids
        // are given next).
        ("POST", "/subjects/t-none/versions".into(), Some(c1)),
        (
            "PUT",
            "/config/t-none".into(),
            Some(r#"{"compatibility":"NONE"}"#.into()),
        ),
        ("POST", "/subjects/t-none/versions".into(), Some(c_int_id)),
        ("GET", "/subjects/t-none/versions".into(), None),
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
    let mut conformance_differences = Vec::new();
    for (method, path, body) in &conformance {
        let c = (*method, path.as_str(), body.as_deref());
        let a = call(&http, &mut a_side, &c).await?;
        let b = call(&http, &mut b_side, &c).await?;
        if a != b {
            conformance_differences.push(format!("{method} {path}: {a:?} / {b:?}"));
        }
    }
    assert_eq!(
        conformance_differences,
        [
            // A lookup of the schema with other whitespace: found here (canonical form), not by Apicurio.
            r##"POST /subjects/t-c: (200, Object {"id": String("#2"), "schema": String("{\"type\":\"record\",\"name\":\"C\",\"namespace\":\"choreo.test\",\"fields\":[{\"name\":\"id\",\"type\":\"string\"}]}"), "subject": String("t-c"), "version": Number(1)}) / (404, Object {"error_code": Number(40403)})"##,
            // An invalid version number: 422/42202 here, 40402 (not found) there.
            r##"GET /subjects/t-c/versions/abc: (422, Object {"error_code": Number(42202)}) / (404, Object {"error_code": Number(40402)})"##,
            r##"GET /subjects/t-c/versions/0: (422, Object {"error_code": Number(42202)}) / (404, Object {"error_code": Number(40402)})"##,
            // `/schemas/ids/{id}/schema` (the bare schema): not served by Apicurio.
            r##"GET /schemas/ids/{id}/schema: (200, Object {"fields": Array [Object {"name": String("a"), "type": String("int")}], "name": String("T"), "type": String("record")}) / (404, Object {"error_code": Number(0)})"##,
            // Deleting what is already soft-deleted, a permanent delete of a live version or subject: the same error_code, 409 there rather than Confluent's 404.
            r##"DELETE /subjects/t-c/versions/1: (404, Object {"error_code": Number(40406)}) / (409, Object {"error_code": Number(40406)})"##,
            r##"DELETE /subjects/t-c/versions/2?permanent=true: (404, Object {"error_code": Number(40407)}) / (409, Object {"error_code": Number(40407)})"##,
            r##"DELETE /subjects/t-d?permanent=true: (404, Object {"error_code": Number(40405)}) / (409, Object {"error_code": Number(40405)})"##,
            // A body that is not JSON, an unknown compatibility level: 400 in plain text there.
            r##"POST /subjects/t-e/versions: (400, Object {"error_code": Number(400)}) / (400, String("non-JSON: Not able to deserialize data provided."))"##,
            r##"PUT /config: (422, Object {"error_code": Number(42203)}) / (400, String("non-JSON: Not able to deserialize data provided."))"##,
            // `defaultToGlobal`: Apicurio answers NONE, not the global level (FULL here).
            r##"GET /config/t-c?defaultToGlobal=true: (200, Object {"compatibilityLevel": String("FULL")}) / (200, Object {"compatibilityLevel": String("NONE")})"##,
            // A verbose check: Confluent's `messages` list; Apicurio's one `reason` string, and none when compatible.
            r##"POST /compatibility/subjects/t-f/versions/latest?verbose=true: (200, Object {"is_compatible": Bool(false), "messages": String("1 message(s)")}) / (200, Object {"is_compatible": Bool(false), "reason": String("…")})"##,
            r##"POST /compatibility/subjects/t-f/versions/latest?verbose=true: (200, Object {"is_compatible": Bool(true), "messages": String("0 message(s)")}) / (200, Object {"is_compatible": Bool(true)})"##,
            // The compatibility check on an unknown subject: 40402 there, 40401 here; an invalid version: 40402 there.
            r##"POST /compatibility/subjects/nope/versions/latest: (404, Object {"error_code": Number(40401)}) / (404, Object {"error_code": Number(40402)})"##,
            r##"POST /compatibility/subjects/t-f/versions/zero: (422, Object {"error_code": Number(42202)}) / (404, Object {"error_code": Number(40402)})"##,
            // A subject level of NONE does not lift the global BACKWARD there: Apicurio refuses what only NONE allows.
            r##"POST /subjects/t-none/versions: (200, Object {"id": String("#5")}) / (409, Object {"error_code": Number(409)})"##,
            r##"GET /subjects/t-none/versions: (200, Array [Number(1), Number(2)]) / (200, Array [Number(1)])"##,
        ],
        "choreo-registry / Apicurio, conformance.rs's calls"
    );
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
