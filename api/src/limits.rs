//! Per-user limits that hold across every API replica: the state lives in
//! Redis and each check is one atomic script, timed by Redis's own clock.
//!
//! - `requests_per_minute`: GCRA (a leaky bucket kept as one timestamp): a
//!   full minute's allowance may be spent at once, then it refills evenly.
//! - `messages_per_day`: a log of the last 24 hours' messages (a sorted set
//!   scored by time): a true rolling window.
//! - `open_streams`: a sorted set of open event streams scored by a lease
//!   that the stream renews while open, so a crashed replica's streams stop
//!   counting within [`STREAM_LEASE`].
//!
//! `active_runs` and `tokens_per_day` are facts about runs that PostgreSQL
//! owns; they are checked there, in the transaction that creates the run
//! (`db::runs::create`).
//!
//! A limit that is not configured costs nothing. When Redis is unreachable
//! the Redis-kept limits are not enforced (the API keeps serving, as it
//! does for everything else with Redis down) and a warning is logged.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use switchyard_common::redis_conn::Keys;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::error::ApiError;

/// How long an open stream counts without renewing its lease.
const STREAM_LEASE: Duration = Duration::from_secs(60);
/// How often an open stream renews it.
const STREAM_RENEW: Duration = Duration::from_secs(20);
/// What a refused stream is told to wait: streams end when their runs do,
/// which no one can predict.
const STREAM_RETRY: Duration = Duration::from_secs(5);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Redis's clock in milliseconds, for every script.
const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS[1]: when the allowance is spent (ms); ARGV[1]: ms per request;
/// ARGV[2]: the window (ms). Returns 0, or the ms to wait.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
local wait = new_tat - tonumber(ARGV[2]) - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
return 0"
    ))
});

/// KEYS[1]: a sorted set of entries scored by expiry (ms); ARGV[1]: the
/// entry's lifetime (ms); ARGV[2]: the limit; ARGV[3]: the new entry;
/// ARGV[4]: the wait to answer when full and entries expire at their own
/// pace (0: until the oldest expires). Returns 0, or the ms to wait.
static BOUNDED_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  if tonumber(ARGV[4]) > 0 then return tonumber(ARGV[4]) end
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(first[2]) - now))
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0"
    ))
});

/// KEYS[1], ARGV[1], ARGV[3] as above: push an entry's expiry forward.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0"
    ))
});

#[derive(Clone)]
pub struct Limiter {
    redis: ConnectionManager,
    keys: Keys,
    /// Where stream slots are renewed and released: waited for on shutdown.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// A message counted against `messages_per_day`; handed back with
/// [`Limiter::refund_message`] if the message was not stored after all.
pub struct MessageTicket(Option<(String, String)>);

/// An open stream counted against `open_streams`; counts until dropped.
pub struct StreamSlot {
    renewer: Option<JoinHandle<()>>,
    entry: Option<(Limiter, String, String)>,
}

impl StreamSlot {
    /// A slot that counts against nothing: for streams the server itself
    /// reads (a surface that waits for a run's answer).
    pub fn unlimited() -> Self {
        Self {
            renewer: None,
            entry: None,
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let Some((limiter, key, member)) = self.entry.take() {
            // If this fails, the lease runs out instead.
            let Limiter { redis, tasks, .. } = limiter;
            tasks.spawn(async move { remove_entry(redis, &key, &member).await });
        }
    }
}

impl Limiter {
    pub fn new(
        redis: ConnectionManager,
        keys: Keys,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            redis,
            keys,
            tasks,
            shutdown,
        }
    }

    /// Count a request against `requests_per_minute`.
    pub async fn request(&self, user: &CurrentUser) -> Result<(), ApiError> {
        let Some(limit) = user.limits.requests_per_minute else {
            return Ok(());
        };
        let per_request_ms = 60_000.0 / f64::from(limit);
        let mut invocation = GCRA.key(self.keys.user_limit(user.id, "requests"));
        invocation.arg(per_request_ms).arg(60_000);
        let wait = self.run(&mut invocation).await;
        refuse_if(
            wait,
            "requests_per_minute",
            format!("at most {limit} requests a minute"),
        )
    }

    /// Count a user message against `messages_per_day`.
    pub async fn message(&self, user: &CurrentUser) -> Result<MessageTicket, ApiError> {
        let Some(limit) = user.limits.messages_per_day else {
            return Ok(MessageTicket(None));
        };
        let key = self.keys.user_limit(user.id, "messages");
        let member = Uuid::now_v7().to_string();
        let mut invocation = BOUNDED_SET.key(&key);
        invocation
            .arg(DAY.as_millis() as u64)
            .arg(limit)
            .arg(&member)
            .arg(0);
        let wait = self.run(&mut invocation).await;
        refuse_if(
            wait,
            "messages_per_day",
            format!("at most {limit} messages in 24 hours"),
        )?;
        Ok(MessageTicket(Some((key, member))))
    }

    /// Un-count a message that was refused after it was counted.
    pub async fn refund_message(&self, ticket: MessageTicket) {
        if let Some((key, member)) = ticket.0 {
            remove_entry(self.redis.clone(), &key, &member).await;
        }
    }

    /// Count an event stream against `open_streams` while the slot lives.
    pub async fn open_stream(&self, user: &CurrentUser) -> Result<StreamSlot, ApiError> {
        let Some(limit) = user.limits.open_streams else {
            return Ok(StreamSlot::unlimited());
        };
        let key = self.keys.user_limit(user.id, "streams");
        let member = Uuid::now_v7().to_string();
        let mut invocation = BOUNDED_SET.key(&key);
        invocation
            .arg(STREAM_LEASE.as_millis() as u64)
            .arg(limit)
            .arg(&member)
            .arg(STREAM_RETRY.as_millis() as u64);
        let wait = self.run(&mut invocation).await;
        refuse_if(
            wait,
            "open_streams",
            format!("at most {limit} open event streams"),
        )?;
        let renewer = {
            let (mut redis, key, member) = (self.redis.clone(), key.clone(), member.clone());
            let shutdown = self.shutdown.clone();
            self.tasks.spawn(async move {
                let mut ticker = tokio::time::interval(STREAM_RENEW);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        () = shutdown.cancelled() => return,
                    }
                    let renewed: redis::RedisResult<i64> = RENEW
                        .key(&key)
                        .arg(STREAM_LEASE.as_millis() as u64)
                        .arg(0)
                        .arg(&member)
                        .invoke_async(&mut redis)
                        .await;
                    if let Err(error) = renewed {
                        tracing::debug!(%error, "renewing a stream slot failed");
                    }
                }
            })
        };
        Ok(StreamSlot {
            renewer: Some(renewer),
            entry: Some((self.clone(), key, member)),
        })
    }

    /// Run a limiter script: the ms to wait, or `0` to go ahead (also when
    /// Redis cannot be asked).
    async fn run(&self, invocation: &mut redis::ScriptInvocation<'_>) -> u64 {
        let mut redis = self.redis.clone();
        match invocation.invoke_async::<u64>(&mut redis).await {
            Ok(wait) => wait,
            Err(error) => {
                tracing::warn!(%error, "a rate limit could not be checked; letting the request through");
                0
            }
        }
    }
}

/// Take an entry out of a limiter's sorted set.
async fn remove_entry(mut redis: ConnectionManager, key: &str, member: &str) {
    let removed: redis::RedisResult<i64> = redis::cmd("ZREM")
        .arg(key)
        .arg(member)
        .query_async(&mut redis)
        .await;
    if let Err(error) = removed {
        tracing::debug!(%error, key, "removing a limiter entry failed");
    }
}

fn refuse_if(wait_ms: u64, limit: &'static str, what: String) -> Result<(), ApiError> {
    if wait_ms == 0 {
        return Ok(());
    }
    Err(ApiError::RateLimited {
        limit,
        message: format!("rate limit {limit} reached: {what}"),
        retry_after: Duration::from_millis(wait_ms),
    })
}
