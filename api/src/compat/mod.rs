//! Surfaces that front ends written for other backends speak, each a thin
//! adapter over the native API: runs are started with
//! [`crate::routes::runs::start`], stopped with [`crate::routes::runs::stop`],
//! and read with [`crate::routes::events::follow`]; threads are the native
//! threads. No surface stores, queues or streams anything its own way.
//!
//! One module per surface; each is behind the same authentication and
//! limits as the native API, and registered (router and OpenAPI document
//! at once) in [`router`].

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard_common::db::{self, threads::NewThread, threads::ThreadRow};
use switchyard_common::domain::{MessageId, MessageRole, RunError, Usage, Visibility};
use switchyard_common::events::{RunEvent, SequencedEvent};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult};
use crate::routes::runs::{self, StartRun, Started};
use crate::state::AppState;

pub mod agent_chat;
pub mod ai_sdk;
pub mod conversations;
pub mod openai;
pub mod simple_chat;

/// Every compatible surface.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(openai::router())
        .merge(agent_chat::router())
        .merge(simple_chat::router())
        .merge(ai_sdk::router())
        .merge(conversations::router())
}

/// A new thread of the caller's with `agent_id`, holding `history` (a
/// conversation the client brings along), written through to the cache.
pub async fn new_thread(
    app: &AppState,
    user: &CurrentUser,
    agent_id: &str,
    metadata: serde_json::Value,
    history: &[(MessageRole, &str)],
    visibility: Visibility,
) -> ApiResult<ThreadRow> {
    let thread = db::threads::create_with_history(
        &app.pool,
        NewThread {
            owner: user.id,
            agent_id: agent_id.to_owned(),
            title: None,
            metadata,
            visibility,
        },
        history,
    )
    .await?;
    app.cache.put_thread(&thread).await;
    if history.is_empty() {
        // The first messages are then written through, and the first run
        // reads its history from the cache.
        app.cache.fill_messages(thread.id, 0, &[]).await;
    }
    Ok(thread)
}

/// Start a run on a thread that this request may have just made
/// (`new_thread`): if the run is refused, that thread goes too, so that a
/// refused request leaves nothing behind.
pub async fn start_or_discard(
    app: &AppState,
    user: &CurrentUser,
    request: StartRun<'_>,
    new_thread: bool,
) -> ApiResult<Started> {
    let thread_id = request.thread_id;
    match runs::start(app, user, request).await {
        Ok(started) => Ok(started),
        Err(error) => {
            // Unless a concurrent request (a second first message of one AI
            // SDK chat) has started a run on it meanwhile.
            if new_thread && db::threads::delete_if_unused(&app.pool, user.id, thread_id).await? {
                app.cache.forget_thread(thread_id).await;
            }
            Err(error)
        }
    }
}

/// `x-switchyard-run-id` and `x-switchyard-thread-id`.
pub fn ids_headers(started: &Started) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-switchyard-run-id", started.run.id.to_string()),
        ("x-switchyard-thread-id", started.run.thread_id.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// How a surface shows a run that starts again (its worker was lost
/// mid-answer, and the next attempt answers anew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarts {
    /// The surface shows each attempt's answer as parts of their own (the
    /// AI SDK's steps and text parts): every event goes through.
    Shown,
    /// The surface's answer is one text that its client concatenates: once
    /// text was sent, a new attempt ends the stream with [`Cut::Restarted`]
    /// rather than append a second answer to the first.
    EndText,
}

/// Why a surface's stream of a run stops before the run's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The server is shutting down, or the relay failed.
    Short,
    /// The run started again after text was sent ([`Restarts::EndText`]).
    Restarted,
}

impl Cut {
    /// What the surface tells its client, in its protocol's error.
    pub fn message(self) -> &'static str {
        match self {
            Self::Short => CUT_SHORT,
            Self::Restarted => RESTARTED,
        }
    }
}

/// Watches a run's events for a restart after text (see [`Restarts`]).
#[derive(Debug)]
pub struct TextGuard {
    restarts: Restarts,
    sent_text: bool,
}

impl TextGuard {
    pub fn new(restarts: Restarts) -> Self {
        Self {
            restarts,
            sent_text: false,
        }
    }

    /// `Some(Cut::Restarted)` if the stream must end before `event`.
    pub fn check(&mut self, event: &RunEvent) -> Option<Cut> {
        match event {
            RunEvent::MessageDelta { delta, .. } if !delta.is_empty() => self.sent_text = true,
            RunEvent::RunStarted { attempt, .. }
                if *attempt > 1 && self.sent_text && self.restarts == Restarts::EndText =>
            {
                return Some(Cut::Restarted);
            }
            _ => {}
        }
        None
    }
}

/// A run's events up to its terminal one; then, if they stopped before it
/// (the server is shutting down, or the relay failed, or the run started
/// again after text was sent and the surface cannot show that), one
/// [`Cut`], so that each surface tells its client in its protocol's words
/// rather than end as if the answer were whole.
pub fn to_the_end(
    events: tokio::sync::mpsc::Receiver<SequencedEvent>,
    restarts: Restarts,
) -> impl futures::Stream<Item = Result<RunEvent, Cut>> {
    let guard = TextGuard::new(restarts);
    futures::stream::unfold(Some((events, guard)), |state| async move {
        let (mut events, mut guard) = state?;
        match events.recv().await {
            Some(event) => {
                if let Some(cut) = guard.check(&event.event) {
                    return Some((Err(cut), None));
                }
                let terminal = event.event.is_terminal();
                Some((Ok(event.event), (!terminal).then_some((events, guard))))
            }
            None => Some((Err(Cut::Short), None)),
        }
    })
}

/// What a surface tells its client when a run's events stop short.
pub const CUT_SHORT: &str = "the answer was cut short: the server is shutting down or lost the \
    run's events; the run goes on, read it again";

/// What a text-only surface tells its client when the run starts again
/// after some of its answer was sent.
pub const RESTARTED: &str = "the answer was cut short: the run's worker was lost and the run \
    started again, so the text sent so far is void; the run goes on, read its answer again";

/// The assistant's answer to a run a surface waited for.
#[derive(Debug)]
pub struct Answer {
    pub message_id: MessageId,
    pub content: String,
    pub usage: Usage,
}

/// Wait for a started run to end, for surfaces that answer with the whole
/// reply instead of a stream. A run that did not answer gives the response
/// to send instead: `502` with the run's error code and message when it
/// failed, `409` when it was cancelled, `503` when the server shut down
/// meanwhile.
pub async fn answer(app: &AppState, started: Started) -> Result<Answer, Response> {
    let mut events = started.follow(app);
    // Agents of a workflow may complete messages of their own on the way;
    // the answer is the one the run completes with.
    let mut said = std::collections::HashMap::new();
    while let Some(event) = events.recv().await {
        match event.event {
            RunEvent::MessageCompleted {
                message_id,
                content,
            } => {
                said.insert(message_id, content);
            }
            RunEvent::RunCompleted {
                message_id, usage, ..
            } => {
                return Ok(Answer {
                    message_id,
                    content: said.remove(&message_id).unwrap_or_default(),
                    usage,
                });
            }
            RunEvent::RunFailed { error, .. } => return Err(failed(&error)),
            RunEvent::RunCancelled { reason, .. } => {
                return Err(
                    ApiError::Conflict(format!("the run was cancelled ({reason})")).into_response(),
                );
            }
            _ => {}
        }
    }
    Err(ApiError::Unavailable.into_response())
}

/// A failed run's response: `502`, with [`run_error_body`].
fn failed(error: &RunError) -> Response {
    (StatusCode::BAD_GATEWAY, axum::Json(run_error_body(error))).into_response()
}

/// A run's error in the contract's error shape, with the run's own code.
pub fn run_error_body(error: &RunError) -> serde_json::Value {
    serde_json::json!({"error": {"code": error.code, "message": error.message}})
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use switchyard_common::domain::{MessageId, RunId, Usage};

    use super::*;

    /// A run whose first attempt said "Hel" before its worker was lost, and
    /// whose second said "Hi" (or, with `text_first` false, whose first
    /// attempt was lost before it said anything).
    fn restarted_run(text_first: bool) -> Vec<RunEvent> {
        let run_id = RunId::new();
        let (first, second) = (MessageId::new(), MessageId::new());
        let mut events = vec![RunEvent::RunStarted { run_id, attempt: 1 }];
        if text_first {
            events.push(RunEvent::MessageDelta {
                message_id: first,
                delta: "Hel".into(),
            });
        }
        events.extend([
            RunEvent::RunStarted { run_id, attempt: 2 },
            RunEvent::MessageDelta {
                message_id: second,
                delta: "Hi".into(),
            },
            RunEvent::RunCompleted {
                run_id,
                message_id: second,
                usage: Usage::default(),
                cost_usd: None,
            },
        ]);
        events
    }

    async fn through(events: Vec<RunEvent>, restarts: Restarts) -> Vec<Result<RunEvent, Cut>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        for (seq, event) in (1..).zip(events) {
            sender.send(SequencedEvent { seq, event }).await.unwrap();
        }
        drop(sender);
        to_the_end(receiver, restarts).collect().await
    }

    #[tokio::test]
    async fn a_text_only_surface_ends_at_a_restart_after_text() {
        let events = restarted_run(true);
        let relayed = through(events.clone(), Restarts::EndText).await;
        assert_eq!(
            relayed,
            vec![
                Ok(events[0].clone()),
                Ok(events[1].clone()),
                Err(Cut::Restarted)
            ]
        );
    }

    #[tokio::test]
    async fn a_restart_before_any_text_goes_on_seamlessly() {
        let events = restarted_run(false);
        let relayed = through(events.clone(), Restarts::EndText).await;
        assert_eq!(relayed, events.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_surface_that_shows_restarts_gets_every_event() {
        let events = restarted_run(true);
        let relayed = through(events.clone(), Restarts::Shown).await;
        assert_eq!(relayed, events.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn events_that_stop_short_of_the_end_say_so() {
        let mut events = restarted_run(false);
        events.truncate(2);
        let relayed = through(events.clone(), Restarts::EndText).await;
        let mut expected: Vec<_> = events.into_iter().map(Ok).collect();
        expected.push(Err(Cut::Short));
        assert_eq!(relayed, expected);
    }
}
