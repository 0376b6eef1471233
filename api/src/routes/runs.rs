//! Runs: start, read, list, steps.

use std::time::Duration;

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use switchyard_common::bus::{self, tail, wire};
use switchyard_common::db::{self, runs::CancelReason, runs::RunRow};
use switchyard_common::domain::{AgentStatus, Multitask, Run, RunId, RunStatus, Step, ThreadId};
use switchyard_common::events::SequencedEvent;
use switchyard_common::queue::{self, RunJob};
use switchyard_common::telemetry;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::events;
use super::threads::{check_limit, no_agent};
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::limits::StreamSlot;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(steps))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    /// The user's message: 1 to `max_message_chars` characters.
    pub content: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub input: RunInput,
    /// Overrides the thread's agent for this run.
    pub agent_id: Option<String>,
    /// Overrides the agent's model for this run: its own, or one of its
    /// `allowed_models`.
    pub model: Option<String>,
    /// 1 (most urgent) to 10; default 5.
    pub priority: Option<i16>,
    pub multitask: Option<Multitask>,
    /// Answer with the run's event stream instead of the run.
    pub stream: Option<bool>,
}

/// `Idempotency-Key` values are at most this long.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Start a run: stores the user message and a `queued` run together, then
/// enqueues it. With `"stream": true` or `Accept: text/event-stream` the
/// answer is the run's event stream.
#[utoipa::path(post, path = "/v1/threads/{thread_id}/runs", tag = "runs",
    params(("thread_id" = String, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes the call safe to retry for 24 h")),
    request_body = CreateRun,
    responses((status = 202, body = Run),
              (status = 200, content_type = "text/event-stream", description = "The run's events, when streaming"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(thread_id): Path<ThreadId>,
    headers: HeaderMap,
    Json(body): Json<CreateRun>,
) -> ApiResult<Response> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => Some(key.to_owned()),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                )));
            }
        },
    };
    let stream = body.stream.unwrap_or(false)
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    let idempotency = idempotency_key.map(|key| (key, request_hash(thread_id, &body)));
    let started = start(
        &app,
        &user,
        StartRun {
            thread_id,
            content: &body.input.content,
            agent_id: body.agent_id.clone(),
            model: body.model.clone(),
            priority: body.priority,
            multitask: body.multitask.unwrap_or_default(),
            idempotency,
            follows: stream,
        },
    )
    .await?;
    match started.slot {
        Some(slot) => {
            let from = started
                .queued
                .map_or(events::Start::After(0), events::Start::Created);
            Ok(events::stream(app, started.run.id, from, slot).into_response())
        }
        None => Ok((StatusCode::ACCEPTED, JsonBody(started.run.to_resource())).into_response()),
    }
}

/// A request to start a run, from any surface.
pub struct StartRun<'a> {
    pub thread_id: ThreadId,
    pub content: &'a str,
    /// Overrides the thread's agent.
    pub agent_id: Option<String>,
    /// Overrides the agent's model.
    pub model: Option<String>,
    /// 1–10; `None` is 5.
    pub priority: Option<i16>,
    pub multitask: Multitask,
    /// An `Idempotency-Key` and the hash of the request it came with.
    pub idempotency: Option<(String, String)>,
    /// The caller will follow the run's events, to stream them or to
    /// answer when the run ends: a stream slot is taken (before anything is
    /// stored), so that waiting requests count against `open_streams` like
    /// streams do.
    pub follows: bool,
}

impl<'a> StartRun<'a> {
    /// A message on a thread, run by the thread's agent and model at the
    /// default priority, queued behind the thread's active runs, and
    /// followed to its end: what the compatible surfaces send, which answer
    /// when the run ends whether they stream or not.
    pub fn message(thread_id: ThreadId, content: &'a str) -> Self {
        Self {
            thread_id,
            content,
            agent_id: None,
            model: None,
            priority: None,
            multitask: Multitask::Enqueue,
            idempotency: None,
            follows: true,
        }
    }
}

/// A started run (or the one an idempotent retry names).
pub struct Started {
    pub run: RunRow,
    /// The new run's `run.queued` event; `None` for a replay.
    pub queued: Option<SequencedEvent>,
    /// With `stream`: the caller's slot among their open streams.
    pub slot: Option<StreamSlot>,
}

impl Started {
    /// Follow the run's events from the start (the slot goes with them).
    pub fn follow(self, app: &AppState) -> tokio::sync::mpsc::Receiver<SequencedEvent> {
        let from = self
            .queued
            .map_or(events::Start::After(0), events::Start::Created);
        let slot = self.slot.unwrap_or_else(StreamSlot::unlimited);
        events::follow(app.clone(), self.run.id, from, slot)
    }
}

/// A run's priority: 1 (most urgent) to 10, 5 when not given.
pub fn check_priority(priority: Option<i16>) -> ApiResult<i16> {
    match priority.unwrap_or(5) {
        n @ 1..=10 => Ok(n),
        n => Err(ApiError::Validation(format!(
            "priority: must be 1 to 10, not {n}"
        ))),
    }
}

/// Start a run: check the request and the caller's limits, store the user
/// message and the `queued` run together, then enqueue it. Every surface
/// starts runs through this.
pub async fn start(
    app: &AppState,
    user: &CurrentUser,
    request: StartRun<'_>,
) -> ApiResult<Started> {
    let chars = request.content.chars().count();
    let max = app.config.max_message_chars;
    if chars == 0 || chars > max {
        return Err(ApiError::Validation(format!(
            "input.content: must be 1 to {max} characters, not {chars}"
        )));
    }
    let priority = match (
        check_priority(request.priority)?,
        user.limits.most_urgent_priority.map(i16::from),
    ) {
        // Unasked, the default gives way to the caller's most urgent.
        (default, Some(most_urgent)) if default < most_urgent && request.priority.is_none() => {
            most_urgent
        }
        (asked, Some(most_urgent)) if asked < most_urgent => {
            return Err(ApiError::Forbidden(format!(
                "priority: {asked} is kept for other roles; yours may ask for {most_urgent} to 10"
            )));
        }
        (priority, _) => priority,
    };
    if let Some(model) = &request.model
        && (model.trim().is_empty() || model.len() > 200)
    {
        return Err(ApiError::Validation(
            "model: must be 1 to 200 characters".into(),
        ));
    }
    let thread_id = request.thread_id;
    let thread = super::threads::load(app, user.id, thread_id).await?;
    let agent_id = request
        .agent_id
        .clone()
        .unwrap_or_else(|| thread.agent_id.clone());
    // The agent is looked up even when the model is overridden: a deleted
    // agent (the thread's or the requested one) takes no new runs.
    let stored;
    let spec = match app.config.catalog.agent(&agent_id) {
        // The catalog's agents cannot be changed over the API: the file's
        // definition is the stored one.
        Some(agent) => agent,
        None => {
            stored = db::agents::get(&app.pool, &agent_id)
                .await?
                .ok_or_else(|| no_agent(&agent_id))?
                .spec;
            &stored
        }
    };
    let status = spec.status;
    let model = match &request.model {
        None => spec.model.clone(),
        Some(model) if *model == spec.model || spec.allowed_models.contains(model) => model.clone(),
        Some(model) => {
            return Err(ApiError::Validation(format!(
                "model: agent {agent_id:?} runs {:?}{}; not {model:?}",
                spec.model,
                match spec.allowed_models.is_empty() {
                    true => String::new(),
                    false => format!(" or one of {:?}", spec.allowed_models),
                }
            )));
        }
    };
    let multitask = request.multitask;
    // Limits last: a request refused for its content counts against none.
    let slot = match request.follows {
        true => Some(app.limiter.open_stream(user).await?),
        false => None,
    };
    let ticket = app.limiter.message(user).await?;
    if multitask == Multitask::Interrupt {
        let retries = db::runs::queued_retries(&app.pool, thread_id).await?;
        adopt_lost_events(app, &retries).await?;
    }

    let agent = agent_id.clone();
    let trace = telemetry::inject();
    let created = db::runs::create(
        &app.pool,
        db::runs::NewRun {
            owner: user.id,
            thread_id,
            agent_id,
            model,
            priority,
            multitask,
            content: request.content,
            idempotency: request
                .idempotency
                .as_ref()
                .map(|(key, hash)| (key.as_str(), hash.clone())),
            limits: db::runs::RunLimits {
                active_runs: user.limits.active_runs,
                tokens_per_day: user.limits.tokens_per_day,
            },
            trace: &trace,
            priority_aging: app.config.priority_aging,
            // Refused after the idempotency check: a retry of a request
            // made before the agent was deactivated gets its run.
            agent_inactive: status == AgentStatus::Inactive,
        },
    )
    .await;
    if !matches!(created, Ok(db::runs::Created::New { .. })) {
        app.limiter.refund_message(ticket).await;
    }
    let (run, queued) = match created? {
        db::runs::Created::New {
            run,
            message,
            thread,
            queued,
            interrupted,
            enqueue,
        } => {
            app.cache.put_thread(&thread).await;
            app.cache.append_message(&message).await;
            for (stopped, event) in &interrupted.stopped {
                announce(app, *stopped, wire::ENDED, event).await;
            }
            for requested in interrupted.requested {
                app.queue
                    .announce_cancel(requested, CancelReason::Interrupted)
                    .await;
            }
            let queued = SequencedEvent {
                seq: 1,
                event: queued,
            };
            // The run's stream starts with its `run.queued`, before a worker
            // can add to it: a quiet follower then finds the run in Redis
            // rather than asking PostgreSQL.
            announce(app, run.id, wire::CREATION, &queued).await;
            if enqueue {
                app.queue
                    .enqueue(&app.pool, RunJob::traced(run.id, trace))
                    .await;
            }
            switchyard_common::metrics::METRICS.runs_created.inc();
            (run, Some(queued))
        }
        db::runs::Created::Replayed(run) => (run, None),
        db::runs::Created::KeyReused => {
            return Err(ApiError::Conflict(
                "Idempotency-Key was already used with a different request".into(),
            ));
        }
        db::runs::Created::ThreadBusy => {
            return Err(ApiError::Conflict(format!(
                "thread {thread_id} has an active run"
            )));
        }
        db::runs::Created::ThreadNotFound => return Err(ApiError::not_found("thread", thread_id)),
        db::runs::Created::AgentInactive => {
            return Err(ApiError::Conflict(format!(
                "agent {agent:?} is inactive: it takes no new runs"
            )));
        }
        db::runs::Created::LimitReached(reached) => return Err(limit_error(reached)),
    };
    Ok(Started { run, queued, slot })
}

/// The `429` of a run limit.
fn limit_error(reached: db::runs::LimitReached) -> ApiError {
    match reached {
        db::runs::LimitReached::ActiveRuns(limit) => ApiError::RateLimited {
            limit: "active_runs",
            message: format!(
                "rate limit active_runs reached: at most {limit} queued or in-progress runs at once"
            ),
            // Runs end at their own pace; this is how often to look again.
            retry_after: Duration::from_secs(5),
        },
        db::runs::LimitReached::TokensPerDay { budget, spent } => {
            let now = Utc::now();
            let midnight = (now.date_naive() + chrono::Days::new(1))
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            ApiError::RateLimited {
                limit: "tokens_per_day",
                message: format!(
                    "rate limit tokens_per_day reached: {spent} of {budget} tokens used today (UTC)"
                ),
                retry_after: (midnight - now).to_std().unwrap_or(Duration::from_secs(1)),
            }
        }
    }
}

/// Cancel a run: a queued run ends `cancelled` at once; an in-progress run
/// is stopped by its worker within a second (wherever it is: streaming,
/// in a tool, between steps), keeps what it said so far, and ends
/// `cancelled`. Either way the stream ends with `run.cancelled` and the
/// thread is free.
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", tag = "runs",
    params(("run_id" = String, Path)),
    responses((status = 202, body = Run, description = "Cancelled (queued) or being stopped (in progress)"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The run has ended")))]
pub async fn cancel(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<RunId>,
) -> ApiResult<(StatusCode, JsonBody<Run>)> {
    let run = stop(&app, &user, id).await?;
    Ok((StatusCode::ACCEPTED, JsonBody(run.to_resource())))
}

/// Cancel a run of the caller's (see [`cancel`]); every surface stops runs
/// through this.
pub async fn stop(app: &AppState, user: &CurrentUser, id: RunId) -> ApiResult<RunRow> {
    let current = load(app, user, id).await?;
    if current.status == RunStatus::Queued && current.attempt > 0 {
        adopt_lost_events(app, &[(id, current.attempt)]).await?;
    }
    Ok(
        match db::runs::cancel(&app.pool, user.id, id, CancelReason::Requested).await? {
            db::runs::Cancelled::NotFound => return Err(ApiError::not_found("run", id)),
            db::runs::Cancelled::Finished(_) => {
                return Err(ApiError::Conflict(format!("run {id} has already ended")));
            }
            db::runs::Cancelled::Stopped { run, thread, event } => {
                app.cache.put_thread(&thread).await;
                announce(app, id, wire::ENDED, &event).await;
                queue::hand_off(&app.pool, &app.queue, thread.id).await?;
                run
            }
            db::runs::Cancelled::Requested(run) => {
                app.queue.announce_cancel(id, CancelReason::Requested).await;
                run
            }
        },
    )
}

/// Store what the lost workers of queued runs published but had not
/// stored, before the API ends them with an event of its own: its id must
/// come after every id a client may have seen. Each run comes with its
/// last attempt, which can no longer write once this has read its stream.
async fn adopt_lost_events(app: &AppState, runs: &[(RunId, i32)]) -> ApiResult<()> {
    let mut conn = app.redis.clone();
    for &(run_id, attempt) in runs {
        let stored = db::events::last_seq(&app.pool, run_id).await?;
        bus::adopt_published(&mut conn, &app.keys, &app.pool, run_id, attempt + 1, stored).await?;
    }
    Ok(())
}

/// Tell a run's live followers of an event the API stored itself, as
/// writer generation `generation` (see [`wire`]).
async fn announce(app: &AppState, run_id: RunId, generation: i32, event: &SequencedEvent) {
    let mut conn = app.redis.clone();
    if let Err(error) = tail::announce(&mut conn, &app.keys, run_id, generation, event).await {
        tracing::debug!(%error, run.id = %run_id, "announcing an event failed");
    }
}

/// A digest of what makes two run requests "the same request".
fn request_hash(thread_id: ThreadId, body: &CreateRun) -> String {
    use sha2::Digest;
    let canonical = serde_json::json!({ "thread_id": thread_id, "body": body });
    let digest = sha2::Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A run of the caller's, or `not_found`.
pub async fn load(app: &AppState, user: &CurrentUser, id: RunId) -> ApiResult<RunRow> {
    db::runs::get(&app.pool, user.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", id))
}

/// A run `user` may read: theirs, or a finished run of a public thread.
pub async fn load_readable(app: &AppState, user: &CurrentUser, id: RunId) -> ApiResult<RunRow> {
    db::runs::get_readable(&app.pool, user.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("run", id))
}

#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<RunId>,
) -> ApiResult<JsonBody<Run>> {
    Ok(JsonBody(
        load_readable(&app, &user, id).await?.to_resource(),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    pub cursor: Option<RunId>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    pub next_cursor: Option<String>,
}

/// A thread's runs, newest first.
#[utoipa::path(get, path = "/v1/threads/{thread_id}/runs", tag = "runs",
    params(("thread_id" = String, Path), ListParams),
    responses((status = 200, body = RunList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(thread_id): Path<ThreadId>,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonBody<RunList>> {
    let limit = check_limit(params.limit)?;
    let thread = super::threads::load_readable(&app, user.id, thread_id).await?;
    let others = thread.owner_id != user.id;
    let page =
        db::runs::list_for_thread(&app.pool, thread_id, limit, params.cursor, others).await?;
    Ok(JsonBody(RunList {
        runs: page.items.iter().map(RunRow::to_resource).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct StepList {
    pub steps: Vec<Step>,
}

#[utoipa::path(get, path = "/v1/runs/{run_id}/steps", tag = "runs",
    params(("run_id" = String, Path)),
    responses((status = 200, body = StepList), (status = 404, body = ErrorBody)))]
pub async fn steps(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<RunId>,
) -> ApiResult<JsonBody<StepList>> {
    load_readable(&app, &user, id).await?;
    Ok(JsonBody(StepList {
        steps: db::steps::list(&app.pool, id).await?,
    }))
}
