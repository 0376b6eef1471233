//! Agent chat, the surface of chat UIs built around one agent at a time:
//!
//! - `POST /api/agents/{agent_id}/chat` `{message, thread_id?, stream}`:
//!   with `stream` (the default), `data:`-only JSON events: `token`,
//!   `trace_start` / `trace_end` around each tool call, `trace_update` as
//!   agents of a workflow start and finish, `heartbeat` every 15 s, `error`
//!   if the run fails, and `done` last. Without, the whole answer as JSON.
//! - `GET /api/agents/{agent_id}/threads?limit&offset&status` →
//!   `{threads, total, limit, offset}`.
//! - `GET` and `DELETE /api/agents/{agent_id}/threads/{thread_id}`
//!   (`?hard_delete=true` removes it for good).
//! - The agent registry these front ends manage agents with:
//!   `GET /api/agents`, `GET /api/agents/{agent_id}`, and for
//!   administrators `POST /api/agents`, `PUT` and `DELETE
//!   /api/agents/{agent_id}`: the native `/v1/agents`, at these paths.
//!
//! A thread of another agent is `404` here, as one of another user is.

use std::convert::Infallible;

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::{Stream, StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_common::db::{self, threads::ThreadRow};
use switchyard_common::domain::{
    Agent, AgentSpec, Message, Thread, ThreadId, ThreadStatus, Visibility,
};
use switchyard_common::events::{RunEvent, SequencedEvent};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, CurrentUser};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::routes::events::KEEP_ALIVE;
use crate::routes::runs::StartRun;
use crate::routes::{agents, threads};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(list))
        .routes(routes!(show, remove))
        .routes(routes!(registry_list, registry_create))
        .routes(routes!(registry_show, registry_update, registry_remove))
}

/// Messages a thread answer carries at most (the newest).
const THREAD_MESSAGES: i64 = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub message: String,
    /// Continue this thread (the agent's, the caller's); a new one if absent.
    pub thread_id: Option<ThreadId>,
    /// Default `true`.
    pub stream: Option<bool>,
}

/// The answer of a chat without `stream`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatAnswer {
    pub run_id: String,
    pub thread_id: String,
    pub message_id: String,
    pub content: String,
    pub tokens_used: i64,
}

/// Chat with an agent. With `stream` (the default) the answer is an SSE
/// stream of `data:` JSON events; see the module's description.
#[utoipa::path(post, path = "/api/agents/{agent_id}/chat", tag = "agent-chat",
    params(("agent_id" = String, Path)), request_body = ChatRequest,
    responses(
        (status = 200, body = ChatAnswer,
         description = "The answer; with `stream`, `text/event-stream`"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 502, body = ErrorBody),
    ))]
pub async fn chat(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(agent_id): Path<String>,
    Json(request): Json<ChatRequest>,
) -> ApiResult<Response> {
    let agent = db::agents::get(&app.pool, &agent_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", &agent_id))?;
    let (thread, created) = match request.thread_id {
        Some(id) => (agents_thread(&app, &user, &agent_id, id).await?, false),
        None => {
            let thread = super::new_thread(
                &app,
                &user,
                &agent.spec.id,
                json!({}),
                &[],
                Visibility::Private,
            )
            .await?;
            (thread, true)
        }
    };
    let stream = request.stream.unwrap_or(true);
    let request_run = StartRun::message(thread.id, &request.message);
    let started = super::start_or_discard(&app, &user, request_run, created).await?;
    let run_id = started.run.id.to_string();
    let thread_id = thread.id.to_string();
    if stream {
        let events = started.follow(&app);
        return Ok(sse(events, run_id, thread_id).into_response());
    }
    Ok(match super::answer(&app, started).await {
        Ok(answer) => JsonBody(ChatAnswer {
            run_id,
            thread_id,
            message_id: answer.message_id.to_string(),
            content: answer.content,
            tokens_used: answer.usage.input_tokens + answer.usage.output_tokens,
        })
        .into_response(),
        Err(response) => response,
    })
}

/// A thread of the caller's that belongs to `agent_id`.
async fn agents_thread(
    app: &AppState,
    user: &CurrentUser,
    agent_id: &str,
    id: ThreadId,
) -> ApiResult<ThreadRow> {
    let thread = threads::load(app, user.id, id).await?;
    if thread.agent_id != agent_id {
        return Err(ApiError::not_found("thread", id));
    }
    Ok(thread)
}

/// The run's events as this surface's `data:` events, with heartbeats.
fn sse(
    events: mpsc::Receiver<SequencedEvent>,
    run_id: String,
    thread_id: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Relay {
        events: mpsc::Receiver<SequencedEvent>,
        heartbeat: tokio::time::Interval,
        run_id: String,
        thread_id: String,
        ended: bool,
        guard: super::TextGuard,
    }
    let first = tokio::time::Instant::now() + KEEP_ALIVE;
    let mut heartbeat = tokio::time::interval_at(first, KEEP_ALIVE);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let relay = Relay {
        events,
        heartbeat,
        run_id,
        thread_id,
        ended: false,
        // Its answer is one text: a restart after text ends the stream.
        guard: super::TextGuard::new(super::Restarts::EndText),
    };
    let body = stream::unfold(relay, |mut relay| async move {
        if relay.ended {
            return None;
        }
        let data = tokio::select! {
            event = relay.events.recv() => match event {
                Some(event) => match relay.guard.check(&event.event) {
                    None => {
                        let data = translate(&event.event, &relay.run_id, &relay.thread_id);
                        relay.ended = event.event.is_terminal();
                        data
                    }
                    Some(cut) => {
                        relay.ended = true;
                        Some(json!({"type": "error", "run_id": relay.run_id,
                                    "code": "unavailable", "error": cut.message()}))
                    }
                },
                None => {
                    relay.ended = true;
                    Some(json!({"type": "error", "run_id": relay.run_id, "code": "unavailable",
                                "error": super::CUT_SHORT}))
                }
            },
            _ = relay.heartbeat.tick() => Some(json!({"type": "heartbeat"})),
        };
        Some((data, relay))
    })
    .filter_map(|data| async move {
        let mut data = data?;
        data["timestamp"] = json!(Utc::now());
        Some(Ok(Event::default().data(data.to_string())))
    });
    Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// One run event as this surface's event, if it has one.
fn translate(event: &RunEvent, run_id: &str, thread_id: &str) -> Option<Value> {
    Some(match event {
        RunEvent::MessageDelta { delta, .. } => json!({"type": "token", "content": delta}),
        RunEvent::ToolStarted {
            step_id,
            tool,
            arguments,
        } => json!({"type": "trace_start", "trace_id": step_id, "tool": tool,
                    "arguments": arguments}),
        RunEvent::ToolFinished {
            step_id,
            tool,
            result,
            is_error,
            latency_ms,
        } => json!({"type": "trace_end", "trace_id": step_id, "tool": tool, "result": result,
                    "is_error": is_error, "latency_ms": latency_ms}),
        RunEvent::AgentStarted { step_id, agent } => json!({"type": "trace_update",
            "trace_id": step_id, "agent": agent, "status": "started"}),
        RunEvent::AgentFinished { step_id, agent } => json!({"type": "trace_update",
            "trace_id": step_id, "agent": agent, "status": "finished"}),
        RunEvent::RunCompleted {
            message_id, usage, ..
        } => json!({"type": "done", "run_id": run_id, "thread_id": thread_id,
                    "message_id": message_id,
                    "tokens_used": usage.input_tokens + usage.output_tokens}),
        RunEvent::RunFailed { error, .. } => json!({"type": "error", "run_id": run_id,
            "code": error.code, "error": error.message}),
        RunEvent::RunCancelled { reason, .. } => json!({"type": "error", "run_id": run_id,
            "code": "cancelled", "error": format!("the run was cancelled ({reason})")}),
        _ => return None,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// Default 0.
    pub offset: Option<i64>,
    /// `idle` or `busy`.
    pub status: Option<ThreadStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadPage {
    pub threads: Vec<Thread>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// The caller's threads with this agent, newest first.
#[utoipa::path(get, path = "/api/agents/{agent_id}/threads", tag = "agent-chat",
    params(("agent_id" = String, Path), ListParams),
    responses((status = 200, body = ThreadPage), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(agent_id): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonBody<ThreadPage>> {
    let limit = threads::check_limit(params.limit)?;
    let offset = params.offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(ApiError::Validation(format!(
            "offset: must be 0 to 1000000, not {offset}"
        )));
    }
    let busy = params.status.map(|s| s == ThreadStatus::Busy);
    let (rows, total) =
        db::threads::list_of_agent(&app.pool, user.id, &agent_id, busy, limit, offset).await?;
    Ok(JsonBody(ThreadPage {
        threads: rows.iter().map(ThreadRow::to_resource).collect(),
        total,
        limit,
        offset,
    }))
}

/// A thread with its newest messages (up to 100, oldest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadWithMessages {
    #[serde(flatten)]
    pub thread: Thread,
    pub message_count: i64,
    pub messages: Vec<Message>,
}

#[utoipa::path(get, path = "/api/agents/{agent_id}/threads/{thread_id}", tag = "agent-chat",
    params(("agent_id" = String, Path), ("thread_id" = String, Path)),
    responses((status = 200, body = ThreadWithMessages), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    Path((agent_id, id)): Path<(String, ThreadId)>,
) -> ApiResult<JsonBody<ThreadWithMessages>> {
    let thread = agents_thread(&app, &user, &agent_id, id).await?;
    let page = db::messages::list(&app.pool, id, THREAD_MESSAGES, None).await?;
    Ok(JsonBody(ThreadWithMessages {
        thread: thread.to_resource(),
        message_count: thread.message_count,
        messages: page.items.iter().map(|m| m.to_resource()).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// Remove the thread with its messages, runs, steps and events for good
    /// (default: hide it).
    #[serde(default)]
    pub hard_delete: bool,
}

#[utoipa::path(delete, path = "/api/agents/{agent_id}/threads/{thread_id}", tag = "agent-chat",
    params(("agent_id" = String, Path), ("thread_id" = String, Path), RemoveParams),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    user: CurrentUser,
    Path((agent_id, id)): Path<(String, ThreadId)>,
    Query(params): Query<RemoveParams>,
) -> ApiResult<StatusCode> {
    agents_thread(&app, &user, &agent_id, id).await?;
    threads::delete(&app, &user, id, params.hard_delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agents this deployment offers (`GET /v1/agents`).
#[utoipa::path(get, path = "/api/agents", tag = "agent-chat",
    responses((status = 200, body = agents::AgentList)))]
pub async fn registry_list(
    app: State<AppState>,
    user: CurrentUser,
) -> ApiResult<JsonBody<agents::AgentList>> {
    agents::list(app, user).await
}

/// One agent (`GET /v1/agents/{agent_id}`).
#[utoipa::path(get, path = "/api/agents/{agent_id}", tag = "agent-chat",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn registry_show(
    app: State<AppState>,
    user: CurrentUser,
    agent_id: Path<String>,
) -> ApiResult<JsonBody<Agent>> {
    agents::show(app, user, agent_id).await
}

/// Create an agent, for administrators (`POST /v1/agents`).
#[utoipa::path(post, path = "/api/agents", tag = "agent-chat", request_body = AgentSpec,
    responses((status = 201, body = Agent), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn registry_create(
    app: State<AppState>,
    admin: Admin,
    spec: Json<AgentSpec>,
) -> ApiResult<(StatusCode, JsonBody<Agent>)> {
    agents::create(app, admin, spec).await
}

/// Replace an agent's definition, its `status` included, for
/// administrators (`PUT /v1/agents/{agent_id}`).
#[utoipa::path(put, path = "/api/agents/{agent_id}", tag = "agent-chat",
    params(("agent_id" = String, Path)), request_body = AgentSpec,
    responses((status = 200, body = Agent), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn registry_update(
    app: State<AppState>,
    admin: Admin,
    agent_id: Path<String>,
    spec: Json<AgentSpec>,
) -> ApiResult<JsonBody<Agent>> {
    agents::update(app, admin, agent_id, spec).await
}

/// Delete an agent, for administrators (`DELETE /v1/agents/{agent_id}`).
#[utoipa::path(delete, path = "/api/agents/{agent_id}", tag = "agent-chat",
    params(("agent_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn registry_remove(
    app: State<AppState>,
    admin: Admin,
    agent_id: Path<String>,
) -> ApiResult<StatusCode> {
    agents::remove(app, admin, agent_id).await
}
