//! The Docker Compose set-up (`deploy/`), checked without a Docker engine.
//!
//! None of the machines that build choreo run Docker, so `docker compose up`
//! cannot be exercised here. What can go wrong with it without Docker is
//! checked instead:
//!
//! - the file is valid for a real Compose implementation (Debian's
//!   `docker-compose` 1.29, installed by `make tools`);
//! - every setting it gives a service is one that service reads (a typo in
//!   an environment variable is otherwise silently ignored), every service
//!   has a `/readyz` healthcheck and starts after `choreo init`;
//! - the schemas init registers are the contract's, and init is what
//!   creates the topics (the broker does not auto-create them);
//! - `deploy/postgres/init.sql` really isolates the services: applied to
//!   the local PostgreSQL, each role opens its own database and no other;
//! - the image carries every binary the workspace builds.

use choreo_bus::ServiceSettings;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};
use choreo_outbox::sqlx::{self, Connection, Executor, PgConnection};
use serde_yaml::Value;

/// The five services and the environment variables their config modules
/// know. `CHOREO_KAFKA_*` in a list means any `CHOREO_KAFKA_<PROPERTY>`.
/// A service's `ServiceSettings::env_vars`.
type EnvVars = fn() -> Vec<&'static str>;

const SERVICES: [(&str, EnvVars); 5] = [
    (
        "order",
        <choreo_order::Settings as ServiceSettings>::env_vars,
    ),
    (
        "inventory",
        <choreo_inventory::Settings as ServiceSettings>::env_vars,
    ),
    (
        "payment",
        <choreo_payment::Settings as ServiceSettings>::env_vars,
    ),
    (
        "courier",
        <choreo_courier::Settings as ServiceSettings>::env_vars,
    ),
    (
        "communication",
        <choreo_communication::Settings as ServiceSettings>::env_vars,
    ),
];

const KAFKA_PREFIX: &str = "CHOREO_KAFKA_";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The compose file with YAML merge keys (`<<: *anchor`) applied, as
/// Compose itself applies them.
fn compose() -> Value {
    let mut value: Value =
        serde_yaml::from_str(&read("deploy/docker-compose.yml")).expect("compose file is YAML");
    value.apply_merge().expect("merge keys apply");
    value
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(
        service.is_mapping(),
        "deploy/docker-compose.yml has no service `{name}`"
    );
    service
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A service's `environment`, in either of Compose's two forms (mapping, or
/// a list of `NAME=value`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let name = text(k).expect("environment names are strings");
                (name, text(v).unwrap_or_default())
            })
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .filter_map(text)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item, String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `command:` as a list of words (a string is split on whitespace, as
/// Compose does for simple commands).
fn command(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Sequence(words) => words.iter().filter_map(text).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn depends_condition(service: &Value, on: &str) -> Option<String> {
    text(&service["depends_on"][on]["condition"])
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("", |(_, port)| port)
}

#[test]
fn compose_file_is_valid_for_docker_compose() {
    let output = Command::new("docker-compose")
        .args(["-f", "deploy/docker-compose.yml", "config", "-q"])
        .env("CHOREO_ADMIN_TOKEN", "compose-test-token")
        .current_dir(repo_root())
        // The file's only interpolations are the admin token (required)
        // and the *_HOST_PORT overrides; whatever the caller's shell has
        // must not change the verdict.
        .env_remove("ORDER_HOST_PORT")
        .env_remove("INVENTORY_HOST_PORT")
        .env_remove("PAYMENT_HOST_PORT")
        .env_remove("COURIER_HOST_PORT")
        .env_remove("COMMUNICATION_HOST_PORT")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `docker-compose` ({e}); `make tools` installs Debian's docker-compose, \
                 which this test uses to validate deploy/docker-compose.yml"
            )
        });
    assert!(
        output.status.success(),
        "docker-compose config -q rejected deploy/docker-compose.yml ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn compose_refuses_to_start_without_an_admin_token() {
    let output = Command::new("docker-compose")
        .args(["-f", "deploy/docker-compose.yml", "config", "-q"])
        .current_dir(repo_root())
        .env_remove("CHOREO_ADMIN_TOKEN")
        .output()
        .expect("docker-compose (installed by `make tools`)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "accepted without a token: {stderr}"
    );
    assert!(stderr.contains("CHOREO_ADMIN_TOKEN"), "{stderr}");
    let compose = compose();
    for name in ["inventory", "payment"] {
        assert!(
            environment(service(&compose, name)).contains_key("CHOREO_ADMIN_TOKEN"),
            "{name} gets no admin token"
        );
    }
}

#[test]
fn services_are_given_only_settings_they_read() {
    let compose = compose();
    let mut unknown = Vec::new();
    for (name, env_vars) in SERVICES {
        let known = env_vars();
        for var in environment(service(&compose, name)).keys() {
            if !(var.starts_with("CHOREO_") || var == "DATABASE_URL") {
                continue;
            }
            let is_known = known.contains(&var.as_str())
                || (var.starts_with(KAFKA_PREFIX) && known.contains(&"CHOREO_KAFKA_*"));
            if !is_known {
                unknown.push(format!("{name}: {var}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "deploy/docker-compose.yml sets variables the service's config module does not know \
         (not in the service's ServiceSettings::env_vars()), so they would be ignored: {unknown:?}"
    );
}

#[test]
fn services_reach_the_compose_infrastructure() {
    let compose = compose();
    let kafka = environment(service(&compose, "kafka"));
    let advertised = kafka
        .get("KAFKA_ADVERTISED_LISTENERS")
        .expect("kafka advertises its listeners");
    let registry_port = port_of(
        environment(service(&compose, "schema-registry"))
            .get("SCHEMA_REGISTRY_LISTENERS")
            .expect("schema-registry has listeners"),
    )
    .to_owned();
    assert_eq!(
        kafka
            .get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")
            .map(String::as_str),
        Some("false"),
        "topics must come from `choreo init`, with their partitions"
    );

    for (name, _) in SERVICES {
        let env = environment(service(&compose, name));
        let get = |var: &str| {
            env.get(var)
                .unwrap_or_else(|| panic!("{name} has no {var}"))
                .as_str()
        };
        let brokers = get("CHOREO_BROKERS");
        assert!(
            advertised.contains(&format!("://{brokers}")),
            "{name}: CHOREO_BROKERS={brokers} is not a listener kafka advertises ({advertised})"
        );
        assert_eq!(
            get("CHOREO_REGISTRY_URL"),
            format!("http://schema-registry:{registry_port}"),
            "{name}"
        );
        assert!(
            get("DATABASE_URL").starts_with("postgres://")
                && get("DATABASE_URL").contains("@postgres:5432/"),
            "{name}: DATABASE_URL must point at the postgres service"
        );
        // The client settings the tests prove are the ones compose runs.
        let overrides: Vec<&String> = env.keys().filter(|k| k.starts_with(KAFKA_PREFIX)).collect();
        assert!(
            overrides.is_empty(),
            "{name}: Kafka client overrides {overrides:?}"
        );
    }
    let communication = environment(service(&compose, "communication"));
    assert_eq!(
        communication.get("CHOREO_SMTP_URL").map(String::as_str),
        Some("smtp://mailpit:1025"),
        "Communication sends its mail to Mailpit"
    );
    assert_eq!(
        depends_condition(service(&compose, "communication"), "mailpit").as_deref(),
        Some("service_healthy")
    );
}

#[test]
fn services_export_their_spans_to_jaeger() {
    let compose = compose();
    let jaeger = service(&compose, "jaeger");
    assert!(
        text(&jaeger["image"]).is_some_and(|i| i.starts_with("jaegertracing/jaeger:2.")),
        "Jaeger v2, which receives OTLP itself: {:?}",
        jaeger["image"]
    );
    // Jaeger's OTLP receivers listen on localhost unless told otherwise.
    let http = command(jaeger)
        .iter()
        .find_map(|w| {
            w.strip_prefix("--set=receivers.otlp.protocols.http.endpoint=")
                .map(str::to_owned)
        })
        .expect("jaeger's OTLP/HTTP receiver is set to listen on the network");
    assert!(http.starts_with("0.0.0.0:"), "{http}");
    let ports: Vec<String> = jaeger["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect();
    assert!(
        ports.iter().any(|p| p == "127.0.0.1:16686:16686"),
        "the UI on the host: {ports:?}"
    );
    for (name, _) in SERVICES {
        let env = environment(service(&compose, name));
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some(&format!("http://jaeger:{}", port_of(&http))),
            "{name}"
        );
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map(String::as_str),
            Some("http/protobuf"),
            "{name}: the protocol choreo exports with"
        );
        assert_eq!(
            env.get("OTEL_SERVICE_NAME"),
            Some(&format!("choreo-{name}")),
            "{name}: the name the service gives itself without compose"
        );
        assert_eq!(
            depends_condition(service(&compose, name), "jaeger").as_deref(),
            Some("service_started"),
            "{name}"
        );
    }
}

/// `KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS` → `group.min.session.timeout.ms`,
/// as the apache/kafka image's entrypoint maps its environment.
fn kafka_property(env_name: &str) -> Option<String> {
    let rest = env_name.strip_prefix("KAFKA_")?;
    Some(rest.to_ascii_lowercase().replace('_', "."))
}

#[test]
fn compose_runs_the_local_kafka_version_and_settings() {
    let compose = compose();
    let kafka = service(&compose, "kafka");
    let version = choreo_stack::broker::KAFKA_VERSION;
    assert_eq!(
        text(&kafka["image"]).as_deref(),
        Some(format!("apache/kafka:{version}").as_str()),
        "compose runs the Kafka version of the local stack"
    );
    let pom = read("deploy/kafka/pom.xml");
    assert!(
        pom.contains(&format!("<kafka.version>{version}</kafka.version>")),
        "deploy/kafka/pom.xml fetches Kafka {version}"
    );
    let compose_props: BTreeMap<String, String> = environment(kafka)
        .into_iter()
        .filter_map(|(k, v)| Some((kafka_property(&k)?, v)))
        .collect();
    let local = choreo_stack::broker::server_properties(9092, 9093, Path::new("/data"));
    // Where each listens and keeps its logs differs by design; everything
    // else (roles, replication factors, group timeouts, topic defaults)
    // must be the same.
    let per_host = [
        "controller.quorum.voters",
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "log.dirs",
    ];
    let mut checked = 0;
    for (key, value) in &local {
        if per_host.contains(key) {
            continue;
        }
        assert_eq!(
            compose_props.get(*key),
            Some(value),
            "{key}: the local broker has {value}, compose has {:?}",
            compose_props.get(*key)
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} settings compared");
    for key in ["session.timeout.ms", "heartbeat.interval.ms"] {
        assert!(
            !compose_props.contains_key(key),
            "{key} is a client setting, not a broker one"
        );
    }
    // The same listener names with the same protocols (compose adds one for
    // clients on the host).
    let protocols = |map: &str| -> BTreeMap<String, String> {
        map.split(',')
            .filter_map(|p| p.split_once(':'))
            .map(|(n, p)| (n.to_owned(), p.to_owned()))
            .collect()
    };
    let local_map = local
        .iter()
        .find(|(k, _)| *k == "listener.security.protocol.map")
        .map(|(_, v)| protocols(v))
        .expect("local protocol map");
    let compose_map = protocols(&compose_props["listener.security.protocol.map"]);
    for (name, protocol) in &local_map {
        assert_eq!(compose_map.get(name), Some(protocol), "listener {name}");
    }
}

#[test]
fn every_service_is_health_checked_and_starts_after_init() {
    let compose = compose();
    let init_image = text(&service(&compose, "init")["image"]).expect("init names its image");
    for (name, _) in SERVICES {
        let svc = service(&compose, name);
        assert_eq!(command(svc), [format!("choreo-{name}")], "{name}: command");
        assert_eq!(
            text(&svc["image"]).as_deref(),
            Some(init_image.as_str()),
            "{name} runs the same image as init"
        );
        assert_eq!(
            text(&svc["build"]["dockerfile"]).as_deref(),
            Some("deploy/Dockerfile"),
            "{name}: built from deploy/Dockerfile"
        );

        let env = environment(svc);
        let port = port_of(env.get("CHOREO_HTTP_ADDR").expect("CHOREO_HTTP_ADDR"));
        assert!(
            env["CHOREO_HTTP_ADDR"].starts_with("0.0.0.0:"),
            "{name} must listen on every interface inside its container"
        );
        let probe = svc["healthcheck"]["test"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} has no healthcheck (exec form)"))
            .iter()
            .filter_map(text)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            probe.contains(&format!(":{port}/readyz")),
            "{name}: the healthcheck must probe /readyz on its own port {port}: {probe}"
        );
        let published = svc["ports"]
            .as_sequence()
            .map(|ports| ports.iter().filter_map(text).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(
            published.iter().any(|p| p.ends_with(&format!(":{port}"))),
            "{name}: container port {port} is not published: {published:?}"
        );

        for dep in ["kafka", "schema-registry", "postgres"] {
            assert_eq!(
                depends_condition(svc, dep).as_deref(),
                Some("service_healthy"),
                "{name} must wait for {dep} to be healthy"
            );
        }
        assert_eq!(
            depends_condition(svc, "init").as_deref(),
            Some("service_completed_successfully"),
            "{name} must wait for the topics and schemas"
        );
    }
    for infra in ["kafka", "schema-registry", "postgres", "mailpit"] {
        assert!(
            service(&compose, infra)["healthcheck"]["test"].is_sequence(),
            "{infra} needs a healthcheck: services wait for it"
        );
    }
}

#[test]
fn init_provisions_every_topic_and_the_contract_schemas() {
    let compose = compose();
    let init = service(&compose, "init");
    // `choreo init` creates Topic::ALL and dlq.<service> for every service
    // and registers choreo_events::catalogue(); the test kit's stacks run
    // the same functions, so here it is enough that compose runs it.
    assert_eq!(command(init), ["choreo", "init"], "init's command");
    let env = environment(init);
    let app = environment(service(&compose, "order"));
    for var in ["CHOREO_BROKERS", "CHOREO_REGISTRY_URL"] {
        assert_eq!(
            env.get(var),
            app.get(var),
            "init and the services share {var}"
        );
    }
    for dep in ["kafka", "schema-registry"] {
        assert_eq!(
            depends_condition(init, dep).as_deref(),
            Some("service_healthy"),
            "init waits for {dep}"
        );
    }

    // The registry gets what choreo_events compiles in; a schema file the
    // catalogue does not know would never be registered.
    let catalogue: BTreeSet<(String, String)> = choreo_events::catalogue()
        .iter()
        .map(|e| (e.topic.name().to_owned(), e.full_name.to_owned()))
        .collect();
    let mut files = BTreeSet::new();
    let schemas = repo_root().join("schemas");
    for dir in std::fs::read_dir(&schemas).expect("schemas/") {
        let dir = dir.expect("schemas/ entry").path();
        if !dir.is_dir() {
            continue;
        }
        let topic = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            choreo_events::Topic::from_name(&topic).is_some(),
            "schemas/{topic}/ is not a topic of choreo_events::Topic::ALL"
        );
        for file in std::fs::read_dir(&dir).expect("schema dir") {
            let file = file.expect("schema file").path();
            if file.extension().and_then(|e| e.to_str()) != Some("avsc") {
                continue;
            }
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&file).expect("read .avsc"))
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let full_name = format!(
                "{}.{}",
                json["namespace"].as_str().unwrap_or_default(),
                json["name"].as_str().unwrap_or_default()
            );
            files.insert((topic.clone(), full_name));
        }
    }
    let unregistered: Vec<_> = files.difference(&catalogue).collect();
    let missing: Vec<_> = catalogue.difference(&files).collect();
    assert!(
        unregistered.is_empty() && missing.is_empty(),
        "schemas/ and choreo_events::catalogue() differ: files not in the catalogue \
         {unregistered:?}, catalogue entries without a file {missing:?}"
    );
}

/// `postgres://user:password@host:port/database` of one service.
#[derive(Debug, Clone)]
struct DbUrl {
    user: String,
    password: String,
    database: String,
}

fn parse_database_url(url: &str) -> DbUrl {
    let rest = url
        .strip_prefix("postgres://")
        .unwrap_or_else(|| panic!("not a postgres:// URL: {url}"));
    let (userinfo, location) = rest.split_once('@').expect("user@host");
    let (user, password) = userinfo.split_once(':').expect("user:password");
    let (_, database) = location.split_once('/').expect("host/database");
    DbUrl {
        user: user.to_owned(),
        password: password.to_owned(),
        database: database.split('?').next().unwrap_or_default().to_owned(),
    }
}

fn database_urls() -> Vec<(&'static str, DbUrl)> {
    let compose = compose();
    SERVICES
        .iter()
        .map(|(name, _)| {
            let env = environment(service(&compose, name));
            let url = env
                .get("DATABASE_URL")
                .unwrap_or_else(|| panic!("{name}: DATABASE_URL"));
            (*name, parse_database_url(url))
        })
        .collect()
}

/// `init.sql` without comments, whitespace collapsed, one string per
/// statement.
fn statements(sql: &str) -> Vec<String> {
    sql.lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn every_database_url_matches_a_role_and_database_of_init_sql() {
    let compose = compose();
    let mounts: Vec<String> = service(&compose, "postgres")["volumes"]
        .as_sequence()
        .map(|v| v.iter().filter_map(text).collect())
        .unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./postgres/init.sql:/docker-entrypoint-initdb.d/")),
        "postgres must run deploy/postgres/init.sql on first start: {mounts:?}"
    );

    let sql = statements(&read("deploy/postgres/init.sql"));
    let has = |wanted: String| {
        assert!(
            sql.iter().any(|s| s.eq_ignore_ascii_case(&wanted)),
            "deploy/postgres/init.sql lacks `{wanted};`"
        )
    };
    let urls = database_urls();
    for (name, url) in &urls {
        let DbUrl {
            user,
            password,
            database,
        } = url;
        println!("{name}: {user} → {database}");
        has(format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"));
        has(format!("CREATE DATABASE {database} OWNER {user}"));
        has(format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"));
        has(format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {user}"
        ));
    }
    let users: BTreeSet<_> = urls.iter().map(|(_, u)| &u.user).collect();
    let databases: BTreeSet<_> = urls.iter().map(|(_, u)| &u.database).collect();
    assert_eq!(users.len(), SERVICES.len(), "one role per service");
    assert_eq!(databases.len(), SERVICES.len(), "one database per service");
}

/// Replaces whole SQL identifiers (runs of `[A-Za-z0-9_]`) found in
/// `names`; everything else, string literals included, is left alone
/// unless a literal is exactly such a word.
fn rename_identifiers(sql: &str, names: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(names.get(word.as_str()).unwrap_or(word));
        word.clear();
    };
    for c in sql.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `postgres://user:password@<admin's host:port>/database`.
fn url_as(admin_url: &str, user: &str, password: &str, database: &str) -> String {
    let rest = admin_url.strip_prefix("postgres://").unwrap_or(admin_url);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("postgres://{user}:{password}@{host}/{database}")
}

/// Applies `init.sql` to the local PostgreSQL, under names made unique for
/// this run, and checks what each role may open.
///
/// The local server authenticates by trust, so passwords are not checked
/// here: what this proves is the CONNECT privilege, which PostgreSQL checks
/// whatever the authentication method. (In compose the postgres image uses
/// password authentication for connections from other containers, so the
/// passwords of DATABASE_URL matter there; the test above checks they
/// match init.sql.)
#[tokio::test]
async fn each_service_role_opens_its_own_database_and_no_other() -> anyhow::Result<()> {
    let urls = database_urls();
    // Roles are global to the server: a unique suffix keeps concurrent runs
    // and whatever else lives on the server apart, and cleanup drops
    // exactly these names.
    let suffix = format!("_t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut names = BTreeMap::new();
    for (_, url) in &urls {
        names.insert(url.user.clone(), format!("{}{suffix}", url.user));
        names.insert(url.database.clone(), format!("{}{suffix}", url.database));
    }
    let original = read("deploy/postgres/init.sql");
    let sql = rename_identifiers(&original, &names);
    // Anything init.sql creates must be renamed, or the test would create
    // (and leave behind) a global object under its real name.
    for statement in statements(&sql) {
        let words: Vec<&str> = statement.split_whitespace().collect();
        if let [create, kind, name, ..] = words.as_slice() {
            if create.eq_ignore_ascii_case("CREATE") {
                ensure!(
                    name.ends_with(&suffix),
                    "init.sql creates {kind} {name}, which no service's DATABASE_URL uses; \
                     this test only knows how to isolate and drop the services' roles and databases"
                );
            }
        }
    }

    // CHOREO_TEST_POSTGRES_URL, or a server this test process starts (a
    // second of blocking, with nothing else running yet).
    let admin = choreo_outbox::testing::admin_url();
    let run = tokio::spawn(prove_isolation(
        admin.clone(),
        sql,
        urls.clone(),
        suffix.clone(),
    ));
    let outcome = run.await;
    cleanup(&admin, &urls, &suffix).await;
    match outcome {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}

async fn prove_isolation(
    admin: String,
    sql: String,
    urls: Vec<(&'static str, DbUrl)>,
    suffix: String,
) -> anyhow::Result<()> {
    apply_like_the_postgres_image(&admin, &sql)?;
    let renamed = |u: &DbUrl| DbUrl {
        user: format!("{}{suffix}", u.user),
        password: u.password.clone(),
        database: format!("{}{suffix}", u.database),
    };
    for (i, (name, url)) in urls.iter().enumerate() {
        let own = renamed(url);
        let (other_name, other) = &urls[(i + 1) % urls.len()];
        let other = renamed(other);

        let mut conn =
            PgConnection::connect(&url_as(&admin, &own.user, &own.password, &own.database))
                .await
                .with_context(|| {
                    format!(
                        "{name}: {} opening its own database {}",
                        own.user, own.database
                    )
                })?;
        // What a service's migrations do: create and use tables in `public`
        // (PostgreSQL 15 allows that only to the database owner).
        conn.execute("CREATE TABLE compose_probe (id bigint PRIMARY KEY, note text)")
            .await
            .with_context(|| format!("{name}: creating a table in {}", own.database))?;
        conn.execute("INSERT INTO compose_probe VALUES (1, 'mine')")
            .await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM compose_probe")
            .fetch_one(&mut conn)
            .await?;
        ensure!(count == 1, "{name}: expected the row it wrote");
        conn.close().await?;

        match PgConnection::connect(&url_as(&admin, &own.user, &own.password, &other.database))
            .await
        {
            Ok(_) => bail!(
                "{name}: role {} opened {other_name}'s database {}; it must not",
                own.user,
                other.database
            ),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
                println!("{name} → {other_name}: {e}");
            }
            Err(e) => bail!(
                "{name} → {other_name}: expected `permission denied for database` (42501), got {e}"
            ),
        }
    }
    Ok(())
}

/// `psql -v ON_ERROR_STOP=1` as the superuser, which is how the postgres
/// image's entrypoint runs `/docker-entrypoint-initdb.d/*.sql`: each
/// statement in its own transaction (CREATE DATABASE needs that).
fn apply_like_the_postgres_image(admin: &str, sql: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut psql = Command::new("psql")
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "--no-psqlrc",
            "--quiet",
            "-d",
            admin,
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running psql (Debian package postgresql-client)")?;
    psql.stdin
        .take()
        .expect("piped stdin")
        .write_all(sql.as_bytes())?;
    let output = psql.wait_with_output()?;
    ensure!(
        output.status.success(),
        "psql rejected deploy/postgres/init.sql ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Drops this run's databases, then its roles; runs even when the test
/// failed. Errors are reported, not raised: the test's own verdict wins.
async fn cleanup(admin: &str, urls: &[(&str, DbUrl)], suffix: &str) {
    let mut conn = match PgConnection::connect(admin).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("cleanup: cannot connect to {admin}: {e}");
            return;
        }
    };
    for (_, url) in urls {
        let sql = format!(
            r#"DROP DATABASE IF EXISTS "{}{suffix}" WITH (FORCE)"#,
            url.database
        );
        if let Err(e) = conn.execute(sql.as_str()).await {
            eprintln!("cleanup: {sql}: {e}");
        }
    }
    for (_, url) in urls {
        let sql = format!(r#"DROP ROLE IF EXISTS "{}{suffix}""#, url.user);
        if let Err(e) = conn.execute(sql.as_str()).await {
            eprintln!("cleanup: {sql}: {e}");
        }
    }
    let _ = conn.close().await;
}

/// Instructions of a Dockerfile: continuation lines joined, comments and
/// blank lines dropped.
fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            if !current.trim().is_empty() {
                instructions.push(current.trim().to_owned());
            }
            current.clear();
        }
    }
    instructions
}

#[test]
fn the_image_carries_every_workspace_binary() -> anyhow::Result<()> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .context("running cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut built = BTreeSet::new();
    for package in metadata["packages"].as_array().context("packages")? {
        for target in package["targets"].as_array().context("targets")? {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
            if is_bin {
                built.insert(target["name"].as_str().context("target name")?.to_owned());
            }
        }
    }

    let dockerfile = dockerfile_instructions(&read("deploy/Dockerfile"));
    assert!(
        dockerfile.iter().any(|i| {
            i.starts_with("RUN")
                && ["cargo build", "--release", "--workspace", "--bins"]
                    .iter()
                    .all(|part| i.contains(part))
        }),
        "the builder stage must run `cargo build --release --workspace --bins`"
    );
    let last_stage = dockerfile
        .iter()
        .rposition(|i| i.to_ascii_uppercase().starts_with("FROM "))
        .context("a FROM")?;
    let mut copied = BTreeSet::new();
    for instruction in &dockerfile[last_stage..] {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        if !words[0].eq_ignore_ascii_case("COPY") || !words.contains(&"--from=builder") {
            continue;
        }
        let paths: Vec<&str> = words[1..]
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (destination, sources) = paths.split_last().context("COPY needs a destination")?;
        if *destination != "/usr/local/bin/" {
            continue;
        }
        for source in sources {
            copied.insert(source.rsplit('/').next().unwrap_or(source).to_owned());
        }
    }
    assert_eq!(
        copied, built,
        "deploy/Dockerfile must copy exactly the binaries `cargo build --release --workspace \
         --bins` builds into /usr/local/bin/ (left: copied, right: cargo metadata's bin targets)"
    );

    // Every compose command names one of them.
    let compose = compose();
    for (name, svc) in compose["services"].as_mapping().context("services")? {
        if svc["build"].is_null() {
            continue;
        }
        let program = command(svc).into_iter().next();
        assert!(
            program.as_ref().is_some_and(|p| built.contains(p)),
            "{name:?} runs {program:?}, which the image does not contain"
        );
    }

    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "the build context must leave out target/ (gigabytes)"
    );
    Ok(())
}

/// The registry reaches the host only through `registry-guard`, which is
/// given the same admin token as the services, the template that
/// registry_guard.rs runs, and every variable that template uses.
#[test]
fn the_registry_is_published_only_behind_the_token_guard() {
    let compose = compose();
    let registry = service(&compose, "schema-registry");
    assert!(
        registry["ports"].is_null(),
        "schema-registry must not be published: the host goes through registry-guard"
    );
    let guard = service(&compose, "registry-guard");
    assert!(
        text(&guard["image"]).is_some_and(|i| i.starts_with("nginx:")),
        "{:?}",
        guard["image"]
    );
    let ports: Vec<String> = guard["ports"]
        .as_sequence()
        .expect("registry-guard publishes the registry port")
        .iter()
        .filter_map(text)
        .collect();
    assert_eq!(ports, ["127.0.0.1:8081:8081"]);
    let env = environment(guard);
    let service_token = environment(service(&compose, "inventory"))["CHOREO_ADMIN_TOKEN"].clone();
    assert_eq!(env.get("CHOREO_ADMIN_TOKEN"), Some(&service_token));
    let listen = port_of(&environment(registry)["SCHEMA_REGISTRY_LISTENERS"]).to_owned();
    assert_eq!(
        env.get("CHOREO_REGISTRY_UPSTREAM").map(String::as_str),
        Some(format!("schema-registry:{listen}").as_str())
    );
    assert_eq!(
        env.get("CHOREO_GUARD_LISTEN").map(String::as_str),
        Some("8081")
    );
    let volumes: Vec<String> = guard["volumes"]
        .as_sequence()
        .expect("registry-guard mounts its template")
        .iter()
        .filter_map(text)
        .collect();
    assert_eq!(
        volumes,
        ["./registry-guard/default.conf.template:/etc/nginx/templates/default.conf.template:ro"]
    );
    // Every ${VAR} of the template is one compose sets (the image leaves an
    // unset one as written, which nginx would then refuse).
    let template = read("deploy/registry-guard/default.conf.template");
    let mut used: Vec<&str> = template
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect();
    used.sort_unstable();
    used.dedup();
    let set: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        used, set,
        "the template's variables and registry-guard's environment"
    );
    assert_eq!(
        depends_condition(guard, "schema-registry").as_deref(),
        Some("service_healthy")
    );
}
