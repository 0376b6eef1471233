//! Leases: which worker holds an in-progress run, until when; taking runs
//! back from lost workers and from workers shutting down.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::CancelReason;
use crate::domain::{RunId, ThreadId};

/// Renew `worker`'s leases on `ids`; returns the runs it still holds (a
/// run missing from the answer was taken back: its work must stop).
pub async fn renew_leases(
    pool: &PgPool,
    worker: &str,
    ids: &[RunId],
    lease: Duration,
) -> Result<Vec<RunId>, sqlx::Error> {
    sqlx::query_scalar(
        "update runs set lease_expires_at = now() + $3 * interval '1 millisecond'
         where id = any($1) and worker_id = $2 and status = 'in_progress'
         returning id",
    )
    .bind(ids)
    .bind(worker)
    .bind(lease.as_millis() as f64)
    .fetch_all(pool)
    .await
}

/// The lock that makes one sweeper at a time take runs back.
const SWEEPER_LOCK: i64 = 0x5377_6974_6368_7964;

/// Take back the runs whose worker's lease expired (the worker died or
/// lost PostgreSQL): they are queued again, marked as pushed; the caller
/// pushes them. Their next claim starts the next attempt (or fails the run
/// with `worker_lost` once its attempts are used up). One sweeper at a time
/// does this (an advisory lock); others find nothing to do.
pub async fn requeue_expired(pool: &PgPool) -> Result<Vec<RunId>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let leader: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(SWEEPER_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !leader {
        return Ok(Vec::new());
    }
    let ids: Vec<RunId> = sqlx::query_scalar(
        "update runs set status = 'queued', worker_id = null, lease_expires_at = null,
             enqueued_at = now()
         where status = 'in_progress' and lease_expires_at < now()
         returning id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}

/// Give a run back to the queue (its worker is shutting down): another
/// worker continues it at once with the next attempt. Returns whether
/// this worker still held it.
pub async fn release(pool: &PgPool, id: RunId, attempt: i32) -> Result<bool, sqlx::Error> {
    let released = sqlx::query(
        "update runs set status = 'queued', worker_id = null, lease_expires_at = null,
             enqueued_at = now()
         where id = $1 and status = 'in_progress' and attempt = $2",
    )
    .bind(id)
    .bind(attempt)
    .execute(pool)
    .await?;
    Ok(released.rows_affected() == 1)
}

/// Lock a run for its end by attempt `attempt`: its thread first, then the
/// run (the order in which a run interrupting the thread takes them).
/// `None` if that attempt does not hold the run (it is not in progress, or
/// a later attempt has it); otherwise the cancel requested of it, if any.
pub async fn lock_held(
    tx: &mut PgConnection,
    thread_id: ThreadId,
    id: RunId,
    attempt: i32,
) -> Result<Option<Option<CancelReason>>, sqlx::Error> {
    sqlx::query("select 1 from threads where id = $1 for update")
        .bind(thread_id)
        .execute(&mut *tx)
        .await?;
    let held: Option<(Option<CancelReason>,)> = sqlx::query_as(
        "select case when cancel_requested_at is not null
                     then coalesce(cancel_reason, 'cancelled') end
         from runs
         where id = $1 and status = 'in_progress' and attempt = $2
         for update",
    )
    .bind(id)
    .bind(attempt)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(held.map(|(reason,)| reason))
}
