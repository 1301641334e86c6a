//! [`AnyEvent`]: one value for whatever came off (or goes onto) any topic.
//!
//! The bus decodes by schema full name into this type; services then match
//! on the topic enum they subscribe to.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use serde_json::Value as JsonValue;

use crate::catalogue::SchemaEntry;
use crate::event::ErasedEvent;
use crate::{
    Error, EventMetadata, InventoryEvent, NotificationsEvent, OrderRequest, OrdersEvent,
    PaymentsEvent, Result, ShipmentsEvent, Topic,
};

/// Any event or command of any topic.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    /// From `orders`.
    Orders(OrdersEvent),
    /// From `inventory`.
    Inventory(InventoryEvent),
    /// From `shipments`.
    Shipments(ShipmentsEvent),
    /// From `payments`.
    Payments(PaymentsEvent),
    /// From `notifications`.
    Notifications(NotificationsEvent),
    /// From `order-requests`.
    Request(OrderRequest),
}

impl AnyEvent {
    fn erased(&self) -> &dyn ErasedEvent {
        match self {
            AnyEvent::Orders(event) => event.erased(),
            AnyEvent::Inventory(event) => event.erased(),
            AnyEvent::Shipments(event) => event.erased(),
            AnyEvent::Payments(event) => event.erased(),
            AnyEvent::Notifications(event) => event.erased(),
            AnyEvent::Request(event) => event.erased(),
        }
    }

    /// The event's metadata.
    pub fn metadata(&self) -> &EventMetadata {
        self.erased().metadata()
    }

    /// The order the event belongs to; also its Kafka key.
    pub fn order_id(&self) -> &str {
        &self.metadata().order_id
    }

    /// Short type name, e.g. `OrderPlaced`.
    pub fn event_type(&self) -> &'static str {
        self.erased().event_type()
    }

    /// Avro full name, e.g. `io.choreo.orders.OrderPlaced`.
    pub fn full_name(&self) -> &'static str {
        self.erased().full_name()
    }

    /// The topic the event belongs on.
    pub fn topic(&self) -> Topic {
        self.erased().topic()
    }

    /// Registry subject of the event's schema.
    pub fn subject(&self) -> String {
        self.topic().subject(self.full_name())
    }

    /// The event's parsed schema.
    pub fn schema(&self) -> &'static Schema {
        self.erased().schema()
    }

    /// The event's `.avsc` text.
    pub fn avsc(&self) -> &'static str {
        self.erased().avsc()
    }

    /// The event's fields as JSON (same shape as the schema; no type tag).
    pub fn to_json(&self) -> JsonValue {
        self.erased().to_json()
    }

    /// The event as an Avro value valid against [`AnyEvent::schema`].
    pub fn to_avro_value(&self) -> Result<AvroValue> {
        self.erased().to_avro_value()
    }

    /// Reads a decoded Avro value whose writer schema has this full name.
    /// The writer may be another BACKWARD-compatible version of the schema:
    /// fields it added are ignored, fields it lacks take their defaults.
    pub fn from_avro_value(full_name: &str, value: AvroValue) -> Result<AnyEvent> {
        SchemaEntry::by_full_name(full_name)
            .ok_or_else(|| Error::UnknownSchema(full_name.to_owned()))?
            .decode(value)
    }

    /// Reads a hand-written event (see [`crate::Event::from_json`]).
    /// `event_type` is the short name (`OrderPlaced`) or the full name.
    pub fn from_json(event_type: &str, json: JsonValue) -> Result<AnyEvent> {
        SchemaEntry::by_event_type(event_type)
            .or_else(|| SchemaEntry::by_full_name(event_type))
            .ok_or_else(|| Error::UnknownEventType(event_type.to_owned()))?
            .read_json(json)
    }

    /// The event as a raw Avro datum (no container, no Confluent framing)
    /// written with [`AnyEvent::schema`].
    pub fn to_avro_datum(&self) -> Result<Vec<u8>> {
        let value = self.to_avro_value()?;
        GenericDatumWriter::builder(self.schema())
            .build()
            .and_then(|writer| writer.write_value_to_vec(value))
            .map_err(|source| Error::avro(self.full_name(), source))
    }

    /// Reads a raw Avro datum written with `writer_schema` (e.g. fetched
    /// from the registry by id). The event type is the writer schema's full
    /// name; see [`AnyEvent::from_avro_value`] for schema evolution.
    pub fn from_avro_datum(writer_schema: &Schema, mut datum: &[u8]) -> Result<AnyEvent> {
        let full_name = writer_schema
            .name()
            .map(|name| name.fullname(None))
            .ok_or_else(|| Error::UnknownSchema(writer_schema.canonical_form()))?;
        let entry = SchemaEntry::by_full_name(&full_name)
            .ok_or_else(|| Error::UnknownSchema(full_name.clone()))?;
        let value = GenericDatumReader::builder(writer_schema)
            .build()
            .and_then(|reader| reader.read_value(&mut datum))
            .map_err(|source| Error::avro(entry.full_name, source))?;
        entry.decode(value)
    }
}
