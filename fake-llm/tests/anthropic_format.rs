//! The bytes the fake sends on `/v1/messages`, checked against Anthropic's
//! published streaming Messages format with a plain HTTP client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply, stream_text};

/// POST `body` to `/v1/messages` and return the status, the headers and
/// the body: its events as `(event name, data)` if it streamed, else the
/// JSON error.
async fn call(fake: &FakeLlm, body: Value) -> (u16, reqwest::header::HeaderMap, Answer) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", fake.origin()))
        .header("x-api-key", "sk-ant-fake")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a complete body");
    if status != 200 {
        let error = serde_json::from_str(&text).expect("a JSON error body");
        return (status, headers, Answer::Error(error));
    }
    assert!(text.ends_with("\n\n"), "{text:?}");
    let events = text.split_terminator("\n\n").map(|event| {
        let (name, data) = match event.split_once('\n') {
            Some((name, data)) => (name.strip_prefix("event: "), data),
            None => (None, event),
        };
        let data = data.strip_prefix("data: ").expect("a data line");
        (name.map(str::to_owned), data.to_owned())
    });
    (status, headers, Answer::Events(events.collect()))
}

enum Answer {
    Events(Vec<(Option<String>, String)>),
    Error(Value),
}

impl Answer {
    /// The events' JSON, each checked to be named by its `type`.
    fn events(self) -> Vec<Value> {
        let Self::Events(events) = self else {
            panic!("expected a stream");
        };
        let parse = |(name, data): (Option<String>, String)| {
            let json: Value = serde_json::from_str(&data).expect("JSON data");
            assert_eq!(name.as_deref(), json["type"].as_str(), "{data}");
            json
        };
        events.into_iter().map(parse).collect()
    }

    fn error(self) -> Value {
        let Self::Error(error) = self else {
            panic!("expected an error body");
        };
        error
    }
}

fn ask(content: &str) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": content}]}],
        "stream": true,
    })
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

#[tokio::test]
async fn text_is_one_block_between_message_start_and_message_stop() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["Hel", "lo"], Some((3, 2))));
    let (status, headers, answer) = call(&fake, ask("hi there")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");

    let events = answer.events();
    assert_eq!(
        types(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let message = &events[0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-test");
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["usage"]["input_tokens"], 3);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(
        events[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        events[3]["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(events[4]["delta"]["text"], "lo");
    assert_eq!(events[5]["index"], 0);
    assert_eq!(events[6]["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[6]["usage"], json!({"output_tokens": 2}));

    let recorded = &fake.requests()[0];
    assert_eq!(recorded.uri.path(), "/v1/messages");
    assert_eq!(recorded.header("x-api-key"), Some("sk-ant-fake"));
    assert_eq!(recorded.last_user_message().as_deref(), Some("hi there"));
    let first_token = fake
        .first_token_at("hi there")
        .expect("first token recorded");
    assert_eq!(recorded.first_token_at, Some(first_token));
}

#[tokio::test]
async fn without_usage_the_usage_objects_are_left_out() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["Hi"], None));
    let events = call(&fake, ask("hi")).await.2.events();
    assert!(events[0]["message"].get("usage").is_none());
    let delta = events.iter().find(|e| e["type"] == "message_delta");
    assert!(
        delta.is_some_and(|d| d.get("usage").is_none()),
        "{events:#?}"
    );
}

#[tokio::test]
async fn tool_calls_are_tool_use_blocks_in_turn_with_input_json_fragments() {
    let fake = FakeLlm::start().await;
    let calls = vec![
        FakeToolCall::new("toolu_a", "f", &["{\"x\":", "1}"]),
        FakeToolCall::new("toolu_b", "g", &["{}"]),
    ];
    fake.push(Reply::ToolCalls {
        calls,
        usage: Some((5, 9)),
    });
    let events = call(&fake, ask("hi")).await.2.events();
    assert_eq!(
        types(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        events[1]["content_block"],
        json!({"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}})
    );
    let fragments: Vec<(u64, &str)> = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| {
            assert_eq!(e["delta"]["type"], "input_json_delta");
            let index = e["index"].as_u64().expect("an index");
            (index, e["delta"]["partial_json"].as_str().expect("json"))
        })
        .collect();
    assert_eq!(
        fragments,
        [(0, ""), (0, "{\"x\":"), (0, "1}"), (1, ""), (1, "{}")]
    );
    assert_eq!(events[7]["content_block"]["id"], "toolu_b");
    assert_eq!(events[12]["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[12]["usage"]["output_tokens"], 9);
}

#[tokio::test]
async fn errors_have_anthropic_shape_and_retry_after() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(429, "slow down", Some(7)));
    fake.push(Reply::error(529, "Overloaded", None));
    let (status, headers, answer) = call(&fake, ask("hi")).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(
        answer.error(),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
    let (status, _, answer) = call(&fake, ask("hi")).await;
    assert_eq!(status, 529);
    assert_eq!(answer.error()["error"]["type"], "overloaded_error");

    let (status, _, answer) = call(&fake, json!({"model": "m", "messages": []})).await;
    assert_eq!(status, 400);
    assert_eq!(answer.error()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn an_interrupted_stream_ends_with_an_error_event() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::interrupted(&["Hal"], 529, "Overloaded"));
    let events = call(&fake, ask("hi")).await.2.events();
    assert_eq!(
        types(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[4]["error"],
        json!({"type": "overloaded_error", "message": "Overloaded"})
    );
}

#[tokio::test]
async fn raw_events_are_sent_as_is_named_by_their_type() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Raw {
        events: vec!["{\"type\": \"ping\"}".into(), "{\"index\": ".into()],
    });
    let (_, _, answer) = call(&fake, ask("hi")).await;
    let Answer::Events(events) = answer else {
        panic!("expected a stream");
    };
    assert_eq!(
        events,
        [
            (Some("ping".into()), "{\"type\": \"ping\"}".into()),
            (None, "{\"index\": ".into()),
        ]
    );
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
        let events = call(&fake, ask("one two")).await.2.events();
        let content: String = events
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(content, stream_text(tokens));
        assert_eq!(types(&events).last(), Some(&"message_stop"));
        // "Be brief." and "one two": four words.
        assert_eq!(events[0]["message"]["usage"]["input_tokens"], 4);
        let delta = &events[events.len() - 2];
        assert_eq!(delta["usage"]["output_tokens"], tokens);
    }
}
