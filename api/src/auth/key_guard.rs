//! What stands between bearer tokens and the `api_keys` table: a token
//! that is not shaped like a Switchyard key, or that was unknown a moment
//! ago, is refused without a query; and unknown keys get a budget of
//! lookups per second, beyond which they are answered `429` until it
//! refills, so that a flood of made-up keys costs the database almost
//! nothing.
//!
//! Keys seen valid recently are always looked up, budget or not: their
//! owners keep working during a flood, and a revoked key is refused at once
//! as before. Each API process keeps its own memory of both.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchyard_common::db::api_keys::KEY_PREFIX;

/// Lookups of keys not seen valid recently, per second, once the burst is
/// spent.
pub const UNKNOWN_LOOKUPS_PER_SEC: f64 = 10.0;
/// Lookups of such keys allowed at once.
pub const UNKNOWN_LOOKUP_BURST: f64 = 100.0;
/// How long a key is remembered as unknown, or as valid.
const REMEMBERED_FOR: Duration = Duration::from_secs(3600);
/// Keys remembered of each kind at most; the oldest half goes when full.
const REMEMBERED_KEYS: usize = 50_000;
/// The hex digits after the prefix of a key `switchyard keys` makes.
const KEY_HEX_DIGITS: usize = 64;

/// What to do with a key before the database is asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Look it up.
    Lookup,
    /// Refuse it: not a key, or unknown a moment ago.
    Unknown,
    /// Refuse it for now: too many unknown keys lately.
    Throttled,
}

#[derive(Default)]
pub struct KeyGuard(Mutex<Memory>);

struct Memory {
    unknown: HashMap<Vec<u8>, Instant>,
    valid: HashMap<Vec<u8>, Instant>,
    budget: f64,
    refilled: Instant,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            unknown: HashMap::new(),
            valid: HashMap::new(),
            budget: UNKNOWN_LOOKUP_BURST,
            refilled: Instant::now(),
        }
    }
}

impl KeyGuard {
    /// Whether `key` (whose hash is `hash`) may be looked up now.
    pub fn before_lookup(&self, key: &str, hash: &[u8]) -> Verdict {
        if !is_key_shaped(key) {
            return Verdict::Unknown;
        }
        let now = Instant::now();
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |seen: Option<&Instant>| seen.is_some_and(|at| now - *at < REMEMBERED_FOR);
        if fresh(memory.valid.get(hash)) {
            return Verdict::Lookup;
        }
        if fresh(memory.unknown.get(hash)) {
            return Verdict::Unknown;
        }
        let elapsed = now - memory.refilled;
        memory.budget = (memory.budget + elapsed.as_secs_f64() * UNKNOWN_LOOKUPS_PER_SEC)
            .min(UNKNOWN_LOOKUP_BURST);
        memory.refilled = now;
        if memory.budget < 1.0 {
            return Verdict::Throttled;
        }
        memory.budget -= 1.0;
        Verdict::Lookup
    }

    /// What the lookup of `hash` found.
    pub fn after_lookup(&self, hash: &[u8], valid: bool) {
        let now = Instant::now();
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Memory {
            valid: valid_keys,
            unknown,
            ..
        } = &mut *memory;
        let (remember, forget) = match valid {
            true => (valid_keys, unknown),
            false => (unknown, valid_keys),
        };
        forget.remove(hash);
        if remember.len() >= REMEMBERED_KEYS {
            let mut ages: Vec<Instant> = remember.values().copied().collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            remember.retain(|_, at| *at > cut);
        }
        remember.insert(hash.to_vec(), now);
    }
}

/// `sy_` and 64 lower-case hex digits, as `switchyard keys create` makes.
fn is_key_shaped(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX).is_some_and(|hex| {
        hex.len() == KEY_HEX_DIGITS && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> String {
        format!("{KEY_PREFIX}{n:064x}")
    }

    #[test]
    fn only_key_shaped_tokens_are_looked_up() {
        let guard = KeyGuard::default();
        for token in [
            "unused",
            "sk-abc",
            "sy_short",
            &key(1).to_uppercase(),
            &format!("{}0", key(1)),
        ] {
            assert_eq!(
                guard.before_lookup(token, token.as_bytes()),
                Verdict::Unknown,
                "{token}"
            );
        }
        assert_eq!(guard.before_lookup(&key(1), b"1"), Verdict::Lookup);
    }

    #[test]
    fn unknown_keys_spend_a_budget_that_valid_ones_do_not_need() {
        let guard = KeyGuard::default();
        let valid = key(0);
        assert_eq!(
            guard.before_lookup(&valid, valid.as_bytes()),
            Verdict::Lookup
        );
        guard.after_lookup(valid.as_bytes(), true);
        let mut throttled = 0;
        for n in 1..=(UNKNOWN_LOOKUP_BURST as u32 + 50) {
            let bad = key(n);
            match guard.before_lookup(&bad, bad.as_bytes()) {
                Verdict::Lookup => guard.after_lookup(bad.as_bytes(), false),
                Verdict::Throttled => throttled += 1,
                Verdict::Unknown => panic!("{bad} was never seen"),
            }
        }
        assert!(throttled >= 45, "{throttled} throttled");
        // Known-bad keys are refused without a lookup, valid ones looked up.
        let first_bad = key(1);
        assert_eq!(
            guard.before_lookup(&first_bad, first_bad.as_bytes()),
            Verdict::Unknown
        );
        assert_eq!(
            guard.before_lookup(&valid, valid.as_bytes()),
            Verdict::Lookup
        );
        // A key found revoked is unknown from then on.
        guard.after_lookup(valid.as_bytes(), false);
        assert_eq!(
            guard.before_lookup(&valid, valid.as_bytes()),
            Verdict::Unknown
        );
    }
}
