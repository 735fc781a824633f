//! One conformance suite for every store backend: each test runs the same operations against sled (in a temp dir) and against a real `redis-server` started for it (skipped visibly without one).
//!
//! Modelled on oauth2-proxy's `RunSessionStoreTests`: create, read, compare-and-set, single
//! use under parallel redemption, attempt caps under parallel wrong codes, expiry with the
//! injected clock (times are passed in), the outbox lease, shared buckets and secret, recent
//! events, revocation reaching another process's cache, and outages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::store::redis::{RedisConfig, Target};
use portcullis::store::{
    AuditEvent, Challenge, Modify, OutboxItem, Rate, Session, Store, StoreConfig, StoreOptions,
    MAIL_LEASE_SECS, RECENT_EVENTS, SESSION_CACHE_TTL,
};

use crate::support::redis::RedisServer;

/// One backend under test, with what keeps it alive.
struct Subject {
    name: &'static str,
    store: Arc<Store>,
    /// A second handle on the same data, as another replica has (Redis only).
    other: Option<Arc<Store>>,
    _dir: tempfile::TempDir,
    server: Option<RedisServer>,
}

fn redis_config(port: u16, prefix: &str) -> StoreConfig {
    StoreConfig::Redis(RedisConfig {
        target: Target::Url(format!("redis://127.0.0.1:{port}/0")),
        prefix: prefix.to_string(),
        timeout: Duration::from_millis(500),
    })
}

/// sled, and Redis when `redis-server` is installed.
async fn subjects() -> Vec<Subject> {
    let dir = tempfile::tempdir().unwrap();
    let sled = Store::open(&StoreOptions::new(dir.path().join("data"))).unwrap();
    let mut out = vec![Subject {
        name: "sled",
        store: Arc::new(sled),
        other: None,
        _dir: dir,
        server: None,
    }];
    if let Some(server) = RedisServer::start() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::new(dir.path().join("unused"));
        let prefix = format!("conf{}:", std::process::id());
        let cfg = redis_config(server.port, &prefix);
        let a = Store::connect(&cfg, &opts).await.unwrap();
        let b = Store::connect(&cfg, &opts).await.unwrap();
        assert_eq!(a.kind(), "redis");
        out.push(Subject {
            name: "redis",
            store: Arc::new(a),
            other: Some(Arc::new(b)),
            _dir: dir,
            server: Some(server),
        });
    }
    out
}

fn challenge(id: &str, now: u64) -> Challenge {
    Challenge {
        id: id.into(),
        email: "a@example.com".into(),
        deliverable: true,
        link_hash: Some(portcullis::crypto::sha256(id.as_bytes())),
        code_mac: Some([3; 32]),
        binding_hash: None,
        created_at: now,
        expires_at: now + 900,
        attempts: 0,
        completed: false,
        redirect_to: "/".into(),
        state: None,
        sends: 1,
        last_sent_at: now,
        ip: "192.0.2.1".into(),
        user_agent: "t".into(),
    }
}

fn session(email: &str, now: u64, ttl: u64) -> Session {
    Session {
        id: "abc".into(),
        email: email.into(),
        created_at: now,
        expires_at: now + ttl,
        last_seen: now,
        ip: "192.0.2.1".into(),
        user_agent: "t".into(),
    }
}

fn mail(n: u32, now: u64) -> OutboxItem {
    OutboxItem {
        challenge_id: format!("c{n}"),
        send: 1,
        to: format!("u{n}@example.com"),
        ip: String::new(),
        user_agent: String::new(),
        created_at: now,
        expires_at: now + 900,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn challenges_create_read_relink_remove() {
    for s in subjects().await {
        let st = &s.store;
        let t = now();
        let c = challenge("ch-1", t);
        st.insert_challenge(&c).await.unwrap();
        assert_eq!(
            st.challenge("ch-1").await.unwrap(),
            Some(c.clone()),
            "{}",
            s.name
        );
        assert_eq!(st.challenge("nope").await.unwrap(), None, "{}", s.name);
        let link = c.link_hash.unwrap();
        assert_eq!(
            st.challenge_for_link(&link).await.unwrap().as_deref(),
            Some("ch-1"),
            "{}",
            s.name
        );
        assert_eq!(st.challenge_count().await, 1, "{}", s.name);
        // A new link replaces the old one in the index.
        let new = [9u8; 32];
        st.relink(&c, Some(link), Some(new)).await.unwrap();
        assert_eq!(
            st.challenge_for_link(&link).await.unwrap(),
            None,
            "{}",
            s.name
        );
        assert_eq!(
            st.challenge_for_link(&new).await.unwrap().as_deref(),
            Some("ch-1"),
            "{}",
            s.name
        );
        // Compare-and-set: the closure sees the current record; Keep writes nothing.
        let kept: u32 = st
            .modify_challenge("ch-1", |c| Modify::Keep(c.map_or(0, |c| c.sends)))
            .await
            .unwrap();
        assert_eq!(kept, 1);
        let wrote = st
            .modify_challenge("ch-1", |c| {
                let mut c = c.unwrap();
                c.sends = 2;
                c.link_hash = Some(new);
                Modify::Write(c, true)
            })
            .await
            .unwrap();
        assert!(wrote);
        assert_eq!(
            st.challenge("ch-1").await.unwrap().unwrap().sends,
            2,
            "{}",
            s.name
        );
        // A vanished record is never re-created by a modify.
        let gone: bool = st
            .modify_challenge("missing", |c| match c {
                None => Modify::Keep(false),
                Some(c) => Modify::Write(c, true),
            })
            .await
            .unwrap();
        assert!(!gone);
        assert_eq!(st.challenge("missing").await.unwrap(), None, "{}", s.name);
        let c = st.challenge("ch-1").await.unwrap().unwrap();
        st.remove_challenge(&c).await.unwrap();
        assert_eq!(st.challenge("ch-1").await.unwrap(), None, "{}", s.name);
        assert_eq!(
            st.challenge_for_link(&new).await.unwrap(),
            None,
            "{}",
            s.name
        );
        assert_eq!(st.challenge_count().await, 0, "{}", s.name);
    }
}

/// Many concurrent redemptions (from two handles on Redis, as two replicas): exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_challenge_is_redeemed_once_under_parallel_redemption() {
    for s in subjects().await {
        for round in 0..5 {
            let id = format!("race-{round}");
            s.store
                .insert_challenge(&challenge(&id, now()))
                .await
                .unwrap();
            let wins = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for i in 0..24 {
                let st = match (&s.other, i % 2) {
                    (Some(o), 1) => o.clone(),
                    _ => s.store.clone(),
                };
                let (id, wins) = (id.clone(), wins.clone());
                tasks.push(tokio::spawn(async move {
                    let won = st
                        .modify_challenge(&id, |c| match c {
                            Some(mut c) if !c.completed => {
                                c.completed = true;
                                Modify::Write(c, true)
                            }
                            _ => Modify::Keep(false),
                        })
                        .await
                        .unwrap();
                    if won {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(wins.load(Ordering::SeqCst), 1, "{} round {round}", s.name);
        }
    }
}

/// Wrong codes in parallel: every one is counted, none past the cap, and exactly `cap` of
/// them are told "wrong" (the rest "locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempt_caps_hold_under_parallel_wrong_codes() {
    const CAP: u32 = 5;
    for s in subjects().await {
        s.store
            .insert_challenge(&challenge("cap", now()))
            .await
            .unwrap();
        let counted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..30 {
            let st = match (&s.other, i % 2) {
                (Some(o), 1) => o.clone(),
                _ => s.store.clone(),
            };
            let counted = counted.clone();
            tasks.push(tokio::spawn(async move {
                let wrong = st
                    .modify_challenge("cap", |c| match c {
                        Some(mut c) if c.attempts < CAP => {
                            c.attempts += 1;
                            Modify::Write(c, true)
                        }
                        _ => Modify::Keep(false),
                    })
                    .await
                    .unwrap();
                if wrong {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(counted.load(Ordering::SeqCst), CAP as usize, "{}", s.name);
        let c = s.store.challenge("cap").await.unwrap().unwrap();
        assert_eq!(c.attempts, CAP, "{}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_lookup_touch_list_revoke_and_sweep() {
    for s in subjects().await {
        let st = &s.store;
        let t = now();
        let (a1, a2, b1) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        st.insert_session(&a1, &session("a@example.com", t, 3600))
            .await
            .unwrap();
        let mut newer = session("a@example.com", t + 5, 100);
        newer.id = "newer".into();
        st.insert_session(&a2, &newer).await.unwrap();
        st.insert_session(&b1, &session("b@example.com", t, 3600))
            .await
            .unwrap();
        assert_eq!(st.session_count().await, 3, "{}", s.name);
        assert_eq!(
            st.session(&a1).await.unwrap().unwrap().email,
            "a@example.com"
        );
        assert_eq!(st.session(&[7; 32]).await.unwrap(), None, "{}", s.name);
        let mine = st.sessions_for("a@example.com").await.unwrap();
        assert_eq!(mine.len(), 2, "{}", s.name);
        assert_eq!(mine[0].1.id, "newer", "{}: newest first", s.name);
        assert_eq!(st.sessions().await.unwrap().len(), 3, "{}", s.name);

        // Activity is batched in memory, written by flush_touches, and never goes back.
        st.touch_session(&a1, t + 500);
        assert_eq!(st.pending_touch(&a1), Some(t + 500));
        assert_eq!(st.flush_touches().await.unwrap(), 1, "{}", s.name);
        assert_eq!(st.pending_touch(&a1), None);
        st.touch_session(&a1, t + 100);
        st.flush_touches().await.unwrap();
        // Read back from the backend (the other replica has no cached copy).
        let reader = s.other.as_ref().unwrap_or(st);
        assert_eq!(
            reader.session(&a1).await.unwrap().unwrap().last_seen,
            t + 500,
            "{}",
            s.name
        );

        // Expiry and idleness with the injected time: `newer` expires at t+105; b1 is idle.
        let (_, gone) = st.sweep(t + 200, Some(300)).await.unwrap();
        assert_eq!(gone, 1, "{}: only the expired one", s.name);
        let (_, gone) = st.sweep(t + 700, Some(300)).await.unwrap();
        assert_eq!(gone, 1, "{}: b1 idle since t, a1 seen at t+500", s.name);
        assert!(st.session(&b1).await.unwrap().is_none(), "{}", s.name);
        assert!(st.session(&a1).await.unwrap().is_some(), "{}", s.name);
        assert_eq!(
            st.sessions_for("b@example.com").await.unwrap().len(),
            0,
            "{}: the index follows removals",
            s.name
        );

        // Revocation: exactly once, and by address.
        assert!(st.remove_session(&a1).await.unwrap(), "{}", s.name);
        assert!(!st.remove_session(&a1).await.unwrap(), "{}", s.name);
        for h in [[4u8; 32], [5u8; 32]] {
            st.insert_session(&h, &session("c@example.com", t, 3600))
                .await
                .unwrap();
        }
        assert_eq!(
            st.remove_sessions_for("c@example.com").await.unwrap(),
            2,
            "{}",
            s.name
        );
        assert_eq!(st.session_count().await, 0, "{}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn challenges_expire_with_a_minute_of_grace() {
    for s in subjects().await {
        let t = now();
        let c = challenge("old", t);
        s.store.insert_challenge(&c).await.unwrap();
        assert_eq!(
            s.store.sweep(t + 900 + 30, None).await.unwrap().0,
            0,
            "{}",
            s.name
        );
        assert_eq!(
            s.store.sweep(t + 900 + 61, None).await.unwrap().0,
            1,
            "{}",
            s.name
        );
        assert_eq!(s.store.challenge_count().await, 0, "{}", s.name);
    }
}

/// The outbox: due mail is claimed by one worker for a lease; another worker (another replica)
/// gets it only once the lease ran out; a retry is due again after its backoff; an ack removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_claims_are_leased_retried_and_acknowledged() {
    for s in subjects().await {
        let st = &s.store;
        let other = s.other.clone().unwrap_or_else(|| st.clone());
        let t = now();
        let ids: Vec<u64> = {
            let mut v = Vec::new();
            for n in 0..5 {
                v.push(st.enqueue_mail(&mail(n, t)).await.unwrap());
            }
            v
        };
        let mut later = mail(9, t);
        later.next_attempt_at = t + 60;
        st.enqueue_mail(&later).await.unwrap();
        assert_eq!(st.outbox_len().await, 6, "{}", s.name);

        let first = st.claim_mail(t, 3).await.unwrap();
        assert_eq!(
            first.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids[..3].to_vec(),
            "{}: oldest first",
            s.name
        );
        let second = other.claim_mail(t, 10).await.unwrap();
        assert_eq!(
            second.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids[3..].to_vec(),
            "{}: claimed mail is not handed out again, mail not yet due neither",
            s.name
        );
        assert!(
            other.claim_mail(t + 1, 10).await.unwrap().is_empty(),
            "{}",
            s.name
        );

        // The first worker dies: after the lease the other takes its mail.
        let after = other.claim_mail(t + MAIL_LEASE_SECS + 1, 10).await.unwrap();
        let mut got: Vec<u64> = after.iter().map(|(id, _)| *id).collect();
        got.sort_unstable();
        assert!(got.starts_with(&ids), "{}: {got:?}", s.name);

        // A retry is due after its backoff; an ack removes the mail for good.
        let (id0, mut item) = first[0].clone();
        item.attempts = 1;
        item.next_attempt_at = t + 500;
        st.update_mail(id0, &item).await.unwrap();
        for (id, _) in &first[1..] {
            st.remove_mail(*id).await.unwrap();
        }
        let q = st.outbox().await.unwrap();
        assert_eq!(q.len(), 4, "{}", s.name);
        assert_eq!(q.iter().find(|(id, _)| *id == id0).unwrap().1.attempts, 1);
        let due: Vec<u64> = other
            .claim_mail(t + 500, 10)
            .await
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert!(due.contains(&id0), "{}: {due:?}", s.name);
        // A mail acknowledged meanwhile is not brought back by a late retry.
        st.remove_mail(id0).await.unwrap();
        st.update_mail(id0, &item).await.unwrap();
        assert!(
            !st.outbox().await.unwrap().iter().any(|(id, _)| *id == id0),
            "{}",
            s.name
        );
    }
}

/// Parallel workers on one queue: every mail is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_workers_claim_each_mail_once() {
    for s in subjects().await {
        let t = now();
        for n in 0..40 {
            s.store.enqueue_mail(&mail(n, t)).await.unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..8 {
            let st = match (&s.other, i % 2) {
                (Some(o), 1) => o.clone(),
                _ => s.store.clone(),
            };
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = st.claim_mail(t, 3).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|(id, _)| id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!((n, all.len()), (40, 40), "{}", s.name);
    }
}

/// Shared buckets (Redis): a burst, then one request per interval, all or nothing across
/// keys, the same budget for every replica. sled leaves them to the in-process limiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_buckets_are_shared_and_all_or_nothing() {
    for s in subjects().await {
        let rate = Rate {
            interval_us: 10_000_000,
            tolerance_us: 2 * 10_000_000,
        };
        let now_us = now() * 1_000_000;
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let first = s.store.take(&[a], &[rate], now_us).await.unwrap();
        let Some(other) = &s.other else {
            assert_eq!(first, Ok(None), "{}: not shared", s.name);
            assert!(!s.store.shares_limits());
            continue;
        };
        assert!(s.store.shares_limits());
        assert_eq!(first, Ok(Some(())));
        // Burst of three (tolerance two intervals), spent from both replicas.
        assert_eq!(
            other.take(&[a], &[rate], now_us).await.unwrap(),
            Ok(Some(()))
        );
        assert_eq!(
            s.store.take(&[a], &[rate], now_us).await.unwrap(),
            Ok(Some(()))
        );
        assert_eq!(
            other.take(&[a], &[rate], now_us).await.unwrap(),
            Err(10_000_000),
            "the fourth waits one interval"
        );
        // All or nothing: a refused pair does not spend the free bucket.
        assert!(s
            .store
            .take(&[b, a], &[rate, rate], now_us)
            .await
            .unwrap()
            .is_err());
        for _ in 0..3 {
            assert_eq!(
                s.store.take(&[b], &[rate], now_us).await.unwrap(),
                Ok(Some(())),
                "b kept its whole burst"
            );
        }
        // Time passes: one more.
        assert_eq!(
            other
                .take(&[a], &[rate], now_us + 10_000_000)
                .await
                .unwrap(),
            Ok(Some(()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secret_is_created_once_and_events_are_bounded() {
    for s in subjects().await {
        let first = s.store.shared_secret(b"one").await.unwrap();
        match &s.other {
            None => assert_eq!(first, None, "{}: files keep the secret", s.name),
            Some(o) => {
                assert_eq!(first.as_deref(), Some(&b"one"[..]));
                assert_eq!(
                    o.shared_secret(b"two").await.unwrap().as_deref(),
                    Some(&b"one"[..]),
                    "the second replica gets the first one's secret"
                );
            }
        }
        for i in 0..RECENT_EVENTS + 50 {
            s.store
                .push_event(&AuditEvent {
                    at: i as u64,
                    event: "sign_in".into(),
                    email: "a@example.com".into(),
                    ip: String::new(),
                    detail: String::new(),
                })
                .await
                .unwrap();
        }
        let seen = s
            .other
            .as_ref()
            .unwrap_or(&s.store)
            .recent_events()
            .await
            .unwrap();
        assert_eq!(seen.len(), RECENT_EVENTS, "{}", s.name);
        assert_eq!(seen[0].at, 50, "{}: oldest kept first", s.name);
        assert_eq!(seen.last().unwrap().at, (RECENT_EVENTS + 49) as u64);
    }
}

/// A session cached by one replica stops working there within the cache lifetime once another
/// replica revokes it (and at once on the replica that revoked it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_another_replicas_cache_within_a_second() {
    for s in subjects().await {
        let h = [8u8; 32];
        s.store
            .insert_session(&h, &session("r@example.com", now(), 3600))
            .await
            .unwrap();
        let Some(other) = &s.other else {
            assert!(s.store.session(&h).await.unwrap().is_some());
            assert!(s.store.remove_session(&h).await.unwrap());
            assert!(
                s.store.session(&h).await.unwrap().is_none(),
                "local revoke is immediate"
            );
            continue;
        };
        assert!(
            other.session(&h).await.unwrap().is_some(),
            "cached by the other replica"
        );
        let start = Instant::now();
        assert!(s.store.remove_session(&h).await.unwrap());
        assert!(s.store.session(&h).await.unwrap().is_none());
        while other.session(&h).await.unwrap().is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "still valid after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delay = start.elapsed();
        assert!(
            delay <= SESSION_CACHE_TTL + Duration::from_millis(100),
            "{delay:?}"
        );
        println!("revocation reached the other replica's cache after {delay:?}");
    }
}

/// Redis out of reach: every operation fails within its timeout as "unavailable" (503 above
/// it), a cached session stays readable, and the store reconnects by itself once Redis is back
/// with its data (append-only file).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_store_fails_fast_and_comes_back_by_itself() {
    for mut s in subjects().await {
        let Some(server) = s.server.as_mut() else {
            continue;
        };
        let st = s.store.clone();
        let h = [6u8; 32];
        st.insert_session(&h, &session("o@example.com", now(), 3600))
            .await
            .unwrap();
        st.insert_challenge(&challenge("kept", now()))
            .await
            .unwrap();
        assert!(st.session(&h).await.unwrap().is_some());
        server.kill();
        let started = Instant::now();
        let e = st.challenge("kept").await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(!st.writable());
        assert!(st.check().await.is_err());
        tokio::time::sleep(SESSION_CACHE_TTL).await;
        let e = st.session(&h).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        let e = st.enqueue_mail(&mail(1, now())).await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match st.challenge("kept").await {
                Ok(c) => {
                    assert!(c.is_some(), "data survived the restart");
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "not back: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        assert!(st.session(&h).await.unwrap().is_some());
        assert!(st.writable());
    }
}
