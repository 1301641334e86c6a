//! The saga monitor (`choreo ui`) in a real browser: Debian's chromium,
//! headless, driven over WebDriver by chromium-driver (both installed by
//! `make tools`). Every check reads the page as rendered — elements the
//! script drew, their text and where they are on screen — never the HTML
//! source, which holds no data.
//!
//! The test saves the README's screenshots into docs/screenshots/.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use choreo_cli::Connection;
use choreo_testkit::api::Api;
use choreo_testkit::load::Outcome;
use choreo_testkit::{eventually, repo_root, TestStack};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SAGA: Duration = Duration::from_secs(60);
const PAGE: Duration = Duration::from_secs(20);

/// chromium-driver and one headless chromium with a fresh profile.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Browser {
    async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let profile = tempfile::tempdir()?;
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting chromedriver (run `make tools`): {e}"))?;
        let url = format!("http://127.0.0.1:{port}");
        eventually("chromedriver to listen", PAGE, || async {
            Ok(reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success()))
        })
        .await?;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await?;
        Ok(Self {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        let dir = repo_root().join("docs/screenshots");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), png)?;
        Ok(())
    }

    async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css(css)).await?.text().await?)
    }

    /// The text of `css` once it is `wanted`.
    async fn wait_text(&self, css: &str, wanted: &str) -> anyhow::Result<()> {
        eventually(&format!("{css} to read {wanted:?}"), PAGE, || async {
            let t = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await?,
                Err(_) => return Ok(None),
            };
            Ok((t.trim() == wanted).then_some(()))
        })
        .await
        .map_err(|e| e.context(css.to_owned()))
    }
}

/// An event as drawn: its attributes and where it is.
#[derive(Debug, Clone)]
struct Drawn {
    id: String,
    event_type: String,
    lane: String,
    kind: String,
    x: f64,
    y: f64,
}

async fn attr(e: &Element, name: &str) -> anyhow::Result<String> {
    Ok(e.attr(name).await?.unwrap_or_default())
}

/// The saga's events on the swim lanes, left to right, each checked to lie
/// inside the band of the lane it names.
async fn drawn_events(b: &Browser) -> anyhow::Result<Vec<Drawn>> {
    let mut lanes = HashMap::new();
    for lane in b.client.find_all(Locator::Css("svg#lanes g.lane")).await? {
        let name = attr(&lane, "data-lane").await?;
        let bg = lane.find(Locator::Css("rect.lane-bg")).await?;
        let (_, y, _, h) = bg.rectangle().await?;
        lanes.insert(name, (y, y + h));
    }
    let mut out = Vec::new();
    for e in b.client.find_all(Locator::Css("svg#lanes g.event")).await? {
        let (x, y, w, h) = e.rectangle().await?;
        let d = Drawn {
            id: attr(&e, "data-event-id").await?,
            event_type: attr(&e, "data-event-type").await?,
            lane: attr(&e, "data-lane").await?,
            kind: attr(&e, "data-kind").await?,
            x: x + w / 2.0,
            y: y + h / 2.0,
        };
        let (top, bottom) = lanes
            .get(&d.lane)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no lane {} drawn for {d:?}", d.lane))?;
        anyhow::ensure!(
            d.y >= top && d.y <= bottom,
            "{} drawn at y={} outside its lane {} ({top}..{bottom})",
            d.event_type,
            d.y,
            d.lane
        );
        out.push(d);
    }
    out.sort_by(|a, b| a.x.total_cmp(&b.x));
    Ok(out)
}

/// The arrows drawn, as (cause id, effect id).
async fn drawn_arrows(b: &Browser) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in b
        .client
        .find_all(Locator::Css("svg#lanes path.arrow"))
        .await?
    {
        out.push((attr(&a, "data-from").await?, attr(&a, "data-to").await?));
    }
    Ok(out)
}

/// Opens one saga and waits until `n` events are drawn.
async fn open_saga(b: &Browser, base: &str, id: &str, n: usize) -> anyhow::Result<Vec<Drawn>> {
    b.client.goto(&format!("{base}/orders/{id}")).await?;
    eventually(&format!("{n} events of {id} drawn"), PAGE, || async {
        let drawn = drawn_events(b).await?;
        Ok((drawn.len() == n).then_some(drawn))
    })
    .await
}

fn types(drawn: &[Drawn]) -> Vec<&str> {
    drawn.iter().map(|d| d.event_type.as_str()).collect()
}

fn by_type<'a>(drawn: &'a [Drawn], t: &str) -> &'a Drawn {
    drawn
        .iter()
        .find(|d| d.event_type == t)
        .unwrap_or_else(|| panic!("no {t} drawn in {drawn:?}"))
}

async fn number(b: &Browser, css: &str) -> anyhow::Result<Option<usize>> {
    Ok(match b.client.find(Locator::Css(css)).await {
        Ok(e) => e.text().await?.trim().parse().ok(),
        Err(_) => None,
    })
}

/// The monitor of `stack`, served in this process on a free port: its
/// base URL, what stops it, and its task.
async fn start_monitor(
    stack: &TestStack,
) -> anyhow::Result<(
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let monitor = tokio::spawn(choreo_cli::ui::serve(
        listener,
        Connection::new(stack.brokers(), stack.registry_url()),
        common::endpoints(stack),
        1_000,
        stop.clone(),
    ));
    Ok((base, stop, monitor))
}

#[tokio::test]
async fn the_monitor_shows_every_flow_in_a_real_browser() -> anyhow::Result<()> {
    let mut stack = TestStack::builder()
        .all_services()
        .env("order", "CHOREO_ORDER_DEADLINE_MS", "600000")
        .start()
        .await?;
    let api = Api::new(&stack);
    let (base, stop, monitor) = start_monitor(&stack).await?;
    let browser = Browser::start().await?;
    let b = &browser;

    // One order of every outcome.
    let mut ids = HashMap::new();
    for outcome in Outcome::ALL {
        let id = api.place_order(&outcome.body()).await?;
        ids.insert(outcome, id);
    }
    for (outcome, id) in &ids {
        let order = api.wait_terminal(id, SAGA).await?;
        assert_eq!(order["status"], outcome.expected().0, "{order}");
    }
    // Every mail sent: every saga has all its events on the topics.
    let report = common::assert_reconciled(&stack, 0).await?;

    // The happy path: six events, in causal order, on their lanes, each
    // arrow from a cause to its effect, left to right.
    let happy = &ids[&Outcome::Confirmed];
    let drawn = open_saga(b, &base, happy, 6).await?;
    assert_eq!(
        types(&drawn),
        [
            "OrderPlaced",
            "StockReserved",
            "ShipmentManifested",
            "PaymentCompleted",
            "OrderConfirmed",
            "CustomerNotified"
        ]
    );
    let lanes: Vec<&str> = drawn.iter().map(|d| d.lane.as_str()).collect();
    assert_eq!(
        lanes,
        [
            "order",
            "inventory",
            "courier",
            "payment",
            "order",
            "communication"
        ]
    );
    assert!(drawn.iter().all(|d| d.kind == "forward"), "{drawn:?}");
    let arrows = drawn_arrows(b).await?;
    let chain: Vec<(String, String)> = drawn
        .windows(2)
        .map(|w| (w[0].id.clone(), w[1].id.clone()))
        .collect();
    assert_eq!(arrows.len(), 5, "{arrows:?}");
    for link in &chain {
        assert!(arrows.contains(link), "no arrow {link:?} in {arrows:?}");
    }
    let state = b.text("#saga-state").await?;
    assert!(state.contains("CONFIRMED"), "{state}");
    // The decoded event on click.
    b.client
        .find(Locator::Css(
            "svg#lanes g.event[data-event-type=\"ShipmentManifested\"]",
        ))
        .await?
        .click()
        .await?;
    let detail = b.text("pre#event-detail").await?;
    assert!(detail.contains("tracking_number"), "{detail}");
    assert!(detail.contains(happy.as_str()), "{detail}");

    // A payment failure: the backward chain, set apart, on its lanes.
    let declined = &ids[&Outcome::InsufficientFunds];
    let drawn = open_saga(b, &base, declined, 8).await?;
    assert_eq!(
        types(&drawn),
        [
            "OrderPlaced",
            "StockReserved",
            "ShipmentManifested",
            "PaymentFailed",
            "ShipmentCancelled",
            "StockReleased",
            "OrderCancelled",
            "CustomerNotified"
        ]
    );
    let arrows = drawn_arrows(b).await?;
    for (cause, effect, lane, kind) in [
        ("ShipmentManifested", "PaymentFailed", "payment", "failure"),
        (
            "PaymentFailed",
            "ShipmentCancelled",
            "courier",
            "compensation",
        ),
        (
            "ShipmentCancelled",
            "StockReleased",
            "inventory",
            "compensation",
        ),
        ("StockReleased", "OrderCancelled", "order", "compensation"),
    ] {
        let (c, e) = (by_type(&drawn, cause), by_type(&drawn, effect));
        assert!(
            arrows.contains(&(c.id.clone(), e.id.clone())),
            "no arrow {cause} → {effect} in {arrows:?}"
        );
        assert_eq!((e.lane.as_str(), e.kind.as_str()), (lane, kind), "{e:?}");
    }
    let state = b.text("#saga-state").await?;
    assert!(
        state.contains("CANCELLED") && state.contains("PAYMENT_DECLINED"),
        "{state}"
    );
    b.screenshot("ui-compensated.png").await?;

    // The overview counts what choreo reconcile counted.
    b.client.goto(&format!("{base}/")).await?;
    b.wait_text("[data-count=\"total\"]", &report.orders.to_string())
        .await?;
    b.wait_text("[data-count=\"confirmed\"]", &report.confirmed.to_string())
        .await?;
    b.wait_text("[data-count=\"cancelled\"]", &report.cancelled.to_string())
        .await?;
    b.wait_text("[data-count=\"in_flight\"]", "0").await?;
    assert_eq!(
        number(b, "[data-reason=\"PAYMENT_DECLINED\"] .n").await?,
        Some(2)
    );
    assert_eq!(
        number(b, "[data-reason=\"OUT_OF_STOCK\"] .n").await?,
        Some(1)
    );
    // The graph: one node per service, the catalogue's edges.
    for s in choreo_events::SERVICES {
        b.client
            .find(Locator::Css(&format!(
                "svg#graph g.node[data-service=\"{s}\"]"
            )))
            .await?;
    }
    let edges = b
        .client
        .find_all(Locator::Css("svg#graph g.edge"))
        .await?
        .len();
    assert_eq!(edges, choreo_cli::ui::model::edges().len());
    b.screenshot("ui-overview.png").await?;

    // Stuck: the courier stopped, an order waits on it, and leaves the
    // list once the courier is back.
    stack.stop_service("courier", 0).await;
    let waiting = api.place_order(&Outcome::Confirmed.body()).await?;
    b.client
        .goto(&format!("{base}/stuck?older_than=1s"))
        .await?;
    let row = format!("table#stuck tr[data-order-id=\"{waiting}\"]");
    let text = eventually("the order listed as stuck", SAGA, || async {
        Ok(
            match b
                .client
                .find(Locator::Css(&format!("{row} td.waiting")))
                .await
            {
                Ok(e) => Some(e.text().await?),
                Err(_) => None,
            },
        )
    })
    .await?;
    assert!(text.contains("courier"), "{text}");
    stack.restart_service("courier", 0).await?;
    api.wait_terminal(&waiting, SAGA).await?;
    eventually("the order gone from Stuck", SAGA, || async {
        Ok(b.client
            .find_all(Locator::Css(&row))
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;

    // Consumers: every group ready, a row per partition it reads.
    b.client.goto(&format!("{base}/consumers")).await?;
    for s in choreo_events::SERVICES {
        b.wait_text(&format!("[data-ready=\"{s}\"]"), "ready")
            .await?;
    }
    let rows = b
        .client
        .find_all(Locator::Css(
            "table#consumers tr[data-group=\"inventory\"][data-topic=\"orders\"]",
        ))
        .await?;
    assert_eq!(rows.len(), choreo_events::Topic::PARTITIONS as usize);

    // A poison message on `orders`: every consumer of it dead-letters it;
    // listed, and replayed from the page — refused without the token.
    common::produce(&stack, "orders", "ui-poison", b"not avro").await?;
    b.client.goto(&format!("{base}/dlq")).await?;
    let letter = "table#dlq tr[data-dlq-service=\"inventory\"][data-dlq-offset=\"0\"]";
    let listed = eventually("the poison message listed", SAGA, || async {
        Ok(
            match b
                .client
                .find(Locator::Css(&format!("{letter} td.reason")))
                .await
            {
                Ok(e) => Some(e.text().await?),
                // The page reloads the list every 5 s by itself.
                Err(_) => None,
            },
        )
    })
    .await;
    let reason = match listed {
        Ok(r) => r,
        Err(e) => {
            let shown = b.text("#view-dlq").await.unwrap_or_default();
            return Err(e.context(format!("the page shows: {shown}")));
        }
    };
    assert!(!reason.trim().is_empty());
    let source = b.text(&format!("{letter} td.source")).await?;
    assert!(source.starts_with("orders/"), "{source}");
    let click_replay = || async {
        b.client
            .find(Locator::Css(&format!("{letter} button.replay")))
            .await?
            .click()
            .await?;
        anyhow::Ok(())
    };
    click_replay().await?;
    eventually("the refusal shown", PAGE, || async {
        let t = b.text("#dlq-status").await?;
        Ok(t.contains("401").then_some(()))
    })
    .await?;
    let token = stack
        .admin_token()
        .expose()
        .expect("test stacks have a token");
    b.client
        .find(Locator::Css("#admin-token"))
        .await?
        .send_keys(token)
        .await?;
    click_replay().await?;
    eventually("the replay shown", PAGE, || async {
        let t = b.text("#dlq-status").await?;
        Ok(t.contains("replayed").then_some(()))
    })
    .await?;
    // On the topic: the record back on orders, naming the dead letter.
    let replayed = eventually("the replayed record on orders", SAGA, || async {
        let records = choreo_testkit::topics::read_all(&stack.brokers(), "orders").await?;
        Ok(records
            .into_iter()
            .find(|r| r.header("choreo.replay") == Some("dlq.inventory/0/0")))
    })
    .await?;
    assert_eq!(replayed.payload.as_deref(), Some(&b"not avro"[..]));

    browser.client.close().await?;
    stop.cancel();
    monitor.await??;
    stack.shutdown().await;
    Ok(())
}

/// The API answers bad requests with a JSON error and a 4xx.
#[tokio::test]
async fn the_monitor_api_refuses_bad_requests_with_a_message() -> anyhow::Result<()> {
    let stack = TestStack::builder().services(&["order"]).start().await?;
    let (base, stop, monitor) = start_monitor(&stack).await?;
    let http = reqwest::Client::new();
    for (method, path, body, status) in [
        ("GET", "/api/orders/nope", None, 404),
        ("GET", "/api/orders?state=LOST", None, 400),
        ("GET", "/api/orders?limit=x", None, 400),
        ("GET", "/api/stuck?older_than=soon", None, 400),
        (
            "POST",
            "/api/dlq/nobody/replay",
            Some("{\"offset\":0}"),
            404,
        ),
        ("POST", "/api/dlq/inventory/replay", Some("nope"), 400),
        ("POST", "/api/dlq/inventory/replay", Some("{}"), 422),
        ("GET", "/api/nothing", None, 404),
    ] {
        let mut req = http.request(method.parse()?, format!("{base}{path}"));
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().await?;
        assert_eq!(res.status().as_u16(), status, "{method} {path}");
        let v: Value = res.json().await?;
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
    // The page is served on each of its paths, and the stream speaks SSE.
    for path in ["/", "/orders", "/orders/x", "/stuck", "/dlq", "/consumers"] {
        let res = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()?
                .starts_with("text/html"),
            "{path}"
        );
        assert_eq!(res.text().await?, choreo_cli::ui::INDEX, "{path}");
    }
    let mut res = http.get(format!("{base}/api/stream")).send().await?;
    assert_eq!(res.headers()["content-type"].to_str()?, "text/event-stream");
    let first = tokio::time::timeout(PAGE, res.chunk())
        .await??
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&first);
    assert!(text.starts_with("event: overview\ndata: {"), "{text}");
    drop(res);
    stop.cancel();
    tokio::time::timeout(PAGE, monitor).await???;
    stack.shutdown().await;
    Ok(())
}
