//! Every service's HTTP contract (README "HTTP contracts"): each serves
//! its OpenAPI document at `GET /openapi.json`, generated from its
//! handlers, and schemathesis (`make tools` installs the version pinned in
//! tests/schemathesis/requirements.txt) fuzzes every operation of every
//! service from it — valid and invalid requests — on a running stack that
//! holds one order of each outcome: no 5xx, and every answer's status,
//! content type, headers and body as the document says. Half the path and
//! query ids it sends are those orders', customers' and SKUs' (a
//! schemathesis dictionary), so the answers checked include found ones,
//! not only 404s.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use choreo_testkit::api::{order_body, Api};
use choreo_testkit::TestStack;
use serde_json::Value;

/// Each service's operations, as `METHOD path`: the contract the
/// documents must state, probes included.
const OPERATIONS: &[(&str, &[&str])] = &[
    (
        "order",
        &[
            "POST /orders",
            "GET /orders",
            "GET /orders/{id}",
            "DELETE /orders/{id}",
        ],
    ),
    (
        "inventory",
        &[
            "GET /stock",
            "GET /stock/{sku}",
            "PUT /stock/{sku}",
            "GET /reservations/{order_id}",
        ],
    ),
    (
        "payment",
        &[
            "GET /accounts/{customer_id}",
            "PUT /accounts/{customer_id}",
            "GET /payments/{order_id}",
        ],
    ),
    ("courier", &["GET /shipments/{order_id}"]),
    ("communication", &["GET /notifications"]),
];
const PROBES: &[&str] = &["GET /healthz", "GET /readyz", "GET /metrics"];
/// Served by every service's runtime, beside the probes.
const RUNTIME: &[&str] = &["POST /dlq/replay"];
/// Writes outside the saga: documented as needing the admin token.
const ADMIN: &[&str] = &[
    "PUT /stock/{sku}",
    "PUT /accounts/{customer_id}",
    "POST /dlq/replay",
];

/// Test cases per operation and phase: enough to reach every answer of
/// these small APIs, few enough that the whole run stays near a minute.
const MAX_EXAMPLES: &str = "40";

fn schemathesis() -> PathBuf {
    std::env::var_os("CHOREO_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let requirements = std::fs::read_to_string(
                choreo_testkit::repo_root().join("tests/schemathesis/requirements.txt"),
            )
            .expect("tests/schemathesis/requirements.txt");
            let version = requirements
                .lines()
                .find_map(|l| l.trim().strip_prefix("schemathesis=="))
                .expect("schemathesis==<version>");
            choreo_stack::config::tools_dir()
                .join(format!("schemathesis-{version}"))
                .join("bin/st")
        })
}

fn operations(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

fn operation<'a>(doc: &'a Value, op: &str) -> &'a Value {
    let (method, path) = op.split_once(' ').expect("METHOD path");
    &doc["paths"][path][method.to_lowercase()]
}

/// The document's own promises, read as a client would: the operations,
/// the error body everywhere, the admin token where it is needed.
fn check_document(service: &str, doc: &Value, expected: &[&str]) {
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{service}: {}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], format!("choreo {service}"));
    let want: BTreeSet<String> = expected
        .iter()
        .chain(PROBES)
        .chain(RUNTIME)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(operations(doc), want, "{service}'s operations");
    for op in &want {
        let answers = operation(doc, op)["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{service} {op}: no responses"));
        assert!(
            answers.keys().any(|s| s.starts_with('2')),
            "{service} {op}: no success answer"
        );
        for (status, answer) in answers {
            if status.starts_with('2') {
                continue;
            }
            assert_eq!(
                answer["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{service} {op} {status}: not the one error body"
            );
        }
        let is_probe = PROBES.contains(&op.as_str());
        if !is_probe {
            for status in ["500", "503"] {
                assert!(answers.contains_key(status), "{service} {op}: no {status}");
            }
        }
        let admin = ADMIN.contains(&op.as_str());
        assert_eq!(
            operation(doc, op)["security"][0]
                .get("admin_token")
                .is_some(),
            admin,
            "{service} {op}: admin token"
        );
        assert_eq!(answers.contains_key("401"), admin, "{service} {op}: 401");
    }
}

/// A schemathesis configuration sending, half the time, ids that exist:
/// the orders placed, their customers and the seeded SKUs.
fn known_values(orders: &[String]) -> String {
    let list = |values: &[&str]| {
        values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let orders: Vec<&str> = orders.iter().map(String::as_str).collect();
    format!(
        "[dictionaries.orders]\nvalues = [{}]\n\
         [dictionaries.customers]\nvalues = [{}]\n\
         [dictionaries.skus]\nvalues = [{}]\n\n\
         [parameters]\n\
         \"path.id\" = {{ dictionary = \"orders\", probability = 0.5 }}\n\
         \"path.order_id\" = {{ dictionary = \"orders\", probability = 0.5 }}\n\
         \"query.order_id\" = {{ dictionary = \"orders\", probability = 0.5 }}\n\
         \"path.customer_id\" = {{ dictionary = \"customers\", probability = 0.5 }}\n\
         \"path.sku\" = {{ dictionary = \"skus\", probability = 0.5 }}\n",
        list(&orders),
        list(&["alice", "bob", "carol"]),
        list(&["WIDGET-1", "GADGET-2", "SOLDOUT-0"]),
    )
}

#[tokio::test]
async fn every_service_serves_its_contract_and_holds_to_it_under_fuzzing() -> anyhow::Result<()> {
    let st = schemathesis();
    anyhow::ensure!(
        st.exists(),
        "{} is missing: `make tools` installs schemathesis",
        st.display()
    );
    let stack = TestStack::builder().all_services().start().await?;
    let token = stack
        .admin_token()
        .expose()
        .expect("test stacks have an admin token")
        .to_owned();
    let http = reqwest::Client::new();
    let api = Api::new(&stack);

    // One order per outcome: confirmed, declined, out of stock, not served.
    let mut orders = Vec::new();
    for (customer, sku, country, status) in [
        ("alice", "WIDGET-1", "DE", "CONFIRMED"),
        ("bob", "WIDGET-1", "DE", "CANCELLED"),
        ("carol", "SOLDOUT-0", "DE", "CANCELLED"),
        ("alice", "GADGET-2", "JP", "CANCELLED"),
    ] {
        let id = api
            .place_order(&order_body(customer, sku, 1, 1000, country))
            .await?;
        let order = api.wait_terminal(&id, Duration::from_secs(60)).await?;
        assert_eq!(order["status"], status, "{order}");
        orders.push(id);
    }
    let reports = tempfile::tempdir()?;
    let config = reports.path().join("schemathesis.toml");
    std::fs::write(&config, known_values(&orders))?;
    let mut failures = Vec::new();
    for (service, expected) in OPERATIONS {
        let url = format!("{}/openapi.json", stack.service_url(service));
        let response = http.get(&url).send().await?;
        assert_eq!(response.status(), 200, "{url}");
        assert!(
            response.headers()["content-type"]
                .to_str()?
                .starts_with("application/json"),
            "{url}"
        );
        let doc: Value = response.json().await?;
        check_document(service, &doc, expected);

        let started = Instant::now();
        let output = tokio::process::Command::new(&st)
            .arg("--no-color")
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&url)
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
            ])
            // One worker: hypothesis describes its strategies with `ast`,
            // which Python 3.11 does not parse safely from two threads.
            .args([
                "--max-examples",
                MAX_EXAMPLES,
                "--seed",
                "1",
                "--workers",
                "1",
            ])
            .args(["--request-timeout", "10"])
            .args(["--suppress-health-check", "all"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .arg("--report-dir")
            .arg(reports.path().join(service))
            // Its cache (`.schemathesis/`) goes with the reports.
            .current_dir(reports.path())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(300), output).await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!(
            "{service}: schemathesis {} in {:.1}s\n{}",
            output.status,
            started.elapsed().as_secs_f64(),
            stdout
                .lines()
                .filter(|l| l.contains("generated") || l.contains("API Links"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        if !output.status.success() {
            failures.push(format!(
                "{service}: schemathesis {}\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    stack.shutdown().await;
    Ok(())
}
