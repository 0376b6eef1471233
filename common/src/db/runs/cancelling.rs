//! Cancelling runs: a queued run at once, an in-progress run by a request
//! its worker carries out.

use sqlx::{PgConnection, PgPool};

use super::{RunRow, get};
use crate::db::threads::{ThreadRow, thread_columns};
use crate::domain::{CancelReason, RunId, RunStatus, ThreadId, UserId};
use crate::events::{RunEvent, SequencedEvent};

/// What a cancel request did.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request, never stored"
)]
pub enum Cancelled {
    /// No such run of this owner.
    NotFound,
    /// The run had ended already: nothing to cancel.
    Finished(RunRow),
    /// A queued run, cancelled at once: the run, its thread as it is now,
    /// and the stored `run.cancelled` event.
    Stopped {
        run: RunRow,
        thread: ThreadRow,
        event: SequencedEvent,
    },
    /// An in-progress run: its worker is asked to stop it, and will end it
    /// `cancelled` (the run as read after the request may be so already).
    Requested(RunRow),
}

/// Cancel a run: a queued one at once, an in-progress one by request to
/// its worker (which stops it within a second and ends it `cancelled`).
pub async fn cancel(
    pool: &PgPool,
    owner: UserId,
    id: RunId,
    reason: CancelReason,
) -> Result<Cancelled, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let status: Option<RunStatus> =
        sqlx::query_scalar("select status from runs where id = $1 and owner_id = $2 for update")
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
    #[expect(clippy::large_enum_variant, reason = "one per request, on the stack")]
    enum Did {
        Stopped(ThreadRow, SequencedEvent),
        Requested,
        Nothing,
    }
    let did = match status {
        None => return Ok(Cancelled::NotFound),
        Some(RunStatus::Queued) => {
            let (thread, event) = stop_queued(&mut tx, id, reason).await?;
            Did::Stopped(thread, event)
        }
        Some(RunStatus::InProgress) => {
            request_cancel(&mut tx, id, reason).await?;
            Did::Requested
        }
        Some(_) => Did::Nothing,
    };
    tx.commit().await?;
    // Read after the commit: a requested run may have ended since (it ends
    // `cancelled`, whatever it was doing: see `lifecycle::finish`).
    let Some(run) = get(pool, owner, id).await? else {
        return Ok(Cancelled::NotFound);
    };
    Ok(match did {
        Did::Stopped(thread, event) => Cancelled::Stopped { run, thread, event },
        Did::Requested => Cancelled::Requested(run),
        Did::Nothing => Cancelled::Finished(run),
    })
}

/// End a queued run as cancelled: free its place on the thread and store
/// its `run.cancelled` event.
pub(super) async fn stop_queued(
    tx: &mut PgConnection,
    id: RunId,
    reason: CancelReason,
) -> Result<(ThreadRow, SequencedEvent), sqlx::Error> {
    let thread: ThreadRow = sqlx::query_as(concat!(
        "with stopped as (
             update runs set status = 'cancelled', finished_at = now(),
                 cancel_requested_at = now(), cancel_reason = $2, enqueued_at = null
             where id = $1 returning thread_id
         )
         update threads set active_runs = active_runs - 1, version = version + 1, updated_at = now()
         where id = (select thread_id from stopped) returning ",
        thread_columns!()
    ))
    .bind(id)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    let seq: i64 =
        sqlx::query_scalar("select coalesce(max(seq), 0) + 1 from run_events where run_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    let event = RunEvent::RunCancelled { run_id: id, reason };
    crate::db::events::insert(&mut *tx, id, seq, &event).await?;
    Ok((thread, SequencedEvent { seq, event }))
}

/// Ask the worker of an in-progress run to stop it (the first reason stays).
pub(super) async fn request_cancel(
    tx: &mut PgConnection,
    id: RunId,
    reason: CancelReason,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update runs set cancel_requested_at = coalesce(cancel_requested_at, now()),
                         cancel_reason = coalesce(cancel_reason, $2)
         where id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Of `ids`, the runs whose cancellation was requested, with the reason.
pub async fn cancel_requests(
    pool: &PgPool,
    ids: &[RunId],
) -> Result<Vec<(RunId, CancelReason)>, sqlx::Error> {
    sqlx::query_as(
        "select id, coalesce(cancel_reason, 'cancelled') from runs
         where id = any($1) and cancel_requested_at is not null",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A thread's queued runs that an earlier attempt started (their worker
/// was lost): before the API ends one, the events that worker published
/// but did not store must be stored, so that ids are not reused.
/// Returns each with its last attempt.
pub async fn queued_retries(
    pool: &PgPool,
    thread_id: ThreadId,
) -> Result<Vec<(RunId, i32)>, sqlx::Error> {
    sqlx::query_as(
        "select id, attempt from runs where thread_id = $1 and status = 'queued' and attempt > 0",
    )
    .bind(thread_id)
    .fetch_all(pool)
    .await
}
