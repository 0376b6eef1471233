//! `/health`, `/ready`, `/openapi.json` and `/docs`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, description = "Up")))]
pub async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// PostgreSQL and Redis are reachable. With Redis down the API still
/// serves (reads from PostgreSQL, runs stored and enqueued when Redis is
/// back): `status` is then `degraded`; with PostgreSQL down, `unavailable`.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Ready"),
              (status = 503, description = "A dependency is unreachable: `degraded` (Redis) or `unavailable` (PostgreSQL)")))]
pub async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    let timeout = std::time::Duration::from_secs(2);
    let postgres = tokio::time::timeout(timeout, sqlx::query("select 1").execute(&app.pool))
        .await
        .is_ok_and(|r| r.is_ok());
    let mut conn = app.redis.clone();
    let redis = tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn))
        .await
        .is_ok_and(|r| r.is_ok());
    let check = |ok: bool| if ok { "ok" } else { "unavailable" };
    let overall = match (postgres, redis) {
        (true, true) => "ok",
        (true, false) => "degraded",
        (false, _) => "unavailable",
    };
    let body = json!({
        "status": overall,
        "postgres": check(postgres),
        "redis": check(redis),
    });
    let status = if postgres && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}
