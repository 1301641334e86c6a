//! The Apache Kafka broker child: one KRaft node that is both broker and
//! controller, run from the jars `make tools` fetched from Maven Central.
//!
//! Everything the broker keeps lives in its folder (`<data>/broker`):
//!
//! - `server.properties` and `log4j2.yaml`, written on every start from
//!   [`server_properties`], so a changed setting takes effect on the next
//!   start and the folder always says how the broker ran;
//! - `kraft/`, the log dirs: formatted once with `kafka.tools.StorageTool`
//!   (a cluster id and the metadata log), kept across restarts, so `make
//!   run` loses nothing when it is stopped and started again;
//! - `server.log`, the broker's whole log (INFO and above). WARN and above
//!   also go to the process's stderr, which the stack prefixes on the
//!   runner's output (or writes to `logs/broker.log` in tests).
//!
//! The settings that matter for the saga (listeners, replication factors,
//! group timeouts) are the ones docker compose sets too; the compose test
//! checks that the two agree ([`server_properties`] is public for it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::info;

use crate::config::LogSink;
use crate::process::Child;
use crate::{wait_tcp, Error, Result};

/// The Kafka release the stack runs: the one deploy/kafka/pom.xml fetches
/// and deploy/docker-compose.yml's `apache/kafka` image is tagged with.
pub const KAFKA_VERSION: &str = "4.4.0";

/// One cluster id for every local broker: a node formatted with it can be
/// restarted on the same folder; a folder formatted with another id is
/// refused by Kafka, which is what should happen.
pub const CLUSTER_ID: &str = "5L6g3nShT-eMCtK--X86sw";

/// Heap of the broker JVM. The issue's bound is 512 MiB; the broker of a
/// local stack holds a few MiB of metadata and its page cache is the OS's.
const HEAP: &str = "-Xmx512m";

/// How long a (re)started broker has to answer metadata. A cold JVM on two
/// busy cores takes 5-10 s; recovery of a killed broker's logs adds more.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// How to start the broker: everything [`Broker::start`] needs to spawn it
/// the same way again on the same data.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    /// The `java` to run.
    pub java: PathBuf,
    /// Kafka's jars (`<tools>/kafka-<version>/libs`).
    pub libs: PathBuf,
    /// The broker's folder: configuration, log dirs, server log.
    pub dir: PathBuf,
    /// The client listener.
    pub port: u16,
    /// The KRaft controller listener.
    pub controller_port: u16,
    pub log: LogSink,
    /// Pass the runner's environment on (see [`crate::process::command`]).
    pub inherit_env: bool,
    /// The stack's data folder (the child's own output goes to
    /// `<data_dir>/logs` in tests).
    pub data_dir: PathBuf,
}

/// `server.properties` of the local broker, as `(key, value)` pairs in file
/// order.
pub fn server_properties(
    port: u16,
    controller_port: u16,
    log_dirs: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("process.roles", "broker,controller".into()),
        ("node.id", "1".into()),
        (
            "controller.quorum.voters",
            format!("1@127.0.0.1:{controller_port}"),
        ),
        // Loopback only: the local stack is for this machine.
        (
            "listeners",
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
        ),
        (
            "advertised.listeners",
            format!("PLAINTEXT://127.0.0.1:{port}"),
        ),
        ("controller.listener.names", "CONTROLLER".into()),
        (
            "listener.security.protocol.map",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
        ),
        ("inter.broker.listener.name", "PLAINTEXT".into()),
        ("log.dirs", log_dirs.display().to_string()),
        // One node: every internal topic has one replica.
        ("offsets.topic.replication.factor", "1".into()),
        ("offsets.topic.num.partitions", "6".into()),
        ("transaction.state.log.replication.factor", "1".into()),
        ("transaction.state.log.min.isr", "1".into()),
        (
            "share.coordinator.state.topic.replication.factor",
            "1".into(),
        ),
        ("share.coordinator.state.topic.min.isr", "1".into()),
        // A group's first member is served at once instead of after 3 s.
        ("group.initial.rebalance.delay.ms", "0".into()),
        // Classic protocol: the clients' 6 s session (crates/bus) must be
        // allowed; tests that kill a member wait one session for it.
        ("group.min.session.timeout.ms", "1000".into()),
        // KIP-848 consumer protocol: the session and heartbeat are the
        // broker's; short ones let a killed member's partitions move fast.
        ("group.consumer.min.session.timeout.ms", "1000".into()),
        ("group.consumer.session.timeout.ms", "6000".into()),
        ("group.consumer.min.heartbeat.interval.ms", "250".into()),
        ("group.consumer.heartbeat.interval.ms", "500".into()),
        // Topics exist because the stack created them with 6 partitions;
        // a typo in a topic name must fail, not create an empty topic.
        ("auto.create.topics.enable", "false".into()),
        ("num.partitions", "6".into()),
        // Retention bounds the broker's disk in long runs (a day of events).
        ("log.retention.hours", "24".into()),
        ("log.segment.bytes", (64 * 1024 * 1024).to_string()),
    ]
}

impl BrokerSpec {
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_dirs(&self) -> PathBuf {
        self.dir.join("kraft")
    }

    fn properties_path(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn log4j_path(&self) -> PathBuf {
        self.dir.join("log4j2.yaml")
    }

    /// Writes the configuration and formats the log dirs unless they are
    /// formatted already.
    async fn prepare(&self) -> Result<()> {
        if !self
            .libs
            .join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
            .exists()
        {
            return Err(Error::MissingKafka(self.libs.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut props = String::from("# Written by choreo's stack runner on every start.\n");
        for (k, v) in server_properties(self.port, self.controller_port, &self.log_dirs()) {
            props.push_str(&format!("{k}={v}\n"));
        }
        write(&self.properties_path(), &props)?;
        write(
            &self.log4j_path(),
            &log4j_config(&self.dir.join("server.log")),
        )?;
        if self.log_dirs().join("meta.properties").exists() {
            return Ok(());
        }
        let out = crate::process::command(&self.java, self.inherit_env)
            .args(self.jvm_args("-Xmx256m"))
            .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
            .arg("--cluster-id")
            .arg(CLUSTER_ID)
            .arg("--config")
            .arg(self.properties_path())
            .output()
            .await
            .map_err(|e| io(&self.java, e))?;
        if !out.status.success() {
            return Err(Error::Exited(
                "kafka storage format".into(),
                format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        info!(dir = %self.log_dirs().display(), "formatted the broker's log dirs");
        Ok(())
    }

    fn jvm_args(&self, heap: &str) -> Vec<String> {
        vec![
            heap.to_owned(),
            // Kafka's own launcher (kafka-run-class.sh) settings.
            "-XX:+UseG1GC".into(),
            "-XX:MaxGCPauseMillis=20".into(),
            "-XX:InitiatingHeapOccupancyPercent=35".into(),
            "-XX:+ExplicitGCInvokesConcurrent".into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dlog4j2.configurationFile={}", self.log4j_path().display()),
            "-cp".into(),
            format!("{}/*", self.libs.display()),
        ]
    }

    async fn spawn(&self) -> Result<Child> {
        self.prepare().await?;
        let mut cmd = crate::process::command(&self.java, self.inherit_env);
        cmd.current_dir(&self.dir)
            .args(self.jvm_args(HEAP))
            .arg("kafka.Kafka")
            .arg(self.properties_path());
        Child::spawn("broker", cmd, &self.log, &self.data_dir)
    }

    /// Waits until the broker accepts connections and answers metadata.
    async fn wait_ready(&self, child: &mut Child) -> Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + READY_WITHIN;
        wait_tcp("broker", addr, deadline, Some(child)).await?;
        // A port that accepts is not yet a broker that answers metadata.
        probe(&self.brokers(), READY_WITHIN).await
    }
}

impl BrokerSpec {
    /// A broker that exited because one of its ports was bound between the
    /// stack's check and the broker's bind (another process, or an
    /// outgoing connection's local port) is [`Error::PortStolen`], which a
    /// caller may retry on other ports; any other failure stays as it is.
    fn port_lost(&self, e: Error) -> Error {
        if !matches!(e, Error::Exited(..)) {
            return e;
        }
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        [
            ("broker", self.port),
            ("broker controller", self.controller_port),
        ]
        .into_iter()
        .find(|(_, port)| log.contains(&format!("127.0.0.1:{port}: Address already in use")))
        .map_or(e, |(what, port)| Error::PortStolen {
            what: what.into(),
            port,
            holder: crate::ports::holder(port).unwrap_or_else(|| {
                "a socket this user cannot see, or a connection's local port".into()
            }),
        })
    }
}

fn log4j_config(file: &Path) -> String {
    format!(
        r#"# Written by choreo's stack runner: everything to server.log, WARN and
# above also to stderr (the runner's output).
Configuration:
  Appenders:
    RollingFile:
      name: file
      fileName: "{file}"
      filePattern: "{file}.%i"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      SizeBasedTriggeringPolicy:
        size: 64MB
      DefaultRolloverStrategy:
        max: 2
    Console:
      name: stderr
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "%p %m (%c)%n"
      ThresholdFilter:
        level: WARN
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
        - ref: stderr
"#,
        file = file.display()
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| io(path, e))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        what: path.display().to_string(),
        source,
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

/// The running broker.
#[derive(Debug)]
pub struct Broker {
    child: Child,
}

impl Broker {
    /// Writes the configuration, formats the log dirs on first use, spawns
    /// the broker and waits until it answers metadata.
    pub async fn start(spec: &BrokerSpec) -> Result<Broker> {
        let started = Instant::now();
        let mut child = spec.spawn().await?;
        if let Err(e) = spec.wait_ready(&mut child).await {
            return Err(spec.port_lost(e));
        }
        info!(
            brokers = %spec.brokers(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "broker ready"
        );
        Ok(Broker { child })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// The exit status, when the broker has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.exited()
    }

    /// SIGTERM (Kafka's controlled shutdown), then SIGKILL after `grace`.
    pub async fn stop(self, grace: Duration) {
        self.child.stop(grace).await;
    }

    /// SIGKILL: the broker loses whatever it had not written, as on a
    /// power cut; its next start recovers the logs.
    pub async fn kill(mut self) {
        self.child.kill().await;
    }
}

/// `$JAVA_HOME/bin/java` when set, else `java` from `PATH`.
pub fn default_java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}
