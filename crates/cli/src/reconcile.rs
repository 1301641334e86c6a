//! `choreo reconcile`: the invariant checker of the design ("Invariants"),
//! from the outside — the services' HTTP APIs, the topics and the mail
//! folder, never a database. The fault-injection tests call [`Reconciler`]
//! directly with explicit URLs and initial stock and balances.
//!
//! Checked:
//! - every order (`GET /orders` paging) is terminal, and `orders` carries
//!   exactly one terminal event for it, agreeing with its status;
//! - CONFIRMED: reservation COMMITTED, shipment MANIFESTED, net charge ==
//!   order total, exactly one ORDER_CONFIRMED notification (and mail);
//! - CANCELLED: reservation neither RESERVED nor COMMITTED, shipment not
//!   MANIFESTED, net charge 0, exactly one ORDER_CANCELLED notification
//!   (and mail);
//! - per SKU: initial = available + Σ RESERVED reservations + committed;
//! - per customer: initial balance = balance + Σ net charges;
//! - dead letters: every message on `dlq.*` beyond the expected count, or
//!   one missing.
//!
//! Layout: [`Reconciler`] (here) does the I/O and gathers an [`Observed`];
//! `judge` turns it into a [`Report`] without any I/O, so every check is
//! unit-tested on plain data; `mail` reads the mail folder and counts mails
//! by Message-ID.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use choreo_events::Topic;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::decode::Decoder;
use crate::dlq;
use crate::output::{parse_duration, path_segment, printable, query_value, Output, Progress};
use crate::reader::read_to_end;
use crate::Connection;

mod judge;
mod mail;

pub use judge::{
    judge, terminal_event, Expectations, Observed, ObservedDeadLetter, ObservedOrder,
    ObservedReservation, StockRow,
};
use mail::MailFolder;

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
    /// Not exactly one mail (distinct Message-ID) of the outcome's template,
    /// or one of the other template.
    Mail,
    /// initial ≠ available + Σ RESERVED reservations + committed for a SKU.
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

/// Base URLs of the five services; as flags (`--order-url` …, or
/// `CHOREO_<SERVICE>_URL`), `make run`'s addresses by default.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Endpoints {
    #[arg(
        long = "order-url",
        env = "CHOREO_ORDER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub order: String,
    #[arg(
        long = "inventory-url",
        env = "CHOREO_INVENTORY_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub inventory: String,
    #[arg(
        long = "payment-url",
        env = "CHOREO_PAYMENT_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub payment: String,
    #[arg(
        long = "courier-url",
        env = "CHOREO_COURIER_URL",
        default_value = "http://127.0.0.1:8084"
    )]
    pub courier: String,
    #[arg(
        long = "communication-url",
        env = "CHOREO_COMMUNICATION_URL",
        default_value = "http://127.0.0.1:8085"
    )]
    pub communication: String,
}

impl Endpoints {
    /// The base URL of `service` (one of [`choreo_events::SERVICES`]).
    pub fn of(&self, service: &str) -> &str {
        match service {
            "order" => &self.order,
            "inventory" => &self.inventory,
            "payment" => &self.payment,
            "courier" => &self.courier,
            _ => &self.communication,
        }
    }
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

/// The invariant checker: gathers an [`Observed`] from the services, the
/// topics and the mail folder, then [`judge`]s it.
#[derive(Clone, Debug)]
pub struct Reconciler {
    conn: Connection,
    endpoints: Endpoints,
    expected: Expectations,
    mail_dir: Option<PathBuf>,
    http: reqwest::Client,
}

impl Reconciler {
    /// A checker with no initial stock or balances (so no conservation
    /// check), no mail folder and no dead letter expected.
    pub fn new(conn: Connection, endpoints: Endpoints) -> Self {
        Self {
            conn,
            endpoints,
            expected: Expectations::default(),
            mail_dir: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("a reqwest client without custom TLS builds"),
        }
    }

    /// Initial `available` per SKU; SKUs not given are not checked.
    pub fn initial_stock(mut self, stock: HashMap<String, i64>) -> Self {
        self.expected.initial_stock = stock;
        self
    }

    /// Initial balance per customer; customers not given are not checked.
    pub fn initial_balances(mut self, balances: HashMap<String, i64>) -> Self {
        self.expected.initial_balances = balances;
        self
    }

    /// Where Communication's file transport writes its `.eml` files; mails
    /// are counted there by distinct Message-ID per order and template.
    pub fn mail_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.mail_dir = Some(dir.into());
        self
    }

    /// How many dead letters are expected (e.g. a test's poison messages):
    /// fewer or more is a violation.
    pub fn expect_dlq(mut self, n: usize) -> Self {
        self.expected.dead_letters = n;
        self
    }

    /// What [`judge`] compares the observations with.
    pub fn expectations(&self) -> &Expectations {
        &self.expected
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
        let observed = self.observe(progress).await?;
        Ok(judge(&observed, &self.expected))
    }

    /// Gathers everything the checks need, judging nothing.
    pub async fn observe(&self, progress: &mut Progress) -> anyhow::Result<Observed> {
        progress.set_label("listing orders");
        let ids = self.list_orders().await?;
        let terminal = self.terminal_events(progress).await?;

        progress.set_label("checking orders");
        progress.set_total(Some(ids.len() as u64));
        let mut gathered = futures::stream::iter(ids.iter())
            .map(|id| {
                let events = terminal.get(id.as_str()).cloned().unwrap_or_default();
                self.observe_order(id, events)
            })
            .buffered(CONCURRENCY);
        let mut orders = Vec::with_capacity(ids.len());
        while let Some(order) = gathered.next().await {
            orders.push(order?);
            progress.inc(1);
        }
        drop(gathered);
        progress.finish();

        // Read after the notifications: Communication makes a mail durable
        // before it records the notification, so a notification seen above
        // has its mail on disk by now.
        if let Some(folder) = self.read_mail_folder().await? {
            for order in &mut orders {
                order.mails = folder.counts(&order.id);
            }
        }

        Ok(Observed {
            orders,
            stock: self.stock().await?,
            balances: self.balances().await?,
            mail_dir: self.mail_dir.clone(),
            dead_letters: self.dead_letters(progress).await?,
        })
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
                Ok(event) => {
                    if let Some(name) = terminal_event(&event) {
                        out.entry(event.order_id().to_owned())
                            .or_default()
                            .push(name);
                    }
                }
                Err(e) if e.is_retryable() => return Err(decoder.explain(e)),
                // Undecodable records are dead letters' business.
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// Every mail in the mail folder, read once per run (`None` without a
    /// folder).
    async fn read_mail_folder(&self) -> anyhow::Result<Option<MailFolder>> {
        let Some(dir) = self.mail_dir.clone() else {
            return Ok(None);
        };
        let folder = tokio::task::spawn_blocking(move || MailFolder::read(&dir))
            .await
            .context("the mail folder reader stopped")??;
        Ok(Some(folder))
    }

    /// One order as order, payment, inventory, courier and communication
    /// report it (mails are added by the caller).
    async fn observe_order(
        &self,
        id: &str,
        terminal_events: Vec<String>,
    ) -> anyhow::Result<ObservedOrder> {
        let segment = path_segment(id);
        let order = self
            .must_get(&format!("{}/orders/{segment}", base(&self.endpoints.order)))
            .await?;
        let payment = self
            .get(&format!(
                "{}/payments/{segment}",
                base(&self.endpoints.payment)
            ))
            .await?;
        let reservation = self
            .get(&format!(
                "{}/reservations/{segment}",
                base(&self.endpoints.inventory)
            ))
            .await?;
        let shipment = self
            .get(&format!(
                "{}/shipments/{segment}",
                base(&self.endpoints.courier)
            ))
            .await?;
        let notifications = self
            .must_get(&format!(
                "{}/notifications?order_id={}",
                base(&self.endpoints.communication),
                query_value(id)
            ))
            .await?;
        Ok(ObservedOrder {
            id: id.to_owned(),
            status: order["status"].as_str().unwrap_or("?").to_owned(),
            customer: order["customer_id"].as_str().map(str::to_owned),
            total: order["total_minor"].as_i64().unwrap_or_default(),
            reservation: reservation.as_ref().map(observed_reservation),
            shipment: shipment
                .as_ref()
                .and_then(|s| s["status"].as_str())
                .map(str::to_owned),
            net_charge: payment
                .as_ref()
                .and_then(|p| p["net_charge_minor"].as_i64())
                .unwrap_or(0),
            terminal_events,
            notifications: notification_counts(&notifications),
            mails: BTreeMap::new(),
        })
    }

    /// `GET /stock` by SKU; not fetched when no initial stock is given
    /// (nothing would be checked).
    async fn stock(&self) -> anyhow::Result<BTreeMap<String, StockRow>> {
        if self.expected.initial_stock.is_empty() {
            return Ok(BTreeMap::new());
        }
        let url = format!("{}/stock", base(&self.endpoints.inventory));
        let rows = self.must_get(&url).await?;
        let rows = rows
            .as_array()
            .ok_or_else(|| anyhow!("GET {url}: expected an array, got {rows}"))?;
        Ok(rows.iter().map(stock_row).collect())
    }

    /// `balance_minor` of every customer given an initial balance that has
    /// an account.
    async fn balances(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let mut balances = BTreeMap::new();
        for customer in self.expected.initial_balances.keys() {
            let url = format!(
                "{}/accounts/{}",
                base(&self.endpoints.payment),
                path_segment(customer)
            );
            if let Some(account) = self.get(&url).await? {
                let balance = account["balance_minor"].as_i64().unwrap_or_default();
                balances.insert(customer.clone(), balance);
            }
        }
        Ok(balances)
    }

    async fn dead_letters(
        &self,
        progress: &mut Progress,
    ) -> anyhow::Result<Vec<ObservedDeadLetter>> {
        let letters = dlq::list(&self.conn, None, progress).await?;
        Ok(letters
            .iter()
            .map(|l| ObservedDeadLetter {
                key: l.record.key_str(),
                position: l.record.position(),
                detail: format!("{} (from {}): {}", l.reason, l.source(), l.value_preview()),
            })
            .collect())
    }
}

/// A `GET /reservations/{id}` answer: its status and quantity per line.
fn observed_reservation(r: &Value) -> ObservedReservation {
    let lines = r["lines"].as_array().map(Vec::as_slice).unwrap_or_default();
    ObservedReservation {
        status: r["status"].as_str().unwrap_or("?").to_owned(),
        lines: lines
            .iter()
            .map(|l| {
                let sku = l["sku"].as_str().unwrap_or_default().to_owned();
                (sku, l["quantity"].as_i64().unwrap_or_default())
            })
            .collect(),
    }
}

/// One `GET /stock` row, keyed by SKU.
fn stock_row(row: &Value) -> (String, StockRow) {
    let n = |f: &str| row[f].as_i64().unwrap_or_default();
    let sku = row["sku"].as_str().unwrap_or_default().to_owned();
    let levels = StockRow {
        available: n("available"),
        reserved: n("reserved"),
        committed: n("committed"),
    };
    (sku, levels)
}

/// How many notifications of each template `GET /notifications` lists.
fn notification_counts(list: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let templates = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["template"].as_str());
    for template in templates {
        *counts.entry(template.to_owned()).or_default() += 1;
    }
    counts
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
    #[command(flatten)]
    pub endpoints: Endpoints,
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
    /// Communication's mail folder, to check exactly one mail (by
    /// Message-ID) per order.
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
        let mut r = Reconciler::new(conn.clone(), self.endpoints.clone())
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
