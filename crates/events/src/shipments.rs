//! Topic `shipments` (`io.choreo.shipments`), written by the courier
//! service.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::event::topic_events;
use crate::EventMetadata;

/// A courier accepted the shipment. Carries what payment needs to charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.shipments")]
pub struct ShipmentManifested {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// Shipment id at the courier service.
    pub shipment_id: String,
    /// Delivering carrier.
    pub carrier: String,
    /// Carrier tracking number.
    pub tracking_number: String,
    /// Customer to charge.
    pub customer_id: String,
    /// Amount to charge, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// No shipment could be manifested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.shipments")]
pub struct ShipmentManifestFailed {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// [`crate::reasons::NO_ROUTE`] (open set).
    pub reason: String,
}

/// A manifested shipment was cancelled (compensation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.shipments")]
pub struct ShipmentCancelled {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// The cancelled shipment.
    pub shipment_id: String,
    /// Why it was cancelled.
    pub reason: String,
}

topic_events! {
    /// Everything published on `shipments`.
    pub enum ShipmentsEvent {
        topic: Shipments,
        dir: "shipments",
        namespace: "io.choreo.shipments",
        any: Shipments,
        events: [ShipmentManifested, ShipmentManifestFailed, ShipmentCancelled],
    }
}
