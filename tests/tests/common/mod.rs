//! Shared by several end-to-end suites (each includes it with `mod common;`
//! and uses part of it).
#![allow(dead_code)]

use choreo_cli::reconcile::{self, Endpoints, Reconciler};
use choreo_cli::Connection;
use choreo_testkit::{repo_root, TestStack};

/// The HTTP endpoints of a test stack's five services.
pub fn endpoints(stack: &TestStack) -> Endpoints {
    Endpoints {
        order: stack.service_url("order"),
        inventory: stack.service_url("inventory"),
        payment: stack.service_url("payment"),
        courier: stack.service_url("courier"),
        communication: stack.service_url("communication"),
    }
}

/// `choreo reconcile`'s checker for a test stack: its broker, registry and
/// services, the seed stock and balances, Communication's mail folder.
/// Callers add `expect_dlq` and run it.
pub fn reconciler(stack: &TestStack) -> anyhow::Result<Reconciler> {
    let seeds = repo_root().join("deploy/seed");
    Ok(Reconciler::new(
        Connection::new(stack.brokers(), stack.registry_url()),
        endpoints(stack),
    )
    .initial_stock(reconcile::load_stock(&seeds.join("stock.json"))?)
    .initial_balances(reconcile::load_balances(&seeds.join("accounts.json"))?)
    .mail_dir(stack.service_data_dir("communication").join("mail")))
}

/// Runs the checker until it settles (at most 120 s) and fails the test
/// with every violation, and every dead letter, when any violation is left;
/// `dead_letters` is the number of dead letters the test itself caused.
pub async fn assert_reconciled(
    stack: &TestStack,
    dead_letters: usize,
) -> anyhow::Result<reconcile::Report> {
    let report = reconciler(stack)?
        .expect_dlq(dead_letters)
        .run_settled(
            std::time::Duration::from_secs(120),
            &mut choreo_cli::output::Progress::hidden(),
        )
        .await?;
    if !report.is_clean() {
        let letters = choreo_cli::dlq::list(
            &Connection::new(stack.brokers(), stack.registry_url()),
            None,
            &mut choreo_cli::output::Progress::hidden(),
        )
        .await?;
        let letters: Vec<String> = letters
            .iter()
            .map(|l| format!("{} {}: {}", l.record.position(), l.source(), l.reason))
            .collect();
        anyhow::bail!(
            "choreo reconcile: {} violations over {} orders:\n{:#?}\nall {} dead letters:\n{}",
            report.violations.len(),
            report.orders,
            report.violations,
            letters.len(),
            letters.join("\n")
        );
    }
    Ok(report)
}
