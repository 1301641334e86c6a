//! CPU and peak RSS of every stack process and of the load generator,
//! sampled from /proc.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This process in the per-process table: it drives and tracks the load.
pub(super) const LOAD_GENERATOR: &str = "bench (load generator)";

pub(super) struct ProcStats {
    pub(super) name: String,
    pub(super) pid: u32,
    pub(super) cpu_percent: f64,
    /// CPU time (user + system) used while the benchmark ran.
    pub(super) cpu_seconds: f64,
    pub(super) peak_rss_mib: f64,
}

/// Samples CPU time and resident memory of the stack's processes from
/// /proc once a second while the benchmark runs.
pub(super) struct ProcSampler {
    pub(super) stop: Arc<std::sync::atomic::AtomicBool>,
    pub(super) handle: std::thread::JoinHandle<Vec<ProcStats>>,
}

impl ProcSampler {
    pub(super) fn start(processes: Vec<(String, u32)>) -> ProcSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let first: Vec<(u32, String)> = processes.into_iter().map(|(n, p)| (p, n)).collect();
            let cpu0: HashMap<u32, u64> = first
                .iter()
                .map(|(pid, _)| (*pid, cpu_ticks(*pid)))
                .collect();
            let mut peak: HashMap<u32, u64> = HashMap::new();
            while !s.load(Ordering::Relaxed) {
                for (pid, _) in &first {
                    let rss = rss_kib(*pid);
                    let e = peak.entry(*pid).or_default();
                    *e = (*e).max(rss);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            let wall = started.elapsed().as_secs_f64();
            // Linux reports CPU time in clock ticks of 100 Hz (USER_HZ).
            first
                .into_iter()
                .map(|(pid, name)| {
                    let cpu_seconds = cpu_ticks(pid).saturating_sub(cpu0[&pid]) as f64 / 100.0;
                    ProcStats {
                        cpu_percent: cpu_seconds / wall * 100.0,
                        cpu_seconds,
                        peak_rss_mib: peak.get(&pid).copied().unwrap_or_default() as f64 / 1024.0,
                        name,
                        pid,
                    }
                })
                .collect()
        });
        ProcSampler { stop, handle }
    }

    pub(super) fn finish(self) -> Vec<ProcStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// (pid, name) of the Kafka broker (`kafka`), choreo-registry and
/// choreo-<service> processes.
pub(super) fn stack_processes() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let arg0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(arg0);
        let base = name.rsplit('/').next().unwrap_or_default().to_owned();
        let is_kafka =
            base == "java" && cmdline.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka");
        if is_kafka {
            out.push((pid, "kafka".to_owned()));
        } else if base.starts_with("choreo-") && base != "choreo-bench" {
            out.push((pid, base));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

pub(super) fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

pub(super) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
