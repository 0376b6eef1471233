//! The end of a run, by the attempt that holds it.
//!
//! One transaction takes the run's thread and then the run (the order in
//! which a new run interrupting the thread takes them), checks that this
//! attempt still holds the run, and stores the answer (or what was said
//! before a stop), the terminal events and the status together. A cancel
//! stored before this transaction — whose request was answered `202` —
//! always wins: the run ends `cancelled`, keeping what it said. A cancel
//! that comes after finds the run ended and is answered `409`.

use sqlx::PgPool;

use crate::bus::RunEvents;
use crate::cache::Cache;
use crate::db::{self, messages::ToolTurn, runs::RunRow};
use crate::domain::{CancelReason, MessageId, MessageRole, RunError, RunStatus, Usage};
use crate::events::RunEvent;
use crate::queue::{self, RunQueue};

/// How an attempt's work ended.
#[derive(Debug)]
pub enum Ending {
    /// The agent answered.
    Answered,
    Failed(RunError),
    /// Stopped on request.
    Cancelled(CancelReason),
}

/// What the attempt produced.
#[derive(Debug, Default)]
pub struct Produced {
    /// The answer's text (or what was said before a stop).
    pub content: String,
    pub tool_turns: Vec<ToolTurn>,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
}

/// What [`finish`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// The run ended with this status.
    Ended(RunStatus),
    /// This attempt no longer holds the run: nothing was stored.
    NotHeld,
}

/// End `run`'s attempt `run.attempt` with `ending`, its answer stored as
/// message `message_id`; then publish the terminal events, update the
/// cache and hand the thread to its next run.
#[expect(
    clippy::too_many_arguments,
    reason = "the services a transition uses, then what it stores"
)]
pub async fn finish(
    pool: &PgPool,
    cache: &Cache,
    queue: &RunQueue,
    run: &RunRow,
    events: &mut RunEvents,
    message_id: MessageId,
    ending: Ending,
    produced: Produced,
) -> Result<Finished, sqlx::Error> {
    // Every delta is durable before the events that close the stream.
    events.sync().await;
    let mut tx = pool.begin().await?;
    let Some(cancel) = db::runs::lock_held(&mut tx, run.thread_id, run.id, run.attempt).await?
    else {
        return Ok(Finished::NotHeld);
    };
    let ending = match (cancel, ending) {
        (_, Ending::Cancelled(reason)) => Ending::Cancelled(reason),
        // Accepted before this end: the cancel's `202` holds.
        (Some(reason), _) => Ending::Cancelled(reason),
        (None, ending) => ending,
    };
    let Produced {
        content,
        tool_turns,
        usage,
        cost_usd,
    } = produced;
    let keep = match &ending {
        Ending::Answered => true,
        Ending::Cancelled(_) => !content.is_empty(),
        Ending::Failed(_) => false,
    };
    let mut terminal = Vec::new();
    let mut appended = None;
    if keep {
        let message = db::messages::append(
            &mut tx,
            db::messages::NewMessage {
                id: message_id,
                thread_id: run.thread_id,
                run_id: Some(run.id),
                role: MessageRole::Assistant,
                content: &content,
                tool_calls: (!tool_turns.is_empty()).then_some(tool_turns.as_slice()),
            },
            0,
        )
        .await?;
        appended = message.map(|(m, _)| m);
        terminal.push(RunEvent::MessageCompleted {
            message_id,
            content,
        });
    }
    let (status, outcome) = match ending {
        Ending::Answered => {
            terminal.push(RunEvent::Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cached_input_tokens: usage.cached_input_tokens,
                cost_usd,
            });
            terminal.push(RunEvent::RunCompleted {
                run_id: run.id,
                message_id,
                usage,
                cost_usd,
            });
            (
                RunStatus::Completed,
                db::runs::Outcome::Completed { message_id },
            )
        }
        Ending::Failed(error) => {
            tracing::warn!(code = %error.code, message = %error.message, "run failed");
            terminal.push(RunEvent::RunFailed {
                run_id: run.id,
                error: error.clone(),
            });
            (RunStatus::Failed, db::runs::Outcome::Failed(error))
        }
        Ending::Cancelled(reason) => {
            tracing::info!(reason = reason.as_str(), "run cancelled");
            terminal.push(RunEvent::RunCancelled {
                run_id: run.id,
                reason,
            });
            (
                RunStatus::Cancelled,
                db::runs::Outcome::Cancelled {
                    message_id: keep.then_some(message_id),
                },
            )
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
    db::events::insert_batch(&mut tx, &records).await?;
    let thread = db::runs::finish(
        &mut tx,
        db::runs::Finish {
            run_id: run.id,
            attempt: run.attempt,
            outcome,
            usage,
            cost_usd,
        },
    )
    .await?;
    // The run was locked as held above: the update found it.
    let Some(thread) = thread else {
        return Ok(Finished::NotHeld);
    };
    tx.commit().await?;
    crate::metrics::METRICS.finished(status.as_str());
    tracing::info!(
        status = status.as_str(),
        input_tokens = usage.input_tokens,
        output_tokens = usage.output_tokens,
        "run finished"
    );
    for (seq, event) in numbered {
        events.publish_stored(seq, event);
    }
    cache.put_thread(&thread).await;
    if let Some(message) = &appended {
        cache.append_message(message).await;
    }
    // The thread's queued runs are counted in `active_runs` (kept under
    // its row lock): with none left, there is nothing to hand over.
    if thread.active_runs > 0 {
        queue::hand_off(pool, queue, run.thread_id).await?;
    }
    Ok(Finished::Ended(status))
}
