//! Routes: which upstream and policy a request's host and path get, and path normalisation for public paths.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Access, Upstream};

/// How a route matches the request host (compared without port, lower-case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `grafana.example.com`
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com` (not `example.com` itself). Holds `.example.com`.
    Wildcard(String),
    /// `*`: any host (the default route).
    Any,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = s.strip_prefix("*.") {
            crate::auth::address::parse_domain(rest)
                .map_err(|_| format!("`*.{rest}` is not a wildcard domain"))?;
            return Ok(HostPattern::Wildcard(format!(".{rest}")));
        }
        // Exact hosts may be IPs or single labels (localhost) too; only reject what cannot be a host.
        if s.is_empty()
            || !s.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || b == b'.'
                    || b == b'-'
                    || b == b':'
                    || b == b'['
                    || b == b']'
            })
        {
            return Err(format!("`{s}` is not a host name"));
        }
        Ok(HostPattern::Exact(s))
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Higher is more specific: exact > longer wildcard > shorter wildcard > any.
    fn rank(&self) -> usize {
        match self {
            HostPattern::Exact(_) => usize::MAX,
            HostPattern::Wildcard(s) => s.len(),
            HostPattern::Any => 0,
        }
    }
}

/// A public path rule: exact (`/healthz`) or prefix (`/static/`, any entry ending in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicPath {
    Exact(String),
    Prefix(String),
}

impl PublicPath {
    pub fn parse(s: &str) -> Result<PublicPath, String> {
        if !s.starts_with('/') {
            return Err(format!("`{s}` must start with /"));
        }
        let n = normalize_path(s).ok_or_else(|| format!("`{s}` is not a clean path"))?;
        if n != s && !(s.ends_with('/') && n == s.trim_end_matches('/')) {
            return Err(format!("`{s}` is not normalised (write `{n}`)"));
        }
        Ok(if s.ends_with('/') {
            PublicPath::Prefix(s.to_string())
        } else {
            PublicPath::Exact(s.to_string())
        })
    }

    fn matches(&self, normalized: &str) -> bool {
        match self {
            PublicPath::Exact(p) => normalized == p,
            PublicPath::Prefix(p) => {
                normalized.starts_with(p.as_str()) || normalized == p.trim_end_matches('/')
            }
        }
    }
}

/// Normalises a request path the way a careful upstream would read it: decodes `%2e`-style escapes of
/// unreserved characters, collapses `//`, resolves `.` and `..`. Returns `None` for paths that
/// hide separators (`%2f`, `%5c`, `\`), NULs or invalid escapes: those are never public.
pub fn normalize_path(path: &str) -> Option<String> {
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        if c == '%' {
            let hex = rest.get(1..3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                decoded.push(v as char);
            } else if matches!(v, b'/' | b'\\' | 0) || v < 0x20 {
                return None;
            } else {
                decoded.push('%');
                decoded.push_str(&hex.to_ascii_uppercase());
            }
            rest = &rest[3..];
            continue;
        }
        if c == '\\' || c.is_control() {
            return None;
        }
        decoded.push(c);
        rest = &rest[c.len_utf8()..];
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut n = String::with_capacity(decoded.len());
    for s in &out {
        n.push('/');
        n.push_str(s);
    }
    if n.is_empty() || (decoded.ends_with('/') && !out.is_empty()) {
        n.push('/');
    }
    Some(n)
}

/// Traffic counters of one route (kept across reloads by route name).
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Responses by status class: 1xx … 5xx.
    pub by_class: [AtomicU64; 5],
    /// Upstream latency histogram counts per [`LATENCY_BUCKETS`] bound (cumulative at render time).
    pub latency: [AtomicU64; LATENCY_BUCKETS.len()],
    pub latency_count: AtomicU64,
    pub latency_sum_us: AtomicU64,
}

/// Upper bounds of the upstream latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

impl RouteStats {
    pub fn status(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Relaxed);
    }

    pub fn upstream_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.latency[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// One app behind the gateway.
#[derive(Debug, Clone)]
pub struct Route {
    /// Display name for logs and metrics: `host` + path prefix.
    pub name: String,
    pub host: HostPattern,
    pub path_prefix: String,
    pub upstream: Upstream,
    pub access: Arc<Access>,
    /// No sign-in at all for this route.
    pub public: bool,
    /// `None`: idle timeout disabled for this route.
    pub idle_timeout: Option<Duration>,
    pub public_paths: Vec<PublicPath>,
    pub stats: Arc<RouteStats>,
}

impl Route {
    /// Whether `path` (raw, as received) is public on this route.
    pub fn is_public_path(&self, path: &str) -> bool {
        if self.public {
            return true;
        }
        if self.public_paths.is_empty() {
            return false;
        }
        match normalize_path(path) {
            Some(n) => self.public_paths.iter().any(|p| p.matches(&n)),
            None => false,
        }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        self.host.matches(host) && prefix_matches(&self.path_prefix, path)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let p = prefix.trim_end_matches('/');
    path == p || path.starts_with(&format!("{p}/"))
}

/// Strips the port from a Host header value and lower-cases it.
pub fn host_without_port(host: &str) -> String {
    let h = host.trim();
    let h = if h.starts_with('[') {
        h.split_once(']')
            .map(|(a, _)| format!("{a}]"))
            .unwrap_or_else(|| h.to_string())
    } else {
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(a, _)| a.to_string())
            .unwrap_or_else(|| h.to_string())
    };
    h.to_ascii_lowercase()
}

/// Sorts routes most specific first so the first match wins.
pub fn sort_routes(routes: &mut [Route]) {
    routes.sort_by(|a, b| {
        b.host
            .rank()
            .cmp(&a.host.rank())
            .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
    });
}

/// The route for a host (with or without port) and raw path.
pub fn find<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    // The one-upstream shorthand matches everything: skip the string work on the hot path.
    if let [only] = routes {
        if only.host == HostPattern::Any && only.path_prefix == "/" {
            return Some(only);
        }
    }
    let host = host_without_port(host);
    let npath = normalize_path(path).unwrap_or_else(|| path.to_string());
    routes.iter().find(|r| r.matches(&host, &npath))
}

/// Every address any route (or the global policy) allows: who may receive a sign-in mail.
pub fn any_allows(global: &Access, routes: &[Route], email: &str) -> bool {
    global.allows(email) || routes.iter().any(|r| !r.public && r.access.allows(email))
}

/// Routes that repeat another route's host and prefix (config validation).
pub fn duplicates(routes: &[Route]) -> Vec<String> {
    let mut seen = HashSet::new();
    routes
        .iter()
        .filter(|r| !seen.insert((r.host.clone(), r.path_prefix.clone())))
        .map(|r| r.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_paths() {
        assert_eq!(normalize_path("/a//b/./c/../d").as_deref(), Some("/a/b/d"));
        assert_eq!(
            normalize_path("/static/%2e%2e/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(normalize_path("/static/..%2fadmin"), None);
        assert_eq!(normalize_path("/static\\..\\admin"), None);
        assert_eq!(normalize_path("/../../etc").as_deref(), Some("/etc"));
        assert_eq!(normalize_path("/x/").as_deref(), Some("/x/"));
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(normalize_path("/%zz"), None);
        assert_eq!(normalize_path("/a%20b").as_deref(), Some("/a%20b"));
        assert_eq!(
            normalize_path("/é/🍕").as_deref(),
            Some("/é/🍕"),
            "UTF-8 kept as is"
        );
        assert_eq!(
            normalize_path("/é")
                .and_then(|n| normalize_path(&n))
                .as_deref(),
            Some("/é")
        );
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(
            host_without_port("Grafana.Example.com:8443"),
            "grafana.example.com"
        );
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        let w = HostPattern::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(HostPattern::parse("bad host").is_err());
    }

    #[test]
    fn public_paths_cannot_be_climbed_out_of() {
        let r = Route {
            name: "t".into(),
            host: HostPattern::Any,
            path_prefix: "/".into(),
            upstream: Upstream::Whoami,
            access: Arc::new(Access::default()),
            public: false,
            idle_timeout: None,
            public_paths: vec![
                PublicPath::parse("/static/").unwrap(),
                PublicPath::parse("/healthz").unwrap(),
            ],
            stats: Arc::default(),
        };
        assert!(r.is_public_path("/static/app.js"));
        assert!(r.is_public_path("/static"));
        assert!(r.is_public_path("/healthz"));
        assert!(!r.is_public_path("/healthz/x"));
        assert!(!r.is_public_path("/static/../admin"));
        assert!(!r.is_public_path("/static/%2e%2e/admin"));
        assert!(!r.is_public_path("/static/..%2fadmin"));
        assert!(!r.is_public_path("//static/../admin"));
        assert!(!r.is_public_path("/admin"));
        assert!(!r.is_public_path("/staticx"));
    }
}
