//! Header hygiene for forwarding: drop hop-by-hop headers, strip client-sent identity, remove our credentials, inject identity.

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
