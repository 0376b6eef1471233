//! Per-user limits, from the catalog's `[limits]` table:
//!
//! ```toml
//! [limits]                     # everyone
//! requests_per_minute = 120    # API requests
//! messages_per_day = 500       # user messages in any rolling 24 hours
//! active_runs = 4              # queued and in-progress runs at once
//! tokens_per_day = 200000      # input + output tokens of runs started this UTC day
//! open_streams = 8             # event streams open at once
//! most_urgent_priority = 3     # runs may ask for priority 3 to 10, not 1 or 2
//!
//! [limits.roles.admin]         # holders of a role: its figures replace the above
//! requests_per_minute = 1200
//! ```
//!
//! A limit left out is not enforced, except `open_streams`, which is
//! [`DEFAULT_OPEN_STREAMS`] unless set: an open stream holds a connection
//! and memory, and a request that waits for a run's answer on the server
//! counts as one. A user with several roles gets, for each limit, the most
//! generous figure among their roles that set it (for
//! `most_urgent_priority`, the lowest).

use std::collections::BTreeMap;

use serde::Deserialize;

/// One set of figures; `None` is "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub messages_per_day: Option<u32>,
    pub active_runs: Option<u32>,
    pub tokens_per_day: Option<u64>,
    pub open_streams: Option<u32>,
    /// The most urgent priority a run may ask for (1 to 10): the urgent
    /// end of the queue is kept for the roles that set a lower figure.
    pub most_urgent_priority: Option<u8>,
}

/// Event streams (and waiting requests) a user may hold open when
/// `[limits]` does not say.
pub const DEFAULT_OPEN_STREAMS: u32 = 100;

/// The figures for everyone and for each role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitPolicy {
    pub everyone: Limits,
    pub roles: BTreeMap<String, Limits>,
}

impl Default for LimitPolicy {
    /// No limit but the default stream limit.
    fn default() -> Self {
        Self {
            everyone: Limits {
                open_streams: Some(DEFAULT_OPEN_STREAMS),
                ..Limits::default()
            },
            roles: BTreeMap::new(),
        }
    }
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    requests_per_minute: Option<u32>,
    messages_per_day: Option<u32>,
    active_runs: Option<u32>,
    tokens_per_day: Option<u64>,
    open_streams: Option<u32>,
    most_urgent_priority: Option<u8>,
    #[serde(default)]
    roles: BTreeMap<String, Limits>,
}

impl Limits {
    fn is_zero_anywhere(&self) -> bool {
        [
            self.requests_per_minute.map(u64::from),
            self.messages_per_day.map(u64::from),
            self.active_runs.map(u64::from),
            self.tokens_per_day,
            self.open_streams.map(u64::from),
        ]
        .contains(&Some(0))
            || self
                .most_urgent_priority
                .is_some_and(|p| !(1..=10).contains(&p))
    }
}

impl LimitPolicy {
    pub(super) fn from_file(file: LimitsFile) -> Result<Self, String> {
        let everyone = Limits {
            requests_per_minute: file.requests_per_minute,
            messages_per_day: file.messages_per_day,
            active_runs: file.active_runs,
            tokens_per_day: file.tokens_per_day,
            open_streams: file.open_streams.or(Some(DEFAULT_OPEN_STREAMS)),
            most_urgent_priority: file.most_urgent_priority,
        };
        if everyone.is_zero_anywhere() {
            return Err(
                "[limits]: a limit must be at least 1, and a priority 1 to 10 \
                 (leave it out for no limit)"
                    .into(),
            );
        }
        if let Some((role, _)) = file.roles.iter().find(|(_, l)| l.is_zero_anywhere()) {
            return Err(format!(
                "[limits.roles.{role}]: a limit must be at least 1, and a priority 1 to 10 \
                 (leave it out for no limit)"
            ));
        }
        Ok(Self {
            everyone,
            roles: file.roles,
        })
    }

    /// No limit is set anywhere but the default stream limit.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// The figures that apply to a holder of `roles`.
    pub fn for_roles(&self, roles: &[String]) -> Limits {
        let held: Vec<&Limits> = roles.iter().filter_map(|r| self.roles.get(r)).collect();
        fn pick<T: Ord + Copy>(
            held: &[&Limits],
            everyone: Option<T>,
            field: fn(&Limits) -> Option<T>,
        ) -> Option<T> {
            held.iter().filter_map(|l| field(l)).max().or(everyone)
        }
        let e = &self.everyone;
        Limits {
            requests_per_minute: pick(&held, e.requests_per_minute, |l| l.requests_per_minute),
            messages_per_day: pick(&held, e.messages_per_day, |l| l.messages_per_day),
            active_runs: pick(&held, e.active_runs, |l| l.active_runs),
            tokens_per_day: pick(&held, e.tokens_per_day, |l| l.tokens_per_day),
            open_streams: pick(&held, e.open_streams, |l| l.open_streams),
            most_urgent_priority: held
                .iter()
                .filter_map(|l| l.most_urgent_priority)
                .min()
                .or(e.most_urgent_priority),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<LimitPolicy, String> {
        let file: LimitsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        LimitPolicy::from_file(file)
    }

    #[test]
    fn roles_replace_the_figures_they_set_and_the_most_generous_role_wins() {
        let policy = policy(
            "requests_per_minute = 60\nactive_runs = 2\n\
             [roles.admin]\nrequests_per_minute = 600\n\
             [roles.premium]\nrequests_per_minute = 120\ntokens_per_day = 1000\n",
        )
        .unwrap();
        let user = policy.for_roles(&[]);
        assert_eq!(user.requests_per_minute, Some(60));
        assert_eq!(user.tokens_per_day, None);
        let both = policy.for_roles(&["premium".into(), "admin".into()]);
        assert_eq!(both.requests_per_minute, Some(600));
        assert_eq!(
            both.active_runs,
            Some(2),
            "a figure no role sets stays the default"
        );
        assert_eq!(both.tokens_per_day, Some(1000));
        assert!(!policy.is_unlimited());
        assert!(LimitPolicy::default().is_unlimited());
        assert_eq!(user.open_streams, Some(DEFAULT_OPEN_STREAMS));
        assert_eq!(
            LimitPolicy::default().for_roles(&[]).open_streams,
            Some(DEFAULT_OPEN_STREAMS),
            "streams are limited even without [limits]"
        );
    }

    #[test]
    fn zero_and_unknown_limits_are_refused() {
        assert!(
            policy("active_runs = 0")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            policy("[roles.x]\nopen_streams = 0")
                .unwrap_err()
                .contains("roles.x")
        );
        assert!(policy("requests_per_hour = 5").is_err());
    }

    #[test]
    fn the_most_urgent_priority_is_1_to_10_and_the_lowest_role_figure_wins() {
        for bad in ["0", "11"] {
            assert!(
                policy(&format!("most_urgent_priority = {bad}")).is_err(),
                "{bad}"
            );
        }
        let policy = policy(
            "most_urgent_priority = 4\n[roles.ops]\nmost_urgent_priority = 2\n\
             [roles.vip]\nmost_urgent_priority = 3\n[roles.other]\nopen_streams = 1\n",
        )
        .unwrap();
        let roles = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(policy.for_roles(&roles(&[])).most_urgent_priority, Some(4));
        assert_eq!(
            policy
                .for_roles(&roles(&["vip", "ops"]))
                .most_urgent_priority,
            Some(2)
        );
        assert_eq!(
            policy.for_roles(&roles(&["other"])).most_urgent_priority,
            Some(4)
        );
    }
}
