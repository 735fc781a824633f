//! `Config::parse` on arbitrary text never panics and explains every refusal; single fields are
//! fuzzed through otherwise-valid files, so each refusal must name that field, and accepted values
//! (durations via humantime, domains, paths, addresses) must be what the field's rule says.
//!
//! The first byte picks the mode: 0..=FIELDS.len() - 1 embeds the rest as one field's value,
//! anything else parses the rest as a whole file.
#![no_main]

use std::path::Path;
use std::time::Duration;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use portcullis::auth::address::{parse_address, parse_domain};
use portcullis::routing::normalize_path;
use portcullis::{Config, config::ConfigError};

const BASE: &str = "public_url: https://auth.example.com\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n";

/// (problem key, YAML with `{BASE}` and `@` where the quoted value goes, other keys a refusal may
/// also name because of it)
const FIELDS: &[(&str, &str, &[&str])] = &[
    ("login.ttl", "{BASE}login: { ttl: @ }\n", &[]),
    ("session.idle_timeout", "{BASE}session: { idle_timeout: @ }\n", &[]),
    ("session.ttl", "{BASE}session: { ttl: @ }\n", &[]),
    ("headers.jwt_ttl", "{BASE}headers: { jwt_ttl: @ }\n", &[]),
    ("login.resend_cooldown", "{BASE}login: { resend_cooldown: @ }\n", &[]),
    ("session.cookie_domain", "{BASE}session: { cookie_domain: @ }\n", &[]),
    ("routes[0].public_paths[0]", "{BASE}routes: [ { host: app.example.com, upstream: \"http://127.0.0.1:1\", public_paths: [ @ ] } ]\n", &[]),
    ("routes[0].path_prefix", "{BASE}routes: [ { host: app.example.com, upstream: \"http://127.0.0.1:1\", path_prefix: @ } ]\n", &[]),
    ("routes[0].host", "{BASE}routes: [ { host: @, upstream: \"http://127.0.0.1:1\" } ]\n", &["routes: "]),
    ("admins[0]", "{BASE}admins: [ @ ]\n", &[]),
    ("trusted_proxies[0]", "{BASE}trusted_proxies: [ @ ]\n", &[]),
    ("headers.email", "{BASE}headers: { email: @ }\n", &[]),
    ("public_url", "public_url: @\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n", &[]),
    ("upstream", "public_url: https://auth.example.com\nupstream: @\naccess: { allowed_domains: [example.com] }\n", &[]),
    ("access.allowed_domains[0]", "public_url: https://auth.example.com\nupstream: builtin:whoami\naccess: { allowed_domains: [ @ ] }\n", &["access: "]),
    ("access.allowed_emails[0]", "public_url: https://auth.example.com\nupstream: builtin:whoami\naccess: { allowed_emails: [ @ ] }\n", &["access: "]),
    ("limits.header_read_timeout", "{BASE}limits: { header_read_timeout: @ }\n", &[]),
    ("routes[0].session.idle_timeout", "{BASE}routes: [ { host: app.example.com, upstream: \"http://127.0.0.1:1\", session: { idle_timeout: @ } } ]\n", &[]),
];

/// A YAML double-quoted scalar whose value is exactly `s`.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            ' '..='~' => q.push(c),
            c if (c as u32) < 0x80 => q.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    q.push('"');
    q
}

/// The longest session.ttl / idle_timeout the validator accepts (3650 days).
const TEN_YEARS: Duration = Duration::from_secs(3650 * 24 * 3600);

fn check_error(e: &ConfigError) {
    let text = e.to_string();
    assert!(!e.problems.is_empty(), "error without problems");
    assert!(e.problems.iter().all(|p| !p.trim().is_empty()), "empty problem: {text}");
    assert!(text.contains("fuzz.yaml"), "no file name: {text}");
    assert_eq!(text.lines().count(), e.problems.iter().map(|p| p.lines().count()).sum::<usize>() + 1);
}

/// Accepted durations must be usable in the arithmetic that consumes them: session expiry and idle
/// checks add them to a Unix time in seconds (u64: src/auth/session.rs, src/store/mod.rs), hyper
/// adds the header read timeout to `Instant::now()` (panics on overflow).
/// (Found by this target: the validator had no upper bounds; fixed, see README.md.)
fn check_durations(c: &Config) {
    // Unix time in seconds up to the year ~2514: sessions must still expire after their ttl then.
    let horizon: u64 = 1 << 34;
    let mut unix = vec![("session.ttl", c.session.ttl), ("login.ttl", c.login.ttl)];
    unix.extend(c.session.idle_timeout.map(|d| ("session.idle_timeout", d)));
    unix.extend(c.routes.iter().filter_map(|r| r.idle_timeout.map(|d| ("route idle_timeout", d))));
    for (k, d) in unix {
        assert!(horizon.checked_add(d.as_secs()).is_some(), "{k} = {d:?} overflows now + ttl");
    }
    let h = c.limits.header_read_timeout;
    assert!(Instant::now().checked_add(h).is_some(), "limits.header_read_timeout = {h:?} overflows Instant");
}

fn check_config(c: &Config) {
    check_durations(c);
    assert!(matches!(c.public_url.scheme(), "http" | "https"));
    assert!(c.public_url.host_str().is_some());
    assert_eq!(c.public_url.path(), "/");
    assert!(url::Url::parse(&c.public_link("/")).is_ok());
    assert!(!c.routes.is_empty());
    assert!(!c.login.ttl.is_zero() && c.login.ttl <= Duration::from_secs(86400));
    assert!((4..=10).contains(&c.login.code_length));
    assert!(!c.session.ttl.is_zero());
    assert!(c.session.idle_timeout.is_none_or(|d| !d.is_zero()));
    if let Some(d) = &c.session.cookie_domain {
        let host = c.public_url.host_str().unwrap_or_default().to_ascii_lowercase();
        assert!(host == *d || host.ends_with(&format!(".{d}")), "{d} does not cover {host}");
    }
    for r in &c.routes {
        assert!(r.public || !r.access.allowed_domains.is_empty() || !r.access.allowed_emails.is_empty());
        let np = normalize_path(&r.path_prefix);
        assert_eq!(np.as_deref().map(|n| n.trim_end_matches('/')), Some(r.path_prefix.trim_end_matches('/')));
    }
    for a in &c.admins {
        assert_eq!(parse_address(a).map(|a| a.canonical().to_string()).as_deref(), Ok(a.as_str()));
    }
}

/// Whether a string inside the file may name a device, pipe or /proc file: Config::parse reads
/// the files a config names (allowed_emails_file, templates, password_file), by design.
fn risky_path(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    ["dev", "proc", "sys", "fd", "run", "tmp", "std", "tty"].iter().any(|w| l.contains(w))
}

fn any_risky(v: &serde_yaml::Value) -> bool {
    use serde_yaml::Value;
    match v {
        Value::String(s) => risky_path(s),
        Value::Sequence(xs) => xs.iter().any(any_risky),
        Value::Mapping(m) => m.iter().any(|(k, v)| any_risky(k) || any_risky(v)),
        Value::Tagged(t) => any_risky(&t.value),
        _ => false,
    }
}

fn whole_file(text: &str) {
    if risky_path(text) {
        return;
    }
    if serde_yaml::from_str::<serde_yaml::Value>(text).is_ok_and(|v| any_risky(&v)) {
        return;
    }
    match Config::parse(text, Path::new("fuzz.yaml")) {
        Ok(c) => check_config(&c),
        Err(e) => check_error(&e),
    }
}

fn field(i: usize, value: &str) {
    let (key, tpl, also) = FIELDS[i];
    let text = tpl.replace("{BASE}", BASE).replace('@', &quote(value));
    let res = Config::parse(&text, Path::new("fuzz.yaml"));
    match &res {
        Ok(c) => check_config(c),
        Err(e) => {
            check_error(e);
            for p in &e.problems {
                assert!(
                    p.starts_with(key) || also.iter().any(|a| p.starts_with(a)),
                    "problem not about {key} for {value:?}: {e}"
                );
            }
        }
    }
    let d = humantime::parse_duration(value.trim());
    let ok = res.is_ok();
    let ctx = || format!("{key} = {value:?}: {:?}", res.as_ref().err());
    match key {
        "login.ttl" => {
            let want = d.as_ref().is_ok_and(|d| !d.is_zero() && *d <= Duration::from_secs(86400));
            assert_eq!(ok, want, "{}", ctx());
            if let Ok(c) = &res {
                assert_eq!(Ok(c.login.ttl), d);
            }
        }
        "session.idle_timeout" => {
            assert_eq!(ok, d.as_ref().is_ok_and(|d| *d <= TEN_YEARS), "{}", ctx());
            if let (Ok(c), Ok(d)) = (&res, &d) {
                assert_eq!(c.session.idle_timeout, Some(*d).filter(|d| !d.is_zero()));
            }
        }
        "session.ttl" => {
            assert_eq!(ok, d.as_ref().is_ok_and(|d| !d.is_zero() && *d <= TEN_YEARS), "{}", ctx());
            if let Ok(c) = &res {
                assert_eq!(Ok(c.session.ttl), d);
            }
        }
        "headers.jwt_ttl" => {
            let want = d.as_ref().is_ok_and(|d| !d.is_zero() && *d <= Duration::from_secs(300));
            assert_eq!(ok, want, "{}", ctx());
        }
        "login.resend_cooldown" => {
            assert_eq!(ok, d.as_ref().is_ok_and(|d| *d <= Duration::from_secs(3600)), "{}", ctx());
            if let Ok(c) = &res {
                assert_eq!(Ok(c.login.resend_cooldown), d);
            }
        }
        "session.cookie_domain" => {
            if let Ok(c) = &res {
                let bare = value.strip_prefix('.').unwrap_or(value);
                assert_eq!(c.session.cookie_domain.as_deref(), parse_domain(bare).ok().as_deref());
            }
        }
        "admins[0]" => {
            assert_eq!(ok, parse_address(value).is_ok(), "{}", ctx());
        }
        "access.allowed_domains[0]" => {
            assert_eq!(ok, parse_domain(value).is_ok(), "{}", ctx());
        }
        "access.allowed_emails[0]" => {
            assert_eq!(ok, parse_address(value).is_ok(), "{}", ctx());
        }
        "routes[0].public_paths[0]" => {
            if ok {
                let n = normalize_path(value).expect("accepted public path normalises");
                assert!(n == value || n == value.trim_end_matches('/'), "{value:?} -> {n:?}");
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if (mode as usize) < FIELDS.len() {
        field(mode as usize, text);
    } else {
        whole_file(text);
    }
});
