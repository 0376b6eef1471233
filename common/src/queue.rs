//! The run queue: an apalis queue in Redis carrying [`RunJob`]s.
//!
//! PostgreSQL decides; the queue only carries. A run is stored `queued` with
//! `enqueued_at` set, then pushed here; a failed push clears the mark. The
//! workers' [`sweep_unenqueued`] pushes queued runs without the mark once
//! Redis is back, and re-pushes those whose push is older than
//! [`STALE_PUSH`] (a push lost with its process), so none is lost. A job
//! that arrives twice is harmless: only the conditional claim in
//! [`crate::db::runs::claim`] gives a worker a run.
//!
//! apalis-redis's own wake-up does not fire for immediate jobs, so after
//! every push a message on [`Keys::run_queue_wake`] wakes idle workers; a
//! slow poll remains as a backstop.

use std::time::Duration;

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

/// The queue's payload: which run to execute, and the W3C trace context of
/// the request that created it. Everything else is read from PostgreSQL, so
/// a job can never carry stale data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunJob {
    pub run_id: RunId,
    /// `traceparent` (and `tracestate`) when traces are exported. Jobs pushed
    /// again later (recoveries, hand-offs) carry none: the worker then takes
    /// the context stored on the run.
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

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("pushing to the run queue failed: {0}")]
    Push(String),
}

/// Producer side of the run queue.
#[derive(Clone)]
pub struct RunQueue {
    storage: RedisStorage<RunJob>,
    conn: ConnectionManager,
    wake_channel: String,
    cancel_channel: String,
}

impl RunQueue {
    pub fn new(conn: ConnectionManager, keys: &Keys) -> Self {
        Self {
            storage: RedisStorage::new(conn.clone()).with_config(apalis_config(keys)),
            conn,
            wake_channel: keys.run_queue_wake(),
            cancel_channel: keys.cancel_channel(),
        }
    }

    /// Push a run and wake the workers.
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
    /// it in PostgreSQL within a second.
    /// The message is `<run id> <reason>`, so that the worker stops the run
    /// without reading PostgreSQL first.
    pub async fn announce_cancel(&self, run_id: RunId, reason: CancelReason) {
        let mut conn = self.conn.clone();
        if let Err(error) = redis::cmd("PUBLISH")
            .arg(&self.cancel_channel)
            .arg(format!("{run_id} {}", reason.as_str()))
            .query_async::<i64>(&mut conn)
            .await
        {
            tracing::debug!(%error, run.id = %run_id, "announcing a cancel failed");
        }
    }

    /// Push a stored run, whose `enqueued_at` the caller has set. If the push
    /// fails the mark is cleared, and the sweeper pushes the run once Redis
    /// is back.
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

/// Push queued runs that are first in line but not in the queue. Returns how
/// many were pushed.
pub async fn sweep_unenqueued(pool: &PgPool, queue: &RunQueue) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let runs = db::runs::lock_unenqueued(&mut tx, STALE_PUSH.as_secs_f64(), 100).await?;
    let mut pushed = Vec::with_capacity(runs.len());
    for run_id in runs {
        match queue.push(RunJob::new(run_id)).await {
            Ok(()) => pushed.push(run_id.0),
            Err(error) => {
                tracing::debug!(%error, "Redis still unreachable; runs stay stored");
                break;
            }
        }
    }
    if !pushed.is_empty() {
        sqlx::query("update runs set enqueued_at = now() where id = any($1) and status = 'queued'")
            .bind(&pushed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(pushed.len())
}

/// A thread's active run ended: push its next queued run, if it is now
/// first in line and out of the queue (it waited for its turn).
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
