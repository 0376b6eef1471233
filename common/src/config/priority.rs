//! How priorities order the queue: `SWITCHYARD_PRIORITY_AGING_SECS`.
//!
//! A queued run's rank is its creation time plus `(priority − 1) × aging`;
//! workers take the lowest rank first (see `db::runs::claim`). So a run of
//! priority `p` is overtaken by runs of priority 1 created up to
//! `(p − 1) × aging` after it, never by later ones: the least urgent run
//! waits at most `9 × aging` longer than an urgent one, and runs of equal
//! priority keep their order.

use std::time::Duration;

use super::ConfigError;

/// The variable's name.
const NAME: &str = "SWITCHYARD_PRIORITY_AGING_SECS";
/// Its default: a priority-10 run gives way to urgent runs for 9 minutes.
pub const DEFAULT_PRIORITY_AGING: Duration = Duration::from_secs(60);
/// The longest accepted step (a day): beyond it a run of priority 10 could
/// wait more than a week behind a steady stream of urgent ones.
const MAX_SECS: f64 = 86_400.0;

/// Read `SWITCHYARD_PRIORITY_AGING_SECS`: seconds (fractions allowed),
/// more than 0 and at most a day.
pub(super) fn priority_aging(
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Duration, ConfigError> {
    let Some(raw) = lookup(NAME).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_PRIORITY_AGING);
    };
    let invalid = |problem: String| ConfigError::Invalid {
        name: NAME,
        value: raw.clone(),
        problem,
    };
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|e: std::num::ParseFloatError| invalid(format!("not a number of seconds: {e}")))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= MAX_SECS) {
        return Err(invalid(format!(
            "must be more than 0 and at most {MAX_SECS} seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: Option<&str>) -> Result<Duration, ConfigError> {
        let value = value.map(str::to_owned);
        priority_aging(&|name| {
            assert_eq!(name, NAME);
            value.clone()
        })
    }

    #[test]
    fn the_default_is_a_minute_and_fractions_are_accepted() {
        assert_eq!(read(None).unwrap(), Duration::from_secs(60));
        assert_eq!(read(Some("")).unwrap(), Duration::from_secs(60));
        assert_eq!(read(Some("0.25")).unwrap(), Duration::from_millis(250));
        assert_eq!(read(Some("300")).unwrap(), Duration::from_secs(300));
    }

    #[test]
    fn bad_values_name_the_variable_and_the_problem() {
        for bad in ["0", "-1", "abc", "NaN", "inf", "86401", "1e9"] {
            let message = read(Some(bad)).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("{NAME}={bad:?} is invalid: ")),
                "{bad}: {message}"
            );
        }
        let message = read(Some("abc")).unwrap_err().to_string();
        assert!(message.contains("not a number of seconds"), "{message}");
        let message = read(Some("0")).unwrap_err().to_string();
        assert!(message.contains("more than 0"), "{message}");
    }
}
