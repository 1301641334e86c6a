//! Confluent wire format through the schema registry.
//!
//! Outgoing events are registered under TopicRecordNameStrategy subjects and
//! encoded as magic byte `0` + 4-byte schema id + Avro body; incoming bytes
//! are decoded by the writer's schema id into the typed [`AnyEvent`]. The
//! registry client (schema_registry_converter) caches schemas and ids, so a
//! steady stream costs no registry round-trip.
//!
//! `order-requests` additionally accepts plain JSON commands, so a person can
//! type one into kcat.

use std::collections::HashMap;

use choreo_events::{AnyEvent, Event, OrderRequest, Topic};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a server error.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(#[source] RegistryError),
    /// The registry answered, and the answer is final (unknown schema id,
    /// schema refused).
    #[error("schema registry: {0}")]
    Registry(#[source] RegistryError),
    /// The bytes are not in the Confluent wire format or not valid Avro for
    /// their schema.
    #[error("undecodable message: {0}")]
    Undecodable(#[source] RegistryError),
    /// The writer's schema is valid Avro but not a named record, so it
    /// names no event.
    #[error("undecodable message: the writer schema is not a named record")]
    NotARecord,
    /// A null value (tombstone): no event to apply.
    #[error("empty message (null value)")]
    Empty,
    /// A valid event on a topic that does not carry it.
    #[error("{event_type} does not belong on topic {topic}")]
    WrongTopic {
        event_type: &'static str,
        topic: String,
    },
    /// Decoded, but it is not an event of the contract.
    #[error("contract: {0}")]
    Contract(#[from] choreo_events::Error),
}

/// What the registry client reported, shown as `<error>: <cause>` (its own
/// `Display` adds flags meant for its developers).
#[derive(Debug)]
pub struct RegistryError(pub SRCError);

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.cause {
            Some(cause) => write!(f, "{}: {cause}", self.0.error),
            None => f.write_str(&self.0.error),
        }
    }
}

impl std::error::Error for RegistryError {}

impl CodecError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RegistryUnavailable(_))
    }

    fn from_src(e: SRCError) -> Self {
        let e = RegistryError(e);
        let text = e.to_string();
        if e.0.retriable {
            Self::RegistryUnavailable(e)
        } else if text.contains("Invalid bytes") || text.contains("decod") {
            Self::Undecodable(e)
        } else {
            Self::Registry(e)
        }
    }
}

/// Encodes and decodes every event of the contract. One per process; cheap
/// to share behind an `Arc`.
pub struct Codec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// Built once so encoding allocates no strategy or schema text.
    strategies: HashMap<&'static str, SubjectNameStrategy>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    pub fn new(registry_url: &str) -> Self {
        let settings = SrSettings::new(registry_url.trim_end_matches('/').to_owned());
        let strategies = choreo_events::catalogue()
            .iter()
            .map(|entry| {
                let schema = SuppliedSchema::new(
                    Some(entry.full_name.to_owned()),
                    SchemaType::Avro,
                    entry.avsc.to_owned(),
                );
                (
                    entry.full_name,
                    SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
                        entry.topic.name().to_owned(),
                        schema,
                    ),
                )
            })
            .collect();
        Self {
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
            strategies,
        }
    }

    fn strategy(&self, full_name: &str) -> Result<&SubjectNameStrategy, CodecError> {
        self.strategies.get(full_name).ok_or_else(|| {
            CodecError::Contract(choreo_events::Error::UnknownSchema(full_name.to_owned()))
        })
    }

    /// Registers (or looks up) every schema of the contract. Returns
    /// `(subject, id)` pairs.
    pub async fn register_all(&self) -> Result<Vec<(String, u32)>, CodecError> {
        let mut ids = Vec::new();
        for entry in choreo_events::catalogue() {
            let strategy = self.strategy(entry.full_name)?;
            let subject = entry.subject();
            let schema = self
                .encoder
                .get_schema_and_id(&subject, strategy.clone())
                .await
                .map_err(CodecError::from_src)?;
            ids.push((subject, schema.id));
        }
        Ok(ids)
    }

    pub async fn encode<E: Event>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        self.encoder
            .encode_struct(event, self.strategy(E::full_name())?)
            .await
            .map_err(CodecError::from_src)
    }

    pub async fn encode_any(&self, event: &AnyEvent) -> Result<Vec<u8>, CodecError> {
        let value = event.to_avro_value()?;
        self.encoder
            .encode_value(value, self.strategy(event.full_name())?)
            .await
            .map_err(CodecError::from_src)
    }

    /// Decodes a message's value. `source` names where it came from
    /// (`topic/partition/offset`); a JSON command without ids derives them
    /// from it, so a redelivered message yields the same ids.
    pub async fn decode(
        &self,
        topic: &str,
        source: &str,
        bytes: Option<&[u8]>,
    ) -> Result<AnyEvent, CodecError> {
        let bytes = bytes.ok_or(CodecError::Empty)?;
        if topic == Topic::OrderRequests.name() && bytes.first() != Some(&0) {
            return Ok(AnyEvent::Request(OrderRequest::from_json_bytes(
                bytes, source,
            )?));
        }
        let decoded = self
            .decoder
            .decode(Some(bytes))
            .await
            .map_err(CodecError::from_src)?;
        let name = decoded.name.ok_or(CodecError::NotARecord)?;
        let full_name = name.fullname(None);
        let event = AnyEvent::from_avro_value(&full_name, decoded.value)?;
        if event.topic().name() != topic {
            return Err(CodecError::WrongTopic {
                event_type: event.event_type(),
                topic: topic.to_owned(),
            });
        }
        Ok(event)
    }
}
