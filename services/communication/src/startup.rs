//! Wiring: connect the database and the registry client, run migrations,
//! pick the mail transport, bind the HTTP listener, then hand everything to
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
use crate::handlers::CommunicationHandler;
use crate::transport::Transport;
use crate::{http, storage};

/// A built service: database migrated, transport chosen, listener bound.
#[derive(Debug)]
pub struct Application {
    host: Host,
    listener: TcpListener,
    handler: Arc<CommunicationHandler>,
}

impl Application {
    /// Everything that can fail at start fails here, before any message is
    /// consumed: database, migrations, SMTP URL, port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let transport = Transport::new(settings.smtp_url.as_deref(), settings.mail_dir())
            .map_err(anyhow::Error::msg)?;
        match &transport {
            Transport::File(files) => info!(dir = %files.dir().display(), "mails go to files"),
            Transport::Smtp(_) => info!("mails go over SMTP"),
            Transport::Memory(_) => info!("mails are kept in memory"),
        }
        let host = Host::connect(settings.common)
            .await
            .context("connecting the communication database")?;
        host.db
            .migrate(storage::migrator(host.db.backend()))
            .await
            .context("running communication migrations")?;
        let handler = Arc::new(CommunicationHandler::new(
            host.emitter.clone(),
            transport,
            settings.mail_from,
        ));
        let listener = host.bind().await?;
        Ok(Self {
            host,
            listener,
            handler,
        })
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
        let routes = http::router(self.host.db.clone());
        self.host
            .run(
                self.listener,
                choreo_events::consumed_by(crate::config::SERVICE),
                self.handler,
                routes,
                shutdown,
            )
            .await?;
        Ok(())
    }
}
