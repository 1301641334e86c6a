//! Communication's SMTP path against a real SMTP catcher: Mailpit, the
//! version docker compose runs, built by `make tools`. One order of each
//! outcome; through Mailpit's HTTP API exactly one mail per order and
//! template, to the customer, with the template's subject and the stable
//! Message-ID — also after every `orders` event is delivered again.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, mailpit, topics, TestStack};
use serde_json::Value;

const SAGA: Duration = Duration::from_secs(60);

/// A Mailpit process on free ports, killed on drop.
struct Mailpit {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    smtp: u16,
    api: String,
}

impl Mailpit {
    async fn start() -> anyhow::Result<Self> {
        let bin = mailpit();
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: `make tools` builds Mailpit",
            bin.display()
        );
        let dir = tempfile::tempdir()?;
        let ports = choreo_stack::ports::allocate(2)?;
        let (smtp, http) = (ports[0], ports[1]);
        let child = tokio::process::Command::new(bin)
            .args(["--smtp", &format!("127.0.0.1:{smtp}")])
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .arg("--database")
            .arg(dir.path().join("mailpit.db"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let api = format!("http://127.0.0.1:{http}");
        let ready = format!("{api}/readyz");
        eventually("Mailpit ready", Duration::from_secs(20), || {
            let ready = ready.clone();
            async move {
                let ok = reqwest::get(&ready)
                    .await
                    .is_ok_and(|r| r.status().is_success());
                Ok(ok.then_some(()))
            }
        })
        .await?;
        Ok(Self {
            _child: child,
            _dir: dir,
            smtp,
            api,
        })
    }

    /// Every message Mailpit holds, newest first.
    async fn messages(&self) -> anyhow::Result<Vec<Value>> {
        let body: Value = reqwest::get(format!("{}/api/v1/messages?limit=1000", self.api))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(body["messages"].as_array().cloned().unwrap_or_default())
    }
}

/// What the test expects of one order's mail.
struct Expected {
    customer: &'static str,
    template: &'static str,
    subject: String,
}

/// Message-ID → (recipient, subject), failing on a Message-ID seen twice.
fn by_message_id(messages: &[Value]) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for m in messages {
        let id = m["MessageID"].as_str().unwrap_or_default().to_owned();
        let to: Vec<&str> = m["To"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["Address"].as_str())
            .collect();
        assert_eq!(to.len(), 1, "one recipient: {m}");
        let subject = m["Subject"].as_str().unwrap_or_default().to_owned();
        let previous = out.insert(id.clone(), (to[0].to_owned(), subject));
        assert!(previous.is_none(), "Message-ID {id} was delivered twice");
    }
    out
}

#[tokio::test]
async fn smtp_delivers_one_mail_per_order_and_template_to_mailpit() -> anyhow::Result<()> {
    let mailpit = Mailpit::start().await?;
    let stack = TestStack::builder()
        .all_services()
        .env(
            "communication",
            "CHOREO_SMTP_URL",
            format!("smtp://127.0.0.1:{}", mailpit.smtp),
        )
        .start()
        .await?;
    let api = Api::new(&stack);

    // One order per outcome: confirmed, declined, out of stock, not served.
    let mut expected = BTreeMap::new();
    for (customer, sku, country, template) in [
        ("alice", "WIDGET-1", "DE", "ORDER_CONFIRMED"),
        ("bob", "WIDGET-1", "DE", "ORDER_CANCELLED"),
        ("carol", "SOLDOUT-0", "DE", "ORDER_CANCELLED"),
        ("alice", "GADGET-2", "JP", "ORDER_CANCELLED"),
    ] {
        let id = api
            .place_order(&order_body(customer, sku, 1, 1000, country))
            .await?;
        let order = api.wait_terminal(&id, SAGA).await?;
        let state = order["status"].as_str().unwrap_or_default();
        let subject = match template {
            "ORDER_CONFIRMED" => {
                assert_eq!(state, "CONFIRMED", "{order}");
                format!("Your order {id} is confirmed")
            }
            _ => {
                assert_eq!(state, "CANCELLED", "{order}");
                format!("Your order {id} has been cancelled")
            }
        };
        expected.insert(
            format!("{id}.{template}@choreo"),
            Expected {
                customer,
                template,
                subject,
            },
        );
    }

    let check = |messages: &[Value]| {
        let got = by_message_id(messages);
        let wanted: Vec<&String> = expected.keys().collect();
        assert_eq!(got.keys().collect::<Vec<_>>(), wanted, "one mail per order");
        for (id, e) in &expected {
            let (to, subject) = &got[id];
            assert_eq!(
                to,
                &format!("{}@example.com", e.customer),
                "{id} ({})",
                e.template
            );
            assert_eq!(subject, &e.subject, "{id}");
        }
    };
    let messages = eventually("every mail at Mailpit", SAGA, || async {
        let messages = mailpit.messages().await?;
        Ok((messages.len() >= expected.len()).then_some(messages))
    })
    .await?;
    check(&messages);

    // Every `orders` event again, byte for byte: Communication sees each as
    // a duplicate and sends nothing more.
    let replayed = topics::reproduce_all(&stack.brokers(), "orders").await?;
    assert!(replayed >= 8, "replayed {replayed} orders events");
    topics::wait_groups_caught_up(&stack.brokers(), SAGA).await?;
    let metrics = reqwest::get(format!("{}/metrics", stack.service_url("communication")))
        .await?
        .text()
        .await?;
    let duplicates: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("choreo_duplicates_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        duplicates >= replayed as f64,
        "{duplicates} duplicates seen of {replayed}"
    );
    check(&mailpit.messages().await?);
    stack.shutdown().await;
    Ok(())
}
