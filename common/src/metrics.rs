//! Prometheus metrics of a Switchyard process, served at `/metrics` (the
//! API's port; a worker's `SWITCHYARD_METRICS_LISTEN`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `switchyard_http_requests_total` | counter | `method`, `route`, `status` |
//! | `switchyard_http_request_duration_seconds` | histogram | `method`, `route`, `status` |
//! | `switchyard_sse_streams_active` | gauge | |
//! | `switchyard_runs_created_total` | counter | |
//! | `switchyard_runs_finished_total` | counter | `status` |
//! | `switchyard_runs` | gauge, read from PostgreSQL at each scrape | `status` (`queued`, `in_progress`) |
//! | `switchyard_queue_wait_seconds` | histogram: creation to start of an attempt | |
//! | `switchyard_time_to_first_token_seconds` | histogram: model call to its first token | `provider` |
//! | `switchyard_tokens_per_second` | histogram: output tokens per second of a model call, from its first token | `provider` |
//! | `switchyard_provider_errors_total` | counter | `provider`, `kind` |
//! | `switchyard_sweeper_recoveries_total` | counter: runs of lost workers taken back | |

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderErrorLabels {
    pub provider: String,
    pub kind: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the process.
pub struct Metrics {
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<HttpLabels>,
    pub sse_streams: Gauge,
    pub runs_created: Counter,
    pub runs_finished: Family<StatusLabel, Counter>,
    pub runs: Family<StatusLabel, Gauge>,
    pub queue_wait: Histogram,
    pub time_to_first_token: Histograms<ProviderLabel>,
    pub tokens_per_second: Histograms<ProviderLabel>,
    pub provider_errors: Family<ProviderErrorLabels, Counter>,
    pub sweeper_recoveries: Counter,
    registry: Registry,
}

/// Latency buckets, seconds: 1 ms to about 65 s.
fn latency() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

/// Rate buckets, tokens per second: 1 to about 4000.
fn rate() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 13,
    ))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let metrics = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency),
            sse_streams: Gauge::default(),
            runs_created: Counter::default(),
            runs_finished: Family::default(),
            runs: Family::default(),
            queue_wait: latency(),
            time_to_first_token: Family::new_with_constructor(latency),
            tokens_per_second: Family::new_with_constructor(rate),
            provider_errors: Family::default(),
            sweeper_recoveries: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its headers, for streams)",
            metrics.http_duration.clone(),
        );
        registry.register(
            "sse_streams_active",
            "Event streams open now",
            metrics.sse_streams.clone(),
        );
        registry.register("runs_created", "Runs created", metrics.runs_created.clone());
        registry.register(
            "runs_finished",
            "Runs ended, by final status",
            metrics.runs_finished.clone(),
        );
        registry.register(
            "runs",
            "Active runs by status, from PostgreSQL",
            metrics.runs.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time from a run's creation to the start of an attempt",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from a model call to its first token",
            metrics.time_to_first_token.clone(),
        );
        registry.register(
            "tokens_per_second",
            "Output tokens per second of a model call, from its first token",
            metrics.tokens_per_second.clone(),
        );
        registry.register(
            "provider_errors",
            "Failed model calls, by provider and kind",
            metrics.provider_errors.clone(),
        );
        registry.register(
            "sweeper_recoveries",
            "Runs of lost workers taken back",
            metrics.sweeper_recoveries.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn finished(&self, status: &str) {
        self.runs_finished
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn provider_error(&self, provider: &str, kind: &str) {
        self.provider_errors
            .get_or_create(&ProviderErrorLabels {
                provider: provider.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric; with `pool`, the active-run
    /// gauges are read from PostgreSQL first.
    pub async fn render(&self, pool: Option<&PgPool>) -> String {
        if let Some(pool) = pool {
            match crate::db::runs::active_counts(pool).await {
                Ok(counts) => {
                    for (status, count) in counts {
                        self.runs.get_or_create(&StatusLabel { status }).set(count);
                    }
                }
                Err(error) => tracing::debug!(%error, "counting active runs for /metrics failed"),
            }
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        text
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
