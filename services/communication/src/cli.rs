//! Command-line arguments of `choreo-communication`. Configuration comes
//! from the environment ([`crate::config`]); the command line only picks
//! what to do.

use clap::{Parser, Subcommand};

/// The communication service of the choreo saga.
#[derive(Debug, Parser)]
#[command(name = "choreo-communication", version, about)]
pub struct Cli {
    /// Without a command the service runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rebuild the order replica by reading `orders` from the beginning
    /// (upserts every OrderPlaced; sends no mail, emits no event).
    RebuildReplica,
}
