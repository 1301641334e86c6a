//! Errors of the messaging runtime, and the one classification that matters
//! at the boundary: can trying again ever succeed?
//!
//! *Retryable* errors (database busy, registry or broker unreachable) are
//! retried in place with backoff, so a partition never skips a message and
//! never reorders. *Permanent* errors (bytes that are not Confluent-Avro, an
//! unknown schema id, data the handler rejects) go to the dead-letter topic
//! and the partition moves on.

use std::fmt;

/// Errors of the runtime's own plumbing (client creation, publishing).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("storage: {0}")]
    Storage(#[from] choreo_outbox::Error),
    #[error("codec: {0}")]
    Codec(#[from] crate::codec::CodecError),
    #[error("configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
            Error::Kafka(e) => Self::Retryable(format!("kafka: {e}")),
            Error::Config(e) => Self::Permanent(e),
        }
    }
}
