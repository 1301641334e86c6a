//! The load: which kind of order each one is (happy, or one of the four
//! compensations), how it is placed (Kafka or HTTP), open or closed loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use choreo_bus::Codec;
use choreo_events::{Address, EventMetadata, OrderLine, PlaceOrder};

use super::tracker::Tracker;
use super::{BenchArgs, Target, Via, BLOCKED, POOR, RICH, SKU, SKU_SOLDOUT};

/// The kind of order to place: its data decides the outcome.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Happy,
    OutOfStock,
    NoRoute,
    Poor,
    Blocked,
}

impl Kind {
    pub(super) fn pick(n: u64, fail_share: f64) -> Kind {
        // Deterministic spread: order n fails when its position in a block
        // of 100 falls below the share.
        let fails = ((n % 100) as f64) < fail_share * 100.0;
        if !fails {
            return Kind::Happy;
        }
        match (n / 100) % 4 {
            0 => Kind::OutOfStock,
            1 => Kind::NoRoute,
            2 => Kind::Poor,
            _ => Kind::Blocked,
        }
    }
}

pub(super) fn place_order(order_id: &str, kind: Kind) -> PlaceOrder {
    let (customer, sku, country) = match kind {
        Kind::Happy => (RICH, SKU, "DE"),
        Kind::OutOfStock => (RICH, SKU_SOLDOUT, "DE"),
        Kind::NoRoute => (RICH, SKU, "JP"),
        Kind::Poor => (POOR, SKU, "DE"),
        Kind::Blocked => (BLOCKED, SKU, "DE"),
    };
    PlaceOrder {
        metadata: EventMetadata::new(order_id, "bench", None),
        request_id: None,
        customer_id: customer.into(),
        customer_email: format!("{customer}@bench.invalid"),
        items: vec![OrderLine {
            sku: sku.into(),
            quantity: 1,
            unit_price_minor: 100,
        }],
        currency: "EUR".into(),
        shipping_address: address(country),
    }
}

/// Where every bench order ships: a fixed address in `country`.
pub(crate) fn address(country: &str) -> Address {
    Address {
        name: "Bench".into(),
        line1: "1 Load St".into(),
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: country.into(),
    }
}

pub(super) struct Driver<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) target: &'a Target,
    pub(super) codec: Arc<Codec>,
    pub(super) producer: FutureProducer,
    pub(super) http: reqwest::Client,
    pub(super) tracker: Tracker,
    pub(super) measure_from: Instant,
    pub(super) counter: AtomicU64,
}

impl Driver<'_> {
    /// Places one order; resolves once it is on its way (not terminal).
    /// Returns a receiver that fires when the order is terminal.
    pub(super) async fn place(&self) -> anyhow::Result<oneshot::Receiver<()>> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let kind = Kind::pick(n, self.args.fail_share);
        let placed = Instant::now();
        let measured = placed >= self.measure_from;
        match self.args.via {
            Via::Requests => {
                let id = uuid::Uuid::new_v4().to_string();
                let rx = self.tracker.expect(&id, placed, measured);
                let cmd = place_order(&id, kind);
                let bytes = self.codec.encode(&cmd).await?;
                let record = FutureRecord::to("order-requests").key(&id).payload(&bytes);
                self.producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)?;
                Ok(rx)
            }
            Via::Http => {
                let cmd = place_order("", kind);
                let body = json!({
                    "customer_id": cmd.customer_id,
                    "customer_email": cmd.customer_email,
                    "items": [{"sku": cmd.items[0].sku, "quantity": 1, "unit_price_minor": 100}],
                    "currency": "EUR",
                    "shipping_address": {
                        "name": "Bench", "line1": "1 Load St", "city": "Berlin",
                        "postal_code": "10115", "country": cmd.shipping_address.country,
                    }
                });
                let r = self
                    .http
                    .post(format!("{}/orders", self.target.order))
                    .json(&body)
                    .send()
                    .await?;
                if r.status().as_u16() != 202 {
                    bail!("POST /orders answered {}", r.status());
                }
                let v: Value = r.json().await?;
                let id = v["order_id"].as_str().context("no order_id")?.to_owned();
                Ok(self.tracker.expect(&id, placed, measured))
            }
        }
    }

    pub(super) async fn open_loop(&self, rate: u64, stop_at: Instant) -> anyhow::Result<()> {
        let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let mut next = Instant::now();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        while Instant::now() < stop_at {
            // Schedule by the clock, not by completions: an open loop keeps
            // offering load however slowly the system answers.
            while next <= Instant::now() {
                in_flight.push(self.place());
                next += period;
            }
            tokio::select! {
                Some(r) = in_flight.next(), if !in_flight.is_empty() => { r?; }
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
        while let Some(r) = in_flight.next().await {
            r?;
        }
        Ok(())
    }

    pub(super) async fn closed_loop(
        &self,
        concurrency: usize,
        stop_at: Instant,
    ) -> anyhow::Result<()> {
        let workers = (0..concurrency.max(1)).map(|_| async {
            while Instant::now() < stop_at {
                let done = self.place().await?;
                // A lost order would stall this worker forever; bound it.
                let _ = tokio::time::timeout(Duration::from_secs(60), done).await;
            }
            Ok::<_, anyhow::Error>(())
        });
        for r in futures::future::join_all(workers).await {
            r?;
        }
        Ok(())
    }
}
