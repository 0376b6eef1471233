//! Copies of threads and their recent messages in Redis: written through
//! after PostgreSQL commits, read cache-aside.
//!
//! Every entry is versioned so that an older copy can never replace a newer
//! one, whatever order writers and readers reach Redis in: a thread by its
//! `version` column, a message list by the `seq` of its last message. Redis
//! failures are logged and treated as misses — a flushed or unreachable
//! Redis never changes what a reader sees, only how fast.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::db::messages::MessageRow;
use crate::db::threads::ThreadRow;
use crate::domain::ThreadId;
use crate::redis_conn::Keys;

/// How many recent messages of a thread are kept.
pub const RECENT_MESSAGES: usize = 50;
/// Entries expire after a day without writes.
const TTL_SECS: i64 = 24 * 3600;

/// Set `KEYS[1]` to `{v: ARGV[1], d: ARGV[2]}` unless it holds a version >= ARGV[1].
static PUT_VERSIONED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local current = redis.call('HGET', KEYS[1], 'v')
        if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
        redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
        redis.call('EXPIRE', KEYS[1], ARGV[3])
        return 1
        "#,
    )
});

/// Append message ARGV[2] with seq ARGV[1] to list KEYS[1] whose last seq is
/// in KEYS[2] — only if it directly follows; a list that skipped a message
/// is dropped (the next reader rebuilds it).
static APPEND_MESSAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local tail = redis.call('GET', KEYS[2])
        if not tail then return 0 end
        tail = tonumber(tail)
        local seq = tonumber(ARGV[1])
        if seq <= tail then return 0 end
        if seq ~= tail + 1 then
            redis.call('DEL', KEYS[1], KEYS[2])
            return -1
        end
        redis.call('RPUSH', KEYS[1], ARGV[2])
        redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
        redis.call('SET', KEYS[2], seq, 'EX', ARGV[4])
        redis.call('EXPIRE', KEYS[1], ARGV[4])
        return 1
        "#,
    )
});

/// Replace list KEYS[1] (tail seq in KEYS[2]) with ARGV[3..] ending at seq
/// ARGV[1], unless the cached list reaches further, or as far with as many
/// messages.
static FILL_MESSAGES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local tail = redis.call('GET', KEYS[2])
        if tail then
            tail = tonumber(tail)
            local up_to = tonumber(ARGV[1])
            if tail > up_to then return 0 end
            if tail == up_to and redis.call('LLEN', KEYS[1]) >= #ARGV - 2 then return 0 end
        end
        redis.call('DEL', KEYS[1])
        if #ARGV > 2 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 3)) end
        redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        return 1
        "#,
    )
});

/// The thread and message cache.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    keys: Keys,
}

/// What the cache knows of a thread.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedThread {
    /// Not in the cache: ask PostgreSQL.
    Miss,
    /// Deleted.
    Gone,
    Found(Box<ThreadRow>),
}

impl Cache {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    pub async fn thread(&self, id: ThreadId) -> CachedThread {
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<Option<String>> = redis::cmd("HGET")
            .arg(self.keys.thread(id))
            .arg("d")
            .query_async(&mut conn)
            .await;
        match result {
            Ok(None) => CachedThread::Miss,
            Ok(Some(data)) if data.is_empty() => CachedThread::Gone,
            Ok(Some(data)) => match serde_json::from_str(&data) {
                Ok(row) => CachedThread::Found(Box::new(row)),
                Err(error) => {
                    tracing::warn!(%error, thread.id = %id, "undecodable cached thread");
                    CachedThread::Miss
                }
            },
            Err(error) => {
                tracing::debug!(%error, "thread cache read failed");
                CachedThread::Miss
            }
        }
    }

    /// Store a thread as PostgreSQL returned it (after the commit).
    pub async fn put_thread(&self, row: &ThreadRow) {
        match serde_json::to_string(row) {
            Ok(data) => {
                self.put_versioned(self.keys.thread(row.id), row.version, data)
                    .await
            }
            Err(error) => tracing::warn!(%error, "thread not cacheable"),
        }
    }

    /// Record that a thread is gone, so that no older copy can come back.
    pub async fn forget_thread(&self, id: ThreadId) {
        self.put_versioned(self.keys.thread(id), i64::MAX, String::new())
            .await;
        let (list, tail) = self.keys.thread_messages(id);
        let mut conn = self.conn.clone();
        if let Err(error) = redis::cmd("DEL")
            .arg(list)
            .arg(tail)
            .query_async::<()>(&mut conn)
            .await
        {
            tracing::warn!(%error, thread.id = %id, "dropping cached messages failed");
        }
    }

    async fn put_versioned(&self, key: String, version: i64, data: String) {
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> = PUT_VERSIONED
            .key(key)
            .arg(version)
            .arg(data)
            .arg(TTL_SECS)
            .invoke_async(&mut conn)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cache write failed");
        }
    }

    /// Write a new message through (after the commit).
    pub async fn append_message(&self, message: &MessageRow) {
        let Ok(data) = serde_json::to_string(message) else {
            return;
        };
        let (list, tail) = self.keys.thread_messages(message.thread_id);
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<i64> = APPEND_MESSAGE
            .key(list)
            .key(tail)
            .arg(message.seq)
            .arg(data)
            .arg(RECENT_MESSAGES)
            .arg(TTL_SECS)
            .invoke_async(&mut conn)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cache write failed");
        }
    }

    /// The cached recent messages (oldest first) if they reach `up_to` and
    /// hold every message of the last `want` up to it; otherwise `None`.
    pub async fn recent_messages(
        &self,
        thread: ThreadId,
        up_to: i64,
        want: usize,
    ) -> Option<Vec<MessageRow>> {
        let (list, tail) = self.keys.thread_messages(thread);
        let mut conn = self.conn.clone();
        let (cached_tail, items): (Option<i64>, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(&tail)
            .cmd("LRANGE")
            .arg(&list)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .inspect_err(|error| tracing::debug!(%error, "message cache read failed"))
            .ok()?;
        if cached_tail? < up_to {
            return None;
        }
        let messages: Vec<MessageRow> = items
            .iter()
            .map(|s| serde_json::from_str(s))
            .collect::<Result<_, _>>()
            .ok()?;
        let upto: Vec<MessageRow> = messages.into_iter().filter(|m| m.seq <= up_to).collect();
        let first_needed = (up_to - want as i64 + 1).max(1);
        match upto.first() {
            Some(first) if first.seq <= first_needed => {
                let skip = upto.len().saturating_sub(want);
                Some(upto.into_iter().skip(skip).collect())
            }
            None if up_to == 0 => Some(Vec::new()),
            _ => None,
        }
    }

    /// Store the recent messages read from PostgreSQL, ending at `up_to`.
    pub async fn fill_messages(&self, thread: ThreadId, up_to: i64, messages: &[MessageRow]) {
        let start = messages.len().saturating_sub(RECENT_MESSAGES);
        let Ok(items) = messages[start..]
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
        else {
            return;
        };
        let (list, tail) = self.keys.thread_messages(thread);
        let mut conn = self.conn.clone();
        let mut invocation = FILL_MESSAGES.key(list);
        invocation.key(tail).arg(up_to).arg(TTL_SECS);
        for item in items {
            invocation.arg(item);
        }
        if let Err(error) = invocation.invoke_async::<i64>(&mut conn).await {
            tracing::warn!(%error, "cache write failed");
        }
    }
}
