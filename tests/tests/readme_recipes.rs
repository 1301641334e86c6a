//! The README's "Follow a purchase" recipes, run as written against a live
//! stack, so the documentation cannot drift from the code.
//!
//! The recipes are the ```` ```sh ```` blocks of `README.md`
//! whose first line is `# recipe: <name>`; they are read from the markdown
//! itself. Each runs with bash in the repository root (so relative paths
//! resolve), with the built binaries first on `PATH` (so `choreo` is the
//! workspace's), the default addresses of `make run` replaced by the
//! stack's, and the shell variables a recipe sets (`ORDER`, …) carried to
//! the next one. Between recipes the test does what the prose says the
//! reader does (stop the payment service) and waits on observable state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use choreo_testkit::api::Api;
use choreo_testkit::{bin_dir, eventually, repo_root, topics, TestStack};

const SAGA: Duration = Duration::from_secs(60);

/// Variables recipes set for later ones.
const CARRIED: [&str; 2] = ["ORDER", "ORDER2"];

fn readme() -> PathBuf {
    repo_root().join("README.md")
}

/// `# recipe: name` → the block's text, in document order.
fn recipes(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => block = Some(Vec::new()),
            (Some(lines), l) if l.starts_with("```") => {
                if let Some(name) = lines.first().and_then(|f| f.strip_prefix("# recipe:")) {
                    out.push((name.trim().to_owned(), lines[1..].join("\n")));
                }
                block = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    out
}

struct Runner {
    state: tempfile::TempDir,
    substitutions: Vec<(&'static str, String)>,
    env: Vec<(&'static str, String)>,
    vars: BTreeMap<String, String>,
}

impl Runner {
    fn new(stack: &TestStack) -> anyhow::Result<Self> {
        let url = |s: &str| stack.service_url(s);
        Ok(Self {
            state: tempfile::tempdir()?,
            // Longest first, so a registry URL is not half-replaced as a host.
            substitutions: vec![
                ("http://127.0.0.1:8080", url("order")),
                ("http://127.0.0.1:8081", stack.registry_url()),
                ("http://127.0.0.1:8082", url("inventory")),
                ("http://127.0.0.1:8083", url("payment")),
                ("http://127.0.0.1:8084", url("courier")),
                ("http://127.0.0.1:8085", url("communication")),
                ("127.0.0.1:9092", stack.brokers()),
                (
                    "data/admin-token",
                    stack.data_dir().join("admin-token").display().to_string(),
                ),
                (
                    "data/communication",
                    stack
                        .service_data_dir("communication")
                        .display()
                        .to_string(),
                ),
            ],
            // choreo's own defaults are the same addresses; the recipes
            // rely on them, as a reader of `make run` would.
            env: vec![
                ("CHOREO_BROKERS", stack.brokers()),
                ("CHOREO_REGISTRY_URL", stack.registry_url()),
                ("CHOREO_ORDER_URL", url("order")),
                ("CHOREO_INVENTORY_URL", url("inventory")),
                ("CHOREO_PAYMENT_URL", url("payment")),
                ("CHOREO_COURIER_URL", url("courier")),
                ("CHOREO_COMMUNICATION_URL", url("communication")),
                // What `choreo` would read from ./data/admin-token under
                // `make run` (the stack keeps its own elsewhere).
                (
                    "CHOREO_ADMIN_TOKEN",
                    stack.admin_token().expose().unwrap_or_default().to_owned(),
                ),
                ("NO_COLOR", "1".into()),
            ],
            vars: BTreeMap::new(),
        })
    }

    /// Runs one recipe; returns its stdout. Fails with the script and its
    /// stderr when bash does.
    async fn run(&mut self, name: &str, script: &str) -> anyhow::Result<String> {
        let mut body = script.to_owned();
        for (from, to) in &self.substitutions {
            body = body.replace(from, to);
        }
        let state = self.state.path().join("vars");
        let mut full = String::from("set -euo pipefail\n");
        for (k, v) in &self.vars {
            full.push_str(&format!("{k}='{v}'\n"));
        }
        full.push_str(&body);
        full.push('\n');
        for var in CARRIED {
            full.push_str(&format!(
                "if [ -n \"${{{var}:-}}\" ]; then echo \"{var}=${var}\" >> '{}'; fi\n",
                state.display()
            ));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin_dir()];
        paths.extend(std::env::split_paths(&path));
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::process::Command::new("bash")
                .args(["-c", &full])
                .current_dir(repo_root())
                .env("PATH", std::env::join_paths(paths)?)
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .output(),
        )
        .await??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            out.status.success(),
            "recipe `{name}` failed ({}):\n{full}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        if let Ok(text) = std::fs::read_to_string(&state) {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    self.vars.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok(stdout)
    }

    fn var(&self, name: &str) -> String {
        self.vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no recipe set ${name}"))
    }
}

fn has_line(text: &str, all: &[&str]) -> bool {
    text.lines().any(|l| all.iter().all(|n| l.contains(n)))
}

#[test]
fn recipes_are_found_in_the_readme() {
    let names: Vec<String> = recipes(&std::fs::read_to_string(readme()).expect("README section"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "walkthrough",
            "restock",
            "place-order",
            "kcat-watch",
            "choreo-watch",
            "trace",
            "payment-failure",
            "poison",
            "dlq-list",
            "dlq-replay"
        ]
    );
}

#[tokio::test]
async fn follow_a_purchase_recipes_work_as_written() -> anyhow::Result<()> {
    let markdown = std::fs::read_to_string(readme())?;
    let recipes: BTreeMap<String, String> = recipes(&markdown).into_iter().collect();
    let recipe = |name: &str| {
        recipes
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("recipe {name}"))
    };
    let mut stack = TestStack::builder().all_services().start().await?;
    let api = Api::new(&stack);
    let mut runner = Runner::new(&stack)?;

    // The HTTP walkthrough: confirmed, shipped, charged, mailed.
    let out = runner.run("walkthrough", &recipe("walkthrough")).await?;
    assert!(out.contains("\"status\":\"CONFIRMED\""), "{out}");
    assert!(out.contains("\"status\":\"MANIFESTED\""), "{out}");
    assert!(out.contains("\"net_charge_minor\":2500"), "{out}");
    assert!(out.contains("Subject: Your order"), "{out}");
    assert!(out.contains(".ORDER_CONFIRMED@choreo>"), "{out}");
    runner.vars.remove("ORDER");

    // Setting stock with the admin token, and refused without it.
    let out = runner.run("restock", &recipe("restock")).await?;
    assert!(out.contains("\"available\":5"), "{out}");
    assert!(has_line(&out, &["admin token", "401"]), "{out}");
    assert_eq!(api.stock("NEW-1").await?["available"], 5);

    // Place an order by typing JSON into kcat.
    let out = runner.run("place-order", &recipe("place-order")).await?;
    assert_eq!(out.trim(), "CONFIRMED total 25.00 EUR");
    let order = runner.var("ORDER");
    eventually("the confirmation mail's CustomerNotified", SAGA, || async {
        let events = topics::order_events(
            &stack.brokers(),
            &stack.registry_url(),
            "notifications",
            &order,
        )
        .await?;
        Ok((!events.is_empty()).then_some(()))
    })
    .await?;

    // Raw, with kcat: one line per topic, each keyed by the order.
    let out = runner.run("kcat-watch", &recipe("kcat-watch")).await?;
    for topic in [
        "orders/",
        "inventory/",
        "shipments/",
        "payments/",
        "notifications/",
    ] {
        assert!(
            has_line(&out, &[topic, &format!("key={order}"), "bytes"]),
            "{topic} in:\n{out}"
        );
    }
    assert_eq!(
        out.lines().filter(|l| l.starts_with("orders/")).count(),
        2,
        "{out}"
    );

    // Decoded, with choreo watch.
    let out = runner.run("choreo-watch", &recipe("choreo-watch")).await?;
    for step in [
        "OrderPlaced",
        "StockReserved",
        "ShipmentManifested",
        "PaymentCompleted",
        "OrderConfirmed",
        "CustomerNotified",
    ] {
        assert!(has_line(&out, &[step, &order]), "{step} in:\n{out}");
    }
    assert!(
        has_line(&out, &["PlaceOrder", &order, "customer=alice"]),
        "{out}"
    );

    // The trace.
    let out = runner.run("trace", &recipe("trace")).await?;
    assert!(out.starts_with(&format!("order {order}\n")), "{out}");
    assert!(
        has_line(&out, &["OrderPlaced", "by order", "← PlaceOrder"]),
        "{out}"
    );
    assert!(
        has_line(&out, &["OrderConfirmed", "← PaymentCompleted"]),
        "{out}"
    );
    assert!(has_line(&out, &["state: CONFIRMED after"]), "{out}");

    // A hand-encoded payment failure, with the payment service stopped as
    // the prose says.
    stack.stop_service("payment", 0).await;
    let out = runner
        .run("payment-failure", &recipe("payment-failure"))
        .await?;
    assert_eq!(out.trim(), "CANCELLED (PAYMENT_DECLINED) total 12.50 EUR");
    let order2 = runner.var("ORDER2");
    let shipment = api.shipment(&order2).await?.expect("a shipment");
    assert_eq!(shipment["status"], "CANCELLED", "{shipment}");

    // Dead letters: poison, list, replay.
    runner.run("poison", &recipe("poison")).await?;
    eventually("poison-1 dead-lettered by inventory", SAGA, || async {
        let records = topics::read_all(&stack.brokers(), "dlq.inventory").await?;
        Ok((!records.is_empty()).then_some(()))
    })
    .await?;
    let out = runner.run("dlq-list", &recipe("dlq-list")).await?;
    assert!(
        has_line(&out, &["dlq.inventory/0/0", "from orders/", "key poison-1"]),
        "{out}"
    );
    assert!(out.contains("value: utf8 \"this is not avro\""), "{out}");
    let out = runner.run("dlq-replay", &recipe("dlq-replay")).await?;
    assert!(
        has_line(
            &out,
            &["replayed dlq.inventory/0/0 → orders/", "key poison-1"]
        ),
        "{out}"
    );
    assert!(
        has_line(&out, &["poison-1", "choreo.replay=dlq.inventory/0/0"]),
        "{out}"
    );

    stack.shutdown().await;
    Ok(())
}
