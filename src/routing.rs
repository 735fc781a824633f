//! Routes: which upstream and policy a request's host and path get, and path normalisation for public paths.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::request::{canonicalize, Ambiguity, CanonicalPath};

/// Where authenticated traffic goes.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// An HTTP(S) origin; requests keep their path and query.
    Http { scheme: String, authority: String },
    /// The built-in page that shows who you are and what an upstream would receive.
    Whoami,
}

/// Who may sign in: exact domains (lower-case) and individual canonical addresses.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub allowed_domains: Vec<String>,
    pub allowed_emails: HashSet<String>,
}

impl Access {
    /// Who this block lets in, for `portcullis check`: `@example.com, boss@other.org (+3 more)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .allowed_domains
            .iter()
            .map(|d| format!("anyone @{d}"))
            .collect();
        let mut emails: Vec<&String> = self.allowed_emails.iter().collect();
        emails.sort();
        const SHOWN: usize = 5;
        parts.extend(emails.iter().take(SHOWN).map(|e| e.to_string()));
        if emails.len() > SHOWN {
            parts.push(format!("and {} more address(es)", emails.len() - SHOWN));
        }
        if parts.is_empty() {
            "nobody".into()
        } else {
            parts.join(", ")
        }
    }

    /// Whether a canonical (already parsed, lower-case) address is allowed.
    pub fn allows(&self, canonical_email: &str) -> bool {
        if self.allowed_emails.contains(canonical_email) {
            return true;
        }
        match canonical_email.rsplit_once('@') {
            Some((_, domain)) => self.allowed_domains.iter().any(|d| d == domain),
            None => false,
        }
    }
}

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

impl std::fmt::Display for PublicPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicPath::Exact(p) | PublicPath::Prefix(p) => f.write_str(p),
        }
    }
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

/// The canonical form of a path without ambiguity (see [`crate::request::path`]), or `None` for
/// a path servers read differently (`%2f`, `\\`, NUL, bad or double escapes…): such paths are
/// never public. Config validation and public-path matching use this one function.
pub fn normalize_path(path: &str) -> Option<String> {
    let c = canonicalize(path);
    match c.ambiguity {
        None => Some(c.primary.into_owned()),
        Some(_) => None,
    }
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
    /// Whether a canonical reading of a path is public on this route: the whole route is public,
    /// or the reading equals a public path exactly (case-sensitive: ambiguity resolves to the
    /// stricter rule, so `/Static/x` is not under `/static/`).
    pub fn is_public_path(&self, canonical: &str) -> bool {
        self.public || self.public_paths.iter().any(|p| p.matches(canonical))
    }

    /// Whether the route serves `host` (canonical) and a canonical reading of the path. Prefixes of
    /// restricted routes match case-insensitively (`/ADMIN/x` is under `/admin`: Tomcat and IIS
    /// fold case); a public route's prefix matches only exactly.
    fn matches(&self, host: &str, path: &str, fold: bool) -> bool {
        self.host.matches(host) && prefix_matches(&self.path_prefix, path, fold && !self.public)
    }
}

fn prefix_matches(prefix: &str, path: &str, fold: bool) -> bool {
    if prefix == "/" {
        return true;
    }
    let p = prefix.trim_end_matches('/').as_bytes();
    let b = path.as_bytes();
    if b.len() < p.len() || (b.len() > p.len() && b[p.len()] != b'/') {
        return false;
    }
    if fold {
        b[..p.len()].eq_ignore_ascii_case(p)
    } else {
        &b[..p.len()] == p
    }
}

/// Whether paths that servers read differently are refused (`400`) or forwarded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AmbiguousPaths {
    /// `400` (the default).
    #[default]
    Reject,
    /// Forwarded unchanged, but only to a route with no other route or public path below it
    /// (otherwise still `400`), never public through `public_paths`, and only to a client every
    /// route the path could mean allows.
    Forward,
}

/// What the gateway decided about one request: where it goes and who may pass.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The route of the primary reading: its upstream receives the request.
    pub route: &'a Route,
    /// No session needed: every reading of the path is public.
    pub public: bool,
    /// Further restricted routes other readings of the path (or its exact-case spelling) land on;
    /// a client must be allowed by each of them too.
    pub also: Vec<&'a Route>,
}

impl Decision<'_> {
    /// Whether a signed-in (canonical) address may pass: allowed by every route the request could mean.
    pub fn allows(&self, email: &str) -> bool {
        std::iter::once(self.route)
            .chain(self.also.iter().copied())
            .all(|r| r.public || r.access.allows(email))
    }

    /// The idle timeout of the session check (the forwarded route's).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.route.idle_timeout
    }
}

/// The one routing and public-path decision for a canonical host and path, shared by the proxy
/// and every forward-auth endpoint. `Err` when the path is ambiguous and `mode` refuses it;
/// `Ok(None)` when no route serves the host and path.
///
/// Every reading of the path is judged (primary, `;` kept, generous decoding), with restricted
/// prefixes both folded and exact; the request is public only if all readings are public, and a
/// client must be allowed by every restricted route any reading lands on. So the decision for
/// any spelling is never laxer than the decision for its canonical form.
pub fn decide<'a>(
    routes: &'a [Route],
    host: &str,
    path: &CanonicalPath<'_>,
    mode: AmbiguousPaths,
) -> Result<Option<Decision<'a>>, Ambiguity> {
    if let Some(a) = path.ambiguity {
        if mode == AmbiguousPaths::Reject {
            return Err(a);
        }
    }
    let ambiguous = path.ambiguity.is_some();
    // The one-upstream shorthand matches everything and has no public paths.
    if let [only] = routes {
        if only.host == HostPattern::Any && only.path_prefix == "/" && only.public_paths.is_empty()
        {
            return Ok(Some(Decision {
                route: only,
                public: only.public,
                also: Vec::new(),
            }));
        }
    }
    let primary = path.primary.as_ref();
    let Some(route) = find_reading(routes, host, primary, true) else {
        return Ok(None);
    };
    // An ambiguous path is forwarded only to a route with no other rule below it: which of
    // them it means depends on the upstream's reading.
    if let Some(a) = path.ambiguity {
        let below = routes.iter().any(|r| {
            !std::ptr::eq(r, route)
                && r.host.matches(host)
                && r.path_prefix.len() > route.path_prefix.len()
                && prefix_matches(&route.path_prefix, &r.path_prefix, true)
        });
        if below || !route.public_paths.is_empty() {
            return Err(a);
        }
    }
    let public_reading = |r: &Route, reading: &str| {
        r.public || (!ambiguous && r.public_paths.iter().any(|p| p.matches(reading)))
    };
    let mut public = public_reading(route, primary);
    let mut also: Vec<&Route> = Vec::new();
    for reading in path.readings() {
        for fold in [true, false] {
            let Some(r) = find_reading(routes, host, reading, fold) else {
                // A reading no route serves cannot be called public.
                public = false;
                continue;
            };
            public &= public_reading(r, reading);
            if !r.public && !std::ptr::eq(r, route) && !also.iter().any(|a| std::ptr::eq(*a, r)) {
                also.push(r);
            }
        }
    }
    Ok(Some(Decision {
        route,
        public,
        also,
    }))
}

fn find_reading<'a>(routes: &'a [Route], host: &str, path: &str, fold: bool) -> Option<&'a Route> {
    routes.iter().find(|r| r.matches(host, path, fold))
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

/// The route for a host and raw path (tests and tools; requests go through [`decide`]).
pub fn find<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    let host = crate::request::canonical_authority(host).ok()?;
    let path = canonicalize(path);
    find_reading(routes, &host.host, &path.primary, true)
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
            normalize_path("/é").as_deref(),
            Some("/%C3%A9"),
            "raw UTF-8 and its escapes are one spelling"
        );
        assert_eq!(
            normalize_path("/é")
                .and_then(|n| normalize_path(&n))
                .as_deref(),
            Some("/%C3%A9")
        );
    }

    #[test]
    fn hosts_and_ports() {
        let w = HostPattern::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(HostPattern::parse("bad host").is_err());
    }

    /// Routes with nested restrictive prefixes, public paths and a public catch-all.
    const TABLE_CONFIG: &str = "public_url: https://auth.example.com
access: { allowed_domains: [example.com] }
routes:
  - { host: app.example.com, upstream: 'http://127.0.0.1:1', access: { public: true } }
  - { host: app.example.com, path_prefix: /admin, upstream: 'http://127.0.0.1:2', access: { allowed_emails: [boss@example.com] } }
  - { host: app.example.com, path_prefix: /admin/reports, upstream: 'http://127.0.0.1:3', access: { allowed_emails: [boss@example.com, carol@example.com] } }
  - { host: app.example.com, path_prefix: /team, upstream: 'http://127.0.0.1:4', access: { allowed_domains: [example.com] }, public_paths: [/team/public/, /team/health] }
  - { host: '*', upstream: 'http://127.0.0.1:5', access: { public: true } }
";

    const PEOPLE: [&str; 4] = [
        "boss@example.com",
        "carol@example.com",
        "alice@example.com",
        "eve@other.org",
    ];

    /// The decision as a comparable value: `400`, `404`, `public`, or who may pass.
    fn verdict(cfg: &crate::config::Config, host: &str, path: &str) -> String {
        let Ok(a) = crate::request::canonical_authority(host) else {
            return "400".into();
        };
        let path = canonicalize(path);
        match decide(&cfg.routes, &a.host, &path, cfg.ambiguous_paths) {
            Err(_) => "400".into(),
            Ok(None) => "404".into(),
            Ok(Some(d)) if d.public => "public".into(),
            Ok(Some(d)) => {
                let who: Vec<&str> = PEOPLE.iter().copied().filter(|p| d.allows(p)).collect();
                format!("only {}", who.join(","))
            }
        }
    }

    /// `a` is never laxer than `b`: 400 is strictest; public is laxest; otherwise a subset of people.
    fn not_laxer(a: &str, b: &str) -> bool {
        let set = |v: &str| -> Option<Vec<String>> {
            v.strip_prefix("only ").map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
        };
        match (a, b) {
            ("400", _) | ("404", _) => true,
            (_, "public") => true,
            ("public", _) => false,
            (_, "400") | (_, "404") => false,
            _ => {
                let (sa, sb) = (set(a).unwrap_or_default(), set(b).unwrap_or_default());
                sa.iter().all(|x| sb.contains(x))
            }
        }
    }

    fn table_config(extra: &str) -> crate::config::Config {
        crate::config::Config::parse(
            &format!("{TABLE_CONFIG}{extra}"),
            std::path::Path::new("t.yaml"),
        )
        .unwrap()
    }

    /// (host, raw path, canonical host, canonical path): the decision for each spelling equals the
    /// decision for its canonical form, or is 400.
    const SPELLINGS: &[(&str, &str, &str, &str)] = &[
        ("app.example.com", "/admin/x", "app.example.com", "/admin/x"),
        ("app.example.com", "/ADMIN/x", "app.example.com", "/admin/x"),
        ("app.example.com", "/Admin/x", "app.example.com", "/admin/x"),
        (
            "app.example.com",
            "/admin%2fx",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin%2Fx",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin%5cx",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin\\x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin;x/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin;/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/%61dmin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/%2561dmin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/x/../admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/x/%2e%2e/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/x/..;/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/x/;/../admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "//admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/./admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin/./x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin//x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin%00/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin%c0%afx",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/%u0061dmin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin%zz",
            "app.example.com",
            "/admin/x",
        ),
        ("app.example.com", "/admin", "app.example.com", "/admin"),
        (
            "app.example.com",
            "/admin/reports/x",
            "app.example.com",
            "/admin/reports/x",
        ),
        (
            "app.example.com",
            "/admin/reports/../x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/admin/reports/..;/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com",
            "/ADMIN/REPORTS/x",
            "app.example.com",
            "/admin/reports/x",
        ),
        // Tomcat reads /admin/reports/y, Werkzeug a file under /admin: the stricter one decides.
        (
            "app.example.com",
            "/admin/reports;x/y",
            "app.example.com",
            "/admin/y",
        ),
        // Case-folding servers read /admin/reports, case-sensitive ones /admin: the stricter decides.
        (
            "app.example.com",
            "/admin/Reports/x",
            "app.example.com",
            "/admin/x",
        ),
        ("app.example.com", "/team/x", "app.example.com", "/team/x"),
        (
            "app.example.com",
            "/team/public/x",
            "app.example.com",
            "/team/public/x",
        ),
        (
            "app.example.com",
            "/team/public/../secret",
            "app.example.com",
            "/team/secret",
        ),
        (
            "app.example.com",
            "/team/public/..;/secret",
            "app.example.com",
            "/team/secret",
        ),
        (
            "app.example.com",
            "/team/public/%2e%2e/secret",
            "app.example.com",
            "/team/secret",
        ),
        (
            "app.example.com",
            "/team/public%2f..%2fsecret",
            "app.example.com",
            "/team/secret",
        ),
        (
            "app.example.com",
            "/team/Public/x",
            "app.example.com",
            "/team/Public/x",
        ),
        (
            "app.example.com",
            "/TEAM/public/x",
            "app.example.com",
            "/team/x",
        ),
        (
            "app.example.com",
            "/team/%70ublic/x",
            "app.example.com",
            "/team/public/x",
        ),
        (
            "app.example.com",
            "/team/health",
            "app.example.com",
            "/team/health",
        ),
        (
            "app.example.com",
            "/team/health;x",
            "app.example.com",
            "/team/x",
        ),
        (
            "app.example.com",
            "/team/health/",
            "app.example.com",
            "/team/x",
        ),
        (
            "app.example.com",
            "/nothing/../team/x",
            "app.example.com",
            "/team/x",
        ),
        ("app.example.com", "/open", "app.example.com", "/open"),
        ("APP.Example.COM", "/admin/x", "app.example.com", "/admin/x"),
        (
            "app.example.com.",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com.:8443",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app..example.com",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com:1:2",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "x@app.example.com",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com%2e",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "app.example.com,other.org",
            "/admin/x",
            "app.example.com",
            "/admin/x",
        ),
        (
            "other.example.com",
            "/admin/x",
            "other.example.com",
            "/admin/x",
        ),
    ];

    #[test]
    fn every_spelling_decides_like_its_canonical_form_or_400() {
        let cfg = table_config("");
        assert!(SPELLINGS.len() >= 40);
        let mut bad = Vec::new();
        for (host, raw, chost, cpath) in SPELLINGS {
            let got = verdict(&cfg, host, raw);
            let want = verdict(&cfg, chost, cpath);
            if got != want && got != "400" {
                bad.push(format!(
                    "{host:28} {raw:30} -> {got:36} canonical {cpath} -> {want}"
                ));
            }
        }
        assert!(bad.is_empty(), "decisions differ:\n{}", bad.join("\n"));
        // Spot checks that pin the table to the rules, not only to itself.
        assert_eq!(
            verdict(&cfg, "app.example.com", "/admin/x"),
            "only boss@example.com"
        );
        assert_eq!(
            verdict(&cfg, "app.example.com", "/ADMIN/x"),
            "only boss@example.com"
        );
        assert_eq!(verdict(&cfg, "app.example.com", "/admin%2fx"), "400");
        assert_eq!(verdict(&cfg, "app.example.com", "/team/public/x"), "public");
        assert_eq!(
            verdict(&cfg, "app.example.com", "/team/health;x"),
            "only boss@example.com,carol@example.com,alice@example.com"
        );
        assert_eq!(
            verdict(&cfg, "app.example.com.", "/admin/x"),
            "only boss@example.com"
        );
        assert_eq!(verdict(&cfg, "other.example.com", "/admin/x"), "public");
    }

    #[test]
    fn forwarded_ambiguous_paths_take_the_strictest_reading() {
        let cfg = table_config("ambiguous_paths: forward\n");
        for (host, raw, chost, cpath) in SPELLINGS {
            let got = verdict(&cfg, host, raw);
            let want = verdict(&cfg, chost, cpath);
            assert!(
                not_laxer(&got, &want),
                "{host} {raw}: {got} is laxer than {cpath}: {want}"
            );
        }
        // `/` has rules below it, `/team` has public paths: still refused.
        assert_eq!(verdict(&cfg, "app.example.com", "/admin%2fx"), "400");
        assert_eq!(verdict(&cfg, "app.example.com", "/team/public%2fx"), "400");
        // `/admin/reports` has nothing below it: forwarded, to the people it allows.
        assert_eq!(
            verdict(&cfg, "app.example.com", "/admin/reports/a%2fb"),
            "only boss@example.com,carol@example.com"
        );
        assert_eq!(verdict(&cfg, "other.example.com", "/a%2fb"), "public");
    }

    /// How a generous upstream (Werkzeug + Tomcat + IIS habits together) reads a raw path:
    /// every escape decoded (twice), `\` as `/`, `;` parameters stripped, dots resolved.
    fn generous_upstream_view(raw: &str, strip_params: bool) -> String {
        fn decode(s: &str) -> String {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let hx = |c: u8| (c as char).to_digit(16);
                if b[i] == b'%' && i + 2 < b.len() {
                    if let (Some(h), Some(l)) = (hx(b[i + 1]), hx(b[i + 2])) {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        let once = decode(raw);
        let twice = decode(&once).replace('\\', "/");
        let mut segs: Vec<&str> = Vec::new();
        for seg in twice.split('/') {
            let seg = if strip_params {
                seg.split(';').next().unwrap_or("")
            } else {
                seg
            };
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                s => segs.push(s),
            }
        }
        let mut n: String = segs.iter().map(|s| format!("/{s}")).collect();
        if n.is_empty() {
            n.push('/');
        }
        n
    }

    /// Property over generated paths: the gateway's decision for a raw spelling is never laxer than
    /// its decision for the canonical form, nor than for what a generous upstream acts on (unless
    /// the gateway refused it). Deterministic pseudo-random spellings from tricky pieces.
    #[test]
    fn no_spelling_is_laxer_than_what_the_upstream_acts_on() {
        const PIECES: [&str; 30] = [
            "/", "admin", "ADMIN", "Admin", "reports", "team", "public", "Public", "health", "x",
            ".", "..", "..;", ";", ";x", "%2f", "%2F", "%5c", "\\", "%2e", "%2E%2e", "%252f",
            "%61", "%00", "%c0%af", "%zz", "//", "/./", "/../", "%u002f",
        ];
        for mode in ["", "ambiguous_paths: forward\n"] {
            let cfg = table_config(mode);
            let mut seed: u64 = 0x9e3779b97f4a7c15;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for _ in 0..20_000 {
                let n = 1 + (next() % 8) as usize;
                let mut raw = String::from("/");
                for _ in 0..n {
                    raw.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
                }
                let got = verdict(&cfg, "app.example.com", &raw);
                let canonical = canonicalize(&raw).primary.into_owned();
                let by_canonical = verdict(&cfg, "app.example.com", &canonical);
                assert!(
                    not_laxer(&got, &by_canonical),
                    "{raw:?}: {got} is laxer than its canonical {canonical:?}: {by_canonical}"
                );
                // Tomcat-like (strips `;` parameters) and Werkzeug-like (keeps them), each also
                // folded the way a case-insensitive upstream would fold.
                let tomcat = generous_upstream_view(&raw, true);
                let werkzeug = generous_upstream_view(&raw, false);
                for view in [
                    tomcat.to_ascii_lowercase(),
                    werkzeug.to_ascii_lowercase(),
                    tomcat,
                    werkzeug,
                ] {
                    let by_upstream = verdict(&cfg, "app.example.com", &view);
                    if by_upstream == "400" {
                        continue;
                    }
                    assert!(
                        not_laxer(&got, &by_upstream),
                        "{raw:?}: {got} is laxer than what the upstream acts on, {view:?}: {by_upstream}"
                    );
                }
            }
        }
    }

    #[test]
    fn public_paths_cannot_be_climbed_out_of() {
        let cfg = table_config("");
        let public = |p: &str| verdict(&cfg, "app.example.com", p) == "public";
        assert!(public("/team/public/app.js"));
        assert!(public("/team/public"));
        assert!(public("/team/health"));
        assert!(!public("/team/health/x"));
        assert!(!public("/team/public/../admin"));
        assert!(!public("/team/public/%2e%2e/admin"));
        assert!(!public("/team/public/..%2fadmin"));
        assert!(!public("//team/public/../x"));
        assert!(!public("/team/publicx"));
    }
}
