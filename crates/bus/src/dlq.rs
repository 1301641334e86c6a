//! Dead letters read back from `dlq.<service>`, and replayed: a replay
//! re-produces the original key, value and headers to the source topic and
//! partition (so it keeps its place in per-order ordering), minus the
//! dead-letter headers, plus `choreo.replay=<dlq>/<p>/<offset>` so the
//! replayed copy can be told from the original.
//!
//! Every service serves a replay of its own dead letters at `POST
//! /dlq/replay` ([`routes`]), guarded by the admin token like the other
//! writes outside the saga; `choreo dlq replay` and the browser monitor call
//! it. A replay reaches every consumer group of the source topic; each
//! service's inbox drops an `event_id` it has already processed.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use choreo_events::dlq_topic;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api_error::{admin_only, JsonBody};
use crate::consumer::dlq_headers;
use crate::openapi::{routes, ErrorBody, OpenApiRouter};
use crate::reader::{read_to_end, ReadError, Record};
use crate::{headers, AdminToken, ApiError, KafkaSettings};

/// Headers the consumer loop and the relay add when dead-lettering; a
/// replay drops them.
pub const DLQ_HEADERS: [&str; 13] = [
    headers::ERROR,
    headers::SOURCE_TOPIC,
    headers::SOURCE_PARTITION,
    headers::SOURCE_OFFSET,
    headers::ATTEMPTS,
    headers::SERVICE,
    headers::FAILED_AT,
    headers::REPLAY,
    dlq_headers::TRUNCATED,
    dlq_headers::ORIGINAL_SIZE,
    dlq_headers::HEADERS_DROPPED,
    dlq_headers::KEY_DROPPED,
    dlq_headers::OUTBOX_SEQ,
];

/// How long one replayed record may wait for its delivery report.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// One dead letter as it is on `dlq.<service>`, its `choreo.*` headers
/// read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letter {
    pub record: Record,
    pub reason: String,
    pub service: String,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub attempts: Option<u32>,
    pub failed_at_ms: Option<i64>,
}

impl Letter {
    /// The dead letter a record of a `dlq.*` topic is.
    pub fn from_record(record: Record) -> Self {
        let service = record
            .header(headers::SERVICE)
            .or_else(|| record.topic.strip_prefix("dlq.").map(str::to_owned))
            .unwrap_or_default();
        Self {
            reason: record
                .header(headers::ERROR)
                .unwrap_or_else(|| "(no reason header)".into()),
            source_topic: record.header(headers::SOURCE_TOPIC),
            source_partition: record
                .header(headers::SOURCE_PARTITION)
                .and_then(|v| v.parse().ok()),
            source_offset: record
                .header(headers::SOURCE_OFFSET)
                .and_then(|v| v.parse().ok()),
            attempts: record
                .header(headers::ATTEMPTS)
                .and_then(|v| v.parse().ok()),
            failed_at_ms: record
                .header(headers::FAILED_AT)
                .and_then(|v| v.parse().ok()),
            service,
            record,
        }
    }

    /// The original payload's size when this copy was cut to fit
    /// (`choreo.truncated`), `None` for a whole copy.
    pub fn truncated(&self) -> Option<u64> {
        (self.record.header(dlq_headers::TRUNCATED).as_deref() == Some("true")).then(|| {
            self.record
                .header(dlq_headers::ORIGINAL_SIZE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
    }

    /// `source-topic/partition/offset` of the original message.
    pub fn source(&self) -> String {
        format!(
            "{}/{}/{}",
            self.source_topic.as_deref().unwrap_or("?"),
            self.source_partition.map_or("?".into(), |p| p.to_string()),
            self.source_offset.map_or("?".into(), |o| o.to_string())
        )
    }
}

/// Every dead letter on `topics` (`dlq.*`), in topic, partition and offset
/// order; `each` sees `(read, to read)` as records arrive.
pub async fn read(
    brokers: &str,
    topics: &[String],
    each: impl FnMut(u64, u64),
) -> Result<Vec<Letter>, ReadError> {
    let mut letters: Vec<Letter> = read_to_end(brokers, topics, each)
        .await?
        .into_iter()
        .map(Letter::from_record)
        .collect();
    letters.sort_by(|a, b| {
        (&a.record.topic, a.record.partition, a.record.offset).cmp(&(
            &b.record.topic,
            b.record.partition,
            b.record.offset,
        ))
    });
    Ok(letters)
}

/// Which dead letters to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The one at this offset of `dlq.<service>`.
    Offset(i64),
    /// Every replayable one.
    All,
}

/// One dead letter put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replayed {
    /// `dlq.<service>/<partition>/<offset>` of the dead letter.
    pub from: String,
    /// The source topic it went back to.
    pub topic: String,
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The record's key as text (an order id), when it has one.
    pub key: Option<String>,
}

/// A dead letter a replay of every one left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    /// `dlq.<service>/<partition>/<offset>`.
    pub dead_letter: String,
    pub reason: String,
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replay {
    pub replayed: Vec<Replayed>,
    pub skipped: Vec<Skipped>,
}

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no dead letter at offset {offset} of {topic} (offsets: {offsets})")]
    NoSuchOffset {
        offset: i64,
        topic: String,
        offsets: String,
    },
    /// A truncated copy is not the message that failed: replaying it would
    /// only dead-letter a different, cut message.
    #[error(
        "{dead_letter} is a truncated copy (the original was {size} bytes); it cannot be \
         replayed. The original is at {source_at}"
    )]
    Truncated {
        dead_letter: String,
        size: u64,
        source_at: String,
    },
    #[error(
        "{dead_letter} has no {} header; it cannot be replayed",
        headers::SOURCE_TOPIC
    )]
    NoSource { dead_letter: String },
    #[error("creating a Kafka producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("producing {from} to {topic} on {brokers}: {source}")]
    Produce {
        from: String,
        topic: String,
        brokers: String,
        #[source]
        source: KafkaError,
    },
}

/// Re-produces dead letters of `service` to their source topic and
/// partition with their original key, value and headers, plus
/// `choreo.replay`. Truncated copies are refused by offset and skipped
/// by [`Which::All`].
pub async fn replay(
    settings: &KafkaSettings,
    service: &str,
    which: Which,
) -> Result<Replay, ReplayError> {
    let topic = dlq_topic(service);
    let letters = read(&settings.brokers, std::slice::from_ref(&topic), |_, _| {}).await?;
    let chosen: Vec<&Letter> = letters
        .iter()
        .filter(|l| match which {
            Which::All => true,
            Which::Offset(o) => l.record.offset == o,
        })
        .collect();
    if let Which::Offset(offset) = which {
        match chosen[..] {
            [] => {
                let offsets: Vec<String> = letters
                    .iter()
                    .map(|l| l.record.offset.to_string())
                    .collect();
                return Err(ReplayError::NoSuchOffset {
                    offset,
                    topic,
                    offsets: if offsets.is_empty() {
                        "none".into()
                    } else {
                        offsets.join(", ")
                    },
                });
            }
            [letter] => {
                if let Some(size) = letter.truncated() {
                    return Err(ReplayError::Truncated {
                        dead_letter: letter.record.position(),
                        size,
                        source_at: letter.source(),
                    });
                }
            }
            _ => {}
        }
    }
    let mut out = Replay::default();
    let mut producer: Option<FutureProducer> = None;
    for letter in chosen {
        let from = letter.record.position();
        if let Some(size) = letter.truncated() {
            tracing::warn!(dead_letter = %from, "skipped: a truncated copy cannot be replayed");
            out.skipped.push(Skipped {
                dead_letter: from,
                reason: format!(
                    "a truncated copy (the original was {size} bytes, at {})",
                    letter.source()
                ),
            });
            continue;
        }
        let topic = letter
            .source_topic
            .clone()
            .ok_or_else(|| ReplayError::NoSource {
                dead_letter: from.clone(),
            })?;
        let producer = match &mut producer {
            Some(p) => p,
            None => producer.insert(
                settings
                    .producer_config()
                    .set("log_level", "0")
                    .create()
                    .map_err(ReplayError::Producer)?,
            ),
        };
        let mut hdrs = OwnedHeaders::new();
        for (k, v) in &letter.record.headers {
            if !DLQ_HEADERS.contains(&k.as_str()) {
                hdrs = hdrs.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
        }
        hdrs = hdrs.insert(Header {
            key: headers::REPLAY,
            value: Some(from.as_bytes()),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(hdrs);
        if let Some(p) = letter.source_partition {
            record = record.partition(p);
        }
        if let Some(k) = &letter.record.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &letter.record.value {
            record = record.payload(v.as_slice());
        }
        let delivered = producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map_err(|(source, _)| ReplayError::Produce {
                from: from.clone(),
                topic: topic.clone(),
                brokers: settings.brokers.clone(),
                source,
            })?;
        tracing::info!(dead_letter = %from, %topic, partition = delivered.partition,
            offset = delivered.offset, "dead letter replayed");
        out.replayed.push(Replayed {
            from,
            topic,
            partition: delivered.partition,
            offset: delivered.offset,
            key: letter.record.key_str(),
        });
    }
    Ok(out)
}

/// `POST /dlq/replay` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the body `post_replay` reads field by field
struct ReplayRequest {
    /// Replay the dead letter at this offset of `dlq.<service>`.
    #[schema(minimum = 0)]
    offset: Option<i64>,
    /// Replay every dead letter (truncated copies are skipped).
    all: Option<bool>,
}

#[derive(Clone)]
struct ReplayState {
    service: &'static str,
    kafka: KafkaSettings,
}

/// `POST /dlq/replay` for `service`'s own dead letters, guarded by `admin`.
pub fn routes(service: &'static str, kafka: KafkaSettings, admin: &AdminToken) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(admin_only(admin, routes!(post_replay)))
        .with_state(ReplayState { service, kafka })
}

/// Puts this service's dead letters back on their source topic (admin).
#[utoipa::path(post, path = "/dlq/replay", tag = "dead letters",
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "What was replayed, and what was skipped", body = Replay),
        (status = 404, description = "No dead letter at that offset", body = ErrorBody),
        (status = 409, description = "A truncated copy, which cannot be replayed", body = ErrorBody)))]
async fn post_replay(
    State(state): State<ReplayState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Replay>, ApiError> {
    let which = parse_request(&body)?;
    match replay(&state.kafka, state.service, which).await {
        Ok(done) => Ok(Json(done)),
        Err(e @ ReplayError::NoSuchOffset { .. }) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ (ReplayError::Truncated { .. } | ReplayError::NoSource { .. })) => {
            Err(ApiError::Conflict(e.to_string()))
        }
        // The broker unreachable, the topic missing, a produce refused.
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// `{"offset": N}` or `{"all": true}`, nothing else.
fn parse_request(body: &Value) -> Result<Which, ApiError> {
    let invalid = |field: &'static str, why: String| ApiError::invalid_fields([(field, why)]);
    let Value::Object(fields) = body else {
        return Err(invalid(
            "body",
            "must be a JSON object: {\"offset\": N} or {\"all\": true}".into(),
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "offset" | "all"))
    {
        return Err(invalid("body", format!("unknown field `{unknown}`")));
    }
    let all = match fields.get("all") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(invalid(
                "all",
                format!("must be true or false, got {other}"),
            ))
        }
    };
    let offset = match fields.get("offset") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Some(n),
            _ => {
                return Err(invalid(
                    "offset",
                    format!("must be an integer >= 0, got {v}"),
                ))
            }
        },
    };
    match (offset, all) {
        (Some(_), true) => Err(invalid(
            "body",
            "say either `offset` or `all`, not both".into(),
        )),
        (Some(o), false) => Ok(Which::Offset(o)),
        (None, true) => Ok(Which::All),
        (None, false) => Err(invalid(
            "body",
            "say which dead letters to replay: {\"offset\": N} or {\"all\": true}".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_names_one_offset_or_all() {
        assert_eq!(
            parse_request(&json!({"offset": 3})).unwrap(),
            Which::Offset(3)
        );
        assert_eq!(parse_request(&json!({"all": true})).unwrap(), Which::All);
        assert_eq!(
            parse_request(&json!({"offset": 0, "all": false})).unwrap(),
            Which::Offset(0)
        );
        for bad in [
            json!({}),
            json!({"all": false}),
            json!({"offset": 1, "all": true}),
            json!({"offset": -1}),
            json!({"offset": "1"}),
            json!({"all": "yes"}),
            json!({"offsets": [1]}),
            json!([1]),
        ] {
            assert!(parse_request(&bad).is_err(), "{bad}");
        }
    }
}
