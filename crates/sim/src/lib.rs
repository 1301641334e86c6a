//! Deterministic simulation of the whole saga.
//!
//! The five services' real handlers, domain rules and storage — each on
//! its own temporary SQLite database, each message through the same apply
//! step the Kafka consumer uses ([`choreo_bus::apply`]) — wired to a
//! simulated bus ([`bus`]) and driven by one seeded random stream per
//! schedule ([`schedule`]): per topic and key order is kept, across topics
//! anything goes; deliveries are duplicated, consumers restart from their
//! stored offsets, handlers die before their commit, relays die between
//! publishing and marking, the clock jumps past deadlines, customers
//! cancel at any moment. After each schedule every order must be finished
//! and `choreo reconcile`'s invariants hold ([`check`]). A failing schedule
//! is shrunk ([`shrink`]) to the fewest orders, faults and steps that still
//! fail, and printed with the token that replays it:
//! `CHOREO_SIM_SEED=<token>`.
//!
//! Not simulated: the broker and the network themselves (rdkafka, Kafka's
//! own ordering and retention), the consumer loop's batching and offset
//! handling around the apply step, HTTP parsing, PostgreSQL.

pub mod bus;
pub mod check;
pub mod scenario;
pub mod schedule;
pub mod shrink;
pub mod spec;
pub mod world;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use choreo_testkit::service::TestRegistry;

pub use crate::schedule::{Outcome, MAX_ORDERS};
pub use crate::spec::{Faults, Spec};
pub use crate::world::World;

/// Schedules one world runs before it is replaced by a fresh one.
const SCHEDULES_PER_WORLD: u64 = 200;

/// How many schedules, from which seed, on how many workers.
#[derive(Clone, Debug)]
pub struct Settings {
    pub schedules: u64,
    /// Schedule `k` has seed `first_seed + k`.
    pub first_seed: u64,
    pub max_orders: usize,
    /// Schedules run side by side, each worker on a world of its own: four
    /// per core by default, since a worker mostly waits on SQLite's threads
    /// (2,000 schedules on two cores: 3 workers 94 s, 4 78 s, 6 66 s, 8 63 s).
    pub workers: usize,
}

impl Settings {
    /// The defaults `make test` runs: 2,000 schedules from seed 1, with
    /// `CHOREO_SIM_SCHEDULES`, `CHOREO_SIM_FIRST_SEED`,
    /// `CHOREO_SIM_MAX_ORDERS` and `CHOREO_SIM_WORKERS` read when set.
    pub fn from_env() -> anyhow::Result<Settings> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number")),
                Err(_) => Ok(default),
            }
        }
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let settings = Settings {
            schedules: var("CHOREO_SIM_SCHEDULES", 2_000)?,
            first_seed: var("CHOREO_SIM_FIRST_SEED", 1)?,
            max_orders: var("CHOREO_SIM_MAX_ORDERS", MAX_ORDERS)?,
            workers: var("CHOREO_SIM_WORKERS", 4 * cores)?,
        };
        anyhow::ensure!(
            settings.max_orders >= 1,
            "CHOREO_SIM_MAX_ORDERS must be at least 1"
        );
        anyhow::ensure!(
            settings.workers >= 1,
            "CHOREO_SIM_WORKERS must be at least 1"
        );
        Ok(settings)
    }
}

/// The schedule `CHOREO_SIM_SEED` names, if set.
pub fn replay_from_env() -> anyhow::Result<Option<Spec>> {
    match std::env::var("CHOREO_SIM_SEED") {
        Ok(token) if !token.trim().is_empty() => token
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("CHOREO_SIM_SEED={token:?}: {e}")),
        _ => Ok(None),
    }
}

/// What a run of many schedules did.
#[derive(Debug, Default)]
pub struct Summary {
    pub schedules: u64,
    pub orders: u64,
    pub steps: u64,
    pub deliveries: u64,
    pub elapsed: Duration,
    /// The first failing schedule (lowest seed among those found) and what
    /// it shrank to.
    pub failure: Option<Failure>,
}

impl Summary {
    pub fn schedules_per_second(&self) -> f64 {
        self.schedules as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} schedules ({} orders, {} steps, {} deliveries) in {:.1} s: {:.0} schedules/s",
            self.schedules,
            self.orders,
            self.steps,
            self.deliveries,
            self.elapsed.as_secs_f64(),
            self.schedules_per_second()
        )?;
        match &self.failure {
            Some(failure) => write!(f, "\n{failure}"),
            None => write!(f, "; every invariant held"),
        }
    }
}

/// A failing schedule and its shrunk form.
#[derive(Debug)]
pub struct Failure {
    pub original: Outcome,
    pub shrunk: Outcome,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "FAILED {}", self.original)?;
        writeln!(f, "shrunk to {}", self.shrunk)?;
        writeln!(f, "its steps:")?;
        for (i, line) in self.shrunk.log.iter().enumerate() {
            writeln!(f, "  {:>4}  {line}", i + 1)?;
        }
        write!(
            f,
            "replay: CHOREO_SIM_SEED='{}' make simulate   (the unshrunk schedule: CHOREO_SIM_SEED={})",
            self.shrunk.spec, self.original.spec.seed
        )
    }
}

/// A registry for the simulation's codec, in this process.
pub async fn registry() -> Arc<TestRegistry> {
    Arc::new(choreo_testkit::service::registry().await)
}

/// Runs `spec` on a fresh world; when it fails, shrinks it.
pub async fn replay(spec: &Spec, max_orders: usize) -> anyhow::Result<(Outcome, Option<Failure>)> {
    let registry = registry().await;
    let mut world = World::new(registry.clone()).await?;
    let outcome = schedule::run(&mut world, spec, max_orders).await?;
    if !outcome.failed() {
        return Ok((outcome, None));
    }
    let shrunk = shrink::shrink(&registry, &outcome, max_orders).await?;
    Ok((
        outcome.clone(),
        Some(Failure {
            original: outcome,
            shrunk,
        }),
    ))
}

/// Runs `settings.schedules` schedules on `settings.workers` worlds,
/// stopping at the first failure, which is shrunk. `progress` is called
/// after each schedule with the number done.
pub async fn simulate(
    settings: &Settings,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let registry = registry().await;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(progress);
    let mut workers = Vec::new();
    for _ in 0..settings.workers {
        let (registry, next, done, stop, progress) = (
            registry.clone(),
            next.clone(),
            done.clone(),
            stop.clone(),
            progress.clone(),
        );
        let settings = settings.clone();
        workers.push(tokio::spawn(async move {
            let mut world = World::new(registry.clone()).await?;
            let mut totals = Summary::default();
            let mut failed = None;
            while !stop.load(Ordering::SeqCst) {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= settings.schedules {
                    break;
                }
                if world.runs() >= SCHEDULES_PER_WORLD {
                    // Fresh databases now and then keep every query as fast
                    // as on the first schedule, and memory bounded.
                    world = World::new(registry.clone()).await?;
                }
                let spec = Spec::of(settings.first_seed.wrapping_add(k));
                let outcome = schedule::run(&mut world, &spec, settings.max_orders)
                    .await
                    .with_context(|| format!("schedule {spec}"))?;
                totals.schedules += 1;
                totals.orders += outcome.orders as u64;
                totals.steps += outcome.steps;
                totals.deliveries += outcome.deliveries;
                progress(done.fetch_add(1, Ordering::SeqCst) + 1);
                if outcome.failed() {
                    stop.store(true, Ordering::SeqCst);
                    failed = Some(outcome);
                    break;
                }
            }
            anyhow::Ok((totals, failed))
        }));
    }
    let mut summary = Summary::default();
    let mut first_failure: Option<Outcome> = None;
    for worker in workers {
        let (totals, failed) = worker.await.context("a simulation worker panicked")??;
        summary.schedules += totals.schedules;
        summary.orders += totals.orders;
        summary.steps += totals.steps;
        summary.deliveries += totals.deliveries;
        if let Some(outcome) = failed {
            if first_failure
                .as_ref()
                .is_none_or(|f| outcome.spec.seed < f.spec.seed)
            {
                first_failure = Some(outcome);
            }
        }
    }
    summary.elapsed = started.elapsed();
    if let Some(original) = first_failure {
        let shrunk = shrink::shrink(&registry, &original, settings.max_orders).await?;
        summary.failure = Some(Failure { original, shrunk });
    }
    Ok(summary)
}
