//! The simulation's own promises: a schedule replays step for step, and a
//! broken promise is found, shrunk and replayed from its token.

use choreo_sim::{schedule, Spec, World};

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
