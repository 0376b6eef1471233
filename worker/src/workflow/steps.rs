//! Steps with events: an agent's part of a run, and tool calls.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use switchyard_common::db;
use switchyard_common::domain::{StepId, StepKind, StepStatus, text};
use switchyard_common::events::RunEvent;

use super::scope::{Failure, Scope, internal};
use crate::providers::ToolCall;
use crate::tools::{self, Tool};

/// Record the start of a step of the run's current attempt.
pub(crate) async fn start(
    scope: &Scope<'_>,
    parent: Option<StepId>,
    kind: StepKind,
    name: &str,
    input: &Value,
) -> Result<StepId, Failure> {
    let step = db::steps::NewStep {
        run_id: scope.run.id,
        attempt: scope.run.attempt,
        parent_id: parent,
        kind,
        name,
        input,
    };
    db::steps::start(&scope.runner.pool, step)
        .await
        .map_err(|e| internal("recording a step", e))
}

/// Start an `agent` step and announce it (`agent.started`).
pub(crate) async fn start_agent(
    scope: &Scope<'_>,
    agent: &str,
    parent: Option<StepId>,
    input: &Value,
) -> Result<StepId, Failure> {
    let step_id = start(scope, parent, StepKind::Agent, agent, input).await?;
    scope.emit(RunEvent::AgentStarted {
        step_id,
        agent: agent.to_owned(),
    });
    Ok(step_id)
}

/// End an `agent` step (`agent.finished`), with the agent's answer or failure.
pub(crate) async fn finish_agent(
    scope: &Scope<'_>,
    step_id: StepId,
    agent: &str,
    outcome: Result<&str, &Failure>,
) -> Result<(), Failure> {
    let (status, output) = match outcome {
        Ok(text) => (StepStatus::Completed, json!({ "text": text })),
        Err(failure) => (
            StepStatus::Failed,
            json!({"error": {"code": failure.code, "message": failure.message}}),
        ),
    };
    finish(scope, step_id, status, &output).await?;
    scope.emit(RunEvent::AgentFinished {
        step_id,
        agent: agent.to_owned(),
    });
    Ok(())
}

/// End a step that has no usage of its own.
pub(crate) async fn finish(
    scope: &Scope<'_>,
    step_id: StepId,
    status: StepStatus,
    output: &Value,
) -> Result<(), Failure> {
    let end = db::steps::StepEnd {
        status,
        output,
        usage: None,
        cost_usd: None,
    };
    db::steps::finish(&scope.runner.pool, step_id, end)
        .await
        .map_err(|e| internal("recording a step", e))
}

/// The JSON a tool call's arguments are recorded as: parsed if they parse.
pub(crate) fn arguments_value(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).map_or_else(
        |_| Value::String(call.arguments.clone()),
        text::storable_json,
    )
}

/// A step that clients see as a tool call: announced by `tool.started`
/// with its arguments, closed by `tool.finished` with its result (a tool
/// call, or a plan).
pub(crate) struct ToolStep {
    pub id: StepId,
    tool: String,
    started: Instant,
}

impl ToolStep {
    pub async fn start(
        scope: &Scope<'_>,
        parent: Option<StepId>,
        kind: StepKind,
        name: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<Self, Failure> {
        let recorded = arguments.clone();
        Self::start_recorded(scope, parent, kind, name, tool, &recorded, arguments).await
    }

    /// [`ToolStep::start`] recording `input` as the step's input, which
    /// says more than the `arguments` announced (e.g. where the tool ran).
    pub async fn start_recorded(
        scope: &Scope<'_>,
        parent: Option<StepId>,
        kind: StepKind,
        name: &str,
        tool: &str,
        input: &Value,
        arguments: Value,
    ) -> Result<Self, Failure> {
        let id = start(scope, parent, kind, name, input).await?;
        scope.emit(RunEvent::ToolStarted {
            step_id: id,
            tool: tool.to_owned(),
            arguments,
        });
        Ok(Self {
            id,
            tool: tool.to_owned(),
            started: Instant::now(),
        })
    }

    /// Record the result (an error result fails the step) and announce it.
    pub async fn finish(
        self,
        scope: &Scope<'_>,
        result: Value,
        is_error: bool,
    ) -> Result<Value, Failure> {
        let latency_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let status = if is_error {
            StepStatus::Failed
        } else {
            StepStatus::Completed
        };
        finish(scope, self.id, status, &result).await?;
        scope.emit(RunEvent::ToolFinished {
            step_id: self.id,
            tool: self.tool,
            result: result.clone(),
            is_error,
            latency_ms,
        });
        Ok(result)
    }
}

/// Run a tool call as a step. A tool's own failure is its result
/// (`is_error`), for the model to read.
#[tracing::instrument(name = "tool.call", skip_all, fields(tool = %call.name))]
pub(crate) async fn call_tool(
    scope: &Scope<'_>,
    parent: Option<StepId>,
    tools: &[Arc<dyn Tool>],
    call: &ToolCall,
) -> Result<Value, Failure> {
    let arguments = arguments_value(call);
    let reused = scope.reusable_result(&call.name, &arguments).await?;
    let step = ToolStep::start(
        scope,
        parent,
        StepKind::Tool,
        &call.name,
        &call.name,
        arguments,
    )
    .await?;
    let result = match reused {
        // An earlier attempt of the run made this call: its effect happened.
        Some(recorded) => Ok(recorded),
        None => match tools.iter().find(|t| t.name() == call.name) {
            Some(tool) => tools::invoke(tool.as_ref(), &call.arguments).await,
            None => Err(tools::ToolError(format!(
                "there is no tool called {:?}",
                call.name
            ))),
        },
    };
    match result {
        Ok(value) => step.finish(scope, value, false).await,
        Err(error) => step.finish(scope, json!({"error": error.0}), true).await,
    }
}
