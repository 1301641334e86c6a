//! Topic `orders` (`io.choreo.orders`), written by the order service: the
//! start of the saga and its two terminal outcomes.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::event::topic_events;
use crate::{Address, EventMetadata, OrderLine};

/// A customer placed an order; the saga starts here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.orders")]
pub struct OrderPlaced {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// Customer who placed the order.
    pub customer_id: String,
    /// Where notifications go.
    pub customer_email: String,
    /// Ordered lines.
    pub items: Vec<OrderLine>,
    /// Sum of quantity × unit price, minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where the goods go.
    pub shipping_address: Address,
}

/// Every step succeeded. Terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.orders")]
pub struct OrderConfirmed {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// Amount charged, minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// The order was cancelled; participants undo what they hold. Terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.orders")]
pub struct OrderCancelled {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// One of [`crate::reasons`]' order-cancellation reasons (open set).
    pub reason: String,
    /// Human-readable detail.
    pub detail: Option<String>,
}

topic_events! {
    /// Everything published on `orders`.
    pub enum OrdersEvent {
        topic: Orders,
        dir: "orders",
        namespace: "io.choreo.orders",
        any: Orders,
        events: [OrderPlaced, OrderConfirmed, OrderCancelled],
    }
}
