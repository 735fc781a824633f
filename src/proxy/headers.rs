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
    let for_ = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    if host.is_empty() {
        format!("for={for_};proto={proto}")
    } else if host.contains(':') {
        format!("for={for_};proto={proto};host=\"{host}\"")
    } else {
        format!("for={for_};proto={proto};host={host}")
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
    // Split the raw bytes: a non-ASCII token must not hide its ASCII neighbours (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
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
    // only rebuild the header when our name appears at all.
    let ours = headers.get_all(header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(cookie_name.len())
            .any(|w| w == cookie_name.as_bytes())
    });
    if !ours {
        return;
    }
    let cookies: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    headers.remove(header::COOKIE);
    let mut kept: Vec<&str> = Vec::new();
    let texts: Vec<String> = cookies
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    for t in &texts {
        for pair in t.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split_once('=').map(|(n, _)| n).unwrap_or(pair);
            if name.trim() != cookie_name {
                kept.push(pair);
            }
        }
    }
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Sets exactly one value for an identity header.
pub fn inject(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
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
        inject(&mut h, &email, "a@example.com");
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
}
