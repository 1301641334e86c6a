//! Logging and metrics set-up shared by choreo's binaries.
//!
//! Logs go to stderr through `tracing` (`RUST_LOG` filters; `CHOREO_LOG_JSON=1`
//! switches to JSON lines for log shippers). Colour only when stderr is a
//! terminal and `NO_COLOR` is unset: a log file or a pipe gets plain text. Metrics are recorded with the
//! `metrics` facade and rendered in Prometheus text by [`Metrics::render`],
//! which each service serves at `GET /metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are no-ops, so tests
/// that build several applications in one process can all call it.
pub fn init_logging(default_filter: &str, json: bool) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        let _ = if json {
            builder.json().try_init()
        } else {
            builder.with_target(false).try_init()
        };
    });
}

/// Renders the process's metrics in Prometheus text format.
#[derive(Clone)]
pub struct Metrics(PrometheusHandle);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The process-wide recorder, installed on first use.
    pub fn global() -> Metrics {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        Metrics(
            HANDLE
                .get_or_init(|| {
                    let recorder = PrometheusBuilder::new().build_recorder();
                    let handle = recorder.handle();
                    // Another recorder may already be installed (a test
                    // process); the handle still renders this one's data.
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                })
                .clone(),
        )
    }

    pub fn render(&self) -> String {
        self.0.render()
    }
}

/// Resolves on Ctrl-C or SIGTERM: the signal every binary drains on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
