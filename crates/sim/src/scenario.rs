//! What a schedule is about, drawn from its seed: SKUs and their stock,
//! customers with their balances and blocks, and the orders — lines,
//! destination, how each is placed, whether and how its customer cancels.
//! Drawn so that every outcome is common: short stock, an unserved
//! country, a blocked or poor customer, a cancel, a deadline.
//!
//! The scenario has its own random stream, separate from the schedule's,
//! so that leaving orders out while shrinking keeps every other order as
//! it was.

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The currency of every account and order.
pub const CURRENCY: &str = "EUR";

/// How an order reaches Order, and how its cancel does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `POST /orders` / `DELETE /orders/{id}`: the operation the HTTP
    /// handler runs, called directly.
    Http,
    /// A `PlaceOrder` / `CancelOrder` command on `order-requests`.
    Command,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub balance_minor: i64,
    pub blocked: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Index into [`Scenario::stock`].
    pub sku: usize,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOrder {
    /// Index into [`Scenario::customers`].
    pub customer: usize,
    pub lines: Vec<Line>,
    pub country: &'static str,
    pub via: Via,
    /// The client sends the same order twice (same idempotency key).
    pub placed_twice: bool,
    /// The customer cancels at a moment the schedule picks.
    pub cancel: Option<Via>,
}

impl PlannedOrder {
    pub fn total_minor(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| l.quantity * l.unit_price_minor)
            .sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Initial `available` per SKU.
    pub stock: Vec<i64>,
    pub customers: Vec<Customer>,
    pub orders: Vec<PlannedOrder>,
    /// Order's deadline for every order of the schedule.
    pub deadline_ms: i64,
    /// The countries courier serves in this schedule.
    pub served: Vec<&'static str>,
}

/// Countries orders go to.
const DESTINATIONS: &[&str] = &["DE", "FR", "US"];

/// The sets of countries courier may serve: mostly the two most orders go
/// to, sometimes one, sometimes all three.
const SERVED: &[&[&str]] = &[&["DE", "FR"], &["DE", "FR"], &["DE"], &["DE", "FR", "US"]];

impl Scenario {
    /// The scenario of `seed`, with 1 to `max_orders` orders.
    pub fn draw(seed: u64, max_orders: usize) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n_orders = rng.gen_range(1..=max_orders.max(1));
        let stock = (0..rng.gen_range(1..=3))
            .map(|_| rng.gen_range(0..=3 * n_orders as i64))
            .collect::<Vec<_>>();
        let customers = (0..rng.gen_range(1..=3))
            .map(|_| Customer {
                balance_minor: match rng.gen_range(0..4) {
                    0 => rng.gen_range(0..2_000),
                    1 => rng.gen_range(2_000..20_000),
                    _ => 1_000_000,
                },
                blocked: rng.gen_bool(0.1),
            })
            .collect::<Vec<_>>();
        let orders = (0..n_orders)
            .map(|_| PlannedOrder {
                customer: rng.gen_range(0..customers.len()),
                lines: (0..rng.gen_range(1..=2))
                    .map(|_| Line {
                        sku: rng.gen_range(0..stock.len()),
                        quantity: rng.gen_range(1..=3),
                        unit_price_minor: rng.gen_range(1..=20) * 100,
                    })
                    .collect(),
                country: DESTINATIONS[rng.gen_range(0..DESTINATIONS.len())],
                via: if rng.gen_bool(0.6) {
                    Via::Http
                } else {
                    Via::Command
                },
                placed_twice: rng.gen_bool(0.1),
                cancel: match rng.gen_range(0..10) {
                    0 => Some(Via::Http),
                    1 => Some(Via::Command),
                    _ => None,
                },
            })
            .collect();
        Scenario {
            stock,
            customers,
            orders,
            deadline_ms: [2_000, 5_000, 20_000][rng.gen_range(0..3)],
            served: SERVED[rng.gen_range(0..SERVED.len())].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_one_scenario() {
        assert_eq!(Scenario::draw(7, 20), Scenario::draw(7, 20));
        assert_ne!(Scenario::draw(7, 20), Scenario::draw(8, 20));
    }

    #[test]
    fn every_outcome_is_drawn_often() {
        let scenarios: Vec<_> = (0..200).map(|s| Scenario::draw(s, 20)).collect();
        let orders = || scenarios.iter().flat_map(|s| &s.orders);
        let share = |n: usize| n as f64 / orders().count() as f64;
        let unserved = scenarios
            .iter()
            .flat_map(|s| s.orders.iter().filter(|o| !s.served.contains(&o.country)))
            .count();
        let cancelled = orders().filter(|o| o.cancel.is_some()).count();
        let commands = orders().filter(|o| o.via == Via::Command).count();
        assert!(share(unserved) > 0.1, "unserved {}", share(unserved));
        assert!(share(cancelled) > 0.1, "cancelled {}", share(cancelled));
        assert!(share(commands) > 0.2, "commands {}", share(commands));
        let blocked = scenarios
            .iter()
            .flat_map(|s| &s.customers)
            .filter(|c| c.blocked)
            .count();
        assert!(blocked > 10, "blocked customers {blocked}");
        let counts: Vec<_> = scenarios.iter().map(|s| s.orders.len()).collect();
        assert!(counts.contains(&1) && counts.contains(&20));
    }
}
