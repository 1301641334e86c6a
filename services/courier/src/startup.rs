//! The courier service as `choreo_bus` runs it (its handler,
//! [`CourierHandler`], is its [`Service`]): migrations, the routing it
//! serves and the routes.

use choreo_bus::{BoxError, Host, Service};
use choreo_outbox::Backend;
use sqlx::migrate::Migrator;

use crate::handlers::CourierHandler;
use crate::{http, storage, Settings};

/// A built courier process: connected, migrated and bound.
pub type Application = choreo_bus::Application<CourierHandler>;

impl Service for CourierHandler {
    type Settings = Settings;
    const MIGRATOR: fn(Backend) -> &'static Migrator = storage::migrator;

    /// Logs the routing it serves (where it delivers, with which carrier).
    async fn start(host: &Host, settings: Settings) -> Result<Self, BoxError> {
        tracing::info!(
            countries = ?settings.routing.countries.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            carrier = %settings.routing.carrier,
            "courier routing"
        );
        Ok(CourierHandler::new(
            host.emitter.clone(),
            host.db.backend(),
            settings.routing,
        ))
    }

    fn routes(&self, host: &Host) -> choreo_bus::openapi::OpenApiRouter {
        http::router(host.db.pool().clone())
    }
}
