//! Runs end to end on each provider kind, against the local fake speaking
//! that provider's wire format: API → queue → worker → provider → events.

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply};
use switchyard_tests::{Options, TestApp, deltas_of};

/// The provider table for `kind` pointing at `fake`.
fn provider(kind: &str, fake: &FakeLlm) -> String {
    match kind {
        "anthropic" => format!(
            "kind = \"anthropic\"\nbase_url = \"{}\"\nmax_tokens = 512",
            fake.origin()
        ),
        "ollama" => format!("kind = \"ollama\"\nbase_url = \"{}\"", fake.origin()),
        _ => format!("kind = \"openai\"\nbase_url = \"{}\"", fake.base_url()),
    }
}

async fn app_on(kind: &str, fake: &FakeLlm) -> TestApp {
    let catalog = format!(
        r#"
[[providers]]
name = "llm"
{}

[[agents]]
id = "assistant"
name = "Assistant"
provider = "llm"
model = "test-model"
instructions = "Be brief."
tools = ["calculator"]

[prices.test-model]
input = 3.0
output = 15.0
"#,
        provider(kind, fake)
    );
    TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await
}

async fn steps_of(app: &TestApp, run: &Value) -> Vec<Value> {
    let (_, steps) = app
        .get(&format!("/v1/runs/{}/steps", run["id"].as_str().unwrap()))
        .await;
    steps["steps"].as_array().unwrap().clone()
}

/// A tool call in fragments, its result back to the model, a streamed
/// answer, the provider's usage priced.
async fn tool_loop_with_usage_and_cost(kind: &str) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::ToolCalls {
        calls: vec![FakeToolCall::new(
            "call_1",
            "calculator",
            &["{\"expr", "ession\": \"6", " * 7\"}"],
        )],
        usage: Some((40, 12)),
    });
    fake.push(Reply::text(&["The ans", "wer is 4", "2."], Some((60, 6))));
    let app = app_on(kind, &fake).await;
    let (run, events) = app.run_to_end("What is 6 times 7?").await;
    assert_eq!(run["status"], "completed", "{kind}: {run}");
    assert_eq!(deltas_of(&events), "The answer is 42.", "{kind}");
    let tool = events.iter().find(|e| e.event == "tool.finished").unwrap();
    assert_eq!(
        tool.data["result"]["result"],
        json!(42),
        "{kind}: {:?}",
        tool.data
    );
    assert_eq!(run["usage"]["input_tokens"], 100, "{kind}: {run}");
    assert_eq!(run["usage"]["output_tokens"], 18, "{kind}: {run}");
    let cost = run["cost_usd"].as_f64().unwrap();
    let expected = 100.0 * 3.0 / 1e6 + 18.0 * 15.0 / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{kind}: {cost}");
    // The result went back to the model in the provider's own format.
    let second = serde_json::to_string(&fake.requests()[1].body).unwrap();
    assert!(second.contains("42"), "{kind}: {second}");
}

/// A 429 is retried, each attempt a step; a 401 fails the run at once.
async fn retries_and_refusals(kind: &str) {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(429, "slow down", Some(0)));
    fake.push(Reply::text(&["Fine."], Some((5, 1))));
    let app = app_on(kind, &fake).await;
    let (run, _) = app.run_to_end("Hi").await;
    assert_eq!(run["status"], "completed", "{kind}: {run}");
    let steps = steps_of(&app, &run).await;
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "completed"], "{kind}: {steps:?}");
    assert_eq!(
        steps[0]["output"]["code"], "provider_rate_limited",
        "{kind}"
    );

    fake.push(Reply::error(401, "bad key", None));
    let (run, _) = app.run_to_end("Hi again").await;
    assert_eq!(run["status"], "failed", "{kind}: {run}");
    assert_eq!(run["error"]["code"], "provider_auth", "{kind}: {run}");
    assert_eq!(fake.requests().len(), 3, "{kind}: a 401 is not retried");
}

#[tokio::test]
async fn anthropic_runs_tools_and_prices_usage() {
    tool_loop_with_usage_and_cost("anthropic").await;
}

#[tokio::test]
async fn anthropic_retries_a_rate_limit_and_fails_on_bad_credentials() {
    retries_and_refusals("anthropic").await;
}

#[tokio::test]
async fn ollama_runs_tools_and_prices_usage() {
    tool_loop_with_usage_and_cost("ollama").await;
}

#[tokio::test]
async fn ollama_retries_a_rate_limit_and_fails_on_bad_credentials() {
    retries_and_refusals("ollama").await;
}

#[tokio::test]
async fn openai_runs_tools_and_prices_usage() {
    tool_loop_with_usage_and_cost("openai").await;
}
