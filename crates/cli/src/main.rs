use clap::{Parser, Subcommand};

/// choreo: a choreographed purchase saga over Kafka.
#[derive(Debug, Parser)]
#[command(name = "choreo", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole local stack (broker, registry, services) until Ctrl-C.
    Up(choreo_cli::up::UpArgs),
    /// Create every topic and register every schema, then exit.
    Init(choreo_cli::init::InitArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    choreo_telemetry::init_logging("info", false);
    match Cli::parse().command {
        Command::Up(args) => choreo_cli::up::run(args).await,
        Command::Init(args) => choreo_cli::init::run(args).await,
    }
}
