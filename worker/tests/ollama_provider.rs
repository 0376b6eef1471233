//! The Ollama provider against a local server speaking Ollama's real
//! `/api/chat` wire format (`switchyard-fake-llm`): the HTTP client, the
//! cutting of JSON lines from reads that end anywhere, and error
//! classification all run for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_common::config::{KeepAlive, OllamaSettings};
use switchyard_common::domain::Usage;
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply};
use switchyard_worker::providers::ollama::Ollama;
use switchyard_worker::providers::{
    ChatMessage, ChatRequest, Provider, ProviderError, ProviderEvent, ToolCall, ToolSpec,
};

use self::support::{collect, failure, text, tool_call, usage};

const KEY_VAR: &str = "SWITCHYARD_TEST_OLLAMA_KEY";
const KEY: &str = "ollama-test-8c3e51f02a";

fn settings(base_url: String) -> OllamaSettings {
    OllamaSettings {
        base_url,
        api_key_env: None,
        start_timeout_secs: 5,
        timeout_secs: 5,
        max_attempts: 3,
        headers: HashMap::new(),
        options: serde_json::Map::new(),
        keep_alive: None,
    }
}

fn provider(fake: &FakeLlm) -> Ollama {
    Ollama::new(&settings(fake.origin()), reqwest::Client::new()).expect("valid settings")
}

fn provider_with_timeouts(fake: &FakeLlm, start_timeout_secs: u64, timeout_secs: u64) -> Ollama {
    let config = OllamaSettings {
        start_timeout_secs,
        timeout_secs,
        ..settings(fake.origin())
    };
    Ollama::new(&config, reqwest::Client::new()).expect("valid settings")
}

fn ask(content: &str) -> ChatRequest {
    ChatRequest {
        model: "qwen3".into(),
        messages: vec![ChatMessage::User {
            content: content.into(),
        }],
        tools: Vec::new(),
    }
}

/// A line of Ollama's answer carrying `content`.
fn content_line(content: &str) -> String {
    json!({
        "model": "qwen3",
        "created_at": "2025-05-27T22:54:57.641643Z",
        "message": {"role": "assistant", "content": content},
        "done": false,
    })
    .to_string()
}

/// Ollama's last line, with `counts` (`prompt_eval_count`, ...) added.
fn done_line(counts: Value) -> String {
    let mut line = json!({
        "model": "qwen3",
        "created_at": "2025-05-27T22:54:58.100509Z",
        "message": {"role": "assistant", "content": ""},
        "done": true,
        "done_reason": "stop",
        "total_duration": 885095291u64,
    });
    if let (Some(line), Value::Object(counts)) = (line.as_object_mut(), counts) {
        line.extend(counts);
    }
    line.to_string()
}

#[tokio::test]
async fn text_lines_arrive_one_by_one_then_usage() {
    let fake = FakeLlm::start().await;
    support::text_arrives_chunk_by_chunk_then_usage(&provider(&fake), &fake, ask("hi")).await;
}

/// The fake writes some lines in three pieces, cut inside a character at
/// times, and some two lines at once.
#[tokio::test]
async fn lines_cut_across_writes_are_put_back_together() {
    let fake = FakeLlm::start().await;
    let long = "日本語のテキスト、".repeat(12);
    let chunks = [
        "Grüße aus Köln — ",
        &long,
        "ça va très bien, ",
        " 🦀🦀🦀",
        "🦀…🦀",
        " fin.",
    ];
    fake.push(Reply::text(&chunks, Some((7, 6))));
    let events = collect(&provider(&fake), ask("hi")).await;
    let mut expected: Vec<_> = chunks.iter().map(|c| text(c)).collect();
    expected.push(usage(7, 6));
    assert_eq!(events, expected);
}

#[tokio::test]
async fn a_tool_call_arrives_whole_with_its_arguments_as_json_text() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "unused",
        "get_weather",
        &["{\"city\": ", "\"Paris\", \"days\": [1, 2]}"],
        Some((20, 9)),
    ));
    let events = collect(&provider(&fake), ask("weather?")).await;
    assert_eq!(
        events,
        [
            tool_call(
                "call_0",
                "get_weather",
                "{\"city\":\"Paris\",\"days\":[1,2]}"
            ),
            usage(20, 9)
        ]
    );
}

#[tokio::test]
async fn two_tool_calls_in_one_turn_get_ids_of_their_own() {
    let fake = FakeLlm::start().await;
    let calls = vec![
        FakeToolCall::new("a", "get_weather", &["{\"city\": \"Oslo\"}"]),
        FakeToolCall::new("b", "get_time", &["{}"]),
    ];
    fake.push(Reply::ToolCalls { calls, usage: None });
    let events = collect(&provider(&fake), ask("weather and time?")).await;
    assert_eq!(
        events,
        [
            tool_call("call_0", "get_weather", "{\"city\":\"Oslo\"}"),
            tool_call("call_1", "get_time", "{}"),
            usage(0, 0),
        ]
    );
}

#[tokio::test]
async fn tool_calls_on_separate_lines_are_numbered_in_order() {
    let fake = FakeLlm::start().await;
    let calls_line = |name: &str| {
        json!({
            "message": {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": name, "arguments": {"q": name}}}
            ]},
            "done": false,
        })
        .to_string()
    };
    fake.push(Reply::Raw {
        events: vec![
            content_line("Let me check."),
            calls_line("first"),
            calls_line("second"),
            done_line(json!({})),
        ],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert_eq!(
        events,
        [
            text("Let me check."),
            tool_call("call_0", "first", "{\"q\":\"first\"}"),
            tool_call("call_1", "second", "{\"q\":\"second\"}"),
            usage(0, 0),
        ]
    );
}

#[tokio::test]
async fn usage_is_read_from_the_last_line() {
    let fake = FakeLlm::start().await;
    let counts = json!({"prompt_eval_count": 40, "prompt_eval_cached_count": 32, "eval_count": 5});
    fake.push(Reply::Raw {
        events: vec![content_line("ok"), done_line(counts)],
    });
    // Older servers omit `prompt_eval_count` when the whole prompt was cached.
    fake.push(Reply::Raw {
        events: vec![content_line("ok"), done_line(json!({"eval_count": 3}))],
    });
    let provider = provider(&fake);
    let events = collect(&provider, ask("hi")).await;
    let cached = Usage {
        input_tokens: 40,
        output_tokens: 5,
        cached_input_tokens: 32,
    };
    assert_eq!(events, [text("ok"), Ok(ProviderEvent::Usage(cached))]);
    let events = collect(&provider, ask("hi")).await;
    assert_eq!(events, [text("ok"), usage(0, 3)]);
}

#[tokio::test]
async fn sends_ollama_request_body_and_headers() {
    let fake = FakeLlm::start().await;
    let mut config = settings(fake.origin());
    config.headers.insert("X-Team".into(), "search".into());
    config.keep_alive = Some(KeepAlive::Duration("10m".into()));
    let options = json!({"temperature": 0.2, "num_ctx": 8192, "stop": ["</answer>"]});
    if let Value::Object(options) = options {
        config.options = options;
    }
    let provider = Ollama::new(&config, reqwest::Client::new()).expect("valid settings");
    let call = |id: &str, name: &str, arguments: &str| ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    };
    let request = ChatRequest {
        model: "qwen3".into(),
        messages: vec![
            ChatMessage::System {
                content: "Be brief.".into(),
            },
            ChatMessage::User {
                content: "What time is it in Oslo and Lima?".into(),
            },
            ChatMessage::Assistant {
                content: String::new(),
                tool_calls: vec![
                    call("call_0", "clock", "{\"tz\":\"Europe/Oslo\"}"),
                    call("call_1", "clock_v2", "{}"),
                ],
            },
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: "07:00".into(),
            },
            ChatMessage::Tool {
                tool_call_id: "call_0".into(),
                content: "14:00".into(),
            },
            ChatMessage::Assistant {
                content: "Let me look again.".into(),
                tool_calls: vec![call("call_0", "calendar", "{}")],
            },
            // Ids repeat across turns: the latest call with the id counts.
            ChatMessage::Tool {
                tool_call_id: "call_0".into(),
                content: "Monday".into(),
            },
            ChatMessage::Assistant {
                content: "14:00 and 07:00, Monday.".into(),
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
    let events = collect(&provider, request).await;
    assert!(events.iter().all(Result::is_ok), "{events:?}");

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        json!({
            "model": "qwen3",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What time is it in Oslo and Lima?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "clock", "arguments": {"tz": "Europe/Oslo"}}},
                    {"function": {"name": "clock_v2", "arguments": {}}},
                ]},
                {"role": "tool", "content": "07:00", "tool_name": "clock_v2"},
                {"role": "tool", "content": "14:00", "tool_name": "clock"},
                {"role": "assistant", "content": "Let me look again.", "tool_calls": [
                    {"function": {"name": "calendar", "arguments": {}}},
                ]},
                {"role": "tool", "content": "Monday", "tool_name": "calendar"},
                {"role": "assistant", "content": "14:00 and 07:00, Monday."},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "clock",
                "description": "The current time.",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
            }}],
            "stream": true,
            "options": {"temperature": 0.2, "num_ctx": 8192, "stop": ["</answer>"]},
            "keep_alive": "10m",
        })
    );
    assert_eq!(sent[0].header("x-team"), Some("search"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(
        sent[0].header("authorization"),
        None,
        "no api_key_env, no credentials"
    );
}

#[tokio::test]
async fn keep_alive_in_seconds_is_sent_as_a_number() {
    let fake = FakeLlm::start().await;
    let mut config = settings(fake.origin());
    config.keep_alive = Some(KeepAlive::Seconds(-1));
    let provider = Ollama::new(&config, reqwest::Client::new()).expect("valid settings");
    assert!(
        collect(&provider, ask("hi"))
            .await
            .iter()
            .all(Result::is_ok)
    );
    let sent = fake.requests();
    assert_eq!(sent[0].body["keep_alive"], json!(-1));
    assert!(
        sent[0].body.get("options").is_none(),
        "no options, no `options`"
    );
}

#[tokio::test]
async fn tool_call_arguments_that_are_not_an_object_are_not_sent() {
    let fake = FakeLlm::start().await;
    let mut request = ask("hi");
    request.messages.push(ChatMessage::Assistant {
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: "call_0".into(),
            name: "clock".into(),
            arguments: "{\"tz\": ".into(),
        }],
    });
    let events = collect(&provider(&fake), request).await;
    match events.as_slice() {
        [Err(ProviderError::Protocol(message))] => {
            assert!(message.contains("call_0 (clock)"), "{message}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn tool_call_arguments_received_as_something_else_are_a_protocol_error() {
    let fake = FakeLlm::start().await;
    // Fragments that do not join into JSON reach the client as a string.
    fake.push(Reply::tool_call("unused", "clock", &["{\"tz\": "], None));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Err(ProviderError::Protocol(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn api_key_from_env_is_sent_as_bearer_and_never_leaks_into_errors() {
    let name = "api_key_from_env_is_sent_as_bearer_and_never_leaks_into_errors";
    if support::ran_in_child_with_env(KEY_VAR, KEY, name) {
        return;
    }

    let fake = FakeLlm::start().await;
    let mut config = settings(fake.origin());
    config.api_key_env = Some(KEY_VAR.into());
    let provider = Ollama::new(&config, reqwest::Client::new()).expect("the key is set");
    assert!(!format!("{provider:?}").contains(KEY));

    assert!(
        collect(&provider, ask("hi"))
            .await
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    support::refused_credentials_do_not_leak_the_key(&provider, &fake, ask("hi"), KEY).await;
}

#[tokio::test]
async fn a_missing_api_key_variable_is_named() {
    let mut config = settings("http://127.0.0.1:9".into());
    config.api_key_env = Some("SWITCHYARD_TEST_SURELY_UNSET_KEY".into());
    let error = Ollama::new(&config, reqwest::Client::new()).expect_err("the variable is not set");
    assert!(
        error
            .to_string()
            .contains("SWITCHYARD_TEST_SURELY_UNSET_KEY"),
        "{error}"
    );
}

#[tokio::test]
async fn rate_limit_carries_retry_after_and_is_retryable() {
    let fake = FakeLlm::start().await;
    support::a_rate_limit_carries_retry_after(&provider(&fake), &fake, ask("hi")).await;
}

#[tokio::test]
async fn a_model_that_is_not_pulled_is_a_refusal_naming_it() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(404, "model 'qwen3:404b' not found", None));
    let error = failure(&provider(&fake), ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::BadRequest("model 'qwen3:404b' not found".into())
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("qwen3:404b"), "{error}");
}

#[tokio::test]
async fn refused_credentials_and_requests_are_not_retryable() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(401, "unauthorized", None));
    fake.push(Reply::error(
        400,
        "registry.ollama.ai/library/gemma:2b does not support tools",
        None,
    ));
    let provider = provider(&fake);
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(error, ProviderError::Auth("unauthorized".into()));
    assert!(!error.is_retryable());
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::BadRequest(
            "registry.ollama.ai/library/gemma:2b does not support tools".into()
        )
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn server_errors_and_a_full_queue_are_retryable() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(
        500,
        "llama runner process has terminated",
        None,
    ));
    fake.push(Reply::error(
        503,
        "server busy, please try again.  maximum pending requests exceeded",
        None,
    ));
    let provider = provider(&fake);
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::Server {
            status: 500,
            message: "llama runner process has terminated".into()
        }
    );
    assert!(error.is_retryable());
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(error, ProviderError::Overloaded { retry_after: None });
    assert!(error.is_retryable());
}

#[tokio::test]
async fn an_error_line_mid_stream_is_a_retryable_server_error() {
    let fake = FakeLlm::start().await;
    let message = "an error was encountered while running the model";
    fake.push(Reply::interrupted(&["Hal"], 500, message));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert_eq!(
        events,
        [
            text("Hal"),
            Err(ProviderError::Server {
                status: 500,
                message: message.into()
            })
        ]
    );
    assert!(events[1].as_ref().is_err_and(ProviderError::is_retryable));
}

/// As a stream cut short is for the other providers.
#[tokio::test]
async fn an_answer_without_its_last_line_is_a_retryable_transport_error() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Raw {
        events: vec![content_line("Hal"), content_line("lo")],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(
            events.as_slice(),
            [Ok(_), Ok(_), Err(ProviderError::Transport(_))]
        ),
        "{events:?}"
    );
    assert!(events[2].as_ref().is_err_and(ProviderError::is_retryable));
}

#[tokio::test]
async fn the_last_line_ends_the_answer_even_if_more_follows() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Raw {
        events: vec![
            content_line("a"),
            done_line(json!({"prompt_eval_count": 2, "eval_count": 1})),
            content_line("b"),
        ],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert_eq!(events, [text("a"), usage(2, 1)]);
}

#[tokio::test]
async fn a_malformed_line_is_a_protocol_error() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Raw {
        events: vec!["{\"message\": {".into(), done_line(json!({}))],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Err(ProviderError::Protocol(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_start_in_time_is_a_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeouts(&fake, 1, 5);
    support::a_server_that_does_not_answer_in_time_is_a_timeout(&provider, &fake, ask("hi")).await;
}

/// A model loading for longer than `timeout_secs` is not a stalled answer.
#[tokio::test]
async fn a_slow_start_is_waited_for_up_to_the_start_timeout() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::delayed(
        Duration::from_millis(1500),
        Reply::text(&["loaded"], Some((1, 1))),
    ));
    let provider = provider_with_timeouts(&fake, 10, 1);
    let events = collect(&provider, ask("hi")).await;
    assert_eq!(events, [text("loaded"), usage(1, 1)]);
}

#[tokio::test]
async fn a_stream_that_stalls_between_lines_is_a_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeouts(&fake, 30, 1);
    support::a_stream_that_stalls_is_a_timeout(&provider, &fake, ask("hi")).await;
}

#[tokio::test]
async fn a_long_answer_may_outlast_the_timeouts() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeouts(&fake, 1, 1);
    support::a_long_answer_may_outlast_the_timeout(&provider, &fake, ask("one two three")).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_transport_error() {
    let provider = Ollama::new(&settings(support::closed_origin()), reqwest::Client::new())
        .expect("valid settings");
    support::an_unreachable_server_is_a_retryable_transport_error(&provider, ask("hi")).await;
}

#[test]
fn settings_are_checked_and_max_attempts_used() {
    let mut config = settings("http://127.0.0.1:9/".into());
    config.max_attempts = 5;
    let provider = Ollama::new(&config, reqwest::Client::new()).expect("valid settings");
    assert_eq!(provider.max_attempts(), 5);
    assert!(format!("{provider:?}").contains("http://127.0.0.1:9/api/chat"));

    config.start_timeout_secs = 0;
    assert!(Ollama::new(&config, reqwest::Client::new()).is_err());
    let config = settings("ftp://127.0.0.1:9".into());
    let error = Ollama::new(&config, reqwest::Client::new()).expect_err("not http");
    assert!(error.to_string().contains("http or https"), "{error}");
}
