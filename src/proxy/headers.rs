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

/// Removes proxy headers in any case or `_` spelling: all of them from untrusted peers, and the
/// ones no proxy in front of us should send (`X-Original-URL`, `X-Rewrite-URL`, …) from trusted ones.
pub fn strip_proxy_headers(headers: &mut HeaderMap, trusted: bool) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str().as_bytes();
            PROXY_NAMES.iter().any(|p| same_name(n, p.as_bytes()))
                && !(trusted
                    && n.iter().all(|b| *b != b'_')
                    && TRUSTED_FAMILY.iter().any(|p| same_name(n, p.as_bytes())))
        })
        .cloned()
        .collect();
    for k in doomed {
        headers.remove(&k);
    }
}

/// One RFC 7239 `Forwarded` element: `for=…;proto=…;host=…` (IPv6 and ports quoted, §6).
pub fn forwarded_element(ip: std::net::IpAddr, proto: &str, host: &str) -> String {
    let mut s = String::with_capacity(24 + host.len());
    push_forwarded_element(&mut s, ip, proto, host);
    s
}

/// [`forwarded_element`] appended to `s`.
pub fn push_forwarded_element(s: &mut String, ip: std::net::IpAddr, proto: &str, host: &str) {
    s.push_str("for=");
    match ip {
        std::net::IpAddr::V4(v4) => push_ipv4(s, v4),
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(s, "\"[{v6}]\"");
        }
    }
    s.push_str(";proto=");
    s.push_str(proto);
    if host.is_empty() {
        return;
    }
    s.push_str(";host=");
    if host.contains(':') {
        s.push('"');
        s.push_str(host);
        s.push('"');
    } else {
        s.push_str(host);
    }
}

/// An IPv4 address in dotted decimal, without the formatting machinery (hot path).
pub fn push_ipv4(s: &mut String, ip: std::net::Ipv4Addr) {
    for (i, o) in ip.octets().into_iter().enumerate() {
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

/// An IP address as `Display` prints it (IPv4 without the formatting machinery).
pub fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => push_ipv4(s, v4),
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
        if let Some(i) = hop_index(k.as_str()) {
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
            for token in v.as_bytes().split(|b| *b == b',') {
                if let Ok(name) = std::str::from_utf8(token.trim_ascii()) {
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
fn hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
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

fn is_identity_name(name: &[u8], configured: &[&HeaderName]) -> bool {
    configured
        .iter()
        .any(|c| same_name(name, c.as_str().as_bytes()))
        || IDENTITY_NAMES.iter().any(|n| same_name(name, n.as_bytes()))
        || IDENTITY_PREFIXES
            .iter()
            .any(|p| name.len() >= p.len() && same_name(&name[..p.len()], p.as_bytes()))
}

/// Removes every header that is, or spells like, an identity header.
pub fn strip_identity(headers: &mut HeaderMap, configured: &[&HeaderName]) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_identity_name(k.as_str().as_bytes(), configured))
        .cloned()
        .collect();
    for k in doomed {
        headers.remove(&k);
    }
}

/// Removes our session cookie from `Cookie` (other cookies pass) and a bearer `Authorization`
/// that carried our session token.
pub fn strip_credentials(headers: &mut HeaderMap, cookie_name: &str, bearer_used: bool) {
    if bearer_used {
        headers.remove(header::AUTHORIZATION);
    }
    // Hot path: most requests either carry no cookie of ours (bearer clients) or carry it once;
    // only rebuild the header when our name appears at all, or when there are several `Cookie`
    // fields (HTTP/2 clients split them; an HTTP/1.1 upstream expects one, RFC 9113 §8.2.3).
    let ours = headers.get_all(header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(cookie_name.len())
            .any(|w| w == cookie_name.as_bytes())
    });
    if !ours && headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    // The usual case: one `Cookie` header holding only our cookie.
    let mut values = headers.get_all(header::COOKIE).iter();
    if let (Some(only), None) = (values.next(), values.next()) {
        let b = only.as_bytes();
        if b.starts_with(cookie_name.as_bytes())
            && b.get(cookie_name.len()) == Some(&b'=')
            && !b.contains(&b';')
        {
            headers.remove(header::COOKIE);
            return;
        }
    }
    // Rebuilt from the raw bytes: an app's cookie that is not ASCII text passes too.
    let mut kept: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split(|b| *b == b'=').next().unwrap_or(pair);
            if name.trim_ascii() != cookie_name.as_bytes() {
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair);
            }
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Whether a comma-separated header (`Connection`, …) lists `token`, case-insensitively. The
/// raw bytes are split, so a non-ASCII element does not hide its ASCII neighbours.
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A header value that takes over `s`'s buffer (no copy); `None` if it is not a valid value.
pub fn owned_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// Sets exactly one value for an identity header (a `HeaderValue` clone shares its bytes, so
/// one value can go into several headers).
pub fn inject(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue) {
    headers.insert(name.clone(), value);
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
            assert_eq!(hop_index(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_index("x-keep"), None);
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
        }
        for n in 0..=255u8 {
            let ip = std::net::Ipv4Addr::new(n, 0, n, 9);
            let mut s = String::new();
            push_ipv4(&mut s, ip);
            assert_eq!(s, ip.to_string());
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
    fn identity_spellings_are_stripped() {
        let email = HeaderName::from_static("x-forwarded-email");
        let custom = HeaderName::from_static("x-my-user");
        let mut h = map(&[
            ("X-Forwarded-Email", "evil@example.com"),
            ("x_forwarded_email", "evil@example.com"),
            ("X_MY_USER", "evil"),
            ("remote_user", "evil"),
            ("Remote-Email", "evil"),
            ("x-auth-request-email", "evil"),
            ("X-Auth-Request-Groups", "admins"),
            ("x-portcullis-jwt-assertion", "forged"),
            ("accept", "*/*"),
        ]);
        strip_identity(&mut h, &[&email, &custom]);
        assert_eq!(h.len(), 1, "{h:?}");
        inject(&mut h, &email, HeaderValue::from_static("a@example.com"));
        assert_eq!(h.get_all("x-forwarded-email").iter().count(), 1);
    }

    #[test]
    fn proxy_headers_by_trust() {
        let all = [
            ("Forwarded", "for=1.1.1.1"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("x_forwarded_for", "1.1.1.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("X-Forwarded-Port", "1"),
            ("X-Forwarded-Prefix", "/x"),
            ("X-Forwarded-Server", "x"),
            ("X-Forwarded-Uri", "/x"),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URL", "http://a/"),
            ("X-ORIGINAL-HOST", "a"),
            ("X-Rewrite-Url", "/x"),
            ("X-Real-IP", "1.1.1.1"),
            ("x_real_ip", "1.1.1.1"),
            ("X-Host", "a"),
            ("accept", "*/*"),
        ];
        let mut h = map(&all);
        strip_proxy_headers(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&all);
        strip_proxy_headers(&mut h, true);
        let mut kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                "accept",
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-forwarded-prefix",
                "x-forwarded-proto",
                "x-real-ip"
            ]
        );
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
    fn forwarded_elements() {
        assert_eq!(
            forwarded_element("1.2.3.4".parse().unwrap(), "http", "a.com"),
            "for=1.2.3.4;proto=http;host=a.com"
        );
        assert_eq!(
            forwarded_element("::1".parse().unwrap(), "https", "a.com:8443"),
            "for=\"[::1]\";proto=https;host=\"a.com:8443\""
        );
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
    fn only_our_cookie_and_bearer_are_removed() {
        let mut h = map(&[
            ("cookie", "a=1; portcullis_session=tok; b=2"),
            ("cookie", "portcullis_session=other"),
            ("authorization", "Bearer tok"),
        ]);
        strip_credentials(&mut h, "portcullis_session", true);
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        assert!(!h.contains_key("authorization"));
        let mut h = map(&[
            ("cookie", "portcullis_session=tok"),
            ("authorization", "Basic x"),
        ]);
        strip_credentials(&mut h, "portcullis_session", false);
        assert!(!h.contains_key("cookie"));
        assert!(h.contains_key("authorization"));
    }

    /// Whatever shape the `Cookie` headers have, no pair named like our cookie (after trimming)
    /// survives and every other pair does, in order: the one-header fast path included.
    #[test]
    fn our_cookie_never_survives_any_spelling() {
        let name = "portcullis_session";
        let cases: &[&[&str]] = &[
            &["portcullis_session=tok"],
            &["portcullis_session=tok;"],
            &["portcullis_session=tok; a=1"],
            &["a=1;portcullis_session=tok"],
            &[" portcullis_session=tok"],
            &["portcullis_session =tok"],
            &["portcullis_session=\"tok\""],
            &["portcullis_sessionx=keep"],
            &["xportcullis_session=keep"],
            &["portcullis_session"],
            &["portcullis_session=tok", "portcullis_session=two"],
            &["a=1", "portcullis_session=tok"],
            &["portcullis_session=tok", "b=2"],
            &["portcullis_session=a=b"],
            &["a=1", "b=2"],
            &["a=1;  ;c=3", "portculli\u{f3}_session=x"],
        ];
        for values in cases {
            let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("cookie", *v)).collect();
            let mut h = map(&pairs);
            strip_credentials(&mut h, name, false);
            let want: Vec<String> = values
                .iter()
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .filter(|p| p.split_once('=').map_or(*p, |(n, _)| n).trim() != name)
                .map(str::to_string)
                .collect();
            let got: Vec<String> = h
                .get_all("cookie")
                .iter()
                .flat_map(|v| {
                    String::from_utf8(v.as_bytes().to_vec())
                        .unwrap()
                        .split("; ")
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .filter(|p| !p.is_empty())
                .collect();
            assert_eq!(got, want, "{values:?}");
            // Several fields (HTTP/2 crumbs) always reach an HTTP/1.1 upstream as one.
            assert!(h.get_all("cookie").iter().count() <= 1, "{values:?}");
        }
    }
}
