//! Test harness: [`TestApp`] runs the API and a worker in-process against
//! the real PostgreSQL and Redis, each test with its own database and its
//! own Redis key prefix, and offers typed helpers to drive it over HTTP.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names the server where per-test databases are created; `TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`) the Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test tooling: a panic is the failure report, and its tasks end with the test runtime"
)]

pub mod clients;
pub mod proxy;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use switchyard_common::config::{Catalog, Config, Defaults};
use switchyard_common::db;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A catalog for tests: the scripted model without pauses.
pub const SCRIPTED_CATALOG: &str = r#"
[[providers]]
name = "scripted"
kind = "scripted"

[[agents]]
id = "assistant"
name = "Assistant"
provider = "scripted"
model = "scripted-1"
instructions = "You are a helpful assistant."
tools = ["current_time"]
"#;

/// Every wait in a test is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// The workspace's root folder.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A program some tests drive: from the variable `variable`, else at
/// `local` in the repository (where `scripts/install-test-tools.sh` puts
/// it), else on the PATH; `None` when none has it.
pub fn find_tool(variable: &str, local: Option<&str>, name: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(path.into());
    }
    if let Some(local) = local.map(|l| repo().join(l))
        && local.is_file()
    {
        return Some(local);
    }
    on_path(name)
}

/// `name` in one of the PATH's folders.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The PostgreSQL server tests create their databases on (`TEST_DATABASE_URL`).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis server tests use (`TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One event of a run's SSE stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// The system under test.
pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub redis: redis::aio::MultiplexedConnection,
    pub config: Arc<Config>,
    database: String,
    shutdown: CancellationToken,
}

/// How to start a [`TestApp`].
pub struct Options {
    /// The catalog TOML.
    pub catalog: String,
    /// Start a worker too (otherwise runs stay queued).
    pub worker: bool,
    /// Extra environment-style settings (`SWITCHYARD_…`).
    pub env: Vec<(&'static str, String)>,
    /// Reach PostgreSQL through this address (a [`proxy::Proxy`]).
    pub postgres_via: Option<SocketAddr>,
    /// Reach Redis through this address (a [`proxy::Proxy`]).
    pub redis_via: Option<SocketAddr>,
}

impl Options {
    /// The scripted model pausing `chunk_delay_ms` between words, so that a
    /// run is still streaming when a test looks at it.
    pub fn slow_scripted(chunk_delay_ms: u64) -> Self {
        Self {
            catalog: SCRIPTED_CATALOG.replace(
                "kind = \"scripted\"",
                &format!("kind = \"scripted\"\nchunk_delay_ms = {chunk_delay_ms}"),
            ),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            catalog: SCRIPTED_CATALOG.to_owned(),
            worker: true,
            env: Vec::new(),
            postgres_via: None,
            redis_via: None,
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        switchyard_common::telemetry::init_with_default("warn,sqlx=error");
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let database = format!("sy_test_{suffix}");
        let admin = PgConnectOptions::from_str(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        let mut conn = admin.connect().await.expect("PostgreSQL is reachable");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {database}")))
            .execute(&mut conn)
            .await
            .expect("creating the test database");
        conn.close().await.ok();
        let mut server = admin.clone().database(&database);
        if let Some(via) = options.postgres_via {
            server = server.host(&via.ip().to_string()).port(via.port());
        }
        let database_url = server.to_url_lossy().to_string();
        let redis = match options.redis_via {
            Some(via) => format!("redis://{via}"),
            None => redis_url(),
        };

        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis),
            ("SWITCHYARD_REDIS_PREFIX", format!("sytest:{suffix}")),
            ("SWITCHYARD_LISTEN", "127.0.0.1:0".into()),
            ("SWITCHYARD_DB_POOL", "8".into()),
            // Requests without credentials act as `local`, unless a test
            // names other authenticators.
            ("SWITCHYARD_AUTH", "dev".into()),
        ];
        env.extend(options.env);
        let mut config = Config::from_lookup(Defaults::default(), |name| {
            env.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test configuration is valid");
        config.catalog = Catalog::parse(&options.catalog, std::path::Path::new("test catalog"))
            .expect("test catalog is valid");
        let config = Arc::new(config);

        let pool = db::connect(&config.database_url, config.db_pool_size)
            .await
            .expect("connecting");
        db::migrate(&pool).await.expect("migrating");

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        if options.worker {
            let worker =
                switchyard_worker::Worker::start(config.clone(), pool.clone(), shutdown.clone())
                    .await
                    .expect("starting the worker");
            tasks.spawn(worker.wait());
        }
        let state = switchyard_api::AppState::new(
            config.clone(),
            pool.clone(),
            TaskTracker::new(),
            shutdown.clone(),
        )
        .await
        .expect("building the API state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let address = format!("http://{}", listener.local_addr().expect("bound"));
        tasks.spawn(switchyard_api::serve(listener, state));

        let redis = switchyard_common::redis_conn::client(&redis_url())
            .expect("TEST_REDIS_URL is a URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is reachable");
        Self {
            address,
            http: reqwest::Client::new(),
            pool,
            redis,
            config,
            database,
            shutdown,
        }
    }

    /// Start a worker on this app's configuration, for an app spawned
    /// without one (runs created before wait in the queue until then).
    pub async fn start_worker(&self) {
        let worker = switchyard_worker::Worker::start(
            self.config.clone(),
            self.pool.clone(),
            self.shutdown.clone(),
        )
        .await
        .expect("starting the worker");
        tokio::spawn(worker.wait());
    }

    /// An HTTP client that sends `Authorization: Bearer <token>`.
    pub fn client_with_token(&self, token: &str) -> reqwest::Client {
        self.client_with_headers(&[("authorization", &format!("Bearer {token}"))])
    }

    /// An HTTP client that sends these headers on every request.
    pub fn client_with_headers(&self, headers: &[(&'static str, &str)]) -> reqwest::Client {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                *name,
                reqwest::header::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        reqwest::Client::builder()
            .default_headers(map)
            .build()
            .expect("an HTTP client")
    }

    /// The one number `sql` (a `select count(*) …`) answers in this app's
    /// database.
    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("counting rows")
    }

    /// A new API key of the API-key user `user`.
    pub async fn api_key(&self, user: &str, admin: bool) -> String {
        let grants = db::api_keys::KeyGrants {
            admin,
            service: false,
        };
        db::api_keys::create(&self.pool, user, grants)
            .await
            .expect("creating an API key")
            .1
    }

    /// A new service key of the API-key user `service`: its requests may
    /// name the end user they act for.
    pub async fn service_key(&self, service: &str) -> String {
        let grants = db::api_keys::KeyGrants {
            admin: false,
            service: true,
        };
        db::api_keys::create(&self.pool, service, grants)
            .await
            .expect("creating a service key")
            .1
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Every Redis key this app wrote.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.redis.clone();
        let pattern = format!("{}:*", self.config.redis_prefix);
        let mut keys = Vec::new();
        let mut iter: redis::AsyncIter<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter_async(&mut conn)
            .await
            .expect("scanning Redis");
        while let Some(key) = iter.next_item().await {
            keys.push(key.expect("a key"));
        }
        keys
    }

    /// Delete every Redis key of this app: as if the cache were flushed.
    pub async fn flush_redis(&self) {
        let keys = self.redis_keys().await;
        let mut conn = self.redis.clone();
        for key in keys {
            let _: () = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("deleting");
        }
    }

    /// Send a request and return the status and JSON body.
    pub async fn call(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(self.http.put(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(self.http.delete(self.url(path))).await
    }

    pub async fn create_thread(&self, body: Value) -> Value {
        let (status, thread) = self.post("/v1/threads", body).await;
        assert_eq!(status, 201, "{thread}");
        thread
    }

    /// Start a run (not streamed) and return it.
    pub async fn start_run(&self, thread_id: &str, content: &str) -> Value {
        let (status, run) = self
            .post(
                &format!("/v1/threads/{thread_id}/runs"),
                json!({"input": {"content": content}}),
            )
            .await;
        assert_eq!(status, 202, "{run}");
        run
    }

    /// Start a run in a new thread and read its events to the end; returns
    /// the finished run and its events.
    pub async fn run_to_end(&self, content: &str) -> (Value, Vec<SseEvent>) {
        let thread = self.create_thread(json!({})).await;
        let run = self
            .start_run(thread["id"].as_str().expect("a thread id"), content)
            .await;
        let run_id = run["id"].as_str().expect("a run id");
        let events = self.stream_events(run_id, None, None).await;
        (self.wait_for_run(run_id).await, events)
    }

    /// Read a run's event stream to its end (or `limit` events).
    pub async fn stream_events(
        &self,
        run_id: &str,
        last_event_id: Option<i64>,
        limit: Option<usize>,
    ) -> Vec<SseEvent> {
        let mut request = self
            .http
            .get(self.url(&format!("/v1/runs/{run_id}/events")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("the API answers");
        assert_eq!(response.status(), 200);
        read_sse(response, limit).await
    }

    /// Wait until a run reaches a terminal status; returns it.
    pub async fn wait_for_run(&self, run_id: &str) -> Value {
        self.wait_for_run_as(&self.http, run_id).await
    }

    /// [`TestApp::wait_for_run`] for the user `client` authenticates.
    pub async fn wait_for_run_as(&self, client: &reqwest::Client, run_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, run) = self
                .call(client.get(self.url(&format!("/v1/runs/{run_id}"))))
                .await;
            assert_eq!(status, 200, "{run}");
            if ["completed", "failed", "cancelled"]
                .contains(&run["status"].as_str().unwrap_or_default())
            {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not finish: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A catalog of one `openai` provider, `llm`, at `base_url`, and one agent,
/// `assistant`, on it. `agent` holds the agent's other keys (`model`,
/// `tools`, …) and may go on with its sub-tables.
pub fn one_agent_catalog(base_url: &str, agent: &str) -> String {
    format!(
        r#"
[[providers]]
name = "llm"
kind = "openai"
base_url = "{base_url}"

[[agents]]
id = "assistant"
name = "Assistant"
provider = "llm"
{agent}"#
    )
}

/// The `data:` payloads of an SSE body, in order: the whole of what the
/// `data:`-only streams of the compatible surfaces say.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.trim_start().to_owned())
        .collect()
}

/// As [`sse_data`], each payload parsed as JSON.
pub fn sse_json(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .map(|data| serde_json::from_str(data).expect("each event is JSON"))
        .collect()
}

/// The text of a stream's `message.delta` events, concatenated.
pub fn deltas_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "message.delta")
        .map(|e| e.data["delta"].as_str().expect("delta text"))
        .collect()
}

/// Read SSE events from a response until the stream ends or `limit` events.
pub async fn read_sse(response: reqwest::Response, limit: Option<usize>) -> Vec<SseEvent> {
    let mut stream = response.bytes_stream().eventsource();
    let mut events = Vec::new();
    let read = async {
        while let Some(event) = stream.next().await {
            let event = event.expect("a well-formed SSE event");
            events.push(SseEvent {
                id: event.id.parse().expect("numeric event id"),
                event: event.event,
                data: serde_json::from_str(&event.data).expect("JSON data"),
            });
            if limit.is_some_and(|n| events.len() >= n) {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the event stream ends in time");
    events
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let database = self.database.clone();
        let prefix = self.config.redis_prefix.clone();
        // Clean up on a thread of its own: Drop cannot await.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnectOptions::from_str(&admin_url()).expect("URL").connect().await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {database} with (force)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
                if let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let script = redis::Script::new(
                        "local keys = redis.call('KEYS', ARGV[1]) for _, k in ipairs(keys) do redis.call('DEL', k) end return #keys",
                    );
                    let _: redis::RedisResult<i64> = script.arg(format!("{prefix}:*")).invoke_async(&mut conn).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The local provider's default model for tests, downloaded once into a
/// cache directory outside the repository (`SWITCHYARD_TEST_MODEL_DIR`,
/// else `switchyard-test-models` in the system's temporary directory) and
/// shared by every test run after. Panics, saying why, when it cannot be
/// had: tests of the local model never pass without it.
pub async fn local_model() -> std::path::PathBuf {
    static MODEL: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();
    MODEL
        .get_or_init(|| async {
            let dir = std::env::var("SWITCHYARD_TEST_MODEL_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| std::env::temp_dir().join("switchyard-test-models"));
            let index = std::env::var(switchyard_worker::models::INDEX_URL_ENV)
                .unwrap_or_else(|_| switchyard_worker::models::DEFAULT_INDEX_URL.to_owned());
            switchyard_worker::models::fetch(&dir, &index)
                .await
                .unwrap_or_else(|error| {
                    panic!("the local model is needed for this test and cannot be fetched: {error}")
                })
        })
        .await
        .clone()
}
