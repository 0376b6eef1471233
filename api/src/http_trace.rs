//! One span per routed HTTP request, at `info` so that it is exported, named
//! `METHOD /route/{template}`: the root of the trace of everything the
//! request causes, down to the worker's run and the provider's HTTP calls. A
//! request that carries a W3C `traceparent` continues the caller's trace.

use axum::extract::{MatchedPath, Request};
use switchyard_common::telemetry::{self, TraceContext};
use tracing::Span;

/// The headers of the W3C trace context.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The request's span (for `TraceLayer::make_span_with`, as a route layer:
/// the route is matched by then).
pub fn make_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let carrier: TraceContext = TRACE_HEADERS
        .iter()
        .filter_map(|&name| {
            let value = request.headers().get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    telemetry::adopt(&span, &carrier);
    span
}

/// Record the status the current request answered with on its span.
pub fn record_status(status: u16) {
    Span::current().record("http.response.status_code", status);
}
