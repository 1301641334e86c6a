//! Errors of the messaging runtime, and the one classification that matters
//! at the boundary: can trying again ever succeed?
//!
//! *Retryable* errors (database busy, registry or broker unreachable) are
//! retried in place with backoff, so a partition never skips a message and
//! never reorders. *Permanent* errors (bytes that are not Confluent-Avro, an
//! unknown schema id, data the handler rejects) go to the dead-letter topic
//! and the partition moves on.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Errors of the runtime's own plumbing (client creation, publishing).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// An event whose encoded form is larger than the producer may send
    /// (`message.max.bytes`): refused before it is written to the outbox.
    /// Permanent — the caller must not retry it; an HTTP layer answers 413
    /// or 422, a handler's message goes to the dead-letter topic.
    #[error(
        "{event_type} for {topic} is {size} bytes as a Kafka record, over the {limit}-byte \
         limit (message.max.bytes); it is not written"
    )]
    MessageTooLarge {
        topic: String,
        event_type: String,
        size: usize,
        limit: usize,
    },
    #[error("storage: {0}")]
    Storage(#[from] choreo_outbox::Error),
    #[error("codec: {0}")]
    Codec(#[from] crate::codec::CodecError),
    #[error("configuration: {0}")]
    Config(String),
    /// The consumer stopped at a [`CrashPoint`](crate::consumer::CrashPoint)
    /// a test chose, leaving behind what a process killed there would.
    #[error("crashed on purpose after committing {topic}/{partition}/{offset}")]
    Crashed {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether trying the same thing again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka(e) => produce_failure(e) == ProduceFailure::Retryable,
            Error::Storage(e) => e.is_retryable(),
            Error::Codec(e) => e.is_retryable(),
            Error::MessageTooLarge { .. } | Error::Config(_) | Error::Crashed { .. } => false,
        }
    }
}

/// What a failed produce (at `send`, or in its delivery report) means for
/// the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceFailure {
    /// The cluster or the network is not ready (timeouts, leader moves,
    /// brokers down, a full queue, authorization an operator can grant):
    /// send the same message again later, holding back what follows it.
    Retryable,
    /// The message itself can never be taken (too large, invalid, for a
    /// topic or partition that does not exist): move it to the dead-letter
    /// path so the messages behind it go on.
    Permanent,
}

/// Classifies a producer error by librdkafka's error code
/// (`rd_kafka_resp_err_t`, mirrored by [`RDKafkaErrorCode`]).
///
/// Only codes that describe *this message* are permanent. A condition of
/// the cluster (no leader, not enough replicas, brokers down, throttling,
/// authorization) holds for every message alike: dead-lettering on it would
/// empty the outbox into the DLQ during an outage, so it is retried. Unknown
/// codes are retried too — a stuck partition is visible and recoverable, a
/// wrongly dead-lettered saga step is not.
pub fn produce_failure(err: &KafkaError) -> ProduceFailure {
    match err.rdkafka_error_code() {
        Some(code) if produce_code_is_permanent(code) => ProduceFailure::Permanent,
        _ => ProduceFailure::Retryable,
    }
}

fn produce_code_is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        // The record is larger than the producer's message.max.bytes
        // (checked locally by librdkafka) or the topic's max.message.bytes.
        C::MessageSizeTooLarge
            // A record batch larger than the broker accepts.
            | C::MessageBatchTooLarge
            | C::InvalidMessageSize
            // The broker's record validation refused it (e.g. a compacted
            // topic and no key), or its CRC/format.
            | C::InvalidRecord
            | C::InvalidMessage
            | C::InvalidTimestamp
            | C::BadMessage
            // Compression the topic does not allow, or that failed locally.
            | C::UnsupportedCompressionType
            | C::BadCompression
            | C::UnsupportedForMessageFormat
            // A create-topic / partition policy refusing it.
            | C::PolicyViolation
            // No such topic or partition (auto-creation is off) or an
            // illegal topic name: librdkafka reports these after
            // topic.metadata.propagation.max.ms, so the wait already
            // happened.
            | C::UnknownTopic
            | C::UnknownPartition
            | C::UnknownTopicOrPartition
            | C::InvalidTopic
            | C::UnknownTopicId
            // librdkafka refused the arguments of this one call.
            | C::InvalidArgument
            | C::KeySerialization
            | C::ValueSerialization
    )
}

/// What a handler (or the decode step before it) reports when a message
/// could not be applied.
#[derive(Debug)]
pub enum HandlerError {
    /// Try the same message again later; nothing is skipped meanwhile.
    Retryable(String),
    /// The message can never succeed; it goes to the dead-letter topic.
    Permanent(String),
}

impl HandlerError {
    pub fn retryable(reason: impl fmt::Display) -> Self {
        Self::Retryable(reason.to_string())
    }

    pub fn permanent(reason: impl fmt::Display) -> Self {
        Self::Permanent(reason.to_string())
    }

    /// Retryable or permanent as the cause says (`retryable`), e.g. a
    /// service's storage error that knows whether trying again can help.
    pub fn classified(retryable: bool, reason: impl fmt::Display) -> Self {
        if retryable {
            Self::retryable(reason)
        } else {
            Self::permanent(reason)
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Retryable(r) | Self::Permanent(r) => r,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(r) => write!(f, "retryable: {r}"),
            Self::Permanent(r) => write!(f, "permanent: {r}"),
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<choreo_outbox::Error> for HandlerError {
    fn from(e: choreo_outbox::Error) -> Self {
        if e.is_retryable() {
            Self::Retryable(format!("storage: {e}"))
        } else {
            Self::Permanent(format!("storage: {e}"))
        }
    }
}

impl From<choreo_outbox::sqlx::Error> for HandlerError {
    fn from(e: choreo_outbox::sqlx::Error) -> Self {
        choreo_outbox::Error::from(e).into()
    }
}

impl From<crate::codec::CodecError> for HandlerError {
    fn from(e: crate::codec::CodecError) -> Self {
        if e.is_retryable() {
            Self::Retryable(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

impl From<Error> for HandlerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Storage(e) => e.into(),
            Error::Codec(e) => e.into(),
            Error::Kafka(e) => match produce_failure(&e) {
                ProduceFailure::Retryable => Self::Retryable(format!("kafka: {e}")),
                ProduceFailure::Permanent => Self::Permanent(format!("kafka: {e}")),
            },
            e @ (Error::MessageTooLarge { .. } | Error::Crashed { .. }) => {
                Self::Permanent(e.to_string())
            }
            Error::Config(e) => Self::Permanent(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn what_the_message_cannot_help_is_permanent() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::MessageBatchTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::InvalidMessage,
            RDKafkaErrorCode::InvalidTimestamp,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::UnknownPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::PolicyViolation,
        ] {
            assert_eq!(
                produce_failure(&production(code)),
                ProduceFailure::Permanent,
                "{code:?}"
            );
        }
    }

    #[test]
    fn conditions_of_the_cluster_are_retried() {
        for code in [
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
            RDKafkaErrorCode::NetworkException,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ThrottlingQuotaExceeded,
            RDKafkaErrorCode::KafkaStorageError,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::Unknown,
        ] {
            assert_eq!(
                produce_failure(&production(code)),
                ProduceFailure::Retryable,
                "{code:?}"
            );
        }
        // Errors without a code (client creation, a cancelled future) are
        // not the message's fault either.
        assert_eq!(
            produce_failure(&KafkaError::Canceled),
            ProduceFailure::Retryable
        );
    }

    #[test]
    fn the_runtime_error_carries_the_classification_to_handlers() {
        let too_large = Error::Kafka(production(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!too_large.is_retryable());
        assert!(!HandlerError::from(too_large).is_retryable());
        let down = Error::Kafka(production(RDKafkaErrorCode::AllBrokersDown));
        assert!(down.is_retryable());
        assert!(HandlerError::from(down).is_retryable());
        let refused = Error::MessageTooLarge {
            topic: "orders".into(),
            event_type: "OrderPlaced".into(),
            size: 1_000_001,
            limit: 1_000_000,
        };
        assert!(!refused.is_retryable());
        let reason = HandlerError::from(refused);
        assert!(!reason.is_retryable());
        assert!(reason.reason().contains("1000001 bytes"), "{reason}");
    }
}
