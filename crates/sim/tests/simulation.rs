//! The simulation as `make test` runs it: 2,000 seeded schedules through
//! the five services' real code (see the crate docs), alone in its test
//! binary so that it has both cores (tests/replay.rs holds the others).
//!
//! `CHOREO_SIM_SEED=<token>` replays one schedule instead of the 2,000;
//! `CHOREO_SIM_SCHEDULES`, `CHOREO_SIM_FIRST_SEED` change the run.

use choreo_sim::Settings;

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
