//! Placing many orders whose data decides their outcome, and waiting until
//! every one is terminal.
//!
//! Outcomes come from the seed data (deploy/seed): `alice` can pay, `bob`
//! cannot afford 100.00, `mallory` is blocked, `SOLDOUT-0` has no stock and
//! `JP` is not a served country. Orders go over HTTP (with an
//! `Idempotency-Key`, retried while the Order service is down, as a real
//! client would) or as JSON commands on `order-requests`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{stream, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::api::{order_body, Api};
use crate::TestStack;

/// What an order's data makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Confirmed,
    OutOfStock,
    NoRoute,
    InsufficientFunds,
    Blocked,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Confirmed,
        Outcome::OutOfStock,
        Outcome::NoRoute,
        Outcome::InsufficientFunds,
        Outcome::Blocked,
    ];

    /// `(status, reason)` the order must end in.
    pub fn expected(self) -> (&'static str, Option<&'static str>) {
        match self {
            Outcome::Confirmed => ("CONFIRMED", None),
            Outcome::OutOfStock => ("CANCELLED", Some("OUT_OF_STOCK")),
            Outcome::NoRoute => ("CANCELLED", Some("SHIPPING_UNAVAILABLE")),
            Outcome::InsufficientFunds | Outcome::Blocked => {
                ("CANCELLED", Some("PAYMENT_DECLINED"))
            }
        }
    }

    pub fn body(self) -> Value {
        match self {
            Outcome::Confirmed => order_body("alice", "WIDGET-1", 1, 100, "DE"),
            Outcome::OutOfStock => order_body("alice", "SOLDOUT-0", 1, 100, "DE"),
            Outcome::NoRoute => order_body("alice", "WIDGET-1", 1, 100, "JP"),
            Outcome::InsufficientFunds => order_body("bob", "WIDGET-1", 1, 10_000, "FR"),
            Outcome::Blocked => order_body("mallory", "WIDGET-1", 1, 100, "NL"),
        }
    }
}

/// One placed order.
#[derive(Clone, Debug)]
pub struct Placed {
    pub order_id: String,
    pub outcome: Outcome,
    pub via_kafka: bool,
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub orders: usize,
    /// Cycle through every outcome; otherwise all `Confirmed`.
    pub mixed: bool,
    /// Every n-th order goes through `order-requests` (0: none).
    pub kafka_every: usize,
    pub concurrency: usize,
}

impl LoadSpec {
    pub fn mixed(orders: usize) -> Self {
        Self {
            orders,
            mixed: true,
            kafka_every: 2,
            concurrency: 16,
        }
    }
}

/// Places the orders concurrently; retries HTTP placements (same
/// idempotency key) for up to two minutes so a restarting Order service
/// does not lose them.
pub async fn place(stack: &TestStack, spec: &LoadSpec) -> anyhow::Result<Vec<Placed>> {
    place_at(&stack.brokers(), &stack.service_url("order"), spec).await
}

/// [`place`] given only the addresses, so the caller may restart parts of
/// the stack while orders are being placed.
pub async fn place_at(
    brokers: &str,
    order_url: &str,
    spec: &LoadSpec,
) -> anyhow::Result<Vec<Placed>> {
    let producer: FutureProducer = choreo_bus::KafkaSettings::new(brokers)
        .producer_config()
        .create()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let order_url = order_url.to_owned();
    let results = stream::iter(0..spec.orders)
        .map(|i| {
            let outcome = if spec.mixed {
                Outcome::ALL[i % Outcome::ALL.len()]
            } else {
                Outcome::Confirmed
            };
            let via_kafka = spec.kafka_every > 0 && i % spec.kafka_every == 1;
            let producer = &producer;
            let http = &http;
            let order_url = &order_url;
            async move {
                let order_id = if via_kafka {
                    let id = uuid::Uuid::new_v4().to_string();
                    let mut cmd = outcome.body();
                    cmd["type"] = json!("PlaceOrder");
                    cmd["order_id"] = json!(id);
                    let payload = cmd.to_string();
                    producer
                        .send(
                            FutureRecord::to("order-requests")
                                .key(&id)
                                .payload(&payload),
                            Duration::from_secs(30),
                        )
                        .await
                        .map_err(|(e, _)| e)?;
                    id
                } else {
                    post_with_retry(http, order_url, &outcome.body()).await?
                };
                Ok::<_, anyhow::Error>(Placed {
                    order_id,
                    outcome,
                    via_kafka,
                })
            }
        })
        .buffer_unordered(spec.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

async fn post_with_retry(
    http: &reqwest::Client,
    order_url: &str,
    body: &Value,
) -> anyhow::Result<String> {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = http
            .post(format!("{order_url}/orders"))
            .header("Idempotency-Key", &key)
            .json(body)
            .send()
            .await;
        match attempt {
            Ok(r) if r.status().as_u16() == 202 => {
                let v: Value = r.json().await?;
                return v["order_id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("no order_id");
            }
            Ok(r) if r.status().is_client_error() => {
                bail!(
                    "POST /orders refused: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(r) => bail!("POST /orders kept failing: {}", r.status()),
            Err(e) => return Err(e).context("POST /orders kept failing"),
        }
    }
}

/// Waits until every order is terminal; returns each order's final JSON.
/// Tolerates the Order service restarting meanwhile.
pub async fn wait_terminal(
    api: &Api,
    placed: &[Placed],
    timeout: Duration,
) -> anyhow::Result<HashMap<String, Value>> {
    let deadline = Instant::now() + timeout;
    let results = stream::iter(placed.iter())
        .map(|p| async move {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match api
                    .wait_terminal(&p.order_id, left.min(Duration::from_secs(20)))
                    .await
                {
                    Ok(v) => return Ok((p.order_id.clone(), v)),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e.context(format!("order {} ({:?})", p.order_id, p.outcome)))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<anyhow::Result<(String, Value)>>>()
        .await;
    results.into_iter().collect()
}

/// Checks each order ended as its data says it must.
pub fn assert_outcomes(placed: &[Placed], finals: &HashMap<String, Value>) {
    let mut wrong = Vec::new();
    for p in placed {
        let v = &finals[&p.order_id];
        let (status, reason) = p.outcome.expected();
        let ok = v["status"] == status && reason.is_none_or(|r| v["reason"] == r);
        if !ok {
            wrong.push(format!("{} {:?}: {}", p.order_id, p.outcome, v));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} orders ended wrongly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
