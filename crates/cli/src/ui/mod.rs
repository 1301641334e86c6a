//! `choreo ui`: the saga monitor in the browser.
//!
//! Reads only what every user can read: the saga topics, decoded through
//! the registry and followed live ([`model`] aggregates them), the
//! consumer groups' committed offsets and the topics' watermarks, the
//! dead-letter topics, and each service's `/readyz`. It never reads a
//! service's database. The page ([`INDEX`], in the binary) asks the JSON
//! API below and receives the overview over Server-Sent Events, at most
//! [`UPDATES_PER_S`] a second whatever the load.
//!
//! A dead letter is replayed through its service's `POST /dlq/replay` (the
//! code path of `choreo dlq replay`), with the bearer token the page
//! sends: the monitor holds no credential, so it opens no write the admin
//! token guards.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/orders`, `/orders/{id}`, `/stuck`, `/dlq`, `/consumers` | the page |
//! | `GET /api/overview`, `GET /api/stream` (SSE) | counts, rates, latencies, graph, readiness |
//! | `GET /api/orders?state=&reason=&q=&limit=` | recent orders |
//! | `GET /api/orders/{id}` | one saga for the swim lanes |
//! | `GET /api/stuck?older_than=30s` | `choreo stuck`'s rule |
//! | `GET /api/dlq`, `POST /api/dlq/{service}/replay` | dead letters |
//! | `GET /api/consumers` | lag per group and partition, readiness |

pub mod model;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use choreo_bus::dlq::Which;
use choreo_bus::lag::PartitionLag;
use choreo_bus::{AdminToken, KafkaSettings};
use choreo_events::{consumed_by, dlq_topic, Topic, SERVICES};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::decode::Decoder;
use crate::output::{now_ms, parse_duration, Progress};
use crate::reader::{Start, TopicReader};
use crate::reconcile::Endpoints;
use crate::saga::SagaEvent;
use crate::Connection;
use model::{Model, OrderQuery};

/// The page: HTML, CSS and script in one file, in the binary.
pub const INDEX: &str = include_str!("index.html");

/// The most overview updates a browser receives per second.
pub const UPDATES_PER_S: u64 = 2;

/// Where `make run` serves the monitor.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Orders whose events are kept: about 9 KiB each as measured (decoded
/// events, ids, the saga view's inputs), so about 20 MiB.
pub const DEFAULT_KEEP_ORDERS: usize = 2_000;

/// How often readiness, offsets and dead-letter counts are read.
const POLL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, clap::Args)]
pub struct UiArgs {
    /// Address to serve the page on.
    #[arg(long, env = "CHOREO_UI_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The events of this many most recent orders are kept (the counts
    /// cover every order).
    #[arg(long, default_value_t = DEFAULT_KEEP_ORDERS)]
    pub keep_orders: usize,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// `choreo ui`: serves until Ctrl-C.
pub async fn run(conn: &Connection, args: &UiArgs) -> anyhow::Result<()> {
    let listener = bind(args.listen).await?;
    println!("choreo ui on http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        choreo_telemetry::shutdown_signal().await;
        stopper.cancel();
    });
    serve(
        listener,
        conn.clone(),
        args.endpoints.clone(),
        args.keep_orders,
        stop,
    )
    .await
}

/// Binds the monitor's address, with an error that names it.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the monitor (in use? --listen / CHOREO_UI_LISTEN)")
    })
}

/// What the pollers last saw.
#[derive(Debug, Default)]
struct Live {
    ready: BTreeMap<&'static str, Option<bool>>,
    groups: BTreeMap<&'static str, Vec<PartitionLag>>,
    dead_letters: Option<u64>,
    /// The last error following the topics (cleared by the next record),
    /// shown on the page.
    tail_error: Option<String>,
    /// The last error reading offsets and watermarks.
    offsets_error: Option<String>,
}

struct Ui {
    conn: Connection,
    endpoints: Endpoints,
    model: Mutex<Model>,
    live: Mutex<Live>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves the monitor on `listener` until `stop` is cancelled; the
/// topic reader, the pollers and every open event stream end with it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    conn: Connection,
    endpoints: Endpoints,
    keep_orders: usize,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let ui = Arc::new(Ui {
        conn,
        endpoints,
        model: Mutex::new(Model::new(keep_orders)),
        live: Mutex::new(Live {
            ready: SERVICES.iter().map(|s| (*s, None)).collect(),
            ..Live::default()
        }),
        stop: stop.clone(),
    });
    let tasks = vec![
        tokio::spawn(tail(ui.clone())),
        tokio::spawn(poll_readiness(ui.clone())),
        tokio::spawn(poll_kafka(ui.clone())),
    ];
    let page = get(index);
    let app = Router::new()
        .route("/", page.clone())
        .route("/orders", page.clone())
        .route("/orders/{id}", page.clone())
        .route("/stuck", page.clone())
        .route("/dlq", page.clone())
        .route("/consumers", page)
        .route("/api/overview", get(overview))
        .route("/api/stream", get(stream))
        .route("/api/orders", get(orders))
        .route("/api/orders/{id}", get(order))
        .route("/api/stuck", get(stuck))
        .route("/api/dlq", get(dead_letters))
        .route("/api/dlq/{service}/replay", post(replay))
        .route("/api/consumers", get(consumers))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .with_state(ui.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    served.context("serving the monitor")
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

impl Ui {
    fn overview(&self) -> Value {
        let now = now_ms();
        let mut v = {
            let mut model = lock(&self.model);
            model.trim(now);
            model.overview(now)
        };
        let live = lock(&self.live);
        v["services"] = SERVICES
            .iter()
            .map(|s| {
                json!({
                    "name": s,
                    "url": self.endpoints.of(s),
                    "ready": live.ready.get(s).copied().flatten(),
                })
            })
            .collect();
        v["dead_letters"] = json!(live.dead_letters);
        v["error"] = json!(live.tail_error.as_ref().or(live.offsets_error.as_ref()));
        v
    }
}

async fn overview(State(ui): State<Arc<Ui>>) -> Json<Value> {
    Json(ui.overview())
}

/// The overview every 1 / [`UPDATES_PER_S`] seconds, until the monitor
/// stops.
async fn stream(State(ui): State<Arc<Ui>>) -> impl IntoResponse {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / UPDATES_PER_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = ui.stop.clone();
    let updates = futures::stream::unfold((ui, tick), |(ui, mut tick)| async move {
        tick.tick().await;
        let event = Event::default()
            .event("overview")
            .data(ui.overview().to_string());
        Some((Ok::<_, Infallible>(event), (ui, tick)))
    })
    .take_until(stop.cancelled_owned());
    Sse::new(updates).keep_alive(KeepAlive::default())
}

async fn orders(
    State(ui): State<Arc<Ui>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "limit must be a whole number"),
    };
    let query = OrderQuery {
        state: params.get("state").cloned(),
        reason: params.get("reason").cloned(),
        q: params.get("q").cloned(),
        limit,
    };
    if let Some(s) = query.state.as_deref().filter(|s| !s.is_empty()) {
        if !["IN_PROGRESS", "CONFIRMED", "CANCELLED"].contains(&s) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("state must be IN_PROGRESS, CONFIRMED or CANCELLED, not `{s}`"),
            );
        }
    }
    Json(lock(&ui.model).orders(&query, now_ms())).into_response()
}

async fn order(State(ui): State<Arc<Ui>>, Path(id): Path<String>) -> Response {
    match lock(&ui.model).order(&id, now_ms()) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no events of order {id} on the saga topics (or it is older than the orders kept)"
            ),
        ),
    }
}

async fn stuck(
    State(ui): State<Arc<Ui>>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let text = params.get("older_than").map_or("30s", String::as_str);
    let age = match parse_duration(text) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("older_than: {e}")),
    };
    Json(lock(&ui.model).stuck(age, now_ms())).into_response()
}

async fn dead_letters(State(ui): State<Arc<Ui>>) -> Response {
    match crate::dlq::list(&ui.conn, None, &mut Progress::hidden()).await {
        Ok(letters) => {
            let letters: Vec<Value> = letters
                .iter()
                .map(|l| {
                    json!({
                        "service": l.service,
                        "topic": l.record.topic,
                        "offset": l.record.offset,
                        "reason": l.reason,
                        "source_topic": l.source_topic,
                        "source_partition": l.source_partition,
                        "source_offset": l.source_offset,
                        "attempts": l.attempts,
                        "failed_at_ms": l.failed_at_ms,
                        "event_type": l.decoded.as_ref().map(|e| e.event_type()),
                        "preview": l.value_preview(),
                        "replayed": l.record.header(choreo_bus::headers::REPLAY).is_some(),
                    })
                })
                .collect();
            Json(json!({ "letters": letters })).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    }
}

/// `dlq.<service>/<partition>/<offset>` → the offset.
fn dlq_offset(position: &str) -> Option<i64> {
    position.rsplit('/').next()?.parse().ok()
}

async fn replay(
    State(ui): State<Arc<Ui>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !SERVICES.contains(&service.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown service `{service}` (expected one of: {})",
                SERVICES.join(", ")
            ),
        );
    }
    let which = match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v["all"] == json!(true) => Which::All,
        Ok(v) => match v["offset"].as_i64() {
            Some(o) if o >= 0 => Which::Offset(o),
            _ => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    r#"the body must be {"offset": N} or {"all": true}"#,
                )
            }
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        }
    };
    // The page's token, passed on as it came: the monitor holds none.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let admin = match token.map(AdminToken::new).transpose() {
        Ok(t) => t.unwrap_or_else(AdminToken::none),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the token: {e}")),
    };
    let target = crate::dlq::ReplayTarget {
        url: ui.endpoints.of(&service).trim_end_matches('/').to_owned(),
        service,
        admin,
    };
    match crate::dlq::replay(&target, which).await {
        Ok(done) => Json(json!({
            "replayed": done.replayed.iter().map(|r| json!({
                "dead_letter": r.from,
                "offset": dlq_offset(&r.from),
                "topic": r.topic,
                "partition": r.partition,
                "new_offset": r.offset,
                "key": r.key,
            })).collect::<Vec<_>>(),
            "skipped": done.skipped.iter().map(|s| json!({
                "dead_letter": s.dead_letter,
                "offset": dlq_offset(&s.dead_letter),
                "reason": s.reason,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => {
            let text = format!("{e:#}");
            // The service's own refusal keeps its status; anything else is
            // the service out of reach.
            let status = if text.contains("(401 Unauthorized)") {
                StatusCode::UNAUTHORIZED
            } else if text.contains("(404 Not Found)") {
                StatusCode::NOT_FOUND
            } else if text.contains("(409 Conflict)") {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_GATEWAY
            };
            let text = text.replace(
                "pass --admin-token or CHOREO_ADMIN_TOKEN; ",
                "enter the admin token above; ",
            );
            error(status, text)
        }
    }
}

async fn consumers(State(ui): State<Arc<Ui>>) -> Json<Value> {
    let live = lock(&ui.live);
    let groups: Vec<Value> = SERVICES
        .iter()
        .map(|s| {
            let partitions = live.groups.get(s).cloned().unwrap_or_default();
            json!({
                "group": s,
                "service": s,
                "ready": live.ready.get(s).copied().flatten(),
                "lag": partitions.iter().map(|p| p.lag).sum::<i64>(),
                "partitions": partitions,
            })
        })
        .collect();
    Json(json!({ "groups": groups, "error": live.offsets_error }))
}

/// Follows every saga topic from the beginning into the model; retries
/// while the topics or the registry are not there yet.
async fn tail(ui: Arc<Ui>) {
    let topics: Vec<String> = Topic::ALL.iter().map(|t| t.name().to_owned()).collect();
    let decoder = Decoder::new(&ui.conn.registry);
    let mut last_trim = now_ms();
    'open: loop {
        let mut reader = tokio::select! {
            _ = ui.stop.cancelled() => return,
            r = TopicReader::open(&ui.conn.brokers, &topics, Start::Beginning, true) => match r {
                Ok(r) => r,
                Err(e) => {
                    lock(&ui.live).tail_error = Some(format!("reading the saga topics: {e}"));
                    tokio::select! {
                        _ = ui.stop.cancelled() => return,
                        _ = tokio::time::sleep(POLL) => continue 'open,
                    }
                }
            }
        };
        lock(&ui.live).tail_error = None;
        loop {
            let record = tokio::select! {
                _ = ui.stop.cancelled() => return,
                r = reader.next() => r,
            };
            let record = match record {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    lock(&ui.live).tail_error = Some(format!("reading the saga topics: {e}"));
                    continue 'open;
                }
                None => continue 'open,
            };
            let mut retried = false;
            let decoded = loop {
                match decoder.decode_record(&record).await {
                    Err(e) if e.is_retryable() => {
                        retried = true;
                        lock(&ui.live).tail_error = Some(format!("{:#}", decoder.explain(e)));
                        tokio::select! {
                            _ = ui.stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    other => break other,
                }
            };
            if retried {
                lock(&ui.live).tail_error = None;
            }
            let now = now_ms();
            let mut model = lock(&ui.model);
            match decoded {
                Ok(event) => model.add(SagaEvent::from_record(&record, event), now),
                Err(e) => {
                    tracing::debug!(position = %record.position(), error = %e, "undecodable");
                    model.skip(now);
                }
            }
            if now - last_trim > 1_000 {
                model.trim(now);
                last_trim = now;
            }
        }
    }
}

/// Each service's `/readyz`, every [`POLL`].
async fn poll_readiness(ui: Arc<Ui>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_default();
    loop {
        let checks = SERVICES.iter().map(|s| {
            let url = format!("{}/readyz", ui.endpoints.of(s).trim_end_matches('/'));
            let http = http.clone();
            async move {
                let ready = http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (*s, Some(ready))
            }
        });
        let results = futures::future::join_all(checks).await;
        lock(&ui.live).ready.extend(results);
        tokio::select! {
            _ = ui.stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Every group's committed offsets against the watermarks, and the
/// dead letters' count, every [`POLL`] (librdkafka's calls block: on a
/// blocking thread).
async fn poll_kafka(ui: Arc<Ui>) {
    let kafka = KafkaSettings::new(&ui.conn.brokers);
    let mut clients: Option<Arc<Vec<(&'static str, BaseConsumer)>>> = None;
    loop {
        if clients.is_none() {
            let made: Result<Vec<_>, _> = SERVICES
                .iter()
                .map(|s| kafka.consumer_config(s).create().map(|c| (*s, c)))
                .collect();
            match made {
                Ok(c) => clients = Some(Arc::new(c)),
                Err(e) => lock(&ui.live).offsets_error = Some(format!("Kafka client: {e}")),
            }
        }
        if let Some(c) = clients.clone() {
            let read = tokio::task::spawn_blocking(move || {
                let mut groups = BTreeMap::new();
                let mut dead = 0u64;
                for (service, consumer) in c.iter() {
                    groups.insert(
                        *service,
                        choreo_bus::lag::partition_lags(consumer, consumed_by(service))?,
                    );
                    let (low, high) = consumer.fetch_watermarks(
                        &dlq_topic(service),
                        0,
                        Duration::from_secs(5),
                    )?;
                    dead += u64::try_from(high - low).unwrap_or(0);
                }
                Ok::<_, anyhow::Error>((groups, dead))
            })
            .await;
            let mut live = lock(&ui.live);
            match read {
                Ok(Ok((groups, dead))) => {
                    live.groups = groups;
                    live.dead_letters = Some(dead);
                    live.offsets_error = None;
                }
                Ok(Err(e)) => live.offsets_error = Some(format!("reading offsets: {e:#}")),
                Err(e) => live.offsets_error = Some(format!("reading offsets: {e}")),
            }
        }
        tokio::select! {
            _ = ui.stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
