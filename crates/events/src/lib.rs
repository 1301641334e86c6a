//! Integration contracts of the choreo saga: the Avro schemas of every
//! event and command, the Rust types that mirror them, and the topic
//! catalogue.
//!
//! The `.avsc` files under `schemas/` at the workspace root are the source
//! of truth; they are compiled into this crate and registered verbatim.
//! The Rust types derive their own Avro schema only so the tests can prove,
//! in Parsing Canonical Form, that types and files have not drifted apart.
//!
//! This crate knows no Kafka, no registry and no business rule: it maps
//! between typed events, Avro values and JSON. Framing (Confluent magic
//! byte + schema id), producing and consuming belong to `choreo-bus`.
//!
//! # Layout
//!
//! - [`topic`]: [`Topic`] names and owners, [`SERVICES`], [`dlq_topic`].
//! - [`common`]: types shared by many schemas — [`EventMetadata`],
//!   [`OrderLine`], [`Address`].
//! - [`contract`]: the field contract — limits every service checks
//!   (ids, e-mail, address, items, money, currency).
//! - [`values`]: the contract's value types every service works with —
//!   [`OrderId`], [`Currency`], [`Money`] — and [`InvalidValue`].
//! - [`event`]: the [`Event`] trait, implemented by every record type.
//! - [`orders`], [`inventory`], [`shipments`], [`payments`],
//!   [`notifications`], [`requests`]: one module per topic — its records
//!   and its topic enum ([`OrdersEvent`], …, [`OrderRequest`]).
//! - [`any`]: [`AnyEvent`], any event of any topic; decode by full name,
//!   encode, JSON.
//! - [`mod@catalogue`]: [`catalogue()`] of every [`SchemaEntry`].
//! - [`ingress`]: plain-JSON commands on `order-requests`
//!   ([`OrderRequest::from_json_bytes`]).
//! - [`reasons`]: reason codes and notification [`templates`].
//! - [`error`]: the crate's [`enum@Error`] and [`Result`].

pub mod any;
pub mod catalogue;
pub mod common;
pub mod contract;
pub mod error;
pub mod event;
pub mod ingress;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod reasons;
pub mod requests;
pub mod saga;
pub mod shipments;
pub mod topic;
pub mod values;

pub use crate::any::AnyEvent;
pub use crate::catalogue::{catalogue, SchemaEntry};
pub use crate::common::{Address, EventMetadata, OrderLine};
pub use crate::error::{Error, Result};
pub use crate::event::{Event, HAND_WRITTEN_PRODUCER};
pub use crate::ingress::INGRESS_PRODUCER;
pub use crate::inventory::{InventoryEvent, StockReleased, StockReservationFailed, StockReserved};
pub use crate::notifications::{CustomerNotified, NotificationsEvent};
pub use crate::orders::{OrderCancelled, OrderConfirmed, OrderPlaced, OrdersEvent};
pub use crate::payments::{PaymentCompleted, PaymentFailed, PaymentRefunded, PaymentsEvent};
pub use crate::reasons::templates;
pub use crate::requests::{CancelOrder, OrderRequest, PlaceOrder};
pub use crate::shipments::{
    ShipmentCancelled, ShipmentManifestFailed, ShipmentManifested, ShipmentsEvent,
};
pub use crate::topic::{consumed_by, dlq_topic, Topic, CONSUMERS, SERVICES};
pub use crate::values::{Currency, InvalidValue, Money, OrderId};
