//! The `http` workflow: an agent whose answer comes from an upstream
//! streaming endpoint, relayed and stored like any other run's. The
//! upstreams are local servers speaking the real wire formats: the Vercel
//! AI SDK's UI message stream (a fake Next.js route, below) and OpenAI's
//! streamed chat completions (`switchyard-fake-llm`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::{Options, SCRIPTED_CATALOG, SseEvent, TestApp, deltas_of};
use tokio::sync::mpsc;

/// The variable holding the upstream's credentials in the test that
/// checks they are sent.
const TOKEN_VAR: &str = "SWITCHYARD_TEST_UPSTREAM_TOKEN";
const TOKEN: &str = "Bearer upstream-secret-7f3a";

/// What the fake route answers to one request.
enum Answer {
    /// `200` with these `data:` payloads (JSON parts, `[DONE]`, or raw
    /// text), then the connection closes, or stays open when `hang`.
    Parts { data: Vec<String>, hang: bool },
    /// An HTTP error with this body.
    Status(u16, Value),
}

impl Answer {
    fn parts(parts: &[Value]) -> Self {
        let mut data: Vec<String> = parts.iter().map(Value::to_string).collect();
        data.push("[DONE]".into());
        Self::Parts { data, hang: false }
    }
}

/// A Next.js-style AI SDK chat route: answers from a queue, records the
/// requests, and reports the connections its answers lost.
#[derive(Clone)]
struct Route {
    answers: Arc<Mutex<Vec<Answer>>>,
    requests: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    /// An answer's stream dropped by the server (the client went away).
    closed: mpsc::UnboundedSender<()>,
}

/// Sends on drop: the server dropped the answer's body.
struct Closed(mpsc::UnboundedSender<()>);

impl Drop for Closed {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Route {
    async fn start() -> (Self, String, mpsc::UnboundedReceiver<()>) {
        let (closed, closes) = mpsc::unbounded_channel();
        let route = Self {
            answers: Arc::default(),
            requests: Arc::default(),
            closed,
        };
        let app = Router::new()
            .route("/api/chat", post(chat))
            .with_state(route.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/chat", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (route, url, closes)
    }

    fn push(&self, answer: Answer) {
        self.answers.lock().unwrap().push(answer);
    }

    fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

async fn chat(State(route): State<Route>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    route.requests.lock().unwrap().push((headers, body));
    let answer = {
        let mut answers = route.answers.lock().unwrap();
        assert!(!answers.is_empty(), "the route got an unexpected request");
        answers.remove(0)
    };
    match answer {
        Answer::Status(status, body) => (
            StatusCode::from_u16(status).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Answer::Parts { data, hang } => {
            let guard = Closed(route.closed.clone());
            let tail = if hang {
                futures::stream::pending().boxed()
            } else {
                futures::stream::empty().boxed()
            };
            let events = futures::stream::iter(data)
                .then(|data| async move {
                    // Parts arrive as separate writes, as a route's do.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, std::io::Error>(Bytes::from(format!("data: {data}\n\n")))
                })
                .chain(tail)
                .map(move |item| {
                    // The guard lives as long as the body.
                    let _ = &guard;
                    item
                });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header("x-vercel-ai-ui-message-stream", "v1")
                .body(Body::from_stream(events))
                .unwrap()
        }
    }
}

/// A catalog with the agent `legacy` on `upstream` (a TOML inline table).
fn catalog(upstream: &str) -> String {
    format!(
        r#"
[[providers]]
name = "offline"
kind = "scripted"

[[agents]]
id = "assistant"
name = "Assistant"
provider = "offline"
model = "scripted-1"

[[agents]]
id = "legacy"
name = "Legacy agent"
model = "legacy-agent-1"
instructions = "You are the legacy agent."
workflow = "http"
upstream = {upstream}
"#
    )
}

async fn app_on(upstream: &str) -> TestApp {
    TestApp::spawn_with(Options {
        catalog: catalog(upstream),
        ..Default::default()
    })
    .await
}

async fn ai_sdk_app(url: &str, extra: &str) -> TestApp {
    app_on(&format!(
        r#"{{ url = "{url}", protocol = "ai-sdk"{extra} }}"#
    ))
    .await
}

/// Run `content` on `thread_id` to its end: the run and its events.
async fn run_on(app: &TestApp, thread_id: &str, content: &str) -> (Value, Vec<SseEvent>) {
    let run = app.start_run(thread_id, content).await;
    let run_id = run["id"].as_str().unwrap();
    let events = app.stream_events(run_id, None, None).await;
    (app.wait_for_run(run_id).await, events)
}

async fn legacy_thread(app: &TestApp) -> String {
    let thread = app.create_thread(json!({"agent_id": "legacy"})).await;
    thread["id"].as_str().unwrap().to_owned()
}

async fn steps_of(app: &TestApp, run: &Value) -> Vec<Value> {
    let (status, steps) = app
        .get(&format!("/v1/runs/{}/steps", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{steps}");
    steps["steps"].as_array().unwrap().clone()
}

async fn messages_of(app: &TestApp, thread_id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    assert_eq!(status, 200, "{page}");
    page["messages"].as_array().unwrap().clone()
}

fn text_parts(text: &[&str]) -> Vec<Value> {
    let mut parts = vec![json!({"type": "text-start", "id": "t1"})];
    parts.extend(
        text.iter()
            .map(|delta| json!({"type": "text-delta", "id": "t1", "delta": delta})),
    );
    parts.push(json!({"type": "text-end", "id": "t1"}));
    parts
}

/// Re-run this module's test `name` in a child process with `TOKEN_VAR`
/// set (the worker reads credentials from its environment, which a test
/// sharing its process with others must not change); true in the parent.
fn ran_in_child_with_token(name: &str) -> bool {
    if std::env::var(TOKEN_VAR).is_ok() {
        return false;
    }
    // The harness names a test by its module path within the binary.
    let test = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    };
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--nocapture"])
        .env(TOKEN_VAR, TOKEN)
        .output()
        .expect("rerun the test binary");
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "child run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    true
}

#[tokio::test]
async fn an_ai_sdk_answer_is_relayed_with_the_tools_the_upstream_ran() {
    if ran_in_child_with_token("an_ai_sdk_answer_is_relayed_with_the_tools_the_upstream_ran") {
        return;
    }
    let (route, url, _closes) = Route::start().await;
    let mut parts = vec![
        json!({"type": "start", "messageId": "up-1"}),
        json!({"type": "start-step"}),
        json!({"type": "text-start", "id": "a"}),
        json!({"type": "text-delta", "id": "a", "delta": "Let me look. "}),
        json!({"type": "text-end", "id": "a"}),
        json!({"type": "tool-input-start", "toolCallId": "call-1", "toolName": "weather"}),
        json!({"type": "tool-input-delta", "toolCallId": "call-1", "inputTextDelta": "{\"city\""}),
        json!({"type": "tool-input-available", "toolCallId": "call-1", "toolName": "weather",
               "input": {"city": "Lisbon"}}),
        json!({"type": "tool-output-available", "toolCallId": "call-1",
               "output": {"sky": "clear", "celsius": 21}}),
        json!({"type": "finish-step"}),
        json!({"type": "start-step"}),
    ];
    parts.extend(text_parts(&["It is ", "clear and ", "21 °C."]));
    parts.push(json!({"type": "finish-step"}));
    parts.push(json!({"type": "finish", "messageMetadata":
        {"totalUsage": {"inputTokens": 42, "outputTokens": 17, "totalTokens": 59}}}));
    route.push(Answer::parts(&parts));
    let app = ai_sdk_app(
        &url,
        &format!(r#", headers_env = {{ authorization = "{TOKEN_VAR}" }}, timeout_secs = 5"#),
    )
    .await;
    let thread_id = legacy_thread(&app).await;
    let (run, events) = run_on(&app, &thread_id, "Weather in Lisbon?").await;

    assert_eq!(run["status"], "completed", "{run}");
    let answer = "Let me look. It is clear and 21 °C.";
    assert_eq!(deltas_of(&events), answer);
    assert_eq!(
        run["usage"],
        json!({"input_tokens": 42, "output_tokens": 17, "cached_input_tokens": 0}),
        "the usage the route put in its metadata"
    );
    let started = events.iter().find(|e| e.event == "tool.started").unwrap();
    assert_eq!(started.data["tool"], "weather");
    assert_eq!(started.data["arguments"], json!({"city": "Lisbon"}));
    let finished = events.iter().find(|e| e.event == "tool.finished").unwrap();
    assert_eq!(
        finished.data["result"],
        json!({"sky": "clear", "celsius": 21})
    );
    assert_eq!(finished.data["is_error"], false);

    // Stored: the answer with its tool turn, the upstream call and its tool.
    let messages = messages_of(&app, &thread_id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], answer);
    let steps = steps_of(&app, &run).await;
    assert_eq!(steps.len(), 2, "{steps:?}");
    let (call, tool) = (&steps[0], &steps[1]);
    assert_eq!(call["kind"], "llm");
    assert_eq!(call["name"], "legacy-agent-1");
    assert_eq!(call["input"]["upstream"], url);
    assert_eq!(call["input"]["protocol"], "ai-sdk");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["output"]["text"], answer);
    assert_eq!(call["usage"]["input_tokens"], 42);
    assert_eq!(tool["kind"], "tool");
    assert_eq!(tool["name"], "weather");
    assert_eq!(tool["parent_id"], call["id"]);
    assert_eq!(
        tool["input"],
        json!({"executed_by": "upstream", "arguments": {"city": "Lisbon"}})
    );
    assert_eq!(tool["output"], json!({"sky": "clear", "celsius": 21}));
    assert_eq!(tool["status"], "completed");

    // What the route received: the transport's body and the credentials.
    let (headers, body) = &route.requests()[0];
    assert_eq!(headers["authorization"], TOKEN);
    assert_eq!(body["id"], thread_id.as_str());
    assert_eq!(body["trigger"], "submit-message");
    let sent = body["messages"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(sent[0]["parts"][0]["text"], "You are the legacy agent.");
    assert_eq!(
        sent[1]["parts"],
        json!([{"type": "text", "text": "Weather in Lisbon?"}])
    );
    assert_eq!(sent[1]["role"], "user");

    // The next run sends the conversation so far; a route reporting no
    // usage counts as zero.
    route.push(Answer::parts(&text_parts(&["You are welcome."])));
    let (second, events) = run_on(&app, &thread_id, "Thanks").await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(deltas_of(&events), "You are welcome.");
    assert_eq!(
        second["usage"],
        json!({"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0})
    );
    let (_, body) = &route.requests()[1];
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(body["messages"][2]["parts"][0]["text"], answer);

    // An upstream that echoes the credentials it refuses does not leak them.
    route.push(Answer::Status(
        401,
        json!({"error": format!("invalid token {TOKEN}")}),
    ));
    let (refused, _) = run_on(&app, &thread_id, "Once more").await;
    assert_eq!(refused["error"]["code"], "upstream_auth", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("upstream-secret") && message.contains("[redacted]"),
        "{message}"
    );
}

#[tokio::test]
async fn an_error_part_fails_the_run_with_the_upstreams_message() {
    let (route, url, _closes) = Route::start().await;
    let mut parts = vec![json!({"type": "start"}), json!({"type": "start-step"})];
    parts.extend(text_parts(&["Working on"]));
    parts.push(json!({"type": "error", "errorText": "model quota exhausted"}));
    route.push(Answer::parts(&parts));
    let app = ai_sdk_app(&url, "").await;
    let thread_id = legacy_thread(&app).await;
    let (run, events) = run_on(&app, &thread_id, "Hello").await;

    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "upstream_error");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(message.contains("model quota exhausted"), "{message}");
    assert_eq!(events.last().unwrap().event, "run.failed");
    let messages = messages_of(&app, &thread_id).await;
    assert_eq!(messages.len(), 1, "a failed run stores no answer");
    let steps = steps_of(&app, &run).await;
    assert_eq!(steps[0]["status"], "failed");
    assert_eq!(steps[0]["output"]["code"], "upstream_error");
}

#[tokio::test]
async fn an_http_error_fails_the_run_without_a_retry() {
    let (route, url, _closes) = Route::start().await;
    route.push(Answer::Status(500, json!({"error": "database down"})));
    let app = ai_sdk_app(&url, "").await;
    let thread_id = legacy_thread(&app).await;
    let (run, _) = run_on(&app, &thread_id, "Hello").await;

    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "upstream_error");
    let message = run["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("500") && message.contains("database down"),
        "{message}"
    );
    assert_eq!(route.requests().len(), 1, "the upstream may have acted");

    route.push(Answer::Status(
        401,
        json!({"error": {"message": "bad token"}}),
    ));
    let (run, _) = run_on(&app, &thread_id, "Again").await;
    assert_eq!(run["error"]["code"], "upstream_auth", "{run}");
}

#[tokio::test]
async fn a_malformed_stream_fails_the_run_as_a_protocol_error() {
    let (route, url, _closes) = Route::start().await;
    route.push(Answer::Parts {
        data: vec![
            json!({"type": "start"}).to_string(),
            r#"{"type": "text-delta", "id": "t1", "delta": "Hi"#.into(),
        ],
        hang: false,
    });
    let app = ai_sdk_app(&url, "").await;
    let thread_id = legacy_thread(&app).await;
    let (run, _) = run_on(&app, &thread_id, "Hello").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "upstream_protocol");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{run}"
    );

    // A stream that stops before its `finish` part is cut short.
    route.push(Answer::Parts {
        data: text_parts(&["Half an"])
            .iter()
            .map(Value::to_string)
            .collect(),
        hang: false,
    });
    let (run, _) = run_on(&app, &thread_id, "Again").await;
    assert_eq!(run["error"]["code"], "upstream_error", "{run}");
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let (route, url, _closes) = Route::start().await;
    route.push(Answer::Parts {
        data: vec![json!({"type": "start"}).to_string()],
        hang: true,
    });
    let app = ai_sdk_app(&url, ", timeout_secs = 1").await;
    let thread_id = legacy_thread(&app).await;
    let (run, _) = run_on(&app, &thread_id, "Hello").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn cancelling_a_run_closes_the_upstream_connection() {
    let (route, url, mut closes) = Route::start().await;
    let data: Vec<String> = [json!({"type": "start"}), json!({"type": "start-step"})]
        .iter()
        .chain(text_parts(&["The first words"]).iter().take(2))
        .map(Value::to_string)
        .collect();
    route.push(Answer::Parts { data, hang: true });
    let app = ai_sdk_app(&url, "").await;
    let thread_id = legacy_thread(&app).await;
    let run = app.start_run(&thread_id, "Tell me everything").await;
    let run_id = run["id"].as_str().unwrap();
    // run.queued, run.started, then the first delta.
    let events = app.stream_events(run_id, None, Some(3)).await;
    assert_eq!(events[2].event, "message.delta", "{:?}", events[2]);

    let (status, body) = app
        .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    tokio::time::timeout(Duration::from_secs(10), closes.recv())
        .await
        .expect("the upstream sees its connection closed")
        .expect("the route is running");
    let run = app.wait_for_run(run_id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    let messages = messages_of(&app, &thread_id).await;
    assert_eq!(
        messages[1]["content"], "The first words",
        "what was said is kept"
    );
}

#[tokio::test]
async fn an_openai_compatible_upstream_is_relayed_with_its_usage() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(
        &["Hel", "lo from ", "upstream."],
        Some((11, 4)),
    ));
    let app = app_on(&format!(
        r#"{{ url = "{}", protocol = "openai" }}"#,
        fake.base_url()
    ))
    .await;
    let thread_id = legacy_thread(&app).await;
    let (run, events) = run_on(&app, &thread_id, "Hi").await;

    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(deltas_of(&events), "Hello from upstream.");
    assert_eq!(
        run["usage"],
        json!({"input_tokens": 11, "output_tokens": 4, "cached_input_tokens": 0})
    );
    assert_eq!(
        messages_of(&app, &thread_id).await[1]["content"],
        "Hello from upstream."
    );
    let steps = steps_of(&app, &run).await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["input"]["protocol"], "openai");
    assert_eq!(steps[0]["usage"]["output_tokens"], 4);

    let sent = &fake.requests()[0];
    assert_eq!(sent.uri.path(), "/v1/chat/completions");
    assert_eq!(sent.body["model"], "legacy-agent-1");
    assert_eq!(sent.body["stream"], true);
    assert!(sent.body.get("tools").is_none(), "{}", sent.body);
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "system", "content": "You are the legacy agent."},
               {"role": "user", "content": "Hi"}])
    );
}

#[tokio::test]
async fn an_upstream_asking_its_client_to_run_a_tool_fails_the_run() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "call_9",
        "lookup_order",
        &["{\"id\":", "7}"],
        Some((5, 2)),
    ));
    let app = app_on(&format!(
        r#"{{ url = "{}", protocol = "openai" }}"#,
        fake.base_url()
    ))
    .await;
    let thread_id = legacy_thread(&app).await;
    let (run, events) = run_on(&app, &thread_id, "Where is order 7?").await;

    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "upstream_client_tool");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lookup_order")
    );
    let started = events.iter().find(|e| e.event == "tool.started").unwrap();
    assert_eq!(started.data["arguments"], json!({"id": 7}));
    let finished = events.iter().find(|e| e.event == "tool.finished").unwrap();
    assert_eq!(finished.data["is_error"], true);
    let steps = steps_of(&app, &run).await;
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[0]["usage"]["input_tokens"], 5, "billed even so");
}

#[tokio::test]
async fn http_agents_written_over_the_api_are_checked() {
    let (route, url, _closes) = Route::start().await;
    // Agents written over the API reach only what the operator lists.
    let app = TestApp::spawn_with(Options {
        catalog: format!(
            "{SCRIPTED_CATALOG}\n[api_agents]\nhosts = [\"127.0.0.1\"]\nallow_private = true\n"
        ),
        ..Options::default()
    })
    .await;
    let agent = |upstream: Value| {
        json!({"id": "migrating", "name": "Migrating", "model": "legacy-1",
               "workflow": {"kind": "http", "upstream": upstream}})
    };
    for (upstream, expected) in [
        (
            json!({"url": "localhost:3000/api/chat", "protocol": "ai-sdk"}),
            "http or https",
        ),
        (
            json!({"url": "https://x.example/api/chat", "protocol": "ai-sdk",
                "headers_env": {"authorization": "Bearer abc"}}),
            "environment variable",
        ),
        (
            json!({"url": "https://x.example/api/chat", "protocol": "grpc"}),
            "grpc",
        ),
        (json!(null), "needs an upstream"),
    ] {
        let (status, body) = app.post("/v1/agents", agent(upstream.clone())).await;
        assert_eq!(status, 422, "{upstream}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{upstream}: {message}");
    }
    let (status, agents) = app.get("/v1/agents").await;
    assert_eq!(status, 200);
    assert!(
        !agents.to_string().contains("migrating"),
        "nothing was written"
    );

    let (status, created) = app
        .post(
            "/v1/agents",
            agent(json!({"url": url, "protocol": "ai-sdk"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["workflow"]["upstream"]["timeout_secs"], 60);
    assert_eq!(created["provider"], "");
    let (_, openapi) = app.get("/openapi.json").await;
    let schemas = &openapi["components"]["schemas"];
    assert!(
        schemas["Upstream"].is_object(),
        "the upstream is documented"
    );
    assert!(
        schemas["WorkflowKind"].to_string().contains("http"),
        "{}",
        schemas["WorkflowKind"]
    );
    route.push(Answer::parts(&text_parts(&["Migrated."])));
    let thread = app.create_thread(json!({"agent_id": "migrating"})).await;
    let (run, events) = run_on(&app, thread["id"].as_str().unwrap(), "Hi").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(deltas_of(&events), "Migrated.");
}
