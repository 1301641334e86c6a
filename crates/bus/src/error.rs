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
    /// A setting the runtime cannot use.
    #[error("setting {name} = {value:?}: {reason}")]
    Setting {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// An operating-system call of the runtime itself failed (a folder, a
    /// listening socket, the HTTP server).
    #[error("{doing}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// One of the runtime's tasks panicked or was cancelled.
    #[error("the {task} task stopped abnormally")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The producer dropped a delivery report without an answer (it was
    /// shutting down); the row stays unpublished and is sent again.
    #[error("the producer dropped a delivery report without an answer")]
    DeliveryDropped,
    /// A service's own part of starting failed (its migrations, a seed
    /// file, a mail transport): the process must not run.
    #[error("{doing}")]
    Start {
        doing: String,
        #[source]
        source: BoxError,
    },
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

/// A service's own start-up error, whatever its type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl Error {
    /// Whether trying the same thing again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka(e) => produce_failure(e) == ProduceFailure::Retryable,
            Error::Storage(e) => e.is_retryable(),
            Error::Codec(e) => e.is_retryable(),
            Error::DeliveryDropped => true,
            Error::MessageTooLarge { .. }
            | Error::Setting { .. }
            | Error::Io { .. }
            | Error::Task { .. }
            | Error::Start { .. }
            | Error::Crashed { .. } => false,
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

/// Errors that know whether trying again can help: each crate's error
/// implements it, and every one of them becomes a [`HandlerError`] with
/// `?`, classified by the error itself and keeping it as its source.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// Whether the same operation, tried again later, can succeed.
    fn is_retryable(&self) -> bool;
}

impl Classify for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

impl Classify for choreo_outbox::Error {
    fn is_retryable(&self) -> bool {
        choreo_outbox::Error::is_retryable(self)
    }
}

impl Classify for crate::codec::CodecError {
    fn is_retryable(&self) -> bool {
        crate::codec::CodecError::is_retryable(self)
    }
}

/// What a handler (or the decode step before it) reports when a message
/// could not be applied: retryable (try the same message again later,
/// nothing is skipped meanwhile) or permanent (it goes to the dead-letter
/// topic), with the reason an operator reads in the dead letter and, when
/// it came from another error, that error as its [`source`].
///
/// [`source`]: std::error::Error::source
#[derive(Debug)]
pub struct HandlerError {
    retryable: bool,
    reason: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    pub fn retryable(reason: impl fmt::Display) -> Self {
        Self::classified(true, reason)
    }

    pub fn permanent(reason: impl fmt::Display) -> Self {
        Self::classified(false, reason)
    }

    /// Retryable or permanent as the caller knows (`retryable`).
    pub fn classified(retryable: bool, reason: impl fmt::Display) -> Self {
        Self {
            retryable,
            reason: reason.to_string(),
            source: None,
        }
    }

    /// `source`, classified by itself; the reason is `context: ` followed
    /// by its cause chain.
    pub fn caused_by<E: Classify>(context: impl fmt::Display, source: E) -> Self {
        Self {
            retryable: source.is_retryable(),
            reason: format!("{context}: {}", cause_chain(&source)),
            source: Some(Box::new(source)),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The reason, cause chain included: what the dead letter carries.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// `error` and each of its sources, `: `-separated, leaving out a source
/// whose text its parent already shows.
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        next = cause.source();
    }
    text
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable {
            "retryable"
        } else {
            "permanent"
        };
        write!(f, "{kind}: {}", self.reason)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Every classified error becomes a handler error with `?`.
impl<E: Classify> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let retryable = e.is_retryable();
        Self {
            retryable,
            reason: cause_chain(&e),
            source: Some(Box::new(e)),
        }
    }
}

impl From<choreo_outbox::sqlx::Error> for HandlerError {
    fn from(e: choreo_outbox::sqlx::Error) -> Self {
        choreo_outbox::Error::from(e).into()
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
        assert!(std::error::Error::source(&reason).is_some());
    }

    #[test]
    fn a_handler_error_keeps_its_cause_and_shows_the_chain() {
        let io = std::io::Error::other("disk full");
        let e = Error::Io {
            doing: "writing a mail".into(),
            source: io,
        };
        let handler = HandlerError::caused_by("sending", e);
        assert!(!handler.is_retryable());
        assert_eq!(handler.reason(), "sending: writing a mail: disk full");
        let source = std::error::Error::source(&handler).unwrap();
        assert_eq!(source.to_string(), "writing a mail");
        assert_eq!(source.source().unwrap().to_string(), "disk full");
        assert_eq!(
            handler.to_string(),
            "permanent: sending: writing a mail: disk full"
        );
    }
}
