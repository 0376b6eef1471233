//! Helpers shared by the provider tests, and the scenarios every HTTP
//! provider must pass the same way, each run against the fake speaking
//! that provider's format. A scenario takes the provider under test, the
//! fake it points at and the request to send.

use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard_common::domain::Usage;
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_worker::providers::{ChatRequest, Provider, ProviderError, ProviderEvent, ToolCall};

/// One item of a provider's stream.
pub type Item = Result<ProviderEvent, ProviderError>;

/// Everything one call yields.
pub async fn collect(provider: &dyn Provider, request: ChatRequest) -> Vec<Item> {
    provider.stream(request).collect().await
}

/// The single error a call that fails before its first event yields.
pub async fn failure(provider: &dyn Provider, request: ChatRequest) -> ProviderError {
    match collect(provider, request).await.as_slice() {
        [Err(error)] => error.clone(),
        other => panic!("expected a single error, got {other:?}"),
    }
}

pub fn text(content: &str) -> Item {
    Ok(ProviderEvent::TextDelta(content.into()))
}

/// Usage with nothing served from the prompt cache.
pub fn usage(input_tokens: i64, output_tokens: i64) -> Item {
    Ok(ProviderEvent::Usage(Usage {
        input_tokens,
        output_tokens,
        cached_input_tokens: 0,
    }))
}

pub fn tool_call(id: &str, name: &str, arguments: &str) -> Item {
    Ok(ProviderEvent::ToolCall(ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }))
}

/// Whether test `name` ran in a child process whose environment has
/// `var=value` (and passed there); `false` in that child, which then runs
/// the test's body.
///
/// Setting a variable is `unsafe` in edition 2024 (and unsafe code is
/// forbidden), so a test that needs one reruns its own binary.
pub fn ran_in_child_with_env(var: &str, value: &str, name: &str) -> bool {
    if std::env::var(var).is_ok() {
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let child = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture"])
        .env(var, value)
        .output()
        .expect("rerun the test binary");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "child run failed:\n{stdout}\n{stderr}"
    );
    true
}

/// An `http://127.0.0.1:PORT` at which nothing listens.
pub fn closed_origin() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    format!("http://127.0.0.1:{port}")
}

/// Text split mid-word arrives chunk by chunk, then the usage; a request
/// without tools sends no `tools`.
pub async fn text_arrives_chunk_by_chunk_then_usage(
    provider: &dyn Provider,
    fake: &FakeLlm,
    request: ChatRequest,
) {
    fake.push(Reply::text(&["Hel", "lo, wo", "rld", "!"], Some((12, 4))));
    let events = collect(provider, request).await;
    let expected = [
        text("Hel"),
        text("lo, wo"),
        text("rld"),
        text("!"),
        usage(12, 4),
    ];
    assert_eq!(events, expected);
    let sent = fake.requests();
    let body = &sent.last().expect("a request").body;
    assert!(body.get("tools").is_none(), "no tools, no `tools`");
}

/// A 429 is retryable, after the wait its `Retry-After` asks for.
pub async fn a_rate_limit_carries_retry_after(
    provider: &dyn Provider,
    fake: &FakeLlm,
    request: ChatRequest,
) {
    fake.push(Reply::error(429, "Rate limit reached", Some(7)));
    let error = failure(provider, request).await;
    let retry_after = Some(Duration::from_secs(7));
    assert_eq!(error, ProviderError::RateLimited { retry_after });
    assert!(error.is_retryable());
}

/// Some servers echo the credentials they refuse: a refusal is not
/// retried, and `key` shows nowhere in the error.
pub async fn refused_credentials_do_not_leak_the_key(
    provider: &dyn Provider,
    fake: &FakeLlm,
    request: ChatRequest,
    key: &str,
) {
    let message = format!("Incorrect API key provided: {key}.");
    fake.push(Reply::error(401, &message, None));
    let error = failure(provider, request).await;
    assert!(matches!(error, ProviderError::Auth(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert!(!format!("{error} {error:?}").contains(key), "{error:?}");
}

/// A server that sends nothing for 10 s fails a provider whose start
/// timeout is 1 s well before.
pub async fn a_server_that_does_not_answer_in_time_is_a_timeout(
    provider: &dyn Provider,
    fake: &FakeLlm,
    request: ChatRequest,
) {
    let late = Reply::text(&["late"], None);
    fake.push(Reply::delayed(Duration::from_secs(10), late));
    let started = Instant::now();
    assert_eq!(failure(provider, request).await, ProviderError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A stream that falls silent for 10 s after its first token fails a
/// provider whose timeout is 1 s.
pub async fn a_stream_that_stalls_is_a_timeout(
    provider: &dyn Provider,
    fake: &FakeLlm,
    request: ChatRequest,
) {
    fake.push(Reply::Stream {
        tokens: 3,
        interval: Duration::from_secs(10),
    });
    let events = collect(provider, request).await;
    assert_eq!(events, [text("lorem "), Err(ProviderError::Timeout)]);
}

/// An answer of 1.6 s, a token every 100 ms, completes on a provider whose
/// timeouts are 1 s. `request` has a prompt of three words.
pub async fn a_long_answer_may_outlast_the_timeout(
    provider: &dyn Provider,
    fake: &FakeLlm,
    request: ChatRequest,
) {
    fake.push(Reply::Stream {
        tokens: 16,
        interval: Duration::from_millis(100),
    });
    let events = collect(provider, request).await;
    assert_eq!(events.len(), 17, "{events:?}");
    assert_eq!(events.last(), Some(&usage(3, 16)));
}

/// A provider pointed at [`closed_origin`] fails with a retryable
/// transport error.
pub async fn an_unreachable_server_is_a_retryable_transport_error(
    provider: &dyn Provider,
    request: ChatRequest,
) {
    let error = failure(provider, request).await;
    assert!(matches!(error, ProviderError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
}
