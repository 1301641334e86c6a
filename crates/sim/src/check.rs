//! The schedule's names, its starting state, and the verdict at its end.
//!
//! The verdict is `choreo reconcile`'s own ([`choreo_cli::reconcile::judge`]):
//! the same checks the fault suite ends with, fed from the services'
//! storage and the simulated topics instead of HTTP and Kafka. The
//! simulation adds what only it can see: every outbox drained, nothing set
//! aside, every mail to the order's customer.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;

use anyhow::Context as _;
use choreo_cli::reconcile::{
    judge, terminal_event, Expectations, Observed, ObservedDeadLetter, ObservedOrder,
    ObservedReservation, StockRow,
};
use choreo_events::{contract, Topic};

use crate::bus::Bus;
use crate::scenario::{Scenario, CURRENCY};
use crate::world::{Service, World};

/// The names of one schedule's orders, SKUs and customers: prefixed with
/// its run, so that schedules sharing a world never meet.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: format!("{prefix}-"),
        }
    }

    pub fn order(&self, index: usize) -> String {
        format!("{}o{index}", self.prefix)
    }

    pub fn sku(&self, index: usize) -> String {
        format!("{}SKU-{index}", self.prefix)
    }

    pub fn customer(&self, index: usize) -> String {
        format!("{}c{index}", self.prefix)
    }

    pub fn email(customer: &str) -> String {
        format!("{customer}@example.org")
    }

    /// A name without the run prefix, for the schedule's log.
    pub fn short(&self, name: &str) -> String {
        name.strip_prefix(&self.prefix).unwrap_or(name).to_owned()
    }

    /// `text` with every name in it shown without the run prefix.
    pub fn shorten(&self, text: &str) -> String {
        text.replace(&self.prefix, "")
    }
}

fn invalid(what: &str, e: impl Display) -> anyhow::Error {
    anyhow::anyhow!("{what}: {e}")
}

/// Gives the scenario's SKUs their stock and its customers their accounts.
pub async fn seed(world: &World, scenario: &Scenario, names: &Names) -> anyhow::Result<()> {
    use choreo_payment::domain::{money, Account, CustomerId};
    let inventory = world.db(Service::Inventory).pool();
    for (i, available) in scenario.stock.iter().enumerate() {
        let sku =
            choreo_inventory::domain::Sku::parse(&names.sku(i)).map_err(|e| invalid("sku", e))?;
        choreo_inventory::storage::put_stock(inventory, &sku, *available)
            .await
            .context("setting stock")?;
    }
    for (i, customer) in scenario.customers.iter().enumerate() {
        let account = Account {
            customer_id: CustomerId::parse(names.customer(i))
                .map_err(|e| invalid("customer", e))?,
            balance: money("balance_minor", customer.balance_minor, CURRENCY)
                .map_err(|e| invalid("balance", e))?,
            blocked: customer.blocked,
        };
        choreo_payment::storage::put_account(world.db(Service::Payment), &account)
            .await
            .context("opening an account")?;
    }
    Ok(())
}

/// Order's status of `order_id`, `None` when Order has no such order.
pub async fn order_status(world: &World, order_id: &str) -> anyhow::Result<Option<String>> {
    let mut conn = world.order_db.pool().acquire().await?;
    let record = choreo_order::storage::find(&mut conn, order_id)
        .await
        .context("reading an order")?;
    Ok(record.map(|r| r.status.name().to_owned()))
}

/// Every broken invariant after a schedule, one line each.
pub async fn verify(
    world: &World,
    scenario: &Scenario,
    kept: &[usize],
    names: &Names,
    bus: &Bus,
) -> anyhow::Result<Vec<String>> {
    let mut extra = Vec::new();
    let mut observed = Observed {
        mail_dir: Some("the simulated mailbox".into()),
        ..Observed::default()
    };
    let mailbox = world.mailbox.sent();
    for index in kept {
        let id = names.order(*index);
        let plan = &scenario.orders[*index];
        let customer = names.customer(plan.customer);
        let mut order = observe_order(world, bus, &id).await?;
        order.customer = Some(customer.clone());
        order.total = plan.total_minor();
        let stem = contract::file_safe_id(&id);
        for mail in &mailbox {
            let Some((owner, template)) = mail.name.split_once('.') else {
                continue;
            };
            if owner != stem {
                continue;
            }
            *order.mails.entry(template.to_owned()).or_default() += 1;
            if mail.recipient != Names::email(&customer) {
                extra.push(format!(
                    "mail_recipient     order {} {template} went to {}, not to its customer",
                    names.short(&id),
                    mail.recipient
                ));
            }
        }
        observed.orders.push(order);
    }
    let mut expected = Expectations::default();
    for (i, available) in scenario.stock.iter().enumerate() {
        let sku = names.sku(i);
        let parsed = choreo_inventory::domain::Sku::parse(&sku).map_err(|e| invalid("sku", e))?;
        let row =
            choreo_inventory::storage::get_stock(world.db(Service::Inventory).pool(), &parsed)
                .await
                .context("reading stock")?
                .context("a seeded SKU is gone")?;
        observed.stock.insert(
            sku.clone(),
            StockRow {
                available: row.available,
                reserved: row.reserved,
                committed: row.committed,
            },
        );
        expected.initial_stock.insert(sku, *available);
    }
    for (i, customer) in scenario.customers.iter().enumerate() {
        let id = names.customer(i);
        let parsed = choreo_payment::domain::CustomerId::parse(id.clone())
            .map_err(|e| invalid("customer", e))?;
        if let Some(account) =
            choreo_payment::storage::get_account(world.db(Service::Payment), &parsed)
                .await
                .context("reading an account")?
        {
            observed.balances.insert(id.clone(), account.balance.minor);
        }
        expected.initial_balances.insert(id, customer.balance_minor);
    }
    observed.dead_letters = bus
        .dead_letters
        .iter()
        .map(|d| ObservedDeadLetter {
            key: Some(d.key.clone()),
            position: format!("dlq.{}/{}[{}]", d.service.name(), d.topic, d.position),
            detail: format!("{}: {}", d.event_type, d.reason),
        })
        .collect();
    for service in Service::ALL {
        let db = world.db(service);
        let backlog = db.outbox_backlog().await?;
        if backlog > 0 {
            extra.push(format!(
                "outbox             {} still holds {backlog} unpublished rows",
                service.name()
            ));
        }
        let dead = db.dead_rows().await?;
        if !dead.is_empty() {
            extra.push(format!(
                "outbox             {} set {} rows aside: {}",
                service.name(),
                dead.len(),
                dead.iter()
                    .map(|d| d.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    let report = judge(&observed, &expected);
    let mut violations: Vec<String> = report
        .violations
        .iter()
        .map(|v| names.shorten(&v.to_string()))
        .collect();
    violations.extend(extra);
    Ok(violations)
}

async fn observe_order(world: &World, bus: &Bus, id: &str) -> anyhow::Result<ObservedOrder> {
    let status = order_status(world, id)
        .await?
        .unwrap_or_else(|| "ABSENT".to_owned());
    let reservation = {
        let parsed =
            choreo_inventory::domain::OrderId::parse(id).map_err(|e| invalid("order id", e))?;
        let r = choreo_inventory::storage::get_reservation(
            world.db(Service::Inventory).pool(),
            &parsed,
        )
        .await
        .context("reading a reservation")?;
        r.status().map(|status| ObservedReservation {
            status: status.as_str().to_owned(),
            lines: r
                .lines()
                .iter()
                .map(|l| (l.sku.as_str().to_owned(), i64::from(l.quantity)))
                .collect(),
        })
    };
    let shipment = {
        let parsed =
            choreo_courier::domain::OrderId::parse(id).map_err(|e| invalid("order id", e))?;
        choreo_courier::storage::get_shipment(world.db(Service::Courier).pool(), &parsed)
            .await
            .context("reading a shipment")?
            .status()
            .map(|s| s.as_str().to_owned())
    };
    let net_charge = {
        let parsed =
            choreo_payment::domain::OrderId::parse(id).map_err(|e| invalid("order id", e))?;
        choreo_payment::storage::get_payment(world.db(Service::Payment), &parsed)
            .await
            .context("reading a payment")?
            .net_charge_minor()
    };
    let mut notifications = BTreeMap::new();
    for n in choreo_communication::storage::list_notifications(
        world.db(Service::Communication),
        Some(id),
    )
    .await
    .context("reading notifications")?
    {
        *notifications.entry(n.template).or_default() += 1;
    }
    Ok(ObservedOrder {
        id: id.to_owned(),
        status,
        customer: None,
        total: 0,
        reservation,
        shipment,
        net_charge,
        terminal_events: terminal_events(bus, id),
        notifications,
        mails: BTreeMap::new(),
    })
}

/// `OrderConfirmed` / `OrderCancelled(<reason>)` on `orders` for `id`, in
/// topic order, each event id once (as `choreo reconcile` reads them).
fn terminal_events(bus: &Bus, id: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for record in bus.log(&(Topic::Orders.name().to_owned(), id.to_owned())) {
        let event_id = record.event.metadata().event_id.clone();
        if !seen.insert(event_id) {
            continue;
        }
        out.extend(terminal_event(&record.event));
    }
    out
}
