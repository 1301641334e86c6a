//! Starts and stops choreo's local stack as child processes: an Apache
//! Kafka broker (KRaft), `choreo-registry`, and the five service binaries.
//!
//! `choreo up` (`make run`) and the end-to-end test kit share this code, so
//! the tests run exactly what a person runs. Nothing here knows the saga:
//! it creates the topics and registers the schemas of the contract, passes
//! each service its addresses through environment variables, and waits on
//! observable readiness (a TCP port, broker metadata, `GET /readyz`).
//!
//! # Layout
//!
//! - [`config`]: ports, paths and per-service settings of one stack.
//! - [`ports`]: which ports are free, and who holds the others.
//! - [`process`]: one supervised child: spawn, log prefixing, SIGTERM/SIGKILL.
//! - [`broker`]: the Kafka child: its configuration, log dirs and log.
//! - [`Stack`]: the whole thing, with the fault-injection verbs tests need
//!   (kill a service, stop or kill the broker and start it again).

pub mod broker;
pub mod config;
pub mod ports;
pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

pub use broker::{Broker, BrokerSpec};
pub use config::{LogSink, Ports, RegistryKind, StackConfig};
pub use process::Child;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binary not found: {0} (build it first: cargo build --workspace --bins)")]
    MissingBinary(PathBuf),
    #[error("Kafka's jars are not in {0} (run `make tools`)")]
    MissingKafka(PathBuf),
    #[error("{0}; is a stack already running? (stop it first, or use other ports)")]
    PortInUse(ports::Taken),
    #[error("port {port} of {what} is held by {holder}, not by the {what} this stack started (another process bound it first)")]
    PortStolen {
        what: String,
        port: u16,
        holder: String,
    },
    #[error("{0} did not become ready within {1:?}")]
    NotReady(String, Duration),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {0}: {1}")]
    CreateTopic(String, String),
    #[error("registering schemas: {0}")]
    Schemas(String),
    #[error("{0} exited early: {1}")]
    Exited(String, String),
    #[error("unknown service {0}")]
    UnknownService(String),
    #[error("the admin token from {from}: {source}")]
    AdminToken {
        from: String,
        #[source]
        source: choreo_admin::InvalidToken,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running stack. Dropping it kills every child (kill-on-drop), so a
/// failing test leaves nothing behind; [`Stack::shutdown`] stops them
/// gracefully.
#[derive(Debug)]
pub struct Stack {
    pub config: StackConfig,
    broker: Option<Broker>,
    registry: Option<Child>,
    services: BTreeMap<String, Vec<Child>>,
    /// Restarts of each supervised replica, `(name, index)` → state.
    restarts: BTreeMap<(String, usize), Restarts>,
}

/// How often a supervised replica was restarted and when it may be next.
#[derive(Debug, Clone)]
struct Restarts {
    count: u32,
    backoff: Duration,
    started: Instant,
    next: Option<Instant>,
}

/// First wait before restarting a service that exited; doubled per
/// restart up to [`MAX_RESTART_BACKOFF`], reset once it has run for
/// [`HEALTHY_AFTER`].
const FIRST_RESTART_BACKOFF: Duration = Duration::from_secs(1);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

impl Stack {
    /// Broker, topics, registry, schemas, then every configured service,
    /// each waited on until ready.
    pub async fn start(config: StackConfig) -> Result<Stack> {
        if let Some(taken) = ports::first_taken(&config.ports.named()) {
            return Err(Error::PortInUse(taken));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
            what: format!("creating {}", config.data_dir.display()),
            source: e,
        })?;
        if let Some(token) = config.admin_token.expose() {
            write_private(&config.data_dir.join(config::ADMIN_TOKEN_FILE), token)?;
        }
        let mut stack = Stack {
            config,
            broker: None,
            registry: None,
            services: BTreeMap::new(),
            restarts: BTreeMap::new(),
        };
        stack.start_broker().await?;
        stack.create_topics().await?;
        stack.start_registry().await?;
        stack.register_schemas().await?;
        let names = stack.config.services.clone();
        for name in &names {
            stack.spawn_service(name)?;
        }
        for name in &names {
            if stack.config.supervise {
                stack.wait_service_ready_supervised(name, 0).await?;
            } else if let Err(e) = stack.wait_service_ready(name, 0).await {
                // A service that could not bind its port exits at once; say
                // so when another process holds the port.
                let port = stack.config.ports.service(name).unwrap_or(0);
                let own = stack
                    .services
                    .get(name)
                    .and_then(|r| r.first())
                    .and_then(Child::pid);
                return Err(port_stolen_or(name, port, own, e));
            }
        }
        stack.verify_ports()?;
        Ok(stack)
    }

    /// The admin token the stack's registry and services require (none:
    /// their admin writes are open).
    pub fn admin_token(&self) -> &choreo_bus::AdminToken {
        &self.config.admin_token
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.config.ports.broker)
    }

    pub fn registry_url(&self) -> String {
        let port = self.config.ports.registry;
        match self.config.registry {
            RegistryKind::Choreo => format!("http://127.0.0.1:{port}"),
            RegistryKind::Apicurio(_) => format!("http://127.0.0.1:{port}/apis/ccompat/v7"),
        }
    }

    pub fn service_url(&self, name: &str) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.config.ports.service(name).unwrap_or(0)
        )
    }

    /// `http://…` of replica `index` of a service.
    pub fn replica_url(&self, name: &str, index: usize) -> String {
        let base = self.config.ports.service(name).unwrap_or(0);
        format!("http://127.0.0.1:{}", replica_port(base, index))
    }

    /// `(name, pid)` of every running child: broker, registry, services.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        if let Some(pid) = self.broker.as_ref().and_then(Broker::pid) {
            out.push(("broker".to_owned(), pid));
        }
        let named = self.registry.iter().chain(self.services.values().flatten());
        for child in named {
            if let Some(pid) = child.pid() {
                out.push((child.name().to_owned(), pid));
            }
        }
        out
    }

    pub fn service_data_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join(name)
    }

    /// How this stack's broker is started (the same on every restart).
    pub fn broker_spec(&self) -> BrokerSpec {
        BrokerSpec {
            java: self.config.java.clone(),
            libs: self.config.kafka_libs.clone(),
            dir: absolute(&self.config.data_dir.join("broker")),
            port: self.config.ports.broker,
            controller_port: self.config.ports.controller,
            log: self.config.log.clone(),
            inherit_env: self.config.inherit_env,
            data_dir: self.config.data_dir.clone(),
        }
    }

    /// Starts the broker on the stack's data and waits until it answers
    /// metadata.
    pub async fn start_broker(&mut self) -> Result<()> {
        self.broker = Some(Broker::start(&self.broker_spec()).await?);
        Ok(())
    }

    /// Stops the broker (SIGTERM, Kafka's controlled shutdown; SIGKILL
    /// after 30 s).
    pub async fn stop_broker(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.stop(Duration::from_secs(30)).await;
        }
    }

    /// Kills the broker with SIGKILL: nothing is flushed or closed.
    pub async fn kill_broker(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.kill().await;
        }
    }

    /// Every topic of the contract plus each service's dead-letter topic.
    pub async fn create_topics(&self) -> Result<()> {
        create_topics(&self.brokers()).await.map(|_| ())
    }

    pub async fn start_registry(&mut self) -> Result<()> {
        let cmd = match &self.config.registry {
            RegistryKind::Choreo => self.choreo_registry_command()?,
            RegistryKind::Apicurio(jar) => {
                if !jar.exists() {
                    return Err(Error::MissingBinary(jar.clone()));
                }
                let mut cmd = process::command(&self.config.java, self.config.inherit_env);
                cmd.arg(format!(
                    "-Dquarkus.http.port={}",
                    self.config.ports.registry
                ))
                .arg("-Dquarkus.http.host=127.0.0.1")
                .arg("-jar")
                .arg(jar);
                cmd
            }
        };
        let child = Child::spawn("registry", cmd, &self.config.log, &self.config.data_dir)?;
        self.registry = Some(child);
        let url = format!("{}/subjects", self.registry_url());
        let ready = wait_http(
            "registry",
            &url,
            Instant::now() + Duration::from_secs(60),
            self.registry.as_mut(),
        )
        .await;
        let own = self.registry.as_ref().and_then(Child::pid);
        ready.map_err(|e| port_stolen_or("registry", self.config.ports.registry, own, e))?;
        if matches!(self.config.registry, RegistryKind::Apicurio(_)) {
            // Apicurio's global level is NONE; Confluent's (and
            // choreo-registry's) is BACKWARD, which schemas/ relies on.
            set_global_compatibility(&self.registry_url(), "BACKWARD").await?;
        }
        Ok(())
    }

    fn choreo_registry_command(&self) -> Result<tokio::process::Command> {
        let bin = self.config.bin("choreo-registry")?;
        let mut cmd = process::command(bin, self.config.inherit_env);
        cmd.env(
            "CHOREO_REGISTRY_LISTEN",
            format!("127.0.0.1:{}", self.config.ports.registry),
        )
        .env(
            "CHOREO_REGISTRY_DATA_DIR",
            self.config.data_dir.join("registry"),
        );
        if let Some(token) = self.config.admin_token.expose() {
            cmd.env(choreo_admin::ENV, token);
        }
        Ok(cmd)
    }

    pub async fn stop_registry(&mut self) {
        if let Some(child) = self.registry.take() {
            child.stop(Duration::from_secs(5)).await;
        }
    }

    pub async fn register_schemas(&self) -> Result<Vec<(String, u32)>> {
        register_schemas(&self.registry_url()).await
    }

    /// The environment a service process gets: where it listens, where the
    /// broker, registry and its data are, plus configured extras.
    fn service_env(&self, name: &str, index: usize) -> Result<Vec<(String, String)>> {
        let base = self
            .config
            .ports
            .service(name)
            .ok_or_else(|| Error::UnknownService(name.to_owned()))?;
        let data = absolute(&self.service_data_dir(name));
        let mut env = vec![
            (
                "CHOREO_HTTP_ADDR".to_owned(),
                format!("127.0.0.1:{}", replica_port(base, index)),
            ),
            ("CHOREO_BROKERS".to_owned(), self.brokers()),
            ("CHOREO_REGISTRY_URL".to_owned(), self.registry_url()),
            ("CHOREO_DATA_DIR".to_owned(), data.display().to_string()),
        ];
        if let Some(db) = self.config.database_urls.get(name) {
            env.push(("DATABASE_URL".to_owned(), db.clone()));
        }
        if let Some(extra) = self.config.service_env.get(name) {
            env.extend(extra.iter().cloned());
        }
        env.extend(self.config.common_env.iter().cloned());
        if let Some(token) = self.config.admin_token.expose() {
            env.push((choreo_admin::ENV.to_owned(), token.to_owned()));
        }
        Ok(env)
    }

    /// Starts one more replica of a service (replica 0 is the first).
    pub fn spawn_service(&mut self, name: &str) -> Result<usize> {
        let index = self.services.get(name).map(Vec::len).unwrap_or(0);
        self.spawn_replica(name, index)?;
        Ok(index)
    }

    fn spawn_replica(&mut self, name: &str, index: usize) -> Result<()> {
        let bin = self.config.bin(&format!("choreo-{name}"))?;
        let mut cmd = process::command(bin, self.config.inherit_env);
        cmd.envs(self.service_env(name, index)?);
        let label = if index == 0 {
            name.to_owned()
        } else {
            format!("{name}.{index}")
        };
        let child = Child::spawn(&label, cmd, &self.config.log, &self.config.data_dir)?;
        let replicas = self.services.entry(name.to_owned()).or_default();
        if index < replicas.len() {
            replicas[index] = child;
        } else {
            replicas.push(child);
        }
        Ok(())
    }

    pub async fn wait_service_ready(&mut self, name: &str, index: usize) -> Result<()> {
        let url = format!("{}/readyz", self.replica_url(name, index));
        let child = self.services.get_mut(name).and_then(|r| r.get_mut(index));
        wait_http(name, &url, Instant::now() + Duration::from_secs(60), child).await
    }

    /// Checks that each port answers from the process this stack started:
    /// ports are chosen free before the children bind them, so another
    /// process (a stack started beside this one) can take one in between,
    /// and its answers would then pass for this stack's readiness.
    pub fn verify_ports(&self) -> Result<()> {
        let mut owned: Vec<(String, u16, Option<u32>)> = Vec::new();
        if let Some(broker) = &self.broker {
            owned.push(("broker".into(), self.config.ports.broker, broker.pid()));
        }
        if let Some(registry) = &self.registry {
            owned.push((
                "registry".into(),
                self.config.ports.registry,
                registry.pid(),
            ));
        }
        for (name, replicas) in &self.services {
            for (index, child) in replicas.iter().enumerate() {
                let base = self.config.ports.service(name).unwrap_or(0);
                owned.push((
                    child.name().to_owned(),
                    replica_port(base, index),
                    child.pid(),
                ));
            }
        }
        for (what, port, pid) in owned {
            let holder = ports::holder_pid(port);
            // Unknown holder (another user's process hides its fds): only a
            // known, different pid is proof of a stolen port.
            if let (Some(holder), Some(pid)) = (holder, pid) {
                if holder != pid {
                    return Err(Error::PortStolen {
                        what,
                        port,
                        holder: ports::holder(port).unwrap_or_else(|| format!("pid {holder}")),
                    });
                }
            }
        }
        Ok(())
    }

    /// Like [`Stack::wait_service_ready`], but a replica that exits while
    /// starting is restarted (see [`Stack::supervise`]) instead of failing
    /// the stack: a service that crashes on one bad record must not keep
    /// the rest from starting.
    async fn wait_service_ready_supervised(&mut self, name: &str, index: usize) -> Result<()> {
        let url = format!("{}/readyz", self.replica_url(name, index));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match wait_http(name, &url, Instant::now() + Duration::from_secs(1), None).await {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    self.supervise();
                }
                Err(_) => return Err(Error::NotReady(name.to_owned(), Duration::from_secs(120))),
            }
        }
    }

    /// Restarts every service replica that has exited on its own, each
    /// after a backoff that doubles per restart (1 s up to 30 s, reset once
    /// it has run for a minute), and logs why. Returns the labels of the
    /// replicas restarted now. `choreo up` calls this every second.
    pub fn supervise(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut exited = Vec::new();
        for (name, replicas) in &mut self.services {
            for (index, child) in replicas.iter_mut().enumerate() {
                if let Some(status) = child.exited() {
                    exited.push((name.clone(), index, child.name().to_owned(), status));
                }
            }
        }
        let mut restarted = Vec::new();
        for (name, index, label, status) in exited {
            let state = self
                .restarts
                .entry((name.clone(), index))
                .or_insert_with(|| Restarts {
                    count: 0,
                    backoff: FIRST_RESTART_BACKOFF,
                    started: now,
                    next: None,
                });
            let next = match state.next {
                Some(next) => next,
                None => {
                    if now.duration_since(state.started) >= HEALTHY_AFTER {
                        state.backoff = FIRST_RESTART_BACKOFF;
                    }
                    let next = now + state.backoff;
                    state.next = Some(next);
                    tracing::warn!(
                        service = %label, %status, restart_in_s = state.backoff.as_secs(),
                        "service exited unexpectedly; restarting (see its log lines above)"
                    );
                    next
                }
            };
            if now < next {
                continue;
            }
            state.count += 1;
            state.started = now;
            state.next = None;
            state.backoff = (state.backoff * 2).min(MAX_RESTART_BACKOFF);
            let count = state.count;
            match self.spawn_replica(&name, index) {
                Ok(()) => {
                    tracing::warn!(service = %label, restart = count, "service restarted");
                    restarted.push(label);
                }
                Err(e) => tracing::error!(service = %label, error = %e, "could not restart"),
            }
        }
        restarted
    }

    /// How often the supervisor has restarted each replica.
    pub fn restart_counts(&self) -> BTreeMap<String, u32> {
        self.restarts
            .iter()
            .map(|((name, index), r)| {
                let label = if *index == 0 {
                    name.clone()
                } else {
                    format!("{name}.{index}")
                };
                (label, r.count)
            })
            .collect()
    }

    /// `kill -9` a replica: no drain, no final commit.
    pub async fn kill_service(&mut self, name: &str, index: usize) {
        if let Some(child) = self.services.get_mut(name).and_then(|r| r.get_mut(index)) {
            child.kill().await;
        }
    }

    /// SIGTERM a replica and wait for it to exit (SIGKILL after `grace`).
    pub async fn stop_service(&mut self, name: &str, index: usize) {
        if let Some(child) = self.services.get_mut(name).and_then(|r| r.get_mut(index)) {
            child.terminate(Duration::from_secs(10)).await;
        }
    }

    /// Starts a stopped or killed replica again on the same port and data.
    pub async fn restart_service(&mut self, name: &str, index: usize) -> Result<()> {
        self.spawn_replica(name, index)?;
        self.wait_service_ready(name, index).await
    }

    /// Stops services first, all at once (each drains into the broker on
    /// its own), then the registry, then the broker.
    pub async fn shutdown(mut self) {
        let services = std::mem::take(&mut self.services);
        let stops = services
            .into_values()
            .flatten()
            .map(|c| c.stop(Duration::from_secs(10)));
        futures::future::join_all(stops).await;
        self.stop_registry().await;
        self.stop_broker().await;
    }
}

/// Creates every topic of the contract (6 partitions each) and one
/// dead-letter topic per service. Existing topics are left as they are, so
/// this is safe to run on every start. Returns the topic names.
pub async fn create_topics(brokers: &str) -> Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = choreo_bus::KafkaSettings::new(brokers)
        .admin_config()
        .create()?;
    let mut names: Vec<(String, i32)> = choreo_events::Topic::ALL
        .iter()
        .map(|t| (t.name().to_owned(), choreo_events::Topic::PARTITIONS))
        .collect();
    for service in choreo_events::SERVICES {
        names.push((choreo_events::dlq_topic(service), 1));
    }
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(topics.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(Error::CreateTopic(name, code.to_string())),
        }
    }
    info!(topics = names.len(), "topics ready");
    Ok(names.into_iter().map(|(n, _)| n).collect())
}

/// Registers every schema of `schemas/` under its TopicRecordNameStrategy
/// subject; returns `(subject, id)` pairs. Registering again is a no-op.
pub async fn register_schemas(registry_url: &str) -> Result<Vec<(String, u32)>> {
    let codec = choreo_bus::Codec::new(registry_url);
    let ids = codec
        .register_all()
        .await
        .map_err(|e| Error::Schemas(e.to_string()))?;
    info!(subjects = ids.len(), "schemas registered");
    Ok(ids)
}

/// `PUT /config {"compatibility": level}` on the registry at `url`.
async fn set_global_compatibility(url: &str, level: &str) -> Result<()> {
    let failed = |e: String| Error::Schemas(format!("setting {url}/config to {level}: {e}"));
    let response = reqwest::Client::new()
        .put(format!("{url}/config"))
        .json(&serde_json::json!({ "compatibility": level }))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(failed(format!(
            "{status}: {}",
            response.text().await.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // An older file keeps its mode through `open`; make it private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    writeln!(file, "{text}").map_err(io)
}

/// Replica `i` of a service listens on the service's port + 100·i.
pub fn replica_port(base: u16, index: usize) -> u16 {
    base + (index as u16) * 100
}

fn absolute(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_owned())
    }
}

/// [`Error::PortStolen`] when a process other than `own` listens on `port`
/// (a child that could not bind exits at once), else `e`.
fn port_stolen_or(what: &str, port: u16, own: Option<u32>, e: Error) -> Error {
    match ports::holder_pid(port) {
        Some(holder) if Some(holder) != own => Error::PortStolen {
            what: what.to_owned(),
            port,
            holder: ports::holder(port).unwrap_or_else(|| format!("pid {holder}")),
        },
        _ => e,
    }
}

async fn wait_tcp(
    what: &str,
    addr: SocketAddr,
    deadline: Instant,
    mut child: Option<&mut Child>,
) -> Result<()> {
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut() {
            if let Some(status) = c.exited() {
                return Err(Error::Exited(
                    what.to_owned(),
                    format!("{status}; see its log"),
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady(what.to_owned(), Duration::from_secs(30)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_http(
    what: &str,
    url: &str,
    deadline: Instant,
    mut child: Option<&mut Child>,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| Error::Exited(what.to_owned(), e.to_string()))?;
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                info!(%what, elapsed_ms = started.elapsed().as_millis() as u64, "ready");
                return Ok(());
            }
        }
        if let Some(c) = child.as_deref_mut() {
            if let Some(status) = c.exited() {
                return Err(Error::Exited(
                    what.to_owned(),
                    format!("{status}; see its log"),
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(Error::NotReady(what.to_owned(), started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
