//! Following run events live: one Redis Pub/Sub connection per API
//! process, fanned out to every SSE client of that process.
//!
//! The worker publishes each batch of a run's events on the run's channel
//! ([`Keys::run_live`]) as well as appending them to its stream. The hub
//! subscribes to a run's channel while at least one client of this process
//! follows the run, and forwards what arrives. Pub/Sub delivers each message
//! once, at O(1) cost per subscriber, but keeps nothing: a client subscribes
//! first and then reads what came before (the stream, [`TailHub::range_after`],
//! or PostgreSQL), drops what it already has by sequence number, and fills
//! any gap the same way. A client whose buffer fills up is cut loose and
//! recovers the same way too, and so is every client when the Pub/Sub
//! connection drops or comes back: no client waits for a message that was
//! published while the hub could not hear it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::RunId;
use crate::events::SequencedEvent;
use crate::redis_conn::Keys;

/// Events a slow client may have outstanding before it is cut loose.
const SUBSCRIBER_BUFFER: usize = 4096;

type Followers = HashMap<RunId, Vec<mpsc::Sender<SequencedEvent>>>;

struct Inner {
    keys: Keys,
    conn: ConnectionManager,
    /// Who follows which run. A plain mutex: held only for map updates and
    /// non-blocking sends, never across an await.
    followers: Mutex<Followers>,
    /// The subscribing half of the Pub/Sub connection (`None` while it is
    /// down); cloned out before use, never held across an await.
    sink: Mutex<Option<PubSubSink>>,
    /// Runs a subscription of which ended: unsubscribe if nobody is left.
    released: mpsc::UnboundedSender<RunId>,
}

/// The process's reader of live run events; cheap to clone.
#[derive(Clone)]
pub struct TailHub {
    inner: Arc<Inner>,
}

/// A client's following of one run; dropping it ends the following.
pub struct Subscription {
    run_id: RunId,
    events: mpsc::Receiver<SequencedEvent>,
    released: mpsc::UnboundedSender<RunId>,
}

impl Subscription {
    /// The next live event; `None` once the hub cut this client loose (too
    /// slow) or stopped.
    pub async fn recv(&mut self) -> Option<SequencedEvent> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.released.send(self.run_id);
    }
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
        let (released, released_rx) = mpsc::unbounded_channel();
        let hub = Self {
            inner: Arc::new(Inner {
                keys,
                conn,
                followers: Mutex::new(HashMap::new()),
                sink: Mutex::new(None),
                released,
            }),
        };
        tracker.spawn(hub.clone().read_loop(client, shutdown.clone()));
        tracker.spawn(hub.clone().release_loop(released_rx, shutdown));
        hub
    }

    /// Follow a run's live events from now on. Returns once Redis confirmed
    /// the subscription (or, with Redis away, at once: the caller's catch-up
    /// reads cover what is missed).
    pub async fn subscribe(&self, run_id: RunId) -> Subscription {
        let (tx, events) = mpsc::channel(SUBSCRIBER_BUFFER);
        let first = {
            let mut followers = self.followers();
            let list = followers.entry(run_id).or_default();
            list.retain(|s| !s.is_closed());
            list.push(tx);
            list.len() == 1
        };
        if first
            && let Some(mut sink) = self.sink()
            && let Err(error) = sink.subscribe(self.inner.keys.run_live(run_id)).await
        {
            tracing::debug!(%error, "subscribing to live run events failed");
        }
        Subscription {
            run_id,
            events,
            released: self.inner.released.clone(),
        }
    }

    /// What the run's Redis stream still holds after `after`, in order.
    pub async fn range_after(
        &self,
        run_id: RunId,
        after: i64,
    ) -> redis::RedisResult<Vec<SequencedEvent>> {
        let mut conn = self.inner.conn.clone();
        super::stream_after(&mut conn, &self.inner.keys, run_id, after).await
    }

    /// [`TailHub::range_after`], or `None` when the run has no stream.
    pub async fn news_after(
        &self,
        run_id: RunId,
        after: i64,
    ) -> redis::RedisResult<Option<Vec<SequencedEvent>>> {
        let mut conn = self.inner.conn.clone();
        super::stream_news(&mut conn, &self.inner.keys, run_id, after).await
    }

    fn followers(&self) -> std::sync::MutexGuard<'_, Followers> {
        // Every critical section is a plain map update: a panic cannot leave
        // the map half-changed.
        self.inner
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn sink(&self) -> Option<PubSubSink> {
        self.inner
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_sink(&self, sink: Option<PubSubSink>) {
        *self.inner.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    /// Read the Pub/Sub connection and deliver; reconnect when it drops.
    /// Nothing here waits on Redis but the reading itself, so deliveries are
    /// never held up by subscription changes.
    async fn read_loop(self, client: redis::Client, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let pubsub = tokio::select! {
                pubsub = client.get_async_pubsub() => pubsub,
                () = shutdown.cancelled() => break,
            };
            let (sink, mut messages) = match pubsub {
                Ok(pubsub) => pubsub.split(),
                Err(error) => {
                    tracing::warn!(%error, "live run events: cannot reach Redis; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            // New subscriptions use the new connection from now on. Those
            // made while it was down are cut loose: their clients subscribe
            // again, on this connection, and read what they missed.
            self.set_sink(Some(sink));
            self.followers().clear();
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => self.deliver(&message),
                        None => break,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
            // Whatever was published from now on is lost to this
            // connection: every client reads it from the stream or
            // PostgreSQL instead of waiting for it.
            self.set_sink(None);
            self.followers().clear();
            if !shutdown.is_cancelled() {
                tracing::warn!("live run events: connection lost; reconnecting");
            }
        }
        // Dropping the senders ends every subscriber's stream.
        self.followers().clear();
    }

    /// Unsubscribe from runs nobody of this process follows any more, in
    /// batches, apart from the reading so that deliveries never wait on it.
    async fn release_loop(
        self,
        mut released: mpsc::UnboundedReceiver<RunId>,
        shutdown: CancellationToken,
    ) {
        let mut runs = Vec::new();
        loop {
            tokio::select! {
                n = released.recv_many(&mut runs, 256) => if n == 0 { return },
                () = shutdown.cancelled() => return,
            }
            let unfollowed: Vec<RunId> = {
                let mut followers = self.followers();
                runs.drain(..)
                    .filter(|run_id| {
                        let Some(list) = followers.get_mut(run_id) else {
                            return false;
                        };
                        list.retain(|s| !s.is_closed());
                        let empty = list.is_empty();
                        if empty {
                            followers.remove(run_id);
                        }
                        empty
                    })
                    .collect()
            };
            let Some(mut sink) = self.sink() else {
                continue;
            };
            if unfollowed.is_empty() {
                continue;
            }
            let channels: Vec<String> = unfollowed
                .iter()
                .map(|r| self.inner.keys.run_live(*r))
                .collect();
            if let Err(error) = sink.unsubscribe(channels).await {
                tracing::debug!(%error, "unsubscribing failed");
            }
            // A client may have followed one of these runs again while the
            // unsubscription was on its way, its subscription overtaken by it.
            let again: Vec<String> = {
                let followers = self.followers();
                unfollowed
                    .iter()
                    .filter(|r| followers.contains_key(r))
                    .map(|r| self.inner.keys.run_live(*r))
                    .collect()
            };
            if !again.is_empty()
                && let Err(error) = sink.subscribe(again).await
            {
                tracing::debug!(%error, "resubscribing failed");
            }
        }
    }

    fn deliver(&self, message: &redis::Msg) {
        let Some(run_id) = self.inner.keys.run_of_live(message.get_channel_name()) else {
            return;
        };
        let events = match message
            .get_payload::<String>()
            .ok()
            .and_then(|p| super::wire::decode_live_batch(&p))
        {
            Some(events) => events,
            None => {
                tracing::warn!(run.id = %run_id, "undecodable live run events");
                return;
            }
        };
        let mut followers = self.followers();
        let Some(list) = followers.get_mut(&run_id) else {
            return;
        };
        for event in events {
            // A full or closed subscriber is dropped; it recovers from the store.
            list.retain(|s| s.try_send(event.clone()).is_ok());
        }
    }
}

/// Announce one event stored by this process (not by a run's worker): add
/// it to the run's stream and publish it to the run's live followers, as
/// the worker's writer does with its events, as writer generation
/// `generation` (see [`super::wire`]). The event is durable already; a
/// lost announcement only delays it until the followers look at
/// PostgreSQL.
pub async fn announce(
    conn: &mut ConnectionManager,
    keys: &Keys,
    run_id: RunId,
    generation: i32,
    event: &SequencedEvent,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    super::wire::append(
        &mut pipe,
        keys,
        run_id,
        generation,
        &[(event.seq, &event.event)],
    );
    super::wire::run_appends(conn, &pipe).await.map(drop)
}
