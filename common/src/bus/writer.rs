//! The process-wide event writer: batches events of all runs into one Redis
//! pipeline and one PostgreSQL statement.

use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::db::events::{EventRecord, insert_fenced};
use crate::domain::RunId;
use crate::events::RunEvent;
use crate::redis_conn::Keys;

use super::wire;

/// Most events written in one batch.
const BATCH: usize = 512;

#[derive(Clone)]
struct Item {
    run_id: RunId,
    /// The attempt writing: refused once a later attempt holds the run.
    attempt: i32,
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
    /// Start the writer tasks on `tracker`. They end when every handle is
    /// dropped. A run whose writes are refused because a later attempt holds
    /// it is sent on `fenced` (once per refused batch), so that its work
    /// here stops.
    pub fn start(
        pool: PgPool,
        redis: ConnectionManager,
        keys: Keys,
        fenced: mpsc::UnboundedSender<RunId>,
        tracker: &TaskTracker,
    ) -> Self {
        let (redis_tx, redis_rx) = mpsc::unbounded_channel();
        let (pg_tx, pg_rx) = mpsc::unbounded_channel();
        tracker.spawn(redis_loop(redis, keys, redis_rx, fenced.clone()));
        tracker.spawn(pg_loop(pool, pg_rx, fenced));
        Self {
            redis: redis_tx,
            pg: pg_tx,
        }
    }

    /// Queue an event of `attempt` for both stores.
    pub fn write(&self, run_id: RunId, attempt: i32, seq: i64, event: RunEvent) {
        let item = Item {
            run_id,
            attempt,
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
    pub fn publish_only(&self, run_id: RunId, attempt: i32, seq: i64, event: RunEvent) {
        let _ = self.redis.send(Item {
            run_id,
            attempt,
            seq,
            event: std::sync::Arc::new(event),
        });
    }

    /// Wait until every event written so far is in PostgreSQL (or refused).
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
    fenced: mpsc::UnboundedSender<RunId>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        // Per run (consecutive items of one run and attempt): append to its
        // stream, then publish the same events on its live channel.
        let groups: Vec<&[Item]> = batch
            .chunk_by(|a, b| a.run_id == b.run_id && a.attempt == b.attempt)
            .collect();
        for group in &groups {
            let events: Vec<(i64, &RunEvent)> = group.iter().map(|i| (i.seq, &*i.event)).collect();
            wire::append(&mut pipe, &keys, group[0].run_id, group[0].attempt, &events);
        }
        // Redis is the fast path only: on failure live readers fall back to
        // PostgreSQL, so the batch is not retried.
        match wire::run_appends(&mut conn, &pipe).await {
            Ok(replies) => {
                for (group, reply) in groups.iter().zip(replies) {
                    if reply == 0 {
                        tracing::warn!(run.id = %group[0].run_id, attempt = group[0].attempt,
                            "a later attempt holds the run; its events from here were refused");
                        let _ = fenced.send(group[0].run_id);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "publishing run events to Redis failed");
            }
        }
        batch.clear();
    }
}

async fn pg_loop(
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<PgCommand>,
    fenced: mpsc::UnboundedSender<RunId>,
) {
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
        let records: Vec<(EventRecord<'_>, i32)> = items
            .iter()
            .map(|i| {
                let record = EventRecord {
                    run_id: i.run_id,
                    seq: i.seq,
                    event: &i.event,
                };
                (record, i.attempt)
            })
            .collect();
        // Nothing accepted is lost: keep retrying while PostgreSQL is away.
        let mut delay = Duration::from_millis(50);
        loop {
            let result = match pool.acquire().await {
                Ok(mut conn) => insert_fenced(&mut conn, &records).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(refused) => {
                    for run_id in refused {
                        tracing::warn!(run.id = %run_id, "a later attempt holds the run; its events were not stored");
                        let _ = fenced.send(run_id);
                    }
                    break;
                }
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
