//! The order service as `choreo_bus` runs it ([`Order`] is its
//! [`Service`]): migrations, [`Orders`] as both handler and HTTP state,
//! and the deadline timer beside the host's tasks.

use std::time::Duration;

use choreo_bus::{BoxError, Handler, HandlerError, Host, Incoming, Service};
use choreo_outbox::Backend;
use choreo_outbox::UnitOfWork;
use sqlx::migrate::Migrator;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::handlers::Orders;
use crate::http;

choreo_outbox::service_migrations!();

/// The order service: its operations and how often its deadline timer
/// looks for due orders.
#[derive(Debug)]
pub struct Order {
    orders: Orders,
    timer_tick: Duration,
}

impl Order {
    /// The service's operations, for tests that drive them directly.
    pub fn orders(&self) -> &Orders {
        &self.orders
    }
}

/// A built order process: connected, migrated and bound.
pub type Application = choreo_bus::Application<Order>;

/// Order's topics are handled by its operations.
impl Handler for Order {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        self.orders.handle(uow, msg).await
    }
}

impl Service for Order {
    type Settings = Settings;
    const MIGRATOR: fn(Backend) -> &'static Migrator = migrator;

    async fn start(host: &Host, settings: Settings) -> Result<Self, BoxError> {
        Ok(Order {
            orders: Orders::new(host.db.clone(), host.emitter.clone(), settings.deadline),
            timer_tick: settings.timer_tick,
        })
    }

    fn routes(&self, _host: &Host) -> choreo_bus::openapi::OpenApiRouter {
        http::router(self.orders.clone())
    }

    /// The deadline timer.
    fn spawn_tasks(&self, stop: CancellationToken) -> Vec<JoinHandle<()>> {
        let timer = self
            .orders
            .clone()
            .run_deadline_timer(self.timer_tick, stop);
        vec![tokio::spawn(timer)]
    }
}
