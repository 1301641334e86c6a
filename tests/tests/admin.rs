//! Writes outside the saga need the admin token (README "Admin writes"):
//! on a stack that has one — as under `make run` and compose — each of
//! `PUT /stock/{sku}`, `PUT /accounts/{id}`, `POST /dlq/replay` and the
//! registry's deletes and compatibility writes answers 401 without it or with a wrong one and
//! changes nothing, and does its job with it; reads and registering stay
//! open; the token reaches no log.

use std::path::Path;
use std::time::Duration;

use choreo_testkit::api::Api;
use choreo_testkit::{eventually, topics, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

mod common;

struct Client {
    http: reqwest::Client,
    token: String,
}

/// How a request is authorised.
#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    Wrong,
    Admin,
}

impl Client {
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
        auth: Auth,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request = match auth {
            Auth::None => request,
            Auth::Wrong => request.bearer_auth(format!("{}x", self.token)),
            Auth::Admin => request.bearer_auth(&self.token),
        };
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    async fn get(&self, url: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::GET, url, None, Auth::None).await
    }
}

/// One admin write: without the token and with a wrong one it is refused
/// with 401 and the error shape of its server, and `state` (a read of
/// what it would change) reads the same afterwards; with the token it
/// answers `ok` and `state` changes.
async fn guarded(
    c: &Client,
    (method, url, body): (Method, String, Option<Value>),
    state: &str,
    registry: bool,
) -> anyhow::Result<Value> {
    let before = c.get(state).await?;
    for auth in [Auth::None, Auth::Wrong] {
        let (status, answer) = c.send(method.clone(), &url, body.clone(), auth).await?;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {url} {auth:?}: {answer}"
        );
        if registry {
            assert_eq!(answer["error_code"], 40101, "{answer}");
            assert!(answer["message"].as_str().is_some(), "{answer}");
        } else {
            assert!(
                answer["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("token")),
                "{answer}"
            );
        }
        assert!(
            !answer.to_string().contains(&c.token),
            "a refusal echoes the token"
        );
        assert_eq!(
            c.get(state).await?,
            before,
            "{method} {url} {auth:?} changed {state}"
        );
    }
    let (status, answer) = c.send(method.clone(), &url, body, Auth::Admin).await?;
    assert!(
        status.is_success(),
        "{method} {url} with the token: {status} {answer}"
    );
    assert_ne!(
        c.get(state).await?,
        before,
        "{method} {url} with the token changed nothing"
    );
    Ok(answer)
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn admin_writes_need_the_token_and_reads_stay_open() -> anyhow::Result<()> {
    let stack = TestStack::builder()
        .services(&["inventory", "payment"])
        .start()
        .await?;
    let token = stack
        .admin_token()
        .expose()
        .expect("a test stack has an admin token")
        .to_owned();
    let file = std::fs::read_to_string(stack.data_dir().join("admin-token"))?;
    assert_eq!(
        file.trim(),
        token,
        "the stack keeps its token in its data folder"
    );
    let c = Client {
        http: reqwest::Client::new(),
        token,
    };
    let inventory = stack.service_url("inventory");
    let payment = stack.service_url("payment");
    let registry = stack.registry_url();

    // Reads stay open.
    for url in [
        format!("{inventory}/stock"),
        format!("{inventory}/stock/WIDGET-1"),
        format!("{payment}/accounts/alice"),
        format!("{registry}/subjects"),
        format!("{registry}/config"),
    ] {
        let (status, body) = c.get(&url).await?;
        assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    }

    // The services' admin writes.
    let stock = guarded(
        &c,
        (
            Method::PUT,
            format!("{inventory}/stock/ADMIN-1"),
            Some(json!({"available": 7})),
        ),
        &format!("{inventory}/stock/ADMIN-1"),
        false,
    )
    .await?;
    assert_eq!(stock["available"], 7, "{stock}");
    let account = guarded(
        &c,
        (
            Method::PUT,
            format!("{payment}/accounts/admin-customer"),
            Some(
                json!({"customer_id": "admin-customer", "balance_minor": 900,
                        "currency": "EUR", "blocked": false}),
            ),
        ),
        &format!("{payment}/accounts/admin-customer"),
        false,
    )
    .await?;
    assert_eq!(account["balance_minor"], 900, "{account}");
    // The testkit's client sends the token: the saga tests' set-up works.
    let api = Api::new(&stack);
    assert_eq!(api.set_stock("ADMIN-1", 3).await?["available"], 3);

    // Registering is open (a producer registers its own schemas).
    let subject = "admin-test-value";
    let schema = json!({"schema": r#"{"type":"record","name":"AdminTest","fields":[{"name":"a","type":"int"}]}"#});
    let (status, body) = c
        .send(
            Method::POST,
            &format!("{registry}/subjects/{subject}/versions"),
            Some(schema),
            Auth::None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "register: {body}");

    // The registry's compatibility writes and deletes.
    let global = format!("{registry}/config");
    let before = c.get(&global).await?.1;
    guarded(
        &c,
        (
            Method::PUT,
            global.clone(),
            Some(json!({"compatibility": "NONE"})),
        ),
        &global,
        true,
    )
    .await?;
    let (status, _) = c
        .send(
            Method::PUT,
            &global,
            Some(json!({"compatibility": before["compatibilityLevel"]})),
            Auth::Admin,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let subject_config = format!("{registry}/config/{subject}");
    guarded(
        &c,
        (
            Method::PUT,
            subject_config.clone(),
            Some(json!({"compatibility": "FULL"})),
        ),
        &subject_config,
        true,
    )
    .await?;
    guarded(
        &c,
        (Method::DELETE, subject_config.clone(), None),
        &subject_config,
        true,
    )
    .await?;
    let version = format!("{registry}/subjects/{subject}/versions/1");
    guarded(&c, (Method::DELETE, version.clone(), None), &version, true).await?;
    let subjects = format!("{registry}/subjects?deleted=false");
    let (status, body) = c
        .send(
            Method::POST,
            &format!("{registry}/subjects/{subject}/versions"),
            Some(json!({"schema": r#"{"type":"record","name":"AdminTest","fields":[{"name":"b","type":"int"}]}"#})),
            Auth::None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "register again: {body}");
    guarded(
        &c,
        (
            Method::DELETE,
            format!("{registry}/subjects/{subject}"),
            None,
        ),
        &subjects,
        true,
    )
    .await?;

    // The token is in no log, though every process was given it.
    let mut files = Vec::new();
    files_under(&stack.data_dir().join("logs"), &mut files);
    assert!(!files.is_empty(), "the stack's logs are in its data folder");
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
        assert!(
            !text.contains(&c.token),
            "{} holds the admin token",
            file.display()
        );
    }
    stack.shutdown().await;
    Ok(())
}

/// `POST /dlq/replay` is an admin write too: without the token, or with a
/// wrong one, it answers 401 and puts nothing back on the source topic;
/// with it, the dead letter is re-produced with `choreo.replay`.
#[tokio::test]
async fn dlq_replay_needs_the_token() -> anyhow::Result<()> {
    let stack = TestStack::builder()
        .services(&["inventory"])
        .start()
        .await?;
    let c = Client {
        http: reqwest::Client::new(),
        token: stack
            .admin_token()
            .expose()
            .expect("a test stack has an admin token")
            .to_owned(),
    };
    let brokers = stack.brokers();
    common::produce(&stack, "orders", "admin-poison", b"not avro").await?;
    eventually(
        "the poison message in dlq.inventory",
        Duration::from_secs(60),
        || async {
            Ok(topics::read_all(&brokers, "dlq.inventory")
                .await?
                .first()
                .map(|r| r.offset))
        },
    )
    .await?;
    let url = format!("{}/dlq/replay", stack.service_url("inventory"));
    let body = || Some(json!({"offset": 0}));
    for auth in [Auth::None, Auth::Wrong] {
        let (status, answer) = c.send(Method::POST, &url, body(), auth).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("token")),
            "{answer}"
        );
    }
    // Bad requests with the token: a clear 4xx, nothing produced.
    let (status, answer) = c
        .send(Method::POST, &url, Some(json!({"offset": 99})), Auth::Admin)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("no dead letter at offset 99")),
        "{answer}"
    );
    let (status, answer) = c
        .send(Method::POST, &url, Some(json!({})), Auth::Admin)
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let orders = topics::read_all(&brokers, "orders").await?;
    assert_eq!(orders.len(), 1, "a refused replay produced something");

    let (status, answer) = c.send(Method::POST, &url, body(), Auth::Admin).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["replayed"][0]["from"], "dlq.inventory/0/0",
        "{answer}"
    );
    assert_eq!(answer["replayed"][0]["key"], "admin-poison", "{answer}");
    let orders = topics::read_all(&brokers, "orders").await?;
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(orders[1].header("choreo.replay"), Some("dlq.inventory/0/0"));
    assert_eq!(orders[1].payload, orders[0].payload);
    stack.shutdown().await;
    Ok(())
}
