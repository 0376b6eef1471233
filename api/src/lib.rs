//! The Switchyard HTTP API: a stateless axum service over PostgreSQL and
//! Redis. The contract is `API.md`; `/openapi.json` describes it.
//!
//! # Layout
//!
//! - [`state`]: the shared [`AppState`].
//! - [`auth`]: who the caller is ([`auth::CurrentUser`]), checked in front of
//!   every `/v1` route.
//! - [`limits`]: per-user limits kept in Redis.
//! - [`error`]: [`error::ApiError`], answered in the contract's error shape.
//! - [`extract`]: extractors whose rejections use that shape too.
//! - [`routes`]: one module per resource.
//! - [`openapi`]: the OpenAPI document, generated from the same route
//!   registrations as the router, so a route cannot be missing from it.

pub mod auth;
pub mod compat;
pub mod cors;
pub mod error;
pub mod extract;
mod http_trace;
pub mod limits;
pub mod openapi;
pub mod routes;
mod server;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use state::AppState;

use crate::error::ApiError;

/// Request bodies larger than this are refused with `payload_too_large`.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most headers a request may carry, and their total size (names and values).
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Every route with its OpenAPI description: the `/v1` routes and the
/// compatible surfaces behind authentication, the service routes open. The router and the document
/// come from this one registration.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(routes::me::router())
        .merge(routes::agents::router())
        .merge(routes::threads::router())
        .merge(routes::runs::router())
        .merge(routes::events::router())
        .merge(compat::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(v1)
        .merge(routes::service::router(
            state.config.metrics_listen.is_none(),
        ))
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let cors = std::sync::Arc::new(state.config.cors.clone());
    let (router, doc) = routes(&state).split_for_parts();
    router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .route_layer(middleware::from_fn(record_http))
        .route_layer(TraceLayer::new_for_http().make_span_with(http_trace::make_span))
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
        .layer(middleware::from_fn(bound_headers))
        // Around everything else, so that every answer a page may get (a
        // refusal for its headers' size included) carries the CORS headers;
        // the layer answers preflights itself, so the refusal of other
        // origins' preflights comes before it.
        .layer(cors::layer(cors.clone()))
        .layer(middleware::from_fn(move |request, next| {
            cors::refuse_other_origins(cors.clone(), request, next)
        }))
        .with_state(state)
}

/// Count and time every routed request by its route's template.
async fn record_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    http_trace::record_status(response.status().as_u16());
    let labels = switchyard_common::metrics::HttpLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    let metrics = &switchyard_common::metrics::METRICS;
    metrics.http_requests.get_or_create(&labels).inc();
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Refuse requests whose headers exceed [`MAX_HEADERS`] or
/// [`MAX_HEADER_BYTES`], before anything reads them.
async fn bound_headers(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge(format!(
            "request headers are limited to {MAX_HEADERS} headers and {} KiB in all",
            MAX_HEADER_BYTES / 1024
        ))
        .into_response();
    }
    next.run(request).await
}

/// Serve the API on `listener` until `shutdown` is cancelled; open event
/// streams are closed then so that clients reconnect elsewhere.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let tasks = state.tasks.clone();
    let header_timeout = state.config.header_timeout;
    if let Some(address) = state.config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(address).await?;
        tracing::info!(%address, "API metrics at /metrics");
        let (router, shutdown) = (
            routes::service::metrics_router(state.clone()),
            shutdown.clone(),
        );
        tasks.spawn(server::run(metrics, router, header_timeout, shutdown));
    }
    server::run(listener, router(state), header_timeout, shutdown).await;
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
    Ok(())
}
