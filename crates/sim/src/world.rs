//! The five services as the simulation runs them: each its real handler on
//! its own temporary SQLite database, one registry and codec for all, the
//! order deadline on a clock the simulation sets, and Communication's mails
//! kept in memory.
//!
//! A world serves many schedules in a row: each schedule names its orders,
//! SKUs and customers with a prefix of its own (`r<run>-`), and leaves every
//! order finished and every outbox empty. A schedule that fails may leave
//! neither, so the runner replaces the world after one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use choreo_bus::trace::TraceContext;
use choreo_bus::{Applied, Codec, Emitter, Handler, HandlerError, Incoming};
use choreo_communication::transport::{MemoryTransport, Transport};
use choreo_communication::CommunicationHandler;
use choreo_courier::domain::{Country, Routing};
use choreo_courier::handlers::CourierHandler;
use choreo_inventory::handlers::InventoryHandler;
use choreo_order::deadline::Clock;
use choreo_order::handlers::Orders;
use choreo_outbox::{Backend, Db, UnitOfWork};
use choreo_payment::PaymentHandler;
use choreo_testkit::service::TestRegistry;
use tempfile::TempDir;

/// Where every schedule's clock starts (2026-01-01T00:00:00Z).
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// One of the five services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Courier,
    Communication,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Courier,
        Service::Communication,
    ];

    /// The service's name: its inbox's consumer name and its `dlq.` topic.
    pub fn name(self) -> &'static str {
        match self {
            Service::Order => choreo_order::config::SERVICE,
            Service::Inventory => choreo_inventory::SERVICE,
            Service::Payment => choreo_payment::config::SERVICE,
            Service::Courier => choreo_courier::SERVICE,
            Service::Communication => choreo_communication::config::SERVICE,
        }
    }

    /// The topics it consumes, from the topic catalogue.
    pub fn topics(self) -> &'static [&'static str] {
        choreo_events::consumed_by(self.name())
    }
}

/// The five services' databases and handlers.
pub struct World {
    pub codec: Arc<Codec>,
    emitter: Emitter,
    pub clock: Clock,
    pub mailbox: MemoryTransport,
    pub orders: Orders,
    pub order_db: Db,
    inventory: (Db, InventoryHandler),
    payment: (Db, PaymentHandler),
    courier: (Db, CourierHandler),
    communication: (Db, CommunicationHandler),
    runs: u64,
    _registry: Arc<TestRegistry>,
    _dir: TempDir,
}

/// The reason a [`Crashing`] handler fails with.
pub const CRASH_REASON: &str = "simulated crash before commit";

/// A handler whose unit of work never commits: the real handler runs (its
/// effects outside the database, a sent mail, happen), then the service
/// "crashes" before the commit and the message comes back.
struct Crashing<H>(H);

impl<H: Handler> Handler for Crashing<H> {
    async fn handle(&self, uow: &mut UnitOfWork<'_>, msg: &Incoming) -> Result<(), HandlerError> {
        self.0.handle(uow, msg).await?;
        Err(HandlerError::retryable(CRASH_REASON))
    }
}

async fn apply_with<H: Handler + Clone>(
    service: Service,
    db: &Db,
    handler: &H,
    incoming: &Incoming,
    crash_before_commit: bool,
) -> Result<Applied, HandlerError> {
    let ctx = TraceContext::new_root();
    if crash_before_commit {
        let crashing = Crashing(handler.clone());
        choreo_bus::apply(service.name(), db, &crashing, incoming, ctx).await
    } else {
        choreo_bus::apply(service.name(), db, handler, incoming, ctx).await
    }
}

async fn open(dir: &TempDir, service: Service) -> anyhow::Result<Db> {
    let url = choreo_outbox::testing::sqlite_url(&dir.path().join(service.name()));
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("opening {}'s database", service.name()))?;
    let migrator = match service {
        Service::Order => choreo_order::startup::migrator(Backend::Sqlite),
        Service::Inventory => choreo_inventory::storage::migrator(Backend::Sqlite),
        Service::Payment => choreo_payment::storage::migrator(Backend::Sqlite),
        Service::Courier => choreo_courier::storage::migrator(Backend::Sqlite),
        Service::Communication => choreo_communication::storage::migrator(Backend::Sqlite),
    };
    db.migrate(migrator)
        .await
        .with_context(|| format!("migrating {}'s database", service.name()))?;
    Ok(db)
}

impl World {
    /// Five fresh databases, migrated, behind `registry`.
    pub async fn new(registry: Arc<TestRegistry>) -> anyhow::Result<World> {
        let dir = databases_dir().context("a folder for the databases")?;
        let codec = Arc::new(Codec::new(&registry.url));
        let emitter = Emitter::new(codec.clone());
        let emitter_for_world = emitter.clone();
        let clock = Clock::manual(EPOCH_MS);
        let mailbox = MemoryTransport::default();
        let order_db = open(&dir, Service::Order).await?;
        let orders = Orders::new(order_db.clone(), emitter.clone(), Duration::from_secs(30))
            .with_clock(clock.clone());
        let inventory = open(&dir, Service::Inventory).await?;
        let payment = open(&dir, Service::Payment).await?;
        let courier = open(&dir, Service::Courier).await?;
        let communication = open(&dir, Service::Communication).await?;
        // Each schedule sets its own (`set_served`).
        let routing = routing(&["DE"])?;
        let from = "choreo <orders@choreo.local>"
            .parse()
            .context("the sender address")?;
        Ok(World {
            inventory: (
                inventory,
                InventoryHandler::new(emitter.clone(), Backend::Sqlite),
            ),
            payment: (
                payment,
                PaymentHandler::new(emitter.clone(), Backend::Sqlite),
            ),
            courier: (
                courier,
                CourierHandler::new(emitter.clone(), Backend::Sqlite, routing),
            ),
            communication: (
                communication,
                CommunicationHandler::new(emitter, Transport::Memory(mailbox.clone()), from),
            ),
            codec,
            emitter: emitter_for_world,
            clock,
            mailbox,
            orders,
            order_db,
            runs: 0,
            _registry: registry,
            _dir: dir,
        })
    }

    /// How many schedules this world has run.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// A number no earlier schedule on this world used: the prefix of the
    /// next schedule's names.
    pub fn next_run(&mut self) -> u64 {
        self.runs += 1;
        self.runs
    }

    /// Order's deadline for the orders placed from now on.
    pub fn set_deadline(&mut self, deadline_ms: i64) {
        let deadline = Duration::from_millis(u64::try_from(deadline_ms).unwrap_or(0));
        self.orders = Orders::new(self.order_db.clone(), self.emitter.clone(), deadline)
            .with_clock(self.clock.clone());
    }

    /// The countries courier serves from now on.
    pub fn set_served(&mut self, countries: &[&str]) -> anyhow::Result<()> {
        self.courier.1 =
            CourierHandler::new(self.emitter.clone(), Backend::Sqlite, routing(countries)?);
        Ok(())
    }

    pub fn db(&self, service: Service) -> &Db {
        match service {
            Service::Order => &self.order_db,
            Service::Inventory => &self.inventory.0,
            Service::Payment => &self.payment.0,
            Service::Courier => &self.courier.0,
            Service::Communication => &self.communication.0,
        }
    }

    /// Applies `incoming` to `service` through the consumer's own apply
    /// step; with `crash_before_commit` the handler runs and the unit of
    /// work is rolled back instead of committed.
    pub async fn apply(
        &self,
        service: Service,
        incoming: &Incoming,
        crash_before_commit: bool,
    ) -> Result<Applied, HandlerError> {
        let db = self.db(service);
        let crash = crash_before_commit;
        match service {
            Service::Order => apply_with(service, db, &self.orders, incoming, crash).await,
            Service::Inventory => apply_with(service, db, &self.inventory.1, incoming, crash).await,
            Service::Payment => apply_with(service, db, &self.payment.1, incoming, crash).await,
            Service::Courier => apply_with(service, db, &self.courier.1, incoming, crash).await,
            Service::Communication => {
                apply_with(service, db, &self.communication.1, incoming, crash).await
            }
        }
    }
}

fn routing(countries: &[&str]) -> anyhow::Result<Routing> {
    let countries = countries
        .iter()
        .map(|c| Country::parse(c))
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| anyhow::anyhow!("served countries: {e}"))?;
    Ok(Routing {
        countries,
        carrier: "SIMPOST".to_owned(),
    })
}

/// A temporary folder for a world's databases: in memory-backed `/dev/shm`
/// when the machine has it (nothing here needs to outlive the process, and
/// SQLite's checkpoints then cost no disk flushes), else the usual
/// temporary folder. `CHOREO_SIM_DB_DIR` chooses another parent.
///
/// Folders are named `choreo-sim-<pid>-…`; those a killed run left behind
/// (their process is gone) are removed first, so an interrupted run does
/// not keep memory.
fn databases_dir() -> std::io::Result<TempDir> {
    let parent = std::env::var_os("CHOREO_SIM_DB_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let shm = std::path::Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_path_buf())
        });
    let Some(parent) = parent else {
        return tempfile::tempdir();
    };
    remove_abandoned(&parent);
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&parent)
        .or_else(|_| tempfile::tempdir())
}

const DIR_PREFIX: &str = "choreo-sim-";

/// Removes the world folders under `parent` whose process has exited.
fn remove_abandoned(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = std::path::Path::new("/proc").join(pid.to_string()).exists();
        if !alive {
            // Best effort: another run may be removing it at the same time.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
