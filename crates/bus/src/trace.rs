//! Trace context through Kafka headers, with OpenTelemetry's W3C
//! propagator.
//!
//! Spans are `tracing` spans that `tracing-opentelemetry` (installed by
//! `choreo_telemetry::init`) turns into OpenTelemetry spans, named and
//! attributed by the messaging semantic conventions:
//!
//! - an event written to the outbox gets a producer span `create <topic>`,
//!   a child of whatever is current (the HTTP request, the handler of the
//!   event that caused it); its context goes into the message's
//!   `traceparent` header;
//! - a consumed message is handled inside a consumer span
//!   `process <topic>` whose parent is the context in its headers.
//!
//! So one trace runs from the request that placed an order through every
//! service's reaction to the last mail, compensation included, and each
//! span's parent follows causation. Without the layer (a unit test) spans
//! have no context and no header is written; a message without one starts
//! a new trace.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{BorrowedHeaders, Headers};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::consumer::Incoming;

/// The context a consumed message carries: the parent of its handler's
/// span.
#[derive(Clone, Debug, Default)]
pub struct TraceContext(Context);

impl TraceContext {
    /// No parent: the handler's span starts a new trace.
    pub fn new_root() -> Self {
        Self(Context::new())
    }

    /// The context in a message's `traceparent`/`tracestate` headers; none
    /// (a new trace) when they are absent or malformed.
    pub fn from_headers(headers: Option<&BorrowedHeaders>) -> Self {
        match headers {
            Some(h) => Self(TraceContextPropagator::new().extract(&KafkaHeaders(h))),
            None => Self::new_root(),
        }
    }

    /// Whether a remote parent was found.
    pub fn has_parent(&self) -> bool {
        self.0.span().span_context().is_valid()
    }
}

/// The consumer span a handler runs in: `process <topic>`, a child of the
/// producer span in the message's headers.
pub(crate) fn process_span(service: &str, incoming: &Incoming, parent: TraceContext) -> Span {
    let meta = incoming.event.metadata();
    let span = tracing::info_span!(
        "handle",
        otel.name = %format!("process {}", incoming.topic),
        otel.kind = "consumer",
        service,
        topic = %incoming.topic,
        partition = incoming.partition,
        offset = incoming.offset,
        event_type = incoming.event.event_type(),
        order_id = %meta.order_id,
        trace_id = tracing::field::Empty,
    );
    // Fails only without the OpenTelemetry layer, where there is no
    // trace to join.
    let _ = span.set_parent(parent.0);
    span.set_attribute("messaging.system", "kafka");
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.operation.name", "process");
    span.set_attribute("messaging.destination.name", incoming.topic.clone());
    span.set_attribute(
        "messaging.destination.partition.id",
        incoming.partition.to_string(),
    );
    span.set_attribute("messaging.consumer.group.name", service.to_owned());
    span.set_attribute("messaging.kafka.offset", incoming.offset);
    if let Some(key) = &incoming.key {
        span.set_attribute("messaging.kafka.message.key", key.clone());
    }
    span.set_attribute("messaging.message.id", meta.event_id.clone());
    span.set_attribute("choreo.event_type", incoming.event.event_type());
    span.set_attribute("choreo.order_id", meta.order_id.clone());
    if let Some(trace_id) = trace_id(&span) {
        span.record("trace_id", trace_id);
    }
    span
}

/// The producer span of an event written to the outbox, `create <topic>`
/// (the relay sends it later), ended at once; returns the headers that
/// carry its context.
pub(crate) fn create_headers(
    topic: &str,
    key: &str,
    event_type: &str,
    event_id: &str,
) -> Vec<(String, String)> {
    let span = tracing::info_span!(
        "emit",
        otel.name = %format!("create {topic}"),
        otel.kind = "producer",
        topic,
        event_type,
    );
    span.set_attribute("messaging.system", "kafka");
    span.set_attribute("messaging.operation.type", "create");
    span.set_attribute("messaging.operation.name", "create");
    span.set_attribute("messaging.destination.name", topic.to_owned());
    span.set_attribute("messaging.kafka.message.key", key.to_owned());
    span.set_attribute("messaging.message.id", event_id.to_owned());
    span.set_attribute("choreo.event_type", event_type.to_owned());
    headers_of(&span)
}

/// `span`'s context as `traceparent` (and `tracestate`) pairs; none when
/// it has no context.
fn headers_of(span: &Span) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderPairs(&mut headers));
    headers
}

/// Routes polled by probes and scrapers, which would only bury the traces
/// of real requests. (`/openapi.json` is added after this layer.)
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Middleware: each request to a service route runs in a server span
/// `<METHOD> <route>`, a child of the request's own `traceparent` if it
/// has one, so an order placed over HTTP starts (or joins) its trace.
pub(crate) async fn http_server_span(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let Some(route) = matched
        .map(|m| m.as_str().to_owned())
        .filter(|r| !UNTRACED.contains(&r.as_str()))
    else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        method = %method,
        route = %route,
    );
    let parent = TraceContextPropagator::new().extract(&HttpHeaders(request.headers()));
    // Fails only without the OpenTelemetry layer.
    let _ = span.set_parent(parent);
    span.set_attribute("http.request.method", method);
    span.set_attribute("http.route", route);
    span.set_attribute("url.path", request.uri().path().to_owned());
    span.set_attribute("url.scheme", "http");
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(status.to_string()));
    }
    response
}

struct HttpHeaders<'a>(&'a axum::http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The `traceparent` of the current span, to keep with state that a timer
/// acts on later ([`deadline_span`]); `None` without a trace.
pub fn current_traceparent() -> Option<String> {
    headers_of(&Span::current())
        .into_iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v)
}

/// The span an order's deadline runs in: `order deadline`, a child of the
/// context the order was placed in (from [`current_traceparent`]), so the
/// cancellation and its compensation stay in the order's trace.
pub fn deadline_span(order_id: &str, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        "deadline",
        otel.name = "order deadline",
        otel.kind = "internal",
        order_id,
    );
    if let Some(tp) = traceparent {
        let carrier = std::collections::HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
        // Fails only without the OpenTelemetry layer.
        let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    }
    span.set_attribute("choreo.order_id", order_id.to_owned());
    span
}

/// The trace id of `span` in hex, when it has one.
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct KafkaHeaders<'a>(&'a BorrowedHeaders);

impl Extractor for KafkaHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

struct HeaderPairs<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderPairs<'_> {
    fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use rdkafka::message::{Header, OwnedHeaders};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn with_layer<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn owned(pairs: &[(String, String)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
    }

    #[test]
    fn an_emitted_context_is_the_parent_of_the_consumer_span() {
        with_layer(|| {
            let parent = tracing::info_span!("request");
            let headers = parent.in_scope(|| create_headers("orders", "o-1", "OrderPlaced", "e-1"));
            let (key, value) = headers.first().expect("a traceparent header");
            assert_eq!(key, "traceparent");
            let parts: Vec<&str> = value.split('-').collect();
            assert_eq!(parts.len(), 4, "{value}");
            assert_eq!(parts[1], trace_id(&parent).unwrap(), "the request's trace");

            let owned = owned(&headers);
            let cx = TraceContext::from_headers(Some(owned.as_borrowed()));
            assert!(cx.has_parent());
            let remote = cx.0.span().span_context().clone();
            assert_eq!(remote.span_id().to_string(), parts[2]);
            assert!(remote.is_remote());
        });
    }

    #[test]
    fn without_headers_or_with_garbage_a_new_trace_starts() {
        assert!(!TraceContext::from_headers(None).has_parent());
        for garbage in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let headers = owned(&[("traceparent".into(), garbage.into())]);
            let cx = TraceContext::from_headers(Some(headers.as_borrowed()));
            assert!(!cx.has_parent(), "{garbage}");
        }
    }

    #[test]
    fn without_the_layer_no_header_is_written() {
        assert!(create_headers("orders", "o-1", "OrderPlaced", "e-1").is_empty());
    }
}
