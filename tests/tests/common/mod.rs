//! Shared by several end-to-end suites (each includes it with `mod common;`).

use choreo_cli::reconcile::{self, Endpoints, Reconciler};
use choreo_cli::Connection;
use choreo_testkit::{repo_root, TestStack};

/// `choreo reconcile`'s checker for a test stack: its broker, registry and
/// services, the seed stock and balances, Communication's mail folder.
/// Callers add `expect_dlq` and run it.
pub fn reconciler(stack: &TestStack) -> anyhow::Result<Reconciler> {
    let seeds = repo_root().join("deploy/seed");
    Ok(Reconciler::new(
        Connection::new(stack.brokers(), stack.registry_url()),
        Endpoints {
            order: stack.service_url("order"),
            inventory: stack.service_url("inventory"),
            payment: stack.service_url("payment"),
            courier: stack.service_url("courier"),
            communication: stack.service_url("communication"),
        },
    )
    .initial_stock(reconcile::load_stock(&seeds.join("stock.json"))?)
    .initial_balances(reconcile::load_balances(&seeds.join("accounts.json"))?)
    .mail_dir(stack.service_data_dir("communication").join("mail")))
}
