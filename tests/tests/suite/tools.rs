//! Tools inside runs: the calls of one model turn run at once, a tool's
//! failure goes back to the model (the run goes on), and the SSRF guard
//! holds end to end.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply};
use switchyard_tests::{Options, TestApp};

async fn app_with(fake: &FakeLlm, tools: &str, settings: &str) -> TestApp {
    let catalog = format!(
        r#"
[[providers]]
name = "local-mock"
kind = "openai"
base_url = "{}"

[[agents]]
id = "assistant"
name = "Assistant"
provider = "local-mock"
model = "gpt-4o-mini"
tools = [{tools}]
{settings}
"#,
        fake.base_url()
    );
    TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await
}

/// A server whose `/meet` answers `together` only when two requests are
/// inside it at the same time (`alone` after 5 s otherwise).
async fn meeting_point() -> String {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let app = Router::new().route(
        "/meet",
        get(move || {
            let barrier = barrier.clone();
            async move {
                match tokio::time::timeout(Duration::from_secs(5), barrier.wait()).await {
                    Ok(_) => "together",
                    Err(_) => "alone",
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/meet")
}

fn tool_results(events: &[switchyard_tests::SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event == "tool.finished")
        .map(|e| e.data.clone())
        .collect()
}

#[tokio::test]
async fn the_tool_calls_of_one_turn_run_at_once() {
    let fake = FakeLlm::start().await;
    let url = meeting_point().await;
    let arguments = json!({ "url": url }).to_string();
    fake.push(Reply::ToolCalls {
        calls: vec![
            FakeToolCall::new("call_a", "http_request", &[&arguments]),
            FakeToolCall::new("call_b", "http_request", &[&arguments]),
        ],
        usage: Some((10, 4)),
    });
    fake.push(Reply::text(&["Both answered."], Some((20, 3))));
    let app = app_with(
        &fake,
        r#""http_request""#,
        "[agents.tool_settings.http_request]\nallow_hosts = [\"127.0.0.1\"]\nallow_private = true\n",
    )
    .await;
    let (run, events) = app.run_to_end("Call it twice").await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&events);
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(result["is_error"], false, "{result}");
        assert_eq!(result["result"]["body"], "together", "{result}");
    }
    // Both results went back to the model, each under its call's id.
    let second = &fake.requests()[1].body["messages"];
    let ids: Vec<&str> = second
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call_a", "call_b"]);
}

#[tokio::test]
async fn a_failing_tool_is_reported_to_the_model_and_the_run_goes_on() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "call_1",
        "calculator",
        &[r#"{"expression": "#, r#""1 / 0"}"#],
        Some((10, 4)),
    ));
    fake.push(Reply::text(&["That cannot be computed."], Some((20, 5))));
    let app = app_with(&fake, r#""calculator""#, "").await;
    let (run, events) = app.run_to_end("What is 1/0?").await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&events);
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    let message = results[0]["result"]["error"].as_str().unwrap();
    assert!(message.contains("zero"), "{message}");
    let sent = &fake.requests()[1].body["messages"];
    let tool_message = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(
        tool_message["content"].as_str().unwrap().contains("zero"),
        "{tool_message}"
    );

    let (_, steps) = app
        .get(&format!("/v1/runs/{}/steps", run["id"].as_str().unwrap()))
        .await;
    let kinds: Vec<(&str, &str)> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("llm", "completed"),
            ("tool", "failed"),
            ("llm", "completed")
        ]
    );
}

#[tokio::test]
async fn http_request_refuses_loopback_unless_allowed() {
    let fake = FakeLlm::start().await;
    let url = meeting_point().await;
    let arguments = json!({ "url": url }).to_string();
    fake.push(Reply::tool_call(
        "call_1",
        "http_request",
        &[&arguments],
        None,
    ));
    fake.push(Reply::text(&["Refused."], None));
    let app = app_with(
        &fake,
        r#""http_request""#,
        "[agents.tool_settings.http_request]\nallow_hosts = [\"127.0.0.1\"]\n",
    )
    .await;
    let (run, events) = app.run_to_end("Fetch it").await;
    assert_eq!(run["status"], "completed", "{run}");
    let results = tool_results(&events);
    assert_eq!(results[0]["is_error"], true, "{results:?}");
    let message = results[0]["result"]["error"].as_str().unwrap();
    assert!(message.contains("127.0.0.1"), "{message}");
}
