//! A peer's identity as its transport authenticated it: the names its certificate carries,
//! and the rule that says which node ids those names admit.
//!
//! A node id is the address a node advertises: `host:port` (`127.0.0.1:7001`,
//! `cache-0.cache:7001`, `[::1]:7001`), or in groupcache-compat mode a base URL
//! (`https://10.0.0.5:8080`), whose scheme and path the caller strips first
//! ([`PeerIdentity::admits_base_url`]). A certificate names ids through its subject
//! alternative names:
//!
//! - a URI name `herdcache://ID` ([`PeerName::Id`]) names exactly `ID`, byte for byte;
//! - a DNS name `H` ([`PeerName::Dns`]) names `H` itself and every `H:PORT`; hosts compare
//!   ASCII case-insensitively (DNS is), with no wildcards and no partial matches
//!   (`node-1` does not admit `node-10:7001`);
//! - an IP address `A` ([`PeerName::Ip`]) names `A` itself and every `A:PORT` (`[A]:PORT`
//!   for IPv6), whichever way the id spells the address.
//!
//! `PORT` is one or more ASCII digits, nothing else. Nothing here parses certificates: the
//! runtime's TLS layer extracts the names once the chain verified, and hands them over with
//! [`Input::Accepted`](crate::Input::Accepted) / [`Input::Connected`](crate::Input::Connected).

use alloc::vec::Vec;
use bytes::Bytes;
use core::net::IpAddr;

/// The URI scheme of a name that names exactly one node id.
pub const ID_URI_SCHEME: &str = "herdcache://";

/// One name a certificate carries (see the module docs for what each admits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerName {
    /// A URI name `herdcache://ID`: this exact node id (the bytes after the scheme).
    Id(Bytes),
    /// A DNS name: the host and any `host:port` on it.
    Dns(Bytes),
    /// An IP address: the address and any `address:port` on it.
    Ip(IpAddr),
}

/// The names a peer's certificate carries; [`PeerIdentity::admits`] says whether they name a
/// node id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    names: Vec<PeerName>,
}

impl PeerIdentity {
    /// An identity with these names.
    #[must_use]
    pub fn new(names: Vec<PeerName>) -> Self {
        PeerIdentity { names }
    }

    /// The identity of a certificate whose only name is `herdcache://node_id`.
    #[must_use]
    pub fn for_id(node_id: impl Into<Bytes>) -> Self {
        PeerIdentity { names: alloc::vec![PeerName::Id(node_id.into())] }
    }

    /// Its names.
    #[must_use]
    pub fn names(&self) -> &[PeerName] {
        &self.names
    }

    /// Whether one of the names names `node_id` (the rule in the module docs).
    #[must_use]
    pub fn admits(&self, node_id: &[u8]) -> bool {
        let (host, port_ok) = split_host_port(node_id);
        self.names.iter().any(|name| match name {
            PeerName::Id(id) => id[..] == *node_id,
            PeerName::Dns(dns) => {
                // The whole id as a host, or its host part with a valid port.
                dns.eq_ignore_ascii_case(node_id)
                    // Brackets hold IPv6 addresses only.
                    || (port_ok && node_id.first() != Some(&b'[') && dns.eq_ignore_ascii_case(host))
            }
            PeerName::Ip(ip) => {
                parse_ip(node_id).is_some_and(|id| id == *ip)
                    || (port_ok && parse_ip(host).is_some_and(|id| id == *ip))
            }
        })
    }

    /// [`PeerIdentity::admits`] for a groupcache base URL: the scheme (`https://`,
    /// `http://`) and anything from the first `/` after the authority are stripped first.
    /// The exact URL is admitted by an [`PeerName::Id`] too.
    #[must_use]
    pub fn admits_base_url(&self, base_url: &[u8]) -> bool {
        if self.names.iter().any(|name| matches!(name, PeerName::Id(id) if id[..] == *base_url)) {
            return true;
        }
        self.admits(authority(base_url))
    }
}

/// The authority of a URL (`https://host:port/path` → `host:port`); a string without a
/// scheme is taken as starting with its authority.
#[must_use]
pub fn authority(url: &[u8]) -> &[u8] {
    let rest = url
        .windows(3)
        .position(|window| window == b"://")
        .map_or(url, |at| url.get(at + 3..).unwrap_or_default());
    let end = rest.iter().position(|&byte| byte == b'/').unwrap_or(rest.len());
    rest.get(..end).unwrap_or_default()
}

/// Splits `host:port` (or `[v6]:port`): the host (without brackets) and whether a port of
/// one or more digits followed. Without a valid port, the host is empty.
fn split_host_port(id: &[u8]) -> (&[u8], bool) {
    let Some(colon) = id.iter().rposition(|&byte| byte == b':') else { return (&[], false) };
    let (host, port) = (&id[..colon], &id[colon + 1..]);
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return (&[], false);
    }
    match host {
        [b'[', inner @ .., b']'] => (inner, true),
        // A bare IPv6 address has colons of its own, so `::1:7001` is an address, not
        // `::1` and a port; `[` or `]` alone is no host.
        _ if host.iter().any(|byte| matches!(byte, b':' | b'[' | b']')) => (&[], false),
        _ => (host, true),
    }
}

/// `text` as an IP address, with or without IPv6 brackets.
fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    let text = match text {
        [b'[', inner @ .., b']'] => inner,
        _ => text,
    };
    core::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;
    use alloc::vec;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use proptest::prelude::*;

    fn dns(name: &str) -> PeerIdentity {
        PeerIdentity::new(vec![PeerName::Dns(Bytes::copy_from_slice(name.as_bytes()))])
    }

    fn ip(address: IpAddr) -> PeerIdentity {
        PeerIdentity::new(vec![PeerName::Ip(address)])
    }

    #[test]
    fn a_uri_name_admits_exactly_its_id() {
        let identity = PeerIdentity::for_id(Bytes::from_static(b"127.0.0.1:7001"));
        assert!(identity.admits(b"127.0.0.1:7001"));
        for other in ["127.0.0.1:7002", "127.0.0.1", "127.0.0.1:70011", "127.0.0.1:7001 ", ""] {
            assert!(!identity.admits(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn a_dns_name_admits_the_host_and_any_port_on_it() {
        let identity = dns("cache-0.cache.svc");
        for admitted in ["cache-0.cache.svc", "cache-0.cache.svc:7001", "CACHE-0.cache.SVC:1"] {
            assert!(identity.admits(admitted.as_bytes()), "{admitted}");
        }
        for refused in [
            "cache-0.cache.svc:",
            "cache-0.cache.svc:70a1",
            "cache-0.cache.svc:+7",
            "cache-0.cache.svc.evil:7001",
            "evil.cache-0.cache.svc:7001",
            "cache-0.cache.sv:7001",
            "cache-0.cache.svc:7001:7001",
            "[cache-0.cache.svc]:7001",
            "",
        ] {
            assert!(!identity.admits(refused.as_bytes()), "{refused}");
        }
        assert!(!dns("node-1").admits(b"node-10:7001"), "no partial host match");
    }

    #[test]
    fn an_ip_name_admits_the_address_with_any_port_however_spelled() {
        let v4 = ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(v4.admits(b"127.0.0.1:7001"));
        assert!(v4.admits(b"127.0.0.1"));
        assert!(!v4.admits(b"127.0.0.2:7001"));
        assert!(!v4.admits(b"127.0.0.1:x"));
        assert!(!v4.admits(b"127.0.0.10:7001"));
        let v6 = ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        for admitted in ["[::1]:7001", "[0:0:0:0:0:0:0:1]:7001", "::1", "[::1]"] {
            assert!(v6.admits(admitted.as_bytes()), "{admitted}");
        }
        for refused in ["::1:7001", "[::2]:7001", "[::1]:", "[::1]x:7001"] {
            assert!(!v6.admits(refused.as_bytes()), "{refused}");
        }
    }

    #[test]
    fn no_names_admit_nothing() {
        assert!(!PeerIdentity::default().admits(b"127.0.0.1:7001"));
        assert!(!PeerIdentity::default().admits(b""));
    }

    #[test]
    fn base_urls_are_admitted_by_their_authority() {
        let identity = ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(identity.admits_base_url(b"https://127.0.0.1:8080"));
        assert!(identity.admits_base_url(b"https://127.0.0.1:8080/"));
        assert!(identity.admits_base_url(b"http://127.0.0.1:8080/prefix"));
        assert!(!identity.admits_base_url(b"https://127.0.0.2:8080"));
        assert!(!identity.admits_base_url(b"https://127.0.0.1.evil:8080"));
        let exact = PeerIdentity::for_id(Bytes::from_static(b"https://127.0.0.1:8080"));
        assert!(exact.admits_base_url(b"https://127.0.0.1:8080"));
        assert!(!exact.admits_base_url(b"https://127.0.0.1:8081"));
        assert_eq!(authority(b"https://a:1/b/c"), b"a:1");
        assert_eq!(authority(b"a:1"), b"a:1");
        assert_eq!(authority(b"://"), b"");
    }

    proptest! {
        #[test]
        fn a_dns_name_admits_its_host_with_a_digit_port_and_nothing_longer(
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 0u32..100_000,
            suffix in "[a-z0-9.:-]{1,6}",
        ) {
            let identity = dns(&host);
            let id = format!("{host}:{port}");
            prop_assert!(identity.admits(id.as_bytes()));
            prop_assert!(identity.admits(host.as_bytes()));
            // Anything appended to the host (not a `:digits` port) is another host.
            let longer = format!("{host}{suffix}");
            let is_port = suffix.strip_prefix(':')
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(identity.admits(longer.as_bytes()), is_port);
            let other = format!("x{host}:{port}");
            prop_assert!(!identity.admits(other.as_bytes()));
        }

        #[test]
        fn admits_never_panics_and_an_id_name_is_exact(
            name in proptest::collection::vec(any::<u8>(), 0..24),
            id in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let exact = PeerIdentity::for_id(Bytes::from(name.clone()));
            prop_assert_eq!(exact.admits(&id), name == id);
            let _ = exact.admits_base_url(&id);
            let text = String::from_utf8_lossy(&name).into_owned();
            let _ = dns(&text).admits(&id);
            let _ = ip(IpAddr::V6(Ipv6Addr::LOCALHOST)).admits(&id);
        }

        #[test]
        fn an_ip_name_admits_exactly_its_address(a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), port in any::<u16>()) {
            let identity = ip(IpAddr::from(a));
            let id = format!("{}:{port}", Ipv4Addr::from(b));
            prop_assert_eq!(identity.admits(id.as_bytes()), a == b);
        }
    }
}
