//! Connection caps (per client and in total) with RAII slots, rate-limited refusal logging,
//! back-off when `accept` runs out of descriptors or memory, and the open-file limit check.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The answer a refused plain-HTTP connection gets before it is closed.
pub const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n";

/// Whom a per-client count belongs to: an IPv4 address, or the /64 network of an IPv6 address
/// (one subscriber usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6Net(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(u32::from(a)),
            IpAddr::V6(a) => ClientKey::V6Net((u128::from(a) >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClientKey::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(a)),
            ClientKey::V6Net(n) => write!(f, "{}/64", Ipv6Addr::from(u128::from(n) << 64)),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` connections are open.
    Total,
    /// `limits.max_connections_per_ip` connections of this client are open.
    PerClient,
}

impl Refusal {
    fn key(self) -> &'static str {
        match self {
            Refusal::Total => "limits.max_connections",
            Refusal::PerClient => "limits.max_connections_per_ip",
        }
    }
}

const SHARDS: usize = 64;

/// Counts open connections, in total and per client. Admission is one atomic add plus, for a
/// counted client, one short lock of one of 64 shards; a [`ConnSlot`] gives its place back when
/// dropped, i.e. when the socket is closed (after an upgrade too: the slot travels with the socket).
pub struct ConnLimiter {
    total: AtomicUsize,
    shards: Vec<Mutex<HashMap<ClientKey, usize>>>,
    hasher: RandomState,
}

/// One admitted connection's place in the counts.
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    key: Option<ClientKey>,
}

impl fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSlot").field("key", &self.key).finish()
    }
}

impl ConnLimiter {
    pub fn new() -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            total: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn shard(&self, key: ClientKey) -> MutexGuard<'_, HashMap<ClientKey, usize>> {
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        // A poisoned shard only means a panic elsewhere while holding it; the counts are still usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot, or says which cap is reached. `key: None` (a trusted proxy) counts only
    /// towards the total.
    pub fn admit(
        self: &Arc<Self>,
        key: Option<ClientKey>,
        max_total: usize,
        max_per_client: usize,
    ) -> Result<ConnSlot, Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        if let Some(k) = key {
            let mut shard = self.shard(k);
            let n = shard.get(&k).copied().unwrap_or(0);
            if n >= max_per_client {
                drop(shard);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerClient);
            }
            shard.insert(k, n + 1);
        }
        Ok(ConnSlot {
            limiter: self.clone(),
            key,
        })
    }

    /// Connections open for one client (tests and diagnostics).
    pub fn open_for(&self, key: ClientKey) -> usize {
        self.shard(key).get(&key).copied().unwrap_or(0)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut shard = self.limiter.shard(k);
            if let Some(n) = shard.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    shard.remove(&k);
                }
            }
        }
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Logs refused connections without letting a flood flood the log: the first refusal after a
/// quiet second is logged at once, later ones are counted and summed up at most once a second.
#[derive(Default)]
pub struct RefusalLog {
    next_report: Option<Instant>,
    total: u64,
    per_client: u64,
    last: Option<(Refusal, IpAddr)>,
}

impl RefusalLog {
    pub fn refused(&mut self, why: Refusal, peer: IpAddr, limit: usize) {
        if self.next_report.is_none() {
            tracing::warn!(
                client = %ClientKey::of(peer),
                limit,
                "connection refused: {} reached; further refusals are summed up once a second",
                why.key()
            );
            self.next_report = Some(Instant::now() + REPORT_EVERY);
            return;
        }
        match why {
            Refusal::Total => self.total += 1,
            Refusal::PerClient => self.per_client += 1,
        }
        self.last = Some((why, peer));
    }

    /// When the pending summary is due (none when nothing was refused lately).
    pub fn due(&self) -> Option<Instant> {
        self.next_report
    }

    /// Writes the summary of the last second, or ends the episode after a quiet second.
    pub fn report(&mut self) {
        if self.total + self.per_client == 0 {
            self.next_report = None;
            return;
        }
        let last = self
            .last
            .map(|(why, ip)| format!("{} ({})", ClientKey::of(ip), why.key()))
            .unwrap_or_default();
        tracing::warn!(
            refused = self.total + self.per_client,
            max_connections = self.total,
            max_connections_per_ip = self.per_client,
            last = %last,
            "connections refused in the last second"
        );
        self.total = 0;
        self.per_client = 0;
        self.last = None;
        self.next_report = Some(Instant::now() + REPORT_EVERY);
    }
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Pauses accepting while the process is out of descriptors or memory (the failing connection
/// stays in the kernel's backlog), 100 ms doubling to 1 s, with one warning per episode.
#[derive(Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
    pause: Option<Duration>,
    failures: u64,
    since: Option<Instant>,
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM (Linux numbers).
fn out_of_resources(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::OutOfMemory
        || matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

impl AcceptBackoff {
    /// Notes a failed `accept`. Errors about one connection (reset before accept…) are not a
    /// reason to pause.
    pub fn failed(&mut self, e: &std::io::Error) {
        if !out_of_resources(e) {
            tracing::debug!(error = %e, "accept failed");
            return;
        }
        self.failures += 1;
        let next = match self.delay {
            None => {
                tracing::warn!(
                    error = %e,
                    "accept failed: out of file descriptors or memory; pausing accepts (100 ms doubling to 1 s) until it passes (see LimitNOFILE and limits.max_connections)"
                );
                self.since = Some(Instant::now());
                BACKOFF_FIRST
            }
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(next);
        self.pause = Some(next);
    }

    /// The pause to take before the next `accept`, if one is due.
    pub fn take_pause(&mut self) -> Option<Duration> {
        self.pause.take()
    }

    /// Notes a successful `accept`: ends an episode.
    pub fn succeeded(&mut self) {
        if self.delay.take().is_some() {
            tracing::info!(
                failures = self.failures,
                lasted = ?self.since.map(|s| s.elapsed()).unwrap_or_default(),
                "accepting connections again"
            );
            self.failures = 0;
            self.since = None;
        }
    }
}

/// The soft open-file limit of this process (Linux; `None` when unknown or unlimited).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Warns when the open-file limit cannot hold `max_connections` proxied connections (a client
/// socket and an upstream socket each) plus the database and listeners.
pub fn check_open_file_limit(max_connections: usize) {
    let Some(limit) = open_file_limit() else {
        return;
    };
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    if limit < needed {
        tracing::warn!(
            open_file_limit = limit,
            max_connections,
            "the open-file limit is below 2 x limits.max_connections + 256: accepts will fail with \"Too many open files\" before the connection cap is reached; raise LimitNOFILE (the shipped unit sets 65536) or lower limits.max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_client_and_in_total_and_are_given_back() {
        let l = ConnLimiter::new();
        let a = ClientKey::of("192.0.2.1".parse().unwrap());
        let b = ClientKey::of("192.0.2.2".parse().unwrap());
        let s1 = l.admit(Some(a), 3, 2).ok();
        let s2 = l.admit(Some(a), 3, 2).ok();
        assert!(s1.is_some() && s2.is_some());
        assert_eq!(l.admit(Some(a), 3, 2).err(), Some(Refusal::PerClient));
        let s3 = l.admit(Some(b), 3, 2).ok();
        assert!(s3.is_some());
        assert_eq!(l.admit(None, 3, 2).err(), Some(Refusal::Total));
        assert_eq!(l.open(), 3);
        drop(s1);
        assert_eq!(l.open_for(a), 1);
        assert!(l.admit(Some(a), 3, 2).is_ok());
        drop((s2, s3));
        assert_eq!(l.open(), 0);
        assert_eq!(l.open_for(a), 0);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            ClientKey::of(ip("2001:db8:1:2::1")),
            ClientKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.7")),
            ClientKey::of(ip("192.0.2.7"))
        );
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }
}
