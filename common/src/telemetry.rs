//! Logging: `RUST_LOG` filters (default `info`), `SWITCHYARD_LOG_FORMAT=json`
//! switches to one JSON object per line for log collectors.

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,apalis=warn,apalis_core=warn";

/// Install the global subscriber. Safe to call more than once (tests).
pub fn init() {
    init_with_default(DEFAULT_FILTER);
}

/// Install the global subscriber with `default` as the filter when
/// `RUST_LOG` is not set.
pub fn init_with_default(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
