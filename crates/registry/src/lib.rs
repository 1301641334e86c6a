//! A Confluent-compatible Schema Registry for Avro, small enough to run
//! beside the saga services where no Confluent or Karapace build can be
//! installed.
//!
//! It answers every call that schema_registry_converter, librdkafka's
//! serdes (kcat) and a person with curl make: subjects and versions,
//! schemas by global id, compatibility levels and checks, soft and hard
//! deletes, with Confluent's JSON shapes and `error_code`s. Only AVRO is
//! supported, without schema references. Ids are global, start at 1, are
//! shared by equal schemas across subjects, and survive restarts: state
//! lives in SQLite (`registry.db` in the data directory) and is loaded
//! into memory at start.
//!
//! # Layout
//!
//! - [`config`]: [`Settings`], parsed from flags and environment.
//! - [`schema`]: parsed Avro schemas, ids, versions, compatibility levels
//!   and the compatibility check (delegated to apache-avro). Pure.
//! - `catalog`: the registry state as a value; decisions return changes.
//!   Pure.
//! - [`store`]: [`Registry`], the catalog persisted to SQLite, with
//!   serialised writes.
//! - [`http`]: the REST API ([`router`]).
//! - [`error`]: the crate's [`Error`] and its Confluent error codes.
//!
//! The entry points follow mini-redis: [`run`] takes its listener and a
//! shutdown future, so tests can bind port 0 and stop the server at will.

use std::future::Future;

use choreo_admin::AdminToken;
use tokio::net::TcpListener;

mod catalog;
pub mod config;
pub mod error;
pub mod http;
pub mod schema;
pub mod store;

pub use catalog::SubjectVersion;
pub use config::Settings;
pub use error::{Error, Result};
pub use http::router;
pub use schema::{AvroSchema, CompatibilityLevel, SchemaId, VersionSpec};
pub use store::Registry;

/// Opens the registry described by `settings` (the listener is bound by
/// the caller, so tests can pick port 0).
pub async fn build(settings: &Settings) -> Result<Registry> {
    Registry::open(&settings.data_dir).await
}

/// Serves the API, every write open, on `listener` until `shutdown`
/// completes ([`serve`] without an admin token).
pub async fn run(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve(listener, registry, &AdminToken::none(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes, lets in-flight
/// requests finish, then closes the database. The deletes and the
/// compatibility writes need `admin` when one is set.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    admin: &AdminToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let served = axum::serve(listener, router(registry.clone(), admin))
        .with_graceful_shutdown(shutdown)
        .await;
    registry.close().await;
    Ok(served?)
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what `docker stop` and
/// process supervisors send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
