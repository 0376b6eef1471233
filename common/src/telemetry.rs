//! Logging and tracing.
//!
//! - Logs: `RUST_LOG` filters (default `info`); `SWITCHYARD_LOG_FORMAT=json`
//!   writes one JSON object per line with the spans it was written in; when
//!   traces are exported, the request's and the run's spans carry the
//!   `trace_id`.
//! - Traces: exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//!   set (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or
//!   `http/json`; `OTEL_SERVICE_NAME` names the process), and not at all
//!   otherwise. The W3C trace context crosses the queue in the job payload
//!   ([`inject`] / [`adopt`]) and reaches providers as `traceparent`.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,apalis=warn,apalis_core=warn";

/// Keeps the trace exporter; [`Telemetry::shutdown`] sends what is left.
#[must_use = "traces are flushed by Telemetry::shutdown"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export the spans still buffered; call before the process exits.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Install the global subscriber for `service` (the process's role).
pub fn init(service: &str) -> Telemetry {
    install(DEFAULT_FILTER, Some(service))
}

/// Install the global subscriber with `default` as the filter when
/// `RUST_LOG` is not set, without trace export. Safe to call more than once
/// (tests).
pub fn init_with_default(default: &str) {
    install(default, None).shutdown();
}

fn install(default: &str, service: Option<&str>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let provider = match (service, endpoint) {
        (Some(service), Some(endpoint)) => match tracer_provider(service) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("trace export to {endpoint} is off: {error}");
                None
            }
        },
        _ => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchyard"))
            .with_filter(EnvFilter::new(
                "info,sqlx=off,apalis=off,apalis_core=off,h2=off,hyper=off",
            ))
    });
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let fmt = if json {
        // The span list carries the root span's `trace_id` (the request's
        // or the run's) into every line written under it.
        fmt.json()
            .with_current_span(false)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init();
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    Telemetry { provider }
}

fn tracer_provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let service =
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| format!("switchyard-{service}"));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// A W3C trace context as carried between processes: `traceparent`, and
/// `tracestate` if any.
pub type TraceContext = HashMap<String, String>;

/// The W3C trace context of the current span; empty when traces are not
/// exported.
pub fn inject() -> TraceContext {
    let mut carrier = HashMap::new();
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
    }
    carrier
}

/// Make `span` a child of the trace context in `carrier` (from [`inject`]
/// in another process, or an incoming request's headers), and record the
/// trace id in the span's `trace_id` field, when it declares one, for the
/// logs. Call before the span is first entered.
pub fn adopt(span: &tracing::Span, carrier: &TraceContext) {
    if !carrier.is_empty() {
        let parent = TraceContextPropagator::new().extract(carrier);
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
    }
}

/// The current trace and span ids as hex, for logs and errors.
pub fn current_ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}
