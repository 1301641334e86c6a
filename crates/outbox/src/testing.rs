//! Test helpers (feature `testing`): a fresh database per test, so storage
//! scenarios can be written once and run on SQLite and PostgreSQL.
//!
//! PostgreSQL: [`fresh_postgres`] creates `choreo_test_<uuid>` on the server
//! at [`admin_url`] and returns its URL with a guard that drops it. The
//! helpers panic on failure: a test that silently skips cannot fail.
//!
//! # Which server
//!
//! `CHOREO_TEST_POSTGRES_URL`, when set (and not empty), names the server.
//! Otherwise the test process starts its own, once, on first use, so tests
//! need no server that the machine (or CI) happens to run, and leave nothing
//! behind on one:
//!
//! - `initdb` into a fresh temporary folder (trust authentication, superuser
//!   `postgres`, UTF8, locale C), then `postgres` on 127.0.0.1 and a port the
//!   kernel reports free. Durability is off (`fsync`, `synchronous_commit`,
//!   `full_page_writes`): the data is thrown away, and tests run faster.
//!   `max_connections` is raised because every test opens pools of its own.
//! - The binaries come from `PG_BIN`, else `pg_config --bindir`, else the
//!   newest `/usr/lib/postgresql/<major>/bin` (Debian's layout, installed by
//!   `scripts/tools.sh`), else `PATH`.
//! - PostgreSQL refuses to run as root. As root, `initdb` and `postgres` run
//!   as uid/gid 65534 (`nobody`), which owns the folder; the folder's
//!   ancestors (`TMPDIR`, default `/tmp`) must let other users through.
//! - Cleanup: a static is never dropped, and a killed process runs no code
//!   at all, so the process cannot stop the server itself. A supervisor
//!   does, and removes the folder (see `Supervisor` below for why this way).

use std::env::VarError;
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

/// Overrides the server the PostgreSQL helpers use.
pub const POSTGRES_URL_ENV: &str = "CHOREO_TEST_POSTGRES_URL";
/// The folder with `initdb` and `postgres` for the test process's own
/// server; searched for when unset.
pub const POSTGRES_BIN_ENV: &str = "PG_BIN";

/// uid and gid the server runs as when the tests run as root: the
/// conventional `nobody`/`nogroup` (and the kernel's overflow id).
const UNPRIVILEGED_ID: u32 = 65534;
/// Pools from concurrently running tests (up to 10 connections each, some
/// tests open several) plus the admin connections creating and dropping
/// databases.
const MAX_CONNECTIONS: u32 = 300;
/// From spawning `postgres` to its first accepted connection.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Another process may take the free port between our probe and
/// `postgres` binding it; then we try another.
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 40;

/// A `sqlite://` URL for a database file inside `dir` (e.g. a tempdir).
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("choreo.db").display())
}

/// The URL of the PostgreSQL server the helpers use, as superuser, on its
/// `postgres` database: `CHOREO_TEST_POSTGRES_URL`, or this process's own
/// server, started on the first call (blocking for a second or two; from
/// async code prefer [`fresh_postgres`], which calls this off the runtime).
/// Panics when there is no server to be had.
pub fn admin_url() -> String {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.is_empty() => return url,
        Ok(_) | Err(VarError::NotPresent) => {}
        Err(e) => panic!("{POSTGRES_URL_ENV}: {e}"),
    }
    // The failure is kept too: every test then fails with the same message,
    // instead of each one trying (and failing) to start a server again.
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(Server::start) {
        Ok(server) => server.admin_url.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Creates a fresh PostgreSQL database; returns its URL and the guard that
/// drops it. Keep the guard alive for as long as the database is used.
pub async fn fresh_postgres_url() -> (String, TestDatabase) {
    let db = fresh_postgres().await;
    (db.url.clone(), db)
}

/// Creates a fresh PostgreSQL database, dropped with the returned guard.
pub async fn fresh_postgres() -> TestDatabase {
    // The first call may start the server: blocking work, kept off the
    // test's runtime thread.
    let admin_url = match tokio::task::spawn_blocking(admin_url).await {
        Ok(url) => url,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("looking up the test PostgreSQL server: {e}"),
        },
    };
    let name = format!("choreo_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server at {admin_url}: {e}"));
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    if let Err(error) = admin.close().await {
        // The database exists; only the goodbye failed.
        tracing::warn!(%error, "closing the admin connection");
    }
    TestDatabase {
        url: with_database(&admin_url, &name),
        name,
        admin_url,
        dropped: false,
    }
}

/// A database created by [`fresh_postgres`]. Dropped (with `FORCE`, so open
/// pools do not block it) by [`TestDatabase::drop_database`] or, failing
/// that, when the guard goes out of scope, even if the test panicked.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
    dropped: bool,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now.
    pub async fn drop_database(mut self) {
        self.dropped = true;
        drop_db(&self.admin_url, &self.name).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop cannot await, and we may be inside a runtime: use a thread
        // with its own.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let joined = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database")
                .block_on(drop_db(&admin_url, &name));
        })
        .join();
        if joined.is_err() {
            tracing::warn!(database = %self.name, "could not drop test database");
        }
    }
}

async fn drop_db(admin_url: &str, name: &str) {
    let result = async {
        let mut admin = PgConnection::connect(admin_url).await?;
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
            .await?;
        admin.close().await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, database = name, "could not drop test database");
    }
}

/// This process's own PostgreSQL server. It lives in a static, so it is
/// never dropped; the [`Supervisor`] stops it when the process ends.
#[derive(Debug)]
struct Server {
    admin_url: String,
    /// Never waited for: while this process lives, postgres's pid cannot be
    /// reused (it would stay a zombie if postgres died), so the supervisor
    /// cannot signal a stranger by that pid.
    _postgres: Child,
    _supervisor: Supervisor,
}

impl Server {
    fn start() -> Result<Server, String> {
        Self::try_start().map_err(|e| {
            format!(
                "could not start PostgreSQL for the tests: {e}\n\
                 (set {POSTGRES_URL_ENV} to use a running server instead)"
            )
        })
    }

    fn try_start() -> Result<Server, String> {
        let bin = server_bin_dir()?;
        let run_as = nix::unistd::geteuid().is_root().then_some(UNPRIVILEGED_ID);
        let base = std::env::temp_dir();
        if run_as.is_some() {
            traversable_by_others(&base)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("choreo-test-postgres-")
            .tempdir_in(&base)
            .map_err(|e| format!("creating a folder in {}: {e}", base.display()))?
            // The supervisor removes it: it must outlive this process.
            .keep();
        let supervisor = Supervisor::spawn(&dir)?;
        match Self::start_in(&bin, &dir, run_as, supervisor) {
            Ok(server) => Ok(server),
            Err((e, supervisor)) => {
                let e = format!("{e}\n(binaries from {})", bin.display());
                // The message holds what the folder could tell (the log);
                // removing the folder now leaves nothing behind for the rest
                // of the run.
                match supervisor.finish() {
                    Ok(()) => Err(e),
                    Err(f) => Err(format!("{e}\n{f}")),
                }
            }
        }
    }

    /// On failure, hands the supervisor back so the caller can clean up
    /// after reading the log.
    fn start_in(
        bin: &Path,
        dir: &Path,
        run_as: Option<u32>,
        mut supervisor: Supervisor,
    ) -> Result<Server, (String, Supervisor)> {
        macro_rules! tri {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((e, supervisor)),
                }
            };
        }
        if let Some(id) = run_as {
            tri!(std::os::unix::fs::chown(dir, Some(id), Some(id))
                .map_err(|e| format!("handing {} to uid {id}: {e}", dir.display())));
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "--auth=trust",
            "--username=postgres",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ]);
        let output = tri!(unprivileged(&mut initdb, dir, run_as)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", bin.join("initdb").display())));
        if !output.status.success() {
            return Err((
                format!(
                    "initdb failed ({}):\n{}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
                supervisor,
            ));
        }

        let log_path = dir.join("postgres.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = tri!(free_port());
            let log = tri!(File::create(&log_path)
                .and_then(|log| Ok((log.try_clone()?, log)))
                .map_err(|e| format!("creating {}: {e}", log_path.display())));
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(dir)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
                .stdin(Stdio::null())
                .stdout(log.0)
                .stderr(log.1)
                // Out of the terminal's process group: a Ctrl-C ends the
                // tests, and then the supervisor stops the server.
                .process_group(0);
            let mut postgres = tri!(unprivileged(&mut postgres, dir, run_as)
                .spawn()
                .map_err(|e| format!("running {}: {e}", bin.join("postgres").display())));
            if let Err(e) = supervisor.watch(postgres.id()) {
                let stopped = stop(&mut postgres);
                return Err((format!("{e}{stopped}"), supervisor));
            }
            let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
            let outcome = match wait_until_ready(&admin_url, &mut postgres) {
                Ok(Startup::Ready) => {
                    return Ok(Server {
                        admin_url,
                        _postgres: postgres,
                        _supervisor: supervisor,
                    })
                }
                Ok(Startup::Exited(status)) => format!("postgres exited ({status})"),
                Ok(Startup::TimedOut { last_error }) => format!(
                    "postgres accepted no connection within {READY_DEADLINE:?} \
                     (last attempt: {last_error}){}",
                    stop(&mut postgres)
                ),
                Err(e) => format!("waiting for postgres: {e}{}", stop(&mut postgres)),
            };
            // postgres is gone (and reaped): the supervisor must not signal
            // its pid any more.
            tri!(supervisor.forget());
            let log = read_log(&log_path);
            if attempt < PORT_ATTEMPTS && log.contains("Address already in use") {
                tracing::info!(port, "port taken before postgres bound it; trying another");
                continue;
            }
            return Err((
                format!(
                    "{outcome}\n--- last lines of the server log ---\n{}",
                    tail(&log, LOG_TAIL_LINES)
                ),
                supervisor,
            ));
        }
        unreachable!("the last attempt returns")
    }
}

/// Stops the server when this process ends, however it ends.
///
/// A plain `sh` loop, started before anything else: it holds the read end
/// of a pipe whose only write end is in this process (created close-on-exec,
/// so no other child inherits it). The kernel closes that end when the
/// process exits, by returning from `main`, by panicking or by SIGKILL, and
/// the supervisor's `read` then sees end-of-file: it sends postgres SIGQUIT
/// (immediate shutdown: the data is thrown away, a shutdown checkpoint would
/// be wasted), waits for it to go (SIGKILL after 10 s), and removes the
/// folder.
///
/// Rejected: `prctl(PR_SET_PDEATHSIG)` fires when the *thread* that spawned
/// the child exits, and test threads come and go; spawning from a thread
/// kept alive for the purpose would work, but needs `pre_exec` (unsafe code,
/// which the workspace denies) and still leaves the folder behind. Polling
/// our pid from the supervisor is racy (pid reuse) where end-of-file on the
/// pipe is exact.
///
/// The supervisor runs as this process's user (to signal postgres and remove
/// the folder, also as root) and in its own process group, so a Ctrl-C does
/// not take it down before it has cleaned up. What is written to it: a pid
/// to stop at the end, or `-` when that process is already gone.
#[derive(Debug)]
struct Supervisor {
    /// Never waited for while the process lives: it must outlive us.
    process: Child,
    pipe: ChildStdin,
}

const SUPERVISOR_SCRIPT: &str = r#"
dir=$1
pid=-
while read -r line; do pid=$line; done
if [ "$pid" != - ]; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        # Exited but not reaped yet (our parent is gone): as good as gone.
        case $(cat "/proc/$pid/stat" 2>/dev/null) in *") Z "*) break ;; esac
        i=$((i + 1))
        if [ "$i" -ge 100 ]; then kill -KILL "$pid" 2>/dev/null; sleep 1; break; fi
        sleep 0.1
    done
fi
rm -rf "$dir" || { sleep 1; rm -rf "$dir"; }
"#;

impl Supervisor {
    fn spawn(dir: &Path) -> Result<Supervisor, String> {
        let mut process = Command::new("/bin/sh")
            .arg("-c")
            .arg(SUPERVISOR_SCRIPT)
            .arg("choreo-test-postgres-supervisor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting the PostgreSQL supervisor (/bin/sh): {e}"))?;
        let pipe = process.stdin.take().expect("stdin is piped");
        Ok(Supervisor { process, pipe })
    }

    /// Stop `pid` when this process ends.
    fn watch(&mut self, pid: u32) -> Result<(), String> {
        self.tell(&pid.to_string())
    }

    /// The watched process is gone: stop nothing.
    fn forget(&mut self) -> Result<(), String> {
        self.tell("-")
    }

    fn tell(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.pipe, "{line}").map_err(|e| {
            format!("the PostgreSQL supervisor is gone, so nothing would clean up: {e}")
        })
    }

    /// Cleans up now rather than when the process ends, and waits for it.
    fn finish(self) -> Result<(), String> {
        let Supervisor { mut process, pipe } = self;
        drop(pipe);
        match process.wait() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("the PostgreSQL supervisor failed ({status})")),
            Err(e) => Err(format!("waiting for the PostgreSQL supervisor: {e}")),
        }
    }
}

enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut { last_error: String },
}

/// Polls until `url` accepts a connection, `postgres` exits, or the
/// deadline passes.
fn wait_until_ready(url: &str, postgres: &mut Child) -> std::io::Result<Startup> {
    // admin_url is sync and may be called on a runtime's thread, where
    // block_on would panic: probe from a thread with a runtime of its own.
    let probe = || -> std::io::Result<Startup> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                if let Some(status) = postgres.try_wait()? {
                    return Ok(Startup::Exited(status));
                }
                let last_error =
                    match tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(url))
                        .await
                    {
                        Ok(Ok(conn)) => {
                            if let Err(error) = conn.close().await {
                                // It accepted the connection, which is the point.
                                tracing::debug!(%error, "closing the readiness probe");
                            }
                            return Ok(Startup::Ready);
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "no answer within 2s".to_owned(),
                    };
                if Instant::now() >= deadline {
                    return Ok(Startup::TimedOut { last_error });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    std::thread::scope(|scope| {
        scope
            .spawn(probe)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// SIGKILL and reap; returns what went wrong, if anything, for the error
/// message at hand.
fn stop(postgres: &mut Child) -> String {
    match postgres.kill().and_then(|()| postgres.wait()) {
        Ok(_) => String::new(),
        Err(e) => format!(" (and stopping it failed: {e})"),
    }
}

/// Sets what `initdb` and `postgres` need: as root, an unprivileged user
/// (PostgreSQL refuses root), and a working directory that user may enter.
fn unprivileged<'a>(cmd: &'a mut Command, dir: &Path, run_as: Option<u32>) -> &'a mut Command {
    if let Some(id) = run_as {
        cmd.uid(id).gid(id);
    }
    cmd.current_dir(dir)
}

/// A port nothing listens on right now (see [`PORT_ATTEMPTS`]).
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port on 127.0.0.1: {e}"))
}

/// The unprivileged server must reach its folder inside `base`.
fn traversable_by_others(base: &Path) -> Result<(), String> {
    let base = base
        .canonicalize()
        .map_err(|e| format!("resolving {}: {e}", base.display()))?;
    for dir in base.ancestors() {
        let mode = std::fs::metadata(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) does not let other users through, and PostgreSQL, which \
                 refuses to run as root, runs as uid {UNPRIVILEGED_ID} here; point TMPDIR \
                 to a folder it can reach, e.g. /tmp",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// The folder with `initdb` and `postgres`; see the module docs.
fn server_bin_dir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os(POSTGRES_BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "{POSTGRES_BIN_ENV}={} holds no initdb and postgres",
                dir.display()
            ))
        };
    }
    let mut tried = Vec::new();
    match Command::new("pg_config").arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
            // E.g. only the client packages of that version.
            tried.push(format!("pg_config --bindir: {} (no server)", dir.display()));
        }
        Ok(out) => tried.push(format!("pg_config --bindir: {}", out.status)),
        Err(e) => tried.push(format!("pg_config: {e}")),
    }
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin, majors side by side.
    let debian = Path::new("/usr/lib/postgresql");
    match std::fs::read_dir(debian) {
        Ok(entries) => {
            let newest = entries
                .filter_map(|entry| {
                    let entry = entry.ok()?;
                    let version: Vec<u32> = entry
                        .file_name()
                        .to_str()?
                        .split('.')
                        .map(|part| part.parse().ok())
                        .collect::<Option<_>>()?;
                    let bin = entry.path().join("bin");
                    has_server(&bin).then_some((version, bin))
                })
                .max();
            if let Some((_, bin)) = newest {
                return Ok(bin);
            }
            tried.push(format!(
                "{}: no <major>/bin with a server",
                debian.display()
            ));
        }
        Err(e) => tried.push(format!("{}: {e}", debian.display())),
    }
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_server(dir))
    {
        return Ok(dir);
    }
    tried.push("PATH: no initdb and postgres".to_owned());
    Err(format!(
        "no PostgreSQL server binaries (initdb, postgres) found; install them \
         (scripts/tools.sh) or set {POSTGRES_BIN_ENV} to their folder. Tried: {}",
        tried.join("; ")
    ))
}

fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `admin_url` with its database path replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
