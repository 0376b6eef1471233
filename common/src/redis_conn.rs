//! Redis connections and key names.
//!
//! redis-rs answers "timed out" after 500 ms by default, which under load
//! breaks ordinary commands, and leaves Nagle's algorithm on; every
//! connection here is built with explicit timeouts and TCP_NODELAY instead.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{Client, IntoConnectionInfo, RedisResult};

use crate::domain::{RunId, ThreadId, UserId};

/// A client for `url` whose connections send each command at once.
///
/// redis-rs leaves Nagle's algorithm on by default, which holds a small
/// write until the previous one is acknowledged: with delayed ACKs that is
/// 40 ms on every event published after another.
pub fn client(url: &str) -> RedisResult<Client> {
    let info = url
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    Client::open(info)
}

/// A shared, self-reconnecting connection for ordinary commands.
pub async fn manager(client: &Client) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    client.get_connection_manager_with_config(config).await
}

/// Every key Switchyard writes, under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The live event stream of a run.
    pub fn run_events(&self, run: RunId) -> String {
        format!("{}:run:{run}:events", self.prefix)
    }

    /// The fence of a run's stream: the latest attempt that may write to it
    /// (see [`crate::bus::wire`]).
    pub fn run_fence(&self, run: RunId) -> String {
        format!("{}:run:{run}:fence", self.prefix)
    }

    /// The cached thread.
    pub fn thread(&self, thread: ThreadId) -> String {
        format!("{}:thread:{thread}", self.prefix)
    }

    /// The cached recent messages of a thread, and the seq of the last one.
    pub fn thread_messages(&self, thread: ThreadId) -> (String, String) {
        (
            format!("{}:thread:{thread}:messages", self.prefix),
            format!("{}:thread:{thread}:messages:tail", self.prefix),
        )
    }

    /// The apalis queue of runs (apalis adds its own suffixes).
    pub fn run_queue(&self) -> String {
        format!("{}:queue:runs", self.prefix)
    }

    /// The connection apalis runs on: it keeps apalis's one global key,
    /// its registry of queues, under the prefix too.
    pub fn apalis_conn(&self, conn: ConnectionManager) -> crate::queue::ScopedConn {
        crate::queue::ScopedConn::new(conn, &self.prefix)
    }

    /// Published after a run is enqueued, to wake idle workers at once.
    pub fn run_queue_wake(&self) -> String {
        format!("{}:queue:runs:wake", self.prefix)
    }

    /// The Pub/Sub channel on which cancel requests of in-progress runs are
    /// announced to the workers (payload: the run id).
    pub fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }

    /// The Pub/Sub channel of a run's live events.
    pub fn run_live(&self, run: RunId) -> String {
        format!("{}:run:{run}:live", self.prefix)
    }

    /// The run of a [`Keys::run_live`] channel.
    pub fn run_of_live(&self, channel: &str) -> Option<RunId> {
        channel
            .strip_prefix(&self.prefix)?
            .strip_prefix(":run:")?
            .strip_suffix(":live")?
            .parse()
            .ok()
    }

    /// A user's limiter state: `kind` is `requests` (the time the next
    /// request is allowed, GCRA), `messages` (a sorted set of the last 24 h's
    /// messages) or `streams` (a sorted set of open event streams, scored by
    /// lease expiry).
    pub fn user_limit(&self, user: UserId, kind: &str) -> String {
        format!("{}:user:{user}:{kind}", self.prefix)
    }
}
