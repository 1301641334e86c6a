//! What one stack is made of: ports, paths, which services, their settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use choreo_bus::AdminToken;

use crate::{Error, Result};

/// The file in a stack's data folder holding its admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// `make run`'s admin token: `CHOREO_ADMIN_TOKEN` when set, else the one
/// an earlier start kept in `<data_dir>/admin-token`, else a new random
/// one (which [`crate::Stack::start`] keeps there).
pub fn local_admin_token(data_dir: &std::path::Path) -> Result<AdminToken> {
    let invalid = |from: String| move |source| Error::AdminToken { from, source };
    if let Some(value) = std::env::var(choreo_admin::ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        return AdminToken::new(&value).map_err(invalid("the environment".into()));
    }
    let file = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => AdminToken::new(text.trim()).map_err(invalid(file.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminToken::generate()),
        Err(e) => Err(Error::Io {
            what: format!("reading {}", file.display()),
            source: e,
        }),
    }
}

/// Where each part listens on 127.0.0.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub broker: u16,
    /// The broker's KRaft controller listener.
    pub controller: u16,
    pub registry: u16,
    pub order: u16,
    pub inventory: u16,
    pub payment: u16,
    pub courier: u16,
    pub communication: u16,
}

impl Default for Ports {
    /// The fixed ports of `make run`.
    fn default() -> Self {
        Self {
            broker: 9092,
            controller: 9093,
            registry: 8081,
            order: 8080,
            inventory: 8082,
            payment: 8083,
            courier: 8084,
            communication: 8085,
        }
    }
}

impl Ports {
    /// Free ports for tests and benchmarks that run stacks side by side
    /// (see [`crate::ports::allocate`] for why not the OS's `bind(0)`).
    pub fn free() -> std::io::Result<Self> {
        let p = crate::ports::allocate(8)?;
        Ok(Self {
            broker: p[0],
            controller: p[1],
            registry: p[2],
            order: p[3],
            inventory: p[4],
            payment: p[5],
            courier: p[6],
            communication: p[7],
        })
    }

    /// Every port with what listens on it, in start order.
    pub fn named(&self) -> Vec<(&'static str, u16)> {
        vec![
            ("broker", self.broker),
            ("broker controller", self.controller),
            ("registry", self.registry),
            ("order", self.order),
            ("inventory", self.inventory),
            ("payment", self.payment),
            ("courier", self.courier),
            ("communication", self.communication),
        ]
    }

    pub fn service(&self, name: &str) -> Option<u16> {
        Some(match name {
            "order" => self.order,
            "inventory" => self.inventory,
            "payment" => self.payment,
            "courier" => self.courier,
            "communication" => self.communication,
            _ => return None,
        })
    }
}

/// Where children's output goes.
#[derive(Clone, Debug)]
pub enum LogSink {
    /// Each line on our stdout, prefixed with the process's name (`choreo up`).
    Prefixed,
    /// `<data_dir>/logs/<name>.log` (tests; read back when one fails).
    Files,
}

#[derive(Clone, Debug)]
pub struct StackConfig {
    pub data_dir: PathBuf,
    /// Where `choreo-registry` and `choreo-<service>` binaries are.
    pub bin_dir: PathBuf,
    /// The `java` that runs the broker.
    pub java: PathBuf,
    /// Kafka's jars, as `make tools` caches them.
    pub kafka_libs: PathBuf,
    pub ports: Ports,
    /// Services to start, in order.
    pub services: Vec<String>,
    /// `DATABASE_URL` per service; absent → the service's SQLite default.
    pub database_urls: BTreeMap<String, String>,
    /// Extra environment per service.
    pub service_env: BTreeMap<String, Vec<(String, String)>>,
    /// Extra environment for every service.
    pub common_env: Vec<(String, String)>,
    pub log: LogSink,
    /// Restart a service that exits on its own, with backoff (`choreo up`).
    /// Tests leave it off: they kill and restart services on purpose and
    /// must see a crash, not have it papered over.
    pub supervise: bool,
    /// Children get the runner's environment (`choreo up`: a user's
    /// `CHOREO_*` settings reach the services) or start from an empty one
    /// plus what the stack sets (tests; see [`crate::process::command`]).
    pub inherit_env: bool,
    /// `CHOREO_ADMIN_TOKEN` of the registry and every service (none: the
    /// admin writes are open). [`crate::Stack::start`] writes it to
    /// `<data_dir>/admin-token` (mode 0600), for the people and tools that
    /// need it, and the next `make run` on that folder uses it again.
    pub admin_token: AdminToken,
    /// Which schema registry the stack runs.
    pub registry: RegistryKind,
}

/// The schema registry a stack runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RegistryKind {
    /// `choreo-registry` (this workspace's).
    #[default]
    Choreo,
    /// Apicurio Registry (the runner jar `make tools` unpacks: see
    /// [`apicurio_jar`]) with its in-memory storage, through its
    /// Confluent-compatible API under `/apis/ccompat/v7`.
    Apicurio(PathBuf),
}

/// The Apicurio Registry release `make tools` fetches from Maven Central
/// (the newest that runs on Java 17; 3.x needs Java 21).
pub const APICURIO_VERSION: &str = "2.6.13.Final";

/// Apicurio's runner jar, as `make tools` unpacks it into the tools cache.
pub fn apicurio_jar() -> PathBuf {
    tools_dir()
        .join(format!("apicurio-registry-{APICURIO_VERSION}"))
        .join(format!(
            "apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
        ))
}

impl StackConfig {
    /// `make run`'s stack: fixed ports, `./data`, binaries beside the
    /// current executable, every service whose binary exists.
    pub fn local(data_dir: PathBuf, bin_dir: PathBuf) -> Self {
        let services = choreo_events::SERVICES
            .iter()
            .filter(|s| bin_dir.join(format!("choreo-{s}")).exists())
            .map(|s| (*s).to_owned())
            .collect();
        // Seed data: ./deploy/seed, else the repository the binaries were
        // built in (target/<profile>/../../deploy/seed), so `choreo up` works
        // from any folder.
        let mut common_env = Vec::new();
        let seeds = [
            PathBuf::from("deploy/seed"),
            bin_dir.join("../../deploy/seed"),
        ]
        .into_iter()
        .find(|p| p.join("stock.json").exists())
        .and_then(|p| p.canonicalize().ok());
        if let Some(seeds) = seeds {
            for (var, file) in [
                ("CHOREO_STOCK_SEED_FILE", "stock.json"),
                ("CHOREO_ACCOUNTS_SEED_FILE", "accounts.json"),
            ] {
                common_env.push((var.to_owned(), seeds.join(file).display().to_string()));
            }
        }
        Self {
            data_dir,
            bin_dir,
            java: crate::broker::default_java(),
            kafka_libs: default_kafka_libs(),
            ports: Ports::default(),
            services,
            database_urls: BTreeMap::new(),
            service_env: BTreeMap::new(),
            common_env,
            log: LogSink::Prefixed,
            supervise: true,
            inherit_env: true,
            admin_token: AdminToken::none(),
            registry: RegistryKind::Choreo,
        }
    }

    pub fn bin(&self, name: &str) -> Result<PathBuf> {
        let path = self.bin_dir.join(name);
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::MissingBinary(path))
        }
    }
}

/// `$CHOREO_KAFKA_LIBS`, else where `make tools` caches Kafka's jars.
pub fn default_kafka_libs() -> PathBuf {
    if let Some(p) = std::env::var_os("CHOREO_KAFKA_LIBS") {
        return PathBuf::from(p);
    }
    tools_dir().join(format!("kafka-{}/libs", crate::broker::KAFKA_VERSION))
}

/// `$CHOREO_TOOLS_DIR`, else `${XDG_CACHE_HOME:-$HOME/.cache}/choreo/tools`.
pub fn tools_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CHOREO_TOOLS_DIR") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("choreo/tools")
}
