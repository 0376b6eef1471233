//! Which runs are active: counts for status pages, and the run that a
//! client watching a thread follows.

use sqlx::PgPool;

use crate::domain::{RunId, ThreadId, UserId};

/// Queued and in-progress runs of every user, by status name.
pub async fn active_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select s::text, (select count(*) from runs r where r.status = s)
         from unnest(array['queued', 'in_progress']::run_status[]) s",
    )
    .fetch_all(pool)
    .await
}

/// How many users have a run queued or in progress.
pub async fn active_users(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(distinct owner_id) from runs where status in ('queued', 'in_progress')",
    )
    .fetch_one(pool)
    .await
}

/// `owner`'s queued and in-progress runs.
pub async fn active_of(pool: &PgPool, owner: UserId) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select count(*) filter (where status = 'queued'),
                count(*) filter (where status = 'in_progress')
         from runs where owner_id = $1 and status in ('queued', 'in_progress')",
    )
    .bind(owner)
    .fetch_one(pool)
    .await
}

/// The newest queued or in-progress run of a thread.
pub async fn active_in_thread(
    pool: &PgPool,
    thread_id: ThreadId,
) -> Result<Option<RunId>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from runs where thread_id = $1 and status in ('queued', 'in_progress')
         order by id desc limit 1",
    )
    .bind(thread_id)
    .fetch_optional(pool)
    .await
}

/// The newest run of a thread, whatever its status.
pub async fn latest_in_thread(
    pool: &PgPool,
    thread_id: ThreadId,
) -> Result<Option<RunId>, sqlx::Error> {
    sqlx::query_scalar("select id from runs where thread_id = $1 order by id desc limit 1")
        .bind(thread_id)
        .fetch_optional(pool)
        .await
}

/// The thread's oldest active run, or else its first run created after
/// `after` (whatever its status; with no `after`, its first run at all):
/// the run a client waiting on the thread wants to watch.
pub async fn active_or_after(
    pool: &PgPool,
    thread_id: ThreadId,
    after: Option<RunId>,
) -> Result<Option<RunId>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from runs
         where thread_id = $1
           and (status in ('queued', 'in_progress') or $2::uuid is null or id > $2)
         order by id limit 1",
    )
    .bind(thread_id)
    .bind(after)
    .fetch_optional(pool)
    .await
}
