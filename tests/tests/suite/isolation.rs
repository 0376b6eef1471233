//! Isolation: a second user gets `404 not_found` for every route that names
//! another user's thread, run, message, step or event stream, and sees none
//! of them in lists, on the native API and every compatible surface. The routes come from the router's own OpenAPI document
//! (the router and the document are built from one registration), so a new
//! route is walked as soon as it exists.
//!
//! Deployments are isolated too: every Redis key one writes carries its
//! `SWITCHYARD_REDIS_PREFIX`, so that two can share a Redis.

use serde_json::{Value, json};
use switchyard_tests::{Options, TestApp};

/// A body that passes validation, so that only ownership decides; where a
/// body can name a thread, it names Alice's.
fn body_for(method: &str, path: &str, thread_id: &str, run_id: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/api/queue/status" | "/api/queue/cancel") => Some(json!({"request_id": run_id})),
        ("post", "/v1/threads/{thread_id}/runs") => Some(json!({"input": {"content": "mine now"}})),
        ("post", "/api/agents/{agent_id}/chat") => {
            Some(json!({"message": "mine now", "thread_id": thread_id, "stream": false}))
        }
        ("patch", "/v1/threads/{thread_id}") | ("put", "/api/conversations/{id}") => {
            Some(json!({"title": "taken over"}))
        }
        ("post", "/api/conversations/{id}/messages") => Some(json!({"message": "mine now"})),
        ("post", "/v1/runs/{run_id}/cancel") => None,
        ("post" | "put" | "patch", _) => Some(json!({})),
        _ => None,
    }
}

#[tokio::test]
async fn another_users_resources_are_not_found_on_every_route() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let alice = app.client_with_token(&app.api_key("alice", false).await);
    let bob = app.client_with_token(&app.api_key("bob", false).await);

    // Alice's thread with a finished run: messages, steps and events exist.
    let (status, thread) = app
        .call(
            alice
                .post(app.url("/v1/threads"))
                .json(&json!({"title": "Alice's"})),
        )
        .await;
    assert_eq!(status, 201, "{thread}");
    let thread_id = thread["id"].as_str().unwrap().to_owned();
    let (status, run) = app
        .call(
            alice
                .post(app.url(&format!("/v1/threads/{thread_id}/runs")))
                .json(&json!({"input": {"content": "/tool current_time"}})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let finished = app.wait_for_run_as(&alice, &run_id).await;
    assert_eq!(finished["status"], "completed");
    // And a chat of the AI SDK surface, whose id is Alice's own name for it.
    let (status, _) = app
        .call(alice.post(app.url("/api/chat")).json(&json!({
            "id": "alices-chat",
            "message": {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]},
        })))
        .await;
    assert_eq!(status, 200);
    let snapshot = |client: reqwest::Client| {
        let (app, thread_id, run_id) = (&app, thread_id.clone(), run_id.clone());
        async move {
            let mut seen = Vec::new();
            for path in [
                format!("/v1/threads/{thread_id}"),
                format!("/v1/threads/{thread_id}/messages"),
                format!("/v1/runs/{run_id}"),
                format!("/v1/runs/{run_id}/steps"),
            ] {
                let (status, body) = app.call(client.get(app.url(&path))).await;
                assert_eq!(status, 200, "{path}: {body}");
                seen.push(body);
            }
            seen
        }
    };
    let before = snapshot(alice.clone()).await;

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.len() >= 10,
        "the document lists the routes: {paths:?}"
    );
    let mut walked = 0;
    for (template, operations) in paths {
        if ["/health", "/ready"].contains(&template.as_str()) {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            let mut path = template.clone();
            for (param, value) in [
                ("{thread_id}", thread_id.as_str()),
                ("{run_id}", run_id.as_str()),
                ("{agent_id}", "assistant"),
                // A conversation is a thread; an AI SDK chat id is Alice's own name.
                (
                    "{id}",
                    if template.starts_with("/api/conversations") {
                        thread_id.as_str()
                    } else {
                        "alices-chat"
                    },
                ),
            ] {
                path = path.replace(param, value);
            }
            assert!(
                !path.contains('{'),
                "{template} has a path parameter this test does not know: give it another user's id"
            );
            let mut request = bob.request(method.to_uppercase().parse().unwrap(), app.url(&path));
            let sent = body_for(method, template, &thread_id, &run_id);
            if let Some(body) = &sent {
                request = request.json(body);
            }
            let names_alices = template.contains("{thread_id}")
                || template.contains("{run_id}")
                || template.contains("{id}")
                || sent.is_some_and(|b| {
                    let text = b.to_string();
                    text.contains(&thread_id) || text.contains(&run_id)
                });
            let (status, body) = app.call(request).await;
            walked += 1;
            if template.starts_with("/v1/agents/{agent_id}") {
                // Agents are shared: everyone reads them, administrators change them.
                let expected = if method == "get" { 200 } else { 403 };
                assert_eq!(status, expected, "{method} {template}: {body}");
            } else if names_alices {
                assert_eq!(status, 404, "{method} {template} answered {status}: {body}");
                assert_eq!(body["error"]["code"], "not_found", "{method} {template}");
            } else if method == "get" {
                // Lists and `me`: none of Alice's ids appear.
                assert_eq!(status, 200, "{method} {template}: {body}");
                let text = body.to_string();
                assert!(
                    !text.contains(&thread_id) && !text.contains(&run_id),
                    "{template} shows Alice's resources to Bob: {text}"
                );
            }
        }
    }
    assert!(walked >= 12, "walked {walked} operations");

    // Nothing Bob tried changed Alice's data.
    assert_eq!(snapshot(alice).await, before);
    // A missing id and a foreign id answer alike.
    let missing = app
        .call(bob.get(app.url("/v1/threads/0193a5a0-0000-7000-8000-000000000000")))
        .await;
    assert_eq!(missing.0, 404);
}

/// A Redis of this test's own on a free port, so that every key in it is
/// the app's; stopped when dropped.
struct PrivateRedis {
    process: std::process::Child,
    address: std::net::SocketAddr,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let process = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("this test runs redis-server, which must be on PATH");
        let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = std::time::Instant::now() + switchyard_tests::WAIT;
        while tokio::net::TcpStream::connect(address).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Self { process, address }
    }

    async fn all_keys(&self) -> Vec<String> {
        let client = redis::Client::open(format!("redis://{}", self.address)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
    }
}

#[tokio::test]
async fn every_redis_key_a_run_leaves_carries_the_prefix() {
    let redis = PrivateRedis::start().await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.address),
        ..Options::default()
    })
    .await;
    // A run with a tool call, its events streamed, its thread cached.
    let (run, events) = app.run_to_end("/tool current_time").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        events.iter().any(|e| e.event == "tool.finished"),
        "{events:?}"
    );
    let (status, _) = app
        .get(&format!(
            "/v1/threads/{}/messages",
            run["thread_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);

    let prefix = format!("{}:", app.config.redis_prefix);
    let keys = redis.all_keys().await;
    let outside: Vec<&String> = keys.iter().filter(|k| !k.starts_with(&prefix)).collect();
    assert!(
        outside.is_empty(),
        "keys outside {prefix}: {outside:?} (all: {keys:?})"
    );
    // What a run leaves: its queue (with apalis's registry of it), its
    // events, the thread's cache.
    for expected in [
        format!("{prefix}apalis:queues:list"),
        format!("{prefix}queue:runs:workers"),
        format!("{prefix}run:{}:events", run["id"].as_str().unwrap()),
        format!("{prefix}thread:{}", run["thread_id"].as_str().unwrap()),
    ] {
        assert!(keys.contains(&expected), "no {expected} in {keys:?}");
    }
}

#[tokio::test]
async fn a_public_thread_is_read_by_others_never_written_nor_listed() {
    // Slow answers, so that a run is still going while others look.
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::slow_scripted(200)
    })
    .await;
    let alice = app.client_with_token(&app.api_key("alice", false).await);
    let bob = app.client_with_token(&app.api_key("bob", false).await);

    let (status, bad) = app
        .call(
            alice
                .post(app.url("/v1/threads"))
                .json(&json!({"visibility": "friends"})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let (status, thread) = app
        .call(
            alice
                .post(app.url("/v1/threads"))
                .json(&json!({"title": "Shared", "visibility": "public"})),
        )
        .await;
    assert_eq!(status, 201, "{thread}");
    assert_eq!(thread["visibility"], "public");
    let thread_path = format!("/v1/threads/{}", thread["id"].as_str().unwrap());
    let start = |content: &str| {
        alice
            .post(app.url(&format!("{thread_path}/runs")))
            .json(&json!({"input": {"content": content}}))
    };
    let (status, finished) = app.call(start("/tool current_time")).await;
    assert_eq!(status, 202, "{finished}");
    let finished = finished["id"].as_str().unwrap().to_owned();
    app.wait_for_run_as(&alice, &finished).await;
    let (status, going) = app.call(start("Still going")).await;
    assert_eq!(status, 202, "{going}");
    let going = going["id"].as_str().unwrap().to_owned();

    // Bob reads the thread, its messages and its finished run, whole.
    let read = |path: String| {
        let request = bob.get(app.url(&path));
        async { app.call(request).await }
    };
    let (status, seen) = read(thread_path.clone()).await;
    assert_eq!((status, &seen["title"]), (200, &json!("Shared")), "{seen}");
    let (status, messages) = read(format!("{thread_path}/messages")).await;
    assert_eq!(status, 200);
    assert!(
        messages["messages"].as_array().unwrap().len() >= 3,
        "{messages}"
    );
    let (_, runs) = read(format!("{thread_path}/runs")).await;
    let listed: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [finished.as_str()], "only finished runs: {runs}");
    for path in [
        format!("/v1/runs/{finished}"),
        format!("/v1/runs/{finished}/steps"),
    ] {
        let (status, body) = read(path.clone()).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, steps) = read(format!("/v1/runs/{finished}/steps")).await;
    assert!(
        steps["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "tool")
    );
    let response = bob
        .get(app.url(&format!("/v1/runs/{finished}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = switchyard_tests::read_sse(response, None).await;
    assert_eq!(events.last().unwrap().event, "run.completed");

    // Not the run that is still going, not in his list, and no writes.
    for path in [
        format!("/v1/runs/{going}"),
        format!("/v1/runs/{going}/events"),
    ] {
        let (status, body) = read(path.clone()).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (_, his) = read("/v1/threads".into()).await;
    assert_eq!(his["threads"], json!([]), "never listed to others");
    let writes = [
        bob.patch(app.url(&thread_path))
            .json(&json!({"title": "mine"})),
        bob.patch(app.url(&thread_path))
            .json(&json!({"visibility": "private"})),
        bob.delete(app.url(&thread_path)),
        bob.post(app.url(&format!("{thread_path}/runs")))
            .json(&json!({"input": {"content": "mine now"}})),
        bob.post(app.url(&format!("/v1/runs/{finished}/cancel"))),
        bob.post(app.url(&format!("/v1/runs/{going}/cancel"))),
    ];
    for write in writes {
        let (status, body) = app.call(write).await;
        assert_eq!(status, 404, "{body}");
    }
    app.wait_for_run_as(&alice, &going).await;
    let (_, mine) = app.call(alice.get(app.url(&thread_path))).await;
    assert_eq!(mine["title"], "Shared", "nothing was changed");

    // Made private again, it is Alice's alone.
    let (status, _) = app
        .call(
            alice
                .patch(app.url(&thread_path))
                .json(&json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(status, 200);
    for path in [thread_path.clone(), format!("/v1/runs/{finished}")] {
        let (status, _) = read(path.clone()).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn an_ai_sdk_chat_is_shared_by_its_visibility_type() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let alice = app.client_with_token(&app.api_key("alice", false).await);
    let bob = app.client_with_token(&app.api_key("bob", false).await);
    let send = |text: &str, visibility: &str| {
        alice.post(app.url("/api/chat")).json(&json!({
            "id": "chat-1",
            "message": {"id": text, "role": "user", "parts": [{"type": "text", "text": text}]},
            "selectedChatModel": "chat-model",
            "selectedVisibilityType": visibility,
        }))
    };
    let response = send("Hello", "public").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let shared = response.headers()["x-switchyard-thread-id"]
        .to_str()
        .unwrap()
        .to_owned();
    response.text().await.unwrap();
    let (_, threads) = app.call(alice.get(app.url("/v1/threads"))).await;
    let thread = &threads["threads"][0];
    assert_eq!(thread["visibility"], "public", "{threads}");
    assert_eq!(
        thread["id"],
        shared.as_str(),
        "the answer names the thread to share"
    );
    let path = format!("/v1/threads/{}/messages", thread["id"].as_str().unwrap());
    let (status, messages) = app.call(bob.get(app.url(&path))).await;
    assert_eq!(status, 200, "{messages}");
    assert_eq!(messages["messages"][0]["content"], "Hello");

    let (status, _) = app.call(send("Now private", "private")).await;
    assert_eq!(status, 200);
    let (status, _) = app.call(bob.get(app.url(&path))).await;
    assert_eq!(status, 404);
    let (status, body) = app.call(send("Hm", "everyone")).await;
    assert_eq!(status, 422, "{body}");
}
