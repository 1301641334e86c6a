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

/// The running stack's admin token: `flag` (from `--admin-token` or
/// `CHOREO_ADMIN_TOKEN`), else the one `make run` keeps in
/// `./data/admin-token`, else none (a stack started without one).
pub fn running_admin_token(flag: Option<&str>) -> anyhow::Result<choreo_bus::AdminToken> {
    use anyhow::Context;
    use choreo_bus::AdminToken;
    if let Some(token) = flag.filter(|t| !t.trim().is_empty()) {
        return Ok(AdminToken::new(token.trim())?);
    }
    let file = std::path::Path::new("data").join(choreo_stack::config::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => AdminToken::new(text.trim())
            .with_context(|| format!("the admin token in {}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminToken::none()),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}
