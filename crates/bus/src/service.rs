//! What the five services' processes share, written once: a service names
//! what differs (its settings, migrations, start-up work, routes, any task
//! of its own) by implementing [`Service`] on its [`Handler`] — the value
//! that consumes its topics is the service; [`Application`] builds and runs
//! it on a [`Host`]; [`serve`] is a service binary's `main`.
//!
//! Build order, so everything that can fail at start fails before the
//! first message is consumed: database (the outbox's and inbox's
//! migrations), the service's migrations, its own start-up
//! ([`Service::start`]), the HTTP listener. Then [`Application::run_until_stopped`]
//! runs the host's consumer, relay, HTTP and retention together with the
//! service's own tasks ([`Service::spawn_tasks`]) under one shutdown token.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use choreo_outbox::{Backend, Db};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{BoxError, Error, Handler, Host, Result, ServiceSettings};

/// One service, as its process runs it: the [`Handler`] of its topics,
/// with what it needs to start and serve.
pub trait Service: Handler + Sized {
    /// The service's settings.
    type Settings: ServiceSettings;
    /// The service's own migrations (`choreo_outbox::service_migrations!`).
    const MIGRATOR: fn(Backend) -> &'static Migrator;

    /// The service's own start-up work on a connected, migrated host (a
    /// seed, a mail transport, what it logs about its settings), ending in
    /// the handler the host's consumer runs.
    fn start(
        host: &Host,
        settings: Self::Settings,
    ) -> impl Future<Output = std::result::Result<Self, BoxError>> + Send;
    /// The service's HTTP routes (the host adds its probes).
    fn routes(&self, host: &Host) -> crate::openapi::OpenApiRouter;
    /// Tasks of the service's own beside the host's, stopped with them
    /// (Order's deadline timer). None by default.
    fn spawn_tasks(&self, _stop: CancellationToken) -> Vec<JoinHandle<()>> {
        Vec::new()
    }
}

/// A built service: connected, migrated, started and bound, not yet
/// running — so a test that asked for port 0 can read the real port.
#[derive(Debug)]
pub struct Application<S> {
    host: Host,
    listener: TcpListener,
    addr: SocketAddr,
    service: Arc<S>,
}

impl<S: Service> Application<S> {
    pub async fn build(settings: S::Settings) -> Result<Self> {
        let common = settings.common().clone();
        let name = common.service;
        let host = Host::connect(common).await.map_err(|e| Error::Start {
            doing: format!("opening the {name} database"),
            source: e.into(),
        })?;
        host.db
            .migrate((S::MIGRATOR)(host.db.backend()))
            .await
            .map_err(|e| Error::Start {
                doing: format!("migrating the {name} database"),
                source: e.into(),
            })?;
        let service = S::start(&host, settings)
            .await
            .map_err(|source| Error::Start {
                doing: format!("starting {name}"),
                source,
            })?;
        let listener = host.bind().await?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            doing: "reading the bound HTTP address".into(),
            source,
        })?;
        Ok(Self {
            host,
            listener,
            addr,
            service: Arc::new(service),
        })
    }

    /// The address the HTTP API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound HTTP port (the real one when built with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The service's database, for tests that inspect it.
    pub fn db(&self) -> &Db {
        &self.host.db
    }

    /// The service itself, for tests that drive its operations directly.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The service's HTTP routes as served, with `/openapi.json` (without
    /// the host's probes).
    pub fn router(&self) -> Router {
        crate::host::http_app(self.host.settings.service, self.service.routes(&self.host))
    }

    /// Runs the consumer, relay, HTTP API, retention and the service's own
    /// tasks until `shutdown` is cancelled or one of the host's tasks
    /// fails, then drains them.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let own_stop = shutdown.child_token();
        let own = self.service.spawn_tasks(own_stop.clone());
        let handler = self.service.clone();
        let routes = self.service.routes(&self.host);
        let topics = choreo_events::consumed_by(self.host.settings.service);
        let result = self
            .host
            .run(self.listener, topics, handler, routes, shutdown)
            .await;
        // The host may stop on a task failure without `shutdown`.
        own_stop.cancel();
        for task in own {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a service task stopped abnormally");
            }
        }
        result
    }
}

/// A service binary's `main`: the runtime ([`crate::runtime`]), settings,
/// logging, build, then run until Ctrl-C or SIGTERM.
pub fn serve<S: Service>() -> std::result::Result<(), BoxError> {
    crate::runtime()?.block_on(async {
        let settings = S::Settings::from_env()?;
        let common = settings.common();
        let name = format!("choreo-{}", common.service);
        choreo_telemetry::init(&name, "info", common.log_json)?;
        let result = run::<S>(settings).await;
        choreo_telemetry::shutdown();
        result
    })
}

async fn run<S: Service>(settings: S::Settings) -> std::result::Result<(), BoxError> {
    let app = Application::<S>::build(settings).await?;
    app.run_until_stopped(shutdown_on_signal()).await?;
    Ok(())
}

/// A token cancelled on the first Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        choreo_telemetry::shutdown_signal().await;
        trigger.cancel();
    });
    token
}
