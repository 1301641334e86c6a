//! Test kit for choreo's end-to-end tests.
//!
//! Each test starts its own stack — a real Apache Kafka broker, `choreo-registry`
//! and the service binaries as child processes — on free ports with a fresh
//! data folder, and waits on observable state (topics, HTTP answers, files)
//! with a deadline, never on a sleep. When a test panics, the tail of every
//! process's log is printed so the failure explains itself.
//!
//! # Layout
//!
//! - [`TestStack`]: a stack for one test, cleaned up on drop.
//! - [`api`]: typed calls to the services' HTTP APIs.
//! - [`load`]: many orders with data-driven outcomes.
//! - [`topics`]: read and decode what is on a topic.
//! - [`service`]: helpers for a single service's integration tests.
//! - [`eventually`]: poll an async predicate until it holds or time runs out.

pub mod api;
pub mod load;
pub mod service;
pub mod topics;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use choreo_stack::{LogSink, Ports, Stack, StackConfig};

/// Where cargo put the workspace's binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries one folder up.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_owned()
    } else {
        deps.to_owned()
    }
}

/// The repository root (for seed files and scripts).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The Mailpit version: the one `deploy/docker-compose.yml` runs, which
/// `make tools` builds too.
pub fn mailpit_version() -> String {
    let compose = std::fs::read_to_string(repo_root().join("deploy/docker-compose.yml"))
        .expect("deploy/docker-compose.yml");
    compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: axllent/mailpit:"))
        .expect("compose runs axllent/mailpit:<version>")
        .trim()
        .to_owned()
}

/// The Mailpit binary `make tools` builds into the tools cache, or
/// `$CHOREO_MAILPIT`.
pub fn mailpit() -> PathBuf {
    std::env::var_os("CHOREO_MAILPIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            choreo_stack::config::tools_dir()
                .join(format!("mailpit-{}", mailpit_version()))
                .join("mailpit")
        })
}

/// Debian's `kcat` (installed by `make tools`), or `$CHOREO_KCAT`.
pub fn kcat() -> PathBuf {
    std::env::var_os("CHOREO_KCAT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kcat"))
}

/// Order's deadline in a test stack whose test does not set one.
pub const TEST_DEADLINE_MS: &str = "120000";

#[derive(Debug, Default)]
pub struct TestStackBuilder {
    services: Vec<String>,
    database_urls: BTreeMap<String, String>,
    service_env: BTreeMap<String, Vec<(String, String)>>,
    common_env: Vec<(String, String)>,
    apicurio: bool,
    open_writes: bool,
}

impl TestStackBuilder {
    /// Run Apicurio Registry (in memory, `make tools` fetches it) instead
    /// of `choreo-registry`; every service and client is pointed at its
    /// Confluent-compatible API.
    pub fn apicurio(mut self) -> Self {
        self.apicurio = true;
        self
    }

    /// Run without an admin token: every write open, as on a registry that
    /// has no authentication of its own (Confluent's under compose).
    pub fn without_admin_token(mut self) -> Self {
        self.open_writes = true;
        self
    }

    /// Start these services (default: none — broker and registry only).
    pub fn services(mut self, names: &[&str]) -> Self {
        self.services = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn all_services(self) -> Self {
        self.services(&choreo_events::SERVICES)
    }

    pub fn database_url(mut self, service: &str, url: impl Into<String>) -> Self {
        self.database_urls.insert(service.to_owned(), url.into());
        self
    }

    pub fn env(mut self, service: &str, key: &str, value: impl Into<String>) -> Self {
        self.service_env
            .entry(service.to_owned())
            .or_default()
            .push((key.to_owned(), value.into()));
        self
    }

    pub fn common_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.common_env.push((key.to_owned(), value.into()));
        self
    }

    /// Starts the stack on free ports in a fresh folder. Ports are free
    /// when chosen but another test's stack can bind one before this
    /// stack's child does; the stack then refuses to start
    /// ([`choreo_stack::Error::PortInUse`] or `PortStolen`) and this tries
    /// again on other ports, a few times.
    pub async fn start(self) -> anyhow::Result<TestStack> {
        choreo_telemetry::init("choreo-tests", "warn", false)?;
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let dir = tempfile::Builder::new().prefix("choreo-e2e-").tempdir()?;
            let config = self.config(dir.path(), Ports::free()?);
            let logs = dir.path().join("logs");
            match Stack::start(config).await {
                Ok(stack) => {
                    return Ok(TestStack {
                        stack: Some(stack),
                        dir,
                    })
                }
                Err(
                    e
                    @ (choreo_stack::Error::PortInUse(_) | choreo_stack::Error::PortStolen { .. }),
                ) if attempt < ATTEMPTS => {
                    eprintln!("test stack attempt {attempt}: {e}; trying other ports");
                }
                Err(e) => {
                    print_log_tails(&logs);
                    return Err(e).context("starting the test stack");
                }
            }
        }
        anyhow::bail!("no free ports for a test stack after {ATTEMPTS} attempts")
    }

    fn config(&self, data_dir: &Path, ports: Ports) -> StackConfig {
        let seeds = repo_root().join("deploy/seed");
        // Order's deadline, unless the test is about it: long enough that
        // two stacks sharing two loaded cores never time an order out by
        // accident (the service's own default is 30 s).
        let mut service_env = self.service_env.clone();
        let order = service_env.entry("order".to_owned()).or_default();
        if !order.iter().any(|(k, _)| k == "CHOREO_ORDER_DEADLINE_MS") {
            order.insert(
                0,
                ("CHOREO_ORDER_DEADLINE_MS".into(), TEST_DEADLINE_MS.into()),
            );
        }
        let mut common_env = self.common_env.clone();
        common_env.push((
            "CHOREO_STOCK_SEED_FILE".into(),
            seeds.join("stock.json").display().to_string(),
        ));
        common_env.push((
            "CHOREO_ACCOUNTS_SEED_FILE".into(),
            seeds.join("accounts.json").display().to_string(),
        ));
        StackConfig {
            data_dir: data_dir.to_owned(),
            bin_dir: bin_dir(),
            java: choreo_stack::broker::default_java(),
            kafka_libs: choreo_stack::config::default_kafka_libs(),
            ports,
            services: self.services.clone(),
            database_urls: self.database_urls.clone(),
            service_env,
            common_env,
            log: LogSink::Files,
            supervise: false,
            inherit_env: false,
            // As under `make run` and compose: the admin writes need a token.
            admin_token: if self.open_writes {
                choreo_bus::AdminToken::none()
            } else {
                choreo_bus::AdminToken::generate()
            },
            registry: if self.apicurio {
                choreo_stack::RegistryKind::Apicurio(choreo_stack::config::apicurio_jar())
            } else {
                choreo_stack::RegistryKind::Choreo
            },
        }
    }
}

/// A stack for one test. Dropped → every child is killed and the data
/// folder removed; during a panic the logs are printed first.
#[derive(Debug)]
pub struct TestStack {
    stack: Option<Stack>,
    dir: tempfile::TempDir,
}

impl TestStack {
    pub fn builder() -> TestStackBuilder {
        TestStackBuilder::default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn print_logs(&self) {
        print_log_tails(&self.dir.path().join("logs"));
    }

    /// Graceful stop of everything.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stack.take() {
            s.shutdown().await;
        }
    }
}

impl Deref for TestStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        self.stack.as_ref().expect("stack")
    }
}

impl DerefMut for TestStack {
    fn deref_mut(&mut self) -> &mut Stack {
        self.stack.as_mut().expect("stack")
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
            if std::env::var_os("CHOREO_KEEP_DATA").is_some() {
                let kept = self.dir.path().to_owned();
                eprintln!("keeping {}", kept.display());
                std::mem::forget(tempfile::tempdir().map(|d| std::mem::replace(&mut self.dir, d)));
            }
        }
    }
}

fn print_log_tails(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!("===== {} (last {} lines) =====", path.display(), tail.len());
        for l in tail {
            eprintln!("{l}");
        }
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with
/// `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
