//! A private PostgreSQL: a cluster under the data directory, one per major
//! version (a cluster only opens with the major version that made it),
//! listening on a loopback port only, trusting local connections.

use std::path::Path;
use std::str::FromStr;

use rustix::process::Signal;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::server::{self, Launch, RunAs, Server};

/// Start PostgreSQL from the programs in `bin` with its cluster under
/// `dir`; the server, once it accepts queries as the user `postgres`.
pub async fn start(
    bin: &Path,
    dir: &Path,
    run_as: Option<&RunAs>,
    secret: &str,
) -> Result<Server, String> {
    let major = major_version(bin, run_as).await?;
    let cluster_root = dir.join(&major);
    server::server_dir(&cluster_root, run_as)?;
    let data = cluster_root.join("data");
    let log = cluster_root.join("postgres.log");
    if !data.join("PG_VERSION").is_file() {
        init(bin, &data, &log, run_as, secret).await?;
    } else {
        // A server a killed `dev` left running holds the cluster's lock.
        server::stop_stale(&data.join("postmaster.pid"), "postgres", Signal::INT).await;
    }
    // SIGINT is PostgreSQL's fast shutdown: sessions end, data is kept.
    let launch = Launch {
        name: "PostgreSQL",
        input: String::new(),
        stop_signal: Signal::INT,
        log,
    };
    let postgres = bin.join("postgres");
    let command = |port: u16| {
        let mut command = server::command(&postgres, run_as, &launch.log)?;
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            // TCP only: no socket file to place, whatever the user's rights.
            .args(["-c", "unix_socket_directories="]);
        Ok(command)
    };
    let ready = |port: u16| {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .password(secret)
            .database("postgres");
        async move {
            match options.connect().await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    true
                }
                Err(_) => false,
            }
        }
    };
    Server::start(&launch, command, ready).await
}

/// The URL of database `database` on a private server.
pub fn url(server: &Server, secret: &str, database: &str) -> String {
    format!(
        "postgres://postgres:{secret}@127.0.0.1:{}/{database}",
        server.port
    )
}

/// The database a URL names, `switchyard` when it names none.
pub fn database_of(url: &str) -> String {
    PgConnectOptions::from_str(url)
        .ok()
        .and_then(|o| o.get_database().map(str::to_owned))
        .unwrap_or_else(|| "switchyard".to_owned())
}

/// `postgres --version` says `postgres (PostgreSQL) 15.19 (Debian …)`.
async fn major_version(bin: &Path, run_as: Option<&RunAs>) -> Result<String, String> {
    let program = bin.join("postgres");
    let mut command = tokio::process::Command::new(&program);
    command.arg("--version");
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid).current_dir("/");
    }
    let output = command
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|version| version.split('.').next())
        .filter(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} --version said {text:?}", program.display()))
}

async fn init(
    bin: &Path,
    data: &Path,
    log: &Path,
    run_as: Option<&RunAs>,
    secret: &str,
) -> Result<(), String> {
    // initdb reads the superuser's password from a file, which its user
    // must be able to read.
    let pwfile = data.with_file_name("pwfile");
    write_private(&pwfile, secret, run_as)
        .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
    let status = server::command(&bin.join("initdb"), run_as, log)
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?
        .arg("-D")
        .arg(data)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .status()
        .await;
    let _ = std::fs::remove_file(&pwfile);
    let status = status.map_err(|e| format!("cannot run initdb: {e}"))?;
    if !status.success() {
        // A half-made cluster would be taken for a whole one next time.
        let _ = std::fs::remove_dir_all(data);
        return Err(format!(
            "initdb failed ({status}): {}",
            server::last_line(log)
        ));
    }
    Ok(())
}

/// Write `text` to a new file at `path` that only its owner (`run_as`,
/// else the current user) can read.
fn write_private(path: &Path, text: &str, run_as: Option<&RunAs>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Some(user) = run_as {
        std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))?;
    }
    file.write_all(text.as_bytes())
}
