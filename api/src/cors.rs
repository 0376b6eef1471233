//! Browser access from other origins (CORS), for front ends served
//! elsewhere than the API (a React dev server on `localhost:3000`, an app
//! on its own domain).
//!
//! The origins come from [`CorsSettings`]. A preflight from an allowed
//! origin is answered on every route, the event streams included; one from
//! any other origin is refused with `403 forbidden` in the contract's
//! shape, which tells whoever debugs it with curl what the browser only
//! hints at. Other requests are never refused for their `Origin`: the
//! browser withholds the response from a page that is not allowed, and the
//! API's own pages (`/docs`) send one too.
//!
//! Request headers are allowed by mirroring the preflight's list: official
//! SDKs send telemetry headers of their own (OpenAI's `x-stainless-*`), and
//! a fixed list would break each new one. What is checked is the origin.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchyard_common::config::{CorsSettings, PREFLIGHT_MAX_AGE};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::error::ApiError;

/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSED: [&str; 6] = [
    "retry-after",
    "www-authenticate",
    "location",
    "x-vercel-ai-ui-message-stream",
    "x-switchyard-run-id",
    "x-switchyard-thread-id",
];

/// The layer that answers preflights and marks responses for allowed origins.
pub fn layer(settings: Arc<CorsSettings>) -> CorsLayer {
    let allowed = settings.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, _: &Parts| {
                origin.to_str().is_ok_and(|origin| allowed.allows(origin))
            },
        ))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list(EXPOSED.map(HeaderName::from_static)))
        .allow_credentials(settings.credentials)
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Refuse a preflight from an origin that is not allowed, before the
/// [`layer`] would answer it without permission.
pub async fn refuse_other_origins(
    settings: Arc<CorsSettings>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let preflight = request.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if let Some(origin) = headers.get(header::ORIGIN).filter(|_| preflight) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !settings.allows(&origin) {
            let advice = match settings.is_on() {
                true => "it is not in SWITCHYARD_CORS_ORIGINS",
                false => "no origin is: SWITCHYARD_CORS_ORIGINS is empty",
            };
            let mut refusal = ApiError::Forbidden(format!(
                "pages of the origin {origin:?} may not call this API ({advice})"
            ))
            .into_response();
            // As the permission would: the answer depends on these.
            refusal.headers_mut().insert(
                header::VARY,
                HeaderValue::from_static(
                    "origin, access-control-request-method, access-control-request-headers",
                ),
            );
            return refusal;
        }
    }
    next.run(request).await
}
