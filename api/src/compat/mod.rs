//! Surfaces that front ends written for other backends speak, each a thin
//! adapter over the native API: runs are started with
//! [`crate::routes::runs::start`], stopped with [`crate::routes::runs::stop`],
//! and read with [`crate::routes::events::follow`]; threads are the native
//! threads. No surface stores, queues or streams anything its own way.
//!
//! One module per surface; each is behind the same authentication and
//! limits as the native API, and registered (router and OpenAPI document
//! at once) in [`router`].

use switchyard_common::db::{self, threads::NewThread, threads::ThreadRow};
use switchyard_common::domain::{MessageId, MessageRole, RunError, Usage};
use switchyard_common::events::RunEvent;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::CurrentUser;
use crate::error::ApiResult;
use crate::routes::runs::Started;
use crate::state::AppState;

pub mod agent_chat;
pub mod ai_sdk;
pub mod openai;
pub mod simple_chat;

/// Every compatible surface.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(openai::router())
        .merge(agent_chat::router())
        .merge(simple_chat::router())
        .merge(ai_sdk::router())
}

/// A new thread of the caller's with `agent_id`, holding `history` (a
/// conversation the client brings along), written through to the cache.
pub async fn new_thread(
    app: &AppState,
    user: &CurrentUser,
    agent_id: &str,
    metadata: serde_json::Value,
    history: &[(MessageRole, &str)],
) -> ApiResult<ThreadRow> {
    let thread = db::threads::create_with_history(
        &app.pool,
        NewThread {
            owner: user.id,
            agent_id: agent_id.to_owned(),
            title: None,
            metadata,
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

/// How a run that a surface waited for ended.
#[derive(Debug)]
pub enum Ended {
    /// The answer: the assistant message stored for the run.
    Completed {
        message_id: MessageId,
        content: String,
        usage: Usage,
    },
    Failed(RunError),
    Cancelled {
        reason: String,
    },
}

/// Wait for a started run to end, for surfaces that answer with the whole
/// reply instead of a stream. `None` if the server shut down meanwhile.
pub async fn wait(app: &AppState, started: Started) -> Option<Ended> {
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
                return Some(Ended::Completed {
                    message_id,
                    content: said.remove(&message_id).unwrap_or_default(),
                    usage,
                });
            }
            RunEvent::RunFailed { error, .. } => return Some(Ended::Failed(error)),
            RunEvent::RunCancelled { reason, .. } => return Some(Ended::Cancelled { reason }),
            _ => {}
        }
    }
    None
}
