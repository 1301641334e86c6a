//! Building and running the service: connect, migrate, bind, then run the
//! consumer, relay and HTTP server (all through [`choreo_bus::Host`]) plus
//! the deadline timer, under one shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use choreo_bus::Host;

use crate::config::Settings;
use crate::handlers::Orders;
use crate::http;

choreo_outbox::service_migrations!();

/// A built service: database migrated, HTTP listener bound (so a test that
/// asked for port 0 can read the real port before running it).
#[derive(Debug)]
pub struct Application {
    host: Host,
    listener: TcpListener,
    orders: Orders,
    timer_tick: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let host = Host::connect(settings.common)
            .await
            .context("opening the order database")?;
        host.db
            .migrate(migrator(host.db.backend()))
            .await
            .context("migrating the order database")?;
        let listener = host.bind().await.context("binding the HTTP listener")?;
        let orders = Orders::new(host.db.clone(), host.emitter.clone(), settings.deadline);
        Ok(Application {
            host,
            listener,
            orders,
            timer_tick: settings.timer_tick,
        })
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound HTTP port (the real one when built with port 0).
    pub async fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The service's operations, for tests that drive them directly.
    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    /// The service's HTTP routes (without the probes the host adds).
    pub fn router(&self) -> Router {
        http::router(self.orders.clone())
    }

    /// Runs until `shutdown` is cancelled or a task fails; stops the timer
    /// with everything else.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let timer_stop = shutdown.child_token();
        let timer = tokio::spawn(
            self.orders
                .clone()
                .run_deadline_timer(self.timer_tick, timer_stop.clone()),
        );
        let topics = choreo_events::consumed_by(crate::config::SERVICE);
        let result = self
            .host
            .run(
                self.listener,
                topics,
                Arc::new(self.orders.clone()),
                http::router(self.orders),
                shutdown,
            )
            .await;
        // The host may stop on a task failure without `shutdown`.
        timer_stop.cancel();
        if let Err(e) = timer.await {
            tracing::warn!(error = %e, "deadline timer panicked");
        }
        result.context("running the order service")
    }
}
