//! `choreo reconcile`: the invariant checker of the design ("Invariants"),
//! from the outside — the services' HTTP APIs and the topics, never a
//! database. The fault-injection tests call [`Reconciler`] directly with
//! explicit URLs and initial stock and balances.
//!
//! Checked:
//! - every order (`GET /orders` paging) is terminal, and `orders` carries
//!   exactly one terminal event for it, agreeing with its status;
//! - CONFIRMED: reservation COMMITTED, shipment MANIFESTED, net charge ==
//!   order total, exactly one ORDER_CONFIRMED notification (and mail file);
//! - CANCELLED: reservation neither RESERVED nor COMMITTED, shipment not
//!   MANIFESTED, net charge 0, exactly one ORDER_CANCELLED notification
//!   (and mail file);
//! - per SKU: initial = available + reserved + committed;
//! - per customer: initial balance = balance + Σ net charges;
//! - dead letters: every message on `dlq.*` beyond the expected count.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use choreo_events::{templates, AnyEvent, OrdersEvent, Topic};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::decode::Decoder;
use crate::dlq;
use crate::output::{parse_duration, path_segment, printable, query_value, Output, Progress};
use crate::reader::read_to_end;
use crate::Connection;

/// How many orders are checked at once.
const CONCURRENCY: usize = 8;
/// `GET /orders` page size (the API's maximum).
const PAGE: usize = 500;

/// Which invariant a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The order is not CONFIRMED or CANCELLED.
    NotTerminal,
    /// Not exactly one terminal event on `orders`, or one that disagrees
    /// with the order's status.
    TerminalEvents,
    /// Reservation state does not match the outcome.
    Reservation,
    /// Shipment state does not match the outcome.
    Shipment,
    /// Net charge does not match the outcome.
    Payment,
    /// Not exactly one notification of the outcome's template.
    Notification,
    /// Not exactly one mail file of the outcome's template.
    Mail,
    /// initial ≠ available + reserved + committed for a SKU.
    StockConservation,
    /// initial balance ≠ balance + Σ net charges for a customer.
    MoneyConservation,
    /// A dead letter beyond the expected number, or fewer than expected.
    DeadLetter,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub check: Check,
    /// The order concerned, when the invariant is per order (for dead
    /// letters: the message key).
    pub order_id: Option<String>,
    /// The SKU, customer or dead-letter position, for the other checks.
    pub subject: Option<String>,
    /// What was found.
    pub detail: String,
}

impl Violation {
    fn order(check: Check, order_id: &str, detail: impl Into<String>) -> Self {
        Self {
            check,
            order_id: Some(order_id.to_owned()),
            subject: None,
            detail: detail.into(),
        }
    }

    fn subject(check: Check, subject: &str, detail: impl Into<String>) -> Self {
        Self {
            check,
            order_id: None,
            subject: Some(subject.to_owned()),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let check = serde_json::to_value(self.check)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{check:<18}")?;
        // Ids and details may come from outside: escaped for the terminal.
        if let Some(o) = &self.order_id {
            write!(f, " order {}", printable(o))?;
        }
        if let Some(s) = &self.subject {
            write!(f, " {}", printable(s))?;
        }
        write!(f, ": {}", printable(&self.detail))
    }
}

/// What a run found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub orders: usize,
    pub confirmed: usize,
    pub cancelled: usize,
    pub skus_checked: usize,
    /// SKUs the service has but no initial stock was given for.
    pub skus_unchecked: Vec<String>,
    pub customers_checked: usize,
    pub dead_letters: usize,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations concerning one order.
    pub fn for_order<'a>(&'a self, order_id: &'a str) -> impl Iterator<Item = &'a Violation> + 'a {
        self.violations
            .iter()
            .filter(move |v| v.order_id.as_deref() == Some(order_id))
    }

    /// The violations of one kind.
    pub fn of(&self, check: Check) -> impl Iterator<Item = &Violation> + '_ {
        self.violations.iter().filter(move |v| v.check == check)
    }
}

/// Base URLs of the five services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub order: String,
    pub inventory: String,
    pub payment: String,
    pub courier: String,
    pub communication: String,
}

impl Default for Endpoints {
    /// The addresses of `make run`.
    fn default() -> Self {
        Self {
            order: "http://127.0.0.1:8080".into(),
            inventory: "http://127.0.0.1:8082".into(),
            payment: "http://127.0.0.1:8083".into(),
            courier: "http://127.0.0.1:8084".into(),
            communication: "http://127.0.0.1:8085".into(),
        }
    }
}

/// The invariant checker.
#[derive(Clone, Debug)]
pub struct Reconciler {
    conn: Connection,
    endpoints: Endpoints,
    initial_stock: HashMap<String, i64>,
    initial_balances: HashMap<String, i64>,
    mail_dir: Option<PathBuf>,
    expect_dlq: usize,
    http: reqwest::Client,
}

impl Reconciler {
    /// A checker with no initial stock or balances (so no conservation
    /// check), no mail folder and no dead letter expected.
    pub fn new(conn: Connection, endpoints: Endpoints) -> Self {
        Self {
            conn,
            endpoints,
            initial_stock: HashMap::new(),
            initial_balances: HashMap::new(),
            mail_dir: None,
            expect_dlq: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("a reqwest client without custom TLS builds"),
        }
    }

    /// Initial `available` per SKU; SKUs not given are not checked.
    pub fn initial_stock(mut self, stock: HashMap<String, i64>) -> Self {
        self.initial_stock = stock;
        self
    }

    /// Initial balance per customer; customers not given are not checked.
    pub fn initial_balances(mut self, balances: HashMap<String, i64>) -> Self {
        self.initial_balances = balances;
        self
    }

    /// Where Communication writes `<order_id>.<TEMPLATE>.eml`.
    pub fn mail_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.mail_dir = Some(dir.into());
        self
    }

    /// How many dead letters are expected (e.g. a test's poison messages):
    /// fewer or more is a violation.
    pub fn expect_dlq(mut self, n: usize) -> Self {
        self.expect_dlq = n;
        self
    }

    /// Checks every invariant once.
    pub async fn run(&self) -> anyhow::Result<Report> {
        self.run_with(&mut Progress::hidden()).await
    }

    /// Checks until the report is clean or `settle` has passed (the saga
    /// is eventually consistent: a just-finished order may still be
    /// committing its stock); returns the last report.
    pub async fn run_settled(
        &self,
        settle: Duration,
        progress: &mut Progress,
    ) -> anyhow::Result<Report> {
        let deadline = Instant::now() + settle;
        loop {
            let report = self.run_with(progress).await?;
            if report.is_clean() || Instant::now() >= deadline {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Checks every invariant once, showing progress.
    pub async fn run_with(&self, progress: &mut Progress) -> anyhow::Result<Report> {
        let mut report = Report::default();
        progress.set_label("listing orders");
        let orders = self.list_orders().await?;
        report.orders = orders.len();

        let terminal = self.terminal_events(progress).await?;

        progress.set_label("checking orders");
        progress.set_total(Some(orders.len() as u64));
        let mut checked = futures::stream::iter(orders.iter())
            .map(|id| self.check_order(id, terminal.get(id.as_str())))
            .buffer_unordered(CONCURRENCY);
        let mut net_by_customer: HashMap<String, i64> = HashMap::new();
        while let Some(result) = checked.next().await {
            let checked = result?;
            progress.inc(1);
            match checked.status.as_str() {
                "CONFIRMED" => report.confirmed += 1,
                "CANCELLED" => report.cancelled += 1,
                _ => {}
            }
            if let Some(customer) = checked.customer {
                *net_by_customer.entry(customer).or_default() += checked.net_charge;
            }
            report.violations.extend(checked.violations);
        }
        drop(checked);
        progress.finish();

        self.check_stock(&mut report).await?;
        self.check_money(&net_by_customer, &mut report).await?;
        self.check_dead_letters(&mut report, progress).await?;
        report.violations.sort_by(|a, b| {
            (a.check, &a.order_id, &a.subject).cmp(&(b.check, &b.order_id, &b.subject))
        });
        Ok(report)
    }

    async fn get(&self, url: &str) -> anyhow::Result<Option<Value>> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow!("GET {url}: {e} (is the service running?)"))?;
        let status = r.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {url} answered {status}: {text}");
        }
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("GET {url} answered non-JSON: {text}"))
    }

    async fn must_get(&self, url: &str) -> anyhow::Result<Value> {
        self.get(url)
            .await?
            .ok_or_else(|| anyhow!("GET {url} answered 404"))
    }

    /// Every order id, through `GET /orders?limit=&after=` paging.
    async fn list_orders(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/orders?limit={PAGE}", base(&self.endpoints.order));
            if let Some(a) = &after {
                url.push_str(&format!("&after={}", query_value(a)));
            }
            let page = self.must_get(&url).await?;
            let orders = page["orders"]
                .as_array()
                .ok_or_else(|| anyhow!("GET {url}: no `orders` array in {page}"))?;
            ids.extend(
                orders
                    .iter()
                    .filter_map(|o| o["order_id"].as_str().map(str::to_owned)),
            );
            match page["next_after"].as_str() {
                Some(next) if !orders.is_empty() => after = Some(next.to_owned()),
                _ => return Ok(ids),
            }
        }
    }

    /// The terminal events on `orders`, per order, in topic order.
    async fn terminal_events(
        &self,
        progress: &mut Progress,
    ) -> anyhow::Result<HashMap<String, Vec<String>>> {
        progress.set_label("reading orders topic");
        let records = read_to_end(
            &self.conn.brokers,
            &[Topic::Orders.name().to_owned()],
            progress,
        )
        .await?;
        let decoder = Decoder::new(&self.conn.registry);
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        // A record delivered twice (a relay republishing after a crash, a
        // replay) carries the same event_id: one decision, counted once.
        let mut seen = std::collections::HashSet::new();
        for record in &records {
            let decoded = decoder.decode_record(record).await;
            if let Ok(event) = &decoded {
                if !seen.insert(event.metadata().event_id.clone()) {
                    continue;
                }
            }
            match decoded {
                Ok(AnyEvent::Orders(OrdersEvent::OrderConfirmed(e))) => out
                    .entry(e.metadata.order_id)
                    .or_default()
                    .push("OrderConfirmed".into()),
                Ok(AnyEvent::Orders(OrdersEvent::OrderCancelled(e))) => out
                    .entry(e.metadata.order_id)
                    .or_default()
                    .push(format!("OrderCancelled({})", e.reason)),
                Ok(_) => {}
                Err(e) if e.is_retryable() => return Err(decoder.explain(e)),
                // Undecodable records are dead letters' business.
                Err(_) => {}
            }
        }
        Ok(out)
    }

    async fn check_order(
        &self,
        id: &str,
        terminal: Option<&Vec<String>>,
    ) -> anyhow::Result<OrderCheck> {
        let order = self
            .must_get(&format!(
                "{}/orders/{}",
                base(&self.endpoints.order),
                path_segment(id)
            ))
            .await?;
        let status = order["status"].as_str().unwrap_or("?").to_owned();
        let customer = order["customer_id"].as_str().map(str::to_owned);
        let total = order["total_minor"].as_i64().unwrap_or_default();
        let mut v = Vec::new();
        let payment = self
            .get(&format!(
                "{}/payments/{}",
                base(&self.endpoints.payment),
                path_segment(id)
            ))
            .await?;
        let net_charge = payment
            .as_ref()
            .and_then(|p| p["net_charge_minor"].as_i64())
            .unwrap_or(0);

        let terminal = terminal.cloned().unwrap_or_default();
        let template = match status.as_str() {
            "CONFIRMED" => templates::ORDER_CONFIRMED,
            "CANCELLED" => templates::ORDER_CANCELLED,
            other => {
                v.push(Violation::order(
                    Check::NotTerminal,
                    id,
                    format!("status {other}, expected CONFIRMED or CANCELLED"),
                ));
                if !terminal.is_empty() {
                    v.push(Violation::order(
                        Check::TerminalEvents,
                        id,
                        format!("status {other} but `orders` has {}", terminal.join(", ")),
                    ));
                }
                return Ok(OrderCheck {
                    status,
                    customer,
                    net_charge,
                    violations: v,
                });
            }
        };
        let expected_event = if status == "CONFIRMED" {
            "OrderConfirmed"
        } else {
            "OrderCancelled"
        };
        if terminal.len() != 1 || !terminal[0].starts_with(expected_event) {
            v.push(Violation::order(
                Check::TerminalEvents,
                id,
                format!(
                    "status {status}; expected exactly one {expected_event} on orders, found [{}]",
                    terminal.join(", ")
                ),
            ));
        }

        let reservation = self
            .get(&format!(
                "{}/reservations/{}",
                base(&self.endpoints.inventory),
                path_segment(id)
            ))
            .await?;
        let reservation = reservation
            .as_ref()
            .and_then(|r| r["status"].as_str())
            .unwrap_or("none")
            .to_owned();
        let shipment = self
            .get(&format!(
                "{}/shipments/{}",
                base(&self.endpoints.courier),
                path_segment(id)
            ))
            .await?;
        let shipment = shipment
            .as_ref()
            .and_then(|s| s["status"].as_str())
            .unwrap_or("none")
            .to_owned();
        if status == "CONFIRMED" {
            if reservation != "COMMITTED" {
                v.push(Violation::order(
                    Check::Reservation,
                    id,
                    format!("CONFIRMED but reservation is {reservation}, expected COMMITTED"),
                ));
            }
            if shipment != "MANIFESTED" {
                v.push(Violation::order(
                    Check::Shipment,
                    id,
                    format!("CONFIRMED but shipment is {shipment}, expected MANIFESTED"),
                ));
            }
            if net_charge != total {
                v.push(Violation::order(
                    Check::Payment,
                    id,
                    format!("CONFIRMED with total {total} but net charge {net_charge}"),
                ));
            }
        } else {
            if reservation == "RESERVED" || reservation == "COMMITTED" {
                v.push(Violation::order(
                    Check::Reservation,
                    id,
                    format!("CANCELLED but reservation is still {reservation}"),
                ));
            }
            if shipment == "MANIFESTED" {
                v.push(Violation::order(
                    Check::Shipment,
                    id,
                    "CANCELLED but shipment is still MANIFESTED",
                ));
            }
            if net_charge != 0 {
                v.push(Violation::order(
                    Check::Payment,
                    id,
                    format!("CANCELLED but net charge is {net_charge}, expected 0"),
                ));
            }
        }

        let notifications = self
            .must_get(&format!(
                "{}/notifications?order_id={}",
                base(&self.endpoints.communication),
                query_value(id)
            ))
            .await?;
        let notifications = notifications.as_array().cloned().unwrap_or_default();
        let count = |t: &str| notifications.iter().filter(|n| n["template"] == t).count();
        let other = if template == templates::ORDER_CONFIRMED {
            templates::ORDER_CANCELLED
        } else {
            templates::ORDER_CONFIRMED
        };
        if count(template) != 1 || count(other) != 0 {
            v.push(Violation::order(
                Check::Notification,
                id,
                format!(
                    "{status}: {} {template} and {} {other} notifications, expected exactly one {template}",
                    count(template),
                    count(other)
                ),
            ));
        }
        if let Some(dir) = &self.mail_dir {
            let file = |t: &str| choreo_events::contract::mail_file_name(id, t);
            let has = |t: &str| dir.join(file(t)).is_file();
            if !has(template) || has(other) {
                v.push(Violation::order(
                    Check::Mail,
                    id,
                    format!(
                        "{status}: expected exactly the mail {} in {} (found {template}: {}, {other}: {})",
                        file(template),
                        dir.display(),
                        has(template),
                        has(other)
                    ),
                ));
            }
        }
        Ok(OrderCheck {
            status,
            customer,
            net_charge,
            violations: v,
        })
    }

    async fn check_stock(&self, report: &mut Report) -> anyhow::Result<()> {
        if self.initial_stock.is_empty() {
            return Ok(());
        }
        let url = format!("{}/stock", base(&self.endpoints.inventory));
        let rows = self.must_get(&url).await?;
        let rows = rows
            .as_array()
            .ok_or_else(|| anyhow!("GET {url}: expected an array, got {rows}"))?;
        let mut seen = BTreeMap::new();
        for row in rows {
            let sku = row["sku"].as_str().unwrap_or_default().to_owned();
            let n = |f: &str| row[f].as_i64().unwrap_or_default();
            seen.insert(sku, (n("available"), n("reserved"), n("committed")));
        }
        let mut skus: Vec<&String> = self.initial_stock.keys().collect();
        skus.sort();
        for sku in skus {
            let initial = self.initial_stock[sku];
            report.skus_checked += 1;
            match seen.get(sku) {
                None => report.violations.push(Violation::subject(
                    Check::StockConservation,
                    sku,
                    format!("initial stock {initial}, but inventory does not know the SKU"),
                )),
                Some((a, r, c)) if a + r + c != initial => {
                    report.violations.push(Violation::subject(
                        Check::StockConservation,
                        sku,
                        format!(
                            "initial {initial} ≠ available {a} + reserved {r} + committed {c} = {}",
                            a + r + c
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        report.skus_unchecked = seen
            .keys()
            .filter(|s| !self.initial_stock.contains_key(*s))
            .cloned()
            .collect();
        Ok(())
    }

    async fn check_money(
        &self,
        net: &HashMap<String, i64>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let mut customers: Vec<&String> = self.initial_balances.keys().collect();
        customers.sort();
        for customer in customers {
            let initial = self.initial_balances[customer];
            report.customers_checked += 1;
            let url = format!(
                "{}/accounts/{}",
                base(&self.endpoints.payment),
                path_segment(customer)
            );
            let Some(account) = self.get(&url).await? else {
                report.violations.push(Violation::subject(
                    Check::MoneyConservation,
                    customer,
                    format!("initial balance {initial}, but payment has no account"),
                ));
                continue;
            };
            let balance = account["balance_minor"].as_i64().unwrap_or_default();
            let charged = net.get(customer).copied().unwrap_or(0);
            if balance + charged != initial {
                report.violations.push(Violation::subject(
                    Check::MoneyConservation,
                    customer,
                    format!(
                        "initial balance {initial} ≠ balance {balance} + net charges {charged} = {}",
                        balance + charged
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn check_dead_letters(
        &self,
        report: &mut Report,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let letters = dlq::list(&self.conn, None, progress).await?;
        report.dead_letters = letters.len();
        if letters.len() < self.expect_dlq {
            report.violations.push(Violation {
                check: Check::DeadLetter,
                order_id: None,
                subject: None,
                detail: format!(
                    "expected {} dead letters, found {}",
                    self.expect_dlq,
                    letters.len()
                ),
            });
        }
        for l in letters.iter().skip(self.expect_dlq) {
            report.violations.push(Violation {
                check: Check::DeadLetter,
                order_id: l.record.key_str(),
                subject: Some(l.record.position()),
                detail: format!("{} (from {}): {}", l.reason, l.source(), l.value_preview()),
            });
        }
        Ok(())
    }
}

struct OrderCheck {
    status: String,
    customer: Option<String>,
    net_charge: i64,
    violations: Vec<Violation>,
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Initial `available` per SKU from a stock seed file (`[{"sku",
/// "available"}]`) or a plain `{"SKU": n}` object.
pub fn load_stock(path: &Path) -> anyhow::Result<HashMap<String, i64>> {
    load_map(path, "sku", "available")
}

/// Initial balance per customer from an accounts seed file
/// (`[{"customer_id", "balance_minor"}]`) or a plain `{"customer": n}`
/// object.
pub fn load_balances(path: &Path) -> anyhow::Result<HashMap<String, i64>> {
    load_map(path, "customer_id", "balance_minor")
}

fn load_map(path: &Path, key: &str, value: &str) -> anyhow::Result<HashMap<String, i64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_map(&text, key, value).with_context(|| format!("in {}", path.display()))
}

/// See [`load_stock`]: the same from text.
pub fn parse_map(text: &str, key: &str, value: &str) -> anyhow::Result<HashMap<String, i64>> {
    let json: Value = serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    match json {
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| {
                v.as_i64()
                    .map(|n| (k.clone(), n))
                    .ok_or_else(|| anyhow!("`{k}`: expected a whole number, got {v}"))
            })
            .collect(),
        Value::Array(rows) => rows
            .iter()
            .map(|row| {
                let k = row[key]
                    .as_str()
                    .ok_or_else(|| anyhow!("entry without `{key}`: {row}"))?;
                let v = row[value]
                    .as_i64()
                    .ok_or_else(|| anyhow!("entry without a whole-number `{value}`: {row}"))?;
                Ok((k.to_owned(), v))
            })
            .collect(),
        other => bail!("expected an array of objects or an object, got {other}"),
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {
    #[arg(
        long,
        env = "CHOREO_ORDER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub order_url: String,
    #[arg(
        long,
        env = "CHOREO_INVENTORY_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub inventory_url: String,
    #[arg(
        long,
        env = "CHOREO_PAYMENT_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub payment_url: String,
    #[arg(
        long,
        env = "CHOREO_COURIER_URL",
        default_value = "http://127.0.0.1:8084"
    )]
    pub courier_url: String,
    #[arg(
        long,
        env = "CHOREO_COMMUNICATION_URL",
        default_value = "http://127.0.0.1:8085"
    )]
    pub communication_url: String,
    /// Initial stock (the inventory seed).
    #[arg(long, default_value = "deploy/seed/stock.json")]
    pub stock_seed: PathBuf,
    /// Initial stock as JSON (`{"SKU": n}` or the seed's array), replacing
    /// --stock-seed: for SKUs created or changed through `PUT /stock`.
    #[arg(long)]
    pub initial_stock_json: Option<String>,
    /// Initial balances (the payment seed).
    #[arg(long, default_value = "deploy/seed/accounts.json")]
    pub accounts_seed: PathBuf,
    /// Communication's mail folder, to check one `.eml` per order.
    #[arg(long)]
    pub mail_dir: Option<PathBuf>,
    /// How many dead letters are expected; every one beyond, or one
    /// missing, is a violation.
    #[arg(long, default_value_t = 0)]
    pub expect_dlq: usize,
    /// Re-check while violations remain, up to this long (the saga is
    /// eventually consistent).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
}

impl ReconcileArgs {
    /// The checker these flags describe.
    pub fn reconciler(&self, conn: &Connection) -> anyhow::Result<Reconciler> {
        let stock = match &self.initial_stock_json {
            Some(text) => parse_map(text, "sku", "available").context("--initial-stock-json")?,
            None => load_stock(&self.stock_seed).context("--stock-seed")?,
        };
        let balances = load_balances(&self.accounts_seed).context("--accounts-seed")?;
        let mut r = Reconciler::new(
            conn.clone(),
            Endpoints {
                order: self.order_url.clone(),
                inventory: self.inventory_url.clone(),
                payment: self.payment_url.clone(),
                courier: self.courier_url.clone(),
                communication: self.communication_url.clone(),
            },
        )
        .initial_stock(stock)
        .initial_balances(balances)
        .expect_dlq(self.expect_dlq);
        if let Some(dir) = &self.mail_dir {
            r = r.mail_dir(dir);
        }
        Ok(r)
    }
}

/// `choreo reconcile`: prints every violation and a summary; the report
/// says whether the command should fail.
pub async fn run(
    conn: &Connection,
    args: &ReconcileArgs,
    output: Output,
    out: &mut impl Write,
    progress: &mut Progress,
) -> anyhow::Result<Report> {
    let report = args
        .reconciler(conn)?
        .run_settled(args.settle, progress)
        .await?;
    print_report(&report, output, out)?;
    Ok(report)
}

/// Violations one per line, then a summary line.
pub fn print_report(report: &Report, output: Output, out: &mut impl Write) -> anyhow::Result<()> {
    if output.json {
        for v in &report.violations {
            output.json_line(out, &serde_json::to_value(v)?)?;
        }
        let mut summary = serde_json::to_value(report)?;
        if let Some(obj) = summary.as_object_mut() {
            obj.remove("violations");
            obj.insert("violation_count".into(), json!(report.violations.len()));
            obj.insert("summary".into(), json!(true));
        }
        output.json_line(out, &summary)?;
        return Ok(());
    }
    for v in &report.violations {
        writeln!(out, "{} {v}", output.paint("31", "VIOLATION"))?;
    }
    let verdict = if report.is_clean() {
        output.paint("32", "OK")
    } else {
        output.paint("31", &format!("{} violation(s)", report.violations.len()))
    };
    writeln!(
        out,
        "{verdict}: {} orders ({} confirmed, {} cancelled), {} SKUs, {} customers, {} dead letters checked",
        report.orders,
        report.confirmed,
        report.cancelled,
        report.skus_checked,
        report.customers_checked,
        report.dead_letters
    )?;
    if !report.skus_unchecked.is_empty() {
        writeln!(
            out,
            "not checked (no initial stock given): {}",
            report.skus_unchecked.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_overrides_parse() {
        let seed = r#"[{"sku": "WIDGET-1", "available": 1000}, {"sku": "X", "available": 0}]"#;
        let m = parse_map(seed, "sku", "available").unwrap();
        assert_eq!(m["WIDGET-1"], 1000);
        assert_eq!(m["X"], 0);
        let m = parse_map(r#"{"NEW-1": 5}"#, "sku", "available").unwrap();
        assert_eq!(m["NEW-1"], 5);
        let e = parse_map("{\"A\": \n x}", "sku", "available")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_map(r#"[{"sku": "A"}]"#, "sku", "available").is_err());
    }

    #[test]
    fn repository_seeds_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/seed");
        let stock = load_stock(&root.join("stock.json")).unwrap();
        assert!(stock.contains_key("WIDGET-1"));
        let balances = load_balances(&root.join("accounts.json")).unwrap();
        assert_eq!(balances["bob"], 500);
    }

    #[test]
    fn violations_read_well() {
        let v = Violation::subject(Check::StockConservation, "WIDGET-1", "initial 1000 ≠ 999");
        assert_eq!(
            v.to_string(),
            "stock_conservation WIDGET-1: initial 1000 ≠ 999"
        );
        let v = Violation::order(Check::NotTerminal, "o-1", "status PENDING");
        assert_eq!(
            v.to_string(),
            "not_terminal       order o-1: status PENDING"
        );
    }
}
