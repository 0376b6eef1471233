//! A run, from job to terminal status.
//!
//! The runner spends a ticket of the queue on the best-ranked ready run
//! (the conditional update that makes it this worker's alone), loads its agent and the thread's history, hands them
//! to the agent's workflow ([`crate::workflow`]) while events stream, and
//! ends the run in one transaction: assistant message, usage, cost, status
//! and terminal events together.

use std::collections::HashMap;
use std::sync::Arc;
use switchyard_common::domain::RunErrorCode;

use anyhow::Context as _;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use switchyard_common::bus::{self, EventWriter, RunEvents};
use switchyard_common::cache::{Cache, RECENT_MESSAGES};
use switchyard_common::config::Config;
use switchyard_common::db::{self, messages::MessageRow, runs::CancelReason, runs::RunRow};
use switchyard_common::domain::{Agent, AgentSource, AgentSpec, MessageId, RunError, WorkflowKind};
use switchyard_common::events::RunEvent;
use switchyard_common::lifecycle::{self, Ending, Finished};
use switchyard_common::queue::{RunJob, RunQueue};
use switchyard_common::redis_conn::Keys;
use switchyard_common::{metrics, telemetry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::active::{self, ActiveRuns, Stop};
use crate::history;
use crate::providers::Provider;
use crate::tools::Toolbox;
use crate::workflow::{self, Failure, Participant, Scope, Voice, internal};

/// Everything a run needs from its process; shared by all runs.
pub struct Runner {
    pub pool: PgPool,
    pub cache: Cache,
    pub writer: EventWriter,
    pub queue: RunQueue,
    pub config: Arc<Config>,
    pub providers: HashMap<String, Arc<dyn Provider>>,
    /// The HTTP client of the providers, for `http` agents' upstreams.
    pub http: reqwest::Client,
    pub toolbox: Toolbox,
    pub active: ActiveRuns,
    /// This process's name on the runs it holds (`runs.worker_id`).
    pub worker_id: String,
    pub redis: ConnectionManager,
    pub keys: Keys,
    /// The runs in progress in this process.
    pub runs: TaskTracker,
    /// Cancelled when the worker starts shutting down: no new runs.
    pub draining: CancellationToken,
}

/// How a run's work ended.
enum End {
    /// The agent answered.
    Answered,
    Failed(Failure),
    Cancelled(CancelReason),
}

/// Why this worker stops working on a run without ending it.
enum Leave {
    /// Another worker took the run back: nothing more to do here.
    Lost,
    /// Shutting down: the run goes back to the queue.
    Release,
}

/// A run this worker has claimed, as read at the claim.
struct Claimed {
    run: RunRow,
    /// Where the run's events continue.
    last_seq: i64,
    position: Position,
    /// The run's agent as stored now; `None` if it was deleted.
    agent: Option<switchyard_common::domain::Agent>,
    /// A cancel requested before this attempt.
    cancel: Option<CancelReason>,
}

/// Where a run stands in its thread, as read at the claim.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// The position of the run's user message.
    input_seq: i64,
    /// The thread's messages at the claim.
    message_count: i64,
}

impl Runner {
    /// Spend a job's ticket: claim the best-ranked ready run (not
    /// necessarily the one the ticket was pushed for) and execute it. Errors
    /// are infrastructure failures (the database is unreachable); a run's
    /// own failures end the run instead.
    pub async fn execute(&self, job: RunJob) -> anyhow::Result<()> {
        let claim = db::runs::claim(&self.pool, &self.worker_id, active::LEASE)
            .await
            .context("claiming a run")?;
        let (claimed, stored_trace) = match claim {
            db::runs::Claim::Owned {
                run,
                last_event_seq,
                input_seq,
                message_count,
                agent,
                cancel,
                trace,
            } => (
                Claimed {
                    run,
                    last_seq: last_event_seq,
                    position: Position {
                        input_seq,
                        message_count,
                    },
                    agent,
                    cancel,
                },
                trace,
            ),
            db::runs::Claim::Empty => {
                tracing::debug!(ticket = %job.run_id, "no ready run for this ticket");
                return Ok(());
            }
        };
        // The job's trace context when the ticket was pushed for this run,
        // else the one stored with the run (a ticket of another run, or one
        // pushed by a recovery or a hand-off): either way the run joins the
        // trace of the request that created it.
        let run_id = claimed.run.id;
        let span = tracing::info_span!("run", run.id = %run_id, ticket = %job.run_id,
            trace_id = tracing::field::Empty);
        let trace = if job.run_id == run_id && !job.trace.is_empty() {
            &job.trace
        } else {
            &stored_trace
        };
        telemetry::adopt(&span, trace);
        self.run(claimed).instrument(span).await
    }

    /// Execute a claimed run to its end (or until this worker leaves it).
    async fn run(&self, claimed: Claimed) -> anyhow::Result<()> {
        let Claimed {
            run,
            mut last_seq,
            position,
            agent,
            cancel,
        } = claimed;
        if run.attempt > 1 {
            // An earlier attempt's worker was lost: keep what it published.
            let mut redis = self.redis.clone();
            last_seq = bus::adopt_published(
                &mut redis,
                &self.keys,
                &self.pool,
                run.id,
                run.attempt,
                last_seq,
            )
            .await
            .context("storing the lost attempt's events")?;
            let mut conn = self
                .pool
                .acquire()
                .await
                .context("closing the lost attempt's steps")?;
            db::steps::close_running(&mut conn, run.id)
                .await
                .context("closing the lost attempt's steps")?;
        }
        let mut events = RunEvents::new(
            run.id,
            run.attempt,
            self.writer.clone(),
            last_seq,
            self.config.delta_flush_interval,
            self.config.delta_max_bytes,
        );
        events.emit(RunEvent::RunStarted {
            run_id: run.id,
            attempt: run.attempt,
        });
        if let Some(started) = run.started_at {
            let waited = (started - run.created_at).to_std().unwrap_or_default();
            metrics::METRICS.queue_wait.observe(waited.as_secs_f64());
        }
        tracing::info!(thread.id = %run.thread_id, agent = %run.agent_id, attempt = run.attempt, "run started");

        let scope = Scope::new(self, &run, events);
        let message_id = scope.message_id;
        let mut stop = self.active.register(run.id);
        let max_attempts = self.config.max_attempts;
        let work = async {
            match agent {
                _ if run.attempt > max_attempts => Err(Failure::new(
                    RunErrorCode::WorkerLost,
                    format!("the run's worker was lost {max_attempts} times"),
                )),
                Some(agent) => {
                    let upstream_http = self.upstream_http(&agent);
                    let spec = self.vet(agent)?;
                    self.answer(&scope, spec, upstream_http, position).await
                }
                None => Err(Failure::agent_gone(&run.agent_id)),
            }
        };
        // Dropping `work` stops the run wherever it is: a provider stream,
        // a tool, a backoff pause.
        if let Some(reason) = cancel {
            // Cancelled while its earlier worker was being lost: end it now.
            stop.cancel_now(reason);
        }
        let end = tokio::select! {
            biased;
            stopped = stop.stopped() => match stopped {
                Stop::Cancel(reason) => Ok(End::Cancelled(reason)),
                Stop::Lost => Err(Leave::Lost),
                Stop::Release => Err(Leave::Release),
            },
            result = tokio::time::timeout(self.config.run_timeout, work) => Ok(match result {
                Ok(Ok(())) => End::Answered,
                Ok(Err(failure)) => End::Failed(failure),
                Err(_) => End::Failed(Failure::new(
                    RunErrorCode::Timeout,
                    format!(
                        "the run did not finish within {} s",
                        self.config.run_timeout.as_secs()
                    ),
                )),
            }),
        };
        let (events, produced) = scope.into_parts();
        match end {
            Ok(end) => self.finish(&run, events, end, message_id, produced).await,
            Err(Leave::Lost) => {
                tracing::warn!(
                    "the run was taken back from this worker; leaving it to its new one"
                );
                Ok(())
            }
            Err(Leave::Release) => self.release(&run, events).await,
        }
    }

    /// Give a run back to the queue (shutdown): what it published is stored
    /// first, so that the next attempt continues the event ids after it.
    async fn release(&self, run: &RunRow, mut events: RunEvents) -> anyhow::Result<()> {
        events.sync().await;
        if db::runs::release(&self.pool, run.id, run.attempt)
            .await
            .context("releasing the run")?
        {
            tracing::info!("run released for another worker");
            self.queue.enqueue(&self.pool, RunJob::new(run.id)).await;
        }
        Ok(())
    }

    /// Run the agent's workflow on the thread's conversation.
    /// `agent`'s definition, if it may run: an agent written over the API
    /// must still keep within `[api_agents]`, which may have been
    /// tightened since it was written.
    pub(crate) fn vet(&self, agent: Agent) -> Result<AgentSpec, Failure> {
        if agent.source == AgentSource::Api
            && let Err(problem) = self.config.catalog.api_agents.check(&agent.spec)
        {
            return Err(Failure::new(
                RunErrorCode::AgentUnavailable,
                format!(
                    "agent {:?} was written over the API and no longer keeps within the \
                     deployment's [api_agents]: {}: {}",
                    agent.spec.id, problem.field, problem.message
                ),
            ));
        }
        Ok(agent.spec)
    }

    /// The client an `http` agent's upstream is called with: one that only
    /// connects to public addresses for an agent written over the API,
    /// unless `[api_agents]` allows private ones.
    fn upstream_http(&self, agent: &Agent) -> reqwest::Client {
        if agent.source == AgentSource::Api && !self.config.catalog.api_agents.allow_private {
            self.toolbox.public_only_http()
        } else {
            self.http.clone()
        }
    }

    async fn answer(
        &self,
        scope: &Scope<'_>,
        entry: AgentSpec,
        upstream_http: reqwest::Client,
        position: Position,
    ) -> Result<(), Failure> {
        let run = scope.run;
        let entry = Arc::new(entry);
        let history = self
            .history(run, position)
            .await
            .map_err(|e| internal("loading thread history", e))?;
        let conversation = history::to_chat(history, entry.context_tokens);
        // The run's model is the entry agent's unless the run overrode it.
        let model = Some(run.model.clone());
        match entry.workflow.kind {
            WorkflowKind::Single => {
                let agent = Participant::new(scope, entry, model, None, Voice::User)?;
                workflow::single(scope, agent, &conversation).await
            }
            WorkflowKind::Triage => workflow::triage::run(scope, entry, model, &conversation).await,
            WorkflowKind::Planner => {
                workflow::planner::run(scope, entry, model, &conversation).await
            }
            WorkflowKind::Http => {
                let model = run.model.clone();
                workflow::http::run(scope, &entry, upstream_http, model, &conversation).await
            }
        }
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

    /// End the run (see [`lifecycle::finish`]).
    async fn finish(
        &self,
        run: &RunRow,
        mut events: RunEvents,
        end: End,
        message_id: MessageId,
        produced: workflow::State,
    ) -> anyhow::Result<()> {
        let ending = match end {
            End::Answered => Ending::Answered,
            End::Failed(failure) => Ending::Failed(RunError {
                code: failure.code,
                message: failure.message,
            }),
            End::Cancelled(reason) => Ending::Cancelled(reason),
        };
        let finished = lifecycle::finish(
            &self.pool,
            &self.cache,
            &self.queue,
            run,
            &mut events,
            message_id,
            ending,
            produced,
        )
        .await
        .context("ending the run")?;
        if finished == Finished::NotHeld {
            tracing::warn!("the run is no longer this attempt's; its result is dropped");
        }
        Ok(())
    }
}
