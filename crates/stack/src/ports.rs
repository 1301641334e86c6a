//! Is a port free, and if not, who holds it.
//!
//! `choreo up` checks every port of its stack before it starts anything: a
//! second stack beside a running one would otherwise find the first one's
//! broker and services answering on its ports and report itself ready. The
//! holder is read from `/proc` (the listening socket's inode, then the
//! process whose file descriptors include it), as `ss -ltnp` does; where
//! `/proc` cannot tell (another user's process), the message says so.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// A port that could not be bound, with what holds it when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub what: &'static str,
    pub port: u16,
    pub holder: Option<String>,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {} ({}) is in use", self.port, self.what)?;
        match &self.holder {
            Some(h) => write!(f, " by {h}"),
            None => write!(f, " by a process this user cannot see"),
        }
    }
}

/// The first of `ports` that 127.0.0.1 cannot bind.
pub fn first_taken(ports: &[(&'static str, u16)]) -> Option<Taken> {
    ports.iter().find_map(|&(what, port)| {
        // SO_REUSEADDR (std sets it on Unix) lets a port in TIME_WAIT bind,
        // so only a live listener or bound socket counts as taken.
        match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => None,
            Err(_) => Some(Taken {
                what,
                port,
                holder: holder(port),
            }),
        }
    })
}

/// Ports for stacks that run side by side (tests, benchmarks), taken below
/// the kernel's ephemeral range. A port the OS hands out for `bind(0)` is
/// free only until an outgoing connection takes it as its local port —
/// with dozens of Kafka clients connecting, one soon does, and a broker
/// started on it fails with "Address already in use". Ports below the
/// ephemeral range are never handed to connections; this process never
/// hands out the same one twice; and each candidate is bound once before
/// it is returned, so a port another process listens on is skipped.
pub fn allocate(count: usize) -> std::io::Result<Vec<u16>> {
    use std::sync::atomic::AtomicU32;
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let (low, high) = allocation_range();
    let span = u32::from(high - low);
    // Processes start at different places in the range, so two test
    // binaries or a test and a bench rarely probe the same ports.
    let next =
        NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(2_654_435_761) % span));
    take(next, low, high, count)
}

/// `count` ports of `[low, high)` that bind now, from `next` on.
fn take(
    next: &std::sync::atomic::AtomicU32,
    low: u16,
    high: u16,
    count: usize,
) -> std::io::Result<Vec<u16>> {
    let span = u32::from(high - low);
    let mut held = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..span {
        if ports.len() == count {
            break;
        }
        let port = low + (next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span) as u16;
        if let Ok(l) = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            held.push(l);
            ports.push(port);
        }
    }
    if ports.len() < count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no {count} free ports between {low} and {high}"),
        ));
    }
    Ok(ports)
}

/// `[low, high)` for [`allocate`]: below the ephemeral range when there is
/// room (Linux's default starts at 32768), above it otherwise. Replica `i`
/// listens on a port + 100·i, so the range ends 1,000 below where it must.
fn allocation_range() -> (u16, u16) {
    let (eph_low, eph_high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or((32768, 60999));
    if eph_low >= 12_000 {
        (10_000, eph_low - 1_000)
    } else {
        (eph_high.saturating_add(1).max(eph_low), 64_000)
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// `name (pid N)` of the process listening on `port`, from `/proc`.
pub fn holder(port: u16) -> Option<String> {
    let pid = holder_pid(port)?;
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    Some(format!("{name} (pid {pid})"))
}

/// The pid of the process listening on `port`, from `/proc`.
pub fn holder_pid(port: u16) -> Option<u32> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// Inodes of sockets in a `/proc/net/tcp` table bound to `port` in LISTEN
/// state (`0A`).
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local = cols.get(1)?;
            let state = cols.get(3)?;
            let inode = cols.get(9)?.parse::<u64>().ok()?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let p = u16::from_str_radix(hex_port, 16).ok()?;
            (p == port && *state == "0A").then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_ports_are_distinct_outside_the_ephemeral_range_and_bindable() {
        let (eph_low, eph_high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| parse_port_range(&s))
            .unwrap();
        let a = allocate(8).unwrap();
        let b = allocate(8).unwrap();
        let all: std::collections::BTreeSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 16, "{a:?} {b:?}");
        for p in all {
            assert!(p < eph_low || p > eph_high, "{p} in {eph_low}..={eph_high}");
            TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }

    #[test]
    fn a_listening_port_is_skipped() {
        // Three ports in a row of the range, the middle one held.
        let (low, high) = allocation_range();
        let (start, held) = (low..high - 3)
            .find_map(|p| {
                let bind = |q| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, q)).ok();
                let (a, b, c) = (bind(p)?, bind(p + 1)?, bind(p + 2)?);
                drop((a, c));
                Some((p, b))
            })
            .unwrap();
        let next = std::sync::atomic::AtomicU32::new(u32::from(start - low));
        let ports = take(&next, low, high, 2).unwrap();
        assert_eq!(ports, vec![start, start + 2]);
        drop(held);
    }

    #[test]
    fn reads_the_kernels_port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("garbage"), None);
    }

    #[test]
    fn reads_listening_sockets_from_a_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:2384 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n\
           1: 0100007F:2384 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n";
        assert_eq!(listening_inodes(table, 9092), vec![4242]);
        assert!(listening_inodes(table, 9093).is_empty());
    }

    #[test]
    fn a_held_port_is_reported_with_its_holder() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let taken = first_taken(&[("broker", port)]).expect("the port is held");
        assert_eq!(taken.port, port);
        let holder = taken.holder.expect("our own process is visible");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(held);
        assert_eq!(first_taken(&[("broker", port)]), None);
    }
}
