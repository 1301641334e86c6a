//! The crate's one error type.
//!
//! Every variant describes bad *data* (an unknown schema, a value that does
//! not fit its schema, a malformed JSON command). Retrying cannot fix any of
//! them, so at the messaging boundary they are all permanent: the message
//! belongs in the dead-letter topic, with this error's text as the reason.

/// Result with this crate's [`enum@Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while mapping between bytes-level
/// representations (Avro values, JSON) and the typed events.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No schema in the catalogue has this full name (`namespace.Record`).
    #[error("unknown schema `{0}`: not an event or command of this version of choreo-events")]
    UnknownSchema(String),

    /// No event or command has this short type name.
    #[error("unknown event type `{0}` (expected one of: {expected})", expected = crate::catalogue::event_type_list())]
    UnknownEventType(String),

    /// An Avro value does not fit the event's schema, or cannot be turned
    /// into (or from) the Rust type.
    #[error("Avro value for {full_name} is invalid: {source}")]
    Avro {
        /// Full name of the schema involved.
        full_name: &'static str,
        /// What apache-avro reported.
        #[source]
        source: apache_avro::Error,
    },

    /// The bytes of a JSON command are not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),

    /// A JSON command lacks its `type` discriminator.
    #[error("missing field `type` (expected one of: {expected})")]
    MissingType {
        /// The accepted `type` values.
        expected: &'static str,
    },

    /// A JSON command names a `type` that is not accepted here.
    #[error("unknown type `{got}` (expected one of: {expected})")]
    UnknownType {
        /// The `type` that was given.
        got: String,
        /// The accepted `type` values.
        expected: &'static str,
    },

    /// JSON that is well formed but does not describe a valid event or
    /// command (missing or unknown field, wrong field type, ...).
    #[error("invalid {what}: {message}")]
    InvalidJson {
        /// What was being read, e.g. `PlaceOrder`.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    pub(crate) fn avro(full_name: &'static str, source: apache_avro::Error) -> Self {
        Error::Avro { full_name, source }
    }

    pub(crate) fn invalid_json(what: &'static str, message: impl std::fmt::Display) -> Self {
        Error::InvalidJson {
            what,
            message: message.to_string(),
        }
    }
}
