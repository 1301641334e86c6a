//! The inventory service as `choreo_bus` runs it (its handler,
//! [`InventoryHandler`], is its [`Service`]): migrations, the stock seed
//! and the routes.

use anyhow::Context as _;
use choreo_bus::{BoxError, Host, Service};
use choreo_outbox::{Backend, Db};
use sqlx::migrate::Migrator;
use std::path::Path;

use crate::handlers::InventoryHandler;
use crate::storage::{self, SeedEntry};
use crate::{http, Settings};

/// A built inventory process: connected, migrated, seeded and bound.
pub type Application = choreo_bus::Application<InventoryHandler>;

impl Service for InventoryHandler {
    type Settings = Settings;
    const MIGRATOR: fn(Backend) -> &'static Migrator = storage::migrator;

    /// Seeds stock when the table is empty.
    async fn start(host: &Host, settings: Settings) -> Result<Self, BoxError> {
        seed_if_empty(&host.db, &settings.stock_seed_file).await?;
        Ok(InventoryHandler::new(
            host.emitter.clone(),
            host.db.backend(),
        ))
    }

    fn routes(&self, host: &Host) -> choreo_bus::openapi::OpenApiRouter {
        http::router(host.db.pool().clone(), &host.settings.admin_token)
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
