//! `choreo order place`: a convenience over the Order API (`POST /orders`,
//! then optionally long-poll `GET /orders/{id}?wait=terminal`).

use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::output::{money, parse_duration, Output};

#[derive(Clone, Debug, clap::Subcommand)]
pub enum OrderCommand {
    /// Place an order through the Order API and print its id.
    Place(PlaceArgs),
    /// Wait until an order is CONFIRMED or CANCELLED and print its status
    /// (an order placed through `order-requests` may not exist yet).
    Wait(WaitArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct WaitArgs {
    pub order_id: String,
    #[arg(
        long,
        env = "CHOREO_ORDER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub order_url: String,
    /// Longest wait.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// One `--item SKU:QUANTITY:UNIT_PRICE_MINOR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

impl FromStr for Item {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [sku, quantity, price] = parts.as_slice() else {
            return Err(format!(
                "`{s}`: expected SKU:QUANTITY:UNIT_PRICE_MINOR, e.g. WIDGET-1:2:1250"
            ));
        };
        Ok(Item {
            sku: (*sku).to_owned(),
            quantity: quantity
                .parse()
                .map_err(|_| format!("`{s}`: quantity `{quantity}` is not a whole number"))?,
            unit_price_minor: price.parse().map_err(|_| {
                format!("`{s}`: unit price `{price}` is not a whole number of minor units")
            })?,
        })
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct PlaceArgs {
    /// Customer id (the seed has alice, bob, carol, mallory).
    #[arg(long)]
    pub customer: String,
    /// Where notifications go (default: <customer>@example.com).
    #[arg(long)]
    pub email: Option<String>,
    /// SKU:QUANTITY:UNIT_PRICE_MINOR (repeatable).
    #[arg(long = "item", required = true)]
    pub items: Vec<Item>,
    #[arg(long, default_value = "EUR")]
    pub currency: String,
    /// ISO 3166-1 alpha-2 destination.
    #[arg(long, default_value = "DE")]
    pub country: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "1 Analytical Way")]
    pub line1: String,
    #[arg(long, default_value = "Berlin")]
    pub city: String,
    #[arg(long, default_value = "10115")]
    pub postal_code: String,
    #[arg(
        long,
        env = "CHOREO_ORDER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub order_url: String,
    /// Wait until the order is CONFIRMED or CANCELLED and print it.
    #[arg(long)]
    pub wait: bool,
    /// Longest wait with --wait.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl PlaceArgs {
    /// The `POST /orders` body.
    pub fn body(&self) -> Value {
        json!({
            "customer_id": self.customer,
            "customer_email": self.email.clone().unwrap_or_else(|| format!("{}@example.com", self.customer)),
            "items": self.items.iter().map(|i| json!({
                "sku": i.sku, "quantity": i.quantity, "unit_price_minor": i.unit_price_minor
            })).collect::<Vec<_>>(),
            "currency": self.currency,
            "shipping_address": {
                "name": self.name.clone().unwrap_or_else(|| self.customer.clone()),
                "line1": self.line1,
                "city": self.city,
                "postal_code": self.postal_code,
                "country": self.country,
            }
        })
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()?)
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// `POST /orders`; the new order's id.
pub async fn place(order_url: &str, body: &Value) -> anyhow::Result<String> {
    let url = format!("{}/orders", base(order_url));
    let r = client()?.post(&url).json(body).send().await.map_err(|e| {
        anyhow!("cannot reach the order service at {order_url} ({e}); --order-url?")
    })?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {url} answered {status}: {text}");
    }
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("POST {url} answered non-JSON: {text}"))?;
    v["order_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("POST {url} answered without order_id: {text}"))
}

/// Long-polls `GET /orders/{id}?wait=terminal` until the order is
/// terminal or `timeout` passed; returns the order as last seen. An order
/// the service does not know yet (404) is waited for too: a command on
/// `order-requests` becomes an order only once consumed.
pub async fn wait_terminal(
    order_url: &str,
    order_id: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let http = client()?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let url = format!(
            "{}/orders/{}?wait=terminal&timeout_ms={}",
            base(order_url),
            crate::output::path_segment(order_id),
            left.as_millis().min(30_000)
        );
        let r = http
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the order service at {order_url} ({e})"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status.as_u16() == 404 && !left.is_zero() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if !status.is_success() {
            bail!("GET {url} answered {status}: {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        if matches!(v["status"].as_str(), Some("CONFIRMED" | "CANCELLED")) || left.is_zero() {
            return Ok(v);
        }
    }
}

/// `CONFIRMED`, `CANCELLED (PAYMENT_DECLINED)`, `PENDING`.
pub fn status_line(order: &Value) -> String {
    let status = order["status"].as_str().unwrap_or("?");
    let total = match (order["total_minor"].as_i64(), order["currency"].as_str()) {
        (Some(t), Some(c)) => format!(" total {}", money(t, c)),
        _ => String::new(),
    };
    let line = match order["reason"].as_str() {
        Some(reason) => format!("{status} ({reason}){total}"),
        None => format!("{status}{total}"),
    };
    crate::output::printable(&line).into_owned()
}

/// `choreo order place`: prints the order id, then with `--wait` the
/// final status. Returns the id and, with `--wait`, the order.
pub async fn run_place(
    args: &PlaceArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<(String, Option<Value>)> {
    let id = place(&args.order_url, &args.body()).await?;
    if !output.json {
        writeln!(out, "{}", crate::output::printable(&id))?;
        out.flush()?;
    }
    let order = if args.wait {
        Some(wait_terminal(&args.order_url, &id, args.timeout).await?)
    } else {
        None
    };
    if output.json {
        output.json_line(out, &json!({"order_id": id, "order": order}))?;
    } else if let Some(order) = &order {
        writeln!(out, "{}", status_line(order))?;
    }
    Ok((id, order))
}

/// `choreo order wait`: prints the final status (or the last one seen
/// when `timeout` passed first).
pub async fn run_wait(
    args: &WaitArgs,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<Value> {
    let order = wait_terminal(&args.order_url, &args.order_id, args.timeout).await?;
    if output.json {
        output.json_line(out, &order)?;
    } else {
        writeln!(out, "{}", status_line(&order))?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_and_explain_mistakes() {
        assert_eq!(
            "WIDGET-1:2:1250".parse::<Item>(),
            Ok(Item {
                sku: "WIDGET-1".into(),
                quantity: 2,
                unit_price_minor: 1250
            })
        );
        assert!("WIDGET-1:2"
            .parse::<Item>()
            .unwrap_err()
            .contains("SKU:QUANTITY"));
        assert!("W:two:1".parse::<Item>().unwrap_err().contains("quantity"));
    }

    #[test]
    fn status_line_names_reason() {
        let v = json!({"status": "CANCELLED", "reason": "PAYMENT_DECLINED", "total_minor": 2500, "currency": "EUR"});
        assert_eq!(
            status_line(&v),
            "CANCELLED (PAYMENT_DECLINED) total 25.00 EUR"
        );
    }
}
