//! The simulation at length: `make simulate`.
//!
//! Runs `CHOREO_SIM_SCHEDULES` schedules (default 100,000 here) from
//! `CHOREO_SIM_FIRST_SEED` (default: drawn, and printed), showing progress;
//! or, with `CHOREO_SIM_SEED=<token>`, replays that one schedule and prints
//! its steps. Exits 1 when an invariant broke, after printing the shrunk
//! schedule and the token that replays it.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    if let Some(spec) = choreo_sim::replay_from_env()? {
        let max_orders = choreo_sim::Settings::from_env()?.max_orders;
        let (outcome, failure) = choreo_sim::replay(&spec, max_orders).await?;
        print!("{outcome}");
        for (i, line) in outcome.log.iter().enumerate() {
            println!("  {:>4}  {line}", i + 1);
        }
        return Ok(match failure {
            Some(failure) => {
                println!("{failure}");
                ExitCode::FAILURE
            }
            None => {
                println!("every invariant held");
                ExitCode::SUCCESS
            }
        });
    }
    let mut settings = choreo_sim::Settings::from_env()?;
    if std::env::var_os("CHOREO_SIM_SCHEDULES").is_none() {
        settings.schedules = 100_000;
    }
    if std::env::var_os("CHOREO_SIM_FIRST_SEED").is_none() {
        settings.first_seed = rand::random::<u32>().into();
    }
    println!(
        "simulating {} schedules of 1 to {} orders from seed {} on {} workers \
         (CHOREO_SIM_FIRST_SEED={} repeats this run)",
        settings.schedules,
        settings.max_orders,
        settings.first_seed,
        settings.workers,
        settings.first_seed
    );
    let started = Instant::now();
    let total = settings.schedules;
    let shown = Arc::new(AtomicU64::new(0));
    let summary = choreo_sim::simulate(&settings, move |done| {
        let second = started.elapsed().as_secs();
        if done == total || shown.swap(second, Ordering::SeqCst) < second {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            print!("\r{done}/{total} schedules, {rate:.0}/s   ");
            let _ = std::io::stdout().flush();
        }
    })
    .await
    .context("simulating")?;
    println!("\n{summary}");
    Ok(if summary.failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
