//! Wiring: connect the database and the registry client, run migrations,
//! seed the accounts, bind the HTTP listener, then hand everything to
//! [`choreo_bus::Host::run`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use choreo_bus::Host;
use choreo_outbox::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::handlers::PaymentHandler;
use crate::{http, storage};

/// A built service: database migrated and seeded, listener bound.
#[derive(Debug)]
pub struct Application {
    host: Host,
    listener: TcpListener,
}

impl Application {
    /// Everything that can fail at start fails here, before any message is
    /// consumed: database, migrations, seed file, port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let host = Host::connect(settings.common)
            .await
            .context("connecting the payment database")?;
        host.db
            .migrate(storage::migrator(host.db.backend()))
            .await
            .context("running payment migrations")?;
        let seeded = storage::seed_accounts_if_empty(&host.db, &settings.seed_file).await?;
        if seeded > 0 {
            info!(accounts = seeded, file = %settings.seed_file.display(), "accounts seeded");
        }
        let listener = host.bind().await?;
        Ok(Self { host, listener })
    }

    /// The bound HTTP address (port 0 in settings picks a free port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn db(&self) -> &Db {
        &self.host.db
    }

    /// Consumes, relays and serves HTTP until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handler = Arc::new(PaymentHandler::new(
            self.host.emitter.clone(),
            self.host.db.backend(),
        ));
        let routes = http::router(self.host.db.clone());
        self.host
            .run(
                self.listener,
                choreo_events::consumed_by(crate::config::SERVICE),
                handler,
                routes,
                shutdown,
            )
            .await?;
        Ok(())
    }
}
