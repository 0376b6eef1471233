//! Runs on an `openai` provider, against a local server that speaks the
//! real chat-completions streaming wire format.

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::{Options, TestApp, deltas_of};

async fn app_with(fake: &FakeLlm) -> TestApp {
    let catalog = format!(
        r#"
[[providers]]
name = "local-mock"
kind = "openai"
base_url = "{}"
max_attempts = 3

[[agents]]
id = "assistant"
name = "Assistant"
provider = "local-mock"
model = "gpt-4o-mini"
instructions = "You are a helpful assistant."
tools = ["current_time"]
"#,
        fake.base_url()
    );
    TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn an_openai_run_streams_the_providers_answer_with_its_usage() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(
        &["Hel", "lo, wor", "ld! How c", "an I help?"],
        Some((21, 9)),
    ));
    let app = app_with(&fake).await;
    let (run, events) = app.run_to_end("Hi").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(deltas_of(&events), "Hello, world! How can I help?");
    assert_eq!(
        run["usage"],
        json!({"input_tokens": 21, "output_tokens": 9, "cached_input_tokens": 0}),
        "usage is the provider's own"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are a helpful assistant."})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Hi"})
    );
    assert_eq!(body["tools"][0]["function"]["name"], "current_time");
}

#[tokio::test]
async fn a_tool_call_with_fragmented_arguments_runs_the_tool_and_continues() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "call_1",
        "current_time",
        &["{", "}"],
        Some((30, 5)),
    ));
    fake.push(Reply::text(&["It is ", "now."], Some((50, 3))));
    let app = app_with(&fake).await;
    let (run, events) = app.run_to_end("What time is it?").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["usage"],
        json!({"input_tokens": 80, "output_tokens": 8, "cached_input_tokens": 0}),
        "usage adds up across turns"
    );
    let finished = events
        .iter()
        .find(|e| e.event == "tool.finished")
        .expect("the tool ran");
    assert_eq!(finished.data["is_error"], false);

    let second = &fake.requests()[1].body;
    let messages = second["messages"].as_array().unwrap();
    let assistant = &messages[messages.len() - 2];
    assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
    assert_eq!(assistant["tool_calls"][0]["function"]["arguments"], "{}");
    let tool = &messages[messages.len() - 1];
    assert_eq!(tool["role"], "tool");
    assert_eq!(tool["tool_call_id"], "call_1");
    let result: Value = serde_json::from_str(tool["content"].as_str().unwrap()).unwrap();
    assert_eq!(result, finished.data["result"]);
}

#[tokio::test]
async fn a_rate_limit_is_retried_and_each_attempt_is_a_step() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(429, "slow down", Some(0)));
    fake.push(Reply::error(500, "oops", None));
    fake.push(Reply::text(&["Fine."], Some((3, 1))));
    let app = app_with(&fake).await;
    let (run, events) = app.run_to_end("retry me").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(deltas_of(&events), "Fine.");
    let (_, steps) = app
        .get(&format!("/v1/runs/{}/steps", run["id"].as_str().unwrap()))
        .await;
    let statuses: Vec<&str> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "completed"]);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_fail_the_run_with_a_clear_error() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::error(500, "the model is on fire", None));
    let app = app_with(&fake).await;
    let (run, events) = app.run_to_end("hello?").await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "provider_error");
    assert_eq!(fake.requests().len(), 3, "bounded retries");
    let last = events.last().unwrap();
    assert_eq!(last.event, "run.failed");
    assert_eq!(last.data["error"], run["error"]);
}

#[tokio::test]
async fn a_bad_request_fails_at_once_without_retrying() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(400, "unknown parameter", None));
    let app = app_with(&fake).await;
    let (run, _) = app.run_to_end("hello?").await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "provider_bad_request");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown parameter")
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_queued_run_sees_the_answer_of_the_run_before_it_in_order() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::delayed(
        std::time::Duration::from_millis(300),
        Reply::text(&["First answer."], Some((1, 1))),
    ));
    fake.push(Reply::text(&["Second answer."], Some((1, 1))));
    let app = app_with(&fake).await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    // The second question is stored while the first is still being answered.
    let first = app.start_run(thread_id, "First question?").await;
    let second = app.start_run(thread_id, "Second question?").await;
    for run in [&first, &second] {
        assert_eq!(
            app.wait_for_run(run["id"].as_str().unwrap()).await["status"],
            "completed"
        );
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let conversation = |i: usize| -> Vec<(String, String)> {
        requests[i].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |role: &str, content: &str| (role.to_owned(), content.to_owned());
    assert_eq!(
        conversation(0),
        [
            pair("system", "You are a helpful assistant."),
            pair("user", "First question?")
        ],
        "the first run does not see the question queued after it"
    );
    assert_eq!(
        conversation(1),
        [
            pair("system", "You are a helpful assistant."),
            pair("user", "First question?"),
            pair("assistant", "First answer."),
            pair("user", "Second question?"),
        ]
    );
}

#[tokio::test]
async fn later_runs_see_earlier_tool_calls_and_results() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "call_7",
        "current_time",
        &["{", "}"],
        Some((5, 2)),
    ));
    fake.push(Reply::text(&["It is noon."], Some((9, 3))));
    fake.push(Reply::text(&["You asked about the time."], Some((12, 4))));
    let app = app_with(&fake).await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    for question in ["What time is it?", "What did I ask?"] {
        let run = app.start_run(thread_id, question).await;
        let run = app.wait_for_run(run["id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "completed", "{run}");
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    let messages = requests[2].body["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "assistant", "user"],
        "{messages:?}"
    );
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_7");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["name"],
        "current_time"
    );
    assert_eq!(messages[3]["tool_call_id"], "call_7");
    let result: Value = serde_json::from_str(messages[3]["content"].as_str().unwrap()).unwrap();
    assert!(result["utc"].is_string(), "{result}");
    assert_eq!(messages[4]["content"], "It is noon.");
    assert_eq!(messages[5]["content"], "What did I ask?");
}

#[tokio::test]
async fn history_is_trimmed_from_the_oldest_end_to_the_context_budget() {
    let fake = FakeLlm::start().await;
    fake.set_default(Reply::text(&["Noted."], Some((1, 1))));
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
context_tokens = 60
"#,
        fake.base_url()
    );
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    // Each question is about 25 tokens (100 characters).
    let questions: Vec<String> = (1..=4).map(|i| format!("{i}{}", "x".repeat(99))).collect();
    for question in &questions {
        let run = app.start_run(thread_id, question).await;
        let run = app.wait_for_run(run["id"].as_str().unwrap()).await;
        assert_eq!(run["status"], "completed", "{run}");
    }
    let last = &fake.requests()[3].body["messages"];
    let contents: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    // 60 tokens: the last answer (~6) and the question (~29) fit, the third
    // question does not.
    assert_eq!(contents, ["Noted.", questions[3].as_str()]);
}
