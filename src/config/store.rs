//! Validation of `store:`: sled in `data_dir` (the default) or a Redis/Valkey URL, TLS or Sentinel, with its key prefix and timeout.

use std::time::Duration;

use super::file::RawStore;
use super::Validator;
use crate::store::redis::{RedisConfig, Target};
use crate::store::StoreConfig;

/// The key prefix unless configured.
pub const DEFAULT_PREFIX: &str = "portcullis:";
/// Connect and command timeout unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

impl Validator {
    /// `store:` → which backend, every problem reported under its own key.
    pub(super) fn store(&mut self, raw: &RawStore) -> StoreConfig {
        let timeout = match &raw.timeout {
            Some(t) => {
                let d = self.duration("store.timeout", t);
                if d < Duration::from_millis(50) || d > Duration::from_secs(30) {
                    self.problem(
                        "store.timeout",
                        format!("`{t}` must be between 50ms and 30s"),
                    );
                }
                d
            }
            None => DEFAULT_TIMEOUT,
        };
        let prefix = raw.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
        if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problem(
                "store.prefix",
                "at most 64 characters, no spaces or control characters",
            );
        }
        let url = raw.url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let target = match (url, raw.sentinels.is_empty()) {
            (None | Some("sled"), true) => {
                if raw.master_name.is_some() {
                    self.problem("store.master_name", "only used with `store.sentinels`");
                }
                return StoreConfig::Sled;
            }
            (Some("sled"), false) => {
                self.problem(
                    "store.sentinels",
                    "only used with Redis, not with `url: sled`",
                );
                return StoreConfig::Sled;
            }
            (None, false) => {
                let master = self.master_name(raw.master_name.as_deref());
                let mut sentinels = Vec::new();
                for (i, s) in raw.sentinels.iter().enumerate() {
                    match host_port(s) {
                        Some(hp) => sentinels.push(format!("redis://{hp}")),
                        None => self.problem(
                            &format!("store.sentinels[{i}]"),
                            format!("`{s}` is not host:port"),
                        ),
                    }
                }
                Target::Sentinel {
                    sentinels,
                    master,
                    db: 0,
                    tls: false,
                    username: None,
                    password: None,
                }
            }
            (Some(u), false) => {
                let _ = u;
                self.problem(
                    "store.sentinels",
                    "give either `url` or `sentinels` (with `master_name`), not both",
                );
                return StoreConfig::Sled;
            }
            (Some(u), true) => match self.redis_url(u, raw.master_name.as_deref()) {
                Some(t) => t,
                None => return StoreConfig::Sled,
            },
        };
        StoreConfig::Redis(RedisConfig {
            target,
            prefix,
            timeout,
        })
    }

    fn master_name(&mut self, m: Option<&str>) -> String {
        match m.map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => m.to_string(),
            None => {
                self.problem(
                    "store.master_name",
                    "required with `store.sentinels` (the name Sentinel monitors, e.g. mymaster)",
                );
                String::new()
            }
        }
    }

    /// `redis://`, `rediss://` or `redis+sentinel://h:p,h:p/master[/db]`.
    fn redis_url(&mut self, u: &str, master_name: Option<&str>) -> Option<Target> {
        let key = "store.url";
        let Some((scheme, rest)) = u.split_once("://") else {
            self.problem(key, format!("`{u}` is not a URL; use sled, redis://host:6379/0, rediss://… or redis+sentinel://host:26379/mymaster"));
            return None;
        };
        match scheme {
            "redis" | "rediss" => {
                if let Err(e) = redis::Client::open(u) {
                    self.problem(key, format!("`{}`: {e}", redact(u)));
                    return None;
                }
                if master_name.is_some() {
                    self.problem("store.master_name", "only used with Sentinel");
                }
                Some(Target::Url(u.to_string()))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (auth, rest) = match rest.rsplit_once('@') {
                    Some((a, r)) => (Some(a), r),
                    None => (None, rest),
                };
                let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or((a, "")))
                {
                    Some((user, pass)) => (
                        (!user.is_empty()).then(|| user.to_string()),
                        (!pass.is_empty()).then(|| pass.to_string()),
                    ),
                    None => (None, None),
                };
                let mut parts = rest.splitn(3, '/');
                let hosts = parts.next().unwrap_or("");
                let master = parts
                    .next()
                    .map(str::to_string)
                    .filter(|m| !m.is_empty())
                    .or_else(|| master_name.map(str::to_string));
                let db = match parts.next().filter(|d| !d.is_empty()) {
                    Some(d) => match d.parse::<i64>() {
                        Ok(n) if (0..=15).contains(&n) => n,
                        _ => {
                            self.problem(key, format!("database `{d}` must be a number 0-15"));
                            0
                        }
                    },
                    None => 0,
                };
                let mut sentinels = Vec::new();
                for h in hosts.split(',') {
                    match host_port(h) {
                        Some(hp) => sentinels.push(format!("redis://{hp}")),
                        None => self.problem(key, format!("`{h}` is not host:port")),
                    }
                }
                let master = self.master_name(master.as_deref());
                Some(Target::Sentinel {
                    sentinels,
                    master,
                    db,
                    tls: scheme == "rediss+sentinel",
                    username,
                    password,
                })
            }
            other => {
                self.problem(
                    key,
                    format!("unknown scheme `{other}`; use redis, rediss or redis+sentinel"),
                );
                None
            }
        }
    }
}

/// `host:port` with a port, as written (IPv6 in brackets).
fn host_port(s: &str) -> Option<String> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    (!host.is_empty() && !host.contains('/') && !host.contains('@')).then(|| s.to_string())
}

/// A URL without its password, for messages.
fn redact(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) if p.password().is_some() => {
            let _ = p.set_password(Some("***"));
            p.to_string()
        }
        _ => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: RawStore) -> (StoreConfig, Vec<String>) {
        let mut v = Validator::default();
        let c = v.store(&raw);
        (c, v.problems)
    }

    #[test]
    fn store_urls() {
        let (c, p) = parse(RawStore::default());
        assert_eq!(c, StoreConfig::Sled);
        assert!(p.is_empty());
        let (c, p) = parse(RawStore {
            url: Some("redis://127.0.0.1:6379/2".into()),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(
            c,
            StoreConfig::Redis(RedisConfig {
                target: Target::Url(_),
                ..
            })
        ));
        let (c, p) = parse(RawStore {
            url: Some("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/3".into()),
            ..Default::default()
        });
        assert!(p.is_empty(), "{p:?}");
        let StoreConfig::Redis(RedisConfig {
            target:
                Target::Sentinel {
                    sentinels,
                    master,
                    db,
                    password,
                    ..
                },
            ..
        }) = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(sentinels.len(), 2);
        assert_eq!(
            (master.as_str(), db, password.as_deref()),
            ("mymaster", 3, Some("pw"))
        );
        for (bad, key) in [
            ("mysql://x", "store.url"),
            ("redis+sentinel://h:1", "store.master_name"),
            ("redis+sentinel://nohost/m", "store.url"),
            ("localhost:6379", "store.url"),
        ] {
            let (_, p) = parse(RawStore {
                url: Some(bad.into()),
                ..Default::default()
            });
            assert!(p.iter().any(|m| m.starts_with(key)), "{bad}: {p:?}");
        }
        let (_, p) = parse(RawStore {
            sentinels: vec!["127.0.0.1:26379".into()],
            ..Default::default()
        });
        assert!(
            p.iter().any(|m| m.starts_with("store.master_name")),
            "{p:?}"
        );
        let (_, p) = parse(RawStore {
            url: Some("redis://h:1".into()),
            timeout: Some("1ms".into()),
            ..Default::default()
        });
        assert!(p.iter().any(|m| m.starts_with("store.timeout")), "{p:?}");
    }
}
