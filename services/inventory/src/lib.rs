//! choreo-inventory: the saga participant that holds stock for orders.
//!
//! On `OrderPlaced` it reserves every line or none (`StockReserved`, which
//! carries the order summary on to courier and payment, or
//! `StockReservationFailed`); it releases the reservation when shipping
//! fails, the shipment is cancelled or the order is cancelled
//! (`StockReleased`), and commits it when the order is confirmed. Stock
//! never goes below zero, and each order's reservation moves stock at most
//! once however often, late or out of order its events arrive.
//!
//! # Layout
//!
//! - [`config`]: [`Settings`] from the environment.
//! - [`domain`]: the pure per-order state machine ([`domain::decide`]).
//! - [`handlers`]: the bus handler: event → storage → decide → emit.
//! - [`storage`]: the `stock` and `reservations` tables, migrations, seed.
//! - [`http`]: the stock and reservation API.
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
/// events and `dlq.inventory`.
pub const SERVICE: &str = "inventory";
