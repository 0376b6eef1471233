//! The system under test: a fresh database, a fresh Redis key prefix, a
//! catalog pointing at the fake LLM, and `switchyard api` and one or more
//! `switchyard worker` processes as children, on a free loopback port.
//!
//! Every worker process gets a name (`worker-1`, `worker-2`, … in start
//! order, replacements included) and sends it to the LLM in the
//! [`WORKER_HEADER`] header, so that the fake's records tell which process
//! ran which attempt of a run.
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

/// The request header naming the worker process that called the LLM.
pub const WORKER_HEADER: &str = "x-switchyard-bench-worker";

/// How the stack is set up.
pub struct StackConfig {
    pub bin: PathBuf,
    /// `postgres://user@host:port`, without a database.
    pub postgres: String,
    pub redis: String,
    /// Worker processes to start (at least one).
    pub workers: usize,
    pub worker_concurrency: Option<usize>,
    /// Query string appended to the servers' `DATABASE_URL`, e.g. `sslmode=disable`.
    pub pg_url_options: Option<String>,
    /// `name=value` settings of the database (`ALTER DATABASE … SET`).
    pub pg_settings: Vec<String>,
    pub startup_timeout: Duration,
    /// Keep the database, the Redis keys and the logs afterwards.
    pub keep: bool,
    /// TOML appended to the catalog (e.g. a `[limits]` table).
    pub catalog_extra: String,
}

/// A child process with its log file; killed when dropped.
pub struct Proc {
    /// `api`, or the worker's name (see [`WORKER_HEADER`]).
    pub name: String,
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

    /// Ask the process to stop (SIGTERM), without waiting.
    fn terminate(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // std can only send SIGKILL; ask politely through kill(1).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait until `deadline` for the process to exit after
    /// [`Proc::terminate`], then SIGKILL it.
    async fn wait_or_kill(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("  {} did not stop in time; killing it", self.name);
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// A worker killed by [`Stack::kill_worker`].
#[derive(Debug, Clone)]
pub struct Killed {
    pub name: String,
    pub pid: u32,
    /// Just before the signal was sent.
    pub at: Instant,
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
    /// Worker slots, in start order; a restarted slot holds the replacement.
    pub workers: Vec<Proc>,
    /// Workers started so far, replacements included: numbers their names.
    workers_started: usize,
    /// The fake LLM's base URL, for the catalogs of replacement workers.
    fake_base_url: String,
    port: u16,
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

/// Whether `url` names a loopback host: the stack creates and drops
/// databases and deletes keys, so it only talks to local servers.
pub fn is_loopback(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(url) => matches!(
            url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        ),
        Err(_) => false,
    }
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
            workers: Vec::new(),
            workers_started: 0,
            fake_base_url: String::new(),
            port: 0,
            db_name,
            db_created: false,
            id,
            config,
        }
    }

    /// Create everything and start the processes; returns once `/ready`
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
        self.fake_base_url = fake_base_url.to_owned();
        std::fs::write(
            self.catalog_path(None),
            catalog_toml(fake_base_url, None, &self.config.catalog_extra),
        )
        .context("writing the catalog")?;

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

        self.port = free_port()?;
        self.base_url = format!("http://127.0.0.1:{}", self.port);

        let (mut migrate, log) = self.command("migrate", None)?;
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

        let (mut cmd, log) = self.command("api", None)?;
        let child = cmd.spawn().context("starting `switchyard api`")?;
        self.api = Some(Proc {
            name: "api".to_owned(),
            child,
            log,
        });
        for _ in 0..self.config.workers.max(1) {
            let worker = self.start_worker()?;
            self.workers.push(worker);
        }
        self.wait_ready().await
    }

    /// The catalog of the api (`None`) or of one worker, by name.
    fn catalog_path(&self, worker: Option<&str>) -> PathBuf {
        match worker {
            Some(name) => self.dir.join(format!("catalog-{name}.toml")),
            None => self.dir.join("catalog.toml"),
        }
    }

    /// `switchyard <sub>` with the stack's environment, logging to
    /// `<dir>/<log name>.log`; `worker` names a worker process.
    fn command(&self, sub: &str, worker: Option<&str>) -> anyhow::Result<(Command, PathBuf)> {
        let log = self.dir.join(format!("{}.log", worker.unwrap_or(sub)));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.config.bin);
        cmd.arg(sub)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.config.redis)
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("SWITCHYARD_REDIS_PREFIX", &self.redis_prefix)
            .env("SWITCHYARD_CONFIG", self.catalog_path(worker))
            // The benchmark's requests carry no credentials.
            .env("SWITCHYARD_AUTH", "dev")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(n) = self.config.worker_concurrency {
            cmd.env("SWITCHYARD_WORKER_CONCURRENCY", n.to_string());
        }
        Ok((cmd, log))
    }

    /// Start one more worker process under the next name.
    fn start_worker(&mut self) -> anyhow::Result<Proc> {
        self.workers_started += 1;
        let name = format!("worker-{}", self.workers_started);
        std::fs::write(
            self.catalog_path(Some(&name)),
            catalog_toml(&self.fake_base_url, Some(&name), &self.config.catalog_extra),
        )
        .with_context(|| format!("writing the catalog of {name}"))?;
        let (mut cmd, log) = self.command("worker", Some(&name))?;
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `switchyard worker` ({name})"))?;
        Ok(Proc { name, child, log })
    }

    /// SIGKILL the worker in slot `index`, as a crash would: no shutdown,
    /// no goodbye to PostgreSQL or Redis.
    pub fn kill_worker(&mut self, index: usize) -> anyhow::Result<Killed> {
        let worker = self
            .workers
            .get_mut(index)
            .with_context(|| format!("no worker slot {index}"))?;
        let killed = Killed {
            name: worker.name.clone(),
            pid: worker.pid(),
            at: Instant::now(),
        };
        worker.kill();
        Ok(killed)
    }

    /// Start a new worker process in slot `index` (after
    /// [`Stack::kill_worker`]); returns its name.
    pub fn restart_worker(&mut self, index: usize) -> anyhow::Result<String> {
        if index >= self.workers.len() {
            bail!("no worker slot {index}");
        }
        let worker = self.start_worker()?;
        let name = worker.name.clone();
        // The old handle drops here: the process is dead and reaped already.
        self.workers[index] = worker;
        Ok(name)
    }

    /// The api and the workers.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.api.iter().chain(&self.workers)
    }

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.api.iter_mut().chain(&mut self.workers)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/ready", self.base_url);
        let deadline = Instant::now() + self.config.startup_timeout;
        loop {
            for proc in self.procs_mut() {
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

    /// Whether every process is still running; the first that is not, with its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for proc in self.procs_mut() {
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

    /// The api's pid and the first worker's.
    pub fn pids(&self) -> Option<(u32, u32)> {
        Some((self.api.as_ref()?.pid(), self.workers.first()?.pid()))
    }

    /// Stop the processes, drop the database, delete the Redis keys and
    /// the temporary directory. Every step is bounded and best-effort.
    pub async fn down(&mut self, keep_logs: bool) {
        // All at once: the workers drain their runs in parallel.
        for proc in self.procs_mut() {
            proc.terminate();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for proc in self.procs_mut() {
            proc.wait_or_kill(deadline).await;
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

/// One OpenAI-compatible provider at the fake, one agent on it, no tools;
/// a worker's copy names the worker in [`WORKER_HEADER`].
fn catalog_toml(fake_base_url: &str, worker: Option<&str>, extra: &str) -> String {
    let headers = worker.map_or_else(String::new, |name| {
        format!("headers = {{ \"{WORKER_HEADER}\" = \"{name}\" }}\n")
    });
    format!(
        r#"# Written by switchyard-bench.
[[providers]]
name = "fake"
kind = "openai"
base_url = "{fake_base_url}"
timeout_secs = 30
max_attempts = 1
{headers}
[[agents]]
id = "{AGENT_ID}"
name = "Benchmark"
description = "An agent on the benchmark's fake LLM."
provider = "fake"
model = "fake-bench"
instructions = "You are a benchmark."
{extra}"#
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
