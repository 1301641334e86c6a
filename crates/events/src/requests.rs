//! Topic `order-requests` (`io.choreo.requests`): commands into the order
//! service. Unlike the other topics these are imperative and may arrive as
//! plain JSON typed by a person (see [`crate::ingress`]).

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::event::topic_events;
use crate::{Address, EventMetadata, OrderLine};

/// Place a new order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.requests")]
pub struct PlaceOrder {
    /// Command metadata; its `order_id` is the id the new order gets.
    pub metadata: EventMetadata,
    /// Client idempotency key.
    pub request_id: Option<String>,
    /// Customer placing the order.
    pub customer_id: String,
    /// Where notifications go.
    pub customer_email: String,
    /// Ordered lines.
    pub items: Vec<OrderLine>,
    /// ISO 4217 code.
    pub currency: String,
    /// Where the goods go.
    pub shipping_address: Address,
}

/// Cancel a pending order on the customer's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.requests")]
pub struct CancelOrder {
    /// Command metadata; `order_id` is the order to cancel.
    pub metadata: EventMetadata,
    /// Free-text reason from the customer.
    pub reason: Option<String>,
}

topic_events! {
    /// Everything accepted on `order-requests`.
    pub enum OrderRequest {
        topic: OrderRequests,
        dir: "order-requests",
        namespace: "io.choreo.requests",
        any: Request,
        events: [PlaceOrder, CancelOrder],
    }
}
