//! The simulation as `make test` runs it: 2,000 seeded schedules through
//! the five services' real code (see the crate docs), a replay of one
//! schedule being exactly the same twice, and proof that a broken promise
//! is found and shrunk.
//!
//! `CHOREO_SIM_SEED=<token>` replays one schedule instead of the 2,000;
//! `CHOREO_SIM_SCHEDULES`, `CHOREO_SIM_FIRST_SEED` change the run.

use choreo_sim::{schedule, Settings, Spec, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invariant_holds_over_two_thousand_schedules() {
    if let Some(spec) = choreo_sim::replay_from_env().unwrap() {
        let (outcome, failure) =
            choreo_sim::replay(&spec, Settings::from_env().unwrap().max_orders)
                .await
                .unwrap();
        for (i, line) in outcome.log.iter().enumerate() {
            println!("  {:>4}  {line}", i + 1);
        }
        assert!(failure.is_none(), "{}", failure.unwrap());
        return;
    }
    let settings = Settings::from_env().unwrap();
    let summary = choreo_sim::simulate(&settings, |_| {}).await.unwrap();
    assert!(summary.failure.is_none(), "{summary}");
    println!("{summary}");
    assert_eq!(summary.schedules, settings.schedules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_replays_step_for_step() {
    let registry = choreo_sim::registry().await;
    let mut first = World::new(registry.clone()).await.unwrap();
    let mut second = World::new(registry).await.unwrap();
    // The second world has run other schedules before: that must not matter.
    for seed in 100..103 {
        schedule::run(&mut second, &Spec::of(seed), 20)
            .await
            .unwrap();
    }
    for seed in [7, 4242] {
        let a = schedule::run(&mut first, &Spec::of(seed), 20)
            .await
            .unwrap();
        let b = schedule::run(&mut second, &Spec::of(seed), 20)
            .await
            .unwrap();
        assert!(a.log.len() > 10, "{}", a.log.join("\n"));
        assert_eq!(a.log, b.log);
        assert_eq!(a.violations, b.violations);
    }
}

/// The simulation must be able to fail: with messages lost (a fault Kafka
/// does not have, never on by default) it reports broken invariants,
/// shrinks the schedule to a handful of orders, and the shrunk token
/// replays the same failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_message_is_found_and_shrunk() {
    let registry = choreo_sim::registry().await;
    let mut world = World::new(registry.clone()).await.unwrap();
    let mut failing = None;
    for seed in 1..200 {
        let spec: Spec = format!("{seed}:faults=dup,rewind,crash,relay,time,lose")
            .parse()
            .unwrap();
        let outcome = schedule::run(&mut world, &spec, 20).await.unwrap();
        if outcome.failed() {
            failing = Some(outcome);
            break;
        }
    }
    let failing = failing.expect("losing messages broke no invariant in 200 schedules");
    let shrunk = choreo_sim::shrink::shrink(&registry, &failing, 20)
        .await
        .unwrap();
    assert!(shrunk.failed());
    assert!(
        shrunk.orders <= failing.orders && shrunk.orders <= 2,
        "{shrunk}"
    );
    assert!(
        shrunk.log.iter().any(|l| l.contains("(LOST)")),
        "{}",
        shrunk.log.join("\n")
    );
    let token = shrunk.spec.to_string();
    let again = schedule::run(
        &mut World::new(registry).await.unwrap(),
        &token.parse().unwrap(),
        20,
    )
    .await
    .unwrap();
    assert_eq!(again.violations, shrunk.violations, "{token}");
    println!("{failing}shrunk to {shrunk}{}", shrunk.log.join("\n"));
}
