//! choreo-communication: mails the customer once when an order is
//! confirmed and once when it is cancelled.
//!
//! Consumes `orders` in group `communication`: `OrderPlaced` feeds a
//! private replica of the orders (this service never reads another's
//! database), `OrderConfirmed` / `OrderCancelled` render a mail with
//! `lettre`, send it (a file per mail by default, SMTP when configured),
//! record it and publish `CustomerNotified` on `notifications` through the
//! outbox. Exactly one mail per order and template: see [`handlers`].
//!
//! # Layout
//!
//! - [`config`]: [`Settings`] from the environment.
//! - [`domain`]: pure decisions and the words of the mails.
//! - [`mail`]: rendering a notice into a MIME message.
//! - [`transport`]: file or SMTP delivery.
//! - [`handlers`]: [`CommunicationHandler`], event → decision → effects.
//! - [`storage`]: `orders_replica` and `notifications`, migrations.
//! - [`http`]: `GET /notifications`.
//! - [`startup`]: [`Application`], built from settings and run until stopped.
//! - [`rebuild`]: the `rebuild-replica` command.
//! - [`cli`]: command-line arguments of the binary.

pub mod cli;
pub mod config;
pub mod domain;
pub mod handlers;
pub mod http;
pub mod mail;
pub mod rebuild;
pub mod startup;
pub mod storage;
pub mod transport;

pub use config::Settings;
pub use handlers::CommunicationHandler;
pub use startup::Application;
