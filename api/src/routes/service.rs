//! `/health`, `/ready` and `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// `/health` and `/ready`, and `/metrics` unless it has a listener of its
/// own (`SWITCHYARD_METRICS_LISTEN`): then the public port does not serve
/// it, so that an ingress routing `/` to the API cannot expose it.
pub fn router(with_metrics: bool) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready));
    match with_metrics {
        true => router.routes(routes!(metrics)),
        false => router,
    }
}

/// What the metrics listener serves: `/metrics` and `/health`.
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/health", axum::routing::get(health))
        .with_state(state)
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, description = "Up")))]
pub async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Whether this replica can serve. With Redis down it still does (reads
/// from PostgreSQL, runs stored and enqueued when Redis is back): `200`
/// with `status: degraded`, so that a load balancer keeps sending traffic.
/// With PostgreSQL down, `503` with `status: unavailable`.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Ready: `ok`, or `degraded` with Redis unreachable"),
              (status = 503, description = "PostgreSQL is unreachable: `unavailable`")))]
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
    let status = if postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Prometheus metrics of this process (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, content_type = "application/openmetrics-text", description = "The metrics")))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    use switchyard_common::metrics::{CONTENT_TYPE, METRICS};
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        METRICS.render(Some(&app.pool)).await,
    )
}
