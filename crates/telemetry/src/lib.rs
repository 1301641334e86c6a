//! Logging, trace export and metrics set-up shared by choreo's binaries.
//!
//! Logs go to stderr through `tracing` (`RUST_LOG` filters; `CHOREO_LOG_JSON=1`
//! switches to JSON lines for log shippers). Colour only when stderr is a
//! terminal and `NO_COLOR` is unset: a log file or a pipe gets plain text.
//!
//! Spans are OpenTelemetry spans too (`tracing-opentelemetry`): each has a
//! trace and span id, which the bus carries in Kafka headers, so one
//! purchase is one trace across the services. They are exported over OTLP
//! only when the standard variables say where: `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with `OTEL_SERVICE_NAME`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or
//! `http/json`), `OTEL_EXPORTER_OTLP_HEADERS` and the batch settings
//! `OTEL_BSP_*` read as the OpenTelemetry SDK reads them.
//!
//! Metrics are recorded with the `metrics` facade and rendered in
//! Prometheus text by [`Metrics::render`], which each service serves at
//! `GET /metrics`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Why telemetry could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Protocol(String),
    #[error("the OTLP span exporter: {0}")]
    Exporter(String),
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber once: logs to stderr, spans to the OTLP
/// endpoint when one is configured. `service` is the `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise. Later calls are no-ops returning the
/// first one's result, so tests that build several applications in one
/// process can all call it.
pub fn init(service: &str, default_filter: &str, json: bool) -> Result<(), Error> {
    static ONCE: OnceLock<Result<(), Error>> = OnceLock::new();
    ONCE.get_or_init(|| install(service, default_filter, json))
        .clone()
}

fn install(service: &str, default_filter: &str, json: bool) -> Result<(), Error> {
    let provider = tracer_provider(service)?;
    let tracer = provider.tracer("choreo");
    let _ = PROVIDER.set(provider);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_target(false)
            .with_writer(std::io::stderr)
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    // Another subscriber may already be installed (a test process): this
    // one then stays unused, as before.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(text)
        .with(json)
        .try_init();
    Ok(())
}

/// Whether the environment names an OTLP endpoint for spans.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Spans always get ids (the bus propagates them, and logs name the trace);
/// they leave the process only when an endpoint is configured.
fn tracer_provider(service: &str) -> Result<SdkTracerProvider, Error> {
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |s| s.trim().is_empty()) {
        resource = resource.with_service_name(service.to_owned());
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    if !otlp_configured() {
        return Ok(builder.build());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// else `http/protobuf`.
fn protocol() -> Result<Protocol, Error> {
    let name = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
    .unwrap_or_else(|| "http/protobuf".to_owned());
    parse_protocol(name.trim())
}

fn parse_protocol(name: &str) -> Result<Protocol, Error> {
    match name {
        "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        "grpc" => Err(Error::Protocol(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported by choreo: use http/protobuf \
             (the collector's port 4318)"
                .to_owned(),
        )),
        other => Err(Error::Protocol(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not one of http/protobuf, http/json"
        ))),
    }
}

/// Exports the spans still buffered and stops the exporter: called by a
/// binary as it exits. A no-op when nothing was set up.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocols_are_the_http_ones() {
        assert_eq!(
            parse_protocol("http/protobuf").unwrap(),
            Protocol::HttpBinary
        );
        assert_eq!(parse_protocol("http/json").unwrap(), Protocol::HttpJson);
        let grpc = parse_protocol("grpc").unwrap_err().to_string();
        assert!(grpc.contains("use http/protobuf"), "{grpc}");
        assert!(parse_protocol("thrift").is_err());
    }
}
