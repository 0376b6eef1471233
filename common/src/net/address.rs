//! Which IP addresses are public, i.e. safe for a model-directed request
//! to reach: everything else (loopback, private networks, link-local and
//! its cloud metadata services, CGNAT, multicast, documentation and
//! reserved ranges, and IPv6 forms embedding such an IPv4 address) would
//! let a prompt reach the worker's own network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of non-public address `ip` is; `None` for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "an unspecified (0.0.0.0/8)",
        (127, ..) => "a loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "a private",
        (100, 64..=127, _) => "a shared (carrier-grade NAT)",
        (169, 254, _) => "a link-local",
        (192, 0, 0) => "an IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation",
        (192, 88, 99) => "a 6to4 relay",
        (198, 18..=19, _) => "a benchmarking",
        (224..=239, ..) => "a multicast",
        (240.., ..) => "a reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match ip.segments() {
        [0, 0, 0, 0, 0, 0, 0, 0] => Some("an unspecified"),
        [0, 0, 0, 0, 0, 0, 0, 1] => Some("a loopback"),
        // NAT64 (RFC 6052) and 6to4 (RFC 3056) reach the IPv4 address inside.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] | [0x2002, high, low, ..] => {
            non_public_v4(embedded(high, low))
        }
        [0x2001, 0x0db8, ..] => Some("a documentation"),
        // 2001::/23: Teredo, benchmarking, ORCHID and other special purposes.
        [0x2001, second, ..] if second < 0x0200 => Some("a special-purpose"),
        [first, ..] if first & 0xfe00 == 0xfc00 => Some("a unique local (private)"),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some("a link-local"),
        [first, ..] if first & 0xff00 == 0xff00 => Some("a multicast"),
        // Only 2000::/3 is global unicast; the rest is reserved or
        // deprecated (IPv4-compatible ::/96, site-local fec0::/10, …).
        [first, ..] if first & 0xe000 != 0x2000 => Some("a reserved"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(address: &str) -> Option<&'static str> {
        non_public(address.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.1.1",
            "192.0.1.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(address), None, "{address}");
        }
    }

    #[test]
    fn non_public_addresses_are_named() {
        for (address, expected) in [
            ("0.0.0.0", "an unspecified (0.0.0.0/8)"),
            ("127.0.0.1", "a loopback"),
            ("127.255.1.2", "a loopback"),
            ("10.0.0.1", "a private"),
            ("172.16.0.1", "a private"),
            ("172.31.255.255", "a private"),
            ("192.168.1.1", "a private"),
            ("100.64.0.1", "a shared (carrier-grade NAT)"),
            ("100.127.255.255", "a shared (carrier-grade NAT)"),
            ("169.254.169.254", "a link-local"),
            ("192.0.0.170", "an IETF protocol"),
            ("192.0.2.1", "a documentation"),
            ("198.18.0.1", "a benchmarking"),
            ("224.0.0.1", "a multicast"),
            ("255.255.255.255", "a reserved"),
            ("::", "an unspecified"),
            ("::1", "a loopback"),
            ("::ffff:127.0.0.1", "a loopback"),
            ("::ffff:169.254.169.254", "a link-local"),
            ("::ffff:10.1.2.3", "a private"),
            ("::127.0.0.1", "a reserved"),
            ("64:ff9b::a00:1", "a private"),
            ("64:ff9b::7f00:1", "a loopback"),
            ("2002:a9fe:a9fe::", "a link-local"),
            ("2001:db8::1", "a documentation"),
            ("2001::1", "a special-purpose"),
            ("fc00::1", "a unique local (private)"),
            ("fd12:3456::1", "a unique local (private)"),
            ("fe80::1", "a link-local"),
            ("febf::1", "a link-local"),
            ("fec0::1", "a reserved"),
            ("ff02::1", "a multicast"),
        ] {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
    }
}
