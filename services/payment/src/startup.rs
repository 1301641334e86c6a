//! The payment service as `choreo_bus` runs it (its handler,
//! [`PaymentHandler`], is its [`Service`]): migrations, the accounts seed
//! and the routes.

use choreo_bus::{BoxError, Host, Service};
use choreo_outbox::Backend;
use sqlx::migrate::Migrator;
use tracing::info;

use crate::config::Settings;
use crate::handlers::PaymentHandler;
use crate::{http, storage};

/// A built payment process: connected, migrated, seeded and bound.
pub type Application = choreo_bus::Application<PaymentHandler>;

impl Service for PaymentHandler {
    type Settings = Settings;
    const MIGRATOR: fn(Backend) -> &'static Migrator = storage::migrator;

    /// Seeds the accounts when the table is empty.
    async fn start(host: &Host, settings: Settings) -> Result<Self, BoxError> {
        let seeded = storage::seed_accounts_if_empty(&host.db, &settings.seed_file).await?;
        if seeded > 0 {
            info!(accounts = seeded, file = %settings.seed_file.display(), "accounts seeded");
        }
        Ok(PaymentHandler::new(host.emitter.clone(), host.db.backend()))
    }

    fn routes(&self, host: &Host) -> choreo_bus::openapi::OpenApiRouter {
        http::router(host.db.clone(), &host.settings.admin_token)
    }
}
