//! Runs: creation with their user message, the claim that gives one worker
//! ownership ([`queueing`]: priorities and queue positions), and the
//! terminal transition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

mod activity;
mod cancelling;
mod leases;
mod queueing;

pub use crate::domain::CancelReason;
pub use activity::{
    active_counts, active_in_thread, active_of, active_or_after, active_users, latest_in_thread,
};
pub use cancelling::{Cancelled, cancel, cancel_requests, queued_retries};
use cancelling::{request_cancel, stop_queued};
pub use leases::{lock_held, release, renew_leases, requeue_expired};
use queueing::queue_position;
pub use queueing::{
    Claim, claim, clear_enqueued, mark_unenqueued, next_in_line, take_for_enqueue, take_unenqueued,
};

use super::Page;
use super::messages::{self, MessageRow, NewMessage};
use super::threads::{ThreadRow, thread_columns};
use crate::domain::{
    MessageId, MessageRole, Multitask, Run, RunError, RunErrorCode, RunId, RunStatus, ThreadId,
    Usage, UserId,
};
use crate::events::{RunEvent, SequencedEvent};
use crate::telemetry::TraceContext;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: RunId,
    pub thread_id: ThreadId,
    pub owner_id: UserId,
    pub agent_id: String,
    pub model: String,
    pub priority: i16,
    pub status: RunStatus,
    pub attempt: i32,
    pub input_message_id: MessageId,
    pub output_message_id: Option<MessageId>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cost_usd: Option<f64>,
    pub error_code: Option<RunErrorCode>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many runs stand before this one while it is queued (see
    /// [`queueing`]).
    pub queue_position: Option<i64>,
}

impl RunRow {
    pub fn to_resource(&self) -> Run {
        Run {
            id: self.id,
            thread_id: self.thread_id,
            agent_id: self.agent_id.clone(),
            model: self.model.clone(),
            priority: self.priority,
            status: self.status,
            queue_position: self.queue_position,
            attempt: self.attempt,
            usage: Usage {
                input_tokens: self.input_tokens,
                output_tokens: self.output_tokens,
                cached_input_tokens: self.cached_input_tokens,
            },
            cost_usd: self.cost_usd,
            error: match (&self.error_code, &self.error_message) {
                (Some(code), message) => Some(RunError {
                    code: *code,
                    message: message.clone().unwrap_or_default(),
                }),
                _ => None,
            },
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// `select … from runs r` with the computed queue position, then the rest.
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "select r.id, r.thread_id, r.owner_id, r.agent_id, r.model, r.priority, r.status,
                    r.attempt, r.input_message_id, r.output_message_id, r.input_tokens,
                    r.output_tokens, r.cached_input_tokens, r.cost_usd, r.error_code, r.error_message, r.created_at,
                    r.started_at, r.finished_at,
                    case when r.status = 'queued' then ",
            queue_position!(),
            " end as queue_position
             from runs r ",
            $rest
        )
    };
}

#[derive(Clone)]
pub struct NewRun<'a> {
    pub owner: UserId,
    pub thread_id: ThreadId,
    pub agent_id: String,
    pub model: String,
    pub priority: i16,
    pub multitask: Multitask,
    pub content: &'a str,
    /// The `Idempotency-Key` header and a hash of the request it came with.
    pub idempotency: Option<(&'a str, String)>,
    /// The owner's limits that PostgreSQL checks.
    pub limits: RunLimits,
    /// The W3C trace context of the creating request (empty when traces are
    /// not exported); every attempt of the run joins that trace.
    pub trace: &'a TraceContext,
    /// `SWITCHYARD_PRIORITY_AGING_SECS`: the run ranks as if created
    /// `(priority − 1) ×` this later.
    pub priority_aging: Duration,
    /// The agent is inactive: only a replay of an earlier request (the same
    /// idempotency key and request) is answered; nothing new is stored.
    pub agent_inactive: bool,
}

/// Per-user limits on runs, checked in the transaction that creates one.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunLimits {
    /// Queued and in-progress runs at once.
    pub active_runs: Option<u32>,
    /// Input and output tokens of the runs created this UTC day.
    pub tokens_per_day: Option<u64>,
}

/// A limit that refused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReached {
    ActiveRuns(u32),
    /// The budget, and the tokens spent today.
    TokensPerDay {
        budget: u64,
        spent: i64,
    },
}

/// What became of a request to start a run.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request, never stored"
)]
pub enum Created {
    /// A new run, its user message, the thread as it is now, and the
    /// `run.queued` event stored with them (sequence 1).
    New {
        run: RunRow,
        message: MessageRow,
        thread: ThreadRow,
        queued: RunEvent,
        /// What `multitask: interrupt` cancelled.
        interrupted: Interrupted,
        /// The run is ready: the caller pushes its ticket (see
        /// [`crate::queue::RunQueue::enqueue`]). Otherwise it waits for its
        /// thread's earlier runs and gets its ticket when they end.
        enqueue: bool,
    },
    /// The same idempotency key and request were seen before: that run.
    Replayed(RunRow),
    /// The idempotency key was used before with another request.
    KeyReused,
    /// `multitask: reject` and the thread has an active run.
    ThreadBusy,
    /// No such live thread for this owner.
    ThreadNotFound,
    /// One of the owner's limits refused the run; nothing was stored.
    LimitReached(LimitReached),
    /// The agent takes no new runs ([`NewRun::agent_inactive`]).
    AgentInactive,
}

/// Store the user message, the `queued` run and its `run.queued` event in
/// one transaction.
pub async fn create(pool: &PgPool, new: NewRun<'_>) -> Result<Created, sqlx::Error> {
    // Interrupting takes the thread's lock, then its runs'; a worker
    // starting or ending one of them takes them the other way round. When
    // PostgreSQL breaks such a deadlock by aborting this transaction,
    // nothing of it was stored and it is simply made again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match create_once(pool, new.clone()).await {
            Err(sqlx::Error::Database(error))
                if error.code().as_deref() == Some("40P01") && attempts < 3 =>
            {
                tracing::debug!(%error, "creating a run met a deadlock; trying again");
            }
            result => return result,
        }
    }
}

async fn create_once(pool: &PgPool, new: NewRun<'_>) -> Result<Created, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let run_id = RunId::new();
    let message_id = MessageId::new();

    if let Some((key, hash)) = &new.idempotency {
        // Concurrent duplicates queue up on this row; only one inserts it.
        let claimed: Option<(String,)> = sqlx::query_as(
            "insert into idempotency_keys (owner_id, key, request_hash, thread_id, run_id)
             values ($1, $2, $3, $4, null)
             on conflict (owner_id, key) do update
                 set request_hash = excluded.request_hash, thread_id = excluded.thread_id,
                     run_id = null, created_at = now()
                 where idempotency_keys.created_at < now() - interval '24 hours'
             returning request_hash",
        )
        .bind(new.owner)
        .bind(key)
        .bind(hash)
        .bind(new.thread_id)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            let (stored_hash, stored_run): (String, Option<RunId>) = sqlx::query_as(
                "select request_hash, run_id from idempotency_keys where owner_id = $1 and key = $2",
            )
            .bind(new.owner)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            return match stored_run {
                Some(run_id) if &stored_hash == hash => Ok(get(pool, new.owner, run_id)
                    .await?
                    .map_or(Created::ThreadNotFound, Created::Replayed)),
                Some(_) => Ok(Created::KeyReused),
                // The first request with this key failed (e.g. busy thread) and
                // stored nothing: its key row was rolled back with it, so this
                // cannot happen; answer as a reuse rather than guess.
                None => Ok(Created::KeyReused),
            };
        }
    }

    if new.agent_inactive {
        return Ok(Created::AgentInactive);
    }
    if let Some(reached) = check_limits(&mut tx, new.owner, new.limits).await? {
        return Ok(Created::LimitReached(reached));
    }

    // Appending the message locks the thread row: concurrent runs of one
    // thread are created one after the other, and `active_runs` is exact.
    let appended = messages::append(
        &mut tx,
        NewMessage {
            id: message_id,
            thread_id: new.thread_id,
            run_id: Some(run_id),
            role: MessageRole::User,
            content: new.content,
            tool_calls: None,
        },
        1,
    )
    .await?;
    let Some((message, mut thread)) = appended.filter(|(_, t)| t.owner_id == new.owner) else {
        return Ok(Created::ThreadNotFound);
    };
    // Its thread's active runs before it: all of them, as they came before.
    let mut thread_ahead = i64::from(thread.active_runs - 1);
    if new.multitask == Multitask::Reject && thread_ahead > 0 {
        return Ok(Created::ThreadBusy);
    }
    let mut interrupted = Interrupted::default();
    if new.multitask == Multitask::Interrupt && thread_ahead > 0 {
        // Locked, so that a worker claiming one of them meanwhile is
        // waited for (and its run seen in progress, to be asked to stop)
        // rather than overwritten, and a claim not yet begun skips them.
        let active: Vec<(RunId, RunStatus)> = sqlx::query_as(
            "select id, status from runs
             where thread_id = $1 and status in ('queued', 'in_progress') order by id
             for update",
        )
        .bind(new.thread_id)
        .fetch_all(&mut *tx)
        .await?;
        for (id, status) in active {
            if status == RunStatus::Queued {
                let (now, event) = stop_queued(&mut tx, id, CancelReason::Interrupted).await?;
                thread = now;
                interrupted.stopped.push((id, event));
            } else {
                request_cancel(&mut tx, id, CancelReason::Interrupted).await?;
                interrupted.requested.push(id);
            }
        }
        // Only the in-progress runs, now stopping, are still ahead.
        thread_ahead = interrupted.requested.len() as i64;
    }
    // A ready run gets its ticket at once (marked pushed here); one behind
    // its thread's active runs gets it when the last of them ends
    // (`queue::hand_off`), so that no ticket is spent on a run that cannot
    // start.
    let enqueue = thread_ahead == 0;
    let (created_at, queue_position): (DateTime<Utc>, i64) = sqlx::query_as(concat!(
        "insert into runs as r (id, thread_id, owner_id, agent_id, model, priority, multitask,
                                input_message_id, enqueued_at, queue_rank, trace_context)
         values ($1, $2, $3, $4, $5, $6, $7, $8, case when $9 then now() end,
                 now() + ($6 - 1) * $10 * interval '1 second', $11)
         returning r.created_at, ",
        queue_position!()
    ))
    .bind(run_id)
    .bind(new.thread_id)
    .bind(new.owner)
    .bind(&new.agent_id)
    .bind(&new.model)
    .bind(new.priority)
    .bind(new.multitask)
    .bind(message_id)
    .bind(enqueue)
    .bind(new.priority_aging.as_secs_f64())
    .bind((!new.trace.is_empty()).then_some(Json(new.trace)))
    .fetch_one(&mut *tx)
    .await?;
    if let Some((key, _)) = &new.idempotency {
        sqlx::query("update idempotency_keys set run_id = $3 where owner_id = $1 and key = $2")
            .bind(new.owner)
            .bind(key)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
    }
    let queued = RunEvent::RunQueued {
        run_id,
        thread_id: new.thread_id,
        queue_position: Some(queue_position),
    };
    crate::db::events::insert(&mut tx, run_id, 1, &queued).await?;
    tx.commit().await?;
    let run = RunRow {
        id: run_id,
        thread_id: new.thread_id,
        owner_id: new.owner,
        agent_id: new.agent_id,
        model: new.model,
        priority: new.priority,
        status: RunStatus::Queued,
        attempt: 0,
        input_message_id: message_id,
        output_message_id: None,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        cost_usd: None,
        error_code: None,
        error_message: None,
        created_at,
        started_at: None,
        finished_at: None,
        queue_position: Some(queue_position),
    };
    Ok(Created::New {
        run,
        message,
        thread,
        queued,
        interrupted,
        enqueue,
    })
}

/// Check the owner's run limits. Takes a lock on the owner for the rest of
/// the transaction, so that concurrent requests of one user (on any API
/// replica) are counted one after the other.
async fn check_limits(
    tx: &mut PgConnection,
    owner: UserId,
    limits: RunLimits,
) -> Result<Option<LimitReached>, sqlx::Error> {
    if limits.active_runs.is_none() && limits.tokens_per_day.is_none() {
        return Ok(None);
    }
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 7))")
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    if let Some(limit) = limits.active_runs {
        let active: i64 = sqlx::query_scalar(
            "select count(*) from runs where owner_id = $1 and status in ('queued', 'in_progress')",
        )
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        if active >= i64::from(limit) {
            return Ok(Some(LimitReached::ActiveRuns(limit)));
        }
    }
    if let Some(budget) = limits.tokens_per_day {
        let spent: i64 = sqlx::query_scalar(
            "select coalesce(sum(input_tokens + output_tokens), 0)::int8 from runs
             where owner_id = $1 and created_at >= date_trunc('day', now() at time zone 'UTC') at time zone 'UTC'",
        )
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        if spent >= i64::try_from(budget).unwrap_or(i64::MAX) {
            return Ok(Some(LimitReached::TokensPerDay { budget, spent }));
        }
    }
    Ok(None)
}

/// The runs a `multitask: interrupt` request cancelled.
#[derive(Debug, Default)]
pub struct Interrupted {
    /// Queued runs, cancelled at once, with their `run.cancelled` events.
    pub stopped: Vec<(RunId, SequencedEvent)>,
    /// In-progress runs whose workers are asked to stop them.
    pub requested: Vec<RunId>,
}

/// A run of `owner` on a live thread.
pub async fn get(pool: &PgPool, owner: UserId, id: RunId) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(select_runs!(
        "join threads t on t.id = r.thread_id
         where r.id = $1 and r.owner_id = $2 and t.deleted_at is null"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await
}

/// A run that `reader` may read: theirs, or a finished run of a public
/// thread.
pub async fn get_readable(
    pool: &PgPool,
    reader: UserId,
    id: RunId,
) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(select_runs!(
        "join threads t on t.id = r.thread_id
         where r.id = $1 and t.deleted_at is null
           and (r.owner_id = $2
                or (t.visibility = 'public'
                    and r.status in ('completed', 'failed', 'cancelled')))"
    ))
    .bind(id)
    .bind(reader)
    .fetch_optional(pool)
    .await
}

/// A run's status (`None` once the run is gone).
pub async fn status(pool: &PgPool, id: RunId) -> Result<Option<RunStatus>, sqlx::Error> {
    sqlx::query_scalar("select status from runs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A thread's runs, newest first; with `finished_only`, the ones that
/// have ended (what a reader of someone else's public thread sees).
pub async fn list_for_thread(
    pool: &PgPool,
    thread_id: ThreadId,
    limit: i64,
    cursor: Option<RunId>,
    finished_only: bool,
) -> Result<Page<RunRow>, sqlx::Error> {
    let items: Vec<RunRow> = sqlx::query_as(select_runs!(
        "where r.thread_id = $1 and ($2::uuid is null or r.id < $2)
           and (not $4 or r.status in ('completed', 'failed', 'cancelled'))
         order by r.id desc limit $3"
    ))
    .bind(thread_id)
    .bind(cursor)
    .bind(limit + 1)
    .bind(finished_only)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_overfetch(items, limit, |r| r.id.to_string()))
}

/// How a run ended.
pub enum Outcome {
    Completed {
        message_id: MessageId,
    },
    Failed(RunError),
    /// Stopped on request; `message_id` is what was said so far, if anything.
    Cancelled {
        message_id: Option<MessageId>,
    },
}

pub struct Finish {
    pub run_id: RunId,
    /// The attempt ending: a run taken over by another worker is not ended
    /// by the worker that lost it.
    pub attempt: i32,
    pub outcome: Outcome,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
}

/// Move an in-progress run to its terminal status, end its steps that are
/// still running (cut short by a cancel, a timeout or a failure) and free
/// its thread, in one statement inside the caller's transaction. Returns the
/// thread as it is now, or `None` if the run was not in progress any more
/// (the caller rolls back).
pub async fn finish(
    tx: &mut PgConnection,
    finish: Finish,
) -> Result<Option<ThreadRow>, sqlx::Error> {
    let (status, message_id, error) = match finish.outcome {
        Outcome::Completed { message_id } => (RunStatus::Completed, Some(message_id), None),
        Outcome::Failed(error) => (RunStatus::Failed, None, Some(error)),
        Outcome::Cancelled { message_id } => (RunStatus::Cancelled, message_id, None),
    };
    sqlx::query_as(concat!(
        "with done as (
             update runs set status = $2, output_message_id = $3, input_tokens = $4,
                 output_tokens = $5, cost_usd = $6, error_code = $7, error_message = $8,
                 cached_input_tokens = $9, finished_at = now()
             where id = $1 and status = 'in_progress' and attempt = $10
             returning thread_id
         ), closed as (",
        crate::db::steps::close_running_steps!(),
        "
         )
         update threads set active_runs = active_runs - 1, version = version + 1, updated_at = now()
         where id = (select thread_id from done) returning ",
        thread_columns!()
    ))
    .bind(finish.run_id)
    .bind(status)
    .bind(message_id)
    .bind(finish.usage.input_tokens)
    .bind(finish.usage.output_tokens)
    .bind(finish.cost_usd)
    .bind(error.as_ref().map(|e| e.code))
    .bind(error.map(|e| e.message))
    .bind(finish.usage.cached_input_tokens)
    .bind(finish.attempt)
    .fetch_optional(&mut *tx)
    .await
}
