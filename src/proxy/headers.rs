//! Header hygiene for forwarding: drop hop-by-hop headers, strip client-sent identity and proxy headers, remove our credentials, inject identity.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and `Proxy-Connection`).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Header names upstreams commonly trust as identity. A client must never be able to send them.
static IDENTITY_NAMES: [&str; 12] = [
    "remote-user",
    "remote-email",
    "remote-name",
    "remote-groups",
    "x-remote-user",
    "x-remote-email",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-webauth-user",
];

/// Identity header prefixes (oauth2-proxy's `X-Auth-Request-*`, our own `X-Portcullis-*`).
static IDENTITY_PREFIXES: [&str; 2] = ["x-auth-request-", "x-portcullis-"];

/// Proxy headers upstreams use for URLs, client addresses and rewriting. From a peer outside
/// `trusted_proxies` none of them is believed: all are removed and the gateway writes its own.
static PROXY_NAMES: [&str; 17] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-original-url",
    "x-original-method",
    "x-original-host",
    "x-rewrite-url",
    "x-real-ip",
    "x-host",
];

/// The family a trusted proxy is documented to send (RFC 7239 and the de-facto `X-Forwarded-*`
/// set nginx, Caddy and Traefik write). Everything else in [`PROXY_NAMES`] describes another
/// request (forward-auth) or rewrites the URL, and is removed even from trusted peers.
static TRUSTED_FAMILY: [&str; 7] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// How a client-sent header name relates to the proxy headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// Not a proxy header.
    No,
    /// Exactly (lower case, `-`) a name of the family a trusted proxy is documented to send.
    Family,
    /// A proxy header no one may send (or a family name in another spelling, `_` included).
    Other,
}

/// Classifies a (lower-case) header name: proxy headers are recognised in any `_` spelling.
pub fn proxy_header_kind(name: &[u8]) -> ProxyHeader {
    if !PROXY_NAMES.iter().any(|p| same_name(name, p.as_bytes())) {
        ProxyHeader::No
    } else if name.iter().all(|b| *b != b'_')
        && TRUSTED_FAMILY.iter().any(|p| same_name(name, p.as_bytes()))
    {
        ProxyHeader::Family
    } else {
        ProxyHeader::Other
    }
}

/// `n` in decimal digits, written at the end of `buf` (no formatting machinery: hot path).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// 1 to 18 ASCII digits (well below `u64::MAX`), nothing else: a `Content-Length` value.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Appends one `name: value\r\n` field line.
pub fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An IP address as `Display` prints it, appended to `out` (IPv4 without the formatting
/// machinery: hot path).
pub fn push_ip_bytes(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if o >= 100 {
                    out.push(b'0' + o / 100);
                }
                if o >= 10 {
                    out.push(b'0' + o / 10 % 10);
                }
                out.push(b'0' + o % 10);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// An IP address as `Display` prints it (IPv4 without the formatting machinery).
pub fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if o >= 100 {
                    s.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    s.push(char::from(b'0' + o / 10 % 10));
                }
                s.push(char::from(b'0' + o % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(s, "{v6}");
        }
    }
}

/// Drops every upstream `Set-Cookie` that would set one of the gateway's own cookies (session
/// fixation by a compromised or careless app). Names compare exactly, as browsers do.
pub fn drop_our_set_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let ours = |v: &HeaderValue| {
        let b = v.as_bytes();
        let name = b.split(|c| *c == b'=').next().unwrap_or(b).trim_ascii();
        names.iter().any(|n| name == n.as_bytes())
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !ours(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Whether `name` is hop-by-hop by definition.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Hot path (twice per proxied request): one pass over the names present, then removals of
    // just those, instead of a hash lookup per hop-by-hop name.
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop_index(k.as_str().as_bytes()) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // The values are cloned (a shared reference, no copy) so the names they list can be
        // removed by borrowed name: no allocation for the usual `keep-alive`/`close`.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let rest: Vec<HeaderValue> = values.cloned().collect();
        for v in first.iter().chain(&rest) {
            // Split the raw bytes: a non-ASCII token must not hide its ASCII neighbours (RFC 9110 §7.6.1).
            for token in tokens(v.as_bytes()) {
                if let Ok(name) = std::str::from_utf8(token) {
                    headers.remove(name);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The position of a (lower-case) header name in [`HOP_BY_HOP`]. A `match` (compiled to a
/// length switch): searching the table cost ~1,200 instructions more per proxied request
/// (callgrind); `hop_index_matches_the_table` keeps the two in step.
pub fn hop_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"connection" => 0,
        b"keep-alive" => 1,
        b"proxy-connection" => 2,
        b"proxy-authenticate" => 3,
        b"proxy-authorization" => 4,
        b"te" => 5,
        b"trailer" => 6,
        b"transfer-encoding" => 7,
        b"upgrade" => 8,
        _ => return None,
    })
}

/// Header names compare case-insensitively (RFC 9110 §5.1) and CGI-style servers turn both `-`
/// and `_` into `_`, so `_` reads as `-`. `b` is already lower-case with `-`. No allocation.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| norm(*x) == *y)
}

fn norm(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Whether `name` is, or spells like (case, `_`), an identity header: a configured one or one
/// upstreams commonly trust.
pub fn is_identity_name(name: &[u8], configured: &[&HeaderName]) -> bool {
    configured
        .iter()
        .any(|c| same_name(name, c.as_str().as_bytes()))
        || IDENTITY_NAMES.iter().any(|n| same_name(name, n.as_bytes()))
        || IDENTITY_PREFIXES
            .iter()
            .any(|p| name.len() >= p.len() && same_name(&name[..p.len()], p.as_bytes()))
}

/// Whether a comma-separated header (`Connection`, …) lists `token`, case-insensitively. The
/// raw bytes are split, so a non-ASCII element does not hide its ASCII neighbours.
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// The elements of a comma-separated field value, trimmed (empty ones included), as raw bytes.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a `Connection` value names a field besides the usual `keep-alive`, `close` and
/// `upgrade` (the first and last are hop-by-hop fields anyway): only then must each field be
/// checked against it.
pub fn names_fields(connection_value: &[u8]) -> bool {
    tokens(connection_value).any(|t| {
        !t.is_empty()
            && !t.eq_ignore_ascii_case(b"keep-alive")
            && !t.eq_ignore_ascii_case(b"close")
            && !t.eq_ignore_ascii_case(b"upgrade")
    })
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
    fn hop_index_matches_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name.as_str().as_bytes()), Some(i), "{name}");
        }
        assert_eq!(hop_index(b"x-keep"), None);
    }

    #[test]
    fn every_hop_by_hop_name_alone_is_removed() {
        for name in HOP_BY_HOP.iter() {
            let mut h = map(&[(name.as_str(), "x"), ("x-keep", "y")]);
            remove_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} survived");
            assert!(h.contains_key("x-keep"));
        }
    }

    #[test]
    fn ip_text_is_displays() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
            let mut b = Vec::new();
            push_ip_bytes(&mut b, ip);
            assert_eq!(b, ip.to_string().as_bytes());
        }
        for n in 0..=255u8 {
            let ip = std::net::Ipv4Addr::new(n, 0, n, 9);
            let mut s = String::new();
            push_ip(&mut s, ip.into());
            assert_eq!(s, ip.to_string());
            let mut b = Vec::new();
            push_ip_bytes(&mut b, ip.into());
            assert_eq!(b, ip.to_string().as_bytes());
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("x-keep", "y"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn our_set_cookies_are_dropped() {
        let mut h = map(&[
            ("set-cookie", "portcullis_session=evil; Path=/"),
            ("set-cookie", " portcullis_session =evil"),
            ("set-cookie", "portcullis_session_login=x"),
            ("set-cookie", "portcullis_sessionx=kept"),
            ("set-cookie", "app=1"),
        ]);
        drop_our_set_cookies(&mut h, &["portcullis_session", "portcullis_session_login"]);
        let left: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(left, ["portcullis_sessionx=kept", "app=1"]);
    }

    #[test]
    fn listed_tokens_are_found_in_any_spelling() {
        let c = header::CONNECTION;
        for (values, found) in [
            (&["upgrade"][..], true),
            (&["keep-alive, Upgrade"][..], true),
            (&["close", " UPGRADE "][..], true),
            (&["\u{e9}t\u{e9}, upgrade"][..], true),
            (&["upgrades"][..], false),
            (&["up grade"][..], false),
            (&[][..], false),
        ] {
            let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("connection", *v)).collect();
            assert_eq!(
                lists_token(&map(&pairs), &c, "upgrade"),
                found,
                "{values:?}"
            );
        }
    }

    #[test]
    fn proxy_header_kinds() {
        for (name, kind) in [
            ("forwarded", ProxyHeader::Family),
            ("x-forwarded-for", ProxyHeader::Family),
            ("x-real-ip", ProxyHeader::Family),
            ("x_forwarded_for", ProxyHeader::Other),
            ("x_real_ip", ProxyHeader::Other),
            ("x-original-url", ProxyHeader::Other),
            ("x-forwarded-server", ProxyHeader::Other),
            ("x-host", ProxyHeader::Other),
            ("x-forwarded-forx", ProxyHeader::No),
            ("accept", ProxyHeader::No),
        ] {
            assert_eq!(proxy_header_kind(name.as_bytes()), kind, "{name}");
        }
    }

    #[test]
    fn connection_values_that_name_fields() {
        for (value, names) in [
            ("keep-alive", false),
            ("Keep-Alive, close", false),
            ("Upgrade", false),
            ("", false),
            (" , ", false),
            ("keep-alive, X-Secret", true),
            ("cookie", true),
            ("\u{e9}t\u{e9}", true),
        ] {
            assert_eq!(names_fields(value.as_bytes()), names, "{value:?}");
        }
    }
}
