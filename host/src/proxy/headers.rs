//! Header hygiene: hop-by-hop removal (RFC 9110 §7.6.1), X-Forwarded-* from the real peer,
//! and per-route header edits.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Headers only the gateway sets: the hop-by-hop ones and those that frame a message (the
/// SDK's `GATEWAY_HEADERS`). A policy that could set `Content-Length` on a response would
/// make hyper announce one length and send another, desynchronising the connection.
pub(crate) fn is_gateway_header(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || name == header::CONTENT_LENGTH
        || name == header::TE
        || name == header::TRAILER
}

/// Joins several `Cookie` fields into one, pairs separated by `; ` (RFC 9113 §8.2.3: an
/// HTTP/2 client sends each cookie as its own field, and an HTTP/1.1 message carries one).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let parts: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&parts.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
///
/// `TE: trailers` is kept (gRPC needs it); other `TE` values are removed. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (WebSocket pass-through).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// Whether `ip` belongs to a trusted proxy network (an IPv4-mapped IPv6 address is taken
/// as the IPv4 address it is).
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client address: the peer, or — from a trusted peer — the right-most untrusted
/// address of X-Forwarded-For. The list is read from the right and only through what the
/// trusted hops wrote: an entry that is not an address (`unknown`, an obfuscated name)
/// ends the walk at the last trusted hop, so that nothing written further left, by the
/// client itself, is taken for it; with every entry trusted, the left-most is the client.
/// `ip:port` and `[ipv6]:port` entries are addresses.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut nearest = peer;
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .rev();
    for entry in entries {
        let Some(ip) = forwarded_address(entry) else {
            return nearest;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// The address of one X-Forwarded-For entry (`ip`, `ip:port`, `[ipv6]`, `[ipv6]:port`).
fn forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry.trim_ascii()).ok()?;
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// Whether `name` is a header an untrusted peer may not assert about the client or the
/// path before the gateway: `Forwarded`, every `X-Forwarded-*` (`-For`, `-Proto`, `-Host`,
/// `-Port`, `-Prefix`, `-Ssl`, `-Scheme`, `-Uri`, …) and the other client-address headers
/// upstreams commonly believe.
fn is_spoofable(name: &HeaderName) -> bool {
    const OTHERS: [&str; 6] = [
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "x-original-forwarded-for",
    ];
    let n = name.as_str();
    n.starts_with("x-forwarded-") || OTHERS.contains(&n)
}

/// Removes what an untrusted peer asserted about the client (see [`is_spoofable`]), before
/// routing and policies see the request: what it says is not believed by anything after.
pub fn strip_spoofable(headers: &mut HeaderMap) {
    // Collecting an empty iterator allocates nothing: most requests carry none.
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_spoofable(n))
        .cloned()
        .collect();
    for n in spoofed {
        headers.remove(n);
    }
}

/// Sets X-Forwarded-For/-Proto/-Host and returns the client address to use for hashing
/// and logging.
///
/// From a trusted peer, incoming values are kept and the peer is appended to
/// X-Forwarded-For; the client is the right-most untrusted address in that list. From any
/// other peer the three are set to what the gateway saw (what that peer sent of them, and
/// of every other header [`strip_spoofable`] names, was removed on arrival).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    scheme: &'static str,
    host: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let peer_str = peer.to_string();
    if is_trusted(peer, trusted) {
        let client = client_ip(peer, headers, trusted);
        let prior: Vec<&str> = headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut all = prior.join(", ");
        if !all.is_empty() {
            all.push_str(", ");
        }
        all.push_str(&peer_str);
        if let Ok(v) = HeaderValue::from_str(&all) {
            headers.insert(&xff, v);
        }
        if !headers.contains_key(&xfp) {
            headers.insert(&xfp, HeaderValue::from_static(scheme));
        }
        if !headers.contains_key(&xfh)
            && let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok())
        {
            headers.insert(&xfh, v);
        }
        client
    } else {
        if let Ok(v) = HeaderValue::from_str(&peer_str) {
            headers.insert(&xff, v);
        }
        headers.insert(&xfp, HeaderValue::from_static(scheme));
        match host.and_then(|h| HeaderValue::from_str(h).ok()) {
            Some(v) => headers.insert(&xfh, v),
            None => headers.remove(&xfh),
        };
        peer
    }
}

/// Compiled header edits: remove, then set, then add.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Removed.
    pub remove: Vec<HeaderName>,
    /// Replaced.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the edits.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n, v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAA"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn several_cookie_fields_become_one() {
        let mut h = map(&[("cookie", "a=1")]);
        h.append("cookie", "b=2".parse().unwrap());
        h.append("cookie", "c=3".parse().unwrap());
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut one);
        assert_eq!(one.get("cookie").unwrap(), "a=1; b=2");
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarded_for() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("x-real-ip", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwardedness", "kept"),
        ]);
        strip_spoofable(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        let client = set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), "http", Some("a"), &[]);
        assert_eq!(client, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }

    #[test]
    fn trusted_peer_appends_and_yields_the_real_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = map(&[("x-forwarded-for", "203.0.113.7, 10.1.1.1")]);
        let client = set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), "http", None, &trusted);
        assert_eq!(client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "203.0.113.7, 10.1.1.1, 10.0.0.9"
        );
    }

    /// A trusted hop's entry that is not an address ends the walk: the client's own
    /// entries further left are not believed. Entries with ports are addresses.
    #[test]
    fn forwarded_for_is_read_from_the_right_up_to_the_first_entry_that_is_no_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (xff, client) in [
            ("198.51.100.5, unknown", "10.0.0.9"),
            ("198.51.100.5, unknown, 10.1.1.1", "10.1.1.1"),
            ("198.51.100.5, 203.0.113.7:5555", "203.0.113.7"),
            ("198.51.100.5, [2001:db8::1]:443", "2001:db8::1"),
            ("198.51.100.5, [2001:db8::2]", "2001:db8::2"),
            ("10.2.2.2, 10.1.1.1", "10.2.2.2"),
        ] {
            let h = map(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(peer, &h, &trusted), ip(client), "{xff}");
        }
        // Several lines are one list, in order.
        let mut h = map(&[("x-forwarded-for", "198.51.100.5")]);
        h.append("x-forwarded-for", "203.0.113.7".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), ip("203.0.113.7"));
    }

    /// On a dual-stack listener an IPv4 proxy arrives as `::ffff:a.b.c.d`; IPv4 trusted
    /// ranges still cover it, and mapped addresses in X-Forwarded-For count as IPv4 ones.
    #[test]
    fn ipv4_mapped_addresses_are_matched_against_ipv4_trusted_ranges() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert!(is_trusted(peer, &trusted));
        let h = map(&[("x-forwarded-for", "203.0.113.7, ::ffff:10.1.1.1")]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
    }
}
