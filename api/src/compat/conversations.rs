//! Conversations, the surface of "OpsAgent"-style chat UIs:
//!
//! - `GET /api/conversations` (newest first, without messages) and
//!   `POST /api/conversations` `{title?, model?}`;
//!   `GET`, `PUT` `{title?, model?}` and `DELETE /api/conversations/{id}`.
//!   A conversation is `{id, title, model, messages: [{role, content,
//!   time}], created_at, last_modified}`: a thread, whose agent is its
//!   `model`. The agent's workflow (triage, planner, …) is its catalog
//!   configuration.
//! - `POST /api/conversations/{id}/messages` `{message}` runs the agent and
//!   answers `{user_message, assistant_message, title}`.
//! - `GET /api/conversations/{id}/thinking`: `data:`-only JSON events of the
//!   conversation's current run, or of the next one if none is running
//!   (a client opens it before or while posting): `function_start`
//!   `{function, arguments}`, `function_end` `{function, result}`,
//!   `agent_invoked` / `agent_finished` `{agent}`; it closes when that run
//!   ends.
//! - `GET /api/user`, `GET /api/models` (the agents) and `GET /api/settings`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_common::db::{self, threads::ThreadPatch, threads::ThreadRow};
use switchyard_common::domain::{Message, MessageRole, ThreadId, Visibility};
use switchyard_common::events::RunEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::routes::events::{self, KEEP_ALIVE};
use crate::routes::runs::StartRun;
use crate::routes::threads;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(post_message))
        .routes(routes!(thinking))
        .routes(routes!(user_info))
        .routes(routes!(models))
        .routes(routes!(settings))
}

/// Conversations a list answers at most (the newest).
const LIST_LIMIT: i64 = 100;
/// Messages a conversation answers at most (the newest).
const MESSAGE_LIMIT: i64 = 500;
/// How long a thinking stream waits for a run to start.
const THINKING_WAIT: Duration = Duration::from_secs(300);
/// How soon a waiting thinking stream first looks for the run (a UI opens
/// it just before posting the message); each later look waits twice as
/// long, up to [`THINKING_POLL_MAX`], so a stream left waiting costs the
/// database next to nothing.
const THINKING_POLL: Duration = Duration::from_millis(200);
/// The longest wait between two looks.
const THINKING_POLL_MAX: Duration = Duration::from_secs(10);

/// A message as these UIs show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationMessage {
    /// `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
    pub time: DateTime<Utc>,
}

impl ConversationMessage {
    fn of(message: &Message) -> Option<Self> {
        let role = match message.role {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::System | MessageRole::Tool => return None,
        };
        Some(Self {
            role,
            content: message.content.clone(),
            time: message.created_at,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    /// The agent that answers.
    pub model: String,
    /// Absent in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ConversationMessage>>,
    pub message_count: i64,
    pub created_at: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
}

impl Conversation {
    fn of(thread: &ThreadRow, messages: Option<Vec<ConversationMessage>>) -> Self {
        Self {
            id: thread.id.to_string(),
            title: thread.title.clone().unwrap_or_default(),
            model: thread.agent_id.clone(),
            messages,
            message_count: thread.message_count,
            created_at: thread.created_at,
            last_modified: thread.updated_at,
        }
    }
}

/// The caller's conversations, newest first, without their messages.
#[utoipa::path(get, path = "/api/conversations", tag = "conversations",
    responses((status = 200, body = Vec<Conversation>)))]
pub async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
) -> ApiResult<JsonBody<Vec<Conversation>>> {
    let page = db::threads::list(
        &app.pool,
        db::threads::ListThreads {
            owner: user.id,
            limit: LIST_LIMIT,
            cursor: None,
            agent_id: None,
            q: None,
        },
    )
    .await?;
    Ok(JsonBody(
        page.items
            .iter()
            .map(|t| Conversation::of(t, None))
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationChange {
    pub title: Option<String>,
    /// The agent that answers; a new conversation's default is the
    /// catalog's first agent.
    pub model: Option<String>,
}

#[utoipa::path(post, path = "/api/conversations", tag = "conversations",
    request_body = ConversationChange,
    responses((status = 201, body = Conversation), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    user: CurrentUser,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, JsonBody<Conversation>)> {
    // UIs post an empty body as often as `{}`.
    let body: ConversationChange = if body.iter().all(u8::is_ascii_whitespace) {
        ConversationChange::default()
    } else {
        crate::extract::from_json(&body)?
    };
    threads::check_title(&body.title)?;
    let agent_id = match body.model {
        Some(model) => {
            threads::check_agent(&app, &model).await?;
            model
        }
        None => threads::default_agent(&app)?,
    };
    let mut thread =
        super::new_thread(&app, &user, &agent_id, json!({}), &[], Visibility::Private).await?;
    if body.title.is_some() {
        let patch = ThreadPatch {
            title: body.title,
            metadata: None,
            agent_id: None,
            visibility: None,
        };
        thread = threads::patch_thread(&app, &user, thread.id, patch).await?;
    }
    Ok((
        StatusCode::CREATED,
        JsonBody(Conversation::of(&thread, Some(Vec::new()))),
    ))
}

/// A conversation with its messages (the newest 500, oldest first).
#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations",
    params(("id" = String, Path)),
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
) -> ApiResult<JsonBody<Conversation>> {
    let thread = threads::load(&app, user.id, id).await?;
    Ok(JsonBody(with_messages(&app, &thread).await?))
}

async fn with_messages(app: &AppState, thread: &ThreadRow) -> ApiResult<Conversation> {
    let page = db::messages::list(&app.pool, thread.id, MESSAGE_LIMIT, None).await?;
    let messages = page
        .items
        .iter()
        .filter_map(|m| ConversationMessage::of(&m.to_resource()))
        .collect();
    Ok(Conversation::of(thread, Some(messages)))
}

/// Rename a conversation or change the agent that answers it.
#[utoipa::path(put, path = "/api/conversations/{id}", tag = "conversations",
    params(("id" = String, Path)), request_body = ConversationChange,
    responses((status = 200, body = Conversation), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn update(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
    Json(body): Json<ConversationChange>,
) -> ApiResult<JsonBody<Conversation>> {
    let patch = ThreadPatch {
        title: body.title,
        metadata: None,
        agent_id: body.model,
        visibility: None,
    };
    let thread = threads::patch_thread(&app, &user, id, patch).await?;
    Ok(JsonBody(with_messages(&app, &thread).await?))
}

#[utoipa::path(delete, path = "/api/conversations/{id}", tag = "conversations",
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
) -> ApiResult<StatusCode> {
    threads::delete(&app, &user, id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Exchange {
    pub user_message: ConversationMessage,
    pub assistant_message: ConversationMessage,
    /// The conversation's title (made from its first message).
    pub title: String,
}

/// Send a message and wait for the agent's answer.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path)), request_body = PostMessage,
    responses((status = 200, body = Exchange), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn post_message(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
    Json(body): Json<PostMessage>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    threads::load(&app, user.id, id).await?;
    let request = StartRun::message(id, &body.message);
    let started = super::start_or_discard(&app, &user, request, false).await?;
    let asked_at = started.run.created_at;
    let answer = match super::answer(&app, started).await {
        Ok(answer) => answer,
        Err(response) => return Ok(response),
    };
    let thread = threads::load(&app, user.id, id).await?;
    Ok(JsonBody(Exchange {
        user_message: ConversationMessage {
            role: "user",
            content: body.message,
            time: asked_at,
        },
        assistant_message: ConversationMessage {
            role: "assistant",
            content: answer.content,
            time: Utc::now(),
        },
        title: thread.title.unwrap_or_default(),
    })
    .into_response())
}

/// What the agent does during the conversation's current or next run.
#[utoipa::path(get, path = "/api/conversations/{id}/thinking", tag = "conversations",
    params(("id" = String, Path)),
    responses((status = 200, description = "`text/event-stream` of `data:` JSON events"),
        (status = 404, body = ErrorBody)))]
pub async fn thinking(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    threads::load(&app, user.id, id).await?;
    let slot = app.limiter.open_stream(&user).await?;
    // Runs up to this one are over: a later one is the next POST's.
    let seen = db::runs::latest_in_thread(&app.pool, id).await?;
    let (tx, rx) = mpsc::channel(64);
    let tasks = app.tasks.clone();
    tasks.spawn(async move {
        let deadline = tokio::time::Instant::now() + THINKING_WAIT;
        let mut poll = THINKING_POLL;
        let run_id = loop {
            match db::runs::active_or_after(&app.pool, id, seen).await {
                Ok(Some(run_id)) => break run_id,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(thread.id = %id, %error, "looking for the run to think about failed");
                    return;
                }
            }
            if tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                // A client that left gives its stream slot back at once.
                () = tx.closed() => return,
            }
            poll = (poll * 2).min(THINKING_POLL_MAX);
        };
        let mut events = events::follow(app, run_id, events::Start::After(0), slot);
        loop {
            // A client that left gives its stream slot back at once, even
            // while the run says nothing this stream shows.
            let event = tokio::select! {
                event = events.recv() => event,
                () = tx.closed() => return,
            };
            let Some(event) = event else { return };
            if let Some(data) = translate(&event.event)
                && tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), |data: Value| {
        Ok(Event::default().data(data.to_string()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One run event as a thinking event, if it is one.
fn translate(event: &RunEvent) -> Option<Value> {
    Some(match event {
        RunEvent::ToolStarted {
            tool, arguments, ..
        } => json!({"type": "function_start", "function": tool, "arguments": arguments}),
        RunEvent::ToolFinished { tool, result, .. } => {
            json!({"type": "function_end", "function": tool, "result": result})
        }
        RunEvent::AgentStarted { agent, .. } => json!({"type": "agent_invoked", "agent": agent}),
        RunEvent::AgentFinished { agent, .. } => {
            json!({"type": "agent_finished", "agent": agent})
        }
        _ => return None,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    pub user_id: String,
    pub user_name: String,
    pub first_name: String,
    pub principal_name: String,
    pub is_authenticated: bool,
    /// How they signed in: `api_key`, `oidc`, `easy_auth` or `dev`.
    pub mode: &'static str,
}

/// Who is calling.
#[utoipa::path(get, path = "/api/user", tag = "conversations",
    responses((status = 200, body = UserInfo)))]
pub async fn user_info(user: CurrentUser) -> JsonBody<UserInfo> {
    let first_name = user
        .name
        .split(|c: char| c.is_whitespace() || c == '@' || c == '.')
        .next()
        .unwrap_or_default()
        .to_owned();
    JsonBody(UserInfo {
        user_id: user.id.to_string(),
        user_name: user.name.clone(),
        first_name,
        principal_name: user.name.clone(),
        is_authenticated: true,
        mode: user.method.as_str(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Models {
    /// The agents' ids.
    pub models: Vec<String>,
}

#[utoipa::path(get, path = "/api/models", tag = "conversations",
    responses((status = 200, body = Models)))]
pub async fn models(
    State(app): State<AppState>,
    _user: CurrentUser,
) -> ApiResult<JsonBody<Models>> {
    let models = db::agents::list_active(&app.pool)
        .await?
        .into_iter()
        .map(|agent| agent.spec.id)
        .collect();
    Ok(JsonBody(Models { models }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    /// Whether the UI shows tool results (`SWITCHYARD_SHOW_FUNC_RESULT`).
    pub show_func_result: bool,
}

#[utoipa::path(get, path = "/api/settings", tag = "conversations",
    responses((status = 200, body = Settings)))]
pub async fn settings(State(app): State<AppState>, _user: CurrentUser) -> JsonBody<Settings> {
    JsonBody(Settings {
        show_func_result: app.config.show_func_result,
    })
}
