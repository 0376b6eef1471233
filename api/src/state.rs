//! Shared state of the API and the caller's identity.

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use switchyard_common::bus::tail::TailHub;
use switchyard_common::cache::Cache;
use switchyard_common::config::Config;
use switchyard_common::db;
use switchyard_common::domain::UserId;
use switchyard_common::queue::RunQueue;
use switchyard_common::redis_conn::{self, Keys};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub cache: Cache,
    pub queue: RunQueue,
    pub tail: TailHub,
    pub config: Arc<Config>,
    /// The user every request acts as until authentication lands.
    pub local_user: UserId,
    /// Background work of requests (SSE relays): awaited on shutdown.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Connect to Redis, make sure the `local` user and the catalog's agents
    /// exist, and start the live event reader.
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
        let local_user = db::users::ensure(&pool, "local")
            .await
            .context("creating the local user")?;
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
            keys,
            pool,
            redis,
            tail,
            config,
            local_user,
            tasks,
            shutdown,
        })
    }
}

/// The user a request is made as.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser {
    pub id: UserId,
    /// May change what all users share, such as the agents.
    pub is_admin: bool,
}

impl CurrentUser {
    /// `forbidden` unless the user is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this operation is for administrators only".into(),
            ))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Without authentication every request is the development user
        // `local`, who administers their own deployment.
        Ok(Self {
            id: state.local_user,
            is_admin: true,
        })
    }
}

/// The caller, who must be an administrator: extracting it answers anyone
/// else `403 forbidden` before the request body is read.
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require_admin()?;
        Ok(Self(user))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test]
    async fn only_administrators_pass_the_admin_guard() {
        let admin = CurrentUser {
            id: UserId::new(),
            is_admin: true,
        };
        assert!(admin.require_admin().is_ok());

        let user = CurrentUser {
            is_admin: false,
            ..admin
        };
        let response = user
            .require_admin()
            .expect_err("a user who is not an administrator is refused")
            .into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("administrators")),
            "{body}"
        );
    }
}
