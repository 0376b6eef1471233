//! The `http` workflow: the agent's answer comes from its upstream, an
//! existing agent endpoint (an AI SDK route or an OpenAI-compatible
//! server), relayed and stored like any other run's.
//!
//! The upstream call is one `llm` step (input: the upstream, its protocol,
//! the messages sent; output: the text; usage as the upstream reports it,
//! zero when it reports none). Its text is streamed as the run's
//! `message.delta`s. Each tool call the upstream ran is a `tool` step under
//! it, announced by `tool.started` / `tool.finished` with the upstream's
//! input and output; its recorded input is `{"executed_by": "upstream",
//! "arguments": …}`, since Switchyard did not run it. A tool call left
//! without output is one the upstream wants its client to run, which an
//! `http` agent cannot: the run fails (`upstream_client_tool`).
//!
//! Failures end the run with an `upstream_*` code: `upstream_error` (5xx,
//! dropped connection, an `error` or `abort` part), `upstream_timeout`,
//! `upstream_protocol` (a malformed stream or an unexpected content type),
//! `upstream_auth` (401/403), `upstream_bad_request` (other 4xx),
//! `upstream_rate_limited`. Nothing is retried. Cancelling the run drops
//! the request, which closes the connection to the upstream.

use std::collections::HashMap;
use switchyard_common::domain::RunErrorCode;

use serde_json::{Value, json};
use switchyard_common::db::{
    self,
    messages::{ToolExchange, ToolTurn},
};
use switchyard_common::domain::{AgentSpec, StepId, StepKind, StepStatus, Usage};

use super::scope::{Failure, Scope, internal};
use super::steps::{self, ToolStep};
use crate::providers::upstream::{UpstreamClient, UpstreamEvent, UpstreamStream};
use crate::providers::{ChatMessage, ChatRequest, ProviderError};

/// Relay the upstream's answer to `conversation` as the run's answer,
/// calling the upstream with `http`.
pub(crate) async fn run(
    scope: &Scope<'_>,
    agent: &AgentSpec,
    http: reqwest::Client,
    model: String,
    conversation: &[ChatMessage],
) -> Result<(), Failure> {
    let unavailable = |problem: String| {
        Failure::new(
            RunErrorCode::AgentUnavailable,
            format!("agent {:?}: {problem}", agent.id),
        )
    };
    let settings = agent
        .workflow
        .upstream
        .as_ref()
        .ok_or_else(|| unavailable("an http workflow needs an upstream".into()))?;
    let client = UpstreamClient::new(settings, http).map_err(|e| unavailable(format!("{e:#}")))?;
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if !agent.instructions.is_empty() {
        messages.push(ChatMessage::System {
            content: agent.instructions.clone(),
        });
    }
    messages.extend_from_slice(conversation);
    let input = json!({
        "agent": agent.id,
        "upstream": settings.url,
        "protocol": settings.protocol.as_str(),
        "model": model,
        "messages": messages.len(),
    });
    let step_id = steps::start(scope, None, StepKind::Llm, &model, &input).await?;
    let request = ChatRequest {
        model: model.clone(),
        messages,
        tools: Vec::new(),
    };
    let stream = client.stream(&scope.run.thread_id.to_string(), &request);
    let mut relay = Relay::new(step_id);
    let result = relay.drive(scope, stream).await;
    // An answer cut short still cost what the upstream reported.
    let cost = scope.bill(&model, relay.usage);
    let (status, output) = match &result {
        Ok(()) => (StepStatus::Completed, json!({"text": relay.text})),
        Err(failure) => (
            StepStatus::Failed,
            json!({"error": failure.message, "code": failure.code, "text": relay.text}),
        ),
    };
    let end = db::steps::StepEnd {
        status,
        output: &output,
        usage: Some(relay.usage),
        cost_usd: cost,
    };
    db::steps::finish(&scope.runner.pool, step_id, end)
        .await
        .map_err(|e| internal("recording a step", e))?;
    result
}

/// A tool call the upstream announced, waiting for its output.
struct Pending {
    step: ToolStep,
    name: String,
    input: Value,
}

/// What the upstream's answer has produced so far.
struct Relay {
    /// The upstream call's step, parent of its tool steps.
    step_id: StepId,
    /// All text relayed.
    text: String,
    /// Text of the upstream step under way, before its tool calls.
    step_text: String,
    /// Completed tool calls of the upstream step under way.
    calls: Vec<ToolExchange>,
    pending: HashMap<String, Pending>,
    usage: Usage,
}

impl Relay {
    fn new(step_id: StepId) -> Self {
        Self {
            step_id,
            text: String::new(),
            step_text: String::new(),
            calls: Vec::new(),
            pending: HashMap::new(),
            usage: Usage::default(),
        }
    }

    /// Read the stream to its end, flushing coalesced deltas on time.
    async fn drive(
        &mut self,
        scope: &Scope<'_>,
        mut stream: UpstreamStream,
    ) -> Result<(), Failure> {
        let outcome = loop {
            match scope.next_flushing(&mut stream, true).await {
                None => break Ok(()),
                Some(Ok(event)) => self.apply(scope, event).await?,
                Some(Err(error)) => break Err(failure(&error)),
            }
        };
        scope.flush();
        outcome?;
        self.close_step(scope);
        if let Some(name) = self.pending.values().map(|p| p.name.clone()).next() {
            let unrun: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
            for pending in unrun {
                let result = json!({"error": "the upstream left this call for its client to run"});
                pending.step.finish(scope, result, true).await?;
            }
            return Err(Failure::new(
                RunErrorCode::UpstreamClientTool,
                format!(
                    "the upstream asked its client to run the tool {name:?}; \
                     an http agent runs no tools"
                ),
            ));
        }
        Ok(())
    }

    async fn apply(&mut self, scope: &Scope<'_>, event: UpstreamEvent) -> Result<(), Failure> {
        match without_nul(event) {
            UpstreamEvent::Text(text) => {
                scope.say(&text);
                self.text.push_str(&text);
                if !self.calls.is_empty() {
                    // Text after tool results without a step boundary
                    // starts the next turn.
                    self.close_step(scope);
                }
                self.step_text.push_str(&text);
            }
            UpstreamEvent::ToolInput { id, name, input } => {
                if self.pending.contains_key(&id) {
                    return Ok(());
                }
                let recorded = json!({"executed_by": "upstream", "arguments": input});
                let step = ToolStep::start_recorded(
                    scope,
                    Some(self.step_id),
                    StepKind::Tool,
                    &name,
                    &name,
                    &recorded,
                    input.clone(),
                )
                .await?;
                self.pending.insert(id, Pending { step, name, input });
            }
            UpstreamEvent::ToolOutput {
                id,
                output,
                is_error,
            } => {
                let Some(pending) = self.pending.remove(&id) else {
                    return Err(Failure::new(
                        RunErrorCode::UpstreamProtocol,
                        format!("the upstream sent the output of an unknown tool call {id:?}"),
                    ));
                };
                self.calls.push(ToolExchange {
                    id,
                    name: pending.name,
                    arguments: pending.input.to_string(),
                    result: output.to_string(),
                });
                pending.step.finish(scope, output, is_error).await?;
            }
            UpstreamEvent::StepFinished => self.close_step(scope),
            UpstreamEvent::Usage(usage) => self.usage += usage,
            UpstreamEvent::Failed(message) => {
                return Err(Failure::new(
                    RunErrorCode::UpstreamError,
                    format!("the upstream reported an error: {message}"),
                ));
            }
        }
        Ok(())
    }

    /// End the upstream's step under way: its tool calls, with the text
    /// before them, are a turn of the stored answer.
    fn close_step(&mut self, scope: &Scope<'_>) {
        let text = std::mem::take(&mut self.step_text);
        if self.calls.is_empty() {
            self.step_text = text;
            return;
        }
        scope.record_turn(ToolTurn {
            text,
            calls: std::mem::take(&mut self.calls),
        });
    }
}

/// A failed upstream call as the run's error.
fn failure(error: &ProviderError) -> Failure {
    let code = match error {
        ProviderError::RateLimited { .. } => RunErrorCode::UpstreamRateLimited,
        ProviderError::Timeout => RunErrorCode::UpstreamTimeout,
        ProviderError::Protocol(_) => RunErrorCode::UpstreamProtocol,
        ProviderError::Auth(_) => RunErrorCode::UpstreamAuth,
        ProviderError::BadRequest(_) => RunErrorCode::UpstreamBadRequest,
        // `Local` is the embedded model's and never comes from an upstream.
        ProviderError::Overloaded { .. }
        | ProviderError::Server { .. }
        | ProviderError::Transport(_)
        | ProviderError::Local(_) => RunErrorCode::UpstreamError,
    };
    let message = error.to_string().replace("the provider", "the upstream");
    Failure::new(code, message)
}

/// `event` with no NUL in what is streamed and stored (see
/// [`switchyard_common::domain::text`]).
fn without_nul(event: UpstreamEvent) -> UpstreamEvent {
    use switchyard_common::domain::text::{storable_json, without_nul};
    match event {
        UpstreamEvent::Text(text) => UpstreamEvent::Text(without_nul(text)),
        UpstreamEvent::ToolInput { id, name, input } => UpstreamEvent::ToolInput {
            id: without_nul(id),
            name: without_nul(name),
            input: storable_json(input),
        },
        UpstreamEvent::ToolOutput {
            id,
            output,
            is_error,
        } => UpstreamEvent::ToolOutput {
            id: without_nul(id),
            output: storable_json(output),
            is_error,
        },
        UpstreamEvent::Failed(message) => UpstreamEvent::Failed(without_nul(message)),
        other @ (UpstreamEvent::StepFinished | UpstreamEvent::Usage(_)) => other,
    }
}
