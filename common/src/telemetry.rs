//! Logging: `RUST_LOG` filters (default `info`), `SWITCHYARD_LOG_FORMAT=json`
//! switches to one JSON object per line for log collectors.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call more than once (tests).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,apalis=warn,apalis_core=warn"));
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
