//! One schedule: the scenario's orders placed, cancelled and carried
//! through the five services, one step at a time, each step chosen by the
//! schedule's random stream — which message is delivered next, whether it
//! is delivered again, whether a handler or a relay dies half-way, whether
//! a consumer restarts, when the clock jumps. After `chaos` steps the
//! faults stop and the schedule runs until nothing is left to do; then the
//! invariants are checked ([`crate::check`]).
//!
//! Everything the schedule does is decided by its [`Spec`]: the same spec
//! gives the same steps, whatever ran before it on the same world.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::Context as _;
use choreo_bus::{Applied, Incoming};
use choreo_events::{Address, CancelOrder, EventMetadata, OrderLine, PlaceOrder, Topic};
use choreo_order::domain::{DraftAddress, DraftLine, OrderDraft, OrderId};
use choreo_order::handlers::{Orders, PlaceCommand};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::bus::{Bus, DeadLetter, Pending};
use crate::check::{self, Names};
use crate::scenario::{PlannedOrder, Scenario, Via, CURRENCY};
use crate::spec::Spec;
use crate::world::{Service, World, CRASH_REASON, EPOCH_MS};

/// The most orders a schedule draws by default.
pub const MAX_ORDERS: usize = 20;

/// Steps after which a schedule that is still busy counts as never
/// settling.
const MAX_STEPS: u64 = 100_000;

/// Retryable failures of one message in a row after which the simulated
/// consumer gives up on it (the real one would keep retrying; here it
/// would never settle).
const MAX_RETRIES: u32 = 20;

/// What a schedule did and found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub spec: Spec,
    /// Orders of the scenario that were kept.
    pub orders: usize,
    /// Steps taken, and how many of them could inject faults.
    pub steps: u64,
    pub chaos_steps: u64,
    /// Steps that could inject faults: the spec's `chaos`, or drawn.
    pub chaos_limit: u64,
    pub deliveries: u64,
    /// Every broken invariant, one line each.
    pub violations: Vec<String>,
    /// What happened, step by step.
    pub log: Vec<String>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !self.violations.is_empty()
    }

    /// The check names the violations are about (the first word of each).
    pub fn checks(&self) -> BTreeSet<String> {
        self.violations
            .iter()
            .filter_map(|v| v.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule {}: {} orders, {} steps ({} with faults), {} deliveries",
            self.spec, self.orders, self.steps, self.chaos_steps, self.deliveries
        )?;
        for v in &self.violations {
            writeln!(f, "  VIOLATION {v}")?;
        }
        Ok(())
    }
}

/// What the schedule may do next.
#[derive(Clone, Copy, Debug)]
enum Action {
    Place,
    Cancel,
    Deliver(Pending),
    Relay(Service),
    Tick,
    Rewind,
}

/// A running schedule.
struct Run<'w> {
    world: &'w World,
    orders: Orders,
    spec: Spec,
    scenario: Scenario,
    names: Names,
    rng: ChaCha8Rng,
    bus: Bus,
    /// Kept order indices, in placing order, and how many are placed.
    kept: Vec<usize>,
    placed: usize,
    /// Placed orders whose customer will cancel.
    to_cancel: Vec<usize>,
    /// Services that may have unpublished outbox rows.
    dirty: BTreeSet<Service>,
    steps: u64,
    chaos_limit: u64,
    deliveries: u64,
    violations: Vec<String>,
    log: Vec<String>,
}

/// Runs `spec` on `world` with up to `max_orders` orders.
pub async fn run(world: &mut World, spec: &Spec, max_orders: usize) -> anyhow::Result<Outcome> {
    let prefix = format!("r{}", world.next_run());
    let scenario = Scenario::draw(spec.seed, max_orders);
    let kept: Vec<usize> = (0..scenario.orders.len())
        .filter(|i| spec.orders.as_ref().is_none_or(|keep| keep.contains(i)))
        .collect();
    let names = Names::new(&prefix);
    check::seed(world, &scenario, &names).await?;
    world.clock.set(EPOCH_MS);
    world.set_deadline(scenario.deadline_ms);
    world.set_served(&scenario.served)?;
    let orders = world.orders.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(
        spec.seed ^ 0x9e37_79b9_7f4a_7c15 ^ spec.salt.wrapping_mul(0xbf58_476d_1ce4_e5b9),
    );
    // Drawn even when the spec fixes it, so that fixing it to the drawn
    // value replays the very same stream.
    let drawn = rng.gen_range(0..=400);
    let chaos_limit = spec.chaos.unwrap_or(drawn);
    let mut run = Run {
        world,
        orders,
        spec: spec.clone(),
        scenario,
        names,
        rng,
        bus: Bus::default(),
        kept,
        placed: 0,
        to_cancel: Vec::new(),
        dirty: BTreeSet::new(),
        steps: 0,
        chaos_limit,
        deliveries: 0,
        violations: Vec::new(),
        log: Vec::new(),
    };
    run.go().await?;
    let mut violations = run.violations;
    violations
        .extend(check::verify(run.world, &run.scenario, &run.kept, &run.names, &run.bus).await?);
    Ok(Outcome {
        spec: run.spec,
        orders: run.kept.len(),
        steps: run.steps,
        chaos_steps: run.steps.min(run.chaos_limit),
        chaos_limit: run.chaos_limit,
        deliveries: run.deliveries,
        violations,
        // Reasons quote full names; the log shows them without the run.
        log: run.log.iter().map(|l| run.names.shorten(l)).collect(),
    })
}

impl Run<'_> {
    async fn go(&mut self) -> anyhow::Result<()> {
        let mut idle = 0;
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                self.violations.push(format!(
                    "never_settled      still busy after {MAX_STEPS} steps"
                ));
                return Ok(());
            }
            let chaos = self.steps <= self.chaos_limit;
            let choices = self.choices(chaos);
            if choices.is_empty() {
                // Calm and nothing to deliver: let every deadline pass,
                // twice at most; what is still open then stays open.
                if idle == 2 || self.all_finished().await? {
                    self.steps -= 1;
                    return Ok(());
                }
                idle += 1;
                let jump = self.scenario.deadline_ms + 1;
                self.tick(jump).await?;
                continue;
            }
            idle = 0;
            let total: u32 = choices.iter().map(|(_, w)| w).sum();
            let mut pick = self.rng.gen_range(0..total);
            let mut chosen = choices[0].0;
            for (action, weight) in &choices {
                if pick < *weight {
                    chosen = *action;
                    break;
                }
                pick -= weight;
            }
            match chosen {
                Action::Place => self.place().await?,
                Action::Cancel => self.cancel().await?,
                Action::Deliver(pending) => self.deliver(pending, chaos).await?,
                Action::Relay(service) => self.relay(service, chaos).await?,
                Action::Tick => {
                    let jump = self.rng.gen_range(1..=self.scenario.deadline_ms);
                    self.tick(jump).await?;
                }
                Action::Rewind => self.rewind(),
            }
        }
    }

    fn choices(&mut self, chaos: bool) -> Vec<(Action, u32)> {
        let faults = self.spec.faults;
        let mut choices = Vec::new();
        if self.placed < self.kept.len() {
            choices.push((Action::Place, 3));
        }
        if !self.to_cancel.is_empty() {
            choices.push((Action::Cancel, 2));
        }
        let pending = self.bus.pending();
        if !pending.is_empty() {
            let pick = pending[self.rng.gen_range(0..pending.len())];
            choices.push((Action::Deliver(pick), 12));
        }
        for service in &self.dirty {
            choices.push((Action::Relay(*service), 2));
        }
        if chaos && faults.time_jump {
            choices.push((Action::Tick, 1));
        }
        if chaos && faults.rewind {
            choices.push((Action::Rewind, 1));
        }
        choices
    }

    fn short(&self, key: &str) -> String {
        self.names.short(key)
    }

    async fn place(&mut self) -> anyhow::Result<()> {
        let index = self.kept[self.placed];
        self.placed += 1;
        let plan = self.scenario.orders[index].clone();
        let id = self.names.order(index);
        let key = format!("{id}-key");
        let times = if plan.placed_twice { 2 } else { 1 };
        for attempt in 0..times {
            let again = if attempt > 0 { " again" } else { "" };
            match plan.via {
                Via::Http => {
                    let draft = self.draft(&plan);
                    let order_id = OrderId::parse(&id)?;
                    let mut uow = self.world.order_db.begin().await?;
                    let placed = self
                        .orders
                        .place(
                            &mut uow,
                            PlaceCommand {
                                order_id,
                                idempotency_key: Some(key.clone()),
                                draft,
                                cause: None,
                            },
                        )
                        .await;
                    match placed {
                        Ok(_) => uow.commit().await?,
                        Err(e) => {
                            uow.rollback().await?;
                            self.violations.push(format!(
                                "placing           order {} refused: {e}",
                                self.short(&id)
                            ));
                        }
                    }
                    let order = self.describe(&plan, &id);
                    self.log.push(format!("POST /orders{again}: {order}"));
                    self.dirty.insert(Service::Order);
                }
                Via::Command => {
                    let command = self.command(&plan, &id, &key);
                    self.bus
                        .publish(Topic::OrderRequests.name(), &id, command.into());
                    let order = self.describe(&plan, &id);
                    self.log
                        .push(format!("PlaceOrder{again} on order-requests: {order}"));
                }
            }
        }
        if plan.cancel.is_some() {
            self.to_cancel.push(index);
        }
        Ok(())
    }

    /// `o3 for c1 (2 lines, total 3400, to DE)`, for the log.
    fn describe(&self, plan: &PlannedOrder, id: &str) -> String {
        format!(
            "{} for {} ({} lines, total {}, to {})",
            self.short(id),
            self.short(&self.names.customer(plan.customer)),
            plan.lines.len(),
            plan.total_minor(),
            plan.country
        )
    }

    fn draft(&self, plan: &PlannedOrder) -> OrderDraft {
        let customer = self.names.customer(plan.customer);
        OrderDraft {
            customer_email: Names::email(&customer),
            customer_id: customer,
            items: plan
                .lines
                .iter()
                .map(|l| DraftLine {
                    sku: self.names.sku(l.sku),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            currency: CURRENCY.to_owned(),
            shipping_address: DraftAddress {
                name: "Sim Customer".to_owned(),
                line1: "1 Main Street".to_owned(),
                city: "Town".to_owned(),
                postal_code: "12345".to_owned(),
                country: plan.country.to_owned(),
            },
        }
    }

    fn command(&self, plan: &PlannedOrder, id: &str, key: &str) -> PlaceOrder {
        let draft = self.draft(plan);
        PlaceOrder {
            metadata: EventMetadata::new(id, "sim-client", None),
            request_id: Some(key.to_owned()),
            customer_id: draft.customer_id,
            customer_email: draft.customer_email,
            items: draft
                .items
                .iter()
                .map(|l| OrderLine {
                    sku: l.sku.clone(),
                    quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
                    unit_price_minor: l.unit_price_minor,
                })
                .collect(),
            currency: draft.currency,
            shipping_address: Address {
                name: draft.shipping_address.name,
                line1: draft.shipping_address.line1,
                city: draft.shipping_address.city,
                postal_code: draft.shipping_address.postal_code,
                country: draft.shipping_address.country,
            },
        }
    }

    async fn cancel(&mut self) -> anyhow::Result<()> {
        let at = self.rng.gen_range(0..self.to_cancel.len());
        let index = self.to_cancel.swap_remove(at);
        let id = self.names.order(index);
        let short = self.short(&id);
        match self.scenario.orders[index].cancel {
            Some(Via::Command) => {
                let command = CancelOrder {
                    metadata: EventMetadata::new(&id, "sim-client", None),
                    reason: Some("changed my mind".to_owned()),
                };
                self.bus
                    .publish(Topic::OrderRequests.name(), &id, command.into());
                self.log
                    .push(format!("CancelOrder on order-requests: {short}"));
            }
            _ => {
                let answer = match self.orders.cancel(&id).await {
                    Ok(applied) if applied.before.is_terminal() => {
                        format!("409, already {}", applied.before.name())
                    }
                    Ok(applied) => {
                        format!("202, {} → {}", applied.before.name(), applied.after.name())
                    }
                    Err(choreo_order::handlers::OrderError::UnknownOrder(_)) => {
                        "404, not placed yet".to_owned()
                    }
                    Err(e) => {
                        self.violations
                            .push(format!("cancelling        order {short}: {e}"));
                        format!("error: {e}")
                    }
                };
                self.dirty.insert(Service::Order);
                self.log.push(format!("DELETE /orders/{short}: {answer}"));
            }
        }
        Ok(())
    }

    async fn deliver(&mut self, pending: Pending, chaos: bool) -> anyhow::Result<()> {
        let (service, id, position, record) = self
            .bus
            .next(pending)
            .context("a pending cursor points past its log")?;
        let (id, record) = (id.clone(), record.clone());
        let faults = self.spec.faults;
        if chaos && faults.lose && self.rng.gen_bool(0.05) {
            // Not a fault Kafka has: the simulation's own proof that a lost
            // message is seen (see the `lose` fault).
            let event_type = record.event.event_type();
            if let Some(cursor) = self.bus.cursor(pending) {
                cursor.delivered += 1;
            }
            self.log.push(format!(
                "{} never gets {}[{position}] {event_type} {} (LOST)",
                service.name(),
                id.0,
                self.short(&id.1)
            ));
            return Ok(());
        }
        let crash = chaos && faults.crash_before_commit && self.rng.gen_bool(0.05);
        let incoming = Incoming {
            topic: id.0.clone(),
            partition: 0,
            offset: i64::try_from(position).unwrap_or(i64::MAX),
            key: Some(id.1.clone()),
            event: record.event,
        };
        self.deliveries += 1;
        let result = self.world.apply(service, &incoming, crash).await;
        let what = format!(
            "{} ← {}[{}] {} {}",
            service.name(),
            id.0,
            position,
            incoming.event.event_type(),
            self.short(&id.1)
        );
        let cursor = self
            .bus
            .cursor(pending)
            .context("a pending delivery without a cursor")?;
        let note = match result {
            Ok(applied) => {
                cursor.failures = 0;
                let again = chaos && faults.duplicate && self.rng.gen_bool(0.1);
                if !again {
                    cursor.delivered += 1;
                }
                if self.rng.gen_bool(0.3) {
                    cursor.committed = cursor.delivered;
                }
                if applied == Applied::Applied {
                    self.dirty.insert(service);
                }
                match (applied, again) {
                    (Applied::Duplicate, _) => " (seen before: no effect)",
                    (Applied::Applied, true) => " (to be delivered again)",
                    (Applied::Applied, false) => "",
                }
                .to_owned()
            }
            Err(e) if e.is_retryable() && e.reason() == CRASH_REASON => {
                " — crashed before the commit".to_owned()
            }
            Err(e) if e.is_retryable() && cursor.failures < MAX_RETRIES => {
                cursor.failures += 1;
                format!(" — retryable: {}", e.reason())
            }
            Err(e) => {
                cursor.failures = 0;
                cursor.delivered += 1;
                let event_type = incoming.event.event_type();
                self.bus.dead_letters.push(DeadLetter {
                    service,
                    topic: id.0.clone(),
                    key: id.1.clone(),
                    position,
                    event_type,
                    reason: e.reason().to_owned(),
                });
                format!(" — DEAD LETTER: {}", e.reason())
            }
        };
        self.log.push(format!("{what}{note}"));
        Ok(())
    }

    async fn relay(&mut self, service: Service, chaos: bool) -> anyhow::Result<()> {
        let db = self.world.db(service);
        let limit = self.rng.gen_range(1..=6);
        let batch = db.next_batch(limit).await?;
        if batch.is_empty() {
            self.dirty.remove(&service);
            return Ok(());
        }
        let rows = batch.rows().to_vec();
        let crash = chaos && self.spec.faults.relay_crash && self.rng.gen_bool(0.15);
        let published = if crash {
            self.rng.gen_range(0..=rows.len())
        } else {
            rows.len()
        };
        let mut what = Vec::new();
        for row in rows.iter().take(published) {
            let source = format!("{}/0/{}", row.topic, row.seq);
            let event = self
                .world
                .codec
                .decode(&row.topic, &source, Some(&row.payload))
                .await
                .with_context(|| {
                    format!("decoding outbox row {} of {}", row.seq, service.name())
                })?;
            what.push(format!("{} {}", event.event_type(), self.short(&row.key)));
            self.bus.publish(&row.topic, &row.key, event);
        }
        if crash {
            batch.release().await?;
        } else {
            batch.mark_published().await?;
            if rows.len() < limit as usize {
                // Fewer rows than asked for: that was all of them, until
                // the service commits again.
                self.dirty.remove(&service);
            }
        }
        self.log.push(format!(
            "relay {}: published [{}]{}",
            service.name(),
            what.join(", "),
            if crash {
                format!(" of {} rows, then crashed before marking them", rows.len())
            } else {
                String::new()
            }
        ));
        Ok(())
    }

    async fn tick(&mut self, jump_ms: i64) -> anyhow::Result<()> {
        let now = self.world.clock.now_ms() + jump_ms;
        self.world.clock.set(now);
        let cancelled = self.orders.expire_due().await?;
        if cancelled > 0 {
            self.dirty.insert(Service::Order);
        }
        self.log.push(format!(
            "clock +{jump_ms} ms (t={} ms): {cancelled} orders past their deadline cancelled",
            now - EPOCH_MS
        ));
        Ok(())
    }

    fn rewind(&mut self) {
        let service = Service::ALL[self.rng.gen_range(0..Service::ALL.len())];
        let again = self.bus.rewind(service);
        if again > 0 {
            self.log.push(format!(
                "{} restarts from its stored offsets: {again} messages again",
                service.name()
            ));
        }
    }

    async fn all_finished(&self) -> anyhow::Result<bool> {
        for index in &self.kept {
            let status = check::order_status(self.world, &self.names.order(*index)).await?;
            if !matches!(status.as_deref(), Some("CONFIRMED" | "CANCELLED")) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
