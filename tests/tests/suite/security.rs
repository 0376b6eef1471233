//! The boundaries of SECURITY.md that no other suite owns: what agents
//! written over the API may reach.
//!
//! The rest of the security suite: `isolation.rs` (one user's resources
//! are invisible to another on every surface), `auth.rs` (forged and
//! expired credentials), `tools.rs` (the SSRF guard of `http_request`),
//! `inputs.rs` (NUL and bounds at the door), `limits.rs` (rates, streams
//! and budgets).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_tests::{Options, SCRIPTED_CATALOG, TestApp};

/// A listener that counts the connections it gets and answers none.
async fn listener() -> (String, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("{port}"), connections)
}

fn app_with_policy(policy: &str) -> Options {
    Options {
        catalog: format!("{SCRIPTED_CATALOG}\n[api_agents]\n{policy}\n"),
        ..Options::default()
    }
}

fn relay(url: &str, headers_env: Value) -> Value {
    json!({"id": "relay", "name": "Relay", "model": "relay-1",
           "workflow": {"kind": "http", "upstream": {
               "url": url, "protocol": "ai-sdk", "headers_env": headers_env, "timeout_secs": 5}}})
}

fn with_tools(settings: Value) -> Value {
    let tools: Vec<&String> = settings.as_object().unwrap().keys().collect();
    json!({"id": "reader", "name": "Reader", "provider": "scripted", "model": "scripted-1",
           "tools": tools, "tool_settings": settings})
}

async fn refused(app: &TestApp, body: Value, expected: &str) {
    let (status, answer) = app.post("/v1/agents", body.clone()).await;
    assert_eq!(status, 422, "{body}: {answer}");
    assert_eq!(answer["error"]["code"], "validation_failed", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(expected), "{body}: {message}");
}

#[tokio::test]
async fn agents_written_over_the_api_reach_only_what_the_operator_allows() {
    let (port, connections) = listener().await;
    let app = TestApp::spawn_with(app_with_policy(
        "env = [\"PARTNER_TOKEN\"]\nhosts = [\"localhost\", \"*.partner.example\"]",
    ))
    .await;
    let loopback = format!("http://127.0.0.1:{port}/api/chat");
    // The server's secrets, as headers to an upstream or as the SQL tool's
    // database, whatever the host.
    for secret in ["DATABASE_URL", "REDIS_URL", "SWITCHYARD_OIDC_ISSUER"] {
        refused(
            &app,
            relay(
                "https://chat.partner.example/api",
                json!({ "x-db": secret }),
            ),
            &format!("{secret:?} is not one of them"),
        )
        .await;
        refused(
            &app,
            with_tools(json!({"sql_query": {"database_url_env": secret}})),
            &format!("{secret:?} is not one of them"),
        )
        .await;
    }
    // Hosts beyond the list, private addresses, and tools asking for them.
    refused(
        &app,
        relay(&loopback, json!({})),
        "\"127.0.0.1\" is not among",
    )
    .await;
    refused(
        &app,
        relay("https://evil.example/api", json!({})),
        "\"evil.example\" is not among",
    )
    .await;
    refused(
        &app,
        with_tools(json!({"http_request": {"allow_hosts": ["*.example"]}})),
        "\"*.example\" is not among",
    )
    .await;
    refused(
        &app,
        with_tools(json!({"http_request": {"allow_hosts": ["localhost"], "allow_private": true}})),
        "allow_private",
    )
    .await;
    let (_, agents) = app.get("/v1/agents").await;
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["assistant"], "nothing was written");

    // What the policy lists is accepted …
    let (status, body) = app
        .post(
            "/v1/agents",
            relay(
                "https://chat.partner.example/api",
                json!({"authorization": "PARTNER_TOKEN"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.delete("/v1/agents/relay").await.0, 204);
    let (status, body) = app
        .post(
            "/v1/agents",
            with_tools(json!({"http_request": {"allow_hosts": ["api.partner.example"]}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // … and a listed name is still checked where it is connected to: no
    // private address without allow_private.
    let (status, body) = app
        .post(
            "/v1/agents",
            relay(&format!("http://localhost:{port}/api/chat"), json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let thread = app.create_thread(json!({"agent_id": "relay"})).await;
    let run = app.start_run(thread["id"].as_str().unwrap(), "Hi").await;
    let run = app.wait_for_run(run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("loopback"), "{run}");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no request reached the loopback listener"
    );
}

#[tokio::test]
async fn agents_stored_before_the_policy_tightened_do_not_run() {
    let (port, connections) = listener().await;
    let app = TestApp::spawn().await;
    // Written when the deployment allowed it (or straight into the table):
    // the worker checks again before it runs the agent.
    let spec: switchyard_common::domain::AgentSpec = serde_json::from_value(relay(
        &format!("http://127.0.0.1:{port}/api/chat"),
        json!({"x-db": "DATABASE_URL"}),
    ))
    .unwrap();
    switchyard_common::db::agents::create(&app.pool, &spec)
        .await
        .unwrap()
        .unwrap();
    let thread = app.create_thread(json!({"agent_id": "relay"})).await;
    let run = app.start_run(thread["id"].as_str().unwrap(), "Hi").await;
    let run = app.wait_for_run(run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "agent_unavailable", "{run}");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no longer keeps within") && message.contains("DATABASE_URL"),
        "{message}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

/// A server answering every GET with a body holding NUL characters.
async fn nul_server() -> String {
    let app = axum::Router::new().route("/data", axum::routing::get(|| async { "row\0one\0" }));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(socket, app).await });
    format!("http://{address}/data")
}

#[tokio::test]
async fn nul_in_model_and_tool_output_is_made_safe_not_fatal() {
    use switchyard_fake_llm::{FakeLlm, Reply};
    let fake = FakeLlm::start().await;
    let url = nul_server().await;
    let arguments = json!({ "url": url, "headers": {"x-note": "a"} }).to_string();
    fake.push(Reply::tool_call(
        "call\u{0}1",
        "http_request",
        &[&arguments],
        None,
    ));
    fake.push(Reply::text(&["It says ", "row\u{0}one."], Some((10, 3))));
    let catalog = switchyard_tests::one_agent_catalog(
        &fake.base_url(),
        "model = \"m\"\ntools = [\"http_request\"]\n\
         [agents.tool_settings.http_request]\nallow_hosts = [\"127.0.0.1\"]\nallow_private = true\n",
    );
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Options::default()
    })
    .await;
    let (run, events) = app.run_to_end("What does it say?").await;
    assert_eq!(run["status"], "completed", "{run}");
    let finished = events
        .iter()
        .find(|e| e.event == "tool.finished")
        .expect("the tool ran");
    assert_eq!(
        finished.data["result"]["body"], "row\u{FFFD}one\u{FFFD}",
        "{:?}",
        finished.data
    );
    let thread_id = run["thread_id"].as_str().unwrap();
    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    let answer = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .expect("the answer is stored");
    assert_eq!(answer["content"], "It says row\u{FFFD}one.", "{answer}");
    let (_, steps) = app
        .get(&format!("/v1/runs/{}/steps", run["id"].as_str().unwrap()))
        .await;
    assert!(
        steps.to_string().contains("row\u{FFFD}one"),
        "the step's output is stored: {steps}"
    );
}

/// Read from `stream` until the server closes it; what it sent. Gives up
/// (panics) after `WAIT`.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut said = Vec::new();
    tokio::time::timeout(switchyard_tests::WAIT, stream.read_to_end(&mut said))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&said).into_owned()
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_but_streams_are_not() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_HEADER_TIMEOUT_SECS", "1".into())],
        ..Options::slow_scripted(150)
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();

    // Headers that never end.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: switchyard\r\nX-Slow: 1")
        .await
        .unwrap();
    let said = until_closed(&mut slow).await;
    assert!(!said.contains("200 OK"), "{said}");

    // A kept-alive connection, idle after its answer.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: switchyard\r\n\r\n")
        .await
        .unwrap();
    let said = until_closed(&mut idle).await;
    assert!(said.starts_with("HTTP/1.1 200 OK"), "{said}");

    // An event stream that goes on longer than the header timeout.
    let (run, events) = app
        .run_to_end("Tell me a story of some twenty words or so please")
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        events.last().map(|e| e.event.as_str()),
        Some("run.completed")
    );
    let started = chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().unwrap());
    let finished = chrono::DateTime::parse_from_rfc3339(run["finished_at"].as_str().unwrap());
    assert!(
        (finished.unwrap() - started.unwrap()).num_milliseconds() > 1500,
        "the stream outlived the header timeout: {run}"
    );
}

#[tokio::test]
async fn made_up_api_keys_are_refused_before_they_reach_the_database() {
    let postgres = switchyard_tests::proxy::Proxy::to_url(&switchyard_tests::admin_url()).await;
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        postgres_via: Some(postgres.address()),
        worker: false,
        ..Options::default()
    })
    .await;
    let valid = app.api_key("alice", false).await;
    let me = |token: String| {
        let request = app.http.get(app.url("/v1/me")).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    };
    assert_eq!(me(valid.clone()).await.0, 200);

    // A flood of made-up keys, 50 at a time: a burst of them is looked up
    // (401), then only as many as the budget refills; the rest are answered
    // 429 without a lookup (each key is new, so a 401 is a lookup).
    let made_up = |n: u32| format!("sy_{n:064x}");
    let started = std::time::Instant::now();
    let mut answers = std::collections::BTreeMap::<u16, u32>::new();
    for wave in 0..8 {
        let requests = (wave * 50..(wave + 1) * 50).map(|n| me(made_up(n)));
        for (status, retry_after, body) in futures::future::join_all(requests).await {
            if status == 429 {
                assert_eq!(body["error"]["limit"], "unknown_api_keys", "{body}");
                assert!(retry_after.is_some());
            }
            *answers.entry(status).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        [401, 429],
        "{answers:?}"
    );
    let looked_up = f64::from(answers[&401]);
    let budget = 100.0 + 10.0 * elapsed;
    assert!(
        (100.0..=budget + 1.0).contains(&looked_up),
        "{answers:?} in {elapsed:.2} s: at most {budget:.0} lookups"
    );

    // With the database gone, nothing but a key seen valid reaches it: a
    // token that is not a key and a key known to be unknown are answered
    // without it.
    postgres.cut();
    let (status, _, body) = me("not-a-switchyard-key".into()).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = me(made_up(0)).await;
    assert_eq!(status, 401, "{body}");
    // The valid key is still looked up (a revocation takes effect at once):
    // with the database gone, that is a 503.
    let (status, _, body) = me(valid.clone()).await;
    assert_eq!(status, 503, "{body}");
    postgres.restore();
}

#[tokio::test]
async fn streams_are_limited_by_default_and_waiting_requests_count() {
    // No [limits] at all.
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        worker: false,
        ..Options::default()
    })
    .await;
    let user = app.client_with_token(&app.api_key("watcher", false).await);
    let (status, thread) = app
        .call(user.post(app.url("/v1/threads")).json(&json!({})))
        .await;
    assert_eq!(status, 201, "{thread}");
    let thread_id = thread["id"].as_str().unwrap();
    let (status, run) = app
        .call(
            user.post(app.url(&format!("/v1/threads/{thread_id}/runs")))
                .json(&json!({"input": {"content": "wait"}})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let events = app.url(&format!("/v1/runs/{}/events", run["id"].as_str().unwrap()));
    let limit = switchyard_common::config::DEFAULT_OPEN_STREAMS as usize;
    let mut open = Vec::new();
    for _ in 0..limit {
        let response = user.get(&events).send().await.unwrap();
        assert_eq!(response.status(), 200);
        open.push(response);
    }
    let (status, body) = app.call(user.get(&events)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["limit"], "open_streams", "{body}");
    // A request the server answers when the run ends holds a stream too,
    // streamed or not.
    let runs_before = app.count("select count(*) from runs").await;
    let (status, body) = app
        .call(user.post(app.url("/v1/chat/completions")).json(&json!({
            "model": "assistant", "stream": false,
            "messages": [{"role": "user", "content": "Hello"}]})))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["limit"], "open_streams", "{body}");
    assert_eq!(
        app.count("select count(*) from runs").await,
        runs_before,
        "nothing was started"
    );
    drop(open);
}

#[tokio::test]
async fn a_quiet_stream_does_not_read_the_database() {
    let postgres = switchyard_tests::proxy::Proxy::to_url(&switchyard_tests::admin_url()).await;
    let app = TestApp::spawn_with(Options {
        postgres_via: Some(postgres.address()),
        worker: false,
        ..Options::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let run = app.start_run(thread["id"].as_str().unwrap(), "Hello").await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let response = app
        .http
        .get(app.url(&format!("/v1/runs/{run_id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Read up to the backlog's `run.queued`, then keep reading aside.
    let mut body = response.bytes_stream();
    let mut said = String::new();
    while !said.contains("event: run.queued") {
        let chunk = tokio::time::timeout(switchyard_tests::WAIT, body.next())
            .await
            .expect("the backlog comes")
            .expect("the stream is open")
            .unwrap();
        said.push_str(&String::from_utf8_lossy(&chunk));
    }
    let stream = tokio::spawn(async move {
        while let Some(Ok(chunk)) = body.next().await {
            said.push_str(&String::from_utf8_lossy(&chunk));
        }
        said
    });
    // Let the relay finish reading the backlog from PostgreSQL.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // With PostgreSQL gone, the quiet stream's checks (after 1, 2 and 4 s)
    // read only Redis: it stays open, where a check of PostgreSQL would
    // have ended it.
    postgres.cut();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    postgres.restore();
    assert!(!stream.is_finished(), "the stream is still open");
    // The run then goes ahead, and the stream relays it to its end.
    app.start_worker().await;
    let said = tokio::time::timeout(switchyard_tests::WAIT, stream)
        .await
        .expect("the stream ends with the run")
        .unwrap();
    assert!(
        said.contains("event: run.started") && said.contains("event: run.completed"),
        "{said}"
    );
}

#[tokio::test]
async fn metrics_leave_the_public_port_when_they_have_their_own() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_METRICS_LISTEN", format!("127.0.0.1:{port}"))],
        worker: false,
        ..Options::default()
    })
    .await;
    let (status, body) = app.get("/metrics").await;
    assert_eq!(status, 404, "{body}");
    let (_, openapi) = app.get("/openapi.json").await;
    assert!(openapi["paths"].get("/metrics").is_none());
    let scraped = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains("switchyard_"), "{text}");
}

#[tokio::test]
async fn users_see_what_an_agent_is_not_how_it_is_made() {
    let mut options = app_with_policy("hosts = [\"*.partner.example\"]");
    options.env = vec![("SWITCHYARD_AUTH", "api_key".into())];
    let app = TestApp::spawn_with(options).await;
    let admin = app.client_with_token(&app.api_key("ops", true).await);
    let user = app.client_with_token(&app.api_key("alice", false).await);
    let mut reader = with_tools(json!({"http_request": {"allow_hosts": ["api.partner.example"]}}));
    reader["instructions"] = json!("Internal: escalate to ops@partner.example.");
    let (status, body) = app
        .call(admin.post(app.url("/v1/agents")).json(&reader))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .call(
            admin
                .post(app.url("/v1/agents"))
                .json(&relay("https://chat.partner.example/api", json!({}))),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    for path in ["/v1/agents/reader", "/api/agents/reader"] {
        let (_, seen) = app.call(admin.get(app.url(path))).await;
        assert_eq!(seen["instructions"], reader["instructions"], "{seen}");
        assert_eq!(
            seen["tool_settings"]["http_request"]["allow_hosts"],
            json!(["api.partner.example"]),
            "{seen}"
        );
        let (status, seen) = app.call(user.get(app.url(path))).await;
        assert_eq!(status, 200, "{seen}");
        assert_eq!(
            (&seen["name"], &seen["tools"]),
            (&json!("Reader"), &json!(["http_request"]))
        );
        assert_eq!(seen["instructions"], "", "{seen}");
        assert_eq!(seen["tool_settings"], json!({}), "{seen}");
    }
    for path in ["/v1/agents", "/api/agents"] {
        let (_, listed) = app.call(user.get(app.url(path))).await;
        let text = listed.to_string();
        assert!(
            text.contains("\"relay\"") && text.contains("\"reader\""),
            "{text}"
        );
        for secret in ["partner.example", "escalate"] {
            assert!(
                !text.contains(secret),
                "{path} shows {secret:?} to a user: {text}"
            );
        }
    }
}

/// schemathesis over `/openapi.json` with an ordinary user's key, bounded
/// in time (`tests/fuzz/schemathesis.sh`): no request may answer 5xx.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_in_the_contract() {
    let schemathesis = switchyard_tests::find_tool(
        "SCHEMATHESIS",
        Some(".tools/schemathesis/bin/schemathesis"),
        "schemathesis",
    )
    .expect("schemathesis is needed: run scripts/install-test-tools.sh");
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let key = app.api_key("fuzzer", false).await;
    let script = switchyard_tests::repo().join("tests/fuzz/schemathesis.sh");
    let (address, schemathesis) = (app.address.clone(), schemathesis.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .arg(address)
            .arg(key)
            .env("SCHEMATHESIS", schemathesis)
            .output()
            .expect("running tests/fuzz/schemathesis.sh")
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("OK: no 5xx"), "{said}");
}
