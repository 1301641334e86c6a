//! Typed access to the services' HTTP APIs, for tests and checkers.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::TestStack;

/// An order request body with sensible defaults; tests change what matters.
pub fn order_body(
    customer: &str,
    sku: &str,
    quantity: i64,
    unit_price_minor: i64,
    country: &str,
) -> Value {
    json!({
        "customer_id": customer,
        "customer_email": format!("{customer}@example.com"),
        "items": [{"sku": sku, "quantity": quantity, "unit_price_minor": unit_price_minor}],
        "currency": "EUR",
        "shipping_address": {
            "name": "Ada Lovelace", "line1": "1 Analytical Way", "city": "Berlin",
            "postal_code": "10115", "country": country
        }
    })
}

#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    order: String,
    inventory: String,
    payment: String,
    courier: String,
    communication: String,
    mail_dir: PathBuf,
    admin: choreo_bus::AdminToken,
}

impl Api {
    pub fn new(stack: &TestStack) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(70))
                .build()
                .expect("http client"),
            order: stack.service_url("order"),
            inventory: stack.service_url("inventory"),
            payment: stack.service_url("payment"),
            courier: stack.service_url("courier"),
            communication: stack.service_url("communication"),
            mail_dir: stack.service_data_dir("communication").join("mail"),
            admin: stack.admin_token().clone(),
        }
    }

    /// `POST /orders`; returns the new order id.
    pub async fn place_order(&self, body: &Value) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/orders", self.order))
            .json(body)
            .send()
            .await?;
        let status = r.status();
        // Read the text first, so an answer that is not JSON still says
        // what it was.
        let text = r.text().await?;
        let v: Value = serde_json::from_str(&text).with_context(|| {
            format!("POST /orders answered {status} with a body that is not JSON: {text:?}")
        })?;
        if status.as_u16() != 202 {
            bail!("POST /orders answered {status}: {v}");
        }
        v["order_id"]
            .as_str()
            .map(str::to_owned)
            .context("no order_id in answer")
    }

    pub async fn order(&self, id: &str) -> anyhow::Result<Value> {
        get_json(&self.http, &format!("{}/orders/{id}", self.order)).await
    }

    /// Long-polls until the order is terminal; fails when it is not.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = left.as_millis().min(30_000);
            let v = get_json(
                &self.http,
                &format!("{}/orders/{id}?wait=terminal&timeout_ms={ms}", self.order),
            )
            .await?;
            if matches!(v["status"].as_str(), Some("CONFIRMED" | "CANCELLED")) {
                return Ok(v);
            }
            if left.is_zero() {
                bail!("order {id} not terminal after {timeout:?}: {v}");
            }
        }
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .delete(format!("{}/orders/{id}", self.order))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// `Authorization: Bearer <admin token>`, when the stack has one.
    pub fn admin_headers(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = self.admin.header_value() {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers
    }

    pub async fn stock(&self, sku: &str) -> anyhow::Result<Value> {
        get_json(&self.http, &format!("{}/stock/{sku}", self.inventory)).await
    }

    pub async fn set_stock(&self, sku: &str, available: i64) -> anyhow::Result<Value> {
        let r = self
            .http
            .put(format!("{}/stock/{sku}", self.inventory))
            .headers(self.admin_headers())
            .json(&json!({"available": available}))
            .send()
            .await?;
        ok_json(r).await
    }

    /// `GET /reservations/{order_id}` on inventory; `None` on 404.
    pub async fn reservation(&self, order_id: &str) -> anyhow::Result<Option<Value>> {
        get_optional(
            &self.http,
            &format!("{}/reservations/{order_id}", self.inventory),
        )
        .await
    }

    pub async fn account(&self, customer: &str) -> anyhow::Result<Value> {
        get_json(&self.http, &format!("{}/accounts/{customer}", self.payment)).await
    }

    pub async fn set_account(
        &self,
        customer: &str,
        balance_minor: i64,
        currency: &str,
        blocked: bool,
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .put(format!("{}/accounts/{customer}", self.payment))
            .headers(self.admin_headers())
            .json(&json!({"customer_id": customer, "balance_minor": balance_minor, "currency": currency, "blocked": blocked}))
            .send()
            .await?;
        ok_json(r).await
    }

    /// `GET /payments/{order_id}`; `None` on 404.
    pub async fn payment(&self, order_id: &str) -> anyhow::Result<Option<Value>> {
        get_optional(&self.http, &format!("{}/payments/{order_id}", self.payment)).await
    }

    /// `GET /shipments/{order_id}`; `None` on 404.
    pub async fn shipment(&self, order_id: &str) -> anyhow::Result<Option<Value>> {
        get_optional(
            &self.http,
            &format!("{}/shipments/{order_id}", self.courier),
        )
        .await
    }

    pub async fn notifications(&self, order_id: &str) -> anyhow::Result<Vec<Value>> {
        let v = get_json(
            &self.http,
            &format!(
                "{}/notifications?order_id={}",
                self.communication,
                percent_encoding::utf8_percent_encode(order_id, percent_encoding::NON_ALPHANUMERIC)
            ),
        )
        .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Mail files written for an order (file transport).
    pub fn mail_files(&self, order_id: &str) -> Vec<PathBuf> {
        let stem = format!("{}.", choreo_events::contract::file_safe_id(order_id));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.mail_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&stem) && n.ends_with(".eml"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    ok_json(
        http.get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?,
    )
    .await
}

async fn get_optional(http: &reqwest::Client, url: &str) -> anyhow::Result<Option<Value>> {
    let r = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if r.status().as_u16() == 404 {
        return Ok(None);
    }
    ok_json(r).await.map(Some)
}

async fn ok_json(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let url = r.url().to_string();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{url} answered non-JSON: {text}"))
}
