//! Building and running the courier process on `choreo_bus::Host`:
//! database and migrations, the HTTP listener, then the consumer, relay
//! and API until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use choreo_bus::Host;
use choreo_outbox::Db;

use crate::domain::Routing;
use crate::handlers::CourierHandler;
use crate::{http, storage, Settings};

/// A built service: connected, migrated and bound, not yet running.
#[derive(Debug)]
pub struct Application {
    host: Host,
    routing: Routing,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Application {
    /// Connects the database (running the outbox's and this service's
    /// migrations) and binds the HTTP listener (`127.0.0.1:0` picks a free
    /// port, see [`Self::port`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let host = Host::connect(settings.common)
            .await
            .context("connecting the courier database")?;
        host.db
            .migrate(storage::migrator(host.db.backend()))
            .await
            .context("migrating the courier database")?;
        let listener = host.bind().await?;
        let addr = listener.local_addr().context("reading the bound address")?;
        tracing::info!(
            countries = ?settings.routing.countries.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            carrier = %settings.routing.carrier,
            "courier routing"
        );
        Ok(Self {
            host,
            routing: settings.routing,
            listener,
            addr,
        })
    }

    /// The address the HTTP API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The service's database, for tests that inspect it.
    pub fn db(&self) -> &Db {
        &self.host.db
    }

    /// Runs the consumer, relay and HTTP API until `shutdown` is cancelled,
    /// then drains them.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handler = Arc::new(CourierHandler::new(
            self.host.emitter.clone(),
            self.host.db.backend(),
            self.routing,
        ));
        let routes = http::router(self.host.db.pool().clone());
        let topics = choreo_events::consumed_by(crate::SERVICE);
        self.host
            .run(self.listener, topics, handler, routes, shutdown)
            .await?;
        Ok(())
    }
}
