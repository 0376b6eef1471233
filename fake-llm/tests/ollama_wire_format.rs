//! The bytes the fake sends on Ollama's `POST /api/chat`, checked against
//! Ollama's documented streaming format with a plain HTTP client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply, stream_text};

/// POST `body` and return the status, the headers and the body: the JSON
/// lines of a streamed answer, or the error body as one value.
async fn call(fake: &FakeLlm, body: Value) -> (u16, reqwest::header::HeaderMap, Vec<Value>) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/chat", fake.origin()))
        .json(&body)
        .send()
        .await
        .expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a complete body");
    if status != 200 {
        let body = serde_json::from_str(&text).expect("a JSON error body");
        return (status, headers, vec![body]);
    }
    assert!(text.ends_with('\n'), "{text:?}");
    let lines = text.lines().map(serde_json::from_str);
    let lines = lines.collect::<Result<_, _>>().expect("JSON lines");
    (status, headers, lines)
}

fn ask(content: &str) -> Value {
    json!({
        "model": "qwen3",
        "messages": [{"role": "user", "content": content}],
    })
}

#[tokio::test]
async fn text_is_streamed_line_by_line_then_a_done_line_with_counts() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["Hel", "lo", " there"], Some((3, 2))));
    let (status, headers, lines) = call(&fake, ask("hi there")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-ndjson");

    assert_eq!(lines.len(), 4, "3 contents, done: {lines:#?}");
    for (line, content) in lines.iter().zip(["Hel", "lo", " there"]) {
        assert_eq!(line["model"], "qwen3");
        assert!(
            line["created_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(
            line["message"],
            json!({"role": "assistant", "content": content})
        );
        assert_eq!(line["done"], false);
    }
    let done = &lines[3];
    assert_eq!(done["done"], true);
    assert_eq!(done["done_reason"], "stop");
    assert_eq!(done["message"]["content"], "");
    assert_eq!(done["prompt_eval_count"], 3);
    assert_eq!(done["eval_count"], 2);
    assert!(done["total_duration"].is_u64());

    let recorded = &fake.requests()[0];
    assert_eq!(recorded.body["messages"][0]["content"], "hi there");
    let first_token = fake
        .first_token_at("hi there")
        .expect("first token recorded");
    assert_eq!(recorded.first_token_at, Some(first_token));
}

#[tokio::test]
async fn tool_calls_come_whole_on_one_line_without_ids() {
    let fake = FakeLlm::start().await;
    let calls = vec![
        FakeToolCall::new("call_a", "f", &["{\"x\":", "1}"]),
        FakeToolCall::new("call_b", "g", &["{}"]),
    ];
    fake.push(Reply::ToolCalls { calls, usage: None });
    let (_, _, lines) = call(&fake, ask("hi")).await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(
        lines[0]["message"],
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "f", "arguments": {"x": 1}}},
            {"function": {"name": "g", "arguments": {}}},
        ]})
    );
    assert_eq!(lines[1]["done"], true);
    assert!(
        lines[1].get("prompt_eval_count").is_none(),
        "no usage, no counts"
    );
}

#[tokio::test]
async fn errors_have_ollama_shape_and_retry_after() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(404, "model 'qwen3' not found", None));
    fake.push(Reply::error(429, "slow down", Some(7)));
    let (status, _, body) = call(&fake, ask("hi")).await;
    assert_eq!(status, 404);
    assert_eq!(body[0], json!({"error": "model 'qwen3' not found"}));
    let (status, headers, body) = call(&fake, ask("hi")).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(body[0], json!({"error": "slow down"}));
}

#[tokio::test]
async fn an_interrupted_stream_ends_with_an_error_line() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::interrupted(
        &["Hal", "lo"],
        500,
        "model runner stopped",
    ));
    let (status, _, lines) = call(&fake, ask("hi")).await;
    assert_eq!(status, 200);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[1]["message"]["content"], "lo");
    assert_eq!(lines[2], json!({"error": "model runner stopped"}));
}

#[tokio::test]
async fn raw_lines_are_sent_as_they_are() {
    let fake = FakeLlm::start().await;
    let lines = [
        "{\"error\":\"boom\"}",
        "{\"a\":1}",
        "{\"b\":2}",
        "{\"c\":3}",
    ];
    fake.push(Reply::Raw {
        events: lines.iter().map(|l| (*l).to_owned()).collect(),
    });
    let (_, _, received) = call(&fake, ask("hi")).await;
    let expected: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn streaming_is_the_default_and_non_streaming_is_refused() {
    let fake = FakeLlm::start().await;
    let (status, _, _) = call(&fake, ask("hi")).await;
    assert_eq!(status, 200);
    let mut body = ask("hi");
    body["stream"] = json!(false);
    let (status, _, body) = call(&fake, body).await;
    assert_eq!(status, 400);
    assert!(body[0]["error"].is_string(), "{body:?}");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn benchmark_streams_carry_every_token() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Stream {
        tokens: 1000,
        interval: Duration::ZERO,
    });
    fake.push(Reply::Stream {
        tokens: 3,
        interval: Duration::from_millis(5),
    });
    for tokens in [1000, 3] {
        let (_, _, lines) = call(&fake, ask("one two")).await;
        assert_eq!(lines.len(), tokens + 1, "tokens, done");
        let content: String = lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        assert_eq!(content, stream_text(tokens));
        let done = lines.last().expect("a done line");
        assert_eq!(done["done"], true);
        assert_eq!(done["prompt_eval_count"], 2);
        assert_eq!(done["eval_count"], tokens);
    }
}
