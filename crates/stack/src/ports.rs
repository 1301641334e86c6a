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
