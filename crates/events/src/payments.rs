//! Topic `payments` (`io.choreo.payments`), written by the payment service.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::event::topic_events;
use crate::EventMetadata;

/// The customer was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.payments")]
pub struct PaymentCompleted {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// Payment id at the payment service.
    pub payment_id: String,
    /// Charged customer.
    pub customer_id: String,
    /// Amount charged, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// The customer could not be charged; nothing was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.payments")]
pub struct PaymentFailed {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// [`crate::reasons::INSUFFICIENT_FUNDS`] or
    /// [`crate::reasons::CUSTOMER_BLOCKED`] (open set).
    pub reason: String,
}

/// A captured payment was refunded (compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.payments")]
pub struct PaymentRefunded {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// The refunded payment.
    pub payment_id: String,
    /// Refunded customer.
    pub customer_id: String,
    /// Amount refunded, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Why it was refunded.
    pub reason: String,
}

topic_events! {
    /// Everything published on `payments`.
    pub enum PaymentsEvent {
        topic: Payments,
        dir: "payments",
        namespace: "io.choreo.payments",
        any: Payments,
        events: [PaymentCompleted, PaymentFailed, PaymentRefunded],
    }
}
