//! Serde mirror of the YAML configuration file: every key, its default, nothing validated yet.

use serde::Deserialize;

/// The raw configuration as written by the operator. Unknown keys are rejected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub tls: Option<RawTls>,
    pub public_url: Option<String>,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// File holding the master secret (hex or base64, 32+ bytes); else the systemd credential
    /// `portcullis-secret`, else `data_dir/secret`.
    #[serde(default)]
    pub secrets_file: Option<String>,
    #[serde(default)]
    pub store: RawStore,
    pub upstream: Option<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub access: RawAccess,
    #[serde(default)]
    pub login: RawLogin,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub email: RawEmail,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub ambiguous_paths: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default = "default_log_format")]
    pub log_format: String,
    #[serde(default)]
    pub log_emails: bool,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default)]
    pub branding: RawBranding,
}

/// `branding:`: what every page and mail shows of the site.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBranding {
    /// The site name (pages' header and title, mails).
    #[serde(default)]
    pub name: Option<String>,
    /// A file (png, jpg, gif, webp, svg; inlined) or an https URL.
    #[serde(default)]
    pub logo: Option<String>,
    /// `#rrggbb`, with white button text at 4.5:1 or more.
    #[serde(default)]
    pub accent: Option<String>,
    /// An email address or an http(s) URL.
    #[serde(default)]
    pub support: Option<String>,
    /// A folder of page templates named like the built-in ones, which they replace.
    #[serde(default)]
    pub templates_dir: Option<String>,
}

/// `store:`: where challenges, sessions and the outbox live (sled in `data_dir` by default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sled`, `redis://…`, `rediss://…` or `redis+sentinel://host:port[,host:port]/master[/db]`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// Sentinel addresses (`host:port`), with `master_name`, instead of a `redis://` URL.
    #[serde(default)]
    pub sentinels: Vec<String>,
    #[serde(default)]
    pub master_name: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: String,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub access: Option<RawRouteAccess>,
    #[serde(default)]
    pub session: Option<RawRouteSession>,
    #[serde(default)]
    pub public_paths: Vec<String>,
}

/// A route's `access:` override; unset lists inherit the top-level ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteAccess {
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_emails: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_emails_file: Option<String>,
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteSession {
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    #[serde(default)]
    pub allowed_emails_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_login_ttl")]
    pub ttl: String,
    #[serde(default = "default_code_length")]
    pub code_length: u32,
    #[serde(default = "default_max_code_attempts")]
    pub max_code_attempts: u32,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    #[serde(default = "default_resend_cooldown")]
    pub resend_cooldown: String,
    /// A line shown on the sign-in form and the check-email page (e.g. "Use your @example.com
    /// address"); off by default, so nothing tells who may sign in.
    #[serde(default)]
    pub hint: Option<String>,
}

impl Default for RawLogin {
    fn default() -> Self {
        Self {
            methods: default_methods(),
            ttl: default_login_ttl(),
            code_length: default_code_length(),
            max_code_attempts: default_max_code_attempts(),
            rate_limit: RawRateLimit::default(),
            max_pending: default_max_pending(),
            resend_cooldown: default_resend_cooldown(),
            hint: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    #[serde(default = "default_per_ip")]
    pub per_ip_per_minute: u32,
    #[serde(default = "default_per_email")]
    pub per_email_per_hour: u32,
    #[serde(default = "default_per_email_burst")]
    pub per_email_burst: u32,
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            per_ip_per_minute: default_per_ip(),
            per_email_per_hour: default_per_email(),
            per_email_burst: default_per_email_burst(),
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    #[serde(default)]
    pub cookie_domain: Option<String>,
    #[serde(default = "default_session_ttl")]
    pub ttl: String,
    #[serde(default = "default_idle")]
    pub idle_timeout: String,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            cookie_name: default_cookie_name(),
            cookie_domain: None,
            ttl: default_session_ttl(),
            idle_timeout: default_idle(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default = "default_transport")]
    pub transport: String,
    #[serde(default)]
    pub smtp: RawSmtp,
    #[serde(default = "default_mail_dir")]
    pub dir: String,
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default)]
    pub templates: RawTemplates,
}

impl Default for RawEmail {
    fn default() -> Self {
        Self {
            from: default_from(),
            transport: default_transport(),
            smtp: RawSmtp::default(),
            dir: default_mail_dir(),
            subject: default_subject(),
            templates: RawTemplates::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplates {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    #[serde(default = "default_smtp_host")]
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_security")]
    pub security: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout: String,
    #[serde(default = "default_smtp_connections")]
    pub max_connections: u32,
}

impl Default for RawSmtp {
    fn default() -> Self {
        Self {
            host: default_smtp_host(),
            port: default_smtp_port(),
            security: default_smtp_security(),
            username: None,
            password_file: None,
            timeout: default_smtp_timeout(),
            max_connections: default_smtp_connections(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default = "default_email_header")]
    pub email: String,
    #[serde(default = "default_user_header")]
    pub user: String,
    #[serde(default)]
    pub jwt: Option<String>,
    #[serde(default = "default_jwt_ttl")]
    pub jwt_ttl: String,
}

impl Default for RawHeaders {
    fn default() -> Self {
        Self {
            email: default_email_header(),
            user: default_user_header(),
            jwt: None,
            jwt_ttl: default_jwt_ttl(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_auth_body_bytes: usize,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout: String,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    #[serde(default = "default_db_cache_bytes")]
    pub db_cache_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_auth_body_bytes: default_max_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            upstream_timeout: default_upstream_timeout(),
            shutdown_grace: default_shutdown_grace(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            db_cache_bytes: default_db_cache_bytes(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> String {
    "./data".into()
}
fn default_log_format() -> String {
    "text".into()
}
fn default_methods() -> Vec<String> {
    vec!["link".into(), "code".into()]
}
fn default_login_ttl() -> String {
    "15m".into()
}
fn default_code_length() -> u32 {
    6
}
fn default_max_code_attempts() -> u32 {
    5
}
fn default_resend_cooldown() -> String {
    "30s".into()
}
fn default_per_ip() -> u32 {
    5
}
fn default_per_email() -> u32 {
    12
}
fn default_per_email_burst() -> u32 {
    10
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_max_pending() -> usize {
    10_000
}
fn default_cookie_name() -> String {
    "portcullis_session".into()
}
fn default_session_ttl() -> String {
    "7d".into()
}
fn default_idle() -> String {
    "1d".into()
}
fn default_from() -> String {
    "Portcullis <auth@example.com>".into()
}
fn default_transport() -> String {
    "smtp".into()
}
fn default_mail_dir() -> String {
    "./mail".into()
}
fn default_subject() -> String {
    "Your sign-in link".into()
}
fn default_smtp_host() -> String {
    "127.0.0.1".into()
}
fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_security() -> String {
    "starttls".into()
}
fn default_smtp_timeout() -> String {
    "10s".into()
}
fn default_smtp_connections() -> u32 {
    4
}
fn default_email_header() -> String {
    "X-Forwarded-Email".into()
}
fn default_user_header() -> String {
    "X-Forwarded-User".into()
}
fn default_jwt_ttl() -> String {
    "2m".into()
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_body_bytes() -> usize {
    16 * 1024
}
fn default_header_read_timeout() -> String {
    "10s".into()
}
fn default_upstream_timeout() -> String {
    "60s".into()
}
fn default_shutdown_grace() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
/// Well below the shipped unit's `LimitNOFILE=65536` (a proxied connection holds two descriptors).
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    256
}
fn default_db_cache_bytes() -> u64 {
    32 * 1024 * 1024
}
