//! One purchase, one trace: every service exports its spans over OTLP
//! (HTTP/protobuf) to an in-process receiver, decoded with
//! opentelemetry-proto. For a confirmed order placed with the client's own
//! `traceparent` and for a compensated one: every span of the order in one
//! trace (the client's, for the first), all five services in it, and each
//! span's parent following causation as the topics record it — the HTTP
//! request → `create orders` (OrderPlaced) → each consumer's
//! `process <topic>` → the `create` of each event it caused → … to the last
//! notification; and for an order cancelled by its deadline, the timer's
//! `order deadline` span continuing the context the order was placed in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use choreo_events::{AnyEvent, Topic};
use choreo_testkit::api::{order_body, Api};
use choreo_testkit::{eventually, topics, TestStack};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

mod common;

const SAGA: Duration = Duration::from_secs(60);

/// One exported span, as the receiver decoded it.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: SpanKind,
    attrs: BTreeMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Received = Arc<Mutex<Vec<Span>>>;

/// `POST /v1/traces`: decodes the request, keeps its spans, answers as an
/// OTLP collector does.
async fn receive(State(received): State<Received>, body: Bytes) -> axum::response::Response {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut spans = Vec::new();
    for rs in request.resource_spans {
        let resource = attributes(
            rs.resource
                .map(|r| r.attributes)
                .as_deref()
                .unwrap_or_default(),
        );
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(Span {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                    attrs: attributes(&s.attributes),
                });
            }
        }
    }
    received.lock().unwrap().extend(spans);
    (
        [(CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// The receiver on a free port; returns its base URL.
async fn start_receiver(received: Received) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Every event of the order on the five event topics.
async fn order_events(stack: &TestStack, order_id: &str) -> anyhow::Result<Vec<AnyEvent>> {
    let mut out = Vec::new();
    for topic in Topic::ALL
        .into_iter()
        .filter(|t| *t != Topic::OrderRequests)
    {
        out.extend(
            topics::order_events(
                &stack.brokers(),
                &stack.registry_url(),
                topic.name(),
                order_id,
            )
            .await?,
        );
    }
    Ok(out)
}

fn service(name: &str) -> String {
    format!("choreo-{name}")
}

/// Checks the trace of one order against its events; returns the trace id.
fn check_trace(spans: &[Span], events: &[AnyEvent], order_id: &str) -> anyhow::Result<String> {
    let ids: BTreeSet<&str> = events
        .iter()
        .map(|e| e.metadata().event_id.as_str())
        .collect();
    let of_order: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.attr("messaging.message.id")
                .is_some_and(|id| ids.contains(id))
        })
        .collect();
    let traces: BTreeSet<&str> = of_order.iter().map(|s| s.trace_id.as_str()).collect();
    anyhow::ensure!(traces.len() == 1, "{order_id}: one trace, got {traces:?}");
    let trace_id = traces.into_iter().next().unwrap_or_default().to_owned();
    let by_id: BTreeMap<&str, &Span> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .map(|s| (s.span_id.as_str(), s))
        .collect();

    for event in events {
        let meta = event.metadata();
        let topic = event.topic();
        let what = format!("{order_id} {} {}", event.event_type(), meta.event_id);
        let producers: Vec<&&Span> = of_order
            .iter()
            .filter(|s| s.kind == SpanKind::Producer)
            .filter(|s| s.attr("messaging.message.id") == Some(meta.event_id.as_str()))
            .collect();
        anyhow::ensure!(
            producers.len() == 1,
            "{what}: one producer span, got {producers:?}"
        );
        let producer = producers[0];
        anyhow::ensure!(
            producer.name == format!("create {}", topic.name())
                && producer.service == service(topic.owner())
                && producer.attr("messaging.system") == Some("kafka")
                && producer.attr("messaging.operation.type") == Some("create")
                && producer.attr("messaging.destination.name") == Some(topic.name())
                && producer.attr("messaging.kafka.message.key") == Some(order_id),
            "{what}: producer span {producer:?}"
        );
        let parent = by_id
            .get(producer.parent.as_str())
            .ok_or_else(|| anyhow::anyhow!("{what}: the producer's parent is not exported"))?;
        match &meta.causation_id {
            // Caused by an event: emitted by that event's handler.
            Some(cause) => anyhow::ensure!(
                parent.kind == SpanKind::Consumer
                    && parent.attr("messaging.message.id") == Some(cause.as_str())
                    && parent.service == producer.service,
                "{what}: caused by {cause}, emitted under {parent:?}"
            ),
            // The order itself, emitted by the HTTP request; or its
            // cancellation by the deadline timer, whose span continues the
            // request's context.
            None => {
                let request = if parent.kind == SpanKind::Internal {
                    anyhow::ensure!(
                        parent.name == "order deadline"
                            && parent.service == service("order")
                            && parent.attr("choreo.order_id") == Some(order_id),
                        "{what}: emitted under {parent:?}"
                    );
                    by_id.get(parent.parent.as_str()).ok_or_else(|| {
                        anyhow::anyhow!("{what}: the deadline span's parent is not exported")
                    })?
                } else {
                    parent
                };
                anyhow::ensure!(
                    request.kind == SpanKind::Server
                        && request.name == "POST /orders"
                        && request.service == service("order")
                        && request.attr("http.response.status_code") == Some("202"),
                    "{what}: placed under {request:?}"
                )
            }
        }
        // Each handling of the event is a child of its producer span.
        for consumer in of_order.iter().filter(|s| {
            s.kind == SpanKind::Consumer
                && s.attr("messaging.message.id") == Some(meta.event_id.as_str())
        }) {
            anyhow::ensure!(
                consumer.parent == producer.span_id
                    && consumer.name == format!("process {}", topic.name())
                    && consumer.attr("messaging.destination.name") == Some(topic.name())
                    && consumer.attr("messaging.operation.type") == Some("process")
                    && consumer.attr("messaging.consumer.group.name").is_some(),
                "{what}: consumer span {consumer:?} under producer {}",
                producer.span_id
            );
        }
    }
    let services: BTreeSet<&str> = of_order.iter().map(|s| s.service.as_str()).collect();
    let all: BTreeSet<String> = ["order", "inventory", "payment", "courier", "communication"]
        .into_iter()
        .map(service)
        .collect();
    anyhow::ensure!(
        services == all.iter().map(String::as_str).collect(),
        "{order_id}: services {services:?}"
    );
    Ok(trace_id)
}

#[tokio::test]
async fn one_saga_is_one_trace_across_the_five_services() -> anyhow::Result<()> {
    let received: Received = Arc::default();
    let receiver = start_receiver(received.clone()).await?;
    let mut stack = TestStack::builder()
        .all_services()
        // Long enough for a saga, short enough to wait for once.
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "10000")
        .common_env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
        .common_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .common_env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await?;
    let api = Api::new(&stack);

    // Confirmed, placed inside the client's own trace.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(format!("{}/orders", stack.service_url("order")))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&order_body("alice", "WIDGET-1", 1, 1000, "DE"))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "placing: {}", response.status());
    let body: serde_json::Value = response.json().await?;
    let confirmed = body["order_id"].as_str().unwrap_or_default().to_owned();
    // Declined payment: the stock reservation is released (compensation).
    let declined = api
        .place_order(&order_body("bob", "WIDGET-1", 1, 1000, "DE"))
        .await?;
    for (id, state) in [(&confirmed, "CONFIRMED"), (&declined, "CANCELLED")] {
        let order = api.wait_terminal(id, SAGA).await?;
        assert_eq!(order["status"], state, "{order}");
    }
    // Without the courier the saga waits after the payment until the
    // deadline cancels it: the timer's compensation in the same trace.
    stack.stop_service("courier", 0).await;
    let timed_out = api
        .place_order(&order_body("alice", "WIDGET-1", 1, 1000, "DE"))
        .await?;
    let order = api.wait_terminal(&timed_out, SAGA).await?;
    assert_eq!(
        (order["status"].as_str(), order["reason"].as_str()),
        (Some("CANCELLED"), Some("TIMEOUT")),
        "{order}"
    );
    stack.restart_service("courier", 0).await?;
    topics::wait_groups_caught_up(&stack.brokers(), SAGA).await?;

    let mut traces = BTreeMap::new();
    for id in [&confirmed, &declined, &timed_out] {
        let events = order_events(&stack, id).await?;
        // The last event is the notification; every one has been handled
        // once the groups caught up, so its spans come within a few
        // export intervals.
        let trace_id = eventually("the order's whole trace", Duration::from_secs(30), || {
            let spans = received.lock().unwrap().clone();
            let checked = check_trace(&spans, &events, id);
            async move { Ok(checked.ok()) }
        })
        .await
        .or_else(|_| check_trace(&received.lock().unwrap(), &events, id))?;
        traces.insert(id.clone(), (trace_id, events));
    }

    let (trace, events) = &traces[&confirmed];
    assert_eq!(trace, client_trace, "the order joined the client's trace");
    let root = received
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.kind == SpanKind::Server && &s.trace_id == trace)
        .cloned()
        .expect("the request span");
    assert_eq!(
        root.parent, client_span,
        "the request span's parent is the client's"
    );
    let types: BTreeSet<&str> = events.iter().map(|e| e.event_type()).collect();
    assert!(types.contains("OrderConfirmed"), "{types:?}");
    // `choreo trace` names the trace to look up in a tracing UI.
    let (saga, text) = common::trace_text(&stack, &confirmed).await?;
    assert_eq!(saga.trace_ids(), [client_trace]);
    assert!(text.contains(&format!("trace {client_trace}")), "{text}");

    let (trace, events) = &traces[&declined];
    assert_ne!(
        trace, client_trace,
        "a request without traceparent starts its own trace"
    );
    let types: BTreeSet<&str> = events.iter().map(|e| e.event_type()).collect();
    for compensation in ["PaymentFailed", "StockReleased", "OrderCancelled"] {
        assert!(types.contains(compensation), "{compensation} in {types:?}");
    }
    let (trace, events) = &traces[&timed_out];
    assert_ne!(trace, client_trace);
    let deadline = events
        .iter()
        .find(|e| e.event_type() == "OrderCancelled")
        .expect("the deadline's cancellation on the topic");
    assert_eq!(
        deadline.metadata().causation_id,
        None,
        "caused by the timer"
    );
    let types: BTreeSet<&str> = events.iter().map(|e| e.event_type()).collect();
    assert!(types.contains("StockReleased"), "{types:?}");
    stack.shutdown().await;
    Ok(())
}
