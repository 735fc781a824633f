//! The store interface: typed records, the [`Backend`] operations every store provides (sled embedded, Redis/Valkey shared), and the [`Store`] front that adds a short session cache and batched activity.
//!
//! Everything the gateway shares between requests and processes goes through here: challenges
//! (create, compare-and-set, redeem once), sessions (create, look up, touch, revoke, list by
//! address, sweep), the mail outbox (enqueue, claim with a lease, acknowledge, retry), rate-limit
//! buckets, the master secret when it is created in the store, and recent security events.
//! Nothing usable is written: tokens and codes only as hashes (see `auth::challenge`).

pub mod files;
pub mod redis;
pub mod secret;
pub mod sled;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Time between two sweeps of expired records (the soonest a full `login.max_pending` can have
/// room again).
pub const SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// How long a mail claimed by a worker stays its own before another worker (another replica,
/// after a crash) may take it. Longer than a send may take (the SMTP timeout is capped below it).
pub const MAIL_LEASE_SECS: u64 = 30;

/// How long a session read from the store is served from this process's memory. A revocation
/// elsewhere (another replica, the CLI on a shared store) takes effect here within this time; one
/// made by this process empties the entry at once.
pub const SESSION_CACHE_TTL: Duration = Duration::from_millis(500);

/// Storage failure. Never shown to clients beyond "internal error" or "unavailable".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] ::sled::Error),
    #[error("corrupt record in `{tree}`: {err}")]
    Corrupt { tree: &'static str, err: String },
    /// The database is closed for a moment while it is reopened after a write failure.
    #[error("the database is being reopened after a write failure")]
    Reopening,
    /// The shared store cannot be reached (connection refused or lost, timeout, failover).
    #[error("the store is unreachable: {0}")]
    Unreachable(String),
    /// The shared store answered with an error that is not about reaching it.
    #[error("the store refused a command: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether this is the storage failing (an I/O error such as a full disk, the database
    /// being reopened after one, a shared store out of reach), which passes, rather than a bad
    /// record or a bug. Answered with 503 and `Retry-After`.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Db(::sled::Error::Io(_))
                | StoreError::Reopening
                | StoreError::Unreachable(_)
        )
    }
}

/// A pending sign-in: what was asked for, by whom, and the hashes of what was mailed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Challenge {
    pub id: String,
    /// Canonical email address.
    pub email: String,
    /// False when `access` does not allow the address: no mail, never verifiable.
    pub deliverable: bool,
    /// SHA-256 of the current link token.
    pub link_hash: Option<[u8; 32]>,
    /// HMAC of the current code, keyed by the server secret and bound to `id`.
    pub code_mac: Option<[u8; 32]>,
    /// SHA-256 of the secret half of the browser-binding cookie.
    pub binding_hash: Option<[u8; 32]>,
    pub created_at: u64,
    pub expires_at: u64,
    /// Failed code attempts; never reset (not even by a resend).
    pub attempts: u32,
    pub completed: bool,
    /// Validated redirect target, kept server-side.
    pub redirect_to: String,
    pub state: Option<String>,
    pub sends: u32,
    pub last_sent_at: u64,
    pub ip: String,
    pub user_agent: String,
}

impl Challenge {
    /// Seconds a store keeps this record from its last change: its life plus a grace period in
    /// which a user gets "expired" rather than "unknown".
    pub fn keep_secs(&self) -> u64 {
        self.expires_at
            .saturating_sub(self.last_sent_at.max(self.created_at))
            .saturating_add(CHALLENGE_GRACE)
    }
}

/// Seconds an expired challenge is kept (so a late click reads "expired", not "unknown").
pub const CHALLENGE_GRACE: u64 = 60;

/// A signed-in browser or API client. Keyed by SHA-256 of its token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Short public id (hex prefix of the token hash) for listings and logs.
    pub id: String,
    pub email: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub last_seen: u64,
    pub ip: String,
    pub user_agent: String,
}

/// One queued sign-in mail. It holds no secret: the link and code are minted (and their hashes
/// written into the challenge) by the outbox worker when it sends the mail, and live only in
/// memory and in the mail itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboxItem {
    /// The challenge the mail signs in to. Empty in records of older versions (which held the
    /// rendered mail, link included): those are dropped, never sent.
    #[serde(default)]
    pub challenge_id: String,
    /// Which send of the challenge this is ([`Challenge::sends`]); an older one is dropped.
    #[serde(default)]
    pub send: u32,
    pub to: String,
    /// Who asked, shown in the mail.
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub user_agent: String,
    /// When it was asked for (shown in the mail).
    pub created_at: u64,
    /// Mail for a challenge that expired is pointless: dropped instead of sent.
    pub expires_at: u64,
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub last_error: Option<String>,
}

/// One security event (sign-in, failure, lockout, logout, revoke, denial).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub at: u64,
    pub event: String,
    pub email: String,
    pub ip: String,
    pub detail: String,
}

/// How many recent events a store keeps for the admin page.
pub const RECENT_EVENTS: usize = 200;

/// A GCRA token bucket as a store keeps it: one more request every `interval_us`, and the
/// arrival time may run `tolerance_us` ahead of now (that is the burst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub interval_us: u64,
    pub tolerance_us: u64,
}

/// Whether a backend works: 0 while it does, else since when (unix ms) it does not.
#[derive(Debug, Default)]
pub struct Health(std::sync::atomic::AtomicU64);

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Health {
    pub fn ok(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// Since when (unix ms) it fails, if it does.
    pub fn failing_since(&self) -> Option<u64> {
        match self.0.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Marks it failing. True for the first failure of an outage (the one worth a log line).
    pub fn fail(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .compare_exchange(0, now_ms().max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks it working. How long it had failed (ms), when it had.
    pub fn works(&self) -> Option<u64> {
        match self.0.swap(0, std::sync::atomic::Ordering::AcqRel) {
            0 => None,
            since => Some(now_ms().saturating_sub(since)),
        }
    }
}

/// Outcome of an atomic read-modify-write.
pub enum Modify<T, R> {
    /// Write this value and return `R`.
    Write(T, R),
    /// Leave the record as it is and return `R`.
    Keep(R),
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        err: e.to_string(),
    })
}

type R<T> = Result<T, StoreError>;

/// The operations a store backend provides. Every step that must be atomic is one atomic
/// operation of the backend (a sled compare-and-swap or batch; a Redis Lua script or
/// `MULTI`), never a read and a write in two round trips that another process could split.
///
/// Times are Unix seconds from the gateway's clock (injected in tests), passed in by the caller.
pub trait Backend: Send + Sync {
    /// `sled` or `redis`, for logs and `portcullis check`.
    fn kind(&self) -> &'static str;

    // ---- challenges ----
    /// Stores a new challenge (and its link index entry).
    fn insert_challenge(&self, c: &Challenge) -> impl Future<Output = R<()>> + Send;
    /// The raw record of a challenge, for [`Store::modify_challenge`].
    fn challenge_raw(&self, id: &str) -> impl Future<Output = R<Option<Vec<u8>>>> + Send;
    /// Replaces the challenge `id` by `new` if its record is still exactly `old`.
    fn cas_challenge(
        &self,
        id: &str,
        old: &[u8],
        new: &Challenge,
    ) -> impl Future<Output = R<bool>> + Send;
    /// The challenge id a link token hash belongs to.
    fn challenge_for_link(&self, link: &[u8; 32])
        -> impl Future<Output = R<Option<String>>> + Send;
    /// Points the link index at a challenge's new token and forgets the old one.
    fn relink(
        &self,
        id: &str,
        old: Option<[u8; 32]>,
        new: Option<[u8; 32]>,
        keep_secs: u64,
    ) -> impl Future<Output = R<()>> + Send;
    fn remove_challenge(&self, c: &Challenge) -> impl Future<Output = R<()>> + Send;
    fn challenge_count(&self) -> impl Future<Output = R<usize>> + Send;

    // ---- sessions ----
    fn insert_session(&self, hash: &[u8; 32], s: &Session) -> impl Future<Output = R<()>> + Send;
    fn session(&self, hash: &[u8; 32]) -> impl Future<Output = R<Option<Session>>> + Send;
    /// A user's sessions, newest first.
    fn sessions_for(&self, email: &str)
        -> impl Future<Output = R<Vec<([u8; 32], Session)>>> + Send;
    /// Revokes one session; whether it existed.
    fn remove_session(&self, hash: &[u8; 32]) -> impl Future<Output = R<bool>> + Send;
    /// Every session (admin views, the CLI).
    fn sessions(&self) -> impl Future<Output = R<Vec<([u8; 32], Session)>>> + Send;
    fn session_count(&self) -> impl Future<Output = R<usize>> + Send;
    /// Raises `last_seen` of each session to the given time (never lowers it). Returns how many
    /// were written.
    fn write_touches(&self, batch: &[([u8; 32], u64)]) -> impl Future<Output = R<usize>> + Send;

    // ---- outbox ----
    /// Queues a mail; returns its id.
    fn enqueue_mail(&self, item: &OutboxItem) -> impl Future<Output = R<u64>> + Send;
    /// Takes up to `limit` mails due at `now`, oldest first; each stays this caller's until
    /// `now + MAIL_LEASE_SECS` (then any worker may take it again).
    fn claim_mail(
        &self,
        now: u64,
        limit: usize,
    ) -> impl Future<Output = R<Vec<(u64, OutboxItem)>>> + Send;
    /// Writes a mail back (a retry: `item.next_attempt_at` says when it is due again).
    fn update_mail(&self, id: u64, item: &OutboxItem) -> impl Future<Output = R<()>> + Send;
    /// Acknowledges (or drops) a mail.
    fn remove_mail(&self, id: u64) -> impl Future<Output = R<()>> + Send;
    /// Every queued mail, oldest first.
    fn outbox(&self) -> impl Future<Output = R<Vec<(u64, OutboxItem)>>> + Send;
    fn outbox_len(&self) -> impl Future<Output = R<usize>> + Send;

    // ---- rate limits ----
    /// Spends one request of every bucket `keys[i]` (at `rates[i]`) if all have room, else none.
    /// `Ok(Err(wait_us))`: refused, the soonest the request would pass. `Ok(Ok(None))` from a
    /// backend that keeps no shared buckets: the caller's in-process limiter decides.
    fn take(
        &self,
        keys: &[[u8; 32]],
        rates: &[Rate],
        now_us: u64,
    ) -> impl Future<Output = R<Result<Option<()>, u64>>> + Send;

    // ---- shared secret, events ----
    /// The master secret kept in the store: `candidate` is stored unless one is there already;
    /// returns the one that is. `None` from a backend that keeps no secrets (sled: files).
    fn shared_secret(&self, candidate: &[u8]) -> impl Future<Output = R<Option<Vec<u8>>>> + Send;
    fn push_event(&self, e: &AuditEvent) -> impl Future<Output = R<()>> + Send;
    /// Up to [`RECENT_EVENTS`] events, oldest first.
    fn recent_events(&self) -> impl Future<Output = R<Vec<AuditEvent>>> + Send;

    // ---- upkeep ----
    /// Deletes expired challenges and sessions (and sessions idle longer than `idle`).
    fn sweep(&self, now: u64, idle: Option<u64>) -> impl Future<Output = R<(usize, usize)>> + Send;
    /// Makes every write so far durable.
    fn flush(&self) -> impl Future<Output = R<()>> + Send;
    /// Whether the store answers and writes (readiness).
    fn check(&self) -> impl Future<Output = R<()>> + Send;
}

/// Where the store lives: `store.url` (with `store.sentinels`) or sled in `data_dir`.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Sled,
    Redis(redis::RedisConfig),
}

/// How to open the embedded store. Build with [`StoreOptions::new`] and set fields as needed.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The data folder (created 0700, or tightened to it); the database lives in `db/` below it.
    pub dir: std::path::PathBuf,
    /// sled's page cache in bytes (`limits.db_cache_bytes`; sled's own default is 1 GiB).
    pub cache_bytes: u64,
}

impl StoreOptions {
    /// Defaults for the data folder `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> StoreOptions {
        StoreOptions {
            dir: dir.into(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// The page cache unless configured: enough for the hot records of a small deployment.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The backend in use.
pub enum Engine {
    Sled(sled::SledStore),
    Redis(Box<redis::RedisStore>),
}

/// Calls the same [`Backend`] method on whichever backend runs.
///
/// Redis' futures are boxed: they are several KiB each (the client's command state), and held
/// inline they would make every future that reads the store that large, sled or not (the
/// request future is moved and copied whole on the hot path). Sled's are a few bytes.
macro_rules! on {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.engine {
            Engine::Sled(b) => Backend::$method(b, $($arg),*).await,
            Engine::Redis(b) => Box::pin(Backend::$method(&**b, $($arg),*)).await,
        }
    };
}

const SHARDS: usize = 16;
/// Sessions one cache shard holds before it is emptied (16 shards: 64k sessions).
const CACHE_PER_SHARD: usize = 4096;

/// Sessions read from the backend, with when they were read.
type CacheShard = HashMap<[u8; 32], (Arc<Session>, Instant), TokenHashes>;

/// Hashing for maps keyed by a session token's SHA-256: its bytes are already uniformly random,
/// so bytes 8 to 15 are the hash (byte 0 picks the shard) (SipHash cost ~300 instructions per lookup on the hot path). No
/// one can choose these keys to collide: only sessions the backend returned are inserted, and
/// their tokens were drawn by the gateway; a lookup of any other key costs an ordinary probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenHashes;

impl std::hash::BuildHasher for TokenHashes {
    type Hasher = TokenHasher;
    fn build_hasher(&self) -> TokenHasher {
        TokenHasher(0)
    }
}

/// See [`TokenHashes`].
#[derive(Debug, Default)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The array's 32 bytes (its length goes to `write_usize`); shorter input is folded in.
        let mut word = [0u8; 8];
        let from = if bytes.len() >= 16 { 8 } else { 0 };
        let n = (bytes.len() - from).min(8);
        word[..n].copy_from_slice(&bytes[from..from + n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }
    fn write_usize(&mut self, _len: usize) {}
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The store as the gateway uses it: a backend, a short-lived cache of sessions read from it,
/// and `last_seen` updates batched in memory (no write per request).
pub struct Store {
    engine: Engine,
    cache: [Mutex<CacheShard>; SHARDS],
    touches: [Mutex<HashMap<[u8; 32], u64, TokenHashes>>; SHARDS],
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens the embedded sled store under `opts.dir`.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        Ok(Store::with(Engine::Sled(sled::SledStore::open(opts)?)))
    }

    /// Opens the store `cfg` names: sled under `opts.dir`, or a connection to Redis (which must
    /// answer now; later outages are survived).
    pub async fn connect(cfg: &StoreConfig, opts: &StoreOptions) -> Result<Store, StoreError> {
        match cfg {
            StoreConfig::Sled => Store::open(opts),
            StoreConfig::Redis(r) => Ok(Store::with(Engine::Redis(Box::new(
                redis::RedisStore::connect(r).await?,
            )))),
        }
    }

    fn with(engine: Engine) -> Store {
        Store {
            engine,
            cache: Default::default(),
            touches: Default::default(),
        }
    }

    /// The backend in use.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The embedded database, when that is the backend.
    pub fn sled(&self) -> Option<&sled::SledStore> {
        match &self.engine {
            Engine::Sled(s) => Some(s),
            Engine::Redis(_) => None,
        }
    }

    /// `sled` or `redis`.
    pub fn kind(&self) -> &'static str {
        match &self.engine {
            Engine::Sled(b) => Backend::kind(b),
            Engine::Redis(b) => Backend::kind(&**b),
        }
    }

    /// Whether rate-limit buckets live in the store (shared by every replica) rather than in
    /// this process.
    pub fn shares_limits(&self) -> bool {
        matches!(self.engine, Engine::Redis(_))
    }

    /// Whether the last write succeeded (sled), or the shared store was reachable at the last
    /// command (Redis). False until the store writes again.
    pub fn writable(&self) -> bool {
        match &self.engine {
            Engine::Sled(b) => b.writable(),
            Engine::Redis(b) => b.reachable(),
        }
    }

    /// Since when (unix ms) the store fails, if it does.
    pub fn failing_since(&self) -> Option<u64> {
        match &self.engine {
            Engine::Sled(b) => b.failing_since(),
            Engine::Redis(b) => b.failing_since(),
        }
    }

    /// Makes every write so far durable (fsync for sled; Redis persists by its own settings).
    /// Call before telling a client about a write.
    pub async fn flush(&self) -> R<()> {
        on!(self.flush())
    }

    /// Blocking flush of the embedded store, for shutdown (nothing to do for Redis).
    pub fn flush_blocking(&self) -> R<()> {
        match &self.engine {
            Engine::Sled(b) => b.flush_blocking(),
            Engine::Redis(_) => Ok(()),
        }
    }

    /// Whether the store answers and can write, asked now (readiness, recovery).
    pub async fn check(&self) -> R<()> {
        on!(self.check())
    }

    // ---- challenges ----

    pub async fn insert_challenge(&self, c: &Challenge) -> R<()> {
        on!(self.insert_challenge(c))
    }

    pub async fn challenge(&self, id: &str) -> R<Option<Challenge>> {
        match on!(self.challenge_raw(id))? {
            Some(b) => Ok(Some(decode("challenges", &b)?)),
            None => Ok(None),
        }
    }

    pub async fn challenge_for_link(&self, link: &[u8; 32]) -> R<Option<String>> {
        on!(self.challenge_for_link(link))
    }

    /// Atomically updates a challenge; `f` sees the current value and decides. A
    /// compare-and-set loop: `f` may run again when another writer changed the record first.
    pub async fn modify_challenge<T>(
        &self,
        id: &str,
        mut f: impl FnMut(Option<Challenge>) -> Modify<Challenge, T> + Send,
    ) -> R<T> {
        loop {
            let old = on!(self.challenge_raw(id))?;
            let current = match &old {
                Some(b) => Some(decode::<Challenge>("challenges", b)?),
                None => None,
            };
            match f(current) {
                Modify::Keep(r) => return Ok(r),
                Modify::Write(new, r) => {
                    let Some(old) = old else {
                        // Never created by a modify: a vanished record stays vanished.
                        continue;
                    };
                    if on!(self.cas_challenge(id, &old, &new))? {
                        return Ok(r);
                    }
                }
            }
        }
    }

    pub async fn relink(
        &self,
        c: &Challenge,
        old: Option<[u8; 32]>,
        new: Option<[u8; 32]>,
    ) -> R<()> {
        let keep = c.keep_secs();
        on!(self.relink(&c.id, old, new, keep))
    }

    pub async fn remove_challenge(&self, c: &Challenge) -> R<()> {
        on!(self.remove_challenge(c))
    }

    /// Challenges in the store (0 when it cannot be asked).
    pub async fn challenge_count(&self) -> usize {
        on!(self.challenge_count()).unwrap_or(0)
    }

    // ---- sessions ----

    pub async fn insert_session(&self, hash: &[u8; 32], s: &Session) -> R<()> {
        on!(self.insert_session(hash, s))
    }

    /// A session, from this process's cache when it was read in the last
    /// [`SESSION_CACHE_TTL`], else from the backend. Unknown tokens are never cached. Shared,
    /// not copied: a cache hit allocates nothing.
    pub async fn session(&self, hash: &[u8; 32]) -> R<Option<Arc<Session>>> {
        let shard = &self.cache[hash[0] as usize % SHARDS];
        if let Some((s, at)) = lock(shard).get(hash) {
            if at.elapsed() < SESSION_CACHE_TTL {
                return Ok(Some(s.clone()));
            }
        }
        let found = on!(self.session(hash))?.map(Arc::new);
        let mut c = lock(shard);
        match &found {
            Some(s) => {
                if c.len() >= CACHE_PER_SHARD {
                    c.clear();
                }
                c.insert(*hash, (s.clone(), Instant::now()));
            }
            None => {
                c.remove(hash);
            }
        }
        Ok(found)
    }

    fn forget(&self, hash: &[u8; 32]) {
        lock(&self.cache[hash[0] as usize % SHARDS]).remove(hash);
        lock(&self.touches[hash[0] as usize % SHARDS]).remove(hash);
    }

    pub async fn sessions_for(&self, email: &str) -> R<Vec<([u8; 32], Session)>> {
        on!(self.sessions_for(email))
    }

    pub async fn remove_session(&self, hash: &[u8; 32]) -> R<bool> {
        self.forget(hash);
        let r = on!(self.remove_session(hash));
        // A lookup racing the removal may have cached it again.
        self.forget(hash);
        r
    }

    /// Revokes every session of `email`. Returns how many.
    pub async fn remove_sessions_for(&self, email: &str) -> R<usize> {
        let mut n = 0;
        for (hash, _) in self.sessions_for(email).await? {
            if self.remove_session(&hash).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// All sessions with their keys (admin views, the CLI).
    pub async fn sessions(&self) -> R<Vec<([u8; 32], Session)>> {
        on!(self.sessions())
    }

    /// Sessions in the store (0 when it cannot be asked).
    pub async fn session_count(&self) -> usize {
        on!(self.session_count()).unwrap_or(0)
    }

    /// Records activity in memory; written by [`Store::flush_touches`].
    pub fn touch_session(&self, hash: &[u8; 32], now: u64) {
        lock(&self.touches[hash[0] as usize % SHARDS]).insert(*hash, now);
    }

    /// The latest activity not yet written, if any.
    pub fn pending_touch(&self, hash: &[u8; 32]) -> Option<u64> {
        lock(&self.touches[hash[0] as usize % SHARDS])
            .get(hash)
            .copied()
    }

    /// Writes pending `last_seen` updates in one batch. Returns how many were written. An
    /// update leaves the pending table only once it is written (a lookup meanwhile still sees
    /// it); on failure everything stays for the next attempt.
    pub async fn flush_touches(&self) -> R<usize> {
        let mut pending = Vec::new();
        for m in &self.touches {
            pending.extend(lock(m).iter().map(|(h, t)| (*h, *t)));
        }
        if pending.is_empty() {
            return Ok(0);
        }
        let n = on!(self.write_touches(&pending))?;
        for (hash, seen) in &pending {
            let i = hash[0] as usize % SHARDS;
            if let Some((s, _)) = lock(&self.cache[i]).get_mut(hash) {
                if s.last_seen < *seen {
                    let mut fresher = Session::clone(s);
                    fresher.last_seen = *seen;
                    *s = Arc::new(fresher);
                }
            }
            let mut t = lock(&self.touches[i]);
            if t.get(hash) == Some(seen) {
                t.remove(hash);
            }
        }
        Ok(n)
    }

    // ---- outbox ----

    pub async fn enqueue_mail(&self, item: &OutboxItem) -> R<u64> {
        on!(self.enqueue_mail(item))
    }

    pub async fn claim_mail(&self, now: u64, limit: usize) -> R<Vec<(u64, OutboxItem)>> {
        on!(self.claim_mail(now, limit))
    }

    pub async fn update_mail(&self, id: u64, item: &OutboxItem) -> R<()> {
        on!(self.update_mail(id, item))
    }

    pub async fn remove_mail(&self, id: u64) -> R<()> {
        on!(self.remove_mail(id))
    }

    pub async fn outbox(&self) -> R<Vec<(u64, OutboxItem)>> {
        on!(self.outbox())
    }

    /// Mails queued (0 when the store cannot be asked).
    pub async fn outbox_len(&self) -> usize {
        on!(self.outbox_len()).unwrap_or(0)
    }

    // ---- limits, secret, events ----

    /// See [`Backend::take`].
    pub async fn take(
        &self,
        keys: &[[u8; 32]],
        rates: &[Rate],
        now_us: u64,
    ) -> R<Result<Option<()>, u64>> {
        on!(self.take(keys, rates, now_us))
    }

    /// See [`Backend::shared_secret`].
    pub async fn shared_secret(&self, candidate: &[u8]) -> R<Option<Vec<u8>>> {
        on!(self.shared_secret(candidate))
    }

    pub async fn push_event(&self, e: &AuditEvent) -> R<()> {
        on!(self.push_event(e))
    }

    pub async fn recent_events(&self) -> R<Vec<AuditEvent>> {
        on!(self.recent_events())
    }

    /// Deletes expired challenges and sessions. Returns (challenges, sessions) removed. Pending
    /// activity counts: a session used since its `last_seen` was written is not idle.
    pub async fn sweep(&self, now: u64, idle: Option<u64>) -> R<(usize, usize)> {
        if idle.is_some() {
            self.flush_touches().await?;
        }
        on!(self.sweep(now, idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Keys of one shard (same first byte) must still spread over a map's buckets: the hash
    /// does not come from the byte that picked the shard.
    #[test]
    fn token_hashes_spread_within_a_shard() {
        let keys: Vec<[u8; 32]> = (0..4096u32)
            .map(|i| {
                let mut k = crate::crypto::sha256(&i.to_le_bytes());
                k[0] = 7;
                k
            })
            .collect();
        let buckets: std::collections::HashSet<u64> = keys
            .iter()
            .map(|k| TokenHashes.hash_one(k) & 4095)
            .collect();
        // 4096 random keys into 4096 buckets fill about 63 % of them.
        assert!(buckets.len() > 2400, "{} buckets", buckets.len());
        let mut m: HashMap<[u8; 32], u32, TokenHashes> = HashMap::default();
        for (i, k) in keys.iter().enumerate() {
            m.insert(*k, i as u32);
        }
        assert!(keys.iter().enumerate().all(|(i, k)| m[k] == i as u32));
    }
}
