//! Simple chat, the surface of single-conversation chat front ends backed by
//! a request queue:
//!
//! - `POST /api/chat` `{message, conversation_id?, priority?}` →
//!   `{response, conversation_id, request_id}` (the conversation is a thread,
//!   the request a run). A body in the Vercel AI SDK's shape (`messages`, or
//!   a `message` object with `parts`) is the AI SDK surface instead
//!   ([`super::ai_sdk`]).
//! - `POST /api/chat/stream`, the same body: `data: {"token", "type":
//!   "content"}` events, then `data: {"done": true, "metadata"}`; on failure
//!   `data: {"token": "<message>", "type": "error"}`. With `?format=message`,
//!   the form of servers written with sse-starlette: `event: message` whose
//!   data is the raw token text, then `event: done` (data: the metadata) or
//!   `event: error` (data: the message).
//! - `GET /api/status`, `POST /api/queue/status` and `POST /api/queue/cancel`
//!   (`{request_id}`) over the real queue.
//! - The message `/clear` starts a new conversation instead of a run.
//!
//! A new conversation is with the catalog's first agent.

use std::convert::Infallible;

use axum::Json as JsonBody;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_common::db::{self, threads::ThreadRow};
use switchyard_common::domain::{RunId, RunStatus, ThreadId, Visibility};
use switchyard_common::events::RunEvent;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ai_sdk;
use crate::auth::{self, CurrentUser};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Query};
use crate::routes::events::KEEP_ALIVE;
use crate::routes::runs::{self, StartRun, Started};
use crate::routes::threads;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(chat_stream))
        .routes(routes!(status))
        .routes(routes!(queue_status))
        .routes(routes!(queue_cancel))
}

/// What `/clear` answers.
const CLEARED: &str = "Started a new conversation.";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimpleChatRequest {
    pub message: String,
    /// The conversation to continue; a new one if absent.
    pub conversation_id: Option<ThreadId>,
    /// 1 (most urgent) to 10; default 5.
    pub priority: Option<i16>,
    /// The end user a service acts for: each has their own conversations
    /// and queue. Refused from a caller that is not a service.
    pub user_id: Option<String>,
}

/// `POST /api/chat` takes either body (read by shape, see [`chat`]).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "describes the request body in the OpenAPI document"
)]
pub enum ChatBody {
    Simple(SimpleChatRequest),
    AiSdk(ai_sdk::UiChatRequest),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimpleChatAnswer {
    pub response: String,
    pub conversation_id: String,
    /// The run's id; `null` for a command such as `/clear`.
    pub request_id: Option<String>,
}

/// Chat: the simple chat's answer as JSON, or, for a body in the AI SDK's
/// shape, the AI SDK's UI message stream.
#[utoipa::path(post, path = "/api/chat", tag = "simple-chat", request_body = ChatBody,
    responses(
        (status = 200, body = SimpleChatAnswer,
         description = "The answer; for an AI SDK body, its UI message stream"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 502, body = ErrorBody),
    ))]
pub async fn chat(
    State(app): State<AppState>,
    user: CurrentUser,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    if ai_sdk::is_ui_request(&body) {
        return ai_sdk::chat(&app, &user, body).await;
    }
    let request = parse(body)?;
    let user = auth::for_end_user(&app, user, request.user_id.as_deref(), "user_id").await?;
    let started = match begin(&app, &user, &request).await? {
        Begun::Cleared(thread) => {
            return Ok(JsonBody(SimpleChatAnswer {
                response: CLEARED.into(),
                conversation_id: thread.id.to_string(),
                request_id: None,
            })
            .into_response());
        }
        Begun::Run(started) => *started,
    };
    let conversation_id = started.run.thread_id.to_string();
    let request_id = started.run.id.to_string();
    Ok(match super::answer(&app, started).await {
        Ok(answer) => JsonBody(SimpleChatAnswer {
            response: answer.content,
            conversation_id,
            request_id: Some(request_id),
        })
        .into_response(),
        Err(response) => response,
    })
}

/// How `/api/chat/stream` writes its events.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// `data: {"token", "type"}` … `data: {"done": true, "metadata"}`.
    #[default]
    Json,
    /// `event: message` with the raw token text, then `event: done` or
    /// `event: error`.
    Message,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// `json` (the default) or `message`.
    #[param(value_type = Option<StreamFormat>)]
    pub format: Option<StreamFormat>,
}

/// What the stream tells, whatever its format.
enum Said {
    Token(String),
    /// The end; the metadata of the answer.
    Done(Value),
    Error(String),
}

impl StreamFormat {
    fn event(self, said: Said) -> Event {
        match (self, said) {
            (Self::Json, Said::Token(token)) => {
                Event::default().data(json!({"token": token, "type": "content"}).to_string())
            }
            (Self::Json, Said::Done(metadata)) => {
                Event::default().data(json!({"done": true, "metadata": metadata}).to_string())
            }
            (Self::Json, Said::Error(message)) => {
                Event::default().data(json!({"token": message, "type": "error"}).to_string())
            }
            (Self::Message, Said::Token(token)) => Event::default()
                .event("message")
                .data(one_line_breaks(&token)),
            (Self::Message, Said::Done(metadata)) => {
                Event::default().event("done").data(metadata.to_string())
            }
            (Self::Message, Said::Error(message)) if message.trim().is_empty() => {
                Event::default().event("error").data("the request failed")
            }
            (Self::Message, Said::Error(message)) => Event::default()
                .event("error")
                .data(one_line_breaks(&message)),
        }
    }
}

/// Raw text for `data:` lines: SSE ends a line at `\r`, `\n` or `\r\n`
/// alike and a reader joins the lines with `\n`, so that is the one break
/// that arrives as sent.
fn one_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// The simple chat, streamed.
#[utoipa::path(post, path = "/api/chat/stream", tag = "simple-chat",
    request_body = SimpleChatRequest, params(StreamParams),
    responses(
        (status = 200, description = "`text/event-stream`: `data:` JSON events, or with \
            `format=message` `message` events of raw token text, then `done` or `error`"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
pub async fn chat_stream(
    State(app): State<AppState>,
    user: CurrentUser,
    Query(params): Query<StreamParams>,
    Json(request): Json<SimpleChatRequest>,
) -> ApiResult<Response> {
    let format = params.format.unwrap_or_default();
    let user = auth::for_end_user(&app, user, request.user_id.as_deref(), "user_id").await?;
    let said = match begin(&app, &user, &request).await? {
        Begun::Cleared(thread) => vec![
            Said::Token(CLEARED.into()),
            Said::Done(json!({"conversation_id": thread.id, "request_id": null})),
        ],
        Begun::Run(started) => return Ok(relay(&app, *started, format).into_response()),
    };
    let events = stream::iter(
        said.into_iter()
            .map(move |said| Ok::<_, Infallible>(format.event(said))),
    );
    Ok(Sse::new(events).into_response())
}

/// A run's deltas as tokens, then its end: done, or an error.
fn relay(
    app: &AppState,
    started: Started,
    format: StreamFormat,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let conversation_id = started.run.thread_id;
    let request_id = started.run.id;
    let events = super::to_the_end(started.follow(app), super::Restarts::EndText).filter_map(
        move |event| async move {
            let said = match event {
                // An empty `data` is no event to a reader: nothing to send.
                Ok(RunEvent::MessageDelta { delta, .. }) if delta.is_empty() => return None,
                Ok(RunEvent::MessageDelta { delta, .. }) => Said::Token(delta),
                Ok(RunEvent::RunCompleted {
                    message_id,
                    usage,
                    cost_usd,
                    ..
                }) => Said::Done(json!({
                "conversation_id": conversation_id, "request_id": request_id,
                "message_id": message_id, "usage": usage, "cost_usd": cost_usd})),
                Ok(RunEvent::RunFailed { error, .. }) => Said::Error(error.message),
                Ok(RunEvent::RunCancelled { reason, .. }) => {
                    Said::Error(format!("the request was cancelled ({reason})"))
                }
                Ok(_) => return None,
                Err(cut) => Said::Error(cut.message().into()),
            };
            Some(Ok(format.event(said)))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn parse(body: Value) -> ApiResult<SimpleChatRequest> {
    serde_json::from_value(body).map_err(|e| ApiError::Validation(e.to_string()))
}

/// What a simple chat request started.
enum Begun {
    /// `/clear`: a new, empty conversation.
    Cleared(ThreadRow),
    Run(Box<Started>),
}

async fn begin(
    app: &AppState,
    user: &CurrentUser,
    request: &SimpleChatRequest,
) -> ApiResult<Begun> {
    let existing = match request.conversation_id {
        Some(id) => Some(threads::load(app, user.id, id).await?),
        None => None,
    };
    let agent_id = match &existing {
        Some(thread) => thread.agent_id.clone(),
        None => threads::default_agent(app)?,
    };
    runs::check_priority(request.priority)?;
    if request.message.trim() == "/clear" {
        let thread =
            super::new_thread(app, user, &agent_id, json!({}), &[], Visibility::Private).await?;
        return Ok(Begun::Cleared(thread));
    }
    let (thread, created) = match existing {
        Some(thread) => (thread, false),
        None => (
            super::new_thread(app, user, &agent_id, json!({}), &[], Visibility::Private).await?,
            true,
        ),
    };
    let request_run = StartRun {
        priority: request.priority,
        ..StartRun::message(thread.id, &request.message)
    };
    let started = super::start_or_discard(app, user, request_run, created).await?;
    Ok(Begun::Run(Box::new(started)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceStatus {
    /// `ok`.
    pub status: &'static str,
    /// The provider of the agent a new conversation is with.
    pub provider: Option<String>,
    /// That agent's model.
    pub model: Option<String>,
    /// Runs waiting and running now, of every user.
    pub queue_stats: QueueCounts,
    /// The same as `queue_stats`, for clients of earlier releases.
    pub queue: QueueCounts,
    /// Users with a run waiting or running now.
    pub active_users: i64,
    /// The caller's own runs (the end user's, for a service acting for one).
    pub mine: QueueCounts,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct QueueCounts {
    pub queued: i64,
    pub in_progress: i64,
}

/// The service and its queue.
#[utoipa::path(get, path = "/api/status", tag = "simple-chat",
    responses((status = 200, body = ServiceStatus)))]
pub async fn status(
    State(app): State<AppState>,
    user: CurrentUser,
) -> ApiResult<JsonBody<ServiceStatus>> {
    let mut queue = QueueCounts::default();
    for (status, count) in db::runs::active_counts(&app.pool).await? {
        match status.as_str() {
            "queued" => queue.queued = count,
            _ => queue.in_progress = count,
        }
    }
    let (queued, in_progress) = db::runs::active_of(&app.pool, user.id).await?;
    let agent = app.config.catalog.agents.first();
    Ok(JsonBody(ServiceStatus {
        status: "ok",
        // An `http` agent's answers come from its upstream, not a provider.
        provider: agent.map(|a| a.provider.clone()).filter(|p| !p.is_empty()),
        model: agent.map(|a| a.model.clone()),
        queue_stats: queue.clone(),
        queue,
        active_users: db::runs::active_users(&app.pool).await?,
        mine: QueueCounts {
            queued,
            in_progress,
        },
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueRequest {
    pub request_id: RunId,
    /// The end user a service acts for.
    pub user_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueState {
    pub request_id: String,
    pub conversation_id: String,
    pub status: RunStatus,
    /// Runs ahead of it while it is queued.
    pub queue_position: Option<i64>,
}

/// Where a request stands.
#[utoipa::path(post, path = "/api/queue/status", tag = "simple-chat",
    request_body = QueueRequest,
    responses((status = 200, body = QueueState), (status = 404, body = ErrorBody)))]
pub async fn queue_status(
    State(app): State<AppState>,
    user: CurrentUser,
    Json(request): Json<QueueRequest>,
) -> ApiResult<JsonBody<QueueState>> {
    let user = auth::for_end_user(&app, user, request.user_id.as_deref(), "user_id").await?;
    let run = runs::load(&app, &user, request.request_id).await?;
    Ok(JsonBody(state_of(&run)))
}

/// Cancel a request, queued or running.
#[utoipa::path(post, path = "/api/queue/cancel", tag = "simple-chat",
    request_body = QueueRequest,
    responses((status = 200, body = QueueState), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "It has already ended")))]
pub async fn queue_cancel(
    State(app): State<AppState>,
    user: CurrentUser,
    Json(request): Json<QueueRequest>,
) -> ApiResult<JsonBody<QueueState>> {
    let user = auth::for_end_user(&app, user, request.user_id.as_deref(), "user_id").await?;
    let run = runs::stop(&app, &user, request.request_id).await?;
    Ok(JsonBody(state_of(&run)))
}

fn state_of(run: &db::runs::RunRow) -> QueueState {
    QueueState {
        request_id: run.id.to_string(),
        conversation_id: run.thread_id.to_string(),
        status: run.status,
        queue_position: run.queue_position,
    }
}
