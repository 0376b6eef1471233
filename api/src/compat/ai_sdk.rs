//! The Vercel AI SDK's UI message stream protocol, which `useChat` and
//! `DefaultChatTransport` speak:
//!
//! - `POST /api/chat` with the SDK's body, `{id, messages: [UIMessage]}` or
//!   `{id, message: UIMessage}` (a UIMessage has `parts`): the chat `id`,
//!   which the client makes up, names a thread of the caller's (created on
//!   the first message, holding the messages sent before the last); the last
//!   message, the user's, starts a run. The answer is the UI message stream,
//!   header `x-vercel-ai-ui-message-stream: v1`: `start`, `start-step`,
//!   `text-start` / `text-delta` / `text-end`, `tool-input-start` /
//!   `tool-input-available` / `tool-output-available` (or
//!   `tool-output-error`), `finish-step`, `finish`, `error`, then `[DONE]`.
//! - `GET /api/chat/{id}/stream` resumes: the chat's active run streamed
//!   again from its start, or `204` when none is active.
//!
//! The chat's history lives in Switchyard, owned by the caller.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt as _, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_common::db;
use switchyard_common::domain::{MessageId, MessageRole, RunId, ThreadId, Visibility};
use switchyard_common::events::{RunEvent, SequencedEvent};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Path;
use crate::routes::events::{self, KEEP_ALIVE};
use crate::routes::runs::StartRun;
use crate::routes::threads;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(resume))
}

/// The header that tells the SDK which protocol the stream speaks.
const PROTOCOL_HEADER: &str = "x-vercel-ai-ui-message-stream";
/// Longest chat id accepted.
const MAX_CHAT_ID: usize = 200;
/// Most messages one request may carry.
const MAX_MESSAGES: usize = 500;

/// The AI SDK's request body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UiChatRequest {
    /// The chat's id, made up by the client.
    pub id: String,
    /// The whole chat, the new user message last.
    pub messages: Option<Vec<UiMessage>>,
    /// Only the new user message.
    pub message: Option<UiMessage>,
    /// `submit-message` (the default); regenerating is not supported.
    pub trigger: Option<String>,
    /// The chat template's sharing setting: `private` (the default for a
    /// new chat) or `public`. Sent with every message; it sets the chat's
    /// thread's visibility.
    #[serde(rename = "selectedVisibilityType")]
    pub selected_visibility_type: Option<Visibility>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UiMessage {
    pub id: Option<String>,
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// `{"type": "text", "text"}` parts are read; others are skipped.
    #[schema(value_type = Vec<Object>)]
    pub parts: Vec<Value>,
}

/// Whether a `POST /api/chat` body is the AI SDK's: it has `messages`, or a
/// `message` that is an object (the simple chat's is a string).
pub fn is_ui_request(body: &Value) -> bool {
    body.get("messages").is_some() || body.get("message").is_some_and(Value::is_object)
}

/// Answer an AI SDK chat request with the run's UI message stream.
pub async fn chat(app: &AppState, user: &CurrentUser, body: Value) -> ApiResult<Response> {
    let request: UiChatRequest =
        serde_json::from_value(body).map_err(|e| ApiError::Validation(e.to_string()))?;
    let (history, last) = conversation(&request)?;
    let max = app.config.max_message_chars;
    if history.iter().any(|(_, text)| text.chars().count() > max) {
        return Err(ApiError::Validation(format!(
            "messages: a message is longer than {max} characters"
        )));
    }
    // The chat's thread, unless it was deleted since: then the chat starts
    // over on a new one.
    let linked = db::ui_chats::thread_of(&app.pool, user.id, &request.id).await?;
    let live = match linked {
        Some(thread_id) => match threads::load(app, user.id, thread_id).await {
            Ok(thread) => Some(thread),
            Err(ApiError::NotFound(_)) => None,
            Err(error) => return Err(error),
        },
        None => None,
    };
    // A later message that says otherwise changes it, once its run is in.
    let mut new_visibility = None;
    let (thread_id, created) = match live {
        Some(thread) => {
            new_visibility = request
                .selected_visibility_type
                .filter(|v| *v != thread.visibility);
            (thread.id, false)
        }
        None => {
            let agent_id = threads::default_agent(app)?;
            let history: Vec<(MessageRole, &str)> = history
                .iter()
                .map(|(role, text)| (*role, text.as_str()))
                .collect();
            let metadata = json!({"source": "ai-sdk", "chat_id": request.id});
            let visibility = request.selected_visibility_type.unwrap_or_default();
            let thread =
                super::new_thread(app, user, &agent_id, metadata, &history, visibility).await?;
            let chat_thread =
                db::ui_chats::link(&app.pool, user.id, &request.id, thread.id, linked).await?;
            if chat_thread == thread.id {
                (thread.id, true)
            } else {
                // A concurrent first message made the chat: use its thread.
                threads::delete(app, user, thread.id, true).await?;
                (chat_thread, false)
            }
        }
    };
    let request_run = StartRun::message(thread_id, &last);
    let started = super::start_or_discard(app, user, request_run, created).await?;
    if let Some(visibility) = new_visibility {
        let patch = db::threads::ThreadPatch {
            title: None,
            metadata: None,
            agent_id: None,
            visibility: Some(visibility),
        };
        threads::patch_thread(app, user, thread_id, patch).await?;
    }
    let run_id = started.run.id;
    // The thread's id lets a page share the chat (`/v1/threads/{id}`).
    let ids = super::ids_headers(&started);
    let mut response = ui_stream(started.follow(app), run_id);
    response.headers_mut().extend(ids);
    Ok(response)
}

/// The messages before the last, and the last, which must be the user's.
fn conversation(request: &UiChatRequest) -> ApiResult<(Vec<(MessageRole, String)>, String)> {
    if request.id.trim().is_empty() || request.id.len() > MAX_CHAT_ID {
        return Err(ApiError::Validation(format!(
            "id: must be 1 to {MAX_CHAT_ID} characters"
        )));
    }
    if let Some(trigger) = request.trigger.as_deref()
        && trigger != "submit-message"
    {
        return Err(ApiError::Validation(format!(
            "trigger: only submit-message is supported, not {trigger:?}"
        )));
    }
    let messages: Vec<&UiMessage> = match (&request.messages, &request.message) {
        (Some(messages), None) => messages.iter().collect(),
        (None, Some(message)) => vec![message],
        _ => {
            return Err(ApiError::Validation(
                "give either messages or message".into(),
            ));
        }
    };
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(ApiError::Validation(format!(
            "messages: must hold 1 to {MAX_MESSAGES} messages"
        )));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let role = match message.role.as_str() {
            "system" => MessageRole::System,
            "user" => MessageRole::User,
            "assistant" => MessageRole::Assistant,
            other => {
                return Err(ApiError::Validation(format!(
                    "messages[{i}].role: {other:?} is not system, user or assistant"
                )));
            }
        };
        let text: String = message
            .parts
            .iter()
            .filter(|part| part["type"] == "text")
            .filter_map(|part| part["text"].as_str())
            .collect();
        turns.push((role, text));
    }
    match turns.pop() {
        Some((MessageRole::User, last)) if !last.is_empty() => Ok((turns, last)),
        _ => Err(ApiError::Validation(
            "messages: the last message must be the user's, with text".into(),
        )),
    }
}

/// Resume the chat's stream: its active run from the start, or `204`.
#[utoipa::path(get, path = "/api/chat/{id}/stream", tag = "ai-sdk",
    params(("id" = String, Path, description = "The chat's id")),
    responses(
        (status = 200, description = "The active run's UI message stream"),
        (status = 204, description = "No run of the chat is active"),
        (status = 404, body = ErrorBody),
    ))]
pub async fn resume(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let thread_id: ThreadId = db::ui_chats::thread_of(&app.pool, user.id, &chat_id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat", &chat_id))?;
    threads::load(&app, user.id, thread_id).await?;
    let Some(run_id) = db::runs::active_in_thread(&app.pool, thread_id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let slot = app.limiter.open_stream(&user).await?;
    let events = events::follow(app, run_id, events::Start::After(0), slot);
    Ok(ui_stream(events, run_id))
}

/// The SSE response of a run as UI message stream parts.
fn ui_stream(events: mpsc::Receiver<SequencedEvent>, run_id: RunId) -> Response {
    let mut parts = Parts::default();
    let start = json!({"type": "start", "messageId": run_id.to_string()});
    // A new attempt opens a step of its own, with a text part of its own.
    let body = super::to_the_end(events, super::Restarts::Shown)
        .map(move |event| {
            let mut out = match &event {
                Ok(event) => parts.of(event),
                Err(cut) => vec![json!({"type": "error", "errorText": cut.message()})],
            };
            if event.as_ref().map_or(true, RunEvent::is_terminal) {
                out.push(Value::String("[DONE]".into()));
            }
            stream::iter(out.into_iter().map(|data| {
                let text = match data {
                    Value::String(done) => done,
                    part => part.to_string(),
                };
                Ok::<_, Infallible>(Event::default().data(text))
            }))
        })
        .flatten();
    let head = stream::once(async move { Ok(Event::default().data(start.to_string())) });
    let sse = Sse::new(head.chain(body)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    (
        [(
            HeaderName::from_static(PROTOCOL_HEADER),
            HeaderValue::from_static("v1"),
        )],
        sse,
    )
        .into_response()
}

/// Where the stream stands: which step and text part are open.
#[derive(Default)]
struct Parts {
    step_open: bool,
    /// The message whose text part is open.
    text: Option<MessageId>,
    /// A tool result came since the last text: the next text is a new step.
    after_tool: bool,
}

impl Parts {
    /// The stream parts of one run event.
    fn of(&mut self, event: &RunEvent) -> Vec<Value> {
        let mut out = Vec::new();
        match event {
            RunEvent::RunStarted { attempt, .. } => {
                // A new attempt (the last one's worker was lost) answers
                // anew: in a step and a text part of its own.
                if *attempt > 1 {
                    self.close_step(&mut out);
                    self.after_tool = false;
                }
                self.open_step(&mut out);
            }
            RunEvent::MessageDelta { message_id, delta } => {
                if self.after_tool {
                    self.close_step(&mut out);
                    self.after_tool = false;
                }
                self.open_step(&mut out);
                if self.text != Some(*message_id) {
                    self.close_text(&mut out);
                    out.push(json!({"type": "text-start", "id": message_id}));
                    self.text = Some(*message_id);
                }
                out.push(json!({"type": "text-delta", "id": message_id, "delta": delta}));
            }
            RunEvent::ToolStarted {
                step_id,
                tool,
                arguments,
            } => {
                self.open_step(&mut out);
                self.close_text(&mut out);
                out.push(json!({"type": "tool-input-start", "toolCallId": step_id,
                                "toolName": tool}));
                out.push(
                    json!({"type": "tool-input-available", "toolCallId": step_id,
                                "toolName": tool, "input": arguments}),
                );
            }
            RunEvent::ToolFinished {
                step_id,
                result,
                is_error,
                ..
            } => {
                out.push(if *is_error {
                    let text = result
                        .as_str()
                        .map_or_else(|| result.to_string(), str::to_owned);
                    json!({"type": "tool-output-error", "toolCallId": step_id, "errorText": text})
                } else {
                    json!({"type": "tool-output-available", "toolCallId": step_id,
                           "output": result})
                });
                self.after_tool = true;
            }
            RunEvent::RunCompleted { .. } => {
                self.close_step(&mut out);
                out.push(json!({"type": "finish", "finishReason": "stop"}));
            }
            RunEvent::RunFailed { error, .. } => {
                self.close_text(&mut out);
                out.push(json!({"type": "error", "errorText": error.message}));
            }
            RunEvent::RunCancelled { reason, .. } => {
                self.close_text(&mut out);
                out.push(json!({"type": "error",
                                "errorText": format!("the run was cancelled ({reason})")}));
            }
            _ => {}
        }
        out
    }

    fn open_step(&mut self, out: &mut Vec<Value>) {
        if !self.step_open {
            out.push(json!({"type": "start-step"}));
            self.step_open = true;
        }
    }

    fn close_text(&mut self, out: &mut Vec<Value>) {
        if let Some(id) = self.text.take() {
            out.push(json!({"type": "text-end", "id": id}));
        }
    }

    fn close_step(&mut self, out: &mut Vec<Value>) {
        self.close_text(out);
        if self.step_open {
            out.push(json!({"type": "finish-step"}));
            self.step_open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_attempt_answers_in_a_step_and_text_part_of_its_own() {
        let run_id = RunId::new();
        let (first, second) = (MessageId::new(), MessageId::new());
        let mut parts = Parts::default();
        let mut stream = Vec::new();
        for event in [
            RunEvent::RunStarted { run_id, attempt: 1 },
            RunEvent::MessageDelta {
                message_id: first,
                delta: "Hel".into(),
            },
            RunEvent::RunStarted { run_id, attempt: 2 },
            RunEvent::MessageDelta {
                message_id: second,
                delta: "Hi".into(),
            },
        ] {
            stream.extend(parts.of(&event));
        }
        let kinds: Vec<&str> = stream.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "start-step",
                "text-start",
                "text-delta",
                "text-end",
                "finish-step",
                "start-step",
                "text-start",
                "text-delta"
            ]
        );
        assert_eq!(stream[1]["id"], first.to_string());
        assert_eq!(stream[6]["id"], second.to_string());
    }
}
