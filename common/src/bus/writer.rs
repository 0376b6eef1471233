//! The process-wide event writer: batches events of all runs into one Redis
//! pipeline and one PostgreSQL statement.

use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::db::events::{EventRecord, insert_batch};
use crate::domain::RunId;
use crate::events::RunEvent;
use crate::redis_conn::Keys;

use super::entry_id;
use super::tail::live_item;

/// Live streams are kept this long after their last event; PostgreSQL keeps
/// the events for as long as the run exists.
const STREAM_TTL_SECS: i64 = 24 * 3600;
/// Bound on a stream's length (approximate trimming).
const STREAM_MAX_LEN: usize = 10_000;
/// Most events written in one batch.
const BATCH: usize = 512;

#[derive(Clone)]
struct Item {
    run_id: RunId,
    seq: i64,
    event: std::sync::Arc<RunEvent>,
}

enum PgCommand {
    Write(Item),
    /// Answer once everything sent before it is stored.
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    redis: mpsc::UnboundedSender<Item>,
    pg: mpsc::UnboundedSender<PgCommand>,
}

impl EventWriter {
    /// Start the writer tasks on `tracker`. They end when every handle is dropped.
    pub fn start(
        pool: PgPool,
        redis: ConnectionManager,
        keys: Keys,
        tracker: &TaskTracker,
    ) -> Self {
        let (redis_tx, redis_rx) = mpsc::unbounded_channel();
        let (pg_tx, pg_rx) = mpsc::unbounded_channel();
        tracker.spawn(redis_loop(redis, keys, redis_rx));
        tracker.spawn(pg_loop(pool, pg_rx));
        Self {
            redis: redis_tx,
            pg: pg_tx,
        }
    }

    /// Queue an event for both stores.
    pub fn write(&self, run_id: RunId, seq: i64, event: RunEvent) {
        let item = Item {
            run_id,
            seq,
            event: std::sync::Arc::new(event),
        };
        // A send fails only once the writer tasks have stopped, which happens
        // after every handle (including this one) is gone.
        let _ = self.redis.send(item.clone());
        let _ = self.pg.send(PgCommand::Write(item));
    }

    /// Publish to Redis only: for events already committed to PostgreSQL
    /// in the caller's own transaction.
    pub fn publish_only(&self, run_id: RunId, seq: i64, event: RunEvent) {
        let _ = self.redis.send(Item {
            run_id,
            seq,
            event: std::sync::Arc::new(event),
        });
    }

    /// Wait until every event written so far is in PostgreSQL.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.pg.send(PgCommand::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn redis_loop(
    mut conn: ConnectionManager,
    keys: Keys,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        // Per run (consecutive items of one run): append to its stream, then
        // publish the same events on its live channel.
        for group in batch.chunk_by(|a, b| a.run_id == b.run_id) {
            append_and_publish(&mut pipe, &keys, group);
        }
        // Redis is the fast path only: on failure live readers fall back to
        // PostgreSQL, so the batch is not retried.
        if let Err(error) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(%error, events = batch.len(), "publishing run events to Redis failed");
        }
        batch.clear();
    }
}

fn append_and_publish(pipe: &mut redis::Pipeline, keys: &Keys, group: &[Item]) {
    let Some(first) = group.first() else {
        return;
    };
    let events: Vec<(i64, &RunEvent)> = group.iter().map(|i| (i.seq, &*i.event)).collect();
    append_events(pipe, keys, first.run_id, &events);
}

/// Add to `pipe`: append `events` (consecutive, of one run) to the run's
/// stream, then publish them on its live channel.
pub(super) fn append_events(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    run_id: RunId,
    events: &[(i64, &RunEvent)],
) {
    let key = keys.run_events(run_id);
    let mut live = Vec::with_capacity(events.len());
    for (seq, event) in events {
        let data = event.data();
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX_LEN)
            .arg(entry_id(*seq))
            .arg("k")
            .arg(event.kind())
            .arg("d")
            .arg(data.to_string())
            .ignore();
        // A stream's expiry is set when its run is queued and when it
        // starts (so that the stream of a run that never ran, or whose
        // worker died, still goes away) and renewed when it ends; not on
        // every event.
        if matches!(
            event,
            RunEvent::RunQueued { .. } | RunEvent::RunStarted { .. }
        ) || event.is_terminal()
        {
            pipe.cmd("EXPIRE").arg(&key).arg(STREAM_TTL_SECS).ignore();
        }
        live.push(live_item(*seq, event.kind(), data));
    }
    pipe.cmd("PUBLISH")
        .arg(keys.run_live(run_id))
        .arg(serde_json::Value::Array(live).to_string())
        .ignore();
}

async fn pg_loop(pool: PgPool, mut rx: mpsc::UnboundedReceiver<PgCommand>) {
    let mut commands = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut commands, BATCH).await > 0 {
        let mut items = Vec::with_capacity(commands.len());
        let mut waiters = Vec::new();
        for command in commands.drain(..) {
            match command {
                PgCommand::Write(item) => items.push(item),
                PgCommand::Flush(done) => waiters.push(done),
            }
        }
        let records: Vec<EventRecord<'_>> = items
            .iter()
            .map(|i| EventRecord {
                run_id: i.run_id,
                seq: i.seq,
                event: &i.event,
            })
            .collect();
        // Nothing accepted is lost: keep retrying while PostgreSQL is away.
        let mut delay = Duration::from_millis(50);
        loop {
            let result = match pool.acquire().await {
                Ok(mut conn) => insert_batch(&mut conn, &records).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, events = records.len(), "storing run events failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}
