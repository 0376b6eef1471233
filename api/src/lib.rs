//! The Switchyard HTTP API: a stateless axum service over PostgreSQL and
//! Redis. The contract is `API.md`; `/openapi.json` describes it.
//!
//! # Layout
//!
//! - [`state`]: the shared [`AppState`] and the caller's identity.
//! - [`error`]: [`error::ApiError`], answered in the contract's error shape.
//! - [`extract`]: extractors whose rejections use that shape too.
//! - [`routes`]: one module per resource.
//! - [`openapi`]: the generated OpenAPI document.

pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::serve::ListenerExt;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use state::AppState;

use crate::error::ApiError;

/// Request bodies larger than this are refused with `payload_too_large`.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::agents::router())
        .merge(routes::threads::router())
        .merge(routes::runs::router())
        .merge(routes::events::router())
        .merge(routes::service::router())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({
                    "error": {"code": "bad_request", "message": "method not allowed on this route"}
                })),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` is cancelled; open event
/// streams are closed then so that clients reconnect elsewhere.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let tasks = state.tasks.clone();
    // Events are small writes that must leave at once: without TCP_NODELAY
    // Nagle's algorithm holds each one back until the previous is acked.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    Ok(())
}
