use std::io::Write;
use std::process::ExitCode;

use choreo_cli::dlq::DlqCommand;
use choreo_cli::order::OrderCommand;
use choreo_cli::output::Progress;
use choreo_cli::{
    bench, bench_bus, dlq, init, order, reconcile, trace, ui, up, watch, wire, Connection, Output,
};
use clap::{Parser, Subcommand};

/// choreo: a choreographed purchase saga over Kafka.
#[derive(Debug, Parser)]
#[command(name = "choreo", version)]
struct Cli {
    #[command(flatten)]
    conn: Connection,
    /// One JSON object per line instead of human output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole local stack (broker, registry, services) until Ctrl-C.
    Up(up::UpArgs),
    /// Create every topic and register every schema, then exit.
    Init(init::InitArgs),
    /// Print every saga event, decoded, as it happens.
    Watch(watch::WatchArgs),
    /// One order's saga as a timeline: causes, timings, outcome, what it waits on.
    Trace(trace::TraceArgs),
    /// Orders placed a while ago that have not finished, and what they wait on.
    Stuck(trace::StuckArgs),
    /// Hand-written JSON event → Confluent-Avro bytes (for kcat -P).
    Encode(wire::EncodeArgs),
    /// Confluent-Avro bytes (one message value) → JSON.
    Decode(wire::DecodeArgs),
    /// Dead-letter topics: list and replay.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Orders through the Order API.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Check the saga's invariants across every service and topic.
    Reconcile(reconcile::ReconcileArgs),
    /// The saga monitor in the browser (http://127.0.0.1:8090).
    Ui(ui::UiArgs),
    /// Saga throughput and latency against a fresh (or running) stack.
    Bench(bench::BenchArgs),
    /// The messaging runtime alone: codec rates, outbox → relay → broker.
    BenchBus(bench_bus::BenchBusArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if matches!(
        cli.command,
        Command::Up(_) | Command::Init(_) | Command::Ui(_)
    ) {
        "info"
    } else {
        // Commands report failures themselves; librdkafka's own retries
        // would only repeat them.
        "warn,rdkafka=off,librdkafka=off"
    };
    if let Err(e) = choreo_telemetry::init("choreo", filter, false) {
        eprintln!("choreo: error: {e}");
        return ExitCode::from(2);
    }
    let code = match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("choreo: error: {e:#}");
            ExitCode::from(2)
        }
    };
    choreo_telemetry::shutdown();
    code
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let conn = Connection::new(cli.conn.brokers, cli.conn.registry);
    let output = Output::for_stdout(cli.json);
    // `up` and `init` print with println!; the others write to one locked
    // stdout.
    let command = match cli.command {
        Command::Up(args) => return up::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Init(args) => return init::run(&conn, args).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => {
            return bench::run(&conn, args, cli.json, &mut std::io::stdout())
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Ui(args) => return ui::run(&conn, &args).await.map(|()| ExitCode::SUCCESS),
        Command::BenchBus(args) => {
            return bench_bus::run(args, cli.json, &mut std::io::stdout())
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        other => other,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let progress = |label: &str| {
        if cli.json {
            Progress::hidden()
        } else {
            Progress::new(label, None)
        }
    };
    match command {
        Command::Up(_)
        | Command::Init(_)
        | Command::Ui(_)
        | Command::Bench(_)
        | Command::BenchBus(_) => {
            unreachable!("handled above")
        }
        Command::Watch(args) => {
            watch::run(&conn, &args, output, &mut out).await?;
        }
        Command::Trace(args) => {
            trace::run_trace(&conn, &args, output, &mut out, &mut progress("trace")).await?;
        }
        Command::Stuck(args) => {
            trace::run_stuck(&conn, &args, output, &mut out, &mut progress("stuck")).await?;
        }
        Command::Encode(args) => {
            wire::run_encode(&conn, &args, &mut out).await?;
        }
        Command::Decode(args) => {
            wire::run_decode(&conn, &args, output, &mut out).await?;
        }
        Command::Dlq(DlqCommand::List { service }) => {
            dlq::run_list(
                &conn,
                service.as_deref(),
                output,
                &mut out,
                &mut progress("dlq"),
            )
            .await?;
        }
        Command::Dlq(DlqCommand::Replay(args)) => {
            dlq::run_replay(&args, output, &mut out).await?;
        }
        Command::Order(OrderCommand::Place(args)) => {
            order::run_place(&args, output, &mut out).await?;
        }
        Command::Order(OrderCommand::Wait(args)) => {
            order::run_wait(&args, output, &mut out).await?;
        }
        Command::Reconcile(args) => {
            let report =
                reconcile::run(&conn, &args, output, &mut out, &mut progress("reconcile")).await?;
            if !report.is_clean() {
                out.flush()?;
                return Ok(ExitCode::from(1));
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
