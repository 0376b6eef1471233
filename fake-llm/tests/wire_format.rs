//! The bytes the fake sends, checked against OpenAI's published streaming
//! format with a plain HTTP client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply, stream_text};

/// POST `body` and return the status, the headers and the SSE `data:`
/// payloads in order.
async fn call(fake: &FakeLlm, body: Value) -> (u16, reqwest::header::HeaderMap, Vec<String>) {
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.base_url()))
        .bearer_auth("sk-fake")
        .json(&body)
        .send()
        .await
        .expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a complete body");
    if status != 200 {
        return (status, headers, vec![text]);
    }
    assert!(text.ends_with("\n\n"), "{text:?}");
    let events = text.split_terminator("\n\n").map(|event| {
        let data = event.strip_prefix("data: ").expect("only data events");
        data.to_owned()
    });
    (status, headers, events.collect())
}

fn ask(content: &str, include_usage: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": content}],
        "stream": true,
        "stream_options": {"include_usage": include_usage},
    })
}

fn chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let json = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e));
    json.collect::<Result<_, _>>().expect("JSON chunks")
}

#[tokio::test]
async fn text_is_streamed_chunk_by_chunk_with_usage_and_done() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["Hel", "lo"], Some((3, 2))));
    let (status, headers, events) = call(&fake, ask("hi there", true)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");

    let chunks = chunks(&events);
    assert_eq!(
        chunks.len(),
        5,
        "role, 2 contents, finish, usage: {chunks:#?}"
    );
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
    assert_eq!(chunks[1]["usage"], Value::Null);
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    assert_eq!(chunks[4]["usage"], usage);

    let recorded = &fake.requests()[0];
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-fake"));
    assert_eq!(recorded.body["messages"][0]["content"], "hi there");
    assert_eq!(recorded.last_user_message().as_deref(), Some("hi there"));
    let first_token = fake
        .first_token_at("hi there")
        .expect("first token recorded");
    assert_eq!(recorded.first_token_at, Some(first_token));
    assert!(first_token >= recorded.received_at);
}

#[tokio::test]
async fn no_usage_chunk_unless_asked() {
    let fake = FakeLlm::start().await;
    let (_, _, events) = call(&fake, ask("hi", false)).await;
    let chunks = chunks(&events);
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:#?}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| a.len() == 1))
    );
}

#[tokio::test]
async fn tool_calls_come_in_fragments_by_index() {
    let fake = FakeLlm::start().await;
    let calls = vec![
        FakeToolCall::new("call_a", "f", &["{\"x\":", "1}"]),
        FakeToolCall::new("call_b", "g", &["{}"]),
    ];
    fake.push(Reply::ToolCalls { calls, usage: None });
    let (_, _, events) = call(&fake, ask("hi", true)).await;
    let chunks = chunks(&events);
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[1]["tool_calls"][0]["id"], "call_a");
    assert_eq!(deltas[1]["tool_calls"][0]["type"], "function");
    assert_eq!(
        deltas[1]["tool_calls"][0]["function"],
        json!({"name": "f", "arguments": ""})
    );
    assert_eq!(deltas[2]["tool_calls"][0]["index"], 1);
    assert_eq!(
        deltas[3]["tool_calls"][0],
        json!({"index": 0, "function": {"arguments": "{\"x\":"}})
    );
    assert_eq!(
        deltas[4]["tool_calls"][0],
        json!({"index": 1, "function": {"arguments": "{}"}})
    );
    assert_eq!(
        deltas[5]["tool_calls"][0],
        json!({"index": 0, "function": {"arguments": "1}"}})
    );
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn errors_have_openai_shape_and_retry_after() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(429, "slow down", Some(7)));
    let (status, headers, body) = call(&fake, ask("hi", true)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    let body: Value = serde_json::from_str(&body[0]).expect("JSON error");
    assert_eq!(body["error"]["message"], "slow down");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn queue_first_then_default_and_non_streaming_refused() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["queued"], None));
    fake.set_default(Reply::text(&["default"], None));
    for expected in ["queued", "default", "default"] {
        let (_, _, events) = call(&fake, ask("hi", false)).await;
        assert_eq!(
            chunks(&events)[1]["choices"][0]["delta"]["content"],
            expected
        );
    }
    let (status, _, _) = call(&fake, json!({"model": "m", "messages": []})).await;
    assert_eq!(status, 400);
    assert_eq!(fake.requests().len(), 4);
    fake.clear_requests();
    assert!(fake.requests().is_empty());
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
        let (_, _, events) = call(&fake, ask("one two", true)).await;
        let chunks = chunks(&events);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, stream_text(tokens));
        assert_eq!(chunks.len(), tokens + 3, "role, tokens, finish, usage");
        let usage = chunks.last().map(|c| c["usage"].clone());
        assert_eq!(
            usage,
            Some(
                json!({"prompt_tokens": 2, "completion_tokens": tokens, "total_tokens": tokens + 2})
            )
        );
    }
}

#[tokio::test]
async fn an_interrupted_stream_ends_with_an_error_chunk() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::interrupted(&["Hal"], 503, "overloaded"));
    let (status, _, events) = call(&fake, ask("hi", true)).await;
    assert_eq!(status, 200);
    assert_eq!(events.len(), 3, "role, content, error: {events:#?}");
    let error: Value = serde_json::from_str(&events[2]).expect("JSON error chunk");
    assert_eq!(error["error"]["message"], "overloaded");
    assert_eq!(error["error"]["code"], 503);
}

#[tokio::test]
async fn azure_deployment_path_is_served_and_recorded() {
    let fake = FakeLlm::start().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            fake.origin()
        ))
        .header("api-key", "azure-fake")
        .json(&ask("hi", true))
        .send()
        .await
        .expect("the fake answers");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("a complete body");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");

    let recorded = &fake.requests()[0];
    assert_eq!(
        recorded.uri.path(),
        "/openai/deployments/gpt-4o/chat/completions"
    );
    assert_eq!(recorded.uri.query(), Some("api-version=2024-10-21"));
    assert_eq!(recorded.header("api-key"), Some("azure-fake"));
}
