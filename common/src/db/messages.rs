//! Messages: appended to a thread in order, each with its position `seq`.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::Page;
use super::threads::{ThreadRow, thread_columns};
use crate::domain::{Message, MessageId, MessageRole, RunId, ThreadId};

/// A message with its position in the thread.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct MessageRow {
    pub id: MessageId,
    pub thread_id: ThreadId,
    pub seq: i64,
    pub run_id: Option<RunId>,
    pub role: MessageRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
    /// Assistant answers: the tool use that led to them, turn by turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Json<Vec<ToolTurn>>>,
}

/// One model turn that called tools: the text it streamed first, then each
/// call with the result the model was given.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolTurn {
    pub text: String,
    pub calls: Vec<ToolExchange>,
}

/// A tool call and its result, as the model saw them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolExchange {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them.
    pub arguments: String,
    /// The result as given back to the model.
    pub result: String,
}

impl MessageRow {
    pub fn to_resource(&self) -> Message {
        Message {
            id: self.id,
            thread_id: self.thread_id,
            run_id: self.run_id,
            role: self.role,
            content: self.content.clone(),
            created_at: self.created_at,
        }
    }
}

pub struct NewMessage<'a> {
    pub id: MessageId,
    pub thread_id: ThreadId,
    pub run_id: Option<RunId>,
    pub role: MessageRole,
    pub content: &'a str,
    pub tool_calls: Option<&'a [ToolTurn]>,
}

/// Longest generated title, in characters.
const TITLE_CHARS: usize = 60;

/// A title made from a thread's first message: its first line, shortened
/// at a word boundary.
pub fn title_from(content: &str) -> String {
    let line = content.trim().lines().next().unwrap_or_default().trim();
    if line.chars().count() <= TITLE_CHARS {
        return line.to_owned();
    }
    let cut: String = line.chars().take(TITLE_CHARS).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i > TITLE_CHARS / 2 => &cut[..i],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

/// Append a message inside the caller's transaction, locking the thread row
/// (which orders concurrent appends). A thread without a title gets one from
/// its first user message. Returns the message and the updated thread, or
/// `None` when the thread is gone.
pub async fn append(
    tx: &mut PgConnection,
    new: NewMessage<'_>,
    active_runs_delta: i32,
) -> Result<Option<(MessageRow, ThreadRow)>, sqlx::Error> {
    let title = (new.role == MessageRole::User).then(|| title_from(new.content));
    let thread: Option<ThreadRow> = sqlx::query_as(concat!(
        "update threads set
             message_count = message_count + 1,
             active_runs = active_runs + $2,
             title = case when title is null or title = '' then coalesce($3, title) else title end,
             version = version + 1,
             updated_at = now()
         where id = $1 and deleted_at is null
         returning ",
        thread_columns!()
    ))
    .bind(new.thread_id)
    .bind(active_runs_delta)
    .bind(title)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(thread) = thread else {
        return Ok(None);
    };
    let message: MessageRow = sqlx::query_as(
        "insert into messages (id, thread_id, seq, run_id, role, content, tool_calls)
         values ($1, $2, $3, $4, $5, $6, $7)
         returning id, thread_id, seq, run_id, role, content, created_at, tool_calls",
    )
    .bind(new.id)
    .bind(new.thread_id)
    .bind(thread.message_count)
    .bind(new.run_id)
    .bind(new.role)
    .bind(new.content)
    .bind(new.tool_calls.map(Json))
    .fetch_one(&mut *tx)
    .await?;
    Ok(Some((message, thread)))
}

/// A page of a thread's messages, oldest first within the page; pages walk
/// backwards from the newest (`before` is the previous page's first id).
pub async fn list(
    pool: &PgPool,
    thread_id: ThreadId,
    limit: i64,
    before: Option<MessageId>,
) -> Result<Page<MessageRow>, sqlx::Error> {
    let rows: Vec<MessageRow> = sqlx::query_as(
        "select id, thread_id, seq, run_id, role, content, created_at, tool_calls from messages
         where thread_id = $1
           and ($2::uuid is null or seq < (select seq from messages where id = $2 and thread_id = $1))
         order by seq desc limit $3",
    )
    .bind(thread_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut page = Page::from_overfetch(rows, limit, |m| m.id.to_string());
    page.items.reverse();
    Ok(page)
}

/// The last `limit` messages with `seq <= up_to`, oldest first.
pub async fn recent(
    pool: &PgPool,
    thread_id: ThreadId,
    up_to: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let mut rows: Vec<MessageRow> = sqlx::query_as(
        "select id, thread_id, seq, run_id, role, content, created_at, tool_calls from messages
         where thread_id = $1 and seq <= $2 order by seq desc limit $3",
    )
    .bind(thread_id)
    .bind(up_to)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::title_from;

    #[test]
    fn titles_are_the_first_line_shortened_at_a_word() {
        assert_eq!(
            title_from("  How do I reset my password?\nThanks"),
            "How do I reset my password?"
        );
        let long =
            "Please explain the difference between optimistic and pessimistic locking in databases";
        let title = title_from(long);
        assert!(title.ends_with('…'), "{title}");
        assert!(title.chars().count() <= 61, "{title}");
        assert!(long.starts_with(title.trim_end_matches('…')));
    }
}
