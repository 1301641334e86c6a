//! The registry's settings: the only place that reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use choreo_admin::AdminToken;

/// How to run the registry; every field has a default that works for a
/// local `make run`, and every default can be overridden by a flag or an
/// environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "choreo-registry",
    about = "Confluent-compatible Avro schema registry"
)]
pub struct Settings {
    /// Address the HTTP API listens on.
    #[arg(long, env = "CHOREO_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Directory holding `registry.db`; created if missing.
    #[arg(
        long,
        env = "CHOREO_REGISTRY_DATA_DIR",
        default_value = "./data/registry"
    )]
    pub data_dir: PathBuf,

    /// The bearer token the deletes and the compatibility writes need
    /// (unset: open). Never printed.
    #[arg(
        long,
        env = choreo_admin::ENV,
        hide_env_values = true,
        value_parser = parse_token
    )]
    pub admin_token: Option<AdminToken>,
}

fn parse_token(s: &str) -> Result<AdminToken, choreo_admin::InvalidToken> {
    AdminToken::new(s)
}
