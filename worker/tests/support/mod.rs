//! Helpers shared by the provider tests.

use futures::StreamExt;
use switchyard_common::domain::Usage;
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
