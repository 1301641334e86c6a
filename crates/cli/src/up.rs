//! `choreo up`: the whole local stack in one process tree, no Docker.
//!
//! Refuses to start when any of its ports is taken (a stack already
//! running, most likely), starts Apache Kafka (KRaft, log dirs under the
//! data folder, so a restart keeps every event), creates the topics, starts `choreo-registry` and registers
//! the schemas, starts each service binary that exists, prints where
//! everything listens and the admin token (`CHOREO_ADMIN_TOKEN`, else the
//! one kept in the data folder, else a new one), restarts a service that exits on its own (with
//! backoff, logged), serves the saga monitor (`choreo ui`, on 8090), and
//! stops it all cleanly on Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use choreo_stack::{Stack, StackConfig};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the broker, registry and services keep their data.
    #[arg(long, env = "CHOREO_DATA", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Start only these services (default: every built service binary).
    #[arg(long, value_delimiter = ',')]
    pub services: Option<Vec<String>>,
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    /// The broker's KRaft controller listener.
    #[arg(long, default_value_t = 9093)]
    pub controller_port: u16,
    #[arg(long, default_value_t = 8081)]
    pub registry_port: u16,
    #[arg(long, default_value_t = 8080)]
    pub order_port: u16,
    #[arg(long, default_value_t = 8082)]
    pub inventory_port: u16,
    #[arg(long, default_value_t = 8083)]
    pub payment_port: u16,
    #[arg(long, default_value_t = 8084)]
    pub courier_port: u16,
    #[arg(long, default_value_t = 8085)]
    pub communication_port: u16,
    /// Where the saga monitor (`choreo ui`) is served.
    #[arg(long, env = "CHOREO_UI_LISTEN", default_value = crate::ui::DEFAULT_LISTEN)]
    pub ui_listen: std::net::SocketAddr,
    /// Do not serve the monitor.
    #[arg(long)]
    pub no_ui: bool,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let bin_dir = std::env::current_exe()
        .context("locating the choreo binary")?
        .parent()
        .context("binary has no folder")?
        .to_owned();
    let mut config = StackConfig::local(args.data_dir.clone(), bin_dir);
    config.admin_token = choreo_stack::config::local_admin_token(&args.data_dir)?;
    config.ports = choreo_stack::Ports {
        broker: args.broker_port,
        controller: args.controller_port,
        registry: args.registry_port,
        order: args.order_port,
        inventory: args.inventory_port,
        payment: args.payment_port,
        courier: args.courier_port,
        communication: args.communication_port,
    };
    if let Some(services) = args.services {
        config.services = services;
    }
    // Bound before anything starts: a taken port fails at once.
    let ui_listener = match args.no_ui {
        true => None,
        false => Some(crate::ui::bind(args.ui_listen).await?),
    };
    let started = std::time::Instant::now();
    let stack = tokio::select! {
        s = Stack::start(config) => s.context("starting the stack")?,
        _ = choreo_telemetry::shutdown_signal() => {
            // Children are kill-on-drop: the half-started stack goes with us.
            anyhow::bail!("interrupted while starting");
        }
    };
    let ui_stop = tokio_util::sync::CancellationToken::new();
    let ui = match ui_listener {
        Some(listener) => {
            let url = format!("http://{}", listener.local_addr()?);
            let conn = crate::Connection::new(stack.brokers(), stack.registry_url());
            let endpoints = crate::reconcile::Endpoints {
                order: stack.service_url("order"),
                inventory: stack.service_url("inventory"),
                payment: stack.service_url("payment"),
                courier: stack.service_url("courier"),
                communication: stack.service_url("communication"),
            };
            let task = tokio::spawn(crate::ui::serve(
                listener,
                conn,
                endpoints,
                crate::ui::DEFAULT_KEEP_ORDERS,
                ui_stop.clone(),
            ));
            Some((url, task))
        }
        None => None,
    };
    print_endpoints(
        &stack,
        started.elapsed(),
        ui.as_ref().map(|(u, _)| u.as_str()),
    );
    let mut stack = stack;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let shutdown = choreo_telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                stack.supervise();
            }
        }
    }
    println!("stopping…");
    ui_stop.cancel();
    if let Some((_, task)) = ui {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("the monitor: {e:#}"),
            Err(e) => eprintln!("the monitor: {e}"),
        }
    }
    stack.shutdown().await;
    println!("stopped");
    Ok(())
}

fn print_endpoints(stack: &Stack, took: std::time::Duration, ui: Option<&str>) {
    let c = &stack.config;
    println!();
    println!(
        "choreo is up ({:.1}s). Data in {}",
        took.as_secs_f64(),
        c.data_dir.display()
    );
    println!(
        "  broker               {} (Apache Kafka {})",
        stack.brokers(),
        choreo_stack::broker::KAFKA_VERSION
    );
    println!(
        "  broker log           {}",
        c.data_dir.join("broker/server.log").display()
    );
    println!("  schema registry      {}", stack.registry_url());
    for name in &c.services {
        println!("  {:<20} {}", name, stack.service_url(name));
    }
    if let Some(url) = ui {
        println!("  {:<20} {url}", "monitor (browser)");
    }
    if let Some(token) = stack.admin_token().expose() {
        println!(
            "  admin token          {token} (kept in {})",
            c.data_dir
                .join(choreo_stack::config::ADMIN_TOKEN_FILE)
                .display()
        );
        println!(
            "Admin writes (PUT /stock, PUT /accounts, the registry's deletes and config) \
             need `Authorization: Bearer <admin token>`."
        );
    }
    println!("Press Ctrl-C to stop.");
    println!();
}
