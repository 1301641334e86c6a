//! Topic `inventory` (`io.choreo.inventory`), written by the inventory
//! service: reservations and their compensation.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::event::topic_events;
use crate::{Address, EventMetadata, OrderLine};

/// Stock for every line is reserved. Carries the order summary forward so
/// courier and payment can act on it alone, without having seen
/// `OrderPlaced` (events on different topics arrive in any order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.inventory")]
pub struct StockReserved {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// Reserved lines.
    pub items: Vec<OrderLine>,
    /// Customer who placed the order.
    pub customer_id: String,
    /// Where notifications go.
    pub customer_email: String,
    /// Order total, minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where the goods go.
    pub shipping_address: Address,
}

/// Nothing could be reserved; nothing is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.inventory")]
pub struct StockReservationFailed {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// [`crate::reasons::OUT_OF_STOCK`] (open set).
    pub reason: String,
    /// SKUs without enough available stock.
    pub missing_skus: Vec<String>,
}

/// Held stock was released (compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.inventory")]
pub struct StockReleased {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// Why it was released.
    pub reason: String,
    /// Released lines.
    pub items: Vec<OrderLine>,
}

topic_events! {
    /// Everything published on `inventory`.
    pub enum InventoryEvent {
        topic: Inventory,
        dir: "inventory",
        namespace: "io.choreo.inventory",
        any: Inventory,
        events: [StockReserved, StockReservationFailed, StockReleased],
    }
}
