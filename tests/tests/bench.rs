//! `choreo bench` as a person runs it: a short open-loop run on its own
//! stack with a fifth of the orders compensating. Nothing here times
//! anything: the report must account for every order it measured, split
//! them into both outcomes, and carry the broker's ceiling and every
//! process it sampled.

use std::time::Duration;

use choreo_testkit::bin_dir;
use serde_json::Value;

#[tokio::test]
async fn a_short_bench_accounts_for_every_order_and_reports_the_ceiling() -> anyhow::Result<()> {
    let (rate, duration, warmup) = (20.0, 5.0, 1.0);
    let run = tokio::process::Command::new(bin_dir().join("choreo"))
        .args([
            "--json",
            "bench",
            "--rate",
            "20",
            "--duration",
            "5s",
            "--warmup",
            "1s",
        ])
        .args(["--fail-share", "0.2", "--ceiling-messages", "2000"])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "choreo bench failed ({}):\n{stderr}",
        out.status
    );
    let r: Value = serde_json::from_slice(&out.stdout)?;
    let n = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };

    assert_eq!(r["mode"], "open");
    assert_eq!(
        n("unfinished"),
        0.0,
        "every measured order reached an outcome: {r}"
    );
    assert_eq!(n("confirmed") + n("cancelled"), n("completed"), "{r}");
    // Offered 20/s for the 4 s after warm-up; a loaded machine may place a
    // few late, never most.
    assert!(n("completed") >= 0.7 * rate * (duration - warmup), "{r}");
    assert!(n("placed") >= n("completed"), "{r}");
    let cancelled_share = n("cancelled") / n("completed");
    assert!(
        (0.1..=0.3).contains(&cancelled_share),
        "a fifth should compensate: {r}"
    );
    assert_eq!(
        r["latency_ms"]["count"].as_f64(),
        Some(n("completed")),
        "{r}"
    );
    assert!(
        r["latency_ms"]["p50"].as_f64().is_some_and(|p| p > 0.0),
        "{r}"
    );
    assert!(n("bus_ceiling_messages_per_second") > 0.0, "{r}");
    assert_eq!(
        r["deliveries_per_saga"].as_u64(),
        Some(choreo_events::saga::deliveries_per_saga()),
        "{r}"
    );
    let processes = r["processes"].as_array().expect("processes");
    for name in [
        "broker",
        "registry",
        "order",
        "inventory",
        "payment",
        "courier",
        "communication",
    ] {
        let p = processes
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not sampled: {r}"));
        assert!(
            p["peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0),
            "{name}: {p}"
        );
    }
    Ok(())
}
