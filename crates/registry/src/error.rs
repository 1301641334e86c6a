//! The crate's one error type, and how each variant is shown to an HTTP
//! client.
//!
//! Clients (schema_registry_converter, librdkafka's serdes, scripts) branch
//! on Confluent's numeric `error_code`, not on the message, so every variant
//! that a client can cause maps to exactly the code Confluent uses for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::schema::SchemaId;

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the registry, from a bad request to a
/// failing disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),

    #[error("Version {version} not found.")]
    VersionNotFound { subject: String, version: String },

    #[error("Schema {0} not found")]
    SchemaIdNotFound(SchemaId),

    #[error("Schema not found")]
    SchemaNotFound { subject: String },

    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),

    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),

    #[error("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: u32 },

    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: u32 },

    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),

    #[error("Invalid schema: {0}")]
    InvalidSchema(String),

    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),

    #[error("Invalid compatibility level '{0}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel(String),

    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .messages.join("; "))]
    Incompatible {
        subject: String,
        messages: Vec<String>,
    },

    #[error("Malformed request body: {0}")]
    MalformedRequest(String),

    #[error("HTTP 404 Not Found")]
    RouteNotFound,

    /// A delete or compatibility write without the admin token.
    #[error("{0}")]
    Unauthorized(choreo_admin::Refusal),

    #[error("corrupt registry database: {0}")]
    CorruptStore(String),

    #[error("database error")]
    Database(#[from] sqlx::Error),

    #[error("I/O error")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Confluent's `error_code` and the HTTP status that goes with it.
    pub fn code(&self) -> (StatusCode, u32) {
        use Error::*;
        match self {
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            SchemaIdNotFound(_) | SchemaNotFound { .. } => (StatusCode::NOT_FOUND, 40403),
            SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            SubjectCompatibilityNotConfigured(_) => (StatusCode::NOT_FOUND, 40408),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Incompatible { .. } => (StatusCode::CONFLICT, 409),
            MalformedRequest(_) => (StatusCode::BAD_REQUEST, 400),
            RouteNotFound => (StatusCode::NOT_FOUND, 404),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, 40101),
            CorruptStore(_) | Database(_) | Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

/// The body Confluent sends with every error.
#[derive(Serialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, error_code) = self.code();
        let message = if status.is_server_error() {
            // The client only learns that the backend failed; the cause
            // chain goes to the log, where an operator can act on it.
            tracing::error!(error = %error_chain(&self), "request failed");
            "Error in the backend data store".to_owned()
        } else {
            self.to_string()
        };
        (
            status,
            axum::Json(ErrorBody {
                error_code,
                message,
            }),
        )
            .into_response()
    }
}

/// `error: cause: cause` on one line, because `Display` of a wrapping
/// error alone hides the part that says what actually broke.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
