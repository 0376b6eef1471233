//! A private PostgreSQL: a cluster under the data directory, one per major
//! version (a cluster only opens with the major version that made it),
//! listening on a loopback port only, trusting local connections.

use std::path::Path;
use std::str::FromStr;

use rustix::process::Signal;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::server::{self, RunAs, Server};

/// Start PostgreSQL from the programs in `bin` with its cluster under
/// `dir`; the server, once it accepts queries as the user `postgres`.
pub async fn start(bin: &Path, dir: &Path, run_as: Option<&RunAs>) -> Result<Server, String> {
    let major = major_version(bin).await?;
    let cluster_root = dir.join(&major);
    std::fs::create_dir_all(&cluster_root)
        .map_err(|e| format!("cannot create {}: {e}", cluster_root.display()))?;
    let data = cluster_root.join("data");
    let log = cluster_root.join("postgres.log");
    if let Some(user) = run_as {
        user.own(&cluster_root).map_err(|e| {
            format!(
                "cannot give {} to the user {}: {e}",
                cluster_root.display(),
                user.name
            )
        })?;
    }
    if !data.join("PG_VERSION").is_file() {
        init(bin, &data, &log, run_as).await?;
    }
    let port = server::free_port().map_err(|e| format!("no free port: {e}"))?;
    let mut command = server::command(&bin.join("postgres"), run_as, &log)
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    command
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        // TCP only: no socket file to place, whatever the user's rights.
        .args(["-c", "unix_socket_directories="]);
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database("postgres");
    // SIGINT is PostgreSQL's fast shutdown: sessions end, data is kept.
    Server::start("PostgreSQL", command, port, Signal::INT, log, || {
        let options = options.clone();
        async move {
            match options.connect().await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await
}

/// The URL of database `database` on a private server.
pub fn url(server: &Server, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{database}", server.port)
}

/// The database a URL names, `switchyard` when it names none.
pub fn database_of(url: &str) -> String {
    PgConnectOptions::from_str(url)
        .ok()
        .and_then(|o| o.get_database().map(str::to_owned))
        .unwrap_or_else(|| "switchyard".to_owned())
}

/// `postgres --version` says `postgres (PostgreSQL) 15.19 (Debian …)`.
async fn major_version(bin: &Path) -> Result<String, String> {
    let program = bin.join("postgres");
    let output = tokio::process::Command::new(&program)
        .arg("--version")
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

async fn init(bin: &Path, data: &Path, log: &Path, run_as: Option<&RunAs>) -> Result<(), String> {
    let status = server::command(&bin.join("initdb"), run_as, log)
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .status()
        .await
        .map_err(|e| format!("cannot run initdb: {e}"))?;
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
