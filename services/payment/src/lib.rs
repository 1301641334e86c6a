//! choreo-payment: charges the customer once a shipment is manifested and
//! refunds the charge when the order is cancelled.
//!
//! Consumes `shipments` (`ShipmentManifested`) and `orders`
//! (`OrderCancelled`) in group `payment`; publishes `PaymentCompleted`,
//! `PaymentFailed` and `PaymentRefunded` on `payments` through the outbox.
//! Per customer, money is conserved: initial balance = balance + net
//! charges, also with several replicas on one PostgreSQL database.
//!
//! # Layout
//!
//! - [`config`]: [`Settings`] from the environment.
//! - [`domain`]: the pure payment state machine ([`domain::decide`]).
//! - [`handlers`]: [`PaymentHandler`], event → decision → effects.
//! - [`storage`]: `accounts` and `payments` tables, seed, migrations.
//! - [`http`]: `/accounts/{customer_id}`, `/payments/{order_id}`.
//! - [`startup`]: [`Application`], built from settings and run until stopped.

pub mod config;
pub mod domain;
pub mod handlers;
pub mod http;
pub mod startup;
pub mod storage;

pub use config::Settings;
pub use handlers::PaymentHandler;
pub use startup::Application;
