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

    /// Give `path` itself to this user (a symbolic link is not followed:
    /// the link itself changes hands).
    pub fn own(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
    }
}

/// Create the directory `dir` and give it (itself) to `run_as`.
pub fn server_dir(dir: &Path, run_as: Option<&RunAs>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Some(user) = run_as {
        user.own(dir)
            .map_err(|e| format!("cannot give {} to {}: {e}", dir.display(), user.name))?;
    }
    Ok(())
}

/// A command for `program`, run as `run_as` when set, its output appended
/// to `log`. The log is opened here, without following a symbolic link
/// (its directory belongs to `run_as`), and the open file is given to
/// `run_as`.
pub fn command(program: &Path, run_as: Option<&RunAs>, log: &Path) -> std::io::Result<Command> {
    use std::os::unix::fs::OpenOptionsExt;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(log)?;
    if let Some(user) = run_as {
        std::os::unix::fs::fchown(&log_file, Some(user.uid), Some(user.gid))?;
    }
    let mut command = Command::new(program);
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        // Not in the terminal's process group: Ctrl-C reaches `dev`, which
        // stops its servers once its runs are drained.
        .process_group(0);
    if let Some(user) = run_as {
        // The user may not be allowed into the current directory.
        command.uid(user.uid).gid(user.gid).current_dir("/");
    }
    Ok(command)
}

/// Why one attempt to start a server failed.
enum StartError {
    /// It exited: perhaps another process took its port after it was
    /// chosen, so another port may do.
    Exited(String),
    Failed(String),
}

/// How many ports a server is tried on before its start fails.
const PORT_ATTEMPTS: usize = 3;

/// What starts a server, whatever its port.
pub struct Launch {
    pub name: &'static str,
    /// Written to its stdin, when its command pipes it.
    pub input: String,
    /// The signal that stops it cleanly.
    pub stop_signal: Signal,
    /// Where its output goes.
    pub log: PathBuf,
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
    /// Start a server on a free loopback port and wait until it answers:
    /// `command` makes its command for a port, `ready` tells whether the
    /// server on a port answers. One that exits at start (its port taken
    /// after it was chosen) is tried on another port.
    pub async fn start<C, R, Fut>(launch: &Launch, command: C, ready: R) -> Result<Self, String>
    where
        C: Fn(u16) -> std::io::Result<Command>,
        R: Fn(u16) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let command =
                command(port).map_err(|e| format!("cannot write {}: {e}", launch.log.display()))?;
            match Self::start_on(launch, command, port, || ready(port)).await {
                Ok(server) => return Ok(server),
                Err(StartError::Exited(_)) if attempt < PORT_ATTEMPTS => continue,
                Err(StartError::Exited(message) | StartError::Failed(message)) => {
                    return Err(message);
                }
            }
        }
    }

    /// One attempt of [`Server::start`], on `port`.
    async fn start_on<F, Fut>(
        launch: &Launch,
        mut command: Command,
        port: u16,
        ready: F,
    ) -> Result<Self, StartError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let name = launch.name;
        let mut child = command
            .spawn()
            .map_err(|e| StartError::Failed(format!("cannot start {name}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            // Dropped once written: the server reads to the end.
            stdin
                .write_all(launch.input.as_bytes())
                .await
                .map_err(|e| StartError::Failed(format!("cannot configure {name}: {e}")))?;
        }
        let mut server = Self {
            name,
            port,
            child,
            stop_signal: launch.stop_signal,
            log: launch.log.clone(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(StartError::Exited(format!(
                    "{name} exited at start ({status}): {}",
                    last_line(&server.log)
                )));
            }
            if ready().await {
                return Ok(server);
            }
            if Instant::now() > deadline {
                server.stop().await;
                return Err(StartError::Failed(format!(
                    "{name} did not answer within {} s; see {}",
                    START_TIMEOUT.as_secs(),
                    server.log.display()
                )));
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

/// Stop the server whose pid is on the first line of `pidfile`, left
/// running by a `dev` that was killed before it could stop it. Only a live
/// process whose command line names `program` is signalled (Linux's `/proc`
/// tells; elsewhere nothing is done, and a server that finds its files in
/// use says so).
pub async fn stop_stale(pidfile: &Path, program: &str, signal: Signal) {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
        .and_then(Pid::from_raw)
    else {
        return;
    };
    let proc = PathBuf::from(format!("/proc/{}", pid.as_raw_nonzero()));
    let ours = std::fs::read(proc.join("cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(program));
    if !ours {
        return;
    }
    eprintln!(
        "stopping the private {program} an earlier `switchyard dev` left running (pid {})",
        pid.as_raw_nonzero()
    );
    let _ = rustix::process::kill_process(pid, signal);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while proc.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
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
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
