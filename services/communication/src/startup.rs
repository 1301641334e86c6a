//! The communication service as `choreo_bus` runs it (its handler,
//! [`CommunicationHandler`], is its [`Service`]): migrations, the mail
//! transport and the routes.

use choreo_bus::{BoxError, Host, Service};
use choreo_outbox::Backend;
use sqlx::migrate::Migrator;
use tracing::info;

use crate::config::Settings;
use crate::handlers::CommunicationHandler;
use crate::transport::Transport;
use crate::{http, storage};

/// A built communication process: connected, migrated, transport chosen,
/// bound.
pub type Application = choreo_bus::Application<CommunicationHandler>;

impl Service for CommunicationHandler {
    type Settings = Settings;
    const MIGRATOR: fn(Backend) -> &'static Migrator = storage::migrator;

    /// Chooses the mail transport (an unusable SMTP URL fails here).
    async fn start(host: &Host, settings: Settings) -> Result<Self, BoxError> {
        let transport = Transport::new(settings.smtp_url.as_deref(), settings.mail_dir())?;
        match &transport {
            Transport::File(files) => info!(dir = %files.dir().display(), "mails go to files"),
            Transport::Smtp(_) => info!("mails go over SMTP"),
            Transport::Memory(_) => info!("mails are kept in memory"),
        }
        Ok(CommunicationHandler::new(
            host.emitter.clone(),
            transport,
            settings.mail_from,
        ))
    }

    fn routes(&self, host: &Host) -> choreo_bus::openapi::OpenApiRouter {
        http::router(host.db.clone())
    }
}
