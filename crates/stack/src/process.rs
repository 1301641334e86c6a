//! One supervised child process.
//!
//! Children are spawned with kill-on-drop, so a panicking test or a killed
//! runner leaves no orphan behind; a graceful stop is SIGTERM, a wait, and
//! SIGKILL when the grace period runs out.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::LogSink;
use crate::{Error, Result};

/// What a child keeps of the runner's environment when the stack is
/// hermetic: where programs and temporary files are, the locale, and the
/// log and backtrace switches — nothing that changes what a child does.
pub const PASSED_THROUGH: [&str; 7] = [
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// A command for a child of the stack. `inherit_env` (`choreo up`) passes
/// the runner's environment on, so a user's `CHOREO_*` settings reach the
/// services; without it (test stacks) the child starts from an empty
/// environment plus [`PASSED_THROUGH`], and gets only what the stack sets,
/// so an exported `DATABASE_URL` or `CHOREO_ORDER_DEADLINE_MS` on the
/// runner cannot change a test.
pub fn command(program: impl AsRef<std::ffi::OsStr>, inherit_env: bool) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    if !inherit_env {
        cmd.env_clear();
        for var in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
    }
    cmd
}

#[derive(Debug)]
pub struct Child {
    name: String,
    inner: tokio::process::Child,
}

impl Child {
    pub fn spawn(
        name: &str,
        mut cmd: tokio::process::Command,
        log: &LogSink,
        data_dir: &Path,
    ) -> Result<Child> {
        // Own process group: a terminal's Ctrl-C reaches only the runner,
        // which stops services before the broker they drain into.
        cmd.kill_on_drop(true).stdin(Stdio::null()).process_group(0);
        // Kill-on-drop needs the runner alive to drop; a runner that is
        // killed or crashes must not leave the stack running, so the kernel
        // sends each child SIGTERM when the runner goes away.
        #[allow(unsafe_code)]
        // SAFETY: the hook runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Some(Signal::SIGTERM)).map_err(std::io::Error::from)
            });
        }
        match log {
            LogSink::Prefixed => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            LogSink::Files => {
                let dir = data_dir.join("logs");
                std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                    what: format!("creating {}", dir.display()),
                    source: e,
                })?;
                let path = dir.join(format!("{name}.log"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| Error::Io {
                        what: format!("opening {}", path.display()),
                        source: e,
                    })?;
                let err = file.try_clone().map_err(|e| Error::Io {
                    what: "cloning log file".into(),
                    source: e,
                })?;
                cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err));
            }
        }
        let mut inner = cmd.spawn().map_err(|e| Error::Io {
            what: format!("starting {name}"),
            source: e,
        })?;
        if let LogSink::Prefixed = log {
            let prefix = format!("{name:>13} | ");
            if let Some(out) = inner.stdout.take() {
                tokio::spawn(prefix_lines(prefix.clone(), out));
            }
            if let Some(err) = inner.stderr.take() {
                tokio::spawn(prefix_lines(prefix, err));
            }
        }
        Ok(Child {
            name: name.to_owned(),
            inner,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.id()
    }

    /// The exit status, when the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.inner.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        let _ = self.inner.kill().await;
    }

    /// SIGTERM; SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.inner.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(grace, self.inner.wait()).await.is_ok() {
                return;
            }
            tracing::warn!(name = %self.name, "did not stop within {grace:?}; killing");
        }
        self.kill().await;
    }

    pub async fn stop(mut self, grace: Duration) {
        self.terminate(grace).await;
    }
}

async fn prefix_lines<R: tokio::io::AsyncRead + Unpin>(prefix: String, reader: R) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{prefix}{line}");
    }
}
