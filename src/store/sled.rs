//! The embedded backend: challenges, sessions, the outbox and metadata in one sled database in `data_dir` (single process; rate limits and recent events stay in process memory).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{
    decode, encode, files, AuditEvent, Backend, Challenge, Health, Modify, OutboxItem, Rate,
    Session, StoreError, StoreOptions, CHALLENGE_GRACE, MAIL_LEASE_SECS, RECENT_EVENTS,
};

/// How long a reopen waits for the old database to be let go of and for the new one to open.
const REOPEN_WAIT: Duration = Duration::from_secs(3);

/// One open sled database and its trees. Replaced as a whole when the store is reopened.
struct Handles {
    db: sled::Db,
    challenges: sled::Tree,
    links: sled::Tree,
    sessions: sled::Tree,
    /// `email \0 token_hash` -> (): a user's sessions without a full scan.
    sessions_by_email: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
}

impl Handles {
    fn open(opts: &StoreOptions) -> Result<Handles, StoreError> {
        let db = sled::Config::new()
            .path(opts.dir.join("db"))
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(Some(200))
            .open()?;
        Ok(Handles {
            challenges: db.open_tree("challenges")?,
            links: db.open_tree("links")?,
            sessions: db.open_tree("sessions")?,
            sessions_by_email: db.open_tree("sessions_by_email")?,
            outbox: db.open_tree("outbox")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// A small durable write: whether the database can write at all.
    fn probe(&self) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.meta.insert("write_probe", &now.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }
}

type Shared = Arc<ArcSwapOption<Handles>>;

/// The database. Cheap to share behind an `Arc`; sled itself is lock-free for readers.
///
/// sled 0.34 remembers the first I/O error of a write (a full disk, `EFBIG`) for the life of the
/// open database: every later write and flush fails with it, even once space returns. So a write
/// failure marks the store failing ([`SledStore::writable`]) and [`SledStore::recover`] (run by
/// `server::recovery`) reopens the database until a write succeeds again.
pub struct SledStore {
    handles: Shared,
    opts: StoreOptions,
    /// 0 while writes succeed; else when (unix ms) they started failing.
    health: Health,
    /// One reopen at a time.
    reopening: Mutex<()>,
    flusher: Option<Flusher>,
    /// Mails a worker of this process holds (id -> lease end): a lease is not written to disk,
    /// so a restart sends at once what was in flight.
    leases: Mutex<std::collections::HashMap<u64, u64>>,
    /// Recent security events (memory only).
    events: Mutex<VecDeque<AuditEvent>>,
}

type FlushReply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The group-commit thread: takes every pending request, flushes once, answers them all.
struct Flusher {
    tx: std::sync::mpsc::Sender<FlushReply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often (at most) the flush thread re-tightens the data folder, for files sled created
/// after opening (`blobs/*`) under a process umask wider than 077.
const TIGHTEN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Flusher {
    fn start(handles: Shared, dir: PathBuf) -> Result<Flusher, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<FlushReply>();
        let thread = std::thread::Builder::new()
            .name("portcullis-flush".into())
            .spawn(move || {
                let mut tightened = std::time::Instant::now();
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    // The current database, released right after (a reopen waits for it).
                    let result = match handles.load_full() {
                        Some(h) => h.db.flush().map(|_| ()).map_err(|e| e.to_string()),
                        None => Err(StoreError::Reopening.to_string()),
                    };
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                    if tightened.elapsed() >= TIGHTEN_EVERY {
                        tightened = std::time::Instant::now();
                        if let Err(e) = files::tighten_data_dir(&dir) {
                            tracing::warn!(error = %e, "cannot keep data_dir private");
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Db(sled::Error::Io(e)))?;
        Ok(Flusher {
            tx,
            thread: Some(thread),
        })
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Stop the flush thread and wait for it, so its database handle is gone (and the
        // directory lock released) when the Store is.
        if let Some(mut f) = self.flusher.take() {
            drop(f.tx);
            if let Some(t) = f.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn email_key(email: &str, hash: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(email.len() + 33);
    k.extend_from_slice(email.as_bytes());
    k.push(0);
    k.extend_from_slice(hash);
    k
}

impl SledStore {
    /// Opens (or creates) the database under `opts.dir`. The folder is created 0700 (a wider
    /// one is tightened) and everything in it made private (folders 0700, files 0600).
    pub fn open(opts: &StoreOptions) -> Result<SledStore, StoreError> {
        let dir = opts.dir.as_path();
        files::ensure_private_dir(dir).map_err(|e| StoreError::Db(sled::Error::Io(e)))?;
        let handles = Handles::open(opts)?;
        // sled created `db/conf`, `db/db`, `db/blobs/` and maybe a snapshot with the umask's mode.
        let foreign =
            files::tighten_data_dir(dir).map_err(|e| StoreError::Db(sled::Error::Io(e)))?;
        if !foreign.is_empty() {
            tracing::warn!(dir = %dir.display(), entries = ?foreign, "data_dir holds files Portcullis did not make, readable by others; keep them elsewhere");
        }
        let handles: Shared = Arc::new(ArcSwapOption::from_pointee(handles));
        Ok(SledStore {
            flusher: Some(Flusher::start(handles.clone(), dir.to_path_buf())?),
            handles,
            opts: opts.clone(),
            health: Health::default(),
            reopening: Mutex::new(()),
            leases: Default::default(),
            events: Default::default(),
        })
    }

    /// The open database, or [`StoreError::Reopening`] for the moment it is being reopened.
    fn h(&self) -> Result<Arc<Handles>, StoreError> {
        self.handles.load_full().ok_or(StoreError::Reopening)
    }

    /// Passes `r` through, noting a storage failure (see [`SledStore::writable`]).
    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            if e.is_unavailable() && self.health.fail() {
                tracing::error!(error = %e, "the store cannot write; sign-in is unavailable until it can (retrying)");
            }
        }
        r
    }

    fn healthy_again(&self) {
        if let Some(ms) = self.health.works() {
            tracing::info!(failing_for_ms = ms, "the store writes again");
        }
    }

    /// Whether the last write (or flush) succeeded. False from a failed write until the store
    /// writes again (after [`SledStore::recover`]).
    pub fn writable(&self) -> bool {
        self.health.ok()
    }

    /// Since when (unix ms) writes fail, if they do.
    pub fn failing_since(&self) -> Option<u64> {
        self.health.failing_since()
    }

    /// While writes fail: reopens the database (sled keeps an I/O error for good, only a fresh
    /// open clears it) and tries a write. Returns whether the store is writable. Blocking: waits
    /// up to a few seconds for in-flight users of the old database to let go of it.
    pub fn recover(&self) -> bool {
        if self.writable() {
            return true;
        }
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = self.handles.load_full() {
            // Cheap first: an error sled did not keep (or space that returned before it noticed).
            if h.probe().is_ok() {
                self.healthy_again();
                return true;
            }
        }
        // Close the old database: its file lock must be gone before it can be opened again.
        let deadline = Instant::now() + REOPEN_WAIT;
        if let Some(mut old) = self.handles.swap(None) {
            loop {
                match Arc::try_unwrap(old) {
                    Ok(h) => {
                        drop(h);
                        break;
                    }
                    Err(still) if Instant::now() >= deadline => {
                        tracing::warn!("the database is still in use; reopening it later");
                        self.handles.store(Some(still));
                        return false;
                    }
                    Err(still) => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        // An iterator may still hold a tree (and so the lock) for a moment.
        let opened = loop {
            match Handles::open(&self.opts) {
                Ok(h) => break h,
                Err(e) if Instant::now() >= deadline => {
                    tracing::error!(error = %e, "cannot reopen the database; retrying");
                    return false;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        // sled may have made a snapshot file with the umask's mode.
        if let Err(e) = files::tighten_data_dir(&self.opts.dir) {
            tracing::warn!(error = %e, "cannot keep data_dir private");
        }
        let ok = opened.probe();
        self.handles.store(Some(Arc::new(opened)));
        match ok {
            Ok(()) => {
                self.healthy_again();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reopened the database, but it still cannot write; retrying");
                false
            }
        }
    }

    /// Makes every write so far durable (fsync). Call before telling a client about a write.
    ///
    /// Group commit: concurrent callers share one `flush()` on a dedicated thread that starts
    /// after their writes. (sled 0.34's `flush_async` deadlocks under concurrent callers,
    /// spacejam/sled#1308; this never calls it.)
    pub async fn flush(&self) -> Result<(), StoreError> {
        let Some(f) = &self.flusher else {
            return self.flush_blocking();
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        if f.tx.send(tx).is_err() {
            return self.flush_blocking();
        }
        let r = match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Db(sled::Error::Io(std::io::Error::other(e)))),
            Err(_) => return self.flush_blocking(),
        };
        self.flushed(r)
    }

    /// Notes the outcome of a flush: a failure marks the store failing. A success does not
    /// clear that mark: a flush with nothing to write succeeds on a database that cannot write,
    /// so only [`SledStore::recover`]'s test write (run by the recovery task) says it writes again.
    fn flushed(&self, r: Result<(), StoreError>) -> Result<(), StoreError> {
        if r.is_ok() {
            return r;
        }
        self.note(r)
    }

    /// Blocking flush, for shutdown.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let r = self.h().and_then(|h| Ok(h.db.flush().map(|_| ())?));
        self.flushed(r)
    }

    /// The server secret an older version kept in the database, if any (see [`secret::load`]).
    pub fn legacy_server_secret(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta_get("server_secret")
    }

    /// Deletes the secrets older versions kept in the database (`server_secret`, `jwt_keys`)
    /// and flushes. Returns whether there were any.
    pub fn forget_legacy_secrets(&self) -> Result<bool, StoreError> {
        let h = self.h()?;
        let mut any = false;
        for key in ["server_secret", "jwt_keys"] {
            any |= self
                .note(h.meta.remove(key).map_err(StoreError::from))?
                .is_some();
        }
        if any {
            self.flush_blocking()?;
        }
        Ok(any)
    }

    /// A raw value of the `meta` tree.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.h()?.meta.get(key)?.map(|v| v.to_vec()))
    }

    pub fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let h = self.h()?;
        self.note(h.meta.insert(key, value).map_err(StoreError::from))?;
        Ok(())
    }

    /// Atomic read-modify-write of one JSON record with a compare-and-swap loop.
    fn modify<T, R>(
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
        mut f: impl FnMut(Option<T>) -> Modify<T, R>,
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        loop {
            let old = tree.get(key)?;
            let current = match &old {
                Some(b) => Some(decode::<T>(name, b)?),
                None => None,
            };
            match f(current) {
                Modify::Keep(r) => return Ok(r),
                Modify::Write(new, r) => {
                    let swapped = tree.compare_and_swap(key, old.as_ref(), Some(encode(&new)))?;
                    if swapped.is_ok() {
                        return Ok(r);
                    }
                }
            }
        }
    }

    // ---- challenges ----

    pub fn insert_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        let h = self.h()?;
        self.note((|| {
            h.challenges.insert(c.id.as_bytes(), encode(c))?;
            if let Some(l) = c.link_hash {
                h.links.insert(l, c.id.as_bytes())?;
            }
            Ok(())
        })())
    }

    pub fn challenge(&self, id: &str) -> Result<Option<Challenge>, StoreError> {
        match self.h()?.challenges.get(id.as_bytes())? {
            Some(b) => Ok(Some(decode("challenges", &b)?)),
            None => Ok(None),
        }
    }

    /// The challenge id a link token hash belongs to.
    pub fn challenge_for_link(&self, link_hash: &[u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(self
            .h()?
            .links
            .get(link_hash)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Atomically updates a challenge; `f` sees the current value and decides.
    pub fn modify_challenge<R>(
        &self,
        id: &str,
        f: impl FnMut(Option<Challenge>) -> Modify<Challenge, R>,
    ) -> Result<R, StoreError> {
        let h = self.h()?;
        self.note(Self::modify(&h.challenges, "challenges", id.as_bytes(), f))
    }

    /// Points the link index at a challenge's new token and forgets the old one.
    pub fn relink(
        &self,
        id: &str,
        old: Option<[u8; 32]>,
        new: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        let h = self.h()?;
        self.note((|| {
            if let Some(o) = old {
                h.links.remove(o)?;
            }
            if let Some(n) = new {
                h.links.insert(n, id.as_bytes())?;
            }
            Ok(())
        })())
    }

    pub fn remove_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        let h = self.h()?;
        self.note((|| {
            if let Some(l) = c.link_hash {
                h.links.remove(l)?;
            }
            h.challenges.remove(c.id.as_bytes())?;
            Ok(())
        })())
    }

    pub fn challenge_count(&self) -> usize {
        self.handles
            .load()
            .as_ref()
            .map_or(0, |h| h.challenges.len())
    }

    // ---- sessions ----

    pub fn insert_session(&self, token_hash: &[u8; 32], s: &Session) -> Result<(), StoreError> {
        let h = self.h()?;
        self.note((|| {
            h.sessions.insert(token_hash, encode(s))?;
            h.sessions_by_email
                .insert(email_key(&s.email, token_hash), &[])?;
            Ok(())
        })())
    }

    /// A user's sessions, via the email index.
    pub fn sessions_for(&self, email: &str) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        let mut prefix = email.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for r in self.h()?.sessions_by_email.scan_prefix(&prefix) {
            let (k, _) = r?;
            let Ok(hash) = <[u8; 32]>::try_from(&k[prefix.len()..]) else {
                continue;
            };
            if let Some(s) = self.session(&hash)? {
                out.push((hash, s));
            }
        }
        out.sort_by_key(|(_, s)| std::cmp::Reverse(s.created_at));
        Ok(out)
    }

    pub fn session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        match self.h()?.sessions.get(token_hash)? {
            Some(b) => Ok(Some(decode("sessions", &b)?)),
            None => Ok(None),
        }
    }

    pub fn remove_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        let h = self.h()?;
        self.note((|| match h.sessions.remove(token_hash)? {
            Some(v) => {
                if let Ok(s) = decode::<Session>("sessions", &v) {
                    h.sessions_by_email
                        .remove(email_key(&s.email, token_hash))?;
                }
                Ok(true)
            }
            None => Ok(false),
        })())
    }

    /// Revokes every session of `email`. Returns how many.
    pub fn remove_sessions_for(&self, email: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for (hash, _) in self.sessions_for(email)? {
            if self.remove_session(&hash)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// All sessions with their keys (admin views, sweeping). Skips corrupt records.
    pub fn sessions(&self) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        Ok(self
            .h()?
            .sessions
            .iter()
            .filter_map(|r| {
                let (k, v) = r.ok()?;
                let key: [u8; 32] = k.as_ref().try_into().ok()?;
                Some((key, decode("sessions", &v).ok()?))
            })
            .collect())
    }

    pub fn session_count(&self) -> usize {
        self.handles.load().as_ref().map_or(0, |h| h.sessions.len())
    }

    /// Raises `last_seen` of each session (never lowers it).
    pub fn write_touches(&self, batch: &[([u8; 32], u64)]) -> Result<usize, StoreError> {
        let h = self.h()?;
        let mut n = 0;
        for &(key, seen) in batch {
            let r = Self::modify(
                &h.sessions,
                "sessions",
                &key,
                |s: Option<Session>| match s {
                    Some(mut s) if s.last_seen < seen => {
                        s.last_seen = seen;
                        Modify::Write(s, ())
                    }
                    _ => Modify::Keep(()),
                },
            );
            self.note(r)?;
            n += 1;
        }
        Ok(n)
    }

    // ---- outbox ----

    /// Queues a mail. Returns its id.
    pub fn enqueue_mail(&self, item: &OutboxItem) -> Result<u64, StoreError> {
        let h = self.h()?;
        self.note((|| {
            let id = h.db.generate_id()?;
            h.outbox.insert(id.to_be_bytes(), encode(item))?;
            Ok(id)
        })())
    }

    /// Every queued mail, oldest first.
    pub fn outbox(&self) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let mut out = Vec::new();
        for r in self.h()?.outbox.iter() {
            let (k, v) = r?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            out.push((id, decode("outbox", &v)?));
        }
        Ok(out)
    }

    /// Writes a mail back if it is still queued (one acknowledged meanwhile stays gone).
    pub fn update_mail(&self, id: u64, item: &OutboxItem) -> Result<(), StoreError> {
        let h = self.h()?;
        let new = encode(item);
        self.note(
            h.outbox
                .update_and_fetch(id.to_be_bytes(), |old| old.map(|_| new.clone()))
                .map_err(StoreError::from),
        )?;
        Ok(())
    }

    pub fn remove_mail(&self, id: u64) -> Result<(), StoreError> {
        let h = self.h()?;
        self.note(h.outbox.remove(id.to_be_bytes()).map_err(StoreError::from))?;
        Ok(())
    }

    pub fn outbox_len(&self) -> usize {
        self.handles.load().as_ref().map_or(0, |h| h.outbox.len())
    }

    /// Deletes expired challenges and sessions. Returns (challenges, sessions) removed.
    pub fn sweep(&self, now: u64, idle: Option<u64>) -> Result<(usize, usize), StoreError> {
        let h = self.h()?;
        let mut gone_c = 0;
        for r in h.challenges.iter() {
            let (_, v) = r?;
            if let Ok(c) = decode::<Challenge>("challenges", &v) {
                // Keep a minute of grace so a user gets "expired" rather than "unknown".
                if c.expires_at.saturating_add(CHALLENGE_GRACE) < now {
                    self.remove_challenge(&c)?;
                    gone_c += 1;
                }
            }
        }
        // Link index entries whose challenge is gone (a crash between the two writes of a
        // mint or resend can leave one behind).
        for r in h.links.iter() {
            let (hash, id) = r?;
            if !h.challenges.contains_key(&id)? {
                self.note(h.links.remove(hash).map_err(StoreError::from))?;
            }
        }
        let mut gone_s = 0;
        for (key, s) in self.sessions()? {
            let seen = s.last_seen;
            let idle_dead = idle.is_some_and(|i| seen.saturating_add(i) < now);
            if s.expires_at <= now || idle_dead {
                self.remove_session(&key)?;
                gone_s += 1;
            }
        }
        Ok((gone_c, gone_s))
    }
}

impl Backend for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }

    async fn insert_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        SledStore::insert_challenge(self, c)
    }

    async fn challenge_raw(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.h()?.challenges.get(id.as_bytes())?.map(|v| v.to_vec()))
    }

    async fn cas_challenge(
        &self,
        id: &str,
        old: &[u8],
        new: &Challenge,
    ) -> Result<bool, StoreError> {
        let h = self.h()?;
        let r = h
            .challenges
            .compare_and_swap(id.as_bytes(), Some(old), Some(encode(new)))
            .map_err(StoreError::from);
        Ok(self.note(r)?.is_ok())
    }

    async fn challenge_for_link(&self, link: &[u8; 32]) -> Result<Option<String>, StoreError> {
        SledStore::challenge_for_link(self, link)
    }

    async fn relink(
        &self,
        id: &str,
        old: Option<[u8; 32]>,
        new: Option<[u8; 32]>,
        _keep_secs: u64,
    ) -> Result<(), StoreError> {
        SledStore::relink(self, id, old, new)
    }

    async fn remove_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        SledStore::remove_challenge(self, c)
    }

    async fn challenge_count(&self) -> Result<usize, StoreError> {
        Ok(SledStore::challenge_count(self))
    }

    async fn insert_session(&self, hash: &[u8; 32], s: &Session) -> Result<(), StoreError> {
        SledStore::insert_session(self, hash, s)
    }

    async fn session(&self, hash: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        SledStore::session(self, hash)
    }

    async fn sessions_for(&self, email: &str) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        SledStore::sessions_for(self, email)
    }

    async fn remove_session(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        SledStore::remove_session(self, hash)
    }

    async fn sessions(&self) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        SledStore::sessions(self)
    }

    async fn session_count(&self) -> Result<usize, StoreError> {
        Ok(SledStore::session_count(self))
    }

    async fn write_touches(&self, batch: &[([u8; 32], u64)]) -> Result<usize, StoreError> {
        SledStore::write_touches(self, batch)
    }

    async fn enqueue_mail(&self, item: &OutboxItem) -> Result<u64, StoreError> {
        SledStore::enqueue_mail(self, item)
    }

    async fn claim_mail(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.retain(|_, until| *until > now);
        let mut out = Vec::new();
        for r in self.h()?.outbox.iter() {
            let (k, v) = r?;
            let item: OutboxItem = decode("outbox", &v)?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            if item.next_attempt_at <= now && !leases.contains_key(&id) {
                leases.insert(id, now.saturating_add(MAIL_LEASE_SECS));
                out.push((id, item));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn update_mail(&self, id: u64, item: &OutboxItem) -> Result<(), StoreError> {
        SledStore::update_mail(self, id, item)?;
        self.release(id);
        Ok(())
    }

    async fn remove_mail(&self, id: u64) -> Result<(), StoreError> {
        SledStore::remove_mail(self, id)?;
        self.release(id);
        Ok(())
    }

    async fn outbox(&self) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        SledStore::outbox(self)
    }

    async fn outbox_len(&self) -> Result<usize, StoreError> {
        Ok(SledStore::outbox_len(self))
    }

    async fn take(
        &self,
        _keys: &[[u8; 32]],
        _rates: &[Rate],
        _now_us: u64,
    ) -> Result<Result<Option<()>, u64>, StoreError> {
        // One process: the in-process limiter (bounded tables) decides.
        Ok(Ok(None))
    }

    async fn shared_secret(&self, _candidate: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // The secret lives in a file (`secrets_file`, the credential or `data_dir/secret`).
        Ok(None)
    }

    async fn push_event(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let mut r = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= RECENT_EVENTS {
            r.pop_front();
        }
        r.push_back(e.clone());
        Ok(())
    }

    async fn recent_events(&self) -> Result<Vec<AuditEvent>, StoreError> {
        let r = self.events.lock().unwrap_or_else(|p| p.into_inner());
        Ok(r.iter().cloned().collect())
    }

    async fn sweep(&self, now: u64, idle: Option<u64>) -> Result<(usize, usize), StoreError> {
        SledStore::sweep(self, now, idle)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        SledStore::flush(self).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        SledStore::flush(self).await?;
        if self.writable() {
            Ok(())
        } else {
            Err(StoreError::Reopening)
        }
    }
}

impl SledStore {
    fn release(&self, id: u64) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(id: &str) -> Challenge {
        Challenge {
            id: id.into(),
            email: "a@example.com".into(),
            deliverable: true,
            link_hash: Some([7; 32]),
            code_mac: None,
            binding_hash: None,
            created_at: 100,
            expires_at: 1000,
            attempts: 0,
            completed: false,
            redirect_to: "/".into(),
            state: None,
            sends: 1,
            last_sent_at: 100,
            ip: "127.0.0.1".into(),
            user_agent: "t".into(),
        }
    }

    #[test]
    fn challenge_roundtrip_and_cas() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&StoreOptions::new(dir.path())).unwrap();
        store.insert_challenge(&challenge("c1")).unwrap();
        assert_eq!(
            store.challenge_for_link(&[7; 32]).unwrap().as_deref(),
            Some("c1")
        );
        let won = store
            .modify_challenge("c1", |c| match c {
                Some(mut c) if !c.completed => {
                    c.completed = true;
                    Modify::Write(c, true)
                }
                _ => Modify::Keep(false),
            })
            .unwrap();
        assert!(won);
        let again = store
            .modify_challenge("c1", |c| match c {
                Some(c) if !c.completed => Modify::Write(c, true),
                _ => Modify::Keep(false),
            })
            .unwrap();
        assert!(!again);
    }

    #[test]
    fn a_failing_store_is_reopened_in_place_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&StoreOptions::new(dir.path())).unwrap();
        store.insert_challenge(&challenge("kept")).unwrap();
        store.flush_blocking().unwrap();
        assert!(store.writable() && store.recover());
        // As after a failed write; a reader still holds the old database for a moment.
        store.health.fail();
        assert!(!store.writable() && store.failing_since().is_some());
        let held = store.h().unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        // The old database answers the cheap probe (its error was not kept): no reopen needed.
        assert!(store.recover());
        reader.join().unwrap();
        assert!(store.writable());
        // Forced reopen: the old handles go, new ones open on the same files.
        let old = store.handles.swap(None).unwrap();
        drop(old);
        store.health.fail();
        assert!(matches!(
            store.challenge("kept"),
            Err(StoreError::Reopening)
        ));
        assert!(store.recover());
        assert!(store.writable());
        assert!(store.challenge("kept").unwrap().is_some());
        store.insert_challenge(&challenge("after")).unwrap();
        store.flush_blocking().unwrap();
    }

    #[test]
    fn data_survives_reopen_in_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        {
            let store = SledStore::open(&StoreOptions::new(&dir)).unwrap();
            store.insert_challenge(&challenge("c2")).unwrap();
            store.flush_blocking().unwrap();
        }
        // sled's own background thread lets go of the folder's lock a moment after the store is
        // dropped: under load the first try can find it still held.
        let mut tries = 0;
        let store = loop {
            match SledStore::open(&StoreOptions::new(&dir)) {
                Ok(s) => break s,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("reopen try {tries}: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(40));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert!(store.challenge("c2").unwrap().is_some());
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o700);
        assert_eq!(mode(&dir.join("db/conf")), 0o600);
        assert_eq!(mode(&dir.join("db/db")), 0o600);
    }

    #[test]
    fn touches_are_batched_and_sweep_removes_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&StoreOptions::new(dir.path())).unwrap();
        let s = Session {
            id: "ab".into(),
            email: "a@example.com".into(),
            created_at: 0,
            expires_at: 10_000,
            last_seen: 0,
            ip: String::new(),
            user_agent: String::new(),
        };
        store.insert_session(&[1; 32], &s).unwrap();
        store
            .insert_session(
                &[2; 32],
                &Session {
                    expires_at: 5,
                    ..s.clone()
                },
            )
            .unwrap();
        assert_eq!(store.sessions_for("a@example.com").unwrap().len(), 2);
        assert!(store.sessions_for("b@example.com").unwrap().is_empty());
        assert_eq!(store.session(&[1; 32]).unwrap().unwrap().last_seen, 0);
        assert_eq!(store.write_touches(&[([1; 32], 500)]).unwrap(), 1);
        assert_eq!(store.session(&[1; 32]).unwrap().unwrap().last_seen, 500);
        assert_eq!(store.sweep(600, Some(1000)).unwrap(), (0, 1));
        assert_eq!(store.sweep(2000, Some(1000)).unwrap(), (0, 1));
        assert_eq!(store.session_count(), 0);
        assert!(
            store.sessions_for("a@example.com").unwrap().is_empty(),
            "index follows removals"
        );
        store.insert_challenge(&challenge("old")).unwrap();
        store.relink("gone", None, Some([9; 32])).unwrap();
        assert_eq!(store.sweep(2000, None).unwrap(), (1, 0));
        assert!(store.challenge_for_link(&[7; 32]).unwrap().is_none());
        assert!(
            store.challenge_for_link(&[9; 32]).unwrap().is_none(),
            "dangling link index entry swept"
        );
    }
}
