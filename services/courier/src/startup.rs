//! The courier service as `choreo_bus` runs it ([`Courier`] is its
//! [`Service`]): migrations, the routing it serves, the handler and the
//! routes.

use std::sync::Arc;

use axum::Router;
use choreo_bus::{BoxError, Host, Service};
use choreo_outbox::Backend;
use sqlx::migrate::Migrator;

use crate::domain::Routing;
use crate::handlers::CourierHandler;
use crate::{http, storage, Settings};

/// The courier service: where it delivers and with which carrier.
#[derive(Debug)]
pub struct Courier {
    routing: Routing,
}

/// A built courier process: connected, migrated and bound.
pub type Application = choreo_bus::Application<Courier>;

impl Service for Courier {
    type Settings = Settings;
    type Handler = CourierHandler;

    const MIGRATOR: fn(Backend) -> &'static Migrator = storage::migrator;

    /// Logs the routing it serves.
    async fn start(_host: &Host, settings: Settings) -> Result<Self, BoxError> {
        tracing::info!(
            countries = ?settings.routing.countries.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            carrier = %settings.routing.carrier,
            "courier routing"
        );
        Ok(Courier {
            routing: settings.routing,
        })
    }

    fn handler(&self, host: &Host) -> Arc<CourierHandler> {
        Arc::new(CourierHandler::new(
            host.emitter.clone(),
            host.db.backend(),
            self.routing.clone(),
        ))
    }

    fn routes(&self, host: &Host) -> Router {
        http::router(host.db.pool().clone())
    }
}
