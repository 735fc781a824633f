//! Who may go where: safe redirect targets, same-origin checks for forms, browser-navigation detection.

use http::{header, HeaderMap, Method};
use url::Url;

use crate::config::Config;

/// Longest redirect target kept; longer ones fall back to `/`.
const MAX_TARGET: usize = 4096;

fn suspicious(s: &str) -> bool {
    s.bytes()
        .any(|b| b < 0x20 || b == 0x7f || b == b'\\' || b == b' ' || !b.is_ascii())
}

fn control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Decodes percent-escapes (up to three layers) and reports whether any layer hides a trick that
/// a browser or the url parser might act on: a leading `//`, a backslash in the part before the
/// query, or control characters. Ordinary escapes (`%20`, `%C3%A9`) are fine.
fn hides_tricks(s: &str) -> bool {
    let mut cur = s.to_string();
    for _ in 0..3 {
        let dec = percent_encoding::percent_decode_str(&cur)
            .decode_utf8_lossy()
            .into_owned();
        if dec == cur {
            return false;
        }
        let before_query = dec.split(['?', '#']).next().unwrap_or("");
        if control(&dec) || dec.starts_with("//") || before_query.contains('\\') {
            return true;
        }
        cur = dec;
    }
    // Still changing after three layers: nobody needs that.
    true
}

/// Whether `host` is one the gateway serves: the public_url host, or cookie_domain and its subdomains.
pub fn serves_host(cfg: &Config, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if cfg
        .public_url
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(&host))
    {
        return true;
    }
    match &cfg.session.cookie_domain {
        Some(d) => host == *d || host.ends_with(&format!(".{d}")),
        None => false,
    }
}

/// Validates a post-login redirect target. Returns an absolute URL on an origin the gateway
/// serves, or the public root when the input is empty, malformed or points anywhere else.
pub fn safe_redirect(cfg: &Config, input: &str) -> String {
    let fallback = cfg.public_link("/");
    checked_redirect(cfg, input).unwrap_or(fallback)
}

fn checked_redirect(cfg: &Config, input: &str) -> Option<String> {
    if input.is_empty() || input.len() > MAX_TARGET || suspicious(input) || hides_tricks(input) {
        return None;
    }
    let public = &cfg.public_url;
    let url = if input.starts_with('/') {
        if input.starts_with("//") {
            return None;
        }
        let joined = public.join(input).ok()?;
        if joined.origin() != public.origin() {
            return None;
        }
        joined
    } else {
        let u = Url::parse(input).ok()?;
        if !matches!(u.scheme(), "http" | "https") {
            return None;
        }
        if !u.username().is_empty() || u.password().is_some() {
            return None;
        }
        // Never downgrade an https deployment to http.
        if public.scheme() == "https" && u.scheme() != "https" {
            return None;
        }
        let host = match u.host()? {
            url::Host::Domain(d) => d.to_string(),
            // An IP host is only fine when it is exactly the public origin (local demos).
            _ if u.origin() == public.origin() => u.host_str()?.to_string(),
            _ => return None,
        };
        if u.origin() != public.origin() && !serves_host(cfg, &host) {
            return None;
        }
        u
    };
    // Gateway endpoints are no place to land after sign-in, except the session pages.
    if url.path().starts_with("/.auth/")
        && !matches!(url.path(), "/.auth/sessions" | "/.auth/admin")
    {
        return None;
    }
    let mut url = url;
    url.set_fragment(None);
    Some(url.to_string())
}

/// Whether a state-changing form POST comes from the gateway's own pages: from `public_url`'s
/// origin, or from the origin the request is addressed to (a gateway page such as `whoami` or
/// `/.auth/sessions` served on an app host posts to that host). Browsers tell in one of three
/// ways, read in this order:
///
/// 1. `Sec-Fetch-Site`, which browsers send to secure origins and pages cannot set:
///    `same-origin` (or `none`, user-initiated) passes; `same-site` (another app under
///    `cookie_domain`) and `cross-site` are refused. It also vouches for `Origin: null`, which
///    browsers send for same-origin posts from a `no-referrer` page.
/// 2. `Origin`, sent with every POST by current browsers, and on plain http the only signal
///    (no `Sec-Fetch-Site` there): it must be one of the two origins above; `null` is refused.
///    On an https deployment an `http://` origin is refused too.
/// 3. `Referer` (old browsers): the same check on its origin.
///
/// Requests without any of them (curl, scripts: not a browser a page could drive) pass.
pub fn same_origin(cfg: &Config, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    if let Some(o) = headers.get(header::ORIGIN) {
        return o.to_str().is_ok_and(|o| own_origin(cfg, headers, o));
    }
    if let Some(r) = headers.get(header::REFERER) {
        return r
            .to_str()
            .ok()
            .and_then(|r| Url::parse(r).ok())
            .is_some_and(|u| own_origin(cfg, headers, &u.origin().ascii_serialization()));
    }
    true
}

/// Whether `origin` (serialised, `null` never matches) is public_url's origin or the origin of
/// the request itself (its `Host`, with an https scheme, or http on an http deployment).
fn own_origin(cfg: &Config, headers: &HeaderMap, origin: &str) -> bool {
    if origin.eq_ignore_ascii_case(&cfg.public_origin()) {
        return true;
    }
    let Ok(u) = Url::parse(origin) else {
        return false;
    };
    let scheme_ok = match u.scheme() {
        "https" => true,
        "http" => cfg.public_url.scheme() == "http",
        _ => false,
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    if !scheme_ok || host.is_empty() || host.contains(['/', '@', '?', '#', '\\']) {
        return false;
    }
    // The same URL parser reads both, so default ports and case compare equal.
    Url::parse(&format!("{}://{host}/", u.scheme()))
        .is_ok_and(|own| own.origin() == u.origin() && u.origin().is_tuple())
}

/// Where the answer to a sign-in form sends the browser. A page's `form-action 'self'` also
/// governs the redirect that answers its form (Chromium, Firefox and Safari all enforce it), so a
/// target on another origin than public_url (an app host under `cookie_domain`) is reached
/// through `/.auth/continue` on the form's own origin, which goes on by GET.
pub fn after_form(cfg: &Config, target: &str) -> String {
    match Url::parse(target) {
        Ok(u) if u.origin() == cfg.public_url.origin() => target.to_string(),
        _ => {
            let to: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
            format!("/.auth/continue?to={to}")
        }
    }
}

/// A top-level browser navigation (gets a login redirect) rather than an API call (gets 401).
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    const SEC_FETCH_MODE: http::HeaderName = http::HeaderName::from_static("sec-fetch-mode");
    if let Some(mode) = headers.get(SEC_FETCH_MODE) {
        return mode.as_bytes() == b"navigate";
    }
    (method == Method::GET || method == Method::HEAD)
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(public: &str, cookie_domain: Option<&str>) -> Config {
        let cd = cookie_domain
            .map(|d| format!("session: {{ cookie_domain: \"{d}\" }}\n"))
            .unwrap_or_default();
        Config::parse(
            &format!("public_url: {public}\nupstream: builtin:whoami\naccess: {{ allowed_domains: [example.com] }}\n{cd}"),
            Path::new("t.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn keeps_same_origin_targets() {
        let c = cfg("https://auth.example.com", Some(".example.com"));
        assert_eq!(
            safe_redirect(&c, "/app?x=1"),
            "https://auth.example.com/app?x=1"
        );
        assert_eq!(
            safe_redirect(&c, "https://grafana.example.com/d/1"),
            "https://grafana.example.com/d/1"
        );
        assert_eq!(
            safe_redirect(&c, "https://example.com/"),
            "https://example.com/"
        );
        assert_eq!(
            safe_redirect(&c, "https://auth.example.com/a#frag"),
            "https://auth.example.com/a"
        );
    }

    #[test]
    fn rejects_every_trick() {
        let c = cfg("https://auth.example.com", Some(".example.com"));
        let root = "https://auth.example.com/";
        let bad = [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "https://example.com.evil.com/",
            "https://evilexample.com/",
            "http://grafana.example.com/",
            "javascript:alert(1)",
            "data:text/html,x",
            "https://user@grafana.example.com/",
            "https://grafana.example.com@evil.com/",
            "/%2f%2fevil.com",
            "%2F%2Fevil.com",
            "/%5cevil.com",
            "/%252f%252fevil.com",
            "/a\r\nLocation: https://evil.com",
            "/a\tb",
            "https://1.2.3.4/",
            "/.auth/logout",
            " https://evil.com",
            "https:evil.com",
            "https://evil.com\\@grafana.example.com",
        ];
        for b in bad {
            assert_eq!(safe_redirect(&c, b), root, "{b:?}");
        }
        let no_cd = cfg("https://auth.example.com", None);
        assert_eq!(safe_redirect(&no_cd, "https://grafana.example.com/"), root);
    }

    #[test]
    fn origin_checks() {
        let c = cfg("https://auth.example.com", None);
        let mut h = HeaderMap::new();
        assert!(same_origin(&c, &h));
        h.insert("origin", "https://auth.example.com".parse().unwrap());
        assert!(same_origin(&c, &h));
        h.insert("origin", "https://evil.com".parse().unwrap());
        assert!(!same_origin(&c, &h));
        h.insert("origin", "null".parse().unwrap());
        assert!(!same_origin(&c, &h));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(
            same_origin(&c, &h),
            "no-referrer pages post Origin: null + Sec-Fetch-Site"
        );
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&c, &h));
        h.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(!same_origin(&c, &h), "a sibling app under cookie_domain");
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&c, &h));
        // Sec-Fetch-Site, when sent, outranks the Origin.
        h.insert("origin", "https://auth.example.com".parse().unwrap());
        assert!(!same_origin(&c, &h));
    }

    /// Plain http on a host name: browsers send no Sec-Fetch-Site there, so Origin decides.
    #[test]
    fn plain_http_origin_checks() {
        let c = cfg("http://auth.apps.example:8080", Some(".apps.example"));
        let post = |origin: Option<&str>, host: &str| {
            let mut h = HeaderMap::new();
            h.insert("host", host.parse().unwrap());
            if let Some(o) = origin {
                h.insert("origin", o.parse().unwrap());
            }
            same_origin(&c, &h)
        };
        // The sign-in pages post to themselves.
        assert!(post(
            Some("http://auth.apps.example:8080"),
            "auth.apps.example:8080"
        ));
        assert!(post(
            Some("http://AUTH.apps.example:8080"),
            "auth.apps.example:8080"
        ));
        // A gateway page on an app host (whoami's sign-out) posts to its own host.
        assert!(post(
            Some("http://jupyter.apps.example:8080"),
            "jupyter.apps.example:8080"
        ));
        assert!(post(Some("http://a.example"), "a.example:80"));
        // Everything else is refused: other sites, sibling apps, other ports, no-referrer pages.
        for (origin, host) in [
            ("http://evil.example", "auth.apps.example:8080"),
            ("http://evil.apps.example:8080", "auth.apps.example:8080"),
            ("http://evil.apps.example:8080", "jupyter.apps.example:8080"),
            (
                "http://jupyter.apps.example:9999",
                "jupyter.apps.example:8080",
            ),
            ("null", "auth.apps.example:8080"),
            ("file://", "auth.apps.example:8080"),
            (
                "http://jupyter.apps.example:8080",
                "jupyter.apps.example:8080@evil",
            ),
        ] {
            assert!(!post(Some(origin), host), "{origin} -> {host}");
        }
        // Referer when there is no Origin.
        let mut h = HeaderMap::new();
        h.insert("host", "auth.apps.example:8080".parse().unwrap());
        h.insert(
            "referer",
            "http://auth.apps.example:8080/.auth/login?rd=x"
                .parse()
                .unwrap(),
        );
        assert!(same_origin(&c, &h));
        h.insert("referer", "http://evil.example/".parse().unwrap());
        assert!(!same_origin(&c, &h));
    }

    #[test]
    fn https_deployments_refuse_http_origins_of_their_own_hosts() {
        let c = cfg("https://auth.example.com", Some(".example.com"));
        let mut h = HeaderMap::new();
        h.insert("host", "grafana.example.com".parse().unwrap());
        h.insert("origin", "https://grafana.example.com".parse().unwrap());
        assert!(same_origin(&c, &h));
        h.insert("origin", "http://grafana.example.com".parse().unwrap());
        assert!(!same_origin(&c, &h));
    }

    #[test]
    fn forms_reach_other_origins_through_the_continue_page() {
        let c = cfg("https://auth.example.com", Some(".example.com"));
        assert_eq!(
            after_form(&c, "https://auth.example.com/x?y=1"),
            "https://auth.example.com/x?y=1"
        );
        assert_eq!(
            after_form(&c, "https://grafana.example.com/d/1?a=b&c=d"),
            "/.auth/continue?to=https%3A%2F%2Fgrafana.example.com%2Fd%2F1%3Fa%3Db%26c%3Dd"
        );
        // What the continue page is given back, it validates again.
        assert_eq!(
            safe_redirect(&c, "https://grafana.example.com/d/1?a=b&c=d"),
            "https://grafana.example.com/d/1?a=b&c=d"
        );
    }

    #[test]
    fn navigation_detection() {
        let mut h = HeaderMap::new();
        h.insert("accept", "text/html,*/*".parse().unwrap());
        assert!(is_navigation(&Method::GET, &h));
        assert!(!is_navigation(&Method::POST, &h));
        h.insert("sec-fetch-mode", "cors".parse().unwrap());
        assert!(!is_navigation(&Method::GET, &h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-mode", "navigate".parse().unwrap());
        assert!(is_navigation(&Method::POST, &h));
    }
}
