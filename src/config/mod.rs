//! Validated, typed configuration: loads the YAML file and reports every problem with its file, line or key path.

mod branding;
mod file;
mod sections;
mod store;
mod yaml;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::HeaderName;
use lettre::message::Mailbox;
use url::Url;

use crate::auth::address::{parse_address, parse_domain};
use crate::net::Cidr;
use crate::routing::{self, HostPattern, PublicPath, Route};
pub use crate::routing::{Access, Upstream};
pub use branding::{Accent, Branding, Logo, Support, DEFAULT_ACCENT, PAGE_TEMPLATES};
use file::RawConfig;

/// Every problem found in one configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {} problem{} found",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", self.file.display(), p)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub link: bool,
    pub code: bool,
    pub ttl: Duration,
    pub code_length: u32,
    pub max_code_attempts: u32,
    /// Sign-in requests per client network (IPv4 address or IPv6 prefix) per minute; also the burst.
    pub per_ip_per_minute: u32,
    /// Refill rate of each address's budget (one request every hour / this).
    pub per_email_per_hour: u32,
    /// Requests an address's budget holds at once.
    pub per_email_burst: u32,
    /// IPv6 clients share a budget per prefix of this many bits.
    pub ipv6_prefix: u8,
    /// Challenges the store may hold at once; further sign-ins get 503 without any work.
    pub max_pending: usize,
    pub resend_cooldown: Duration,
    /// Shown on the sign-in form and the check-email page (opt-in: says who may sign in).
    pub hint: Option<String>,
}

/// Longest `login.hint`.
const MAX_HINT: usize = 200;

impl LoginConfig {
    /// The `method` value of the JSON API.
    /// The methods as the config writes them (`link + code`), for `portcullis check`.
    pub fn methods_in_words(&self) -> &'static str {
        match (self.link, self.code) {
            (true, true) => "link + code",
            (true, false) => "link",
            _ => "code",
        }
    }

    pub fn method_name(&self) -> &'static str {
        match (self.link, self.code) {
            (true, true) => "LINK_OTP",
            (true, false) => "LINK",
            _ => "OTP",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub ttl: Duration,
    /// `None` when the idle timeout is disabled (`0`).
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    pub timeout: Duration,
    /// Mails sent at once, each over its own pooled connection.
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub enum MailTransport {
    Smtp(SmtpConfig),
    Log,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub from: Mailbox,
    pub transport: MailTransport,
    pub subject: String,
    pub text_template: Option<String>,
    pub html_template: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HeadersConfig {
    pub email: HeaderName,
    pub user: HeaderName,
    /// Signed identity assertion header (off when `None`).
    pub jwt: Option<HeaderName>,
    pub jwt_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_auth_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub upstream_timeout: Duration,
    pub shutdown_grace: Duration,
    /// HTTP/1 keep-alive between requests, HTTP/2 with no open stream.
    pub idle_timeout: Duration,
    /// Open client connections in all; more are refused.
    pub max_connections: usize,
    /// Open connections per client IPv4 address or IPv6 /64 (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// sled's page cache (the database's share of memory).
    pub db_cache_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub public_url: Url,
    pub data_dir: PathBuf,
    /// Where the master secret is read from (`None`: systemd credential or `data_dir/secret`).
    pub secrets_file: Option<PathBuf>,
    /// Where challenges, sessions and the outbox live.
    pub store: crate::store::StoreConfig,
    /// Most specific first; `upstream:` alone is one route for every host.
    pub routes: Vec<Route>,
    pub access: Access,
    pub login: LoginConfig,
    pub session: SessionConfig,
    pub email: EmailConfig,
    pub headers: HeadersConfig,
    pub trusted_proxies: Vec<Cidr>,
    /// What happens to paths servers read differently (`%2f`, `\`, …): `400` or strictest reading.
    pub ambiguous_paths: routing::AmbiguousPaths,
    pub limits: Limits,
    pub log_format: LogFormat,
    pub log_emails: bool,
    /// Separate listener for Prometheus metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Canonical addresses that may open `/.auth/admin`.
    pub admins: HashSet<String>,
    /// Site name, logo, accent, support contact and page templates of every page and mail.
    pub branding: Branding,
    /// Files whose change triggers a reload (the config itself, allowed_emails_file, templates).
    pub watched_files: Vec<PathBuf>,
    /// Their modification times when this config was read (set by [`Config::load`]).
    pub loaded_mtimes: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

/// A file's modification time, if it can be read.
pub fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // Taken before reading, so an edit made while loading still counts as a change.
        let before = mtime(path);
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!("cannot read file: {e}")],
        })?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.loaded_mtimes = cfg
            .watched_files
            .iter()
            .map(|f| (f.clone(), if f == path { before } else { mtime(f) }))
            .collect();
        Ok(cfg)
    }

    /// Parses and validates configuration text; `path` is used for messages and nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        if text.trim().is_empty() {
            return Err(fail(vec![
                "the file is empty; `public_url` is required".into()
            ]));
        }
        let raw: RawConfig = yaml::read(text).map_err(fail)?;
        let mut v = Validator::default();
        let cfg = v.config(raw, path);
        match cfg {
            Some(cfg) if v.problems.is_empty() => Ok(cfg),
            _ => Err(fail(v.problems)),
        }
    }

    /// The configured identity header names (stripped from client requests).
    ///
    /// A fixed array (no allocation per request): without a JWT header its slot repeats the
    /// email header.
    pub fn identity_headers(&self) -> [&HeaderName; 3] {
        let h = &self.headers;
        [&h.email, &h.user, h.jwt.as_ref().unwrap_or(&h.email)]
    }

    /// Whether an address may receive a sign-in mail: allowed globally or by any route.
    pub fn may_sign_in(&self, canonical_email: &str) -> bool {
        routing::any_allows(&self.access, &self.routes, canonical_email)
    }

    /// The routing decision for a canonical request view (see [`routing::decide`]).
    pub fn decide(
        &self,
        view: &crate::request::RequestView,
    ) -> Result<Option<routing::Decision<'_>>, crate::request::Ambiguity> {
        routing::decide(&self.routes, &view.host, &view.path, self.ambiguous_paths)
    }

    /// The decision for a canonical host and path, or `None` when no route serves it or the path
    /// is refused (callers that need the reason use [`Config::decide`]).
    pub fn decide_for(
        &self,
        host: &str,
        path: &crate::request::CanonicalPath<'_>,
    ) -> Option<routing::Decision<'_>> {
        routing::decide(&self.routes, host, path, self.ambiguous_paths)
            .ok()
            .flatten()
    }

    /// The longest idle timeout any route (or the global session block) grants; `None` when one
    /// of them disables it. The sweeper may delete idle sessions only past this.
    pub fn longest_idle_timeout(&self) -> Option<Duration> {
        let mut longest = self.session.idle_timeout?;
        for r in &self.routes {
            longest = longest.max(r.idle_timeout?);
        }
        Some(longest)
    }

    /// `https` when the public URL is https: cookies get the Secure flag.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// The public origin, e.g. `https://auth.example.com` (no trailing slash).
    pub fn public_origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// Builds an absolute URL on the public origin for a path starting with `/`.
    pub fn public_link(&self, path_and_query: &str) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}{path_and_query}")
    }
}

/// The longest value each duration key accepts.
fn max_duration(key: &str) -> Duration {
    const DAY: u64 = 24 * 3600;
    let secs = match key {
        k if k.ends_with("session.ttl") || k.ends_with("session.idle_timeout") => 3650 * DAY,
        "login.ttl" => DAY,
        "limits.upstream_timeout" => DAY,
        "headers.jwt_ttl" => 300,
        "email.smtp.timeout" => 600,
        _ => 3600,
    };
    Duration::from_secs(secs)
}

#[derive(Default)]
struct Validator {
    problems: Vec<String>,
    watched: Vec<PathBuf>,
}

impl Validator {
    fn problem(&mut self, key: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{key}: {msg}"));
    }

    fn duration(&mut self, key: &str, value: &str) -> Duration {
        match humantime::parse_duration(value.trim()) {
            Ok(d) => {
                // Every duration is added to a clock somewhere; bound them well below overflow.
                let max = max_duration(key);
                if d > max {
                    self.problem(
                        key,
                        format!(
                            "`{value}` is too long; at most {}",
                            humantime::format_duration(max)
                        ),
                    );
                    return max;
                }
                d
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("`{value}` is not a duration ({e}); use e.g. \"90s\", \"15m\", \"7d\""),
                );
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, key: &str, value: &str) -> Duration {
        let d = self.duration(key, value);
        if d.is_zero() && humantime::parse_duration(value.trim()).is_ok() {
            self.problem(key, "must be greater than zero");
        }
        d
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!("`{value}` is not an address:port such as \"127.0.0.1:8080\" or \"[::]:8443\""),
                );
                None
            }
        }
    }

    fn header_name(&mut self, key: &str, value: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(value.as_bytes()) {
            Ok(h) => {
                if crate::proxy::headers::is_hop_by_hop(&h)
                    || h == http::header::HOST
                    || h == http::header::COOKIE
                    || h == http::header::AUTHORIZATION
                {
                    self.problem(
                        key,
                        format!("`{value}` is a reserved header and cannot carry identity"),
                    );
                    None
                } else {
                    Some(h)
                }
            }
            Err(_) => {
                self.problem(key, format!("`{value}` is not a valid HTTP header name"));
                None
            }
        }
    }

    fn config(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let listen = self.socket_addr("listen", &raw.listen);

        let tls = self.tls(raw.tls);

        let public_url = self.public_url(raw.public_url.as_deref());

        let access = self.access(raw.access);

        let login = self.login(raw.login);

        let session = self.session(raw.session, public_url.as_ref());
        let routes = self.routes(
            raw.upstream.as_deref(),
            raw.routes,
            &access,
            session.idle_timeout,
        );

        let email = self.email(raw.email);

        let email_h = self.header_name("headers.email", &raw.headers.email);
        let user_h = self.header_name("headers.user", &raw.headers.user);
        let jwt_h = raw
            .headers
            .jwt
            .as_deref()
            .and_then(|j| self.header_name("headers.jwt", j));
        let jwt_ttl = self.positive_duration("headers.jwt_ttl", &raw.headers.jwt_ttl);
        if jwt_ttl > Duration::from_secs(300) {
            self.problem(
                "headers.jwt_ttl",
                "must be at most 5m: assertions are meant to be short-lived",
            );
        }

        let ambiguous_paths = match raw.ambiguous_paths.as_deref() {
            None | Some("reject") => routing::AmbiguousPaths::Reject,
            Some("forward") => routing::AmbiguousPaths::Forward,
            Some(other) => {
                self.problem(
                    "ambiguous_paths",
                    format!("`{other}` is not one of `reject` (the default) or `forward`"),
                );
                routing::AmbiguousPaths::Reject
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, c) in raw.trusted_proxies.iter().enumerate() {
            match c.parse::<Cidr>() {
                Ok(c) => trusted_proxies.push(c),
                Err(e) => self.problem(&format!("trusted_proxies[{i}]"), e),
            }
        }

        let lim = raw.limits;
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        if !(8192..=1024 * 1024).contains(&lim.max_header_bytes) {
            self.problem(
                "limits.max_header_bytes",
                "must be between 8192 and 1048576",
            );
        }
        if !(1024..=10 * 1024 * 1024).contains(&lim.max_auth_body_bytes) {
            self.problem(
                "limits.max_auth_body_bytes",
                "must be between 1024 and 10485760",
            );
        }
        if !(1 << 20..=1 << 36).contains(&lim.db_cache_bytes) {
            self.problem(
                "limits.db_cache_bytes",
                "must be between 1048576 (1 MiB) and 68719476736 (64 GiB)",
            );
        }
        if !(1..=1_000_000).contains(&lim.max_connections) {
            self.problem("limits.max_connections", "must be between 1 and 1000000");
        }
        if lim.max_connections_per_ip == 0 {
            self.problem("limits.max_connections_per_ip", "must be at least 1");
        }
        let limits = Limits {
            db_cache_bytes: lim.db_cache_bytes,
            max_header_bytes: lim.max_header_bytes,
            max_auth_body_bytes: lim.max_auth_body_bytes,
            header_read_timeout: self
                .positive_duration("limits.header_read_timeout", &lim.header_read_timeout),
            upstream_timeout: self
                .positive_duration("limits.upstream_timeout", &lim.upstream_timeout),
            shutdown_grace: self.duration("limits.shutdown_grace", &lim.shutdown_grace),
            idle_timeout: self.positive_duration("limits.idle_timeout", &lim.idle_timeout),
            max_connections: lim.max_connections,
            max_connections_per_ip: lim.max_connections_per_ip,
        };

        let metrics_listen = raw
            .metrics_listen
            .as_deref()
            .and_then(|m| self.socket_addr("metrics_listen", m));
        let mut admins = HashSet::new();
        for (i, a) in raw.admins.iter().enumerate() {
            match parse_address(a) {
                Ok(a) => {
                    admins.insert(a.canonical().to_string());
                }
                Err(e) => self.problem(&format!("admins[{i}]"), format!("`{a}`: {e}")),
            }
        }
        let branding = self.branding(raw.branding, path);
        let mut watched_files = vec![path.to_path_buf()];
        watched_files.append(&mut self.watched);

        let store = self.store(&raw.store);
        let secrets_file = raw.secrets_file.map(PathBuf::from);
        if let Some(p) = &secrets_file {
            match std::fs::read(p) {
                Ok(bytes) => {
                    if let Err(e) = crate::crypto::MasterSecret::parse(&bytes) {
                        self.problem("secrets_file", format!("`{}` {e}", p.display()));
                    }
                }
                Err(e) => self.problem(
                    "secrets_file",
                    format!("cannot read `{}`: {e}", p.display()),
                ),
            }
        }

        let log_format = match raw.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.problem(
                    "log_format",
                    format!("unknown format `{other}`; use text or json"),
                );
                LogFormat::Text
            }
        };

        Some(Config {
            source: path.to_path_buf(),
            listen: listen?,
            tls,
            public_url: public_url?,
            // Relative to the config file, not to wherever a command runs (`sessions`, `serve`).
            data_dir: match path.parent() {
                Some(dir) if Path::new(&raw.data_dir).is_relative() => dir.join(&raw.data_dir),
                _ => PathBuf::from(&raw.data_dir),
            },
            secrets_file,
            store,
            routes,
            access,
            login,
            session,
            email: email?,
            headers: HeadersConfig {
                email: email_h?,
                user: user_h?,
                jwt: jwt_h,
                jwt_ttl,
            },
            trusted_proxies,
            ambiguous_paths,
            limits,
            log_format,
            log_emails: raw.log_emails,
            metrics_listen,
            admins,
            branding,
            watched_files,
            loaded_mtimes: Vec::new(),
        })
    }

    fn upstream(&mut self, key: &str, s: &str) -> Option<Upstream> {
        if s == "builtin:whoami" {
            return Some(Upstream::Whoami);
        }
        match Url::parse(s) {
            Ok(u) => {
                let scheme = u.scheme().to_string();
                let clean = matches!(u.path(), "" | "/")
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none();
                match (scheme.as_str(), u.host_str(), u.port_or_known_default()) {
                    ("http" | "https", Some(host), Some(port)) if clean => {
                        let host = match u.host() {
                            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
                            _ => host.to_string(),
                        };
                        Some(Upstream::Http {
                            scheme,
                            authority: format!("{host}:{port}"),
                        })
                    }
                    _ => {
                        self.problem(key, format!("`{s}` must be http(s)://host:port without path, user or query, or builtin:whoami"));
                        None
                    }
                }
            }
            Err(e) => {
                self.problem(key, format!("`{s}` is not a URL: {e}"));
                None
            }
        }
    }

    /// Builds the route table: `routes:` entries, plus top-level `upstream:` as the catch-all.
    fn routes(
        &mut self,
        upstream: Option<&str>,
        raw: Vec<file::RawRoute>,
        global: &Access,
        idle: Option<Duration>,
    ) -> Vec<Route> {
        let mut routes = Vec::new();
        if upstream.is_none() && raw.is_empty() {
            self.problem("upstream", "is required (\"http://host:port\", \"https://host:port\" or \"builtin:whoami\") unless `routes` is set");
        }
        if let Some(u) = upstream {
            if let Some(up) = self.upstream("upstream", u) {
                routes.push(Route {
                    name: "*".into(),
                    host: HostPattern::Any,
                    path_prefix: "/".into(),
                    upstream: up,
                    access: std::sync::Arc::new(global.clone()),
                    public: false,
                    idle_timeout: idle,
                    public_paths: Vec::new(),
                    stats: Default::default(),
                });
            }
        }
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            let host = match HostPattern::parse(&r.host) {
                Ok(h) => Some(h),
                Err(e) => {
                    self.problem(&format!("{key}.host"), e);
                    None
                }
            };
            let prefix = r.path_prefix.unwrap_or_else(|| "/".into());
            if !prefix.starts_with('/')
                || routing::normalize_path(&prefix)
                    .as_deref()
                    .map(|n| n.trim_end_matches('/'))
                    != Some(prefix.trim_end_matches('/'))
            {
                self.problem(
                    &format!("{key}.path_prefix"),
                    format!("`{prefix}` must be a normalised path starting with /"),
                );
            }
            let up = self.upstream(&format!("{key}.upstream"), &r.upstream);
            let (access, public) = match r.access {
                None => (global.clone(), false),
                Some(a) => {
                    // A route's `access` replaces the global block as a whole: an operator who
                    // names one person means that person, not "that person plus the domain".
                    let raw = file::RawAccess {
                        allowed_domains: a.allowed_domains.unwrap_or_default(),
                        allowed_emails: a.allowed_emails.unwrap_or_default(),
                        allowed_emails_file: a.allowed_emails_file,
                    };
                    (
                        self.access_at(&format!("{key}.access"), raw, a.public),
                        a.public,
                    )
                }
            };
            let idle = match r.session.and_then(|s| s.idle_timeout) {
                Some(t) => {
                    let d = self.duration(&format!("{key}.session.idle_timeout"), &t);
                    if d.is_zero() {
                        None
                    } else {
                        Some(d)
                    }
                }
                None => idle,
            };
            let mut public_paths = Vec::new();
            for (j, p) in r.public_paths.iter().enumerate() {
                match PublicPath::parse(p) {
                    Ok(p) => public_paths.push(p),
                    Err(e) => self.problem(&format!("{key}.public_paths[{j}]"), e),
                }
            }
            if let (Some(host), Some(upstream)) = (host, up) {
                let name = format!(
                    "{}{}",
                    r.host.trim().to_ascii_lowercase(),
                    if prefix == "/" { "" } else { prefix.as_str() }
                );
                routes.push(Route {
                    name,
                    host,
                    path_prefix: prefix,
                    upstream,
                    access: std::sync::Arc::new(access),
                    public,
                    idle_timeout: idle,
                    public_paths,
                    stats: Default::default(),
                });
            }
        }
        for d in routing::duplicates(&routes) {
            self.problem(
                "routes",
                format!("two routes match the same host and path prefix: `{d}`"),
            );
        }
        routing::sort_routes(&mut routes);
        routes
    }

    fn template(&mut self, key: &str, path: Option<&str>) -> Option<String> {
        let path = path?;
        self.watched.push(PathBuf::from(path));
        match std::fs::read_to_string(path) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(key, format!("cannot read `{path}`: {e}"));
                None
            }
        }
    }

    fn access(&mut self, raw: file::RawAccess) -> Access {
        self.access_at("access", raw, false)
    }

    fn access_at(&mut self, key: &str, raw: file::RawAccess, public: bool) -> Access {
        let mut access = Access::default();
        for (i, d) in raw.allowed_domains.iter().enumerate() {
            match parse_domain(d) {
                Ok(d) => access.allowed_domains.push(d),
                Err(e) => self.problem(
                    &format!("{key}.allowed_domains[{i}]"),
                    format!("`{d}` is not a domain: {e}"),
                ),
            }
        }
        for (i, a) in raw.allowed_emails.iter().enumerate() {
            match parse_address(a) {
                Ok(a) => {
                    access.allowed_emails.insert(a.canonical().to_string());
                }
                Err(e) => {
                    self.problem(&format!("{key}.allowed_emails[{i}]"), format!("`{a}`: {e}"))
                }
            }
        }
        if let Some(f) = &raw.allowed_emails_file {
            self.watched.push(PathBuf::from(f));
            match std::fs::read_to_string(f) {
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        match parse_address(line) {
                            Ok(a) => {
                                access.allowed_emails.insert(a.canonical().to_string());
                            }
                            Err(e) => self.problem(
                                &format!("{key}.allowed_emails_file"),
                                format!("{f} line {}: `{line}`: {e}", n + 1),
                            ),
                        }
                    }
                }
                Err(e) => self.problem(
                    &format!("{key}.allowed_emails_file"),
                    format!("cannot read `{f}`: {e}"),
                ),
            }
        }
        if !public && access.allowed_domains.is_empty() && access.allowed_emails.is_empty() {
            self.problem(
                key,
                "allows nobody: set allowed_domains and/or allowed_emails",
            );
        }
        access
    }
}

/// Whether `ip` is in any of the trusted proxy ranges.
pub fn is_trusted(proxies: &[Cidr], ip: IpAddr) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.yaml"))
    }

    const MIN: &str = "public_url: http://127.0.0.1:8080\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.login.ttl, Duration::from_secs(900));
        assert_eq!(c.session.idle_timeout, Some(Duration::from_secs(86400)));
        assert_eq!(c.login.method_name(), "LINK_OTP");
        assert!(!c.secure_cookies());
    }

    #[test]
    fn login_hint_is_one_short_line() {
        assert_eq!(parse(MIN).unwrap().login.hint, None);
        let c = parse(&format!(
            "{MIN}login: {{ hint: '  Use your @example.com address ' }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.login.hint.as_deref(),
            Some("Use your @example.com address")
        );
        for bad in ["''", "\"a\\nb\"", &format!("'{}'", "x".repeat(201))] {
            let err = parse(&format!("{MIN}login: {{ hint: {bad} }}\n")).unwrap_err();
            assert!(err.to_string().contains("login.hint"), "{bad}: {err}");
        }
    }

    #[test]
    fn data_dir_is_relative_to_the_config_file() {
        let c = Config::parse(MIN, Path::new("/etc/portcullis/portcullis.yaml")).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/portcullis/./data"));
        let abs = format!("{MIN}data_dir: /var/lib/portcullis\n");
        let c = Config::parse(&abs, Path::new("/etc/portcullis/portcullis.yaml")).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/portcullis"));
        assert_eq!(c.login.methods_in_words(), "link + code");
    }

    #[test]
    fn unknown_key_names_line() {
        let err = parse(&format!("{MIN}sesion:\n  ttl: 1d\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test.yaml"), "{text}");
        assert!(text.contains("line 4"), "{text}");
        assert!(text.contains("sesion"), "{text}");
    }

    #[test]
    fn all_semantic_problems_reported_at_once() {
        let err = parse("public_url: ftp://x\nupstream: nope\nlogin: { ttl: soon, code_length: 2 }\nsession: { idle_timeout: forever }\naccess: { allowed_domains: ['bad domain'] }\n").unwrap_err();
        let keys = [
            "public_url",
            "upstream",
            "login.ttl",
            "login.code_length",
            "session.idle_timeout",
            "access.allowed_domains[0]",
        ];
        for k in keys {
            assert!(
                err.problems.iter().any(|p| p.starts_with(k)),
                "missing {k}: {err}"
            );
        }
    }

    #[test]
    fn empty_and_garbage_files_are_errors_not_panics() {
        assert!(parse(&MIN.replace("builtin:whoami", "\"http://a:b\"")).is_err());
        assert!(parse(&MIN.replace("builtin:whoami", "\"http://a/x\"")).is_err());
        assert!(parse(&MIN.replace("builtin:whoami", "\"http://127.0.0.1:3000\"")).is_ok());
        for s in [
            "",
            "   \n",
            "[1,2",
            "- a\n- b",
            "public_url: [",
            "\u{0}",
            ":::",
        ] {
            assert!(parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn absurd_durations_are_refused_not_overflowed() {
        for (section, key) in [
            ("session", "ttl"),
            ("session", "idle_timeout"),
            ("limits", "header_read_timeout"),
            ("limits", "upstream_timeout"),
            ("limits", "shutdown_grace"),
            ("login", "resend_cooldown"),
        ] {
            let err = parse(&format!(
                "{MIN}{section}: {{ {key}: 18446744073709551615s }}\n"
            ))
            .unwrap_err();
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.starts_with(&format!("{section}.{key}")) && p.contains("too long")),
                "{err}"
            );
        }
        assert!(parse(&format!("{MIN}session: {{ ttl: 365d }}\n")).is_ok());
    }

    #[test]
    fn idle_zero_disables() {
        let c = parse(&format!("{MIN}session: {{ idle_timeout: \"0\" }}\n")).unwrap();
        assert_eq!(c.session.idle_timeout, None);
    }

    #[test]
    fn identity_header_cannot_be_hop_by_hop() {
        let err = parse(&format!("{MIN}headers: {{ email: Connection }}\n")).unwrap_err();
        assert!(err.problems[0].starts_with("headers.email"));
    }

    #[test]
    fn access_allows_exact_domain_only() {
        let c = parse(MIN).unwrap();
        assert!(c.access.allows("a@example.com"));
        assert!(!c.access.allows("a@sub.example.com"));
        assert!(!c.access.allows("a@example.com.evil.org"));
    }

    #[test]
    fn routes_match_most_specific_first() {
        let yaml = "public_url: https://auth.example.com\naccess: { allowed_domains: [example.com] }\nsession: { cookie_domain: .example.com }\nroutes:\n  - { host: \"*.example.com\", upstream: \"http://127.0.0.1:1\" }\n  - { host: grafana.example.com, upstream: \"http://127.0.0.1:2\", access: { allowed_emails: [boss@other.org], allowed_domains: [] } }\n  - { host: grafana.example.com, path_prefix: /public, upstream: \"http://127.0.0.1:3\", access: { public: true } }\n  - { host: docs.example.com, upstream: \"http://127.0.0.1:4\", public_paths: [/static/, /healthz], session: { idle_timeout: 1h } }\n";
        let c = parse(yaml).unwrap();
        let route = |h: &str, p: &str| routing::find(&c.routes, h, p);
        let up = |h: &str, p: &str| match route(h, p).map(|r| &r.upstream) {
            Some(Upstream::Http { authority, .. }) => authority.clone(),
            _ => "none".into(),
        };
        assert_eq!(up("GRAFANA.example.com:443", "/d/1"), "127.0.0.1:2");
        assert_eq!(up("grafana.example.com", "/public/x"), "127.0.0.1:3");
        assert_eq!(up("grafana.example.com", "/publicity"), "127.0.0.1:2");
        assert_eq!(up("wiki.example.com", "/"), "127.0.0.1:1");
        assert_eq!(up("evil.com", "/"), "none");
        let g = route("grafana.example.com", "/").unwrap();
        assert!(g.access.allows("boss@other.org") && !g.access.allows("a@example.com"));
        assert!(c.may_sign_in("boss@other.org"));
        let d = route("docs.example.com", "/").unwrap();
        assert_eq!(d.idle_timeout, Some(Duration::from_secs(3600)));
        let public = |p: &str| {
            let path = crate::request::canonicalize(p);
            c.decide_for("docs.example.com", &path)
                .is_some_and(|d| d.public)
        };
        assert!(public("/static/a.css") && !public("/static/../admin"));
    }

    #[test]
    fn flood_limits_have_defaults_and_name_their_key() {
        let c = parse(MIN).unwrap();
        assert_eq!(
            (
                c.login.per_ip_per_minute,
                c.login.per_email_per_hour,
                c.login.per_email_burst,
                c.login.ipv6_prefix,
                c.login.max_pending,
                c.limits.db_cache_bytes,
            ),
            (5, 12, 10, 64, 10_000, 32 * 1024 * 1024)
        );
        let yaml = format!("{MIN}login: {{ max_pending: 0, rate_limit: {{ per_email_burst: 0, ipv6_prefix: 16 }} }}\nlimits: {{ db_cache_bytes: 1000 }}\n");
        let err = parse(&yaml).unwrap_err();
        for k in [
            "login.max_pending",
            "login.rate_limit.per_email_burst",
            "login.rate_limit.ipv6_prefix",
            "limits.db_cache_bytes",
        ] {
            assert!(
                err.problems.iter().any(|p| p.starts_with(k)),
                "missing {k}: {err}"
            );
        }
    }

    #[test]
    fn route_errors_name_their_key() {
        let yaml = "public_url: https://auth.example.com\naccess: { allowed_domains: [example.com] }\nroutes:\n  - { host: \"bad host\", upstream: \"ftp://x\", public_paths: [static] }\n";
        let err = parse(yaml).unwrap_err();
        for k in [
            "routes[0].host",
            "routes[0].upstream",
            "routes[0].public_paths[0]",
        ] {
            assert!(
                err.problems.iter().any(|p| p.starts_with(k)),
                "missing {k}: {err}"
            );
        }
    }
}
