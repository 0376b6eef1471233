//! Chats of the Vercel AI SDK surface: a client-generated chat id, per
//! owner, names the thread that holds the chat.

use sqlx::PgPool;

use crate::domain::{ThreadId, UserId};

/// The thread of `owner`'s chat `chat_id`, if the chat exists.
pub async fn thread_of(
    pool: &PgPool,
    owner: UserId,
    chat_id: &str,
) -> Result<Option<ThreadId>, sqlx::Error> {
    sqlx::query_scalar("select thread_id from ui_chats where owner_id = $1 and chat_id = $2")
        .bind(owner)
        .bind(chat_id)
        .fetch_optional(pool)
        .await
}

/// Make `thread_id` the thread of `owner`'s chat `chat_id`, unless the chat
/// already has one (a concurrent first message won), or has `replacing`, a
/// thread that was deleted since: returns the chat's thread either way.
pub async fn link(
    pool: &PgPool,
    owner: UserId,
    chat_id: &str,
    thread_id: ThreadId,
    replacing: Option<ThreadId>,
) -> Result<ThreadId, sqlx::Error> {
    let linked: Option<ThreadId> = sqlx::query_scalar(
        "insert into ui_chats (owner_id, chat_id, thread_id) values ($1, $2, $3)
         on conflict (owner_id, chat_id) do update set thread_id = excluded.thread_id
             where ui_chats.thread_id = $4
         returning thread_id",
    )
    .bind(owner)
    .bind(chat_id)
    .bind(thread_id)
    .bind(replacing)
    .fetch_optional(pool)
    .await?;
    match linked {
        Some(thread_id) => Ok(thread_id),
        None => Ok(thread_of(pool, owner, chat_id).await?.unwrap_or(thread_id)),
    }
}
