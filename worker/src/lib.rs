//! The Switchyard worker: apalis consumers that execute runs.
//!
//! # Layout
//!
//! - [`runner`]: a run from job to terminal status.
//! - [`history`]: which stored messages a run's model sees, in what order.
//! - [`providers`]: LLM wire formats behind one streaming interface.
//! - [`workflow`]: how a run unfolds: the tool loop, triage, planner.
//! - [`tools`]: what agents can call.
//! - [`active`]: the runs of this process: leases and stop signals.
//! - [`leader`]: which worker takes back the runs of lost workers.
//!
//! [`Worker::start`] wires them to PostgreSQL and Redis: an apalis worker
//! on the run queue (woken by a Redis message on every push, polling slowly
//! as a backstop) and a sweeper that takes back lost runs (on one worker at
//! a time) and enqueues runs stored while Redis was unreachable.

pub mod active;
pub mod history;
pub mod leader;
pub mod models;
pub mod providers;
pub mod runner;
pub mod tools;
pub mod wheel;
pub mod workflow;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use apalis_redis::RedisStorage;
use futures::StreamExt;
use sqlx::PgPool;
use std::sync::Mutex;
use switchyard_common::bus::EventWriter;
use switchyard_common::cache::Cache;
use switchyard_common::config::{Config, SweeperLeader};
use switchyard_common::db;
use switchyard_common::queue::{self, RunJob, RunQueue};
use switchyard_common::redis_conn::{self, Keys};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::leader::{Elector, Leadership};
use crate::runner::Runner;

/// How often an idle worker looks at the queue without a wake-up.
const POLL_BACKSTOP: Duration = Duration::from_secs(1);
/// How often stored-but-not-enqueued runs are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A running worker.
pub struct Worker {
    tracker: TaskTracker,
}

impl Worker {
    /// Connect and start consuming; runs until `shutdown` is cancelled.
    pub async fn start(
        config: Arc<Config>,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = redis_conn::client(&config.redis_url).context("parsing REDIS_URL")?;
        let conn = redis_conn::manager(&client)
            .await
            .context("connecting to Redis")?;
        let keys = Keys::new(&config.redis_prefix);
        let tracker = TaskTracker::new();
        // The runs in progress, and the end of the background loops (leases,
        // cancels, sweeper), which outlive `shutdown` until the runs are done.
        let runs = TaskTracker::new();
        let stopped = CancellationToken::new();

        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let mut providers = HashMap::new();
        for provider in &config.catalog.providers {
            let built = providers::build(provider, &http)
                .with_context(|| format!("provider {:?}", provider.name))?;
            providers.insert(provider.name.clone(), built);
        }

        let active_runs = active::ActiveRuns::default();
        // A run whose writes are refused (a later attempt holds it) stops here.
        let (fenced, fenced_runs) = tokio::sync::mpsc::unbounded_channel();
        let writer = EventWriter::start(pool.clone(), conn.clone(), keys.clone(), fenced, &tracker);
        tracker.spawn(active_runs.clone().leave_fenced(fenced_runs));
        let run_queue = RunQueue::new(conn.clone(), &keys);
        let worker_id = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            uuid::Uuid::now_v7().simple()
        );
        let runner = Arc::new(Runner {
            pool: pool.clone(),
            cache: Cache::new(conn.clone(), keys.clone()),
            writer,
            queue: run_queue.clone(),
            config: config.clone(),
            providers,
            http,
            toolbox: tools::Toolbox::new(&config.database_url)
                .context("building the tools' HTTP clients")?,
            active: active_runs.clone(),
            worker_id: worker_id.clone(),
            redis: conn.clone(),
            keys: keys.clone(),
            runs: runs.clone(),
            draining: shutdown.clone(),
        });
        tracker.spawn(
            active_runs
                .clone()
                .listen(client.clone(), keys.clone(), stopped.clone()),
        );
        tracker.spawn(active_runs.clone().poll(pool.clone(), stopped.clone()));
        let leadership = match &config.sweeper_leader {
            SweeperLeader::Postgres => Leadership::Everyone,
            SweeperLeader::Kubernetes(lease) => {
                let client = leader::cluster_client().await?;
                let (leadership, elector) =
                    Elector::new(client, lease.clone(), &worker_id).start(stopped.clone());
                tracker.spawn(elector);
                leadership
            }
        };
        tracker.spawn(
            active_runs
                .clone()
                .renew(pool.clone(), worker_id, stopped.clone()),
        );
        tracker.spawn(drain(
            shutdown.clone(),
            runs,
            active_runs,
            config.shutdown_grace,
            stopped.clone(),
        ));

        tracker.spawn(consume(
            client.clone(),
            conn,
            keys,
            runner,
            shutdown.clone(),
        ));
        tracker.spawn(sweep(pool, run_queue, leadership, stopped));
        tracker.close();
        Ok(Self { tracker })
    }

    /// Wait for every task to end (after the shutdown token was cancelled).
    pub async fn wait(self) {
        self.tracker.wait().await;
    }
}

/// Spend one ticket of the queue: take the best-ranked ready run, if any,
/// and execute it.
async fn handle(job: RunJob, runner: Data<Arc<Runner>>) -> Result<(), BoxDynError> {
    if runner.draining.is_cancelled() {
        // Not spent: the queue hands the ticket to another worker.
        return Err("the worker is shutting down".into());
    }
    // The run lives on the worker's own tracker, so that shutting the
    // queue consumer down does not cut it short; the drain decides.
    let runner = Arc::clone(&runner);
    let ticket = job.run_id;
    let run = runner
        .runs
        .clone()
        .spawn(async move { runner.execute(job).await });
    match run.await {
        Ok(result) => result.map_err(|error| {
            tracing::error!(%ticket, error = format!("{error:#}"), "run could not be executed");
            error.into()
        }),
        Err(error) => Err(error.into()),
    }
}

/// On shutdown: let the runs in progress finish within `grace`, then give
/// the rest back to the queue for other workers to continue at once; then
/// end the background loops.
async fn drain(
    shutdown: CancellationToken,
    runs: TaskTracker,
    active: active::ActiveRuns,
    grace: Duration,
    stopped: CancellationToken,
) {
    shutdown.cancelled().await;
    runs.close();
    if tokio::time::timeout(grace, runs.wait()).await.is_err() {
        let released = active.release_all();
        tracing::warn!(
            runs = released,
            grace_secs = grace.as_secs(),
            "grace period over; releasing the runs still in progress"
        );
        runs.wait().await;
    }
    stopped.cancel();
}

/// Run the apalis worker, restarting it if its stream ever ends while not
/// shutting down (apalis-redis stops a worker on some Redis errors).
async fn consume(
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    keys: Keys,
    runner: Arc<Runner>,
    shutdown: CancellationToken,
) {
    let (first_tx, _) = mpsc::channel(1);
    let wake = Arc::new(Mutex::new(first_tx));
    // Ends at shutdown; stopped outright (it may be connecting) once the
    // consuming is over.
    let mut listener = JoinSet::new();
    listener.spawn(listen_for_wakeups(
        client,
        keys.run_queue_wake(),
        wake.clone(),
        shutdown.clone(),
    ));
    let concurrency = runner.config.worker_concurrency;
    while !shutdown.is_cancelled() {
        let name = format!("switchyard-worker-{}", uuid::Uuid::now_v7().simple());
        // Each incarnation of the apalis worker gets its own wake-up channel.
        let (wake_tx, wake_rx) = mpsc::channel(1);
        *wake.lock().unwrap_or_else(|e| e.into_inner()) = wake_tx;
        let wakeups = ReceiverStream::new(wake_rx);
        let strategy = Strategy::new().stream(wakeups).interval(POLL_BACKSTOP);
        let backend = RedisStorage::<RunJob, _>::new(keys.apalis_conn(conn.clone()))
            .with_config(queue::apalis_config(&keys).batch_size(concurrency.min(32)))
            .poll_with_strategy(strategy);
        let worker = WorkerBuilder::new(name.clone())
            .backend(backend)
            .concurrency(concurrency)
            .data(runner.clone())
            .build(handle);
        tracing::info!(worker = %name, concurrency, "worker consuming runs");
        let stop = shutdown.clone();
        let result = worker.run_until(async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        if let Err(error) = result.await {
            tracing::error!(%error, "worker stopped");
        }
        if !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    listener.shutdown().await;
}

/// Turn the queue's wake-up messages into a stream of `()` for the poller;
/// resubscribes after a lost connection.
async fn listen_for_wakeups(
    client: redis::Client,
    channel: String,
    wake: Arc<Mutex<mpsc::Sender<()>>>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(mut pubsub) => {
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            // A full channel already holds a wake-up: nothing is lost.
                            Some(_) => {
                                let _ = wake.lock().unwrap_or_else(|e| e.into_inner()).try_send(());
                            }
                            None => break,
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot subscribe to queue wake-ups; polling meanwhile")
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Take back runs whose worker was lost (while `leadership` allows), and
/// enqueue runs stored while Redis was unreachable, or whose turn came.
async fn sweep(pool: PgPool, queue: RunQueue, leadership: Leadership, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if leadership.is_leader() {
            match db::runs::requeue_expired(&pool).await {
                Ok(lost) => {
                    switchyard_common::metrics::METRICS
                        .sweeper_recoveries
                        .inc_by(lost.len() as u64);
                    for run_id in lost {
                        tracing::warn!(run.id = %run_id, "run's worker was lost; queued again");
                        queue.enqueue(&pool, RunJob::new(run_id)).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "taking back lost runs failed"),
            }
        }
        // Every worker does this part: the runs being pushed stay locked
        // (others skip them), so sweeping at once never pushes a run twice.
        match queue::sweep_unenqueued(&pool, &queue).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "enqueued stored runs"),
            Err(error) => tracing::warn!(%error, "sweeping stored runs failed"),
        }
    }
}
