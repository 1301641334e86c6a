//! The messaging runtime every choreo service stands on.
//!
//! It makes the guarantees of the design true by construction, so that a
//! service author writes only domain logic:
//!
//! - events leave a service only through its transactional outbox
//!   ([`Emitter`] appends inside the caller's [`UnitOfWork`]); the [`relay`]
//!   publishes them with an idempotent producer, in order per key;
//! - the [`consumer`] loop records each incoming `event_id` in the inbox in
//!   the same transaction as the handler's effects, stores the offset only
//!   after that transaction commits, retries *retryable* errors in place and
//!   sends *permanent* ones to `dlq.<service>` with their reason.
//!
//! # Layout
//!
//! - [`config`]: Kafka client settings with local-friendly defaults, every
//!   librdkafka property overridable.
//! - [`codec`]: Confluent wire format (magic byte + schema id + Avro) through
//!   the schema registry, plus the JSON ingress of `order-requests`.
//! - [`trace`]: OpenTelemetry spans of producing and consuming, their W3C
//!   context carried in Kafka headers.
//! - [`emitter`]: typed events → outbox rows.
//! - [`relay`]: outbox rows → Kafka.
//! - [`consumer`]: Kafka → inbox + handler → offsets, retries, DLQ.
//! - [`error`]: the retryable / permanent classification.
//! - [`lag`]: how far a consumer group is behind.
//! - [`reader`]: group-less reading of whole topics.
//! - [`dlq`]: dead letters read back, and replayed to their source.
//!
//! [`UnitOfWork`]: choreo_outbox::UnitOfWork

pub mod api_error;
pub mod apply;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod emitter;
pub mod error;
pub mod host;
pub mod lag;
pub mod openapi;
pub mod reader;
pub mod relay;
pub mod service;
pub mod trace;

pub use api_error::ApiError;
pub use apply::{apply, Applied};
pub use choreo_admin::AdminToken;
pub use codec::Codec;
pub use config::KafkaSettings;
pub use consumer::{Consumer, ConsumerSpec, Handler, Incoming, Readiness};
pub use emitter::Emitter;
pub use error::{cause_chain, BoxError, Classify, Error, HandlerError, Result};
pub use host::{runtime, var, vars, CommonSettings, ConfigError, Host, ServiceSettings};
pub use relay::Relay;
pub use service::{serve, Application, Service};

/// Header names this runtime writes. Dead-letter headers follow the
/// `choreo.` prefix so they never clash with application headers.
pub mod headers {
    pub const EVENT_TYPE: &str = "choreo.event_type";
    pub const ERROR: &str = "choreo.error";
    pub const SOURCE_TOPIC: &str = "choreo.source.topic";
    pub const SOURCE_PARTITION: &str = "choreo.source.partition";
    pub const SOURCE_OFFSET: &str = "choreo.source.offset";
    pub const ATTEMPTS: &str = "choreo.attempts";
    pub const SERVICE: &str = "choreo.service";
    pub const FAILED_AT: &str = "choreo.failed_at";
    pub const REPLAY: &str = "choreo.replay";
}
