//! A run, from job to terminal status.
//!
//! The runner claims the run (the conditional update that makes it this
//! worker's alone), loads the agent and the thread's history, drives the
//! tool loop against the agent's provider while streaming events, and ends
//! the run in one transaction: assistant message, usage, status and terminal
//! events together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use switchyard_common::bus::{EventWriter, RunEvents};
use switchyard_common::cache::{Cache, RECENT_MESSAGES};
use switchyard_common::config::Config;
use switchyard_common::db::{self, messages::MessageRow, runs::RunRow};
use switchyard_common::domain::AgentSpec;
use switchyard_common::domain::{
    MessageId, MessageRole, RunError, RunId, StepKind, StepStatus, Usage,
};
use switchyard_common::events::RunEvent;
use switchyard_common::queue::RunQueue;

use crate::history;
use crate::providers::{ChatMessage, ChatRequest, Provider, ProviderError, ProviderEvent};
use crate::tools::{self, Tool};

/// Everything a run needs from its process; shared by all runs.
pub struct Runner {
    pub pool: PgPool,
    pub cache: Cache,
    pub writer: EventWriter,
    pub queue: RunQueue,
    pub config: Arc<Config>,
    pub providers: HashMap<String, Arc<dyn Provider>>,
}

/// Why a run ends early, as the run's `error`.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ProviderError> for Failure {
    fn from(error: ProviderError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// Where a run stands in its thread, as read at the claim.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// The position of the run's user message.
    input_seq: i64,
    /// The thread's messages at the claim.
    message_count: i64,
}

/// The answer a finished tool loop produced (its usage is the run's).
struct Answer {
    message_id: MessageId,
    content: String,
}

impl Runner {
    /// Execute the run of a job. Errors are infrastructure failures (the
    /// database is unreachable); a run's own failures end the run instead.
    #[tracing::instrument(skip_all, fields(run.id = %run_id))]
    pub async fn execute(&self, run_id: RunId) -> anyhow::Result<()> {
        let (run, last_seq, position) = match db::runs::claim(&self.pool, run_id)
            .await
            .context("claiming the run")?
        {
            db::runs::Claim::Owned {
                run,
                last_event_seq,
                input_seq,
                message_count,
            } => (
                run,
                last_event_seq,
                Position {
                    input_seq,
                    message_count,
                },
            ),
            db::runs::Claim::Waiting => {
                tracing::debug!("an earlier run of the thread is active; waiting for it");
                return Ok(());
            }
            db::runs::Claim::Gone => {
                tracing::debug!("run is not queued any more");
                return Ok(());
            }
        };
        let mut events = RunEvents::new(
            run.id,
            self.writer.clone(),
            last_seq,
            self.config.delta_flush_interval,
            self.config.delta_max_bytes,
        );
        events.emit(RunEvent::RunStarted {
            run_id: run.id,
            attempt: run.attempt,
        });
        tracing::info!(thread.id = %run.thread_id, agent = %run.agent_id, attempt = run.attempt, "run started");

        let mut usage = Usage::default();
        let outcome = self.answer(&run, position, &mut events, &mut usage).await;
        self.finish(&run, &mut events, outcome, usage).await
    }

    async fn answer(
        &self,
        run: &RunRow,
        position: Position,
        events: &mut RunEvents,
        usage: &mut Usage,
    ) -> Result<Answer, Failure> {
        let agent = self.config.catalog.agent(&run.agent_id).ok_or_else(|| {
            Failure::new(
                "agent_unavailable",
                format!("agent {:?} is not configured", run.agent_id),
            )
        })?;
        let provider = self.providers.get(&agent.provider).ok_or_else(|| {
            Failure::new(
                "agent_unavailable",
                format!("provider {:?} is not configured", agent.provider),
            )
        })?;
        // The stored agent is the catalog's (upserted at start-up).
        let instructions = agent.instructions.clone();
        let tools: Vec<Arc<dyn Tool>> = agent
            .tools
            .iter()
            .filter_map(|t| tools::builtin(t))
            .collect();

        let history = self
            .history(run, position)
            .await
            .map_err(|e| internal("loading thread history", e))?;
        let mut messages = Vec::with_capacity(history.len() + 1);
        if !instructions.is_empty() {
            messages.push(ChatMessage::System {
                content: instructions,
            });
        }
        messages.extend(history.into_iter().filter_map(|m| match m.role {
            MessageRole::User => Some(ChatMessage::User { content: m.content }),
            MessageRole::Assistant => Some(ChatMessage::Assistant {
                content: m.content,
                tool_calls: Vec::new(),
            }),
            MessageRole::System => Some(ChatMessage::System { content: m.content }),
            MessageRole::Tool => None,
        }));
        let mut request = ChatRequest {
            model: run.model.clone(),
            messages,
            tools: tools.iter().map(|t| tools::spec(t.as_ref())).collect(),
        };

        let message_id = MessageId::new();
        let mut content = String::new();
        for _ in 0..agent.workflow.max_iterations {
            let turn = self
                .model_turn(
                    run,
                    agent,
                    provider.as_ref(),
                    &request,
                    events,
                    message_id,
                    &mut content,
                )
                .await?;
            *usage += turn.usage;
            if turn.tool_calls.is_empty() {
                return Ok(Answer {
                    message_id,
                    content,
                });
            }
            request.messages.push(ChatMessage::Assistant {
                content: turn.text,
                tool_calls: turn.tool_calls.clone(),
            });
            for call in turn.tool_calls {
                let result = self.call_tool(run, &tools, &call, events).await?;
                request.messages.push(ChatMessage::Tool {
                    tool_call_id: call.id,
                    content: result.to_string(),
                });
            }
        }
        Err(Failure::new(
            "max_iterations",
            format!(
                "the agent did not answer within {} model turns",
                agent.workflow.max_iterations
            ),
        ))
    }

    /// The conversation this run answers (see [`crate::history`]), from the
    /// thread's recent messages as they were at the claim: from the cache
    /// when it holds them, otherwise from PostgreSQL.
    async fn history(
        &self,
        run: &RunRow,
        position: Position,
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        let up_to = position.message_count;
        if let Some(cached) = self
            .cache
            .recent_messages(run.thread_id, up_to, RECENT_MESSAGES)
            .await
        {
            return Ok(history::conversation(cached, position.input_seq));
        }
        let rows =
            db::messages::recent(&self.pool, run.thread_id, up_to, RECENT_MESSAGES as i64).await?;
        self.cache.fill_messages(run.thread_id, up_to, &rows).await;
        Ok(history::conversation(rows, position.input_seq))
    }

    /// One model call, retried on retryable failures until text has been
    /// streamed. Each attempt is a step.
    #[allow(clippy::too_many_arguments)]
    async fn model_turn(
        &self,
        run: &RunRow,
        agent: &AgentSpec,
        provider: &dyn Provider,
        request: &ChatRequest,
        events: &mut RunEvents,
        message_id: MessageId,
        content: &mut String,
    ) -> Result<Turn, Failure> {
        let max_attempts = provider.max_attempts().max(1);
        let mut attempt = 1;
        loop {
            let step_input = json!({
                "provider": agent.provider,
                "model": request.model,
                "messages": request.messages.len(),
                "attempt": attempt,
            });
            let step_id = db::steps::start(
                &self.pool,
                db::steps::NewStep {
                    run_id: run.id,
                    parent_id: None,
                    kind: StepKind::Llm,
                    name: &request.model,
                    input: &step_input,
                },
            )
            .await
            .map_err(|e| internal("recording a step", e))?;
            let streamed_before = content.len();
            let result = stream_turn(provider, request.clone(), events, message_id, content).await;
            let (status, output, step_usage) = match &result {
                Ok(turn) => (
                    StepStatus::Completed,
                    json!({"text": turn.text, "tool_calls": turn.tool_calls}),
                    Some(turn.usage),
                ),
                Err(error) => (
                    StepStatus::Failed,
                    json!({"error": error.to_string()}),
                    None,
                ),
            };
            let end = db::steps::StepEnd {
                status,
                output: &output,
                usage: step_usage,
                cost_usd: None,
            };
            db::steps::finish(&self.pool, step_id, end)
                .await
                .map_err(|e| internal("recording a step", e))?;
            match result {
                Ok(turn) => return Ok(turn),
                Err(error)
                    if error.is_retryable()
                        && attempt < max_attempts
                        && content.len() == streamed_before =>
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

    async fn call_tool(
        &self,
        run: &RunRow,
        tools: &[Arc<dyn Tool>],
        call: &crate::providers::ToolCall,
        events: &mut RunEvents,
    ) -> Result<Value, Failure> {
        let parsed: Value =
            serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments.clone()));
        let step = db::steps::NewStep {
            run_id: run.id,
            parent_id: None,
            kind: StepKind::Tool,
            name: &call.name,
            input: &parsed,
        };
        let step_id = db::steps::start(&self.pool, step)
            .await
            .map_err(|e| internal("recording a step", e))?;
        events.emit(RunEvent::ToolStarted {
            step_id,
            tool: call.name.clone(),
            arguments: parsed,
        });
        let started = std::time::Instant::now();
        let result = match tools.iter().find(|t| t.name() == call.name) {
            Some(tool) => tools::invoke(tool.as_ref(), &call.arguments).await,
            None => Err(tools::ToolError(format!(
                "there is no tool called {:?}",
                call.name
            ))),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let (is_error, value) = match result {
            Ok(value) => (false, value),
            Err(error) => (true, json!({"error": error.0})),
        };
        let status = if is_error {
            StepStatus::Failed
        } else {
            StepStatus::Completed
        };
        let end = db::steps::StepEnd {
            status,
            output: &value,
            usage: None,
            cost_usd: None,
        };
        db::steps::finish(&self.pool, step_id, end)
            .await
            .map_err(|e| internal("recording a step", e))?;
        events.emit(RunEvent::ToolFinished {
            step_id,
            tool: call.name.clone(),
            result: value.clone(),
            is_error,
            latency_ms,
        });
        Ok(value)
    }

    /// End the run: one transaction for the answer, the status and the
    /// terminal events; then the cache and the next run of the thread.
    async fn finish(
        &self,
        run: &RunRow,
        events: &mut RunEvents,
        outcome: Result<Answer, Failure>,
        usage: Usage,
    ) -> anyhow::Result<()> {
        // Every delta is durable before the events that close the stream.
        events.sync().await;
        let mut tx = self.pool.begin().await.context("finishing the run")?;
        let mut terminal = Vec::new();
        let mut appended = None;
        let finish = match outcome {
            Ok(answer) => {
                let message = db::messages::append(
                    &mut tx,
                    db::messages::NewMessage {
                        id: answer.message_id,
                        thread_id: run.thread_id,
                        run_id: Some(run.id),
                        role: MessageRole::Assistant,
                        content: &answer.content,
                    },
                    0,
                )
                .await
                .context("storing the answer")?;
                appended = message.map(|(m, _)| m);
                terminal.push(RunEvent::MessageCompleted {
                    message_id: answer.message_id,
                    content: answer.content,
                });
                terminal.push(RunEvent::Usage {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cached_input_tokens: usage.cached_input_tokens,
                    cost_usd: None,
                });
                terminal.push(RunEvent::RunCompleted {
                    run_id: run.id,
                    message_id: answer.message_id,
                    usage,
                    cost_usd: None,
                });
                db::runs::Outcome::Completed {
                    message_id: answer.message_id,
                }
            }
            Err(failure) => {
                tracing::warn!(code = failure.code, message = %failure.message, "run failed");
                let error = RunError {
                    code: failure.code.to_owned(),
                    message: failure.message,
                };
                terminal.push(RunEvent::RunFailed {
                    run_id: run.id,
                    error: error.clone(),
                });
                db::runs::Outcome::Failed(error)
            }
        };
        let numbered: Vec<(i64, RunEvent)> = terminal
            .into_iter()
            .map(|event| (events.reserve(), event))
            .collect();
        let records: Vec<db::events::EventRecord<'_>> = numbered
            .iter()
            .map(|(seq, event)| db::events::EventRecord {
                run_id: run.id,
                seq: *seq,
                event,
            })
            .collect();
        db::events::insert_batch(&mut tx, &records)
            .await
            .context("storing terminal events")?;
        let thread = db::runs::finish(
            &mut tx,
            db::runs::Finish {
                run_id: run.id,
                outcome: finish,
                usage,
                cost_usd: None,
            },
        )
        .await
        .context("storing the run's status")?;
        let Some(thread) = thread else {
            tracing::warn!("run was no longer in progress; its result is dropped");
            return Ok(());
        };
        tx.commit().await.context("committing the run's end")?;
        for (seq, event) in numbered {
            events.publish_stored(seq, event);
        }
        self.cache.put_thread(&thread).await;
        if let Some(message) = &appended {
            self.cache.append_message(message).await;
        }
        tracing::info!(
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            "run finished"
        );

        if let Some(next) = db::runs::next_in_line(&self.pool, run.thread_id)
            .await
            .context("finding the thread's next run")?
            && db::runs::take_for_enqueue(&self.pool, next)
                .await
                .context("handing the thread to its next run")?
        {
            self.queue.enqueue(&self.pool, next).await;
        }
        Ok(())
    }
}

/// What one model call produced.
struct Turn {
    text: String,
    tool_calls: Vec<crate::providers::ToolCall>,
    usage: Usage,
}

/// Drive one provider stream, relaying text as it comes and flushing
/// coalesced deltas on time.
async fn stream_turn(
    provider: &dyn Provider,
    request: ChatRequest,
    events: &mut RunEvents,
    message_id: MessageId,
    content: &mut String,
) -> Result<Turn, ProviderError> {
    let mut stream = provider.stream(request);
    let mut turn = Turn {
        text: String::new(),
        tool_calls: Vec::new(),
        usage: Usage::default(),
    };
    loop {
        let deadline = events.deadline();
        let item = tokio::select! {
            item = stream.next() => item,
            () = sleep_until(deadline) => {
                events.flush();
                continue;
            }
        };
        match item {
            None => break,
            Some(Ok(ProviderEvent::TextDelta(text))) => {
                events.delta(message_id, &text);
                content.push_str(&text);
                turn.text.push_str(&text);
            }
            Some(Ok(ProviderEvent::ToolCall(call))) => turn.tool_calls.push(call),
            Some(Ok(ProviderEvent::Usage(usage))) => turn.usage += usage,
            Some(Err(error)) => {
                events.flush();
                return Err(error);
            }
        }
    }
    events.flush();
    Ok(turn)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with full jitter, at least what the provider asked for.
fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_millis(250) * 2u32.saturating_pow(attempt - 1);
    let jittered = base.mul_f64(rand::rng().random_range(0.5..1.0));
    retry_after
        .map_or(jittered, |asked| asked.max(jittered))
        .min(Duration::from_secs(30))
}

fn internal(what: &str, error: sqlx::Error) -> Failure {
    tracing::error!(%error, "{what} failed");
    Failure::new("internal", format!("{what} failed"))
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
