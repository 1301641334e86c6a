//! Named types shared by many schemas (`io.choreo.common.*`).
//!
//! Each `.avsc` file defines these inline (so it registers with no schema
//! references); the Rust side has them once. The contract tests check that
//! every file's copy matches these types.

use apache_avro::schema::{Schema, UuidSchema};
use apache_avro::AvroSchema;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Envelope every event and command carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.common")]
pub struct EventMetadata {
    /// Unique id of this event (UUID, hyphenated).
    #[avro(with = || Schema::Uuid(UuidSchema::String))]
    pub event_id: String,
    /// Milliseconds since the Unix epoch (UTC).
    #[avro(with = || Schema::TimestampMillis)]
    pub occurred_at: i64,
    /// Correlation id: the order this event belongs to; also the message key.
    pub order_id: String,
    /// `event_id` of the event that caused this one.
    pub causation_id: Option<String>,
    /// Service (or ingress) that produced the event.
    pub producer: String,
}

impl EventMetadata {
    /// Metadata for a new event decided now: a random (v4) `event_id` and
    /// the current time. Pass the event being reacted to as `causation` so
    /// a trace can follow the saga's cause chain.
    pub fn new(
        order_id: impl Into<String>,
        producer: impl Into<String>,
        causation: Option<&EventMetadata>,
    ) -> Self {
        EventMetadata {
            event_id: uuid::Uuid::new_v4().to_string(),
            occurred_at: Utc::now().timestamp_millis(),
            order_id: order_id.into(),
            causation_id: causation.map(|cause| cause.event_id.clone()),
            producer: producer.into(),
        }
    }

    /// Metadata for an event caused by `cause`, for the same order.
    pub fn caused_by(cause: &EventMetadata, producer: impl Into<String>) -> Self {
        Self::new(cause.order_id.clone(), producer, Some(cause))
    }

    /// The same metadata with another causation id; for causes known only
    /// by id (e.g. read back from storage).
    pub fn with_causation_id(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// `occurred_at` as a timestamp; `None` if it is out of chrono's range.
    pub fn occurred_at_utc(&self) -> Option<DateTime<Utc>> {
        Utc.timestamp_millis_opt(self.occurred_at).single()
    }
}

/// One line of an order.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema, utoipa::ToSchema,
)]
#[avro(namespace = "io.choreo.common")]
pub struct OrderLine {
    /// Stock keeping unit.
    pub sku: String,
    /// Units ordered.
    pub quantity: i32,
    /// Price of one unit, minor units of the order currency.
    pub unit_price_minor: i64,
}

/// Postal shipping address.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema, utoipa::ToSchema,
)]
#[avro(namespace = "io.choreo.common")]
pub struct Address {
    /// Recipient name.
    pub name: String,
    /// Street and house number.
    pub line1: String,
    /// City.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_metadata_is_fresh_and_records_its_cause() {
        let first = EventMetadata::new("order-1", "order", None);
        assert!(uuid::Uuid::parse_str(&first.event_id).is_ok());
        assert_eq!(first.causation_id, None);
        let age = Utc::now().timestamp_millis() - first.occurred_at;
        assert!(
            (0..60_000).contains(&age),
            "occurred_at is not now: {age} ms"
        );

        let second = EventMetadata::caused_by(&first, "inventory");
        assert_ne!(second.event_id, first.event_id);
        assert_eq!(second.order_id, "order-1");
        assert_eq!(
            second.causation_id.as_deref(),
            Some(first.event_id.as_str())
        );
        assert_eq!(second.producer, "inventory");
        assert!(second.occurred_at_utc().is_some());
    }
}
