//! One model turn: a provider call streamed to its end, retried with
//! backoff while retrying is safe, each attempt a step.

use std::time::Duration;

use rand::Rng;
use serde_json::json;
use switchyard_common::db;
use switchyard_common::domain::text::without_nul;
use switchyard_common::domain::{StepKind, StepStatus, Usage};
use switchyard_common::metrics;
use tracing::Instrument as _;

use super::converse::{Participant, Voice};
use super::scope::{Failure, Scope, internal};
use super::steps;
use crate::providers::{ChatRequest, ProviderError, ProviderEvent, ToolCall};

/// What one model call produced.
pub(crate) struct Turn {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
}

/// One model call, retried on retryable failures as long as nothing of it
/// reached the user (a retried stream would repeat text already shown).
pub(crate) async fn model_turn(
    scope: &Scope<'_>,
    agent: &Participant,
    request: &ChatRequest,
) -> Result<Turn, Failure> {
    let max_attempts = agent.provider.max_attempts().max(1);
    let mut attempt = 1;
    loop {
        let input = json!({
            "agent": agent.spec.id,
            "provider": agent.spec.provider,
            "model": request.model,
            "messages": request.messages.len(),
            "tools": request.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "attempt": attempt,
        });
        let step_id =
            steps::start(scope, agent.parent, StepKind::Llm, &request.model, &input).await?;
        let said_before = scope.said();
        let mut usage = Usage::default();
        let span = tracing::info_span!(
            "llm.call",
            provider = %agent.spec.provider,
            model = %request.model,
            attempt,
        );
        let result = stream(scope, agent, request.clone(), &mut usage)
            .instrument(span)
            .await;
        // Usage counts even for a failed call: the provider billed it.
        let cost = scope.bill(&request.model, usage);
        if let Err(error) = &result {
            count_error(agent, error);
        }
        let (status, output) = match &result {
            Ok(turn) => (
                StepStatus::Completed,
                json!({"text": turn.text, "tool_calls": turn.tool_calls}),
            ),
            Err(error) => (
                StepStatus::Failed,
                json!({"error": error.to_string(), "code": error.code()}),
            ),
        };
        let end = db::steps::StepEnd {
            status,
            output: &output,
            usage: Some(usage),
            cost_usd: cost,
        };
        db::steps::finish(&scope.runner.pool, step_id, end)
            .await
            .map_err(|e| internal("recording a step", e))?;
        match result {
            Ok(turn) => return Ok(turn),
            Err(error)
                if error.is_retryable()
                    && attempt < max_attempts
                    && scope.said() == said_before =>
            {
                let wait = backoff(attempt, error.retry_after());
                tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "provider call failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Count a failed model call.
fn count_error(agent: &Participant, error: &ProviderError) {
    metrics::METRICS.provider_error(&agent.spec.provider, error.kind());
}

/// Drive one provider stream: the user's agent's text is streamed as it
/// comes, coalesced deltas flushed on time.
async fn stream(
    scope: &Scope<'_>,
    agent: &Participant,
    request: ChatRequest,
    usage: &mut Usage,
) -> Result<Turn, ProviderError> {
    let mut stream = agent.provider.stream(request);
    let mut turn = Turn {
        text: String::new(),
        tool_calls: Vec::new(),
    };
    let speaks = agent.voice == Voice::User;
    let called = std::time::Instant::now();
    let mut first_token: Option<std::time::Instant> = None;
    loop {
        match scope.next_flushing(&mut stream, speaks).await {
            None => break,
            Some(Ok(ProviderEvent::TextDelta(text))) => {
                let text = without_nul(text);
                if first_token.is_none() {
                    first_token = Some(std::time::Instant::now());
                }
                if speaks {
                    scope.say(&text);
                }
                turn.text.push_str(&text);
            }
            Some(Ok(ProviderEvent::ToolCall(call))) => turn.tool_calls.push(ToolCall {
                id: without_nul(call.id),
                name: without_nul(call.name),
                arguments: without_nul(call.arguments),
            }),
            Some(Ok(ProviderEvent::Usage(reported))) => *usage += reported,
            Some(Err(error)) => {
                if speaks {
                    scope.flush();
                }
                return Err(error);
            }
        }
    }
    if speaks {
        scope.flush();
    }
    if let Some(first) = first_token {
        let provider = metrics::ProviderLabel {
            provider: agent.spec.provider.clone(),
        };
        let metrics = &metrics::METRICS;
        metrics
            .time_to_first_token
            .get_or_create(&provider)
            .observe((first - called).as_secs_f64());
        let generating = first.elapsed().as_secs_f64();
        if usage.output_tokens > 1 && generating > 0.0 {
            // The first token came at `first`: the rest took `generating`.
            let rate = (usage.output_tokens - 1) as f64 / generating;
            metrics
                .tokens_per_second
                .get_or_create(&provider)
                .observe(rate);
        }
    }
    Ok(turn)
}

/// Exponential backoff with full jitter, at least what the provider asked for.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_millis(250) * 2u32.saturating_pow(attempt - 1);
    let jittered = base.mul_f64(rand::rng().random_range(0.5..1.0));
    retry_after
        .map_or(jittered, |asked| asked.max(jittered))
        .min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        assert!(backoff(1, None) <= Duration::from_millis(250));
        assert!(backoff(3, None) >= Duration::from_millis(500));
        assert!(backoff(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert!(backoff(30, None) <= Duration::from_secs(30));
    }
}
