//! Building and running the inventory process on `choreo_bus::Host`:
//! database and migrations, the stock seed, the HTTP listener, then the
//! consumer, relay and API until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use choreo_bus::Host;
use choreo_outbox::Db;

use crate::handlers::InventoryHandler;
use crate::storage::{self, SeedEntry};
use crate::{http, Settings};

/// A built service: connected, migrated, seeded and bound, not yet running.
#[derive(Debug)]
pub struct Application {
    host: Host,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Application {
    /// Connects the database (running the outbox's and this service's
    /// migrations), seeds stock when the table is empty and binds the HTTP
    /// listener (`127.0.0.1:0` picks a free port, see [`Self::port`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let host = Host::connect(settings.common)
            .await
            .context("connecting the inventory database")?;
        host.db
            .migrate(storage::migrator(host.db.backend()))
            .await
            .context("migrating the inventory database")?;
        seed_if_empty(&host.db, &settings.stock_seed_file).await?;
        let listener = host.bind().await?;
        let addr = listener.local_addr().context("reading the bound address")?;
        Ok(Self {
            host,
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
        let handler = Arc::new(InventoryHandler::new(
            self.host.emitter.clone(),
            self.host.db.backend(),
        ));
        let routes = http::router(self.host.db.pool().clone());
        let topics = choreo_events::consumed_by(crate::SERVICE);
        self.host
            .run(self.listener, topics, handler, routes, shutdown)
            .await?;
        Ok(())
    }
}

/// Loads the seed file into an empty `stock` table. The file is only read
/// when it is needed, so a restarted service with its stock in place does
/// not depend on it; when it is needed, missing or malformed is fatal.
pub async fn seed_if_empty(db: &Db, path: &Path) -> anyhow::Result<()> {
    if !storage::stock_is_empty(db.pool()).await? {
        return Ok(());
    }
    let entries = read_seed(path)?;
    let inserted = storage::seed(db.pool(), &entries).await?;
    tracing::info!(path = %path.display(), skus = inserted, "stock seeded");
    Ok(())
}

/// Reads and validates a seed file: a JSON array of `{sku, available}`
/// with distinct, valid SKUs and non-negative amounts.
pub fn read_seed(path: &Path) -> anyhow::Result<Vec<SeedEntry>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading stock seed file {} (set CHOREO_STOCK_SEED_FILE)",
            path.display()
        )
    })?;
    let entries: Vec<SeedEntry> = serde_json::from_str(&text).with_context(|| {
        format!(
            "stock seed file {} is not a JSON array of {{\"sku\": …, \"available\": …}}",
            path.display()
        )
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for entry in &entries {
        anyhow::ensure!(
            entry.available >= 0,
            "stock seed file {}: {} has negative available {}",
            path.display(),
            entry.sku,
            entry.available
        );
        anyhow::ensure!(
            seen.insert(&entry.sku),
            "stock seed file {}: {} is listed twice",
            path.display(),
            entry.sku
        );
    }
    Ok(entries)
}
