//! Shrinking a failing schedule: the fewest orders, faults and steps with
//! faults that still break one of the same invariants.
//!
//! Each candidate is a [`Spec`] run from scratch, so the result replays
//! deterministically from its token. The search is greedy: drop one order
//! at a time while it still fails (under a few salts each, since the same
//! stream makes other choices once an order is gone), then one kind of
//! fault at a time, then bisect the number of steps that may inject
//! faults, then try dropping orders once more.

use std::collections::BTreeSet;
use std::sync::Arc;

use choreo_testkit::service::TestRegistry;

use crate::scenario::Scenario;
use crate::schedule::{self, Outcome};
use crate::spec::Spec;
use crate::world::World;

/// Candidates tried at most.
const BUDGET: usize = 600;

/// Salts tried for each smaller set of orders.
const SALTS: u64 = 16;

struct Search<'a> {
    registry: &'a Arc<TestRegistry>,
    world: World,
    checks: BTreeSet<String>,
    max_orders: usize,
    tried: usize,
}

impl Search<'_> {
    /// Runs `spec`; the outcome when it fails one of the original checks.
    async fn fails(&mut self, spec: Spec) -> anyhow::Result<Option<Outcome>> {
        if self.tried >= BUDGET {
            return Ok(None);
        }
        self.tried += 1;
        let outcome = schedule::run(&mut self.world, &spec, self.max_orders).await?;
        if !outcome.failed() {
            return Ok(None);
        }
        // A failed schedule may leave orders open and rows unpublished.
        self.world = World::new(self.registry.clone()).await?;
        Ok((!outcome.checks().is_disjoint(&self.checks)).then_some(outcome))
    }

    async fn drop_orders(&mut self, best: &mut Outcome, all: usize) -> anyhow::Result<()> {
        loop {
            let current: BTreeSet<usize> = best
                .spec
                .orders
                .clone()
                .unwrap_or_else(|| (0..all).collect());
            let mut progressed = false;
            for order in &current {
                if current.len() == 1 {
                    break;
                }
                let mut fewer = current.clone();
                fewer.remove(order);
                let salts = std::iter::once(best.spec.salt)
                    .chain((1..=SALTS).filter(|s| *s != best.spec.salt));
                for salt in salts {
                    let candidate = Spec {
                        orders: Some(fewer.clone()),
                        salt,
                        ..best.spec.clone()
                    };
                    if let Some(outcome) = self.fails(candidate).await? {
                        *best = outcome;
                        progressed = true;
                        break;
                    }
                }
                if progressed {
                    break;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }
}

/// The smallest schedule found that fails like `failing`.
pub async fn shrink(
    registry: &Arc<TestRegistry>,
    failing: &Outcome,
    max_orders: usize,
) -> anyhow::Result<Outcome> {
    let mut search = Search {
        registry,
        world: World::new(registry.clone()).await?,
        checks: failing.checks(),
        max_orders,
        tried: 0,
    };
    let all = Scenario::draw(failing.spec.seed, max_orders).orders.len();
    let mut best = failing.clone();
    // Fix the drawn number of fault steps, so that bisecting it starts
    // from the very schedule that failed.
    best.spec.chaos = Some(best.chaos_limit);

    search.drop_orders(&mut best, all).await?;

    let mut progressed = true;
    while progressed {
        progressed = false;
        for faults in best.spec.faults.each_without_one() {
            let candidate = Spec {
                faults,
                ..best.spec.clone()
            };
            if let Some(outcome) = search.fails(candidate).await? {
                best = outcome;
                progressed = true;
                break;
            }
        }
    }

    // Bisect the steps with faults: the lowest that still fails, assuming
    // that fewer rarely fail where more do not.
    let (mut low, mut high) = (0, best.spec.chaos.unwrap_or(best.chaos_limit));
    while low < high {
        let mid = low + (high - low) / 2;
        let candidate = Spec {
            chaos: Some(mid),
            ..best.spec.clone()
        };
        match search.fails(candidate).await? {
            Some(outcome) => {
                best = outcome;
                high = mid;
            }
            None => low = mid + 1,
        }
    }

    search.drop_orders(&mut best, all).await?;
    Ok(best)
}
