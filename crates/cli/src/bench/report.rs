//! The human-readable report of one run (the JSON is the run itself).

use std::io::Write;

use serde_json::Value;

pub(super) fn print_report(out: &mut impl Write, r: &Value) -> anyhow::Result<()> {
    let l = &r["latency_ms"];
    let n = &r["notified_latency_ms"];
    writeln!(out)?;
    writeln!(
        out,
        "choreo bench — {} loop via {}, fail share {}",
        r["mode"].as_str().unwrap_or(""),
        r["via"].as_str().unwrap_or(""),
        r["fail_share"]
    )?;
    writeln!(
        out,
        "  placed {}  completed {} (confirmed {}, cancelled {})  unfinished {}",
        r["placed"], r["completed"], r["confirmed"], r["cancelled"], r["unfinished"]
    )?;
    let ceiling = match r["bus_ceiling_sagas_per_second"].as_f64() {
        Some(c) => format!(
            "bus allows {c} sagas/s: {} msgs/s ÷ {} deliveries",
            r["bus_ceiling_messages_per_second"], r["deliveries_per_saga"]
        ),
        None => "bus ceiling not measured".to_owned(),
    };
    writeln!(
        out,
        "  throughput            {} sagas/s   ({ceiling})",
        r["sagas_per_second"]
    )?;
    writeln!(
        out,
        "  placed → terminal     p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
        l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
    )?;
    writeln!(
        out,
        "  placed → notified     p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
        n["p50"], n["p90"], n["p99"], n["p999"], n["max"]
    )?;
    writeln!(out, "  consumer lag at end   {}", r["consumer_lag"])?;
    writeln!(
        out,
        "  {:<24} {:>8} {:>14} {:>10}",
        "process", "cpu %", "cpu ms/saga", "peak MiB"
    )?;
    for p in r["processes"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<24} {:>8.1} {:>14.2} {:>10.1}",
            p["name"].as_str().unwrap_or(""),
            p["cpu_percent"].as_f64().unwrap_or_default(),
            p["cpu_ms_per_saga"].as_f64().unwrap_or_default(),
            p["peak_rss_mib"].as_f64().unwrap_or_default()
        )?;
    }
    if let Some(bound) = r["cpu_bound_sagas_per_second"].as_f64() {
        writeln!(
            out,
            "  the stack used {} ms of CPU per saga: {} cores allow at most {bound} sagas/s",
            r["stack_cpu_ms_per_saga"], r["cores"]
        )?;
    }
    Ok(())
}
