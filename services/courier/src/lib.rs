//! choreo-courier: the saga participant that ships orders.
//!
//! On `StockReserved` it manifests a shipment when the destination country
//! is served (`ShipmentManifested`, carrying what payment needs to charge)
//! or reports `ShipmentManifestFailed(NO_ROUTE)`; it cancels a manifested
//! shipment when the payment fails or the order is cancelled
//! (`ShipmentCancelled`). A cancel that arrives first leaves a tombstone,
//! so a late reservation manifests nothing; each order gets at most one
//! shipment however often, late or out of order its events arrive.
//!
//! # Layout
//!
//! - [`config`]: [`Settings`] from the environment.
//! - [`domain`]: the pure per-order state machine ([`domain::decide`]).
//! - [`handlers`]: the bus handler: event → storage → decide → emit.
//! - [`storage`]: the `shipments` table and migrations.
//! - [`http`]: the shipment lookup API.
//! - [`startup`]: [`Application`], wiring it all onto `choreo_bus::Host`.

pub mod config;
pub mod domain;
pub mod handlers;
pub mod http;
pub mod startup;
pub mod storage;

pub use config::Settings;
pub use startup::Application;

/// The service's name: consumer group, inbox consumer, `producer` of its
/// events and `dlq.courier`.
pub const SERVICE: &str = "courier";
