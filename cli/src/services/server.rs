//! A server process of `switchyard dev`'s own: started on a loopback port,
//! waited for, and stopped when `dev` ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

/// How long a server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The user a server runs as: the current one, or, for root (whom
/// PostgreSQL refuses), an unprivileged system user.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `None`: run as the current user. As root, the system user `postgres`
    /// if there is one, else `nobody`.
    pub fn for_current_user() -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        ["postgres", "nobody"].into_iter().find_map(|wanted| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.len() < 4 || fields[0] != wanted {
                    return None;
                }
                Some(Self {
                    name: wanted.to_owned(),
                    uid: fields[2].parse().ok()?,
                    gid: fields[3].parse().ok()?,
                })
            })
        })
    }

    /// Give `path` (and, for a directory, everything in it) to this user.
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))?;
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.own(&entry?.path())?;
            }
        }
        Ok(())
    }
}

/// A command for `program`, run as `run_as` when set, its output appended
/// to `log`.
pub fn command(program: &Path, run_as: Option<&RunAs>, log: &Path) -> std::io::Result<Command> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    if let Some(user) = run_as {
        user.own(log)?;
    }
    let mut command = Command::new(program);
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true);
    if let Some(user) = run_as {
        // The user may not be allowed into the current directory.
        command.uid(user.uid).gid(user.gid).current_dir("/");
    }
    Ok(command)
}

/// A started server.
pub struct Server {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    /// The signal that stops it cleanly.
    stop_signal: Signal,
    pub log: PathBuf,
}

impl Server {
    /// Start `command` (a server listening on `port`) and wait until
    /// `ready` answers `true`.
    pub async fn start<F, Fut>(
        name: &'static str,
        mut command: Command,
        port: u16,
        stop_signal: Signal,
        log: PathBuf,
        ready: F,
    ) -> Result<Self, String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let mut server = Self {
            name,
            port,
            child,
            stop_signal,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{name} exited at start ({status}): {}",
                    last_line(&server.log)
                ));
            }
            if ready().await {
                return Ok(server);
            }
            if Instant::now() > deadline {
                server.stop().await;
                return Err(format!(
                    "{name} did not answer within {} s; see {}",
                    START_TIMEOUT.as_secs(),
                    server.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop it cleanly, or kill it if it takes too long.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|id| Pid::from_raw(id as i32)) {
            // It may have exited already; then there is nothing to stop.
            let _ = rustix::process::kill_process(pid, self.stop_signal);
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(server = self.name, "did not stop in time; killing it");
        }
        let _ = self.child.kill().await;
    }
}

/// The last non-empty line of a log file, to say why a server failed.
pub fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| format!("see {}", log.display()))
}

/// A port on the loopback interface that nothing listens on now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
