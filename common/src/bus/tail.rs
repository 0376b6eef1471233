//! Following run events live: one blocking `XREAD` per API process, fanned
//! out to every SSE client of that process.
//!
//! Each subscription names a run and the last event its client has; the hub
//! reads the run's stream from there and forwards entries in order. A new
//! subscription interrupts the blocking read through the instance's control
//! stream, so it starts at once. Clients must still check sequence numbers:
//! the hub may deliver an event twice (never out of order), and anything
//! Redis lost is theirs to fill from PostgreSQL ([`TailHub::range_after`]
//! gives what Redis still has).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{decode_entry, entry_id};
use crate::domain::RunId;
use crate::events::SequencedEvent;
use crate::redis_conn::{self, Keys};

/// Events a slow client may have outstanding before it is cut loose (it then
/// falls back to reading PostgreSQL).
const SUBSCRIBER_BUFFER: usize = 4096;
/// How long one blocking read waits.
const BLOCK_MS: u64 = 5_000;

struct Followed {
    /// Entry id of the last entry read from this run's stream.
    position: String,
    subscribers: Vec<mpsc::Sender<SequencedEvent>>,
}

struct Inner {
    keys: Keys,
    control: String,
    conn: ConnectionManager,
    followed: Mutex<HashMap<RunId, Followed>>,
}

/// The process's reader of live run events; cheap to clone.
#[derive(Clone)]
pub struct TailHub {
    inner: Arc<Inner>,
}

impl TailHub {
    /// Start the reader task; it stops on `shutdown`.
    pub fn start(
        client: redis::Client,
        conn: ConnectionManager,
        keys: Keys,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let control = keys.tail_control(uuid::Uuid::now_v7());
        let hub = Self {
            inner: Arc::new(Inner {
                keys,
                control,
                conn,
                followed: Mutex::new(HashMap::new()),
            }),
        };
        tracker.spawn(hub.clone().read_loop(client, shutdown));
        hub
    }

    /// Follow a run's live events after `after`. The receiver ends when the
    /// hub cuts a slow client loose or stops.
    pub async fn subscribe(&self, run_id: RunId, after: i64) -> mpsc::Receiver<SequencedEvent> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        {
            let mut followed = self.lock();
            followed
                .entry(run_id)
                .or_insert_with(|| Followed {
                    position: entry_id(after),
                    subscribers: Vec::new(),
                })
                .subscribers
                .push(tx);
        }
        // Interrupt the blocking read so that it includes this stream now.
        let mut conn = self.inner.conn.clone();
        let woke: redis::RedisResult<()> = redis::pipe()
            .cmd("XADD")
            .arg(&self.inner.control)
            .arg("MAXLEN")
            .arg("~")
            .arg(100)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&self.inner.control)
            .arg(3600)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(error) = woke {
            tracing::debug!(%error, "could not wake the event tail reader");
        }
        rx
    }

    /// What the run's Redis stream still holds after `after`, in order.
    pub async fn range_after(
        &self,
        run_id: RunId,
        after: i64,
    ) -> redis::RedisResult<Vec<SequencedEvent>> {
        let mut conn = self.inner.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.inner.keys.run_events(run_id))
            .arg(format!("({}", entry_id(after)))
            .arg("+")
            .query_async(&mut conn)
            .await?;
        Ok(reply.ids.iter().filter_map(decode_entry).collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Followed>> {
        // The map is never left half-updated by a panic: every critical
        // section is plain field updates.
        self.inner
            .followed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn read_loop(self, client: redis::Client, shutdown: CancellationToken) {
        let mut control_position = "0-0".to_owned();
        let mut conn = None;
        while !shutdown.is_cancelled() {
            let reader = match &mut conn {
                Some(c) => c,
                None => match redis_conn::dedicated(&client).await {
                    Ok(c) => conn.insert(c),
                    Err(error) => {
                        tracing::warn!(%error, "event tail reader cannot reach Redis; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                            _ = shutdown.cancelled() => break,
                        }
                    }
                },
            };
            let (runs, cmd) = self.read_command(&control_position);
            let reply = tokio::select! {
                reply = cmd.query_async::<Option<StreamReadReply>>(reader) => reply,
                _ = shutdown.cancelled() => break,
            };
            match reply {
                Ok(Some(reply)) => {
                    for stream in reply.keys {
                        if stream.key == self.inner.control {
                            if let Some(last) = stream.ids.last() {
                                control_position = last.id.clone();
                            }
                            continue;
                        }
                        let Some(run_id) = runs.get(&stream.key) else {
                            continue;
                        };
                        self.deliver(*run_id, &stream.ids);
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "reading run event streams failed; reconnecting");
                    conn = None;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        // Dropping the senders ends every subscriber's stream.
        self.lock().clear();
    }

    /// Build the next `XREAD`, dropping runs nobody follows any more.
    fn read_command(&self, control_position: &str) -> (HashMap<String, RunId>, redis::Cmd) {
        let mut followed = self.lock();
        followed.retain(|_, f| {
            f.subscribers.retain(|s| !s.is_closed());
            !f.subscribers.is_empty()
        });
        let mut keys = vec![self.inner.control.clone()];
        let mut ids = vec![control_position.to_owned()];
        let mut runs = HashMap::with_capacity(followed.len());
        for (run_id, f) in followed.iter() {
            let key = self.inner.keys.run_events(*run_id);
            keys.push(key.clone());
            ids.push(f.position.clone());
            runs.insert(key, *run_id);
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(&keys)
            .arg(&ids);
        (runs, cmd)
    }

    fn deliver(&self, run_id: RunId, entries: &[redis::streams::StreamId]) {
        let mut followed = self.lock();
        let Some(f) = followed.get_mut(&run_id) else {
            return;
        };
        for entry in entries {
            f.position = entry.id.clone();
            let Some(event) = decode_entry(entry) else {
                tracing::warn!(run.id = %run_id, entry = %entry.id, "undecodable run event entry");
                continue;
            };
            // A full or closed subscriber is dropped; it recovers from PostgreSQL.
            f.subscribers.retain(|s| s.try_send(event.clone()).is_ok());
        }
    }
}
