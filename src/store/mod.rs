//! Typed records (challenges, sessions, outbox mail) and their key scheme over the embedded sled database.

pub mod sweeper;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Storage failure. Never shown to clients beyond "internal error".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("corrupt record in `{tree}`: {err}")]
    Corrupt { tree: &'static str, err: String },
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

/// One queued mail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboxItem {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub created_at: u64,
    /// Mail for a challenge that expired is pointless: dropped instead of sent.
    pub expires_at: u64,
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub last_error: Option<String>,
}

const SHARDS: usize = 16;

/// The database. Cheap to share behind an `Arc`; sled itself is lock-free for readers.
pub struct Store {
    db: sled::Db,
    challenges: sled::Tree,
    links: sled::Tree,
    sessions: sled::Tree,
    /// `email \0 token_hash` -> (): a user's sessions without a full scan.
    sessions_by_email: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
    /// Pending `last_seen` updates, written in batches by the sweeper (no sled write per request).
    touches: [Mutex<HashMap<[u8; 32], u64>>; SHARDS],
    flusher: Option<Flusher>,
}

type FlushReply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The group-commit thread: takes every pending request, flushes once, answers them all.
struct Flusher {
    tx: std::sync::mpsc::Sender<FlushReply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(db: sled::Db) -> Result<Flusher, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<FlushReply>();
        let thread = std::thread::Builder::new()
            .name("portcullis-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for w in waiting {
                        let _ = w.send(result.clone());
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

impl Drop for Store {
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

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        err: e.to_string(),
    })
}

/// Outcome of an atomic read-modify-write.
pub enum Modify<T, R> {
    /// Write this value and return `R`.
    Write(T, R),
    /// Leave the record as it is and return `R`.
    Keep(R),
}

impl Store {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(Some(200))
            .open()?;
        Ok(Store {
            challenges: db.open_tree("challenges")?,
            links: db.open_tree("links")?,
            sessions: db.open_tree("sessions")?,
            sessions_by_email: db.open_tree("sessions_by_email")?,
            outbox: db.open_tree("outbox")?,
            meta: db.open_tree("meta")?,
            touches: Default::default(),
            flusher: Some(Flusher::start(db.clone())?),
            db,
        })
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
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Db(sled::Error::Io(std::io::Error::other(e)))),
            Err(_) => self.flush_blocking(),
        }
    }

    /// Blocking flush, for shutdown.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The server secret (HMAC key for codes), created on first use.
    pub fn server_secret(&self) -> Result<Vec<u8>, StoreError> {
        let fresh = crate::crypto::random_bytes(32);
        // Only the first writer wins; everyone reads the stored value afterwards.
        let _ = self
            .meta
            .compare_and_swap("server_secret", None as Option<&[u8]>, Some(fresh))?;
        self.db.flush()?;
        match self.meta.get("server_secret")? {
            Some(v) if v.len() == 32 => Ok(v.to_vec()),
            _ => Err(StoreError::Corrupt {
                tree: "meta",
                err: "server_secret has the wrong length".into(),
            }),
        }
    }

    /// A raw value of the `meta` tree.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    pub fn meta_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
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
        self.challenges.insert(c.id.as_bytes(), encode(c))?;
        if let Some(h) = c.link_hash {
            self.links.insert(h, c.id.as_bytes())?;
        }
        Ok(())
    }

    pub fn challenge(&self, id: &str) -> Result<Option<Challenge>, StoreError> {
        match self.challenges.get(id.as_bytes())? {
            Some(b) => Ok(Some(decode("challenges", &b)?)),
            None => Ok(None),
        }
    }

    /// The challenge id a link token hash belongs to.
    pub fn challenge_for_link(&self, link_hash: &[u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(self
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
        Self::modify(&self.challenges, "challenges", id.as_bytes(), f)
    }

    /// Points the link index at a challenge's new token and forgets the old one.
    pub fn relink(
        &self,
        id: &str,
        old: Option<[u8; 32]>,
        new: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        if let Some(o) = old {
            self.links.remove(o)?;
        }
        if let Some(n) = new {
            self.links.insert(n, id.as_bytes())?;
        }
        Ok(())
    }

    pub fn remove_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        if let Some(h) = c.link_hash {
            self.links.remove(h)?;
        }
        self.challenges.remove(c.id.as_bytes())?;
        Ok(())
    }

    pub fn challenge_count(&self) -> usize {
        self.challenges.len()
    }

    // ---- sessions ----

    pub fn insert_session(&self, token_hash: &[u8; 32], s: &Session) -> Result<(), StoreError> {
        self.sessions.insert(token_hash, encode(s))?;
        self.sessions_by_email
            .insert(email_key(&s.email, token_hash), &[])?;
        Ok(())
    }

    /// A user's sessions, via the email index.
    pub fn sessions_for(&self, email: &str) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        let mut prefix = email.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for r in self.sessions_by_email.scan_prefix(&prefix) {
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
        match self.sessions.get(token_hash)? {
            Some(b) => Ok(Some(decode("sessions", &b)?)),
            None => Ok(None),
        }
    }

    pub fn remove_session(&self, token_hash: &[u8; 32]) -> Result<bool, StoreError> {
        self.shard(token_hash).remove(token_hash);
        match self.sessions.remove(token_hash)? {
            Some(v) => {
                if let Ok(s) = decode::<Session>("sessions", &v) {
                    self.sessions_by_email
                        .remove(email_key(&s.email, token_hash))?;
                }
                Ok(true)
            }
            None => Ok(false),
        }
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
    pub fn sessions(&self) -> impl Iterator<Item = ([u8; 32], Session)> + '_ {
        self.sessions.iter().filter_map(|r| {
            let (k, v) = r.ok()?;
            let key: [u8; 32] = k.as_ref().try_into().ok()?;
            Some((key, decode("sessions", &v).ok()?))
        })
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    fn shard(&self, key: &[u8; 32]) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], u64>> {
        let m = &self.touches[key[0] as usize % SHARDS];
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records activity in memory; written to sled by [`Store::flush_touches`].
    pub fn touch_session(&self, token_hash: &[u8; 32], now: u64) {
        self.shard(token_hash).insert(*token_hash, now);
    }

    /// The latest activity not yet written, if any.
    pub fn pending_touch(&self, token_hash: &[u8; 32]) -> Option<u64> {
        self.shard(token_hash).get(token_hash).copied()
    }

    /// Writes pending `last_seen` updates in one batch. Returns how many were written.
    pub fn flush_touches(&self) -> Result<usize, StoreError> {
        let mut pending = Vec::new();
        for m in &self.touches {
            let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend(g.drain());
        }
        let mut n = 0;
        for (key, seen) in pending {
            Self::modify(
                &self.sessions,
                "sessions",
                &key,
                |s: Option<Session>| match s {
                    Some(mut s) if s.last_seen < seen => {
                        s.last_seen = seen;
                        Modify::Write(s, ())
                    }
                    _ => Modify::Keep(()),
                },
            )?;
            n += 1;
        }
        Ok(n)
    }

    // ---- outbox ----

    /// Queues a mail. Returns its id.
    pub fn enqueue_mail(&self, item: &OutboxItem) -> Result<u64, StoreError> {
        let id = self.db.generate_id()?;
        self.outbox.insert(id.to_be_bytes(), encode(item))?;
        Ok(id)
    }

    /// Every queued mail, oldest first.
    pub fn outbox(&self) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let mut out = Vec::new();
        for r in self.outbox.iter() {
            let (k, v) = r?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            out.push((id, decode("outbox", &v)?));
        }
        Ok(out)
    }

    /// Up to `limit` queued mails due at `now`, oldest first (without decoding the whole queue
    /// into memory when it is long).
    pub fn outbox_due(&self, now: u64, limit: usize) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let mut out = Vec::new();
        for r in self.outbox.iter() {
            let (k, v) = r?;
            let item: OutboxItem = decode("outbox", &v)?;
            if item.next_attempt_at <= now {
                let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
                out.push((id, item));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn update_mail(&self, id: u64, item: &OutboxItem) -> Result<(), StoreError> {
        self.outbox.insert(id.to_be_bytes(), encode(item))?;
        Ok(())
    }

    pub fn remove_mail(&self, id: u64) -> Result<(), StoreError> {
        self.outbox.remove(id.to_be_bytes())?;
        Ok(())
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Deletes expired challenges and sessions. Returns (challenges, sessions) removed.
    pub fn sweep(&self, now: u64, idle: Option<u64>) -> Result<(usize, usize), StoreError> {
        let mut gone_c = 0;
        for r in self.challenges.iter() {
            let (_, v) = r?;
            if let Ok(c) = decode::<Challenge>("challenges", &v) {
                // Keep a minute of grace so a user gets "expired" rather than "unknown".
                if c.expires_at.saturating_add(60) < now {
                    self.remove_challenge(&c)?;
                    gone_c += 1;
                }
            }
        }
        let mut gone_s = 0;
        for (key, s) in self.sessions().collect::<Vec<_>>() {
            let seen = self.pending_touch(&key).unwrap_or(0).max(s.last_seen);
            let idle_dead = idle.is_some_and(|i| seen.saturating_add(i) < now);
            if s.expires_at <= now || idle_dead {
                self.remove_session(&key)?;
                gone_s += 1;
            }
        }
        Ok((gone_c, gone_s))
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
        let store = Store::open(dir.path()).unwrap();
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
    fn secret_is_stable_and_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s1 = {
            let store = Store::open(dir.path()).unwrap();
            store.insert_challenge(&challenge("c2")).unwrap();
            let s = store.server_secret().unwrap();
            assert_eq!(s, store.server_secret().unwrap());
            store.flush_blocking().unwrap();
            s
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.server_secret().unwrap(), s1);
        assert!(store.challenge("c2").unwrap().is_some());
    }

    #[test]
    fn touches_are_batched_and_sweep_removes_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
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
        store.touch_session(&[1; 32], 500);
        assert_eq!(store.session(&[1; 32]).unwrap().unwrap().last_seen, 0);
        assert_eq!(store.flush_touches().unwrap(), 1);
        assert_eq!(store.session(&[1; 32]).unwrap().unwrap().last_seen, 500);
        assert_eq!(store.sweep(600, Some(1000)).unwrap(), (0, 1));
        assert_eq!(store.sweep(2000, Some(1000)).unwrap(), (0, 1));
        assert_eq!(store.session_count(), 0);
        assert!(
            store.sessions_for("a@example.com").unwrap().is_empty(),
            "index follows removals"
        );
        store.insert_challenge(&challenge("old")).unwrap();
        assert_eq!(store.sweep(2000, None).unwrap(), (1, 0));
        assert!(store.challenge_for_link(&[7; 32]).unwrap().is_none());
    }
}
