//! The Anthropic provider against a local server speaking Anthropic's real
//! streaming Messages format (`switchyard-fake-llm`): the HTTP client, SSE
//! parsing, tool-input assembly, usage and error classification all run
//! for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use switchyard_common::config::AnthropicSettings;
use switchyard_common::domain::Usage;
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply};
use switchyard_worker::providers::anthropic::Anthropic;
use switchyard_worker::providers::{
    ChatMessage, ChatRequest, Provider, ProviderError, ProviderEvent, ToolCall, ToolSpec,
};

use self::support::{collect, failure, text, tool_call, usage};

const KEY_VAR: &str = "SWITCHYARD_TEST_ANTHROPIC_KEY";
const KEY: &str = "sk-ant-test-8c1e5f3a9d";

fn settings(base_url: String, timeout_secs: u64) -> AnthropicSettings {
    AnthropicSettings {
        base_url,
        api_key_env: None,
        timeout_secs,
        max_attempts: 3,
        max_tokens: 1024,
        anthropic_version: "2023-06-01".into(),
        headers: HashMap::new(),
    }
}

fn provider(fake: &FakeLlm) -> Anthropic {
    provider_with_timeout(fake, 5)
}

fn provider_with_timeout(fake: &FakeLlm, timeout_secs: u64) -> Anthropic {
    let settings = settings(fake.origin(), timeout_secs);
    Anthropic::new(&settings, reqwest::Client::new()).expect("valid settings")
}

fn ask(content: &str) -> ChatRequest {
    ChatRequest {
        model: "claude-test".into(),
        messages: vec![ChatMessage::User {
            content: content.into(),
        }],
        tools: Vec::new(),
    }
}

/// Hand-written events for [`Reply::Raw`].
fn raw(events: &[Value]) -> Reply {
    Reply::Raw {
        events: events.iter().map(Value::to_string).collect(),
    }
}

fn message_start(input_tokens: u64) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_raw", "type": "message", "role": "assistant", "content": [],
        "model": "claude-test", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }})
}

fn text_block(index: u32, text: &str) -> [Value; 2] {
    [
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
    ]
}

fn message_delta(output_tokens: u64) -> Value {
    json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})
}

#[tokio::test]
async fn text_chunks_split_mid_word_arrive_one_by_one_then_usage() {
    let fake = FakeLlm::start().await;
    support::text_arrives_chunk_by_chunk_then_usage(&provider(&fake), &fake, ask("hi")).await;
    let sent = fake.requests();
    assert_eq!(sent[0].uri.path(), "/v1/messages");
    assert!(sent[0].body.get("system").is_none(), "no system prompt");
}

#[tokio::test]
async fn tool_input_fragments_reassemble_into_one_call() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "toolu_1",
        "get_weather",
        &["{\"ci", "ty\": \"Pa", "ris\"}"],
        Some((20, 9)),
    ));
    let events = collect(&provider(&fake), ask("weather?")).await;
    assert_eq!(
        events,
        [
            tool_call("toolu_1", "get_weather", "{\"city\": \"Paris\"}"),
            usage(20, 9)
        ]
    );
}

#[tokio::test]
async fn parallel_tool_use_blocks_are_kept_apart_by_index() {
    let fake = FakeLlm::start().await;
    let calls = vec![
        FakeToolCall::new("toolu_a", "get_weather", &["{\"city\":", " \"Oslo\"}"]),
        FakeToolCall::new(
            "toolu_b",
            "get_time",
            &["{\"tz\": ", "\"Europe/", "Oslo\"}"],
        ),
    ];
    fake.push(Reply::ToolCalls { calls, usage: None });
    let events = collect(&provider(&fake), ask("weather and time?")).await;
    assert_eq!(
        events,
        [
            tool_call("toolu_a", "get_weather", "{\"city\": \"Oslo\"}"),
            tool_call("toolu_b", "get_time", "{\"tz\": \"Europe/Oslo\"}"),
        ]
    );
}

#[tokio::test]
async fn a_tool_use_without_input_fragments_has_empty_object_arguments() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call("toolu_1", "current_time", &[], None));
    let events = collect(&provider(&fake), ask("time?")).await;
    assert_eq!(events, [tool_call("toolu_1", "current_time", "{}")]);
}

#[tokio::test]
async fn usage_counts_cached_prompt_tokens_as_input_and_other_blocks_are_skipped() {
    let fake = FakeLlm::start().await;
    let start = json!({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "model": "claude-test", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 30, "cache_creation_input_tokens": 200,
                  "cache_read_input_tokens": 1000, "output_tokens": 1},
    }});
    let [text_start, text_delta] = text_block(1, "Hi.");
    fake.push(raw(&[
        start,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Greet."}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "ping"}),
        text_start,
        text_delta,
        json!({"type": "content_block_stop", "index": 1}),
        message_delta(7),
        json!({"type": "message_stop"}),
    ]));
    let events = collect(&provider(&fake), ask("hi")).await;
    let expected = Usage {
        input_tokens: 1230,
        output_tokens: 7,
        cached_input_tokens: 1000,
    };
    assert_eq!(events, [text("Hi."), Ok(ProviderEvent::Usage(expected))]);
}

#[tokio::test]
async fn sends_anthropic_request_body_and_headers() {
    let fake = FakeLlm::start().await;
    let mut config = settings(fake.origin(), 5);
    config
        .headers
        .insert("anthropic-beta".into(), "test-beta-1".into());
    let provider = Anthropic::new(&config, reqwest::Client::new()).expect("valid settings");
    let call = |id: &str, arguments: &str| ToolCall {
        id: id.into(),
        name: "clock".into(),
        arguments: arguments.into(),
    };
    let result = |id: &str, content: &str| ChatMessage::Tool {
        tool_call_id: id.into(),
        content: content.into(),
    };
    let request = ChatRequest {
        model: "claude-test".into(),
        messages: vec![
            ChatMessage::System {
                content: "Be brief.".into(),
            },
            ChatMessage::System {
                content: "Answer in English.".into(),
            },
            ChatMessage::User {
                content: "What time is it in Oslo and Lima?".into(),
            },
            ChatMessage::Assistant {
                content: "Checking.".into(),
                tool_calls: vec![
                    call("toolu_1", "{\"tz\": \"Europe/Oslo\"}"),
                    call("toolu_2", "{\"tz\": \"America/"),
                    call("toolu_3", ""),
                ],
            },
            result("toolu_1", "12:00"),
            result("toolu_2", "arguments are not valid JSON"),
            result("toolu_3", "06:00"),
            ChatMessage::User {
                content: "And?".into(),
            },
            ChatMessage::Assistant {
                content: "Noon and six.".into(),
                tool_calls: Vec::new(),
            },
            ChatMessage::User {
                content: "Thanks".into(),
            },
        ],
        tools: vec![ToolSpec {
            name: "clock".into(),
            description: "The current time.".into(),
            parameters: json!({"type": "object", "properties": {"tz": {"type": "string"}}}),
        }],
    };
    assert!(collect(&provider, request).await.iter().all(Result::is_ok));

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        json!({
            "model": "claude-test",
            "max_tokens": 1024,
            "system": "Be brief.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What time is it in Oslo and Lima?"},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "clock", "input": {"tz": "Europe/Oslo"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "clock",
                     "input": {"invalid_arguments": "{\"tz\": \"America/"}},
                    {"type": "tool_use", "id": "toolu_3", "name": "clock", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "arguments are not valid JSON"},
                    {"type": "tool_result", "tool_use_id": "toolu_3", "content": "06:00"},
                    {"type": "text", "text": "And?"},
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "Noon and six."}]},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
            ],
            "tools": [{
                "name": "clock",
                "description": "The current time.",
                "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
            }],
            "stream": true,
        })
    );
    assert_eq!(sent[0].uri.path(), "/v1/messages");
    assert_eq!(sent[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent[0].header("anthropic-beta"), Some("test-beta-1"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(
        sent[0].header("x-api-key"),
        None,
        "no api_key_env, no credentials"
    );
    assert_eq!(sent[0].header("authorization"), None);
}

#[tokio::test]
async fn api_key_from_env_is_sent_as_x_api_key_and_never_leaks_into_errors() {
    let name = "api_key_from_env_is_sent_as_x_api_key_and_never_leaks_into_errors";
    if support::ran_in_child_with_env(KEY_VAR, KEY, name) {
        return;
    }

    let fake = FakeLlm::start().await;
    let mut config = settings(fake.origin(), 5);
    config.api_key_env = Some(KEY_VAR.into());
    let provider = Anthropic::new(&config, reqwest::Client::new()).expect("the key is set");
    assert!(!format!("{provider:?}").contains(KEY));

    assert_eq!(collect(&provider, ask("hi")).await.len(), 6);
    assert_eq!(fake.requests()[0].header("x-api-key"), Some(KEY));
    assert_eq!(fake.requests()[0].header("authorization"), None);

    support::refused_credentials_do_not_leak_the_key(&provider, &fake, ask("hi"), KEY).await;
}

#[tokio::test]
async fn rate_limit_carries_retry_after_and_is_retryable() {
    let fake = FakeLlm::start().await;
    support::a_rate_limit_carries_retry_after(&provider(&fake), &fake, ask("hi")).await;
}

#[tokio::test]
async fn overloaded_and_server_errors_are_retryable() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(529, "Overloaded", None));
    fake.push(Reply::error(500, "Internal server error", None));
    let provider = provider(&fake);
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(error, ProviderError::Overloaded { retry_after: None });
    assert!(error.is_retryable());
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::Server {
            status: 500,
            message: "Internal server error".into()
        }
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn refusals_carry_anthropics_message_and_are_not_retryable() {
    let fake = FakeLlm::start().await;
    let provider = provider(&fake);
    type Refusal = fn(String) -> ProviderError;
    let cases: [(u16, &str, Refusal); 5] = [
        (400, "max_tokens: Field required", ProviderError::BadRequest),
        (404, "model: claude-nope", ProviderError::BadRequest),
        (
            413,
            "Request exceeds the maximum size",
            ProviderError::BadRequest,
        ),
        (401, "invalid x-api-key", ProviderError::Auth),
        (403, "no access to this model", ProviderError::Auth),
    ];
    for (status, message, kind) in cases {
        fake.push(Reply::error(status, message, None));
        let error = failure(&provider, ask("hi")).await;
        assert_eq!(error, kind(message.into()), "HTTP {status}");
        assert!(!error.is_retryable());
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_is_classified_by_its_type() {
    let fake = FakeLlm::start().await;
    let provider = provider(&fake);
    let cases = [
        (529, ProviderError::Overloaded { retry_after: None }),
        (429, ProviderError::RateLimited { retry_after: None }),
        (
            500,
            ProviderError::Server {
                status: 500,
                message: "boom".into(),
            },
        ),
        (400, ProviderError::BadRequest("boom".into())),
        (401, ProviderError::Auth("boom".into())),
        (403, ProviderError::Auth("boom".into())),
    ];
    for (status, expected) in cases {
        fake.push(Reply::interrupted(&["Hel", "lo"], status, "boom"));
        let events = collect(&provider, ask("hi")).await;
        assert_eq!(
            events,
            [text("Hel"), text("lo"), Err(expected)],
            "error type for {status}"
        );
    }
    let sent = fake.requests();
    assert_eq!(sent.len(), 6);
}

#[tokio::test]
async fn message_stop_ends_the_stream_even_if_more_follows() {
    let fake = FakeLlm::start().await;
    let [start_a, delta_a] = text_block(0, "a");
    let [_, delta_b] = text_block(0, "b");
    fake.push(raw(&[
        message_start(3),
        start_a,
        delta_a,
        message_delta(1),
        json!({"type": "message_stop"}),
        delta_b,
    ]));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert_eq!(events, [text("a"), usage(3, 1)]);
}

#[tokio::test]
async fn message_delta_without_message_stop_is_a_complete_answer() {
    let fake = FakeLlm::start().await;
    let [start, delta] = text_block(0, "ok");
    fake.push(raw(&[message_start(3), start, delta, message_delta(1)]));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert_eq!(events, [text("ok"), usage(3, 1)]);
}

/// Like the OpenAI provider: a connection that closes before the model
/// finished is a dropped answer, worth another attempt.
#[tokio::test]
async fn a_stream_cut_short_is_a_retryable_transport_error() {
    let fake = FakeLlm::start().await;
    let [start, delta] = text_block(0, "Hal");
    fake.push(raw(&[message_start(3), start, delta]));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Ok(_), Err(ProviderError::Transport(_))]),
        "{events:?}"
    );
    assert!(events[1].as_ref().is_err_and(ProviderError::is_retryable));
}

#[tokio::test]
async fn a_malformed_event_is_a_protocol_error() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Raw {
        events: vec![
            message_start(3).to_string(),
            "{\"type\": \"content_block_delta\", \"index\": ".into(),
        ],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Err(ProviderError::Protocol(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn tool_input_for_a_block_never_started_is_a_protocol_error() {
    let fake = FakeLlm::start().await;
    let fragment = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}});
    fake.push(raw(&[message_start(3), fragment]));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Err(ProviderError::Protocol(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_stream_that_stalls_between_events_is_a_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeout(&fake, 1);
    support::a_stream_that_stalls_is_a_timeout(&provider, &fake, ask("hi")).await;
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeout(&fake, 1);
    support::a_server_that_does_not_answer_in_time_is_a_timeout(&provider, &fake, ask("hi")).await;
}

#[tokio::test]
async fn a_long_answer_may_outlast_the_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeout(&fake, 1);
    support::a_long_answer_may_outlast_the_timeout(&provider, &fake, ask("one two three")).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_transport_error() {
    let config = settings(support::closed_origin(), 5);
    let provider = Anthropic::new(&config, reqwest::Client::new()).expect("valid settings");
    support::an_unreachable_server_is_a_retryable_transport_error(&provider, ask("hi")).await;
}

#[tokio::test]
async fn a_base_url_that_is_not_http_is_refused() {
    let config = settings("ftp://api.anthropic.com".into(), 5);
    let error = Anthropic::new(&config, reqwest::Client::new()).expect_err("not http");
    assert!(error.to_string().contains("http or https"), "{error}");
}

#[test]
fn max_attempts_comes_from_the_settings() {
    let mut config = settings("http://127.0.0.1:9".into(), 5);
    config.max_attempts = 5;
    let provider = Anthropic::new(&config, reqwest::Client::new()).expect("valid settings");
    assert_eq!(provider.max_attempts(), 5);
}
