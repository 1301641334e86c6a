//! Hosting one service process: the plumbing every service shares, so a
//! service's `startup` only names its topics, handler and routes.
//!
//! [`Host::run`] runs, under one shutdown token:
//! - the consumer loop (inbox + handler + offsets + DLQ),
//! - the outbox relay,
//! - the HTTP server with the service's routes plus `GET /healthz`,
//!   `GET /readyz` (200 once the group assigned partitions) and
//!   `GET /metrics` (Prometheus text),
//! - retention of old outbox and inbox rows.
//!
//! Shutdown order matters: HTTP and the consumer stop first (their last
//! transactions may append outbox rows), then the relay drains the outbox
//! into the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::openapi::{routes, OpenApiRouter};
use choreo_outbox::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Codec, Consumer, ConsumerSpec, Emitter, Handler, KafkaSettings, Readiness, Relay};

/// A setting that is present but unusable; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The value of `name` in `vars` (environment-like pairs), unless it is
/// missing or blank: a blank variable means "the default", as unset does.
pub fn var<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(n, v)| n == name && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

/// A service's settings: [`CommonSettings`] and its own, read once from
/// environment-like pairs (tests pass their own instead of changing the
/// process environment).
pub trait ServiceSettings: Sized + Send {
    /// The variables only this service reads ([`env_vars`](Self::env_vars)
    /// adds the ones every service reads).
    const OWN_ENV_VARS: &'static [&'static str];

    /// Builds the settings from `(name, value)` pairs.
    fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError>;

    /// The settings every service has.
    fn common(&self) -> &CommonSettings;

    /// Reads the process environment, once.
    fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect::<Vec<_>>())
    }

    /// Every environment variable the service reads, for tools that check
    /// deployment files against the code.
    fn env_vars() -> Vec<&'static str> {
        CommonSettings::with_own(Self::OWN_ENV_VARS)
    }
}

/// `(name, value)` pairs as [`ServiceSettings::from_vars`] takes them, from
/// string literals (tests and tools that build settings without touching
/// the process environment).
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Settings every service has. Built by the service's config module from
/// the environment it passes in. `Debug` hides credentials in URLs.
#[derive(Clone)]
pub struct CommonSettings {
    pub service: &'static str,
    pub http_addr: SocketAddr,
    pub kafka: KafkaSettings,
    pub registry_url: String,
    pub data_dir: PathBuf,
    /// `sqlite://…` (default, under `data_dir`) or `postgres://…`.
    pub database_url: String,
    /// Published outbox rows and inbox entries older than this are purged.
    pub retention: Duration,
    /// How often the purge runs.
    pub retention_interval: Duration,
    pub log_json: bool,
    /// `CHOREO_ADMIN_TOKEN`: the bearer token the service's admin writes
    /// need (none: open). Its `Debug` never shows it.
    pub admin_token: choreo_admin::AdminToken,
}

impl std::fmt::Debug for CommonSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonSettings")
            .field("service", &self.service)
            .field("http_addr", &self.http_addr)
            .field("brokers", &self.kafka.brokers)
            .field("registry_url", &redact_url(&self.registry_url))
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("retention", &self.retention)
            .field("retention_interval", &self.retention_interval)
            .field("admin_token", &self.admin_token)
            .finish_non_exhaustive()
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl CommonSettings {
    /// Reads `CHOREO_HTTP_ADDR`, `CHOREO_BROKERS`, `CHOREO_REGISTRY_URL`,
    /// `CHOREO_DATA_DIR`, `DATABASE_URL`, `CHOREO_RETENTION_SECS`,
    /// `CHOREO_RETENTION_INTERVAL_SECS`, `CHOREO_LOG_JSON`, `CHOREO_ADMIN_TOKEN` and
    /// `CHOREO_KAFKA_*` from `vars`, with defaults
    /// that work for `make run`.
    pub fn from_vars(
        service: &'static str,
        default_port: u16,
        vars: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| var(vars, k).map(str::to_owned);
        let http_addr = get("CHOREO_HTTP_ADDR")
            .unwrap_or_else(|| format!("127.0.0.1:{default_port}"))
            .parse()
            .map_err(|e| ConfigError(format!("CHOREO_HTTP_ADDR: {e}")))?;
        let brokers = get("CHOREO_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into());
        let data_dir =
            PathBuf::from(get("CHOREO_DATA_DIR").unwrap_or_else(|| format!("./data/{service}")));
        let database_url = get("DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}/{service}.db", data_dir.display()));
        let secs = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            match get(name) {
                Some(s) => s
                    .parse()
                    .map(Duration::from_secs)
                    .map_err(|e| ConfigError(format!("{name}: {e} (whole seconds, got {s:?})"))),
                None => Ok(Duration::from_secs(default)),
            }
        };
        let retention = secs("CHOREO_RETENTION_SECS", 7 * 24 * 3600)?;
        let retention_interval = secs("CHOREO_RETENTION_INTERVAL_SECS", 600)?;
        if retention_interval.is_zero() {
            return Err(ConfigError(
                "CHOREO_RETENTION_INTERVAL_SECS: must be at least 1".into(),
            ));
        }
        Ok(Self {
            service,
            http_addr,
            kafka: KafkaSettings::new(brokers).with_env_overrides(vars.iter().cloned()),
            registry_url: get("CHOREO_REGISTRY_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8081".into()),
            data_dir,
            database_url,
            retention,
            retention_interval,
            log_json: matches!(get("CHOREO_LOG_JSON").as_deref(), Some("1" | "true")),
            admin_token: choreo_admin::AdminToken::from_setting(var(vars, choreo_admin::ENV))
                .map_err(|e| ConfigError(e.to_string()))?,
        })
    }

    /// The environment variables every service reads (this module, the
    /// Kafka settings and the logging), for tools that check deployment
    /// files against the code. `CHOREO_KAFKA_*` stands for any
    /// `CHOREO_KAFKA_<PROPERTY>`. A service's full list is these plus its
    /// own ([`Self::with_own`]).
    pub const ENV_VARS: [&'static str; 13] = [
        WORKER_THREADS_VAR,
        "CHOREO_HTTP_ADDR",
        "CHOREO_BROKERS",
        "CHOREO_REGISTRY_URL",
        "CHOREO_DATA_DIR",
        "DATABASE_URL",
        "CHOREO_RETENTION_SECS",
        "CHOREO_RETENTION_INTERVAL_SECS",
        "CHOREO_LOG_JSON",
        choreo_admin::ENV,
        "CHOREO_KAFKA_*",
        crate::config::ENV_RAW,
        "RUST_LOG",
    ];

    /// [`Self::ENV_VARS`] followed by a service's own variables.
    pub fn with_own(own: &[&'static str]) -> Vec<&'static str> {
        Self::ENV_VARS.iter().chain(own).copied().collect()
    }
}

/// Tokio worker threads of a service ([`runtime`]).
pub const WORKER_THREADS_VAR: &str = "CHOREO_WORKER_THREADS";

/// The runtime a service runs on: `CHOREO_WORKER_THREADS` worker threads,
/// one by default.
///
/// One is the measured best here: a service's consumer applies its batches
/// in order anyway, and with a worker per core the five services' tasks
/// kept waking each other across threads. On the 2-core machine, with the
/// whole stack on it, one worker per service raised closed-loop throughput
/// from 665 to 971 sagas/s and cut CPU per saga from 2.28 to 1.66 ms (most
/// of the difference was kernel time in wake-ups and context switches). A
/// service with a busy HTTP API on a larger machine may want more.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match std::env::var(WORKER_THREADS_VAR) {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{WORKER_THREADS_VAR}={v}: expected a whole number of at least 1"),
                )
            })?,
        Err(_) => 1,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// A service's connections, ready to run.
#[derive(Clone, Debug)]
pub struct Host {
    pub settings: CommonSettings,
    pub db: Db,
    pub emitter: Emitter,
}

impl Host {
    /// Opens the database (outbox/inbox migrations included) and the
    /// registry client. Creates `data_dir`.
    pub async fn connect(settings: CommonSettings) -> crate::Result<Host> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| crate::Error::Io {
            doing: format!("creating {}", settings.data_dir.display()),
            source,
        })?;
        // The recorder must exist before the first counter is touched, or
        // everything counted before the first scrape is lost.
        let _ = choreo_telemetry::Metrics::global();
        let db = Db::connect(&settings.database_url).await?;
        let codec = Arc::new(Codec::new(&settings.registry_url));
        Ok(Host {
            settings,
            db,
            emitter: Emitter::new(codec),
        })
    }

    /// Binds the HTTP listener (port 0 picks a free one).
    pub async fn bind(&self) -> crate::Result<TcpListener> {
        TcpListener::bind(self.settings.http_addr)
            .await
            .map_err(|source| crate::Error::Io {
                doing: format!("binding {}", self.settings.http_addr),
                source,
            })
    }

    /// Runs consumer, relay, HTTP and retention until `shutdown`, then
    /// drains in order. Returns the first task error, if any.
    pub async fn run<H: Handler>(
        self,
        listener: TcpListener,
        topics: &[&str],
        handler: Arc<H>,
        routes: OpenApiRouter,
        shutdown: CancellationToken,
    ) -> crate::Result<()> {
        let service = self.settings.service;
        let consumer = Consumer::new(
            ConsumerSpec::new(service, topics),
            self.settings.kafka.clone(),
            self.emitter.codec().clone(),
            self.db.clone(),
            handler,
        )?;
        let readiness = consumer.readiness();
        let relay = Relay::new(self.db.clone(), &self.settings.kafka, service)?;

        // Any task failing stops the whole process: a service that cannot
        // consume must not pretend to be healthy.
        let front = shutdown.child_token();
        let relay_stop = CancellationToken::new();

        let app = http_app(
            service,
            routes
                .merge(probes(readiness, self.db.clone()))
                .merge(crate::dlq::routes(
                    service,
                    self.settings.kafka.clone(),
                    &self.settings.admin_token,
                )),
        );
        let addr = listener.local_addr().ok();
        info!(%service, addr = ?addr, "http listening");
        let http_stop = front.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await
                .map_err(|source| crate::Error::Io {
                    doing: "serving HTTP".to_owned(),
                    source,
                })
        });
        let consumer_task = tokio::spawn(consumer.run(front.clone()));
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
        let retention = tokio::spawn(retention_loop(
            self.db.clone(),
            self.settings.retention,
            self.settings.retention_interval,
            front.clone(),
        ));

        let mut first_error = None;
        let mut consumer_task = consumer_task;
        let mut http = http;
        tokio::select! {
            _ = front.cancelled() => {}
            r = &mut consumer_task => {
                first_error = flatten(r).err();
                front.cancel();
            }
            r = &mut http => {
                first_error = flatten(r).err();
                front.cancel();
            }
        }
        front.cancel();
        for r in [
            if consumer_task.is_finished() {
                None
            } else {
                Some(consumer_task.await)
            },
            if http.is_finished() {
                None
            } else {
                Some(http.await)
            },
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = flatten(r) {
                first_error.get_or_insert(e);
            }
        }
        let _ = retention.await;
        relay_stop.cancel();
        if let Err(e) = flatten(relay_task.await) {
            first_error.get_or_insert(e);
        }
        info!(%service, "stopped");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn flatten(r: Result<crate::Result<()>, tokio::task::JoinError>) -> crate::Result<()> {
    match r {
        Ok(inner) => inner,
        Err(source) => Err(crate::Error::Task {
            task: "service",
            source,
        }),
    }
}

/// The HTTP app served for `service`: `routes`, `GET /openapi.json`
/// documenting them ([`crate::openapi::finish`]) and the JSON error body
/// for every error ([`crate::api_error::with_json_fallbacks`]).
pub fn http_app(service: &str, routes: OpenApiRouter) -> Router {
    let (router, doc) = routes.split_for_parts();
    let doc = crate::openapi::finish(service, doc);
    let router = router
        .layer(axum::middleware::from_fn(crate::trace::http_server_span))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        );
    crate::api_error::with_json_fallbacks(router)
}

#[derive(Clone)]
struct ProbeState {
    readiness: Readiness,
    db: Db,
}

fn probes(readiness: Readiness, db: Db) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .with_state(ProbeState { readiness, db })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "The process is up", body = String,
        content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the consumer has its partitions.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "Consuming its partitions", body = String,
        content_type = "text/plain"),
    (status = 503, description = "Waiting for partition assignment",
        body = crate::openapi::ErrorBody)))]
async fn readyz(State(s): State<ProbeState>) -> Result<&'static str, crate::ApiError> {
    if s.readiness.is_ready() {
        Ok("ready")
    } else {
        Err(crate::ApiError::Unavailable(
            "waiting for partition assignment".into(),
        ))
    }
}

/// The process's metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text exposition", body = String,
        content_type = "text/plain")))]
async fn metrics(State(s): State<ProbeState>) -> String {
    if let Ok(backlog) = s.db.outbox_backlog().await {
        metrics::gauge!("choreo_outbox_backlog").set(backlog as f64);
    }
    choreo_telemetry::Metrics::global().render()
}

/// Purges what is older than `keep` now and every `every` until shutdown.
async fn retention_loop(
    db: Db,
    keep: Duration,
    every: Duration,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    loop {
        match db.purge(keep, keep).await {
            Ok((outbox, inbox)) if outbox + inbox > 0 => {
                info!(outbox, inbox, "purged old outbox and inbox rows");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "retention purge failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_debug_output() {
        assert_eq!(
            redact_url("postgres://order_svc:s3cret@postgres:5432/choreo_order"),
            "postgres://order_svc:***@postgres:5432/choreo_order"
        );
        assert_eq!(redact_url("sqlite://./data/x.db"), "sqlite://./data/x.db");
        let vars = vec![(
            "DATABASE_URL".to_owned(),
            "postgres://u:hunter2@h/db".to_owned(),
        )];
        let s = CommonSettings::from_vars("order", 8080, &vars).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@h"), "{shown}");

        let vars = vec![("CHOREO_ADMIN_TOKEN".to_owned(), "t0p-s3cret".to_owned())];
        let s = CommonSettings::from_vars("inventory", 8082, &vars).unwrap();
        assert_eq!(s.admin_token.expose(), Some("t0p-s3cret"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("t0p-s3cret"), "{shown}");
        assert!(shown.contains("AdminToken(set)"), "{shown}");
        let blank = vec![("CHOREO_ADMIN_TOKEN".to_owned(), "a b".to_owned())];
        let e = CommonSettings::from_vars("inventory", 8082, &blank).unwrap_err();
        assert!(e.0.starts_with("CHOREO_ADMIN_TOKEN: "), "{}", e.0);
    }
}
