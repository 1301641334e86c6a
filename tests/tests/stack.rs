//! `choreo up` as a person runs it: the real binary, its output, its exit
//! status.
//!
//! - a second stack on ports that are taken exits 2 before starting
//!   anything, naming the port and the process that holds it;
//! - a service that dies under `choreo up` is restarted by it (logged), so
//!   one crash does not stop the saga;
//! - a broker whose port is bound between the check and its own bind
//!   fails as `PortStolen`, the error tests retry on other ports.

use std::process::Stdio;
use std::time::Duration;

use choreo_stack::{Broker, BrokerSpec, LogSink, Ports, StackConfig};
use choreo_testkit::{bin_dir, eventually, TestStack};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn a_broker_whose_port_is_bound_before_it_binds_fails_as_port_stolen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ports = Ports::free()?;
    let config = StackConfig::local(dir.path().to_owned(), bin_dir());
    let spec = BrokerSpec {
        java: config.java,
        libs: config.kafka_libs,
        dir: dir.path().join("broker"),
        port: ports.broker,
        controller_port: ports.controller,
        log: LogSink::Files,
        inherit_env: false,
        data_dir: dir.path().to_owned(),
    };
    // Bound after any check a stack makes, as another test's socket would be.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", ports.controller))?;
    match Broker::start(&spec).await {
        Err(choreo_stack::Error::PortStolen { what, port, holder }) => {
            assert_eq!(
                (what.as_str(), port),
                ("broker controller", ports.controller)
            );
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected PortStolen for the controller port, got {other:?}"),
    }
    Ok(())
}

fn up_command(data_dir: &std::path::Path, ports: &Ports) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_dir().join("choreo"));
    cmd.arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--broker-port", &ports.broker.to_string()])
        .args(["--controller-port", &ports.controller.to_string()])
        .args(["--registry-port", &ports.registry.to_string()])
        .args(["--order-port", &ports.order.to_string()])
        .args(["--inventory-port", &ports.inventory.to_string()])
        .args(["--payment-port", &ports.payment.to_string()])
        .args(["--courier-port", &ports.courier.to_string()])
        .args(["--communication-port", &ports.communication.to_string()])
        .args(["--ui-listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn a_second_stack_on_taken_ports_exits_2_naming_the_port_and_its_holder() -> anyhow::Result<()>
{
    let stack = TestStack::builder().start().await?;
    let dir = tempfile::tempdir()?;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        up_command(dir.path(), &stack.config.ports).output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let port = stack.config.ports.broker;
    assert!(
        stderr.contains(&format!("port {port} (broker) is in use by java (pid ")),
        "the message names the port and its holder: {stderr}"
    );
    assert!(
        !dir.path().join("broker").exists(),
        "nothing was started or written"
    );
    assert!(!stderr.contains('\u{1b}'), "no colour codes off a terminal");
    stack.shutdown().await;
    Ok(())
}

/// Finds the pid of `choreo-<service>` whose parent is `parent`.
fn child_pid(parent: u32, service: &str) -> Option<u32> {
    let wanted = format!("choreo-{service}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `comm` in /proc/<pid>/stat is cut at 15 bytes; argv[0] is whole.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let arg0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if ppid == Some(parent) && arg0.ends_with(wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[tokio::test]
async fn a_service_that_dies_under_choreo_up_is_restarted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ports = Ports::free()?;
    let mut up = up_command(dir.path(), &ports)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let runner = up.id().expect("choreo up runs");
    // Collect everything it prints, stdout and stderr.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        up.stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        up.stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    let mut output = Vec::new();
    wait_for("choreo is up", &mut output, &mut rx).await?;
    // The monitor is served and named in the table.
    wait_for("monitor (browser)", &mut output, &mut rx).await?;
    let monitor = output
        .iter()
        .find(|l| l.contains("monitor (browser)"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_owned();
    assert!(monitor.starts_with("http://127.0.0.1:"), "{monitor}");
    let page = reqwest::get(&monitor).await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await?, choreo_cli::ui::INDEX);
    let overview: serde_json::Value = reqwest::get(format!("{monitor}/api/overview"))
        .await?
        .json()
        .await?;
    assert_eq!(
        overview["services"].as_array().map(Vec::len),
        Some(5),
        "{overview}"
    );
    let pid = child_pid(runner, "communication").expect("communication runs under choreo up");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    wait_for("service restarted", &mut output, &mut rx).await?;
    let url = format!("http://127.0.0.1:{}/readyz", ports.communication);
    eventually("communication ready again", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let new_pid = child_pid(runner, "communication").filter(|p| *p != pid);
            let ready = reqwest::get(&url)
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            Ok((ready && new_pid.is_some()).then_some(()))
        }
    })
    .await?;
    let restarted: Vec<&String> = output
        .iter()
        .filter(|l| l.contains("exited unexpectedly"))
        .collect();
    assert_eq!(restarted.len(), 1, "one crash logged: {restarted:?}");
    assert!(restarted[0].contains("communication"), "{}", restarted[0]);
    // Ctrl-C stops it cleanly.
    nix_interrupt(runner)?;
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait()).await??;
    assert!(status.success(), "choreo up exit: {status}");
    Ok(())
}

/// Reads lines into `output` until one contains `needle`.
async fn wait_for(
    needle: &str,
    output: &mut Vec<String>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut found = output.iter().any(|l| l.contains(needle));
    while !found {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                found = line.contains(needle);
                output.push(line);
            }
            _ => anyhow::bail!("`{needle}` never printed; output:\n{}", output.join("\n")),
        }
    }
    Ok(())
}

fn nix_interrupt(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -INT {pid}");
    Ok(())
}
