//! The shared backend: every record in Redis or Valkey (plain, TLS or found through Sentinel), so several gateway replicas act as one; each atomic step is one Lua script or `MULTI` transaction.
//!
//! Keys (all under `store.prefix`, default `portcullis:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `c:{id}` | string | challenge record (JSON: hashes only), expires with the challenge |
//! | `l:{sha256 hex}` | string | link token hash → challenge id |
//! | `cz` | zset | challenge ids by expiry (count, sweep) |
//! | `s:{sha256 hex}` | hash | `r` session record (JSON), `seen` last activity; expires with the session |
//! | `sz` | zset | session hashes by expiry (count, list, sweep) |
//! | `se:{email}` | set | a user's session hashes |
//! | `o:seq`, `o:items`, `o:due` | string, hash, zset | outbox ids, records, due time or lease end |
//! | `r:{hmac hex}` | string | a rate-limit bucket (GCRA arrival time, µs); expires when full again |
//! | `secret` | string | the master secret, only when no `secrets_file` is set |
//! | `events` | list | recent security events |

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError, Script};

use crate::store::{
    decode, encode, now_ms, AuditEvent, Backend, Challenge, Health, OutboxItem, Rate, Session,
    StoreError, CHALLENGE_GRACE, MAIL_LEASE_SECS, RECENT_EVENTS,
};

/// Where the shared store is and how to talk to it (`store:` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub target: Target,
    /// Prefix of every key (several deployments may share one database).
    pub prefix: String,
    /// Bound of each connect and each command; a store slower than this is unavailable (503).
    pub timeout: Duration,
}

/// How the primary is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS).
    Url(String),
    /// Ask these Sentinels (`redis://host:port` each) for the primary of `master`.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        db: i64,
        tls: bool,
        username: Option<String>,
        password: Option<String>,
    },
}

impl RedisConfig {
    /// Where it connects, for logs and `portcullis check` (never the password).
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Url(u) => match url::Url::parse(u) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    parsed.to_string()
                }
                Err(_) => "an invalid URL".into(),
            },
            Target::Sentinel {
                sentinels, master, ..
            } => format!(
                "the primary `{master}` of Sentinel {}",
                sentinels
                    .iter()
                    .map(|s| s.trim_start_matches("redis://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// After a failed connect, commands fail at once for this long instead of each trying again.
const RETRY_GAP: Duration = Duration::from_millis(250);
/// Records per round trip when listing or touching many.
const CHUNK: usize = 256;

/// The Lua scripts (sent once, then run by hash).
struct Scripts {
    cas: Script,
    touch: Script,
    enqueue: Script,
    claim: Script,
    update_mail: Script,
    take: Script,
    secret: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            // KEYS[1] record; ARGV: old, new, ttl ms.
            cas: Script::new(
                r"local cur = redis.call('GET', KEYS[1])
                if cur ~= ARGV[1] then return 0 end
                redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
                return 1",
            ),
            // KEYS: session hashes; ARGV[i]: activity time of KEYS[i]. Raises `seen` only.
            touch: Script::new(
                r"local n = 0
                for i, k in ipairs(KEYS) do
                  if redis.call('EXISTS', k) == 1 then
                    local cur = tonumber(redis.call('HGET', k, 'seen') or '0')
                    if cur < tonumber(ARGV[i]) then redis.call('HSET', k, 'seen', ARGV[i]) end
                    n = n + 1
                  end
                end
                return n",
            ),
            // KEYS: seq, items, due; ARGV: record, due time.
            enqueue: Script::new(
                r"local id = redis.call('INCR', KEYS[1])
                redis.call('HSET', KEYS[2], id, ARGV[1])
                redis.call('ZADD', KEYS[3], ARGV[2], id)
                return id",
            ),
            // KEYS: items, due; ARGV: now, lease end, limit. Returns id, record, id, record…
            claim: Script::new(
                r"local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
                local out = {}
                for _, id in ipairs(ids) do
                  local v = redis.call('HGET', KEYS[1], id)
                  if v then
                    redis.call('ZADD', KEYS[2], ARGV[2], id)
                    table.insert(out, id)
                    table.insert(out, v)
                  else
                    redis.call('ZREM', KEYS[2], id)
                  end
                end
                return out",
            ),
            // KEYS: items, due; ARGV: id, record, due time. Only a mail still queued.
            update_mail: Script::new(
                r"if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
                redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
                redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
                return 1",
            ),
            // GCRA over every key, all or nothing. ARGV: now µs, then interval and tolerance
            // per key. Returns 0 (taken) or the µs to wait.
            take: Script::new(
                r"local now = tonumber(ARGV[1])
                local wait = 0
                local t = {}
                for i, k in ipairs(KEYS) do
                  local interval = tonumber(ARGV[2 * i])
                  local tol = tonumber(ARGV[2 * i + 1])
                  local tat = tonumber(redis.call('GET', k) or '0')
                  if tat < now then tat = now end
                  if tat - now > tol then
                    local w = tat - tol - now
                    if w > wait then wait = w end
                  end
                  t[i] = tat + interval
                end
                if wait > 0 then return wait end
                for i, k in ipairs(KEYS) do
                  local ms = math.max(1, math.ceil((t[i] - now) / 1000))
                  redis.call('SET', k, string.format('%.0f', t[i]), 'PX', ms)
                end
                return 0",
            ),
            secret: Script::new(
                r"redis.call('SET', KEYS[1], ARGV[1], 'NX')
                return redis.call('GET', KEYS[1])",
            ),
        }
    }
}

/// A connection to Redis that reconnects by itself (finding the primary again through
/// Sentinel after a failover).
pub struct RedisStore {
    cfg: RedisConfig,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// One reconnect at a time; when the last one failed.
    reconnect: tokio::sync::Mutex<Option<Instant>>,
    /// 0 while reachable; else since when (unix ms) it is not.
    health: Health,
    scripts: Scripts,
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether an error means the store is out of reach (or not the writable primary right now).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.code(),
            Some("READONLY" | "LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN")
        )
}

impl RedisStore {
    /// Connects (the store must answer now) and checks that it is a writable primary.
    pub async fn connect(cfg: &RedisConfig) -> Result<RedisStore, StoreError> {
        let store = RedisStore {
            cfg: cfg.clone(),
            conn: ArcSwapOption::empty(),
            reconnect: tokio::sync::Mutex::new(None),
            health: Health::default(),
            scripts: Scripts::new(),
        };
        store.check_now().await?;
        Ok(store)
    }

    /// Whether the last command reached the store.
    pub fn reachable(&self) -> bool {
        self.health.ok()
    }

    pub fn failing_since(&self) -> Option<u64> {
        self.health.failing_since()
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.cfg.prefix)
    }

    fn session_key(&self, hash: &[u8; 32]) -> String {
        self.key(&format!("s:{}", hex(hash)))
    }

    fn email_key(&self, email: &str) -> String {
        self.key(&format!("se:{email}"))
    }

    async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
        let client = match &self.cfg.target {
            Target::Url(u) => Client::open(u.as_str())?,
            Target::Sentinel {
                sentinels,
                master,
                db,
                tls,
                username,
                password,
            } => {
                use redis::sentinel::{
                    SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
                };
                let mut info = redis::RedisConnectionInfo::default().set_db(*db);
                if let Some(u) = username {
                    info = info.set_username(u);
                }
                if let Some(p) = password {
                    info = info.set_password(p);
                }
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                if *tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let mut sc = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )?;
                sc.async_get_client().await?
            }
        };
        let conf = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            .set_response_timeout(Some(self.cfg.timeout));
        client
            .get_multiplexed_async_connection_with_config(&conf)
            .await
    }

    /// The current connection, or a new one.
    async fn conn(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let mut last_failure = self.reconnect.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        if last_failure.is_some_and(|t| t.elapsed() < RETRY_GAP) {
            return Err(StoreError::Unreachable("reconnecting".into()));
        }
        let opened = tokio::time::timeout(self.cfg.timeout * 2, self.open()).await;
        match opened {
            Ok(Ok(c)) => {
                *last_failure = None;
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Ok(Err(e)) => {
                *last_failure = Some(Instant::now());
                Err(self.failed(e.to_string()))
            }
            Err(_) => {
                *last_failure = Some(Instant::now());
                Err(self.failed(format!(
                    "no connection within {}",
                    humantime::format_duration(self.cfg.timeout * 2)
                )))
            }
        }
    }

    fn failed(&self, why: String) -> StoreError {
        if self.health.fail() {
            tracing::error!(store = %self.cfg.describe(), error = %why, "the store is unreachable: sign-in and sessions not in this process's cache answer 503 until it is back (reconnecting)");
        }
        StoreError::Unreachable(why)
    }

    fn succeeded(&self) {
        if let Some(ms) = self.health.works() {
            tracing::info!(
                store = %self.cfg.describe(),
                unreachable_for_ms = ms,
                "the store is reachable again"
            );
        }
    }

    /// Maps a command's outcome; a lost connection is dropped so the next command reconnects.
    fn outcome<T>(&self, r: Result<T, RedisError>) -> Result<T, StoreError> {
        match r {
            Ok(v) => {
                self.succeeded();
                Ok(v)
            }
            Err(e) if unreachable(&e) => {
                self.conn.store(None);
                Err(self.failed(e.to_string()))
            }
            Err(e) => Err(StoreError::Backend(e.to_string())),
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        let r = cmd.query_async(&mut c).await;
        self.outcome(r)
    }

    async fn pipe<T: FromRedisValue>(&self, p: &redis::Pipeline) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        let r = p.query_async(&mut c).await;
        self.outcome(r)
    }

    async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<T, StoreError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a.as_slice());
        }
        let mut c = self.conn().await?;
        let r = inv.invoke_async(&mut c).await;
        self.outcome(r)
    }

    /// PING and a small write: reachable, and the primary (a replica refuses writes).
    async fn check_now(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        let _: () = self
            .query(
                redis::cmd("SET")
                    .arg(self.key("probe"))
                    .arg(now_ms())
                    .arg("PX")
                    .arg(60_000),
            )
            .await?;
        Ok(())
    }

    /// Reads session records (`r`, `seen`) of many hashes in one round trip.
    async fn read_sessions(&self, hashes: &[[u8; 32]]) -> Result<Vec<Option<Session>>, StoreError> {
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(CHUNK) {
            let mut p = redis::pipe();
            for h in chunk {
                p.cmd("HMGET").arg(self.session_key(h)).arg("r").arg("seen");
            }
            let rows: Vec<(Option<Vec<u8>>, Option<u64>)> = self.pipe(&p).await?;
            for (r, seen) in rows {
                out.push(match r {
                    Some(bytes) => {
                        let mut s: Session = decode("sessions", &bytes)?;
                        s.last_seen = s.last_seen.max(seen.unwrap_or(0));
                        Some(s)
                    }
                    None => None,
                });
            }
        }
        Ok(out)
    }

    /// Every member of a sorted set (in chunks, so a large one does not block the server).
    async fn members(&self, zset: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut start = 0usize;
        loop {
            let page: Vec<String> = self
                .query(
                    redis::cmd("ZRANGE")
                        .arg(zset)
                        .arg(start)
                        .arg(start + 4 * CHUNK - 1),
                )
                .await?;
            let n = page.len();
            out.extend(page);
            if n < 4 * CHUNK {
                return Ok(out);
            }
            start += n;
        }
    }
}

fn arg(x: impl ToString) -> Vec<u8> {
    x.to_string().into_bytes()
}

fn ttl_ms(secs: u64) -> u64 {
    secs.max(1).saturating_mul(1000)
}

impl Backend for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn insert_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        let ttl = ttl_ms(c.keep_secs());
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("SET")
            .arg(self.key(&format!("c:{}", c.id)))
            .arg(encode(c))
            .arg("PX")
            .arg(ttl)
            .ignore();
        if let Some(l) = c.link_hash {
            p.cmd("SET")
                .arg(self.key(&format!("l:{}", hex(&l))))
                .arg(&c.id)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        p.cmd("ZADD")
            .arg(self.key("cz"))
            .arg(c.expires_at)
            .arg(&c.id)
            .ignore();
        self.pipe(&p).await
    }

    async fn challenge_raw(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(self.key(&format!("c:{id}"))))
            .await
    }

    async fn cas_challenge(
        &self,
        id: &str,
        old: &[u8],
        new: &Challenge,
    ) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(
                &self.scripts.cas,
                &[self.key(&format!("c:{id}"))],
                &[old.to_vec(), encode(new), arg(ttl_ms(new.keep_secs()))],
            )
            .await?;
        if n == 1 {
            // The expiry may have moved (a resend); the count follows it.
            let _: () = self
                .query(
                    redis::cmd("ZADD")
                        .arg(self.key("cz"))
                        .arg(new.expires_at)
                        .arg(id),
                )
                .await?;
        }
        Ok(n == 1)
    }

    async fn challenge_for_link(&self, link: &[u8; 32]) -> Result<Option<String>, StoreError> {
        self.query(redis::cmd("GET").arg(self.key(&format!("l:{}", hex(link)))))
            .await
    }

    async fn relink(
        &self,
        id: &str,
        old: Option<[u8; 32]>,
        new: Option<[u8; 32]>,
        keep_secs: u64,
    ) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        p.atomic();
        if let Some(o) = old {
            p.cmd("DEL")
                .arg(self.key(&format!("l:{}", hex(&o))))
                .ignore();
        }
        if let Some(n) = new {
            p.cmd("SET")
                .arg(self.key(&format!("l:{}", hex(&n))))
                .arg(id)
                .arg("PX")
                .arg(ttl_ms(keep_secs))
                .ignore();
        }
        self.pipe(&p).await
    }

    async fn remove_challenge(&self, c: &Challenge) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("DEL").arg(self.key(&format!("c:{}", c.id))).ignore();
        if let Some(l) = c.link_hash {
            p.cmd("DEL")
                .arg(self.key(&format!("l:{}", hex(&l))))
                .ignore();
        }
        p.cmd("ZREM").arg(self.key("cz")).arg(&c.id).ignore();
        self.pipe(&p).await
    }

    async fn challenge_count(&self) -> Result<usize, StoreError> {
        self.query(redis::cmd("ZCARD").arg(self.key("cz"))).await
    }

    async fn insert_session(&self, hash: &[u8; 32], s: &Session) -> Result<(), StoreError> {
        let h = hex(hash);
        let key = self.session_key(hash);
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("HSET")
            .arg(&key)
            .arg("r")
            .arg(encode(s))
            .arg("seen")
            .arg(s.last_seen)
            .ignore();
        p.cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(s.expires_at.saturating_sub(s.created_at)))
            .ignore();
        p.cmd("ZADD")
            .arg(self.key("sz"))
            .arg(s.expires_at)
            .arg(&h)
            .ignore();
        p.cmd("SADD").arg(self.email_key(&s.email)).arg(&h).ignore();
        self.pipe(&p).await
    }

    async fn session(&self, hash: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        Ok(self.read_sessions(&[*hash]).await?.pop().flatten())
    }

    async fn sessions_for(&self, email: &str) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        let index = self.email_key(email);
        let members: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&index)).await?;
        let hashes: Vec<[u8; 32]> = members.iter().filter_map(|m| unhex(m)).collect();
        let found = self.read_sessions(&hashes).await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (h, s) in hashes.into_iter().zip(found) {
            match s {
                Some(s) => out.push((h, s)),
                None => gone.push(hex(&h)),
            }
        }
        if !gone.is_empty() {
            let _: () = self
                .query(redis::cmd("SREM").arg(&index).arg(&gone))
                .await?;
        }
        out.sort_by_key(|(_, s)| std::cmp::Reverse(s.created_at));
        Ok(out)
    }

    async fn remove_session(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let key = self.session_key(hash);
        let h = hex(hash);
        let record: Option<Vec<u8>> = self.query(redis::cmd("HGET").arg(&key).arg("r")).await?;
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("DEL").arg(&key);
        p.cmd("ZREM").arg(self.key("sz")).arg(&h).ignore();
        if let Some(Ok(s)) = record.map(|b| decode::<Session>("sessions", &b)) {
            p.cmd("SREM").arg(self.email_key(&s.email)).arg(&h).ignore();
        }
        let (deleted,): (u64,) = self.pipe(&p).await?;
        Ok(deleted > 0)
    }

    async fn sessions(&self) -> Result<Vec<([u8; 32], Session)>, StoreError> {
        let members = self.members(&self.key("sz")).await?;
        let hashes: Vec<[u8; 32]> = members.iter().filter_map(|m| unhex(m)).collect();
        let found = self.read_sessions(&hashes).await?;
        Ok(hashes
            .into_iter()
            .zip(found)
            .filter_map(|(h, s)| Some((h, s?)))
            .collect())
    }

    async fn session_count(&self) -> Result<usize, StoreError> {
        self.query(redis::cmd("ZCARD").arg(self.key("sz"))).await
    }

    async fn write_touches(&self, batch: &[([u8; 32], u64)]) -> Result<usize, StoreError> {
        let mut n = 0;
        for chunk in batch.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|(h, _)| self.session_key(h)).collect();
            let args: Vec<Vec<u8>> = chunk.iter().map(|(_, t)| arg(t)).collect();
            let written: usize = self.eval(&self.scripts.touch, &keys, &args).await?;
            n += written;
        }
        Ok(n)
    }

    async fn enqueue_mail(&self, item: &OutboxItem) -> Result<u64, StoreError> {
        self.eval(
            &self.scripts.enqueue,
            &[self.key("o:seq"), self.key("o:items"), self.key("o:due")],
            &[encode(item), arg(item.next_attempt_at)],
        )
        .await
    }

    async fn claim_mail(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let flat: Vec<Vec<u8>> = self
            .eval(
                &self.scripts.claim,
                &[self.key("o:items"), self.key("o:due")],
                &[
                    arg(now),
                    arg(now.saturating_add(MAIL_LEASE_SECS)),
                    arg(limit),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [id, record] = pair else { continue };
            let id = String::from_utf8_lossy(id).parse::<u64>().unwrap_or(0);
            out.push((id, decode("outbox", record)?));
        }
        Ok(out)
    }

    async fn update_mail(&self, id: u64, item: &OutboxItem) -> Result<(), StoreError> {
        let _: i64 = self
            .eval(
                &self.scripts.update_mail,
                &[self.key("o:items"), self.key("o:due")],
                &[arg(id), encode(item), arg(item.next_attempt_at)],
            )
            .await?;
        Ok(())
    }

    async fn remove_mail(&self, id: u64) -> Result<(), StoreError> {
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("HDEL").arg(self.key("o:items")).arg(id).ignore();
        p.cmd("ZREM").arg(self.key("o:due")).arg(id).ignore();
        self.pipe(&p).await
    }

    async fn outbox(&self) -> Result<Vec<(u64, OutboxItem)>, StoreError> {
        let all: Vec<(u64, Vec<u8>)> = self
            .query(redis::cmd("HGETALL").arg(self.key("o:items")))
            .await?;
        let mut out = Vec::with_capacity(all.len());
        for (id, v) in all {
            out.push((id, decode("outbox", &v)?));
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    async fn outbox_len(&self) -> Result<usize, StoreError> {
        self.query(redis::cmd("HLEN").arg(self.key("o:items")))
            .await
    }

    async fn take(
        &self,
        keys: &[[u8; 32]],
        rates: &[Rate],
        now_us: u64,
    ) -> Result<Result<Option<()>, u64>, StoreError> {
        let names: Vec<String> = keys
            .iter()
            .map(|k| self.key(&format!("r:{}", hex(k))))
            .collect();
        let mut args = vec![arg(now_us)];
        for r in rates {
            args.push(arg(r.interval_us));
            args.push(arg(r.tolerance_us));
        }
        let wait: u64 = self.eval(&self.scripts.take, &names, &args).await?;
        Ok(if wait == 0 { Ok(Some(())) } else { Err(wait) })
    }

    async fn shared_secret(&self, candidate: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.eval(
            &self.scripts.secret,
            &[self.key("secret")],
            &[candidate.to_vec()],
        )
        .await
    }

    async fn push_event(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let key = self.key("events");
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("LPUSH").arg(&key).arg(encode(e)).ignore();
        p.cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(RECENT_EVENTS - 1)
            .ignore();
        self.pipe(&p).await
    }

    async fn recent_events(&self) -> Result<Vec<AuditEvent>, StoreError> {
        let raw: Vec<Vec<u8>> = self
            .query(
                redis::cmd("LRANGE")
                    .arg(self.key("events"))
                    .arg(0)
                    .arg(RECENT_EVENTS - 1),
            )
            .await?;
        let mut out: Vec<AuditEvent> = raw
            .iter()
            .filter_map(|b| decode("events", b).ok())
            .collect();
        out.reverse();
        Ok(out)
    }

    async fn sweep(&self, now: u64, idle: Option<u64>) -> Result<(usize, usize), StoreError> {
        // Challenges: the records expire by themselves; the count index is trimmed here.
        let cz = self.key("cz");
        let gone_c: usize = self
            .query(
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&cz)
                    .arg("-inf")
                    .arg(format!("({}", now.saturating_sub(CHALLENGE_GRACE))),
            )
            .await?;
        // Sessions: expired ones by the index; idle ones by their activity.
        let mut dead: Vec<[u8; 32]> = Vec::new();
        let expired: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.key("sz"))
                    .arg("-inf")
                    .arg(now),
            )
            .await?;
        dead.extend(expired.iter().filter_map(|m| unhex(m)));
        if let Some(idle) = idle {
            let all = self.members(&self.key("sz")).await?;
            let hashes: Vec<[u8; 32]> = all.iter().filter_map(|m| unhex(m)).collect();
            let found = self.read_sessions(&hashes).await?;
            for (h, s) in hashes.into_iter().zip(found) {
                match s {
                    Some(s) if s.last_seen.saturating_add(idle) >= now => {}
                    _ => dead.push(h),
                }
            }
        }
        dead.sort_unstable();
        dead.dedup();
        let mut gone_s = 0;
        for h in &dead {
            if self.remove_session(h).await? {
                gone_s += 1;
            } else {
                // A record that expired by itself: only its index entry was left.
                let _: () = self
                    .query(redis::cmd("ZREM").arg(self.key("sz")).arg(hex(h)))
                    .await?;
            }
        }
        Ok((gone_c, gone_s))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Redis acknowledges a write once it is applied; it reaches disk by the server's
        // `appendfsync` setting (README: "Running several replicas").
        Ok(())
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.check_now().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let h = [0xab; 32];
        assert_eq!(unhex(&hex(&h)), Some(h));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn describe_hides_the_password() {
        let c = RedisConfig {
            target: Target::Url("redis://:hunter2@db.internal:6379/0".into()),
            prefix: "p:".into(),
            timeout: Duration::from_secs(1),
        };
        let d = c.describe();
        assert!(!d.contains("hunter2") && d.contains("db.internal"), "{d}");
    }
}
