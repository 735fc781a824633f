//! Sign-in flood control: token buckets per client network, per address and per known browser in bounded tables (O(1) per request), the global cap on pending challenges, and the signed "known browser" cookie.
//!
//! * **Buckets** are GCRA token buckets: one number per key (the "theoretical arrival time"),
//!   `burst` requests at once, then one more every `interval`. A key whose bucket is full again
//!   is the same as an absent key, so forgetting it loses nothing.
//! * **Keys.** Client networks: an IPv4 address, or an IPv6 address cut to
//!   `login.rate_limit.ipv6_prefix` bits (a /64 is one customer, not 2^64 budgets). Addresses:
//!   the canonical address. Known browsers: (browser id, address), only for a browser whose
//!   cookie proves it signed in as that address before.
//! * **Tables** are sharded maps of `hash(key) -> arrival time` plus a queue in (roughly)
//!   insertion order. Every insertion looks at the first [`TIDY`] queued keys (at most [`SCAN`]
//!   when the shard is full), drops those whose bucket is full again and moves the others to the
//!   back: constant work per request, and the size never exceeds the capacity. A full table of
//!   still-busy keys evicts the oldest (client networks: a forgotten network merely gets a fresh
//!   budget) or refuses the new key (addresses and browsers: forgetting them would hand out a
//!   new burst of mail to someone who already had one).
//! * **Pending cap.** New challenges are counted against `login.max_pending` before any work is
//!   done; the sweeper re-counts the store after every sweep. Known browsers may use a reserve of
//!   a tenth above the cap, so a flood of fresh addresses does not lock returning users out.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use http::{header, HeaderMap};
use sha2::Sha256;

use crate::config::Config;

/// Shards per table (each its own lock).
const SHARDS: usize = 16;
/// Queued keys looked at on every insertion, to forget idle ones as traffic goes on.
pub const TIDY: usize = 2;
/// Queued keys looked at, at most, by one insertion into a full shard.
pub const SCAN: usize = 8;
/// Keys each table remembers by default (a full table takes 3 to 6 MiB, the hash table's
/// buckets depending on how much it has churned).
pub const DEFAULT_ENTRIES: usize = 65_536;
/// `Retry-After` when the pending cap is reached: the sweeper's period, the soonest that room
/// can appear.
pub const CAP_RETRY_SECS: u64 = crate::store::SWEEP_PERIOD.as_secs();
/// Addresses one known-browser cookie vouches for (newest first).
const KNOWN_PER_BROWSER: usize = 8;
/// Lifetime of the known-browser cookie (the longest browsers keep one).
const KNOWN_MAX_AGE: i64 = 400 * 24 * 3600;
/// Domain label of the known-browser MAC: the key (`AppState::secret`, the server's own MAC
/// key) may serve other MACs too, each with its own label.
const KNOWN_LABEL: &[u8] = b"portcullis/known-browser/v1\0";

/// Who asked, for the mail ("requested from … with …") and the session record.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub ip: String,
    pub user_agent: String,
    /// The known-browser cookie it presented (its own sign-in budget).
    pub known: KnownBrowser,
}

/// A token bucket: `burst` requests at once, then one every `interval_us` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    interval_us: u64,
    burst: u32,
}

impl Bucket {
    /// `count` requests per `period` on average, `burst` at once.
    pub fn new(count: u32, period: Duration, burst: u32) -> Bucket {
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        Bucket {
            interval_us: (period_us / u64::from(count.max(1))).max(1),
            burst: burst.max(1),
        }
    }

    /// Microseconds between two requests on average.
    pub fn interval_us(&self) -> u64 {
        self.interval_us
    }

    /// How far ahead of `now` the arrival time may run before requests are refused.
    pub fn tolerance(&self) -> u64 {
        self.interval_us.saturating_mul(u64::from(self.burst - 1))
    }
}

/// Why a request was refused, with the seconds after which it may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A bucket is empty (429).
    Limited(u64),
    /// The pending cap is reached, or a table is full of busy keys (503).
    Busy(u64),
}

/// What a table does when a new key finds it full of busy keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    EvictOldest,
    Refuse,
}

/// Keys are already keyed hashes (SipHash, random per process): the map uses them as they are.
#[derive(Debug, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Key hash -> theoretical arrival time (µs).
    tat: HashMap<u64, u64, BuildHasherDefault<KeyHasher>>,
    /// Every key of `tat` exactly once, oldest (or longest unexamined) first.
    order: VecDeque<u64>,
}

impl Shard {
    /// Forgets idle keys at the head of the queue and makes room for one more key. Returns how
    /// many queued keys were looked at (at most [`SCAN`] + 1).
    fn make_room(&mut self, now: u64, cap: usize, overflow: Overflow) -> Result<usize, Denied> {
        let mut examined = 0;
        let mut soonest = u64::MAX;
        while examined < SCAN && (examined < TIDY || self.order.len() >= cap) {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            examined += 1;
            match self.tat.get(&k) {
                Some(&t) if t > now => {
                    soonest = soonest.min(t);
                    self.order.push_back(k);
                }
                _ => {
                    self.tat.remove(&k);
                }
            }
        }
        if self.order.len() >= cap {
            match overflow {
                Overflow::EvictOldest => {
                    if let Some(k) = self.order.pop_front() {
                        examined += 1;
                        self.tat.remove(&k);
                    }
                }
                Overflow::Refuse => {
                    return Err(Denied::Busy(secs_ceil(soonest.saturating_sub(now))));
                }
            }
        }
        Ok(examined)
    }
}

/// Microseconds to whole seconds for `Retry-After` (at least 1, at most a day).
pub fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000).clamp(1, 86_400)
}

/// One bounded, sharded table of buckets.
#[derive(Debug)]
struct Table {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    overflow: Overflow,
}

impl Table {
    fn new(entries: usize, overflow: Overflow) -> Table {
        Table {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: entries.div_ceil(SHARDS).max(1),
            overflow,
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        // Middle bits: the map itself uses the low ones (bucket) and the top seven (tag).
        // SHARDS is a small constant: the cast cannot truncate.
        let i = ((key >> 32) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks (and with `commit`, spends) one request of `key`. Returns how many other keys
    /// were looked at (the work done: at most [`SCAN`] + 1).
    fn take(&self, key: u64, b: Bucket, now: u64, commit: bool) -> Result<usize, Denied> {
        let mut s = self.shard(key);
        if let Some(tat) = s.tat.get_mut(&key) {
            let t = (*tat).max(now);
            let tolerance = b.tolerance();
            if t - now > tolerance {
                return Err(Denied::Limited(secs_ceil(t - tolerance - now)));
            }
            if commit {
                *tat = t.saturating_add(b.interval_us);
            }
            return Ok(0);
        }
        if !commit {
            return Ok(0);
        }
        let examined = s.make_room(now, self.per_shard, self.overflow)?;
        s.tat.insert(key, now.saturating_add(b.interval_us));
        s.order.push_back(key);
        Ok(examined)
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).tat.len())
            .sum()
    }
}

/// The limits of one request, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Per client network (`login.rate_limit.per_ip_per_minute`, burst the same).
    pub network: Bucket,
    /// Per address, shared by everyone, and separately per known browser
    /// (`per_email_per_hour`, `per_email_burst`).
    pub address: Bucket,
    /// `login.max_pending`.
    pub max_pending: usize,
}

impl Limits {
    pub fn of(cfg: &Config) -> Limits {
        let l = &cfg.login;
        Limits {
            network: Bucket::new(
                l.per_ip_per_minute,
                Duration::from_secs(60),
                l.per_ip_per_minute,
            ),
            address: Bucket::new(
                l.per_email_per_hour,
                Duration::from_secs(3600),
                l.per_email_burst,
            ),
            max_pending: l.max_pending,
        }
    }
}

/// What a request asks for: a new challenge counts against the pending cap, a resend does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    NewChallenge,
    Resend,
}

/// Counts sign-in requests. Only the sign-in endpoints use it, never proxied traffic.
#[derive(Debug)]
pub struct RateLimiter {
    hasher: RandomState,
    networks: Table,
    addresses: Table,
    browsers: Table,
    /// Challenges in the store (plus ones being created), for `login.max_pending`.
    pending: AtomicUsize,
    /// When the last "cap reached" warning was logged (Unix seconds).
    warned_at: AtomicU64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_ENTRIES)
    }
}

impl RateLimiter {
    /// A limiter whose tables remember at most `entries` keys each.
    pub fn with_capacity(entries: usize) -> RateLimiter {
        RateLimiter {
            hasher: RandomState::new(),
            networks: Table::new(entries, Overflow::EvictOldest),
            addresses: Table::new(entries, Overflow::Refuse),
            browsers: Table::new(entries / 4, Overflow::Refuse),
            pending: AtomicUsize::new(0),
            warned_at: AtomicU64::new(0),
        }
    }

    fn key(&self, tag: u8, parts: &[&[u8]]) -> u64 {
        let mut h = self.hasher.build_hasher();
        tag.hash(&mut h);
        for p in parts {
            p.hash(&mut h);
        }
        h.finish()
    }

    /// Admits or refuses one sign-in request at `now` (Unix seconds). `network` is the client's
    /// [`network_of`]; `browser` the id of a known browser that vouches for `email`.
    pub fn check(
        &self,
        limits: &Limits,
        network: &str,
        email: &str,
        browser: Option<&str>,
        purpose: Purpose,
        now: u64,
    ) -> Result<(), Denied> {
        let now = now.saturating_mul(1_000_000);
        let new = purpose == Purpose::NewChallenge;
        if new {
            self.reserve(limits.max_pending, browser.is_some())?;
        }
        let result = match browser {
            // A known browser spends only its own budget: nobody else can empty it.
            Some(id) => {
                let k = self.key(b'b', &[id.as_bytes(), email.as_bytes()]);
                self.browsers.take(k, limits.address, now, true).map(drop)
            }
            None => {
                let ka = self.key(b'e', &[email.as_bytes()]);
                let kn = self.key(b'n', &[network.as_bytes()]);
                // An exhausted address does not cost the client its network budget.
                self.addresses
                    .take(ka, limits.address, now, false)
                    .and_then(|_| self.networks.take(kn, limits.network, now, true))
                    .and_then(|_| self.addresses.take(ka, limits.address, now, true))
                    .map(drop)
            }
        };
        if result.is_err() && new {
            self.release();
        }
        result
    }

    /// Takes one pending slot, or refuses when the cap (plus the known browsers' reserve) is full.
    pub fn reserve(&self, max: usize, known: bool) -> Result<(), Denied> {
        let limit = if known {
            max.saturating_add((max / 10).max(1))
        } else {
            max
        };
        self.pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                (p < limit).then_some(p + 1)
            })
            .map(|_| ())
            .map_err(|_| Denied::Busy(CAP_RETRY_SECS))
    }

    /// Gives back a slot taken by [`RateLimiter::reserve`] for a request refused after all.
    pub fn release(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1));
    }

    /// Challenges counted against `login.max_pending`.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Sets the pending count (tests; the sweeper uses [`RateLimiter::rebase_pending`]).
    pub fn set_pending(&self, n: usize) {
        self.pending.store(n, Ordering::SeqCst);
    }

    /// The store holds `stored` challenges, counted since the pending count was `before`: the
    /// count becomes `stored` plus whatever was admitted meanwhile.
    pub fn rebase_pending(&self, before: usize, stored: usize) {
        let _ = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(stored.saturating_add(p.saturating_sub(before)))
            });
    }

    /// Keys remembered: (client networks, addresses, known browsers).
    pub fn entries(&self) -> (usize, usize, usize) {
        (
            self.networks.len(),
            self.addresses.len(),
            self.browsers.len(),
        )
    }

    /// Whether a "cap reached" warning is due (at most one a minute).
    pub fn warn_due(&self, now: u64) -> bool {
        let last = self.warned_at.load(Ordering::Relaxed);
        now >= last.saturating_add(60)
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The rate-limit key of a client IP: an IPv4 address as is, an IPv6 address cut to `v6_prefix`
/// bits (`2001:db8:1:2::/64`); IPv4-mapped IPv6 counts as IPv4. Anything unparsable is used as is.
pub fn network_of(ip: &str, v6_prefix: u8) -> String {
    match ip.parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{net}/{bits}")
        }
        Err(_) => ip.to_string(),
    }
}

/// The known-browser cookie as presented: a random browser id and MACs over (id, address) of
/// the addresses this browser signed in as. Carries no authority beyond a sign-in budget.
#[derive(Debug, Clone, Default)]
pub struct KnownBrowser {
    id: Option<String>,
    tags: Vec<[u8; 16]>,
}

/// The known-browser cookie's name.
pub fn known_cookie_name(cfg: &Config) -> String {
    format!("{}_known", cfg.session.cookie_name)
}

fn known_tag(secret: &[u8], id: &str, email: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // HMAC takes keys of any length; the error arm cannot happen.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(KNOWN_LABEL);
        mac.update(id.as_bytes());
        mac.update(&[0]);
        mac.update(email.as_bytes());
        let full = mac.finalize().into_bytes();
        out.copy_from_slice(&full[..16]);
    }
    out
}

fn is_id(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KnownBrowser {
    /// Reads the cookie (`{id}.{tag}.{tag}…`); anything malformed counts as no cookie.
    pub fn from_headers(cfg: &Config, headers: &HeaderMap) -> KnownBrowser {
        let name = known_cookie_name(cfg);
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(';'))
            .filter_map(|p| p.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v);
        let Some(value) = value else {
            return KnownBrowser::default();
        };
        let mut parts = value.split('.');
        let Some(id) = parts.next().filter(|id| is_id(id)) else {
            return KnownBrowser::default();
        };
        let tags = parts
            .take(KNOWN_PER_BROWSER)
            .filter_map(|t| URL_SAFE_NO_PAD.decode(t).ok())
            .filter_map(|t| <[u8; 16]>::try_from(t.as_slice()).ok())
            .collect();
        KnownBrowser {
            id: Some(id.to_string()),
            tags,
        }
    }

    /// The browser id, when this cookie proves an earlier sign-in as `email`.
    pub fn vouches_for(&self, secret: &[u8], email: &str) -> Option<&str> {
        let id = self.id.as_deref()?;
        let want = known_tag(secret, id, email);
        // Check every tag, so the time taken does not say which one matched.
        let found = self
            .tags
            .iter()
            .fold(false, |acc, t| crate::crypto::ct_eq(t, &want) | acc);
        found.then_some(id)
    }

    /// The cookie to set after a sign-in as `email`: same browser id (or a new one), `email`
    /// first, at most [`KNOWN_PER_BROWSER`] addresses.
    pub fn after_sign_in(&self, secret: &[u8], cfg: &Config, email: &str) -> Cookie<'static> {
        let id = self.id.clone().unwrap_or_else(crate::crypto::random_id);
        let tag = known_tag(secret, &id, email);
        let mut value = id.clone();
        value.push('.');
        value.push_str(&URL_SAFE_NO_PAD.encode(tag));
        // Tags of another id cannot verify: drop them with the id.
        if self.id.is_some() {
            for t in self
                .tags
                .iter()
                .filter(|t| **t != tag)
                .take(KNOWN_PER_BROWSER - 1)
            {
                value.push('.');
                value.push_str(&URL_SAFE_NO_PAD.encode(t));
            }
        }
        Cookie::build((known_cookie_name(cfg), value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/.auth/")
            .secure(cfg.secure_cookies())
            .max_age(cookie::time::Duration::seconds(KNOWN_MAX_AGE))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    fn limits(per_ip: u32, per_hour: u32, burst: u32, max_pending: usize) -> Limits {
        Limits {
            network: Bucket::new(per_ip, Duration::from_secs(60), per_ip),
            address: Bucket::new(per_hour, Duration::from_secs(3600), burst),
            max_pending,
        }
    }

    #[test]
    fn network_budget_refills_steadily() {
        let r = RateLimiter::default();
        let l = limits(3, 1000, 1000, 1000);
        let t = 1_000_000;
        for i in 0..3 {
            let e = format!("u{i}@x.org");
            r.check(&l, "ip1", &e, None, Purpose::Resend, t).unwrap();
        }
        // One request every 20 s on average: the next is 20 s away.
        assert_eq!(
            r.check(&l, "ip1", "u9@x.org", None, Purpose::Resend, t + 10),
            Err(Denied::Limited(10))
        );
        assert!(r
            .check(&l, "ip2", "u9@x.org", None, Purpose::Resend, t + 10)
            .is_ok());
        assert!(r
            .check(&l, "ip1", "u9@x.org", None, Purpose::Resend, t + 20)
            .is_ok());
        assert!(r
            .check(&l, "ip1", "u9@x.org", None, Purpose::Resend, t + 20)
            .is_err());
        assert!(r
            .check(&l, "ip1", "u9@x.org", None, Purpose::Resend, t + MIN + 20)
            .is_ok());
    }

    #[test]
    fn an_exhausted_address_waits_one_interval_and_mail_per_hour_is_bounded() {
        let r = RateLimiter::default();
        let l = limits(1000, 12, 10, 1000);
        let t = 1_000_000;
        for i in 0..10 {
            r.check(&l, &format!("ip{i}"), "v@x.org", None, Purpose::Resend, t)
                .unwrap();
        }
        assert_eq!(
            r.check(&l, "fresh", "v@x.org", None, Purpose::Resend, t),
            Err(Denied::Limited(300))
        );
        // An exhausted address did not cost the fresh client its network budget.
        assert_eq!(r.networks.len(), 10);
        // A known browser is never held up by the others.
        assert!(r
            .check(&l, "fresh", "v@x.org", Some("b1"), Purpose::Resend, t)
            .is_ok());
        // A sustained attack (one try a second for an hour, from ever new networks) gets
        // at most burst + 12 through in the first hour.
        let mut admitted = 0;
        for s in 0..3600 {
            if r.check(
                &l,
                &format!("n{s}"),
                "w@x.org",
                None,
                Purpose::Resend,
                t + s,
            )
            .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10 + 12 - 1);
    }

    #[test]
    fn pending_cap_refuses_before_counting_and_keeps_a_reserve_for_known_browsers() {
        let r = RateLimiter::default();
        let l = limits(1000, 1000, 1000, 20);
        let t = 1_000_000;
        for i in 0..20 {
            r.check(
                &l,
                "n",
                &format!("a{i}@x.org"),
                None,
                Purpose::NewChallenge,
                t,
            )
            .unwrap();
        }
        assert_eq!(
            r.check(&l, "n", "z@x.org", None, Purpose::NewChallenge, t),
            Err(Denied::Busy(CAP_RETRY_SECS))
        );
        // A resend creates no challenge.
        assert!(r
            .check(&l, "n", "a1@x.org", None, Purpose::Resend, t)
            .is_ok());
        // Known browsers have a reserve of a tenth.
        for _ in 0..2 {
            r.check(&l, "n", "k@x.org", Some("b"), Purpose::NewChallenge, t)
                .unwrap();
        }
        assert!(r
            .check(&l, "n", "k@x.org", Some("b"), Purpose::NewChallenge, t)
            .is_err());
        assert_eq!(r.pending(), 22);
        // Refused by a bucket: the slot is given back.
        let tight = limits(1, 1000, 1000, 100);
        r.set_pending(0);
        r.check(&tight, "m", "q@x.org", None, Purpose::NewChallenge, t)
            .unwrap();
        assert!(r
            .check(&tight, "m", "q2@x.org", None, Purpose::NewChallenge, t)
            .is_err());
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn a_million_distinct_keys_stay_bounded_with_constant_work() {
        let entries = 4096;
        let r = RateLimiter::with_capacity(entries);
        let l = limits(5, 12, 10, usize::MAX);
        let t: u64 = 1_000_000;
        let (mut busy, mut most_examined) = (0, 0);
        for i in 0..1_000_000u64 {
            // A thousand new keys a second: many still busy when the tables fill up.
            let now = (t + i / 1000) * 1_000_000;
            let id = i.to_le_bytes();
            for (table, bucket, tag) in [
                (&r.networks, l.network, b'n'),
                (&r.addresses, l.address, b'e'),
            ] {
                match table.take(r.key(tag, &[&id]), bucket, now, true) {
                    Ok(examined) => most_examined = most_examined.max(examined),
                    Err(Denied::Busy(s)) => {
                        assert!(s <= 300, "{s}");
                        busy += 1;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        assert!(busy > 0, "the address table never filled up");
        // O(1) per request: no insertion looked at more than SCAN queued keys (+1 evicted).
        assert!(most_examined <= SCAN + 1, "{most_examined}");
        let per_shard = entries / SHARDS;
        for table in [&r.networks, &r.addresses] {
            for s in &table.shards {
                let s = s.lock().unwrap();
                assert!(s.tat.len() <= per_shard, "{}", s.tat.len());
                assert_eq!(s.tat.len(), s.order.len());
                // Allocated, not just used: under churn the hash table rehashes in place once
                // it holds at most half its buckets, so it never has more than 4x the keys.
                assert!(s.tat.capacity() <= 4 * per_shard, "{}", s.tat.capacity());
                assert!(
                    s.order.capacity() <= 2 * per_shard,
                    "{}",
                    s.order.capacity()
                );
            }
        }
        let (n, a, b) = r.entries();
        assert!(n <= entries && a <= entries && b == 0, "{n} {a} {b}");
        // The same through the whole check, one request per key.
        for i in 0..20_000u64 {
            let _ = r.check(
                &l,
                &format!("m{i}"),
                &format!("{i}@y.org"),
                None,
                Purpose::Resend,
                t + 5000 + i / 1000,
            );
        }
        let (n, a, _) = r.entries();
        assert!(n <= entries && a <= entries, "{n} {a}");
    }

    #[test]
    fn one_insertion_looks_at_a_bounded_number_of_keys() {
        let mut s = Shard::default();
        let now = 10;
        // A full shard of busy keys: refused (or evicted) after at most SCAN (+1) looks.
        for k in 0..1000u64 {
            s.tat.insert(k, now + 1 + k);
            s.order.push_back(k);
        }
        assert_eq!(
            s.make_room(now, 1000, Overflow::Refuse),
            Err(Denied::Busy(1))
        );
        assert_eq!(s.make_room(now, 1000, Overflow::EvictOldest), Ok(SCAN + 1));
        assert_eq!(s.tat.len(), 999);
        // Not full: only TIDY looks, and idle keys are forgotten on the way.
        let later = now + 5_000;
        assert_eq!(s.make_room(later, 100_000, Overflow::Refuse), Ok(TIDY));
        assert_eq!(s.tat.len(), s.order.len());
    }

    #[test]
    fn ipv6_networks_are_cut_to_the_prefix() {
        assert_eq!(network_of("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(
            network_of("2001:db8:1:2:bbbb:cccc:dddd:eeee", 64),
            "2001:db8:1:2::/64"
        );
        assert_ne!(network_of("2001:db8:1:3::1", 64), "2001:db8:1:2::/64");
        assert_eq!(network_of("2001:db8:1:2ff::1", 56), "2001:db8:1:200::/56");
        assert_eq!(network_of("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(network_of("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(network_of("2001:db8::1", 128), "2001:db8::1/128");
    }

    #[test]
    fn known_browser_cookie_vouches_only_for_its_addresses() {
        let cfg = crate::config::Config::parse(
            "public_url: http://127.0.0.1:8080\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let secret = b"server secret";
        let c = KnownBrowser::default().after_sign_in(secret, &cfg, "a@example.com");
        assert_eq!(c.name(), "portcullis_session_known");
        assert_eq!(c.path(), Some("/.auth/"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("other=1; {}={}", c.name(), c.value())
                .parse()
                .unwrap(),
        );
        let kb = KnownBrowser::from_headers(&cfg, &h);
        let id = kb.vouches_for(secret, "a@example.com").unwrap().to_string();
        assert!(kb.vouches_for(secret, "b@example.com").is_none());
        assert!(kb.vouches_for(b"other secret", "a@example.com").is_none());
        // A second address joins the same browser id.
        let c2 = kb.after_sign_in(secret, &cfg, "b@example.com");
        h.insert(
            header::COOKIE,
            format!("{}={}", c2.name(), c2.value()).parse().unwrap(),
        );
        let kb2 = KnownBrowser::from_headers(&cfg, &h);
        assert_eq!(kb2.vouches_for(secret, "a@example.com"), Some(id.as_str()));
        assert_eq!(kb2.vouches_for(secret, "b@example.com"), Some(id.as_str()));
        // Another id with copied tags proves nothing.
        let forged = format!(
            "{}.{}",
            "A".repeat(22),
            c2.value().split_once('.').unwrap().1
        );
        h.insert(
            header::COOKIE,
            format!("{}={forged}", c2.name()).parse().unwrap(),
        );
        assert!(KnownBrowser::from_headers(&cfg, &h)
            .vouches_for(secret, "a@example.com")
            .is_none());
    }
}
