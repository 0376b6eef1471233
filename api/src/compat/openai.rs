//! OpenAI-compatible chat: `POST /v1/chat/completions` (streaming and not)
//! and `GET /v1/models`, so that any chat UI or SDK written for OpenAI's
//! API talks to Switchyard's agents.
//!
//! `model` names an agent. Every call is a recorded run on a new thread of
//! the caller's: the messages before the last user message become the
//! thread's history, the last one starts the run. The agent's own
//! instructions, tools and workflow apply; its tool calls are made by the
//! worker and traced as steps, and only the answer reaches the client.
//! Responses name the run and the thread in `x-switchyard-run-id` and
//! `x-switchyard-thread-id`.
//!
//! Client-side tools (`tools`, `tool` messages) and non-text content are
//! refused with `422`: the agent's tools are the server's.

use std::convert::Infallible;

use axum::Json as JsonBody;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_common::db;
use switchyard_common::domain::{MessageRole, Usage, Visibility};
use switchyard_common::events::RunEvent;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, CurrentUser};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::routes::events::KEEP_ALIVE;
use crate::routes::runs::{StartRun, Started};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(completions))
        .routes(routes!(models))
}

/// Most messages one request may carry.
const MAX_MESSAGES: usize = 500;

/// A chat-completions request. Sampling fields (`temperature`, `top_p`,
/// `max_tokens`, …) are accepted and left to the agent's configuration.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// The agent's id.
    pub model: String,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Client-side tools: refused when not empty.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
    /// The end user a service acts for (see `X-Switchyard-End-User`);
    /// refused from anyone else.
    pub user: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the run's usage.
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, or text parts `[{"type": "text", "text": "…"}]`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub content: Value,
}

/// A whole answer (`stream: false`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Completion {
    /// `chatcmpl-<run id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: OutMessage,
    /// `stop`.
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

impl From<Usage> for CompletionUsage {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens + usage.output_tokens,
        }
    }
}

/// The agents, as models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    /// The agent's id.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    pub created: i64,
    /// `switchyard`.
    pub owned_by: &'static str,
}

/// The agents, listed as OpenAI models.
#[utoipa::path(get, path = "/v1/models", tag = "openai-compatible",
    responses((status = 200, body = ModelList)))]
pub async fn models(
    State(app): State<AppState>,
    _user: CurrentUser,
) -> ApiResult<JsonBody<ModelList>> {
    let data = db::agents::list_active(&app.pool)
        .await?
        .into_iter()
        .map(|agent| Model {
            id: agent.spec.id,
            object: "model",
            created: agent.created_at.timestamp(),
            owned_by: "switchyard",
        })
        .collect();
    Ok(JsonBody(ModelList {
        object: "list",
        data,
    }))
}

/// Chat with an agent the way OpenAI's chat-completions API is called. With
/// `stream: true` the answer comes as `chat.completion.chunk` events and
/// `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai-compatible",
    request_body = CompletionRequest,
    responses(
        (status = 200, body = Completion,
         description = "The answer; with `stream: true`, `text/event-stream` of chunks"),
        (status = 404, body = ErrorBody, description = "No agent is called `model`"),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "The run failed"),
    ))]
pub async fn completions(
    State(app): State<AppState>,
    user: CurrentUser,
    Json(request): Json<CompletionRequest>,
) -> ApiResult<Response> {
    let user = auth::for_end_user(&app, user, request.user.as_deref(), "user").await?;
    let (history, last) = conversation(&request)?;
    let max = app.config.max_message_chars;
    if let Some(long) = history.iter().find(|(_, text)| text.chars().count() > max) {
        return Err(ApiError::Validation(format!(
            "messages: a {:?} message is longer than {max} characters",
            long.0
        )));
    }
    let agent = db::agents::get(&app.pool, &request.model)
        .await?
        .ok_or_else(|| ApiError::not_found("model", &request.model))?;
    let history: Vec<(MessageRole, &str)> = history
        .iter()
        .map(|(role, text)| (*role, text.as_str()))
        .collect();
    let metadata = json!({"source": "openai-compatible"});
    let thread = super::new_thread(
        &app,
        &user,
        &agent.spec.id,
        metadata,
        &history,
        Visibility::Private,
    )
    .await?;
    let request_run = StartRun::message(thread.id, &last);
    let started = super::start_or_discard(&app, &user, request_run, true).await?;
    let ids = super::ids_headers(&started);
    let id = format!("chatcmpl-{}", started.run.id);
    let created = started.run.created_at.timestamp();
    let model = request.model;
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let chunks = Chunks {
            id,
            created,
            model,
            include_usage,
        };
        return Ok((ids, chunks.stream(&app, started)).into_response());
    }
    let response = match super::answer(&app, started).await {
        Ok(answer) => JsonBody(Completion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![Choice {
                index: 0,
                message: OutMessage {
                    role: "assistant",
                    content: answer.content,
                },
                finish_reason: "stop",
            }],
            usage: answer.usage.into(),
        })
        .into_response(),
        Err(response) => response,
    };
    Ok((ids, response).into_response())
}

/// The conversation before the last message, and the last message, which
/// must be the user's.
fn conversation(request: &CompletionRequest) -> ApiResult<(Vec<(MessageRole, String)>, String)> {
    if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::Validation(
            "tools: client-side tools are not supported; the agent's tools run on the server"
                .into(),
        ));
    }
    if request.messages.is_empty() || request.messages.len() > MAX_MESSAGES {
        return Err(ApiError::Validation(format!(
            "messages: must hold 1 to {MAX_MESSAGES} messages, not {}",
            request.messages.len()
        )));
    }
    let mut turns = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" => MessageRole::System,
            "user" => MessageRole::User,
            "assistant" => MessageRole::Assistant,
            other => {
                return Err(ApiError::Validation(format!(
                    "messages[{i}].role: {other:?} is not supported (system, developer, user or assistant)"
                )));
            }
        };
        turns.push((role, text_of(&message.content, i)?));
    }
    let Some((MessageRole::User, last)) = turns.pop() else {
        return Err(ApiError::Validation(
            "messages: the last message must be the user's".into(),
        ));
    };
    Ok((turns, last))
}

/// A message's text: a string, or the concatenation of its text parts.
fn text_of(content: &Value, index: usize) -> ApiResult<String> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(fragment)) => text.push_str(fragment),
                    (kind, _) => {
                        return Err(ApiError::Validation(format!(
                            "messages[{index}].content: only text parts are supported, not {}",
                            kind.unwrap_or("an untyped part")
                        )));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::Validation(format!(
            "messages[{index}].content: must be a string or an array of text parts"
        ))),
    }
}

/// The `chat.completion.chunk`s of one run.
struct Chunks {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl Chunks {
    fn stream(
        self,
        app: &AppState,
        started: Started,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
        let first = self.chunk(json!({"role": "assistant", "content": ""}), None);
        let body = super::to_the_end(started.follow(app), super::Restarts::EndText)
            .map(move |event| {
                let ended = event.as_ref().map_or(true, RunEvent::is_terminal);
                let data: Vec<Value> = match event {
                    Ok(RunEvent::MessageDelta { delta, .. }) => {
                        vec![self.chunk(json!({"content": delta}), None)]
                    }
                    Ok(RunEvent::RunCompleted { usage, .. }) => {
                        let mut out = vec![self.chunk(json!({}), Some("stop"))];
                        if self.include_usage {
                            out.push(self.usage(usage));
                        }
                        out
                    }
                    Ok(RunEvent::RunFailed { error, .. }) => vec![super::run_error_body(&error)],
                    Ok(RunEvent::RunCancelled { reason, .. }) => {
                        vec![json!({"error": {"code": "cancelled",
                            "message": format!("the run was cancelled ({reason})")}})]
                    }
                    Ok(_) => Vec::new(),
                    Err(cut) => vec![json!({"error": {"code": "unavailable",
                        "message": cut.message()}})],
                };
                let mut out: Vec<Event> = data
                    .into_iter()
                    .map(|d| Event::default().data(d.to_string()))
                    .collect();
                if ended {
                    out.push(Event::default().data("[DONE]"));
                }
                stream::iter(out.into_iter().map(Ok))
            })
            .flatten();
        let head = stream::once(async move { Ok(Event::default().data(first.to_string())) });
        Sse::new(head.chain(body)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    fn usage(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": CompletionUsage::from(usage),
        })
    }
}
