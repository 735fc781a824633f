//! Validators of the top-level sections that stand alone: the listeners (`tls`, `public_url`), `login`, `session` and `email`. Each reports its own problems under its own keys.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use lettre::message::Mailbox;

use super::file::{RawEmail, RawLogin, RawSession, RawTls};
use super::{
    EmailConfig, LoginConfig, MailTransport, SessionConfig, SmtpConfig, SmtpSecurity, TlsConfig,
    Validator, MAX_HINT,
};
use crate::auth::address::parse_domain;

impl Validator {
    /// `tls:`: listener address and the certificate and key files.
    pub(super) fn tls(&mut self, raw: Option<RawTls>) -> Option<TlsConfig> {
        match raw {
            None => None,
            Some(t) => {
                let listen = match t.listen {
                    Some(l) => self.socket_addr("tls.listen", &l),
                    None => {
                        self.problem("tls.listen", "is required when `tls` is set");
                        None
                    }
                };
                let cert = t.cert.map(PathBuf::from);
                let key = t.key.map(PathBuf::from);
                for (name, p) in [("tls.cert", &cert), ("tls.key", &key)] {
                    match p {
                        None => self.problem(name, "is required when `tls` is set"),
                        Some(p) if !p.is_file() => self.problem(
                            name,
                            format!("file `{}` does not exist or is not readable", p.display()),
                        ),
                        Some(_) => {}
                    }
                }
                match (listen, cert, key) {
                    (Some(listen), Some(cert), Some(key)) => Some(TlsConfig { listen, cert, key }),
                    _ => None,
                }
            }
        }
    }

    /// `public_url`: an http(s) origin with a host and nothing else.
    pub(super) fn public_url(&mut self, raw: Option<&str>) -> Option<Url> {
        match raw {
            None => {
                self.problem("public_url", "is required (e.g. \"https://auth.example.com\"); emailed links are built from it");
                None
            }
            Some(s) => match Url::parse(s) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    self.problem(
                        "public_url",
                        format!("`{s}` must be an http:// or https:// URL"),
                    );
                    None
                }
                Ok(u) if u.host_str().is_none() => {
                    self.problem("public_url", format!("`{s}` has no host"));
                    None
                }
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    self.problem("public_url", "must not contain a user name or password");
                    None
                }
                Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                    self.problem("public_url", "must not have a query or fragment");
                    None
                }
                Ok(u) if u.path() != "/" => {
                    self.problem(
                        "public_url",
                        "must be an origin without a path (the gateway reserves /.auth/ on it)",
                    );
                    None
                }
                Ok(u) => Some(u),
                Err(e) => {
                    self.problem("public_url", format!("`{s}` is not a URL: {e}"));
                    None
                }
            },
        }
    }

    /// `login:`: methods, lifetimes, code length and attempts, rate limits, the hint.
    pub(super) fn login(&mut self, l: RawLogin) -> LoginConfig {
        let mut link = false;
        let mut code = false;
        if l.methods.is_empty() {
            self.problem("login.methods", "must list at least one of `link`, `code`");
        }
        for (i, m) in l.methods.iter().enumerate() {
            match m.as_str() {
                "link" => link = true,
                "code" => code = true,
                other => self.problem(
                    &format!("login.methods[{i}]"),
                    format!("unknown method `{other}`; use `link` or `code`"),
                ),
            }
        }
        let login_ttl = self.positive_duration("login.ttl", &l.ttl);
        if login_ttl > Duration::from_secs(24 * 3600) {
            self.problem(
                "login.ttl",
                "must be at most 24h: sign-in links are meant to be short-lived",
            );
        }
        if !(4..=10).contains(&l.code_length) {
            self.problem(
                "login.code_length",
                format!("{} is out of range; use 4 to 10 digits", l.code_length),
            );
        }
        if l.max_code_attempts == 0 || l.max_code_attempts > 100 {
            self.problem("login.max_code_attempts", "must be between 1 and 100");
        }
        if l.rate_limit.per_ip_per_minute == 0 {
            self.problem("login.rate_limit.per_ip_per_minute", "must be at least 1");
        }
        if l.rate_limit.per_email_per_hour == 0 {
            self.problem("login.rate_limit.per_email_per_hour", "must be at least 1");
        }
        if l.rate_limit.per_email_burst == 0 {
            self.problem("login.rate_limit.per_email_burst", "must be at least 1");
        }
        if !(32..=128).contains(&l.rate_limit.ipv6_prefix) {
            self.problem(
                "login.rate_limit.ipv6_prefix",
                format!(
                    "{} is out of range; use 32 to 128 (64: one budget per /64)",
                    l.rate_limit.ipv6_prefix
                ),
            );
        }
        if l.max_pending == 0 {
            self.problem("login.max_pending", "must be at least 1");
        }
        let resend_cooldown = self.duration("login.resend_cooldown", &l.resend_cooldown);
        let hint = match l.hint.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                self.problem("login.hint", "is empty; remove the key or write a line such as \"Use your @example.com address\"");
                None
            }
            Some(h) if h.contains(['\r', '\n']) => {
                self.problem("login.hint", "must be one line");
                None
            }
            Some(h) if h.chars().count() > MAX_HINT => {
                self.problem(
                    "login.hint",
                    format!(
                        "is {} characters long; at most {MAX_HINT}",
                        h.chars().count()
                    ),
                );
                None
            }
            Some(h) => Some(h.to_string()),
        };
        LoginConfig {
            link,
            code,
            ttl: login_ttl,
            code_length: l.code_length,
            max_code_attempts: l.max_code_attempts,
            per_ip_per_minute: l.rate_limit.per_ip_per_minute,
            per_email_per_hour: l.rate_limit.per_email_per_hour,
            per_email_burst: l.rate_limit.per_email_burst,
            ipv6_prefix: l.rate_limit.ipv6_prefix,
            max_pending: l.max_pending,
            resend_cooldown,
            hint,
        }
    }

    /// `email:`: the sender, the transport (SMTP with its security, credentials, timeout and
    /// connections; log; file), the subject and the templates.
    pub(super) fn email(&mut self, e: RawEmail) -> Option<EmailConfig> {
        let from = match e.from.parse::<Mailbox>() {
            Ok(m) => Some(m),
            Err(err) => {
                self.problem(
                    "email.from",
                    format!(
                        "`{}` is not a mailbox such as \"Portcullis <auth@example.com>\": {err}",
                        e.from
                    ),
                );
                None
            }
        };
        let transport = match e.transport.as_str() {
            "smtp" => {
                let security = match e.smtp.security.as_str() {
                    "none" => SmtpSecurity::None,
                    "starttls" => SmtpSecurity::StartTls,
                    "tls" => SmtpSecurity::Tls,
                    other => {
                        self.problem(
                            "email.smtp.security",
                            format!("unknown value `{other}`; use none, starttls or tls"),
                        );
                        SmtpSecurity::StartTls
                    }
                };
                if e.smtp.host.trim().is_empty() {
                    self.problem("email.smtp.host", "must not be empty");
                }
                let password = match &e.smtp.password_file {
                    None => None,
                    Some(p) => match std::fs::read_to_string(p) {
                        Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
                        Err(err) => {
                            self.problem(
                                "email.smtp.password_file",
                                format!("cannot read `{p}`: {err}"),
                            );
                            None
                        }
                    },
                };
                if password.is_some() && e.smtp.username.is_none() {
                    self.problem(
                        "email.smtp.username",
                        "is required when password_file is set",
                    );
                }
                let timeout = self.positive_duration("email.smtp.timeout", &e.smtp.timeout);
                if !(1..=64).contains(&e.smtp.max_connections) {
                    self.problem("email.smtp.max_connections", "must be between 1 and 64");
                }
                Some(MailTransport::Smtp(SmtpConfig {
                    host: e.smtp.host,
                    port: e.smtp.port,
                    security,
                    username: e.smtp.username,
                    password,
                    timeout,
                    max_connections: e.smtp.max_connections,
                }))
            }
            "log" => Some(MailTransport::Log),
            "file" => Some(MailTransport::File(PathBuf::from(&e.dir))),
            other => {
                self.problem(
                    "email.transport",
                    format!("unknown transport `{other}`; use smtp, log or file"),
                );
                None
            }
        };
        if e.subject.contains(['\r', '\n']) || e.subject.trim().is_empty() {
            self.problem("email.subject", "must be one non-empty line");
        }
        let text_template = self.template("email.templates.text", e.templates.text.as_deref());
        let html_template = self.template("email.templates.html", e.templates.html.as_deref());
        match (from, transport) {
            (Some(from), Some(transport)) => Some(EmailConfig {
                from,
                transport,
                subject: e.subject,
                text_template,
                html_template,
            }),
            _ => None,
        }
    }

    /// `session:`: cookie name and domain (which must cover `public_url`'s host), lifetimes.
    pub(super) fn session(&mut self, s: RawSession, public_url: Option<&Url>) -> SessionConfig {
        if s.cookie_name.is_empty()
            || !s
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            self.problem(
                "session.cookie_name",
                format!(
                    "`{}` is not a valid cookie name (letters, digits, `_`, `-`, `.`)",
                    s.cookie_name
                ),
            );
        }
        let cookie_domain = match s.cookie_domain {
            None => None,
            Some(d) => {
                let bare = d.strip_prefix('.').unwrap_or(&d);
                match parse_domain(bare) {
                    Ok(bare) => {
                        if let Some(u) = public_url {
                            let host = u.host_str().unwrap_or("").to_ascii_lowercase();
                            if host != bare && !host.ends_with(&format!(".{bare}")) {
                                self.problem("session.cookie_domain", format!("`{d}` does not cover the public_url host `{host}`; browsers would drop the cookie"));
                            }
                        }
                        Some(bare)
                    }
                    Err(e) => {
                        let why = if !bare.is_empty() && !bare.contains('.') {
                            format!("`{d}` has a single label: a cookie domain needs at least two (browsers drop cookies set for a top-level name like `{bare}`). Put the apps under a two-label name and use that, e.g. `.apps.{bare}` for `grafana.apps.{bare}` and `auth.apps.{bare}`, or leave cookie_domain unset (one sign-in per host)")
                        } else {
                            format!("`{d}` is not a domain ({e}): use the name every app host ends with, e.g. `.example.com` for `grafana.example.com` and `auth.example.com`")
                        };
                        self.problem("session.cookie_domain", why);
                        None
                    }
                }
            }
        };
        let session_ttl = self.positive_duration("session.ttl", &s.ttl);
        let idle = self.duration("session.idle_timeout", &s.idle_timeout);
        SessionConfig {
            cookie_name: s.cookie_name,
            cookie_domain,
            ttl: session_ttl,
            idle_timeout: if idle.is_zero() { None } else { Some(idle) },
        }
    }
}
