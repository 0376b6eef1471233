//! Hosts and addresses: which IP addresses are public, and the host
//! patterns of allow-lists (`api.example.com`, `*.example.com`, an IP
//! address), shared by the catalog's checks and the worker's outbound
//! requests.

mod address;

use std::net::IpAddr;

pub use address::non_public;

/// Whether `pattern` is an allow-list entry: an ASCII host name, `*.` and
/// a host name, or an IP address (IPv6 with or without brackets).
pub fn is_host_pattern(pattern: &str) -> bool {
    if ip_literal(pattern).is_some() {
        return true;
    }
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `host` (as a URL parser normalises it: lower case, IPv6 in
/// brackets) is allowed by the allow-list entry `pattern`: the same name,
/// the same address, or a subdomain of a `*.` pattern's parent (not the
/// parent itself).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    if let (Some(wanted), Some(ip)) = (ip_literal(pattern), ip_literal(host)) {
        return wanted == ip;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .to_ascii_lowercase()
            .strip_suffix(&parent.to_ascii_lowercase())
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|subdomain| !subdomain.is_empty()),
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// Whether every host the entry `inner` allows is allowed by `outer`:
/// `*.example.com` covers `api.example.com` and `*.eu.example.com`.
pub fn pattern_covers(outer: &str, inner: &str) -> bool {
    match inner.strip_prefix("*.") {
        // Every subdomain of `parent` is one of `outer` only if `outer` is
        // a wildcard over `parent` or over one of its parents.
        Some(parent) => outer.strip_prefix("*.").is_some_and(|outer_parent| {
            let parent = parent.strip_suffix('.').unwrap_or(parent);
            let outer_parent = outer_parent.strip_suffix('.').unwrap_or(outer_parent);
            parent.eq_ignore_ascii_case(outer_parent) || host_matches(outer, parent)
        }),
        None => host_matches(outer, inner),
    }
}

/// The IP address `host` spells, if it is one (`[…]` around IPv6 allowed).
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries_match_exactly_or_by_subdomain() {
        assert!(host_matches("api.example.com", "api.example.com"));
        assert!(host_matches("API.Example.com", "api.example.com"));
        assert!(host_matches("api.example.com.", "api.example.com"));
        assert!(!host_matches("api.example.com", "example.com"));
        assert!(!host_matches("example.com", "api.example.com"));
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(host_matches("::1", "[::1]"));
        assert!(host_matches("[::1]", "[0:0::1]"));
        assert!(!host_matches("127.0.0.1", "[::ffff:7f00:1]"));
        assert!(!host_matches("127.0.0.1", "localhost"));
    }

    #[test]
    fn wildcards_cover_their_subdomains_and_narrower_wildcards() {
        assert!(pattern_covers("api.example.com", "API.example.com"));
        assert!(pattern_covers("*.example.com", "api.example.com"));
        assert!(pattern_covers("*.example.com", "*.example.com"));
        assert!(pattern_covers("*.example.com", "*.eu.example.com"));
        assert!(!pattern_covers("*.example.com", "example.com"));
        assert!(!pattern_covers("*.example.com", "*.com"));
        assert!(!pattern_covers("*.eu.example.com", "*.example.com"));
        assert!(!pattern_covers("api.example.com", "*.example.com"));
        assert!(!pattern_covers("*.example.com", "*.badexample.com"));
        assert!(pattern_covers("10.0.0.1", "10.0.0.1"));
        assert!(!pattern_covers("*.example.com", "10.0.0.1"));
    }

    #[test]
    fn patterns_are_names_wildcards_or_addresses() {
        for good in [
            "api.example.com",
            "*.example.com",
            "10.0.0.1",
            "[::1]",
            "::1",
        ] {
            assert!(is_host_pattern(good), "{good}");
        }
        for bad in [
            "",
            "*",
            "https://x.com",
            "x.com:443",
            "x.com/path",
            "*.",
            "a..b",
        ] {
            assert!(!is_host_pattern(bad), "{bad}");
        }
    }
}
