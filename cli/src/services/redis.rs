//! A private Redis on a loopback port. It keeps nothing on disk: what
//! Switchyard puts in Redis is a cache, event streams already stored in
//! PostgreSQL, and queue tickets that the workers push again for every
//! queued run (see `switchyard_common::queue`).

use std::path::Path;

use rustix::process::Signal;

use super::server::{self, Launch, RunAs, Server};

/// Start `redis-server` with its working directory `dir`.
pub async fn start(
    program: &Path,
    dir: &Path,
    run_as: Option<&RunAs>,
    secret: &str,
) -> Result<Server, String> {
    server::server_dir(dir, run_as)?;
    let log = dir.join("redis.log");
    let pidfile = dir.join("redis.pid");
    // One a killed `dev` left running would hold its port and memory forever.
    let program_name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    server::stop_stale(&pidfile, &program_name, Signal::TERM).await;
    let launch = Launch {
        name: "Redis",
        input: format!("requirepass {secret}\n"),
        stop_signal: Signal::TERM,
        log,
    };
    let command = |port: u16| {
        let mut command = server::command(program, run_as, &launch.log)?;
        // `-`: the configuration is read from stdin, so that the password
        // is not on a command line every local user can read.
        command
            .stdin(std::process::Stdio::piped())
            .arg("-")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--dir")
            .arg(dir);
        Ok(command)
    };
    let ready = |port: u16| {
        let url = format!("redis://:{secret}@127.0.0.1:{port}");
        async move { ping(&url).await }
    };
    Server::start(&launch, command, ready).await
}

/// The URL of a private Redis.
pub fn url(server: &Server, secret: &str) -> String {
    format!("redis://:{secret}@127.0.0.1:{}", server.port)
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok()
}
