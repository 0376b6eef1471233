//! Shared state of the API.

use std::sync::Arc;

use anyhow::Context as _;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use switchyard_common::bus::tail::TailHub;
use switchyard_common::cache::Cache;
use switchyard_common::config::{AuthMethod, Config};
use switchyard_common::db;
use switchyard_common::queue::RunQueue;
use switchyard_common::redis_conn::{self, Keys};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::limits::Limiter;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub cache: Cache,
    pub queue: RunQueue,
    pub tail: TailHub,
    pub config: Arc<Config>,
    /// Tells callers apart.
    pub auth: Arc<Authenticator>,
    /// Per-user limits kept in Redis.
    pub limiter: Limiter,
    /// Background work of requests (SSE relays): awaited on shutdown.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Connect to Redis, set up the authenticators (refusing to start with
    /// none), store the catalog's agents, and start the live event reader.
    pub async fn new(
        config: Arc<Config>,
        pool: PgPool,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = redis_conn::client(&config.redis_url).context("parsing REDIS_URL")?;
        let redis = redis_conn::manager(&client)
            .await
            .context("connecting to Redis")?;
        let keys = Keys::new(&config.redis_prefix);
        let auth = Authenticator::new(
            config.auth.clone(),
            config.catalog.limits.clone(),
            pool.clone(),
            tasks.clone(),
            shutdown.clone(),
        )
        .await?;
        if config.catalog.limits.is_unlimited() && !config.auth.enabled(AuthMethod::Dev) {
            tracing::warn!("no per-user limits are configured ([limits] in SWITCHYARD_CONFIG)");
        }
        db::agents::upsert_catalog(&pool, &config.catalog.agents)
            .await
            .context("storing the catalog's agents")?;
        let tail = TailHub::start(
            client,
            redis.clone(),
            keys.clone(),
            &tasks,
            shutdown.clone(),
        );
        Ok(Self {
            cache: Cache::new(redis.clone(), keys.clone()),
            queue: RunQueue::new(redis.clone(), &keys),
            limiter: Limiter::new(redis.clone(), keys.clone(), tasks.clone(), shutdown.clone()),
            keys,
            pool,
            redis,
            tail,
            config,
            auth: Arc::new(auth),
            tasks,
            shutdown,
        })
    }
}
