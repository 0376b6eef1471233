//! The system under test: a fresh database, a fresh Redis key prefix, a
//! catalog pointing at the fake LLM, and `switchyard api` and
//! `switchyard worker` as two child processes on a free loopback port.
//!
//! [`Stack::up`] may fail half-way; [`Stack::down`] undoes whatever was
//! done and must always be called. Should the benchmark itself die, the
//! child processes are still killed when their handles drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// The agent every benchmark thread uses.
pub const AGENT_ID: &str = "bench";

/// How the stack is set up.
pub struct StackConfig {
    pub bin: PathBuf,
    /// `postgres://user@host:port`, without a database.
    pub postgres: String,
    pub redis: String,
    pub worker_concurrency: Option<usize>,
    /// Query string appended to the servers' `DATABASE_URL`, e.g. `sslmode=disable`.
    pub pg_url_options: Option<String>,
    /// `name=value` settings of the database (`ALTER DATABASE … SET`).
    pub pg_settings: Vec<String>,
    pub startup_timeout: Duration,
    /// Keep the database, the Redis keys and the logs afterwards.
    pub keep: bool,
}

/// A child process with its log file; killed when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // std can only send SIGKILL; ask politely first through kill(1).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("  {} did not stop within {grace:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One instance of the system under test.
pub struct Stack {
    pub id: String,
    pub dir: PathBuf,
    pub db_name: String,
    pub database_url: String,
    pub redis_prefix: String,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub api: Option<Proc>,
    pub worker: Option<Proc>,
    admin_url: String,
    db_created: bool,
    config: StackConfig,
}

/// A name unique enough for a database and a key prefix.
fn unique_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log file, without terminal colours, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| strip_ansi(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Stack {
    pub fn new(config: StackConfig) -> Self {
        let id = unique_id();
        let base = config.postgres.trim_end_matches('/').to_owned();
        let db_name = format!("switchyard_bench_{id}");
        Self {
            dir: std::env::temp_dir().join(format!("switchyard-bench-{id}")),
            database_url: match &config.pg_url_options {
                Some(options) => format!("{base}/{db_name}?{}", options.trim_start_matches('?')),
                None => format!("{base}/{db_name}"),
            },
            admin_url: format!("{base}/postgres"),
            redis_prefix: format!("sybench-{id}"),
            base_url: String::new(),
            api: None,
            worker: None,
            db_name,
            db_created: false,
            id,
            config,
        }
    }

    /// Create everything and start both processes; returns once `/ready`
    /// answers 200.
    pub async fn up(&mut self, fake_base_url: &str) -> anyhow::Result<()> {
        if !self.config.bin.is_file() {
            bail!(
                "{} does not exist; build it first: cargo build --release -p switchyard -p switchyard-bench",
                self.config.bin.display()
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let catalog = self.dir.join("catalog.toml");
        std::fs::write(&catalog, catalog_toml(fake_base_url)).context("writing the catalog")?;

        let mut admin = tokio::time::timeout(
            Duration::from_secs(10),
            PgConnection::connect(&self.admin_url),
        )
        .await
        .context("connecting to PostgreSQL timed out")?
        .with_context(|| format!("connecting to {}", self.admin_url))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "create database \"{}\"",
            self.db_name
        )))
        .execute(&mut admin)
        .await
        .context("creating the database")?;
        self.db_created = true;
        for setting in &self.config.pg_settings {
            let Some((name, value)) = setting.split_once('=') else {
                bail!("--pg-set {setting:?}: expected name=value");
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                bail!("--pg-set {setting:?}: not a setting name");
            }
            let value = value.trim().replace('\'', "''");
            sqlx::raw_sql(AssertSqlSafe(format!(
                "alter database \"{}\" set {name} = '{value}'",
                self.db_name
            )))
            .execute(&mut admin)
            .await
            .with_context(|| format!("--pg-set {setting}"))?;
        }
        admin.close().await?;

        let port = free_port()?;
        self.base_url = format!("http://127.0.0.1:{port}");
        let command = |sub: &str| -> anyhow::Result<(Command, PathBuf)> {
            let log = self.dir.join(format!("{sub}.log"));
            let out = File::create(&log)?;
            let mut cmd = Command::new(&self.config.bin);
            cmd.arg(sub)
                .env("DATABASE_URL", &self.database_url)
                .env("REDIS_URL", &self.config.redis)
                .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
                .env("SWITCHYARD_REDIS_PREFIX", &self.redis_prefix)
                .env("SWITCHYARD_CONFIG", &catalog)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            if let Some(n) = self.config.worker_concurrency {
                cmd.env("SWITCHYARD_WORKER_CONCURRENCY", n.to_string());
            }
            Ok((cmd, log))
        };

        let (mut migrate, log) = command("migrate")?;
        let mut child = migrate.spawn().context("starting `switchyard migrate`")?;
        let deadline = Instant::now() + self.config.startup_timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`switchyard migrate` did not finish in time");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !status.success() {
            bail!(
                "`switchyard migrate` failed ({status}):\n{}",
                tail(&log, 20)
            );
        }

        for (name, sub) in [("api", "api"), ("worker", "worker")] {
            let (mut cmd, log) = command(sub)?;
            let child = cmd
                .spawn()
                .with_context(|| format!("starting `switchyard {sub}`"))?;
            let proc = Some(Proc { name, child, log });
            match name {
                "api" => self.api = proc,
                _ => self.worker = proc,
            }
        }
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/ready", self.base_url);
        let deadline = Instant::now() + self.config.startup_timeout;
        loop {
            for proc in [self.api.as_mut(), self.worker.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(status) = proc.exited() {
                    bail!(
                        "`switchyard {}` exited during start-up ({status}):\n{}",
                        proc.name,
                        tail(&proc.log, 20)
                    );
                }
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self
                    .api
                    .as_ref()
                    .map(|p| tail(&p.log, 20))
                    .unwrap_or_default();
                bail!(
                    "{url} did not answer 200 within {:?}:\n{log}",
                    self.config.startup_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether both processes are still running; the first that is not, with its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for proc in [self.api.as_mut(), self.worker.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(status) = proc.exited() {
                bail!(
                    "`switchyard {}` exited ({status}):\n{}",
                    proc.name,
                    tail(&proc.log, 20)
                );
            }
        }
        Ok(())
    }

    pub fn pids(&self) -> Option<(u32, u32)> {
        Some((self.api.as_ref()?.pid(), self.worker.as_ref()?.pid()))
    }

    /// Stop the processes, drop the database, delete the Redis keys and
    /// the temporary directory. Every step is bounded and best-effort.
    pub async fn down(&mut self, keep_logs: bool) {
        for proc in [self.api.as_mut(), self.worker.as_mut()]
            .into_iter()
            .flatten()
        {
            proc.stop(Duration::from_secs(10)).await;
        }
        let keep = self.config.keep;
        if self.db_created && !keep {
            let dropped = tokio::time::timeout(Duration::from_secs(30), async {
                let mut admin = PgConnection::connect(&self.admin_url).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "drop database if exists \"{}\" with (force)",
                    self.db_name
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
            .await;
            match dropped {
                Ok(Ok(())) => self.db_created = false,
                Ok(Err(e)) => eprintln!("  could not drop database {}: {e}", self.db_name),
                Err(_) => eprintln!("  dropping database {} timed out", self.db_name),
            }
        }
        if !keep {
            let deleted = tokio::time::timeout(
                Duration::from_secs(30),
                delete_keys(&self.config.redis, &self.redis_prefix),
            )
            .await;
            match deleted {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    eprintln!("  could not delete Redis keys {}:*: {e}", self.redis_prefix)
                }
                Err(_) => eprintln!("  deleting Redis keys {}:* timed out", self.redis_prefix),
            }
        }
        if !self.dir.exists() {
            return;
        }
        if keep || keep_logs {
            eprintln!("  logs kept in {}", self.dir.display());
            if keep {
                eprintln!(
                    "  database {} and Redis keys {}:* kept",
                    self.db_name, self.redis_prefix
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Delete every key under `{prefix}:`; returns how many.
async fn delete_keys(redis_url: &str, prefix: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len();
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// One OpenAI-compatible provider at the fake, one agent on it, no tools.
fn catalog_toml(fake_base_url: &str) -> String {
    format!(
        r#"# Written by switchyard-bench.
[[providers]]
name = "fake"
kind = "openai"
base_url = "{fake_base_url}"
timeout_secs = 30
max_attempts = 1

[[agents]]
id = "{AGENT_ID}"
name = "Benchmark"
description = "An agent on the benchmark's fake LLM."
provider = "fake"
model = "fake-bench"
instructions = "You are a benchmark."
"#
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "2026  INFO x"
        );
    }
}
