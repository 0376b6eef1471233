//! Switchyard deployed as separate processes on a database and Redis prefix
//! of their own, for the tests that start `switchyard api` and `switchyard
//! worker` for real. Each test binary uses a part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::{SseEvent, admin_url, read_sse, redis_url};

/// A slow offline model: a run streams for several seconds.
pub const CATALOG: &str = r#"
[[providers]]
name = "scripted"
kind = "scripted"
chunk_delay_ms = 250

[[agents]]
id = "assistant"
name = "Assistant"
provider = "scripted"
model = "scripted-1"
"#;

/// A database, a Redis prefix, a catalog file and the processes on them;
/// everything is killed and removed when dropped.
pub struct Deployment {
    pub database: String,
    pub database_url: String,
    pub prefix: String,
    pub catalog: std::path::PathBuf,
    pub address: String,
    /// The API first, then the workers.
    pub processes: Vec<Child>,
    pub http: reqwest::Client,
    /// Extra environment of every process.
    pub env: Vec<(String, String)>,
}

impl Deployment {
    pub async fn start() -> Self {
        Self::with_catalog(CATALOG).await
    }

    pub async fn with_catalog(catalog_text: &str) -> Self {
        Self::with_catalog_and_env(catalog_text, &[]).await
    }

    /// A deployment whose every process also gets `env`.
    pub async fn with_catalog_and_env(catalog_text: &str, env: &[(&str, &str)]) -> Self {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let database = format!("sy_proc_{suffix}");
        let admin = admin_url();
        let mut conn = connect_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {database}")))
            .execute(&mut conn)
            .await
            .expect("creating the database");
        let database_url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => panic!("TEST_DATABASE_URL has no database part"),
        };
        let catalog = std::env::temp_dir().join(format!("switchyard-{suffix}.toml"));
        std::fs::write(&catalog, catalog_text).expect("writing the catalog");
        let port = free_port();
        let mut deployment = Self {
            database,
            database_url,
            prefix: format!("syproc:{suffix}"),
            catalog,
            address: format!("http://127.0.0.1:{port}"),
            processes: Vec::new(),
            http: reqwest::Client::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let status = deployment
            .command("migrate")
            .status()
            .expect("running switchyard migrate");
        assert!(status.success());
        let api = deployment
            .command("api")
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .expect("starting switchyard api");
        deployment.processes.push(api);
        deployment.wait_ready().await;
        deployment
    }

    pub fn command(&self, role: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .arg(role)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", redis_url())
            .env("SWITCHYARD_REDIS_PREFIX", &self.prefix)
            .env("SWITCHYARD_CONFIG", &self.catalog)
            // Requests without credentials act as the development user.
            .env("SWITCHYARD_AUTH", "dev")
            // One machine, no cluster: the sweeper's lock is PostgreSQL's.
            .env("SWITCHYARD_SWEEPER_LEADER", "postgres")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn start_worker(&mut self) -> usize {
        self.start_worker_with(&[])
    }

    pub fn start_worker_with(&mut self, env: &[(&str, &str)]) -> usize {
        let child = self
            .command("worker")
            .envs(env.iter().copied())
            .spawn()
            .expect("starting switchyard worker");
        self.processes.push(child);
        self.processes.len() - 1
    }

    pub fn kill(&mut self, process: usize) {
        // SIGKILL: no shutdown, no cleanup, as when a node dies.
        self.processes[process].kill().expect("killing the process");
        self.processes[process].wait().ok();
    }

    /// SIGTERM, as Kubernetes stops a pod; returns the exit status.
    pub fn terminate(&mut self, process: usize, within: Duration) -> std::process::ExitStatus {
        assert!(sigterm(&self.processes[process]), "sending SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.processes[process].try_wait().expect("waiting") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start a slow run on a new thread and wait until it streams; its id.
    pub async fn streaming_run(&self) -> String {
        let thread = self.post("/v1/threads", json!({})).await;
        let thread_id = thread["id"].as_str().unwrap();
        let run = self
            .post(
                &format!("/v1/threads/{thread_id}/runs"),
                json!({"input": {"content": "Tell me everything about lighthouses"}}),
            )
            .await;
        let run_id = run["id"].as_str().unwrap().to_owned();
        let first = self.events(&run_id, 0, Some(3)).await;
        assert_eq!(first[2].event, "message.delta");
        run_id
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if is_ready(&self.http, &self.address).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the API did not become ready");
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .expect("the API answers");
        response.json().await.expect("a JSON body")
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the API answers");
        response.json().await.expect("a JSON body")
    }

    /// Read a run's events after `after`, up to `limit` of them.
    pub async fn events(&self, run_id: &str, after: i64, limit: Option<usize>) -> Vec<SseEvent> {
        let response = self
            .http
            .get(format!("{}/v1/runs/{run_id}/events", self.address))
            .header("Last-Event-ID", after.to_string())
            .send()
            .await
            .expect("the API answers");
        read_sse(response, limit).await
    }

    pub async fn wait_for_run(&self, run_id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let run = self.get(&format!("/v1/runs/{run_id}")).await;
            if ["completed", "failed", "cancelled"].contains(&run["status"].as_str().unwrap_or(""))
            {
                return run;
            }
            assert!(Instant::now() < deadline, "run did not finish: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in &mut self.processes {
            child.kill().ok();
            child.wait().ok();
        }
        std::fs::remove_file(&self.catalog).ok();
        let database = self.database.clone();
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(remove_database_and_keys(&database, &prefix));
        });
        cleanup.join().ok();
    }
}

/// Drop a deployment's database and delete its Redis keys.
pub async fn remove_database_and_keys(database: &str, prefix: &str) {
    remove_database(database).await;
    if let Ok(client) = redis::Client::open(redis_url())
        && let Ok(mut redis) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut redis)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut redis).await;
        }
    }
}

/// Drop the test's database on the test server, if it exists.
pub async fn remove_database(database: &str) {
    let mut conn = connect_admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop database if exists {database} with (force)"
    )))
    .execute(&mut conn)
    .await
    .ok();
}

pub async fn connect_admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("PostgreSQL is reachable")
}

/// Whether the API at `address` answers `GET /ready` with success.
pub async fn is_ready(http: &reqwest::Client, address: &str) -> bool {
    http.get(format!("{address}/ready"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Send SIGTERM to `child`, as Kubernetes or Ctrl-C stops a process;
/// whether it was sent.
pub fn sigterm(child: &Child) -> bool {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
