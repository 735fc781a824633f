//! Rate limits for sign-in requests: fixed windows per client IP and per canonical email address.

use std::collections::HashMap;
use std::sync::Mutex;

/// A window's start and how many requests it has seen.
type Windows = HashMap<String, (u64, u32)>;

/// Counts requests per key in fixed windows. Only the sign-in endpoints use it, never proxied traffic.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<Windows>,
}

/// Entries kept before stale windows are pruned.
const PRUNE_AT: usize = 50_000;

impl RateLimiter {
    /// Counts one request for `key`; `Err(retry_after_seconds)` when `limit` is already reached in the window.
    pub fn hit(&self, key: &str, limit: u32, window: u64, now: u64) -> Result<(), u64> {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if w.len() >= PRUNE_AT {
            // Keys are namespaced (`ip:`/`email:`) and windows at most an hour long.
            w.retain(|_, (start, _)| now < *start + 3600);
        }
        let entry = w.entry(key.to_string()).or_insert((now, 0));
        if now >= entry.0 + window {
            *entry = (now, 0);
        }
        if entry.1 >= limit {
            return Err((entry.0 + window).saturating_sub(now).max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Checks without counting.
    pub fn would_allow(&self, key: &str, limit: u32, window: u64, now: u64) -> Result<(), u64> {
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match w.get(key) {
            Some((start, count)) if now < start + window && *count >= limit => {
                Err((start + window).saturating_sub(now).max(1))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_then_resets() {
        let r = RateLimiter::default();
        for _ in 0..3 {
            r.hit("ip:1", 3, 60, 1000).unwrap();
        }
        assert_eq!(r.hit("ip:1", 3, 60, 1010), Err(50));
        assert!(r.would_allow("ip:1", 3, 60, 1010).is_err());
        assert!(r.hit("ip:2", 3, 60, 1010).is_ok());
        assert!(r.hit("ip:1", 3, 60, 1060).is_ok());
    }
}
