//! The OpenAI provider against a local server speaking OpenAI's real
//! streaming wire format (`switchyard-fake-llm`): the HTTP client, SSE
//! parsing, fragment assembly and error classification all run for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use switchyard_common::config::{AzureSettings, OpenAiSettings};
use switchyard_fake_llm::{FakeLlm, FakeToolCall, Reply};
use switchyard_worker::providers::openai::OpenAi;
use switchyard_worker::providers::{
    ChatMessage, ChatRequest, Provider, ProviderError, ToolCall, ToolSpec,
};

use self::support::{collect, failure, text, tool_call, usage};

const KEY_VAR: &str = "SWITCHYARD_TEST_OPENAI_KEY";
const KEY: &str = "sk-test-4f9a0c2e7b1d";

fn settings(base_url: String, timeout_secs: u64) -> OpenAiSettings {
    OpenAiSettings {
        base_url,
        api_key_env: None,
        timeout_secs,
        max_attempts: 3,
        headers: HashMap::new(),
        azure: None,
    }
}

fn provider(fake: &FakeLlm) -> OpenAi {
    provider_with_timeout(fake, 5)
}

fn provider_with_timeout(fake: &FakeLlm, timeout_secs: u64) -> OpenAi {
    let settings = settings(fake.base_url(), timeout_secs);
    OpenAi::new(&settings, reqwest::Client::new()).expect("valid settings")
}

fn ask(content: &str) -> ChatRequest {
    ChatRequest {
        model: "gpt-test".into(),
        messages: vec![ChatMessage::User {
            content: content.into(),
        }],
        tools: Vec::new(),
    }
}

#[tokio::test]
async fn text_chunks_split_mid_word_arrive_one_by_one_then_usage() {
    let fake = FakeLlm::start().await;
    support::text_arrives_chunk_by_chunk_then_usage(&provider(&fake), &fake, ask("hi")).await;
}

#[tokio::test]
async fn tool_call_fragments_reassemble_into_one_call() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "call_1",
        "get_weather",
        &["{\"ci", "ty\": \"Pa", "ris\"}"],
        Some((20, 9)),
    ));
    let events = collect(&provider(&fake), ask("weather?")).await;
    assert_eq!(
        events,
        [
            tool_call("call_1", "get_weather", "{\"city\": \"Paris\"}"),
            usage(20, 9)
        ]
    );
}

#[tokio::test]
async fn parallel_tool_calls_are_kept_apart_by_index() {
    let fake = FakeLlm::start().await;
    let calls = vec![
        FakeToolCall::new("call_a", "get_weather", &["{\"city\":", " \"Oslo\"}"]),
        FakeToolCall::new("call_b", "get_time", &["{\"tz\": ", "\"Europe/", "Oslo\"}"]),
    ];
    fake.push(Reply::ToolCalls { calls, usage: None });
    let events = collect(&provider(&fake), ask("weather and time?")).await;
    assert_eq!(
        events,
        [
            tool_call("call_a", "get_weather", "{\"city\": \"Oslo\"}"),
            tool_call("call_b", "get_time", "{\"tz\": \"Europe/Oslo\"}"),
        ]
    );
}

#[tokio::test]
async fn sends_openai_request_body_and_headers() {
    let fake = FakeLlm::start().await;
    let mut config = settings(fake.base_url(), 5);
    config
        .headers
        .insert("OpenAI-Organization".into(), "org-test".into());
    let provider = OpenAi::new(&config, reqwest::Client::new()).expect("valid settings");
    let call = ToolCall {
        id: "call_1".into(),
        name: "clock".into(),
        arguments: "{}".into(),
    };
    let request = ChatRequest {
        model: "gpt-test".into(),
        messages: vec![
            ChatMessage::System {
                content: "Be brief.".into(),
            },
            ChatMessage::User {
                content: "What time is it?".into(),
            },
            ChatMessage::Assistant {
                content: String::new(),
                tool_calls: vec![call],
            },
            ChatMessage::Tool {
                tool_call_id: "call_1".into(),
                content: "12:00".into(),
            },
            ChatMessage::Assistant {
                content: "Noon.".into(),
                tool_calls: Vec::new(),
            },
            ChatMessage::User {
                content: "Thanks".into(),
            },
        ],
        tools: vec![ToolSpec {
            name: "clock".into(),
            description: "The current time.".into(),
            parameters: json!({"type": "object", "properties": {}}),
        }],
    };
    assert!(collect(&provider, request).await.iter().all(Result::is_ok));

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What time is it?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
                {"role": "assistant", "content": "Noon."},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "clock",
                "description": "The current time.",
                "parameters": {"type": "object", "properties": {}},
            }}],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    assert_eq!(sent[0].header("openai-organization"), Some("org-test"));
    assert_eq!(sent[0].header("content-type"), Some("application/json"));
    assert_eq!(
        sent[0].header("authorization"),
        None,
        "no api_key_env, no credentials"
    );
}

#[tokio::test]
async fn api_key_from_env_is_sent_and_never_leaks_into_errors() {
    let name = "api_key_from_env_is_sent_and_never_leaks_into_errors";
    if support::ran_in_child_with_env(KEY_VAR, KEY, name) {
        return;
    }

    let fake = FakeLlm::start().await;
    let mut config = settings(fake.base_url(), 5);
    config.api_key_env = Some(KEY_VAR.into());
    let provider = OpenAi::new(&config, reqwest::Client::new()).expect("the key is set");
    assert!(!format!("{provider:?}").contains(KEY));

    assert_eq!(collect(&provider, ask("hi")).await.len(), 6);
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    support::refused_credentials_do_not_leak_the_key(&provider, &fake, ask("hi"), KEY).await;
}

#[tokio::test]
async fn azure_sends_to_the_deployment_with_api_version_and_api_key_header() {
    let name = "azure_sends_to_the_deployment_with_api_version_and_api_key_header";
    if support::ran_in_child_with_env(KEY_VAR, KEY, name) {
        return;
    }

    let fake = FakeLlm::start().await;
    let mut config = settings(fake.origin(), 5);
    config.api_key_env = Some(KEY_VAR.into());
    config.azure = Some(AzureSettings {
        deployment: "gpt-4o prod".into(),
        api_version: "2024-10-21".into(),
    });
    let provider = OpenAi::new(&config, reqwest::Client::new()).expect("valid settings");
    fake.push(Reply::text(&["Hel", "lo"], Some((5, 2))));
    let events = collect(&provider, ask("hi")).await;
    assert_eq!(events, [text("Hel"), text("lo"), usage(5, 2)]);

    let sent = fake.requests();
    assert_eq!(
        sent[0].uri.path(),
        "/openai/deployments/gpt-4o%20prod/chat/completions"
    );
    assert_eq!(sent[0].uri.query(), Some("api-version=2024-10-21"));
    assert_eq!(sent[0].header("api-key"), Some(KEY));
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(sent[0].body["model"], "gpt-test");
}

#[tokio::test]
async fn missing_or_empty_api_key_variable_is_named() {
    let mut config = settings("http://127.0.0.1:9/v1".into(), 5);
    config.api_key_env = Some("SWITCHYARD_TEST_SURELY_UNSET_KEY".into());
    let error = OpenAi::new(&config, reqwest::Client::new()).expect_err("the variable is not set");
    assert!(
        error
            .to_string()
            .contains("SWITCHYARD_TEST_SURELY_UNSET_KEY"),
        "{error}"
    );
}

#[tokio::test]
async fn done_ends_the_stream_even_if_more_follows() {
    let fake = FakeLlm::start().await;
    let chunk = |content: &str| {
        json!({"choices": [{"index": 0, "delta": {"content": content}}]}).to_string()
    };
    fake.push(Reply::Raw {
        events: vec![chunk("a"), "[DONE]".into(), chunk("b")],
    });
    assert_eq!(collect(&provider(&fake), ask("hi")).await, [text("a")]);
}

#[tokio::test]
async fn finish_reason_without_done_is_a_complete_answer() {
    let fake = FakeLlm::start().await;
    let finished =
        json!({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]});
    fake.push(Reply::Raw {
        events: vec![finished.to_string()],
    });
    assert_eq!(collect(&provider(&fake), ask("hi")).await, [text("ok")]);
}

#[tokio::test]
async fn a_stream_cut_short_is_a_retryable_transport_error() {
    let fake = FakeLlm::start().await;
    let partial = json!({"choices": [{"index": 0, "delta": {"content": "Hal"}}]});
    fake.push(Reply::Raw {
        events: vec![partial.to_string()],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Ok(_), Err(ProviderError::Transport(_))]),
        "{events:?}"
    );
    assert!(events[1].as_ref().is_err_and(ProviderError::is_retryable));
}

#[tokio::test]
async fn an_error_chunk_mid_stream_is_classified_by_its_code() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::interrupted(&["Hal"], 429, "slow down"));
    let events = collect(&provider(&fake), ask("hi")).await;
    assert_eq!(
        events,
        [
            text("Hal"),
            Err(ProviderError::RateLimited { retry_after: None })
        ]
    );
}

#[tokio::test]
async fn a_malformed_chunk_is_a_protocol_error() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::Raw {
        events: vec!["{\"choices\": [".into()],
    });
    let events = collect(&provider(&fake), ask("hi")).await;
    assert!(
        matches!(events.as_slice(), [Err(ProviderError::Protocol(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn rate_limit_carries_retry_after_and_is_retryable() {
    let fake = FakeLlm::start().await;
    support::a_rate_limit_carries_retry_after(&provider(&fake), &fake, ask("hi")).await;
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(500, "The server had an error", None));
    fake.push(Reply::error(503, "Overloaded", Some(2)));
    let provider = provider(&fake);
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::Server {
            status: 500,
            message: "The server had an error".into()
        }
    );
    assert!(error.is_retryable());
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::Overloaded {
            retry_after: Some(Duration::from_secs(2))
        }
    );
}

#[tokio::test]
async fn refusals_are_not_retryable() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(400, "Invalid 'messages': empty array", None));
    fake.push(Reply::error(401, "Incorrect API key provided", None));
    let provider = provider(&fake);
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::BadRequest("Invalid 'messages': empty array".into())
    );
    assert!(!error.is_retryable());
    let error = failure(&provider, ask("hi")).await;
    assert_eq!(
        error,
        ProviderError::Auth("Incorrect API key provided".into())
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeout(&fake, 1);
    support::a_server_that_does_not_answer_in_time_is_a_timeout(&provider, &fake, ask("hi")).await;
}

#[tokio::test]
async fn a_stream_that_stalls_between_chunks_is_a_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeout(&fake, 1);
    support::a_stream_that_stalls_is_a_timeout(&provider, &fake, ask("hi")).await;
}

#[tokio::test]
async fn a_long_answer_may_outlast_the_timeout() {
    let fake = FakeLlm::start().await;
    let provider = provider_with_timeout(&fake, 1);
    support::a_long_answer_may_outlast_the_timeout(&provider, &fake, ask("one two three")).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_transport_error() {
    let config = settings(format!("{}/v1", support::closed_origin()), 5);
    let provider = OpenAi::new(&config, reqwest::Client::new()).expect("valid settings");
    support::an_unreachable_server_is_a_retryable_transport_error(&provider, ask("hi")).await;
}

#[test]
fn max_attempts_comes_from_the_settings() {
    let mut config = settings("http://127.0.0.1:9/v1".into(), 5);
    config.max_attempts = 5;
    let provider = OpenAi::new(&config, reqwest::Client::new()).expect("valid settings");
    assert_eq!(provider.max_attempts(), 5);
}
