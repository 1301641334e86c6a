//! Where the broker and the schema registry are: the global flags every
//! topic-reading command shares.

/// `--brokers` and `--registry`, global to every subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct Connection {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        env = "CHOREO_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Confluent-compatible schema registry.
    #[arg(
        long,
        global = true,
        env = "CHOREO_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub registry: String,
}

impl Connection {
    pub fn new(brokers: impl Into<String>, registry: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            registry: registry.into().trim_end_matches('/').to_owned(),
        }
    }
}
