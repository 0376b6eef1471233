//! The runs this worker executes: their leases, and the signals that stop
//! them.
//!
//! - Leases: a claimed run holds a lease of [`LEASE`]; it is renewed every
//!   [`RENEW`] while the run is in progress here. A run whose lease expired
//!   (its worker died, or lost PostgreSQL) is taken back by a sweeper
//!   (`db::runs::requeue_expired`); a worker that finds it no longer holds a
//!   run's lease stops its work on the run.
//! - Cancels: the API stores a cancel request in PostgreSQL, then announces
//!   it on a Redis channel. Every worker listens to that channel and stops
//!   its run at once; as the announcement can be missed (Redis down, or a
//!   run claimed an instant after it was sent), each worker also looks up
//!   its runs' requests in PostgreSQL every [`POLL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use switchyard_common::db::{self, runs::CancelReason};
use switchyard_common::domain::RunId;
use switchyard_common::queue::CancelAnnouncement;
use switchyard_common::redis_conn::Keys;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How often the runs' cancel requests are looked up in PostgreSQL.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a claim or renewal holds a run.
pub const LEASE: Duration = Duration::from_secs(4);
/// How often leases are renewed: three chances before one expires.
pub const RENEW: Duration = Duration::from_secs(1);

/// Why a run's work must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A cancel request (or an interrupting run).
    Cancel(CancelReason),
    /// The lease was taken back: another worker owns the run now.
    Lost,
    /// The worker is shutting down and its grace period is over: the run
    /// goes back to the queue for another worker to continue at once.
    Release,
}

/// The runs in progress in this process, each with its stop signal.
#[derive(Clone, Default)]
pub struct ActiveRuns {
    runs: Arc<Mutex<HashMap<RunId, watch::Sender<Option<Stop>>>>>,
}

/// A run's stop signal; unregisters the run when dropped.
pub struct Registration {
    run_id: RunId,
    signal: watch::Receiver<Option<Stop>>,
    cancellations: ActiveRuns,
}

impl Registration {
    /// Resolves when the run must stop, with the reason.
    pub async fn stopped(&mut self) -> Stop {
        let stopped = self.signal.wait_for(Option::is_some).await.map(|r| *r);
        match stopped {
            Ok(stop) => stop.unwrap_or(Stop::Lost),
            // The sender lives in the registry until this registration drops.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Registration {
    /// Stop the run before it starts (a cancel stored before the claim).
    pub fn cancel_now(&mut self, reason: CancelReason) {
        self.cancellations.stop(self.run_id, Stop::Cancel(reason));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancellations.lock().remove(&self.run_id);
    }
}

impl ActiveRuns {
    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, watch::Sender<Option<Stop>>>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start listening for a run's cancel request.
    pub fn register(&self, run_id: RunId) -> Registration {
        let (sender, signal) = watch::channel(None);
        self.lock().insert(run_id, sender);
        Registration {
            run_id,
            signal,
            cancellations: self.clone(),
        }
    }

    /// Stop a run of this process, if it is one (the first reason stays);
    /// returns whether it is.
    pub fn stop(&self, run_id: RunId, stop: Stop) -> bool {
        let runs = self.lock();
        let Some(sender) = runs.get(&run_id) else {
            return false;
        };
        sender.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(stop);
            }
            first
        });
        true
    }

    /// Release every run of this process (shutdown); returns how many.
    pub fn release_all(&self) -> usize {
        let running = self.running();
        for run_id in &running {
            self.stop(*run_id, Stop::Release);
        }
        running.len()
    }

    fn running(&self) -> Vec<RunId> {
        self.lock().keys().copied().collect()
    }

    /// The runs in progress at the next tick that finds any; `None` once
    /// `shutdown` is cancelled.
    async fn next_round(
        &self,
        ticks: &mut tokio::time::Interval,
        shutdown: &CancellationToken,
    ) -> Option<Vec<RunId>> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                _ = ticks.tick() => {}
            }
            let running = self.running();
            if !running.is_empty() {
                return Some(running);
            }
        }
    }

    /// Renew the leases of this process's runs every [`RENEW`] as
    /// `worker`, until `shutdown`; stop the runs whose lease was taken back,
    /// and those whose lease ran out by this process's own clock while
    /// PostgreSQL could not be reached (a sweeper may take them back at
    /// any moment: their work here stops before another attempt's starts,
    /// as far as clocks allow; the fences refuse whatever comes later).
    pub async fn renew(self, pool: PgPool, worker: String, shutdown: CancellationToken) {
        let mut ticks = ticker(RENEW);
        // When each run's lease was last granted (claim or renewal), by the
        // time the request was sent.
        let mut granted: HashMap<RunId, tokio::time::Instant> = HashMap::new();
        while let Some(running) = self.next_round(&mut ticks, &shutdown).await {
            let asked = tokio::time::Instant::now();
            granted.retain(|id, _| running.contains(id));
            for id in &running {
                // A run first seen now was claimed within the last round.
                granted
                    .entry(*id)
                    .or_insert(asked.checked_sub(RENEW).unwrap_or(asked));
            }
            match db::runs::renew_leases(&pool, &worker, &running, LEASE).await {
                Ok(held) => {
                    for run_id in running {
                        if held.contains(&run_id) {
                            granted.insert(run_id, asked);
                        } else if self.stop(run_id, Stop::Lost) {
                            // Not renewed: finished meanwhile (no longer
                            // here) or taken back.
                            tracing::warn!(run.id = %run_id, "lease lost; stopping the run here");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "renewing leases failed");
                    for (run_id, at) in &granted {
                        if at.elapsed() >= LEASE && self.stop(*run_id, Stop::Lost) {
                            tracing::warn!(run.id = %run_id, "lease ran out unrenewed; stopping the run here");
                        }
                    }
                }
            }
        }
    }

    /// Stop the runs whose writes were refused because a later attempt
    /// holds them, as they are reported, until the writer stops.
    pub async fn leave_fenced(self, mut fenced: mpsc::UnboundedReceiver<RunId>) {
        while let Some(run_id) = fenced.recv().await {
            if self.stop(run_id, Stop::Lost) {
                tracing::warn!(run.id = %run_id, "a later attempt holds the run; stopping it here");
            }
        }
    }

    /// Look up the stored cancel requests of this process's runs, every
    /// [`POLL`], until `shutdown`.
    pub async fn poll(self, pool: PgPool, shutdown: CancellationToken) {
        let mut ticks = ticker(POLL);
        while let Some(running) = self.next_round(&mut ticks, &shutdown).await {
            match db::runs::cancel_requests(&pool, &running).await {
                Ok(requests) => {
                    for (run_id, reason) in requests {
                        self.stop(run_id, Stop::Cancel(reason));
                    }
                }
                Err(error) => tracing::warn!(%error, "looking up cancel requests failed"),
            }
        }
    }

    /// Follow the cancel announcements on Redis
    /// until `shutdown`, reconnecting after a lost connection.
    pub async fn listen(self, client: redis::Client, keys: Keys, shutdown: CancellationToken) {
        let channel = keys.cancel_channel();
        loop {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let mut pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                result = subscribed => match result {
                    Ok(pubsub) => pubsub,
                    Err(error) => {
                        tracing::debug!(%error, "cannot follow cancel requests; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            let mut messages = pubsub.on_message();
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<CancelAnnouncement>(&payload) {
                    Ok(cancel) => {
                        self.stop(cancel.run_id, Stop::Cancel(cancel.reason));
                    }
                    Err(error) => tracing::warn!(%error, "an unreadable cancel announcement"),
                }
            }
        }
    }
}

/// A tick every `period`; late ticks are not bunched up.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}
