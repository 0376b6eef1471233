//! The run queue: an apalis queue in Redis carrying [`RunJob`] tickets.
//!
//! PostgreSQL decides; the queue only carries. A ticket says "take one
//! run": the worker that receives it claims the best-ranked *ready* run
//! (queued, and not behind an active run of its own thread) in
//! [`crate::db::runs::claim`], whichever run the ticket was pushed for.
//! So priorities are honoured however the tickets are ordered, and a run
//! that arrives later but is more urgent is taken before older tickets'
//! runs (see [`crate::db::runs`]'s `queueing` for the ranking).
//!
//! # The invariant
//!
//! There are at least as many tickets in Redis as ready runs, so nothing
//! accepted is left unclaimed:
//!
//! - a run gets a ticket when it becomes ready: at creation if its thread
//!   is idle, otherwise by [`hand_off`] when its thread's previous run
//!   ends; a run taken back from a lost or stopping worker gets one too;
//! - a ticket is spent claiming at most one run; one that finds no ready
//!   run is acknowledged and dropped (there was nothing for it to take);
//! - a cancelled queued run leaves its ticket behind: a spare one;
//! - a claim skips rows locked by others (`skip locked`), so a queued run's
//!   row is never kept locked across a push, only by a statement or a short
//!   transaction that claims, cancels or re-tickets it: a ticket that
//!   skipped the only ready run would otherwise be dropped. (Should such a
//!   transaction fail and roll back, the stale sweep below covers it.)
//!
//! Spare tickets cost one empty claim each. `enqueued_at` records that a
//! ticket was pushed when the run became ready; a failed push clears it.
//! The workers' [`sweep_unenqueued`] pushes tickets for ready runs without
//! the mark once Redis is back, and for those whose mark is older than
//! [`STALE_PUSH`] (a push lost with its process, or tickets lost with a
//! Redis that lost its data): a run waiting that long behind busier
//! workers gets a spare ticket, which is harmless.
//!
//! A worker that ends a run does not claim the next one itself: every ready
//! run has its ticket already, so a direct claim would only leave one spare,
//! and the wake-up below brings a ticket to an idle worker within
//! milliseconds.
//!
//! apalis-redis's own wake-up does not fire for immediate jobs, so after
//! every push a message on [`Keys::run_queue_wake`] wakes idle workers; a
//! slow poll remains as a backstop.

mod scoped_conn;

use std::time::Duration;

pub use scoped_conn::ScopedConn;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_redis::{Config as ApalisConfig, RedisStorage};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::db;
use crate::db::runs::CancelReason;
use crate::domain::{RunId, ThreadId};
use crate::redis_conn::Keys;
use crate::telemetry::TraceContext;

/// The queue's payload: a ticket to take one run. `run_id` is the run it
/// was pushed for; the worker takes the best-ranked ready run, which may be
/// another. `trace` is the W3C trace context of the request that created
/// `run_id`. Everything else is read from PostgreSQL, so a job can never
/// carry stale data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunJob {
    pub run_id: RunId,
    /// `traceparent` (and `tracestate`) when traces are exported. Tickets
    /// pushed later (recoveries, hand-offs) carry none: the worker then takes
    /// the context stored on the run it claims.
    #[serde(default, skip_serializing_if = "TraceContext::is_empty")]
    pub trace: TraceContext,
}

impl RunJob {
    /// A job for `run_id` without a trace context of its own.
    pub fn new(run_id: RunId) -> Self {
        Self {
            run_id,
            trace: TraceContext::new(),
        }
    }

    /// A job for `run_id` that continues the trace in `trace`.
    pub fn traced(run_id: RunId, trace: TraceContext) -> Self {
        Self { run_id, trace }
    }
}

/// A message on [`Keys::cancel_channel`]: `{"run_id", "reason"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAnnouncement {
    pub run_id: RunId,
    pub reason: CancelReason,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("pushing to the run queue failed: {0}")]
    Push(String),
}

/// Producer side of the run queue.
#[derive(Clone)]
pub struct RunQueue {
    storage: RedisStorage<RunJob, ScopedConn>,
    conn: ConnectionManager,
    wake_channel: String,
    cancel_channel: String,
}

impl RunQueue {
    pub fn new(conn: ConnectionManager, keys: &Keys) -> Self {
        Self {
            storage: RedisStorage::new(keys.apalis_conn(conn.clone()))
                .with_config(apalis_config(keys)),
            conn,
            wake_channel: keys.run_queue_wake(),
            cancel_channel: keys.cancel_channel(),
        }
    }

    /// Push a ticket and wake the workers.
    pub async fn push(&self, job: RunJob) -> Result<(), EnqueueError> {
        let run_id = job.run_id;
        let task = TaskBuilder::new(job).max_attempts(1).build();
        let mut storage = self.storage.clone();
        storage
            .push_task(task)
            .await
            .map_err(|e| EnqueueError::Push(e.to_string()))?;
        let mut conn = self.conn.clone();
        // The wake-up only shortens pickup latency; the poll backstop covers
        // its loss.
        if let Err(error) = redis::cmd("PUBLISH")
            .arg(&self.wake_channel)
            .arg(run_id.to_string())
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::debug!(%error, "waking workers failed");
        }
        Ok(())
    }

    /// Tell the workers that an in-progress run was asked to stop. The
    /// request is stored already: a worker that misses this message finds
    /// it in PostgreSQL within a second. The message carries the reason, so
    /// that the worker stops the run without reading PostgreSQL first.
    pub async fn announce_cancel(&self, run_id: RunId, reason: CancelReason) {
        let mut conn = self.conn.clone();
        let announcement = CancelAnnouncement { run_id, reason };
        let Ok(payload) = serde_json::to_string(&announcement) else {
            return;
        };
        if let Err(error) = redis::cmd("PUBLISH")
            .arg(&self.cancel_channel)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::debug!(%error, run.id = %run_id, "announcing a cancel failed");
        }
    }

    /// Push a ticket for a stored ready run, whose `enqueued_at` the caller
    /// has set. If the push fails the mark is cleared, and the sweeper
    /// pushes one once Redis is back.
    pub async fn enqueue(&self, pool: &PgPool, job: RunJob) -> bool {
        let run_id = job.run_id;
        let Err(error) = self.push(job).await else {
            return true;
        };
        tracing::warn!(%error, run.id = %run_id, "run stored but not enqueued; it will be enqueued when Redis is back");
        if let Err(error) = db::runs::mark_unenqueued(pool, run_id).await {
            // Still covered: the sweeper re-pushes runs whose push is stale.
            tracing::warn!(%error, run.id = %run_id, "recording the failed enqueue failed");
        }
        false
    }
}

/// The apalis configuration of the run queue, shared by producers and workers.
pub fn apalis_config(keys: &Keys) -> ApalisConfig {
    ApalisConfig::default()
        .queue(keys.run_queue())
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(2)
}

/// A queued run whose push is this old is pushed again.
pub const STALE_PUSH: Duration = Duration::from_secs(30);

/// Push tickets for ready runs without one (see the module's invariant).
/// Returns how many were pushed.
pub async fn sweep_unenqueued(pool: &PgPool, queue: &RunQueue) -> Result<usize, sqlx::Error> {
    let runs = db::runs::take_unenqueued(pool, STALE_PUSH.as_secs_f64(), 100).await?;
    for (pushed, run_id) in runs.iter().enumerate() {
        if let Err(error) = queue.push(RunJob::new(*run_id)).await {
            tracing::debug!(%error, "Redis still unreachable; runs stay stored");
            db::runs::clear_enqueued(pool, &runs[pushed..]).await?;
            return Ok(pushed);
        }
    }
    Ok(runs.len())
}

/// A thread's active run ended: push a ticket for its next queued run, if
/// that is now ready and has none (it waited for its turn).
pub async fn hand_off(
    pool: &PgPool,
    queue: &RunQueue,
    thread_id: ThreadId,
) -> Result<(), sqlx::Error> {
    if let Some(next) = db::runs::next_in_line(pool, thread_id).await?
        && db::runs::take_for_enqueue(pool, next).await?
    {
        queue.enqueue(pool, RunJob::new(next)).await;
    }
    Ok(())
}
