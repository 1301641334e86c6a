//! docker compose publishes Confluent Schema Registry only through
//! `registry-guard` (deploy/registry-guard/default.conf.template), since the
//! registry itself has no bearer-token option. This runs that template
//! with Debian's nginx (`make tools` installs it), rendered as the official
//! nginx image renders it (each `${VAR}` of the environment substituted,
//! nginx's own `$variables` left alone), in front of a registry, and checks
//! what the README promises: reads and registering open; the deletes and
//! the compatibility and mode writes 401 without the token or with another
//! one, in the registry's error shape and with the Bearer challenge, and
//! unchanged behind it; with the token, passed through.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use choreo_testkit::{eventually, repo_root, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const NGINX: &str = "/usr/sbin/nginx";
const TOKEN: &str = "guard-test-token-0123456789abcdef";

/// The template with `vars` substituted the way the image's
/// `20-envsubst-on-templates.sh` does: only `${NAME}` / `$NAME` of variables
/// that are set.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

struct Guard {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Guard {
    async fn start(upstream: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: `make tools` installs Debian's nginx-light"
        );
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let template = std::fs::read_to_string(
            repo_root().join("deploy/registry-guard/default.conf.template"),
        )?;
        let listen = format!("127.0.0.1:{port}");
        let site = render(
            &template,
            &[
                ("CHOREO_ADMIN_TOKEN", TOKEN),
                ("CHOREO_REGISTRY_UPSTREAM", upstream),
                ("CHOREO_GUARD_LISTEN", &listen),
            ],
        );
        assert!(
            !site.contains("${"),
            "a variable of the template is not set by compose: {site}"
        );
        std::fs::write(dir.path().join("site.conf"), &site)?;
        // The image's nginx.conf, reduced to what a non-root nginx in a
        // temporary folder needs; the site is the rendered template.
        let p = dir.path().display();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\n\
                 error_log {p}/error.log warn;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {p}/access.log;\n\
                   client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
                   fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n\
                   scgi_temp_path {p}/scgi;\n  include {p}/site.conf;\n}}\n"
            ),
        )?;
        let child = tokio::process::Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://{listen}");
        let http = reqwest::Client::new();
        eventually("nginx listening", Duration::from_secs(15), || async {
            Ok(http.get(format!("{url}/subjects")).send().await.ok())
        })
        .await
        .map_err(|e| {
            let log = ["stderr.log", "error.log"]
                .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
                .join("");
            anyhow::anyhow!("{e}; nginx error log: {log}")
        })?;
        Ok(Self {
            child,
            url,
            _dir: dir,
        })
    }

    fn error_log(&self) -> PathBuf {
        self._dir.path().join("error.log")
    }
}

#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    Wrong,
    Admin,
}

async fn send(
    method: Method,
    url: &str,
    body: Option<Value>,
    auth: Auth,
) -> anyhow::Result<(StatusCode, Option<String>, Value)> {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
    }
    request = match auth {
        Auth::None => request,
        Auth::Wrong => request.bearer_auth(format!("{TOKEN}x")),
        Auth::Admin => request.bearer_auth(TOKEN),
    };
    let response = request.send().await?;
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, challenge, body))
}

async fn get(url: &str) -> anyhow::Result<Value> {
    let (status, _, body) = send(Method::GET, url, None, Auth::None).await?;
    Ok(json!({"status": status.as_u16(), "body": body}))
}

/// `method url` is refused without the token and with a wrong one (401,
/// the registry's error shape, the challenge) and `state` reads the same;
/// with the token it reaches the registry and `state` changes.
async fn guarded(
    method: Method,
    url: &str,
    body: Option<Value>,
    state: &str,
) -> anyhow::Result<()> {
    let before = get(state).await?;
    for auth in [Auth::None, Auth::Wrong] {
        let (status, challenge, answer) = send(method.clone(), url, body.clone(), auth).await?;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {url} {auth:?}: {answer}"
        );
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"choreo\""));
        assert_eq!(answer["error_code"], 40101, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("admin token")),
            "{answer}"
        );
        assert_eq!(
            get(state).await?,
            before,
            "{method} {url} {auth:?} changed {state}"
        );
    }
    let (status, _, answer) = send(method.clone(), url, body, Auth::Admin).await?;
    assert!(
        status.is_success(),
        "{method} {url} with the token: {status} {answer}"
    );
    assert_ne!(
        get(state).await?,
        before,
        "{method} {url} with the token changed nothing"
    );
    Ok(())
}

fn schema(field: &str) -> Value {
    json!({"schema": format!(
        r#"{{"type":"record","name":"GuardTest","fields":[{{"name":"{field}","type":"int"}}]}}"#
    )})
}

#[tokio::test]
async fn compose_registry_guard_holds_admin_writes_behind_the_token() -> anyhow::Result<()> {
    // A registry with every write open, as Confluent's is: whatever is
    // refused below, the guard refused.
    let stack = TestStack::builder()
        .services(&[])
        .without_admin_token()
        .start()
        .await?;
    let upstream = stack
        .registry_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let guard = Guard::start(&upstream).await?;
    let url = guard.url.clone();

    // Reads and registering stay open, and answer as the registry does.
    for path in ["/subjects", "/config", "/schemas/types"] {
        let direct = get(&format!("{}{path}", stack.registry_url())).await?;
        assert_eq!(get(&format!("{url}{path}")).await?, direct, "GET {path}");
    }
    let subject = "guard-test-value";
    let (status, _, body) = send(
        Method::POST,
        &format!("{url}/subjects/{subject}/versions"),
        Some(schema("a")),
        Auth::None,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "register: {body}");
    let (status, _, body) = send(
        Method::POST,
        &format!("{url}/compatibility/subjects/{subject}/versions/latest"),
        Some(schema("a")),
        Auth::None,
    )
    .await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "a compatibility check is a read: {body}"
    );

    // The admin writes.
    let global = format!("{url}/config");
    guarded(
        Method::PUT,
        &global,
        Some(json!({"compatibility": "NONE"})),
        &global,
    )
    .await?;
    let subject_config = format!("{url}/config/{subject}");
    guarded(
        Method::PUT,
        &subject_config,
        Some(json!({"compatibility": "FULL"})),
        &subject_config,
    )
    .await?;
    guarded(Method::DELETE, &subject_config, None, &subject_config).await?;
    // Other spellings of the same path are the same path.
    for spelling in ["/%63onfig", "//config", "/subjects/../config"] {
        let (status, _, answer) = send(
            Method::PUT,
            &format!("{url}{spelling}"),
            Some(json!({"compatibility": "NONE"})),
            Auth::None,
        )
        .await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "PUT {spelling}: {answer}");
    }
    let version = format!("{url}/subjects/{subject}/versions/1");
    guarded(Method::DELETE, &version, None, &version).await?;
    // A mode write never reaches the registry without the token.
    let (status, _, _) = send(
        Method::PUT,
        &format!("{url}/mode"),
        Some(json!({"mode": "READONLY"})),
        Auth::None,
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The token is in no log of the guard.
    let mut guard = guard;
    guard.child.start_kill()?;
    let _ = guard.child.wait().await;
    for log in [guard.error_log(), guard._dir.path().join("access.log")] {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(TOKEN), "{} holds the token", log.display());
    }
    stack.shutdown().await;
    Ok(())
}
