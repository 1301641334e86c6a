//! `choreo bench-bus`: the messaging runtime on its own — Confluent-Avro
//! encode and decode rates through the registry client, and the outbox path
//! (append in a unit of work → relay → broker acknowledgement) on SQLite and
//! on PostgreSQL. Numbers, not assertions.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use choreo_bus::{Codec, Emitter, KafkaSettings, Relay};
use choreo_events::{EventMetadata, OrderLine, OrderPlaced};
use choreo_outbox::Db;
use choreo_stack::{LogSink, Ports, Stack, StackConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct BenchBusArgs {
    /// Events encoded and decoded.
    #[arg(long, default_value_t = 50_000)]
    pub codec_events: u64,
    /// Outbox rows appended and relayed, per backend.
    #[arg(long, default_value_t = 20_000)]
    pub outbox_rows: u64,
    /// Rows appended per unit of work.
    #[arg(long, default_value_t = 50)]
    pub rows_per_transaction: u64,
    /// PostgreSQL server for the PostgreSQL run (a scratch database is
    /// created and dropped); `none` skips it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
}

fn sample(order_id: &str) -> OrderPlaced {
    OrderPlaced {
        metadata: EventMetadata::new(order_id, "bench", None),
        customer_id: "bench-rich".into(),
        customer_email: "bench@bench.invalid".into(),
        items: vec![OrderLine {
            sku: "BENCH-1".into(),
            quantity: 1,
            unit_price_minor: 100,
        }],
        total_minor: 100,
        currency: "EUR".into(),
        shipping_address: crate::bench::address("DE"),
    }
}

pub async fn run(args: BenchBusArgs, json: bool, out: &mut impl Write) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("choreo-bench-bus-")
        .tempdir()?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary has no folder")?
        .to_owned();
    let mut config = StackConfig::local(dir.path().to_owned(), bin_dir);
    config.services.clear();
    config.ports = Ports::free()?;
    config.log = LogSink::Files;
    eprintln!(
        "starting a broker and registry in {} …",
        dir.path().display()
    );
    let stack = Stack::start(config)
        .await
        .context("starting broker and registry")?;
    let codec = Arc::new(Codec::new(&stack.registry_url()));

    // Codec: warm the schema caches, then time the steady state.
    let events: Vec<OrderPlaced> = (0..args.codec_events)
        .map(|_| sample(&uuid::Uuid::new_v4().to_string()))
        .collect();
    let warm = codec.encode(&events[0]).await?;
    codec.decode("orders", "warmup", Some(&warm)).await?;
    let started = Instant::now();
    let mut encoded = Vec::with_capacity(events.len());
    for e in &events {
        encoded.push(codec.encode(e).await?);
    }
    let encode_rate = events.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for (i, bytes) in encoded.iter().enumerate() {
        codec.decode("orders", &i.to_string(), Some(bytes)).await?;
    }
    let decode_rate = encoded.len() as f64 / started.elapsed().as_secs_f64();
    let bytes_per_event = encoded.iter().map(Vec::len).sum::<usize>() / encoded.len().max(1);

    let kafka = KafkaSettings::new(stack.brokers());
    let sqlite = outbox_run(
        &format!("sqlite://{}/outbox.db", dir.path().display()),
        &kafka,
        codec.clone(),
        &args,
    )
    .await
    .context("outbox on SQLite")?;
    let postgres = if args.postgres == "none" {
        None
    } else {
        Some(
            postgres_run(&args, &kafka, codec.clone())
                .await
                .context("outbox on PostgreSQL")?,
        )
    };
    stack.shutdown().await;

    let report = json!({
        "encode_per_second": encode_rate.round(),
        "decode_per_second": decode_rate.round(),
        "bytes_per_event": bytes_per_event,
        "outbox_sqlite_rows_per_second": sqlite.round(),
        "outbox_postgres_rows_per_second": postgres.map(f64::round),
        "outbox_rows": args.outbox_rows,
        "rows_per_transaction": args.rows_per_transaction,
    });
    if json {
        writeln!(out, "{report}")?;
    } else {
        writeln!(out, "choreo bench-bus")?;
        writeln!(
            out,
            "  encode (OrderPlaced, {bytes_per_event} B)   {encode_rate:>10.0} /s"
        )?;
        writeln!(
            out,
            "  decode                          {decode_rate:>10.0} /s"
        )?;
        writeln!(
            out,
            "  outbox → relay → broker, SQLite {sqlite:>10.0} rows/s"
        )?;
        match postgres {
            Some(p) => writeln!(out, "  outbox → relay → broker, PostgreSQL {p:>6.0} rows/s")?,
            None => writeln!(out, "  outbox on PostgreSQL skipped")?,
        }
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(report)
}

/// Appends `outbox_rows` events in units of work while a relay publishes
/// them; returns rows/s from the first append to the last acknowledgement.
async fn outbox_run(
    url: &str,
    kafka: &KafkaSettings,
    codec: Arc<Codec>,
    args: &BenchBusArgs,
) -> anyhow::Result<f64> {
    let db = Db::connect(url).await?;
    let emitter = Emitter::new(codec);
    let relay = Relay::new(db.clone(), kafka, "bench")?;
    let stop = CancellationToken::new();
    let relaying = tokio::spawn(relay.run(stop.clone()));
    let started = Instant::now();
    let mut appended = 0;
    while appended < args.outbox_rows {
        let mut uow = db.begin().await?;
        for _ in 0..args.rows_per_transaction.min(args.outbox_rows - appended) {
            emitter
                .emit(&mut uow, &sample(&uuid::Uuid::new_v4().to_string()))
                .await?;
            appended += 1;
        }
        uow.commit().await?;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while db.outbox_backlog().await? > 0 {
        if Instant::now() > deadline {
            bail!("relay did not drain the outbox within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = appended as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    relaying.await??;
    Ok(rate)
}

async fn postgres_run(
    args: &BenchBusArgs,
    kafka: &KafkaSettings,
    codec: Arc<Codec>,
) -> anyhow::Result<f64> {
    use choreo_outbox::sqlx::{Connection, Executor, PgConnection};
    let name = format!("choreo_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&args.postgres).await?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let base = args
        .postgres
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&args.postgres);
    let result = outbox_run(&format!("{base}/{name}"), kafka, codec, args).await;
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
    result
}
