//! The schema catalogue: every event and command, with its topic, names
//! and `.avsc`. The bus registers schemas from it and decodes by full name
//! through it; the CLI lists it.

use std::sync::OnceLock;

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use serde_json::Value as JsonValue;

use crate::inventory::{StockReleased, StockReservationFailed, StockReserved};
use crate::notifications::CustomerNotified;
use crate::orders::{OrderCancelled, OrderConfirmed, OrderPlaced};
use crate::payments::{PaymentCompleted, PaymentFailed, PaymentRefunded};
use crate::requests::{CancelOrder, PlaceOrder};
use crate::shipments::{ShipmentCancelled, ShipmentManifestFailed, ShipmentManifested};
use crate::{AnyEvent, Event, Result, Topic};

/// One event or command type.
#[derive(Debug, Clone, Copy)]
pub struct SchemaEntry {
    /// Topic it is published on.
    pub topic: Topic,
    /// Short name, e.g. `OrderPlaced`.
    pub event_type: &'static str,
    /// Avro full name, e.g. `io.choreo.orders.OrderPlaced`.
    pub full_name: &'static str,
    /// The `.avsc` text to register.
    pub avsc: &'static str,
    // Monomorphised entry points, so callers holding only a name reach the
    // typed code without a hand-written match per operation.
    schema: fn() -> &'static Schema,
    decode: fn(AvroValue) -> Result<AnyEvent>,
    from_json: fn(JsonValue) -> Result<AnyEvent>,
}

impl SchemaEntry {
    fn of<T: Event>() -> Self {
        SchemaEntry {
            topic: T::TOPIC,
            event_type: T::EVENT_TYPE,
            full_name: T::full_name(),
            avsc: T::avsc(),
            schema: T::schema,
            decode: |value| T::from_avro_value(value).map(Event::into_any),
            from_json: |json| T::from_json(json).map(Event::into_any),
        }
    }

    /// Registry subject: `<topic>-<full name>`.
    pub fn subject(&self) -> String {
        self.topic.subject(self.full_name)
    }

    /// The parsed `.avsc`.
    pub fn schema(&self) -> &'static Schema {
        (self.schema)()
    }

    /// The entry with this Avro full name.
    pub fn by_full_name(full_name: &str) -> Option<&'static SchemaEntry> {
        catalogue().iter().find(|e| e.full_name == full_name)
    }

    /// The entry with this short type name.
    pub fn by_event_type(event_type: &str) -> Option<&'static SchemaEntry> {
        catalogue().iter().find(|e| e.event_type == event_type)
    }

    /// Entries of one topic.
    pub fn of_topic(topic: Topic) -> impl Iterator<Item = &'static SchemaEntry> {
        catalogue().iter().filter(move |e| e.topic == topic)
    }

    /// See [`AnyEvent::from_avro_value`].
    pub(crate) fn decode(&self, value: AvroValue) -> Result<AnyEvent> {
        (self.decode)(value)
    }

    /// See [`AnyEvent::from_json`].
    pub(crate) fn read_json(&self, json: JsonValue) -> Result<AnyEvent> {
        (self.from_json)(json)
    }
}

/// Every event and command, grouped by topic in saga order.
pub fn catalogue() -> &'static [SchemaEntry] {
    static CATALOGUE: OnceLock<Vec<SchemaEntry>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        vec![
            SchemaEntry::of::<OrderPlaced>(),
            SchemaEntry::of::<OrderConfirmed>(),
            SchemaEntry::of::<OrderCancelled>(),
            SchemaEntry::of::<StockReserved>(),
            SchemaEntry::of::<StockReservationFailed>(),
            SchemaEntry::of::<StockReleased>(),
            SchemaEntry::of::<ShipmentManifested>(),
            SchemaEntry::of::<ShipmentManifestFailed>(),
            SchemaEntry::of::<ShipmentCancelled>(),
            SchemaEntry::of::<PaymentCompleted>(),
            SchemaEntry::of::<PaymentFailed>(),
            SchemaEntry::of::<PaymentRefunded>(),
            SchemaEntry::of::<CustomerNotified>(),
            SchemaEntry::of::<PlaceOrder>(),
            SchemaEntry::of::<CancelOrder>(),
        ]
    })
}

/// Short names of every entry, for error messages.
pub(crate) fn event_type_list() -> String {
    catalogue()
        .iter()
        .map(|e| e.event_type)
        .collect::<Vec<_>>()
        .join(", ")
}
