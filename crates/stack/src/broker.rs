//! The tansu broker child and its liveness watchdog.
//!
//! tansu 0.6.0's SQLite engine serves every storage request from one task
//! fed by a channel. When a request's caller goes away before its answer
//! is sent (a client connection dropped mid-request, as happens while
//! clients reconnect after a restart), that task ends with `UnableToSend`;
//! from then on every storage request fails, `update_group` panics
//! (`unreachable!()` in tansu-storage's service.rs), and the process stays
//! up answering nothing useful. No Kafka client can recover from that, so
//! the stack runner does what a process supervisor's liveness probe does:
//! it asks the broker for metadata every second, and after
//! [`FAILURES_BEFORE_RESTART`] failed probes in a row it restarts the
//! broker on the same port and storage. Nothing is lost: records and
//! committed offsets are in the SQLite file, the outbox relays retry, and
//! consumers resume from their committed offsets.
//!
//! What makes that happen after a broker restart is the idempotent
//! producer: librdkafka bumps an idempotent producer's epoch itself after
//! requests fail (as they do while the broker is down), and tansu 0.6.0's
//! SQLite engine panics ("more or less than one row", lite.rs) on a produce
//! from a (producer id, epoch) it has no row for, which kills that same
//! task. So services talking to a SQLite-backed tansu produce without
//! idempotence and with one request in flight per connection
//! ([`SQLITE_PRODUCER_SETTINGS`]), which keeps per-key order; a retried
//! batch can then be written twice, which the consumers' inbox already
//! absorbs (every handler is idempotent). Against Kafka (docker compose)
//! and the in-memory broker, producers stay idempotent.
//!
//! The same watchdog restarts a broker process that exited on its own.
//! It runs for SQLite storage only: `memory://` storage loses everything on
//! a restart, so restarting it would hide a loss instead of preventing one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::LogSink;
use crate::process::Child;
use crate::{wait_tcp, Error, Result};

/// Producer settings for services on a SQLite-backed tansu (see above), as
/// `choreo_bus` environment overrides.
pub const SQLITE_PRODUCER_SETTINGS: &[(&str, &str)] = &[
    ("CHOREO_KAFKA_PRODUCER_ENABLE_IDEMPOTENCE", "false"),
    ("CHOREO_KAFKA_PRODUCER_MAX_IN_FLIGHT", "1"),
];

/// Time between liveness probes.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long one metadata request may take before the probe counts as failed.
/// A dead storage task fails a probe at once (the broker drops the
/// connection); the timeout only has to tell a busy broker from a stuck one,
/// so it is generous: a broker saturated by load answered within 4 s here
/// but not always, and restarting a busy broker only makes it busier.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Consecutive failed probes that make the watchdog restart the broker.
pub const FAILURES_BEFORE_RESTART: u32 = 3;
/// How long a (re)started broker has to answer metadata.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How to start the broker: everything [`Broker::start`] and the watchdog
/// need to (re)spawn it identically.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    pub tansu: PathBuf,
    /// The broker's working directory (its SQLite file lives here).
    pub dir: PathBuf,
    pub port: u16,
    /// `memory://…` or `sqlite://…`.
    pub storage: String,
    pub log: LogSink,
    /// The stack's data folder (log files go to `<data_dir>/logs`).
    pub data_dir: PathBuf,
}

impl BrokerSpec {
    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&self) -> Result<Child> {
        if !self.tansu.exists() {
            return Err(Error::MissingBinary(self.tansu.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::Io {
            what: format!("creating {}", self.dir.display()),
            source: e,
        })?;
        let url = format!("tcp://{}", self.brokers());
        let mut cmd = tokio::process::Command::new(&self.tansu);
        cmd.current_dir(&self.dir);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            &self.storage,
        ])
        .env(
            "RUST_LOG",
            std::env::var("CHOREO_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
        );
        Child::spawn("broker", cmd, &self.log, &self.data_dir)
    }

    /// Waits until the broker accepts connections and answers metadata.
    async fn wait_ready(&self, child: &mut Child) -> Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_tcp("broker", addr, Instant::now() + READY_WITHIN, Some(child)).await?;
        // A port that accepts is not yet a broker that answers metadata.
        probe(&self.brokers(), READY_WITHIN).await
    }

    fn watched(&self) -> bool {
        self.storage.starts_with("sqlite:")
    }
}

/// One metadata round trip through a fresh client (a cached connection
/// could hide a broker that stopped accepting new ones).
async fn probe(brokers: &str, timeout: Duration) -> Result<()> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("log_level", "0")
            .create()?;
        consumer.fetch_metadata(None, timeout)?;
        Ok::<_, rdkafka::error::KafkaError>(())
    })
    .await
    .map_err(|e| Error::Exited("broker probe".into(), e.to_string()))?
    .map_err(Error::from)
}

/// The running broker, and for SQLite storage its watchdog.
#[derive(Debug)]
pub struct Broker {
    child: Arc<Mutex<Option<Child>>>,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
    watchdog: Option<JoinHandle<()>>,
}

impl Broker {
    /// Spawns the broker, waits until it answers metadata, and starts the
    /// watchdog.
    pub async fn start(spec: BrokerSpec, restarts: Arc<AtomicU32>) -> Result<Broker> {
        let mut child = spec.spawn()?;
        spec.wait_ready(&mut child).await?;
        info!(brokers = %spec.brokers(), "broker ready");
        let pid = Arc::new(AtomicU32::new(child.pid().unwrap_or(0)));
        let child = Arc::new(Mutex::new(Some(child)));
        let spec = Arc::new(spec);
        let watchdog = spec.watched().then(|| {
            tokio::spawn(watch(
                spec.clone(),
                child.clone(),
                pid.clone(),
                restarts.clone(),
            ))
        });
        Ok(Broker {
            child,
            pid,
            restarts,
            watchdog,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Acquire)).filter(|p| *p != 0)
    }

    /// Restarts the watchdog has made since the stack started.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Acquire)
    }

    /// Stops the watchdog, then the broker (SIGTERM, then SIGKILL).
    pub async fn stop(mut self, grace: Duration) {
        if let Some(w) = self.watchdog.take() {
            // Aborting is safe at any await point: a child is either in the
            // slot or dropped, and dropping kills it.
            w.abort();
            let _ = w.await;
        }
        if let Some(child) = self.child.lock().await.take() {
            child.stop(grace).await;
        }
    }
}

async fn watch(
    spec: Arc<BrokerSpec>,
    slot: Arc<Mutex<Option<Child>>>,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
) {
    let brokers = spec.brokers();
    let mut failures = 0u32;
    let mut backoff = PROBE_EVERY;
    loop {
        tokio::time::sleep(backoff).await;
        let exited = slot
            .lock()
            .await
            .as_mut()
            .and_then(Child::exited)
            .map(|s| s.to_string());
        let reason = match exited {
            Some(status) => format!("the broker exited ({status})"),
            None => match probe(&brokers, PROBE_TIMEOUT).await {
                Ok(()) => {
                    failures = 0;
                    backoff = PROBE_EVERY;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    warn!(failures, error = %e, "broker liveness probe failed");
                    if failures < FAILURES_BEFORE_RESTART {
                        continue;
                    }
                    format!("{failures} liveness probes failed in a row")
                }
            },
        };
        failures = 0;
        let n = restarts.fetch_add(1, Ordering::AcqRel) + 1;
        warn!(restart = n, %reason, "restarting the broker");
        let mut guard = slot.lock().await;
        if let Some(mut old) = guard.take() {
            old.terminate(Duration::from_secs(2)).await;
        }
        pid.store(0, Ordering::Release);
        match spec.spawn() {
            Ok(child) => {
                pid.store(child.pid().unwrap_or(0), Ordering::Release);
                *guard = Some(child);
            }
            Err(e) => {
                error!(error = %e, "could not restart the broker");
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        let ready = match guard.as_mut() {
            Some(child) => spec.wait_ready(child).await,
            None => continue,
        };
        drop(guard);
        match ready {
            Ok(()) => {
                info!(restart = n, "broker restarted and answering");
                backoff = PROBE_EVERY;
            }
            Err(e) => {
                error!(error = %e, "restarted broker is not answering");
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
