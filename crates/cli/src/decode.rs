//! Confluent-Avro through the schema registry, as the CLI needs it: by
//! topic (what `watch` and `trace` read) and without one (bytes handed to
//! `choreo decode`), with errors that name the registry's address.

use anyhow::anyhow;
use choreo_bus::codec::CodecError;
use choreo_bus::Codec;
use choreo_events::catalogue::SchemaEntry;
use choreo_events::{AnyEvent, OrderRequest, Topic};

use crate::reader::Record;

/// Decoder and encoder for every event of the contract.
#[derive(Debug)]
pub struct Decoder {
    codec: Codec,
    registry: String,
}

impl Decoder {
    pub fn new(registry: &str) -> Self {
        Self {
            codec: Codec::new(registry),
            registry: registry.trim_end_matches('/').to_owned(),
        }
    }

    /// Decodes a value read from `topic`.
    pub async fn decode(
        &self,
        topic: &str,
        position: &str,
        value: Option<&[u8]>,
    ) -> Result<AnyEvent, CodecError> {
        self.codec.decode(topic, position, value).await
    }

    /// Decodes a record's value. A plain-JSON command carries no time of
    /// its own (the codec stamps it with the time of decoding), so it gets
    /// the record's timestamp: when it was produced.
    pub async fn decode_record(&self, record: &Record) -> Result<AnyEvent, CodecError> {
        let mut event = self
            .decode(&record.topic, &record.position(), record.value.as_deref())
            .await?;
        let is_json = record.value.as_deref().and_then(|v| v.first()) != Some(&0);
        if let (true, Some(ts), AnyEvent::Request(request)) =
            (is_json, record.timestamp_ms, &mut event)
        {
            match request {
                OrderRequest::PlaceOrder(r) => r.metadata.occurred_at = ts,
                OrderRequest::CancelOrder(r) => r.metadata.occurred_at = ts,
            }
        }
        Ok(event)
    }

    /// Decodes bytes of unknown topic: Confluent-Avro (the schema id names
    /// the record, the record names its topic), or a plain-JSON command of
    /// `order-requests`.
    pub async fn decode_any(&self, bytes: &[u8]) -> anyhow::Result<AnyEvent> {
        if bytes.first() != Some(&0) {
            return self
                .decode(Topic::OrderRequests.name(), "cli/0/0", Some(bytes))
                .await
                .map_err(|e| {
                    anyhow!("not Confluent-Avro (no magic byte 0) and not a JSON command: {e}")
                });
        }
        match self
            .decode(Topic::Orders.name(), "cli/0/0", Some(bytes))
            .await
        {
            Ok(event) => Ok(event),
            Err(CodecError::WrongTopic { event_type, .. }) => {
                let topic = SchemaEntry::by_event_type(event_type)
                    .map(|e| e.topic)
                    .ok_or_else(|| anyhow!("{event_type} is in no topic of the catalogue"))?;
                self.decode(topic.name(), "cli/0/0", Some(bytes))
                    .await
                    .map_err(|e| self.explain(e))
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Confluent-Avro bytes of `event`, its schema registered (or looked
    /// up) under its TopicRecordNameStrategy subject.
    pub async fn encode(&self, event: &AnyEvent) -> anyhow::Result<Vec<u8>> {
        self.codec
            .encode_any(event)
            .await
            .map_err(|e| self.explain(e))
    }

    /// A codec error with the registry's address where it matters.
    pub fn explain(&self, e: CodecError) -> anyhow::Error {
        match e {
            CodecError::RegistryUnavailable(m) => anyhow!(
                "cannot reach the schema registry at {} ({m}); is the stack running? (--registry / CHOREO_REGISTRY_URL)",
                self.registry
            ),
            CodecError::Registry(m) => anyhow!("schema registry at {}: {m}", self.registry),
            other => anyhow!(other),
        }
    }
}
