//! Threads: a user's conversations.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::Page;
use super::messages::{self, NewMessage};
use crate::domain::{MessageId, MessageRole, Thread, ThreadId, ThreadStatus, UserId, Visibility};

/// A thread row: the resource plus what the storage layers need.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct ThreadRow {
    pub id: ThreadId,
    pub owner_id: UserId,
    pub agent_id: String,
    pub title: Option<String>,
    pub metadata: Value,
    pub message_count: i64,
    pub active_runs: i32,
    pub version: i64,
    /// Defaults for rows cached before threads had one: they were private.
    #[serde(default)]
    pub visibility: Visibility,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ThreadRow {
    /// Whether `reader` may read it: its owner, or anyone if it is public.
    pub fn readable_by(&self, reader: UserId) -> bool {
        self.owner_id == reader || self.visibility == Visibility::Public
    }

    pub fn to_resource(&self) -> Thread {
        Thread {
            id: self.id,
            agent_id: self.agent_id.clone(),
            title: self.title.clone(),
            metadata: self.metadata.clone(),
            status: if self.active_runs > 0 {
                ThreadStatus::Busy
            } else {
                ThreadStatus::Idle
            },
            visibility: self.visibility,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The columns of [`ThreadRow`], for `returning` and `select` clauses.
macro_rules! thread_columns {
    () => {
        "id, owner_id, agent_id, title, metadata, message_count, active_runs, version, visibility,
         created_at, updated_at"
    };
}
pub(crate) use thread_columns;

pub struct NewThread {
    pub owner: UserId,
    pub agent_id: String,
    pub title: Option<String>,
    pub metadata: Value,
    pub visibility: Visibility,
}

pub async fn create(pool: &PgPool, new: NewThread) -> Result<ThreadRow, sqlx::Error> {
    create_with_history(pool, new, &[]).await
}

/// Create a thread that already holds `history`, a conversation a client
/// brings along (oldest first), in one transaction: all of it or nothing.
pub async fn create_with_history(
    pool: &PgPool,
    new: NewThread,
    history: &[(MessageRole, &str)],
) -> Result<ThreadRow, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut thread: ThreadRow = sqlx::query_as(concat!(
        "insert into threads (id, owner_id, agent_id, title, metadata, visibility)
         values ($1, $2, $3, $4, $5, $6) returning ",
        thread_columns!()
    ))
    .bind(ThreadId::new())
    .bind(new.owner)
    .bind(new.agent_id)
    .bind(new.title)
    .bind(new.metadata)
    .bind(new.visibility)
    .fetch_one(&mut *tx)
    .await?;
    for &(role, content) in history {
        let message = NewMessage {
            id: MessageId::new(),
            thread_id: thread.id,
            run_id: None,
            role,
            content,
            tool_calls: None,
        };
        if let Some((_, now)) = messages::append(&mut tx, message, 0).await? {
            thread = now;
        }
    }
    tx.commit().await?;
    Ok(thread)
}

/// A live (not deleted) thread, whoever owns it: the caller checks that
/// the reader may see it ([`ThreadRow::readable_by`]).
pub async fn find(pool: &PgPool, id: ThreadId) -> Result<Option<ThreadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        thread_columns!(),
        " from threads where id = $1 and deleted_at is null"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub struct ListThreads {
    pub owner: UserId,
    pub limit: i64,
    /// Threads older than this one (the previous page's last).
    pub cursor: Option<ThreadId>,
    pub agent_id: Option<String>,
    /// Case-insensitive search in titles and message text.
    pub q: Option<String>,
}

/// A page of `owner`'s threads of one agent by offset, newest first, with
/// the number of all that match (`busy`: only threads with an active run,
/// or only those without).
pub async fn list_of_agent(
    pool: &PgPool,
    owner: UserId,
    agent_id: &str,
    busy: Option<bool>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ThreadRow>, i64), sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "select count(*) from threads
         where owner_id = $1 and agent_id = $2 and deleted_at is null
           and ($3::bool is null or (active_runs > 0) = $3)",
    )
    .bind(owner)
    .bind(agent_id)
    .bind(busy)
    .fetch_one(pool)
    .await?;
    let rows = sqlx::query_as(concat!(
        "select ",
        thread_columns!(),
        " from threads
         where owner_id = $1 and agent_id = $2 and deleted_at is null
           and ($3::bool is null or (active_runs > 0) = $3)
         order by id desc limit $4 offset $5"
    ))
    .bind(owner)
    .bind(agent_id)
    .bind(busy)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    Ok((rows, total))
}

/// Newest first, by id (ids are time-ordered).
pub async fn list(pool: &PgPool, query: ListThreads) -> Result<Page<ThreadRow>, sqlx::Error> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "select ",
        thread_columns!(),
        " from threads t where deleted_at is null and owner_id = "
    ));
    sql.push_bind(query.owner);
    if let Some(cursor) = query.cursor {
        sql.push(" and id < ").push_bind(cursor);
    }
    if let Some(agent_id) = query.agent_id {
        sql.push(" and agent_id = ").push_bind(agent_id);
    }
    if let Some(q) = query.q.filter(|q| !q.is_empty()) {
        let pattern = format!("%{}%", escape_like(&q));
        sql.push(" and (title ilike ")
            .push_bind(pattern.clone())
            .push(" or exists (select 1 from messages m where m.thread_id = t.id and m.content ilike ")
            .push_bind(pattern)
            .push("))");
    }
    sql.push(" order by id desc limit ")
        .push_bind(query.limit + 1);
    let items: Vec<ThreadRow> = sql.build_query_as().fetch_all(pool).await?;
    Ok(Page::from_overfetch(items, query.limit, |t| {
        t.id.to_string()
    }))
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

pub struct ThreadPatch {
    pub title: Option<String>,
    pub metadata: Option<Value>,
    /// The agent that answers the thread's next runs.
    pub agent_id: Option<String>,
    pub visibility: Option<Visibility>,
}

pub async fn update(
    pool: &PgPool,
    owner: UserId,
    id: ThreadId,
    patch: ThreadPatch,
) -> Result<Option<ThreadRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "update threads set
             title = coalesce($3, title),
             metadata = coalesce($4, metadata),
             agent_id = coalesce($5, agent_id),
             visibility = coalesce($6, visibility),
             version = version + 1,
             updated_at = now()
         where id = $1 and owner_id = $2 and deleted_at is null
         returning ",
        thread_columns!()
    ))
    .bind(id)
    .bind(owner)
    .bind(patch.title)
    .bind(patch.metadata)
    .bind(patch.agent_id)
    .bind(patch.visibility)
    .fetch_optional(pool)
    .await
}

/// Hide a thread everywhere. Returns whether it existed.
pub async fn soft_delete(pool: &PgPool, owner: UserId, id: ThreadId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update threads set deleted_at = now(), version = version + 1
         where id = $1 and owner_id = $2 and deleted_at is null",
    )
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Remove a thread of `owner`'s that no run was ever started on (one a
/// refused request made): returns whether it was removed. A thread that a
/// concurrent request has started a run on stays.
pub async fn delete_if_unused(
    pool: &PgPool,
    owner: UserId,
    id: ThreadId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "delete from threads t where t.id = $1 and t.owner_id = $2
           and not exists (select 1 from runs r where r.thread_id = t.id)",
    )
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Remove a thread with its messages, runs, steps and events. A soft-deleted
/// thread can still be removed for good.
pub async fn hard_delete(pool: &PgPool, owner: UserId, id: ThreadId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from threads where id = $1 and owner_id = $2")
        .bind(id)
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
