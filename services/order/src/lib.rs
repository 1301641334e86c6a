//! choreo's order service: the entry and the end of the saga.
//!
//! It accepts orders (HTTP or `PlaceOrder` on `order-requests`), emits
//! `OrderPlaced`, follows the other services' events on `inventory`,
//! `shipments` and `payments`, and decides each order's single outcome:
//! `OrderConfirmed` or `OrderCancelled` — the latter also when the order's
//! deadline passes or the customer cancels. See services/README.md,
//! section "order", for the table this implements.
//!
//! # Layout
//!
//! - [`config`]: [`Settings`] from the environment.
//! - [`domain`]: validation and the pure state machine ([`domain::decide`]).
//! - [`handlers`]: [`handlers::Orders`] — load, decide, save, emit; the
//!   bus handler.
//! - [`deadline`]: the [`deadline::Clock`] and the deadline timer.
//! - [`storage`]: the `orders` and `order_timeline` tables.
//! - [`http`]: the REST API.
//! - [`startup`]: [`Application`], wiring it all onto `choreo_bus::Host`.

pub mod config;
pub mod deadline;
pub mod domain;
pub mod handlers;
pub mod http;
pub mod startup;
pub mod storage;

pub use crate::config::Settings;
pub use crate::startup::Application;
