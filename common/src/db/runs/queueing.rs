//! The queue's order in PostgreSQL: which queued run a worker takes next,
//! where a queued run stands, and which runs still need a ticket in Redis.
//!
//! A queued run is *ready* when no earlier run of its thread is active
//! (a thread's runs execute one at a time, in order). Workers take the
//! ready run of lowest `queue_rank` (creation time plus `(priority − 1) ×
//! SWITCHYARD_PRIORITY_AGING_SECS`, set by [`super::create`]), ties by id,
//! i.e. by creation. The Redis queue only carries tickets that say "take
//! one run" (see [`crate::queue`]).

use std::time::Duration;

use sqlx::PgPool;
use sqlx::types::Json;

use super::{CancelReason, RunRow};
use crate::db::agents::AgentRow;
use crate::domain::{Agent, RunId, ThreadId};
use crate::telemetry::TraceContext;

/// SQL: whether the run `$alias` is ready: no earlier run of its thread is
/// queued or in progress. Served by `runs_active_thread_idx`. The functions
/// `claim_next_run` and `run_queue_position` (migrations) test the same.
macro_rules! ready {
    ($alias:literal) => {
        concat!(
            "not exists (select 1 from runs b where b.thread_id = ",
            $alias,
            ".thread_id and b.id < ",
            $alias,
            ".id and b.status in ('queued', 'in_progress'))"
        )
    };
}

/// SQL: the queue position of the run `r` (a queued one): how many runs
/// stand before it (migration `20261125000001_queue_functions`, which says
/// why it is a function; its readiness test is `ready!`'s). Computed when
/// read, so it follows the queue as runs are taken, cancelled or overtake
/// it; a run created later with a better rank can still overtake it. The
/// cost grows with the number of queued runs ranked ahead.
macro_rules! queue_position {
    () => {
        "run_queue_position(r.thread_id, r.id, r.queue_rank)"
    };
}
pub(super) use queue_position;

/// What a worker's ticket found.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per claim, never stored"
)]
pub enum Claim {
    /// This worker owns the run now; `last_event_seq` is where its events
    /// continue, `input_seq` the position of its user message and
    /// `message_count` the thread's messages at the claim.
    Owned {
        run: RunRow,
        last_event_seq: i64,
        input_seq: i64,
        message_count: i64,
        /// The run's agent as stored now; `None` if it was deleted.
        agent: Option<Agent>,
        /// A cancel was requested before this attempt (its earlier worker
        /// was lost before it could stop the run).
        cancel: Option<CancelReason>,
        /// The trace context of the request that created the run.
        trace: TraceContext,
    },
    /// No ready run to take (others took them, or they were cancelled).
    Empty,
}

/// Take the best-ranked ready run: move it `queued → in_progress` for
/// `worker`, with a lease (`claim_next_run`, migration
/// `20261125000001_queue_functions`, which says why it is a function). Rows
/// locked by a concurrent claim are skipped (`skip locked`), so workers
/// claiming at once take different runs and never wait for each other; the
/// conditional update is what makes two workers unable to both own a run.
pub async fn claim(pool: &PgPool, worker: &str, lease: Duration) -> Result<Claim, sqlx::Error> {
    // One statement: the choice, the claim, the run, where its events
    // continue and where its user message stands.
    let claimed: Option<Claimed> = sqlx::query_as(
        "with claimed as (
             select * from claim_next_run($1, $2 * interval '1 millisecond')
         )
         select c.id, c.thread_id, c.owner_id, c.agent_id, c.model, c.priority, c.status,
                c.attempt, c.input_message_id, c.output_message_id, c.input_tokens,
                c.output_tokens, c.cached_input_tokens, c.cost_usd, c.error_code, c.error_message, c.created_at,
                c.started_at, c.finished_at, null::int8 as queue_position,
                (select coalesce(max(seq), 0) from run_events e where e.run_id = c.id)
                    as last_event_seq,
                (select m.seq from messages m where m.id = c.input_message_id) as input_seq,
                (select t.message_count from threads t where t.id = c.thread_id) as message_count,
                (select to_jsonb(a) from agents a where a.id = c.agent_id and a.deleted_at is null)
                    as agent,
                case when c.cancel_requested_at is not null
                     then coalesce(c.cancel_reason, 'cancelled') end as cancel_requested,
                c.trace_context
         from claimed c",
    )
    .bind(worker)
    .bind(lease.as_millis() as f64)
    .fetch_optional(pool)
    .await?;
    Ok(match claimed {
        Some(claimed) => Claim::Owned {
            run: claimed.run,
            last_event_seq: claimed.last_event_seq,
            input_seq: claimed.input_seq,
            message_count: claimed.message_count,
            agent: claimed.agent.map(|row| Agent::from(row.0)),
            cancel: claimed.cancel_requested,
            trace: claimed.trace_context.map(|t| t.0).unwrap_or_default(),
        },
        None => Claim::Empty,
    })
}

#[derive(sqlx::FromRow)]
struct Claimed {
    #[sqlx(flatten)]
    run: RunRow,
    last_event_seq: i64,
    input_seq: i64,
    message_count: i64,
    agent: Option<Json<AgentRow>>,
    cancel_requested: Option<CancelReason>,
    trace_context: Option<Json<TraceContext>>,
}

/// Record that pushing the run's ticket failed: the sweeper will push one.
pub async fn mark_unenqueued(pool: &PgPool, id: RunId) -> Result<(), sqlx::Error> {
    sqlx::query("update runs set enqueued_at = null where id = $1 and status = 'queued'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Take a queued run that has no ticket yet (it waited for its turn) for
/// pushing one: whether this caller should push it.
pub async fn take_for_enqueue(pool: &PgPool, id: RunId) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "update runs set enqueued_at = now()
         where id = $1 and status = 'queued' and enqueued_at is null",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// The thread's first active run (the one that is ready, if it is queued).
pub async fn next_in_line(
    pool: &PgPool,
    thread_id: ThreadId,
) -> Result<Option<RunId>, sqlx::Error> {
    sqlx::query_scalar(
        "select r.id from runs r
         where r.thread_id = $1 and r.status in ('queued', 'in_progress')
         order by r.id limit 1",
    )
    .bind(thread_id)
    .fetch_optional(pool)
    .await
}

/// Mark for pushing the ready runs whose ticket is missing or may be:
/// never pushed (Redis was down), waiting for a predecessor that has
/// finished, or pushed longer than `stale_secs` ago (the push was lost with
/// its API process, or the ticket with a Redis that lost its data).
/// Best-ranked first. Marked and committed before the caller pushes, so
/// that the row is not locked when a worker's claim meets it (a claim skips
/// locked runs: one locked across the push would lose its own ticket), and
/// concurrent sweepers skip the marked runs. The caller clears the marks of
/// the runs it could not push ([`clear_enqueued`]).
pub async fn take_unenqueued(
    pool: &PgPool,
    stale_secs: f64,
    limit: i64,
) -> Result<Vec<RunId>, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "with taken as (
             select r.id from runs r
             where r.status = 'queued'
               and (r.enqueued_at is null or r.enqueued_at < now() - make_interval(secs => $1))
               and ",
        ready!("r"),
        "
             order by r.queue_rank, r.id limit $2
             for update of r skip locked
         )
         update runs r set enqueued_at = now() from taken where r.id = taken.id
         returning r.id"
    ))
    .bind(stale_secs)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Record that the tickets of these runs were not pushed: the sweeper
/// pushes them later.
pub async fn clear_enqueued(pool: &PgPool, ids: &[RunId]) -> Result<(), sqlx::Error> {
    sqlx::query("update runs set enqueued_at = null where id = any($1) and status = 'queued'")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}
