//! Conformance: the registry driven over HTTP the way our clients drive a
//! Confluent Schema Registry. Each test starts its own server on port 0
//! with a fresh data directory.

use std::path::Path;

use reqwest::Method;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use choreo_registry::http::CONTENT_TYPE_V1;
use choreo_registry::Registry;

struct TestApp {
    base: String,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    server: JoinHandle<choreo_registry::Result<()>>,
}

struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    #[track_caller]
    fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        self.json()
    }

    /// Asserts a Confluent error body and returns its message.
    #[track_caller]
    fn error(&self, status: u16, error_code: u32) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["error_code"], error_code, "{body}");
        let message = body["message"].as_str().expect("message").to_owned();
        assert!(!message.is_empty());
        message
    }
}

impl TestApp {
    async fn spawn(data_dir: &Path) -> Self {
        let registry = Registry::open(data_dir).await.expect("open registry");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(choreo_registry::run(listener, registry, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            stop,
            server,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.server.await.unwrap().expect("server exits cleanly");
    }

    async fn call(&self, method: Method, path: &str, body: Option<(&str, String)>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("request");
        // Every answer, success or error, carries Confluent's content type.
        assert_eq!(
            response.headers()["content-type"],
            CONTENT_TYPE_V1,
            "{path}"
        );
        Reply {
            status: response.status().as_u16(),
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        let body = Some((CONTENT_TYPE_V1, body.to_string()));
        self.call(Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        let body = Some((CONTENT_TYPE_V1, body.to_string()));
        self.call(Method::PUT, path, body).await
    }

    /// Registers `schema` under `subject`, returning the raw reply.
    async fn register(&self, subject: &str, schema: &str) -> Reply {
        self.post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema }),
        )
        .await
    }

    async fn register_ok(&self, subject: &str, schema: &str) -> u64 {
        let body = self.register(subject, schema).await.ok();
        body["id"].as_u64().expect("id")
    }

    async fn set_level(&self, subject: &str, level: &str) {
        let reply = self
            .put(
                &format!("/config/{subject}"),
                json!({ "compatibility": level }),
            )
            .await;
        assert_eq!(reply.ok(), json!({ "compatibility": level }));
    }
}

/// A record `Order` with the given fields.
fn order(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Order","namespace":"choreo.test","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"string"}"#;
const QTY: &str = r#"{"name":"qty","type":"int"}"#;
const QTY_DEFAULT: &str = r#"{"name":"qty","type":"int","default":0}"#;
const NOTE_DEFAULT: &str = r#"{"name":"note","type":"string","default":""}"#;

fn fields(parts: &[&str]) -> String {
    order(&parts.join(","))
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    quantity: i32,
    note: Option<String>,
}

const ORDER_PLACED: &str = r#"{
  "type": "record", "name": "OrderPlaced", "namespace": "choreo.order",
  "fields": [
    {"name": "order_id", "type": "string"},
    {"name": "quantity", "type": "int"},
    {"name": "note", "type": ["null", "string"], "default": null}
  ]
}"#;

#[tokio::test]
async fn schema_registry_converter_round_trip() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    // Occupy id 1 so the id in the payload has to be the real one.
    app.register_ok("other-value", &fields(&[ID])).await;

    let settings = SrSettings::new(app.base.clone());
    let strategy = SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
        "orders".to_owned(),
        SuppliedSchema::new(
            Some("choreo.order.OrderPlaced".to_owned()),
            SchemaType::Avro,
            ORDER_PLACED.to_owned(),
        ),
    );
    let value = OrderPlaced {
        order_id: "o-1".to_owned(),
        quantity: 3,
        note: Some("gift".to_owned()),
    };
    let bytes = AvroEncoder::new(settings.clone())
        .encode_struct(&value, &strategy)
        .await
        .expect("encode");

    let registered = app
        .get("/subjects/orders-choreo.order.OrderPlaced/versions/latest")
        .await
        .ok();
    assert_eq!(registered["id"], 2);
    assert_eq!(registered["version"], 1);
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(bytes[1..5], 2u32.to_be_bytes(), "big-endian schema id");

    // A fresh decoder has nothing cached: it must fetch /schemas/ids/2.
    let decoded = AvroDecoder::new(settings)
        .decode(Some(&bytes))
        .await
        .expect("decode");
    let back: OrderPlaced = apache_avro::from_value(&decoded.value).unwrap();
    assert_eq!(back, value);

    app.stop().await;
}

#[tokio::test]
async fn subject_version_and_schema_endpoints() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let v1 = fields(&[ID]);
    let v2 = fields(&[ID, QTY_DEFAULT]);

    assert_eq!(app.get("/subjects").await.ok(), json!([]));
    assert_eq!(app.register("a", &v1).await.ok(), json!({ "id": 1 }));
    assert_eq!(app.register("b", &v1).await.ok(), json!({ "id": 1 }));
    assert_eq!(app.register("a", &v2).await.ok(), json!({ "id": 2 }));
    assert_eq!(app.get("/subjects").await.ok(), json!(["a", "b"]));
    assert_eq!(app.get("/subjects/a/versions").await.ok(), json!([1, 2]));

    let first = app.get("/subjects/a/versions/1").await.ok();
    assert_eq!(
        first,
        json!({ "subject": "a", "version": 1, "id": 1, "schema": v1 })
    );
    let latest = json!({ "subject": "a", "version": 2, "id": 2, "schema": v2 });
    assert_eq!(app.get("/subjects/a/versions/latest").await.ok(), latest);
    assert_eq!(app.get("/subjects/a/versions/-1").await.ok(), latest);
    let raw = app.get("/subjects/a/versions/1/schema").await.ok();
    assert_eq!(raw, serde_json::from_str::<Value>(&v1).unwrap());

    // Lookup, with whitespace the registered text did not have.
    let spaced = v1.replace(',', " ,\n  ");
    let found = app
        .post("/subjects/a", json!({ "schema": spaced }))
        .await
        .ok();
    assert_eq!(found, first);
    let unknown = fields(&[ID, NOTE_DEFAULT]);
    app.post("/subjects/a", json!({ "schema": unknown }))
        .await
        .error(404, 40403);
    app.post("/subjects/nope", json!({ "schema": v1 }))
        .await
        .error(404, 40401);

    let message = app.get("/subjects/nope/versions").await.error(404, 40401);
    assert_eq!(message, "Subject 'nope' not found.");
    app.get("/subjects/nope/versions/1").await.error(404, 40401);
    app.get("/subjects/a/versions/9").await.error(404, 40402);
    for bad in ["abc", "0", "-2", "99999999999"] {
        app.get(&format!("/subjects/a/versions/{bad}"))
            .await
            .error(422, 42202);
    }

    // By id.
    assert_eq!(
        app.get("/schemas/ids/1").await.ok(),
        json!({ "schema": v1 })
    );
    assert_eq!(
        app.get("/schemas/ids/1?deleted=true").await.ok(),
        json!({ "schema": v1 })
    );
    assert_eq!(
        app.get("/schemas/ids/2/schema").await.ok(),
        serde_json::from_str::<Value>(&v2).unwrap()
    );
    assert_eq!(
        app.get("/schemas/ids/1/versions").await.ok(),
        json!([{ "subject": "a", "version": 1 }, { "subject": "b", "version": 1 }])
    );
    assert_eq!(
        app.get("/schemas/ids/1/subjects").await.ok(),
        json!(["a", "b"])
    );
    let message = app.get("/schemas/ids/99").await.error(404, 40403);
    assert!(message.contains("99"), "{message}");
    app.get("/schemas/ids/99/schema").await.error(404, 40403);
    app.get("/schemas/ids/99/versions").await.error(404, 40403);
    assert_eq!(app.get("/schemas/types").await.ok(), json!(["AVRO"]));
    app.get("/no/such/route").await.error(404, 404);

    // Soft and hard deletes of versions.
    assert_eq!(app.delete("/subjects/a/versions/1").await.ok(), json!(1));
    app.get("/subjects/a/versions/1").await.error(404, 40402);
    assert_eq!(
        app.get("/subjects/a/versions/1?deleted=true").await.ok(),
        first
    );
    assert_eq!(app.get("/subjects/a/versions").await.ok(), json!([2]));
    assert_eq!(
        app.get("/subjects/a/versions?deleted=true").await.ok(),
        json!([1, 2])
    );
    app.delete("/subjects/a/versions/1").await.error(404, 40406);
    app.delete("/subjects/a/versions/2?permanent=true")
        .await
        .error(404, 40407);
    app.delete("/subjects/a/versions/7").await.error(404, 40402);
    app.delete("/subjects/a/versions/x").await.error(422, 42202);
    assert_eq!(
        app.delete("/subjects/a/versions/1?permanent=true")
            .await
            .ok(),
        json!(1)
    );
    app.get("/subjects/a/versions/1?deleted=true")
        .await
        .error(404, 40402);

    // Soft and hard deletes of subjects.
    assert_eq!(app.delete("/subjects/b").await.ok(), json!([1]));
    assert_eq!(app.get("/subjects").await.ok(), json!(["a"]));
    assert_eq!(
        app.get("/subjects?deleted=true").await.ok(),
        json!(["a", "b"])
    );
    app.get("/subjects/b/versions").await.error(404, 40401);
    assert_eq!(
        app.get("/subjects/b/versions?deleted=true").await.ok(),
        json!([1])
    );
    assert_eq!(app.get("/schemas/ids/1/versions").await.ok(), json!([]));
    assert_eq!(
        app.get("/schemas/ids/1/versions?deleted=true").await.ok(),
        json!([{ "subject": "b", "version": 1 }])
    );
    app.delete("/subjects/b").await.error(404, 40404);
    app.delete("/subjects/nope").await.error(404, 40401);
    app.delete("/subjects/a?permanent=true")
        .await
        .error(404, 40405);
    assert_eq!(
        app.delete("/subjects/b?permanent=true").await.ok(),
        json!([1])
    );
    assert_eq!(app.get("/subjects?deleted=true").await.ok(), json!(["a"]));

    // The schema outlives its subjects, and keeps its id.
    assert_eq!(
        app.get("/schemas/ids/1").await.ok(),
        json!({ "schema": v1 })
    );
    assert_eq!(app.register_ok("c", &v1).await, 1);

    app.stop().await;
}

#[tokio::test]
async fn request_bodies_and_schema_validation() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let body = json!({ "schema": fields(&[ID]), "schemaType": "AVRO", "references": [] });

    // librdkafka, curl and the Java client label the same body differently.
    for content_type in [
        CONTENT_TYPE_V1,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
    ] {
        let reply = app
            .call(
                Method::POST,
                "/subjects/s/versions",
                Some((content_type, body.to_string())),
            )
            .await;
        assert_eq!(reply.ok(), json!({ "id": 1 }), "{content_type}");
    }

    let message = app
        .post(
            "/subjects/s/versions",
            json!({ "schema": "{\"type\":\"record\"}" }),
        )
        .await
        .error(422, 42201);
    assert!(message.starts_with("Invalid schema"), "{message}");
    app.post("/subjects/s/versions", json!({ "schema": "not json" }))
        .await
        .error(422, 42201);
    app.post("/subjects/s/versions", json!({ "schema": "" }))
        .await
        .error(422, 42201);
    app.post("/subjects/s/versions", json!({}))
        .await
        .error(422, 42201);
    let message = app
        .post(
            "/subjects/s/versions",
            json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }),
        )
        .await
        .error(422, 42201);
    assert!(message.contains("AVRO"), "{message}");
    let message = app
        .post(
            "/subjects/s/versions",
            json!({
                "schema": fields(&[ID]),
                "references": [{ "name": "x", "subject": "y", "version": 1 }]
            }),
        )
        .await
        .error(422, 42201);
    assert!(message.contains("references"), "{message}");
    app.call(
        Method::POST,
        "/subjects/s/versions",
        Some(("application/json", "{not json".to_owned())),
    )
    .await
    .error(400, 400);

    // Nothing invalid was stored.
    assert_eq!(app.get("/subjects/s/versions").await.ok(), json!([1]));
    app.get("/schemas/ids/2").await.error(404, 40403);

    app.stop().await;
}

#[tokio::test]
async fn config_endpoints() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;

    assert_eq!(
        app.get("/config").await.ok(),
        json!({ "compatibilityLevel": "BACKWARD" })
    );
    assert_eq!(
        app.put("/config", json!({ "compatibility": "FULL" }))
            .await
            .ok(),
        json!({ "compatibility": "FULL" })
    );
    assert_eq!(
        app.get("/config").await.ok(),
        json!({ "compatibilityLevel": "FULL" })
    );
    app.put("/config", json!({ "compatibility": "SIDEWAYS" }))
        .await
        .error(422, 42203);
    app.put("/config", json!({})).await.error(422, 42203);

    let message = app.get("/config/x").await.error(404, 40408);
    assert!(message.contains("'x'"), "{message}");
    assert_eq!(
        app.get("/config/x?defaultToGlobal=true").await.ok(),
        json!({ "compatibilityLevel": "FULL" })
    );
    app.set_level("x", "NONE").await;
    assert_eq!(
        app.get("/config/x").await.ok(),
        json!({ "compatibilityLevel": "NONE" })
    );
    app.put("/config/x", json!({ "compatibility": "BOGUS" }))
        .await
        .error(422, 42203);
    assert_eq!(
        app.delete("/config/x").await.ok(),
        json!({ "compatibilityLevel": "NONE" })
    );
    app.get("/config/x").await.error(404, 40408);
    app.delete("/config/never-seen").await.error(404, 40401);

    app.stop().await;
}

#[tokio::test]
async fn backward_is_the_default_and_identical_schemas_keep_their_id() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let v1 = fields(&[ID]);
    let id = app.register_ok("s", &v1).await;

    // Same schema, other layout and documentation: same id, no new version.
    let redocumented = r#"{
        "name": "Order", "namespace": "choreo.test", "type": "record",
        "doc": "An order as placed.",
        "fields": [ { "type": {"type": "string"}, "name": "id", "doc": "order id" } ]
    }"#;
    assert_eq!(app.register_ok("s", redocumented).await, id);
    assert_eq!(app.get("/subjects/s/versions").await.ok(), json!([1]));

    let reply = app.register("s", &fields(&[ID, QTY])).await;
    let message = reply.error(409, 409);
    assert!(message.contains("qty"), "409 must say why: {message}");
    assert!(message.contains("incompatible"), "{message}");

    let v2 = app.register_ok("s", &fields(&[ID, QTY_DEFAULT])).await;
    assert_ne!(v2, id);
    assert_eq!(app.get("/subjects/s/versions").await.ok(), json!([1, 2]));

    // The compatibility resource, against a given version.
    let required = json!({ "schema": fields(&[ID, QTY_DEFAULT, r#"{"name":"n","type":"int"}"#]) });
    let optional = json!({ "schema": fields(&[ID, QTY_DEFAULT, NOTE_DEFAULT]) });
    let path = "/compatibility/subjects/s/versions/latest";
    assert_eq!(
        app.post(path, required.clone()).await.ok(),
        json!({ "is_compatible": false })
    );
    let verbose = app
        .post(&format!("{path}?verbose=true"), required.clone())
        .await
        .ok();
    assert_eq!(verbose["is_compatible"], false);
    let messages = verbose["messages"].as_array().unwrap();
    assert!(
        messages.iter().any(|m| m.as_str().unwrap().contains("'n'")),
        "{verbose}"
    );
    assert_eq!(
        app.post(path, optional.clone()).await.ok(),
        json!({ "is_compatible": true })
    );
    assert_eq!(
        app.post(&format!("{path}?verbose=true"), optional.clone())
            .await
            .ok(),
        json!({ "is_compatible": true, "messages": [] })
    );
    // Version 1 lacks qty, so a schema requiring qty cannot read it...
    let needs_qty = json!({ "schema": fields(&[ID, QTY]) });
    assert_eq!(
        app.post("/compatibility/subjects/s/versions/1", needs_qty.clone())
            .await
            .ok(),
        json!({ "is_compatible": false })
    );
    // ...but it can read version 2, which always writes qty.
    assert_eq!(
        app.post("/compatibility/subjects/s/versions/2", needs_qty.clone())
            .await
            .ok(),
        json!({ "is_compatible": true })
    );
    app.post("/compatibility/subjects/s/versions/9", optional.clone())
        .await
        .error(404, 40402);
    app.post(
        "/compatibility/subjects/nope/versions/latest",
        optional.clone(),
    )
    .await
    .error(404, 40401);
    app.post("/compatibility/subjects/s/versions/zero", optional)
        .await
        .error(422, 42202);
    app.post(path, json!({ "schema": "{" }))
        .await
        .error(422, 42201);

    app.stop().await;
}

#[tokio::test]
async fn forward_full_and_none() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;

    // FORWARD: the previous schema must read new data.
    app.set_level("fwd", "FORWARD").await;
    app.register_ok("fwd", &fields(&[ID, QTY])).await;
    app.register_ok("fwd", &fields(&[ID, QTY, r#"{"name":"n","type":"int"}"#]))
        .await;
    // Dropping qty: the previous schema needs it and has no default.
    let message = app
        .register("fwd", &fields(&[ID, r#"{"name":"n","type":"int"}"#]))
        .await
        .error(409, 409);
    assert!(message.contains("qty"), "{message}");

    // FULL: both directions.
    app.set_level("full", "FULL").await;
    app.register_ok("full", &fields(&[ID])).await;
    app.register("full", &fields(&[ID, QTY]))
        .await
        .error(409, 409);
    app.register_ok("full", &fields(&[ID, QTY_DEFAULT])).await;
    app.register_ok("full", &fields(&[ID])).await;
    // A type change breaks both directions.
    app.register("full", &fields(&[r#"{"name":"id","type":"int"}"#]))
        .await
        .error(409, 409);

    // NONE: anything goes.
    app.set_level("none", "NONE").await;
    app.register_ok("none", &fields(&[ID])).await;
    app.register_ok("none", &fields(&[r#"{"name":"id","type":"int"}"#]))
        .await;
    app.register_ok("none", &fields(&[QTY])).await;
    assert_eq!(
        app.get("/subjects/none/versions").await.ok(),
        json!([1, 2, 3])
    );

    // The global level applies to subjects without their own.
    app.put("/config", json!({ "compatibility": "NONE" }))
        .await
        .ok();
    app.register_ok("plain", &fields(&[ID])).await;
    app.register_ok("plain", &fields(&[ID, QTY])).await;

    app.stop().await;
}

#[tokio::test]
async fn transitive_levels_check_every_live_version() {
    let dir = TempDir::new().unwrap();
    let app = TestApp::spawn(dir.path()).await;

    // v3 can read v2 (which always writes qty) but not v1 (which never does).
    let backward_chain = [
        fields(&[ID]),
        fields(&[ID, QTY_DEFAULT]),
        fields(&[ID, QTY]),
    ];
    // v1 can read v2 (qty is written) but not v3 (qty is gone, no default in v1).
    let forward_chain = [
        fields(&[ID, QTY]),
        fields(&[ID, QTY_DEFAULT]),
        fields(&[ID]),
    ];
    for (plain, transitive, chain) in [
        ("BACKWARD", "BACKWARD_TRANSITIVE", &backward_chain),
        ("FORWARD", "FORWARD_TRANSITIVE", &forward_chain),
        ("FULL", "FULL_TRANSITIVE", &backward_chain),
    ] {
        for level in [plain, transitive] {
            app.set_level(level, level).await;
            app.register_ok(level, &chain[0]).await;
            app.register_ok(level, &chain[1]).await;
        }
        app.register_ok(plain, &chain[2]).await;
        let message = app.register(transitive, &chain[2]).await.error(409, 409);
        assert!(message.contains("version 1"), "{transitive}: {message}");

        // Only live versions count: with v1 soft-deleted it is accepted.
        app.delete(&format!("/subjects/{transitive}/versions/1"))
            .await
            .ok();
        app.register_ok(transitive, &chain[2]).await;
    }

    app.stop().await;
}

#[tokio::test]
async fn ids_and_state_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let first = fields(&[ID]);
    let second = fields(&[ID, QTY_DEFAULT]);

    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.register_ok("s1", &first).await, 1);
    assert_eq!(app.register_ok("s2", &second).await, 2);
    assert_eq!(app.register_ok("s3", &second).await, 2);
    app.set_level("s1", "FULL_TRANSITIVE").await;
    app.put("/config", json!({ "compatibility": "FORWARD" }))
        .await
        .ok();
    // Hard-delete the only live user of id 2 left after s3 is soft-deleted.
    app.delete("/subjects/s2").await.ok();
    app.delete("/subjects/s2?permanent=true").await.ok();
    app.delete("/subjects/s3").await.ok();
    app.stop().await;

    assert!(dir.path().join("registry.db").exists());
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(
        app.get("/schemas/ids/1").await.ok(),
        json!({ "schema": first })
    );
    assert_eq!(
        app.get("/schemas/ids/2").await.ok(),
        json!({ "schema": second })
    );
    assert_eq!(
        app.get("/subjects/s1/versions/1").await.ok(),
        json!({ "subject": "s1", "version": 1, "id": 1, "schema": first })
    );
    assert_eq!(app.get("/subjects").await.ok(), json!(["s1"]));
    assert_eq!(
        app.get("/subjects?deleted=true").await.ok(),
        json!(["s1", "s3"])
    );
    assert_eq!(
        app.get("/config/s1").await.ok(),
        json!({ "compatibilityLevel": "FULL_TRANSITIVE" })
    );
    assert_eq!(
        app.get("/config").await.ok(),
        json!({ "compatibilityLevel": "FORWARD" })
    );

    // Known schemas keep their ids; a new one gets the next id, never 2.
    assert_eq!(app.register_ok("s4", &second).await, 2);
    assert_eq!(app.register_ok("s5", &fields(&[ID, NOTE_DEFAULT])).await, 3);
    // s3's soft-deleted version 1 keeps its number.
    assert_eq!(app.register_ok("s3", &first).await, 1);
    assert_eq!(
        app.get("/subjects/s3/versions?deleted=true").await.ok(),
        json!([1, 2])
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_registrations_never_split_an_id() {
    let dir = TempDir::new().unwrap();
    let app = std::sync::Arc::new(TestApp::spawn(dir.path()).await);
    let shared = fields(&[ID, NOTE_DEFAULT]);

    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let same = app.register_ok(&format!("same-{i}"), &shared).await;
            let field = format!(r#"{{"name":"f{i}","type":"int","default":{i}}}"#);
            let own = app
                .register_ok(&format!("own-{i}"), &fields(&[ID, &field]))
                .await;
            (same, own)
        }));
    }
    let mut same_ids = Vec::new();
    let mut own_ids = Vec::new();
    for task in tasks {
        let (same, own) = task.await.unwrap();
        same_ids.push(same);
        own_ids.push(own);
    }
    let first = same_ids[0];
    assert!(same_ids.iter().all(|id| *id == first), "{same_ids:?}");
    let mut all: Vec<u64> = own_ids.into_iter().chain([first]).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=17).collect::<Vec<u64>>(),
        "ids are dense and unique"
    );

    let Ok(app) = std::sync::Arc::try_unwrap(app) else {
        panic!("tasks still hold the app");
    };
    app.stop().await;
}
