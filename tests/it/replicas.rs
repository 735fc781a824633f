//! Several `portcullis serve` processes sharing one Redis (`store.url`, or Sentinel): whatever a
//! replica does (challenges, sessions, code attempts, rate limits, revocations, the outbox, the
//! master secret) every other replica sees; a Redis outage fails closed and heals by itself; a
//! Sentinel failover keeps sessions. Real redis-server, redis-sentinel and nginx (round-robin
//! load balancer): a test whose server is missing is skipped visibly (see `support::redis`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};

use crate::jwt::{jwks, verify, JWT_HEADER};
use crate::support::process::{base_config, write_yaml, Served};
use crate::support::redis::{quiet_port, Balancer, RedisServer, SentinelSet, MASTER_NAME};
use crate::support::upstream::echoed;
use crate::support::{set_path, Http, Req, Resp, Smtp, Upstream, WAIT};

// ---------------------------------------------------------------------------------------------
// A cluster of gateways
// ---------------------------------------------------------------------------------------------

struct Replica {
    port: u16,
    dir: PathBuf,
    cfg: Value,
    served: Option<Served>,
}

/// `n` gateways on one store, each with its own port, data_dir and log; one public_url.
struct Cluster {
    _dir: tempfile::TempDir,
    public_url: String,
    replicas: Vec<Replica>,
    lb: Option<Balancer>,
}

/// A key prefix no other test uses.
fn prefix(test: &str) -> String {
    format!("pc-it-{test}-{:08x}:", rand::random::<u32>())
}

/// `store:` for a plain Redis server.
fn redis_store(redis: &RedisServer, test: &str) -> Value {
    json!({"url": redis.url(), "prefix": prefix(test)})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Cluster {
    /// Configures `n` gateways on `store`, mail to `smtp_port`, public_url = the first replica,
    /// `trusted_proxies: [127.0.0.1/32]`. Nothing is started.
    fn new(n: usize, store: Value, smtp_port: u16) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| quiet_port()).collect();
        let public_url = format!("http://127.0.0.1:{}", ports[0]);
        let replicas = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let rdir = dir.path().join(format!("r{i}"));
                std::fs::create_dir_all(&rdir).unwrap();
                let mut cfg = base_config(&rdir, port, smtp_port);
                set_path(&mut cfg, "public_url", json!(public_url));
                set_path(&mut cfg, "store", store.clone());
                set_path(&mut cfg, "trusted_proxies", json!(["127.0.0.1/32"]));
                set_path(&mut cfg, "log_emails", json!(true));
                Replica {
                    port,
                    dir: rdir,
                    cfg,
                    served: None,
                }
            })
            .collect();
        Cluster {
            _dir: dir,
            public_url,
            replicas,
            lb: None,
        }
    }

    /// Puts a real nginx round-robin balancer in front; public_url becomes the balancer's URL.
    /// `None` when nginx is not installed (the test is skipped).
    async fn with_balancer(mut self) -> Option<Cluster> {
        let ports: Vec<u16> = self.replicas.iter().map(|r| r.port).collect();
        let lb = Balancer::start(quiet_port(), &ports).await?;
        self.public_url = lb.base.clone();
        self.set("public_url", json!(lb.base));
        self.lb = Some(lb);
        Some(self)
    }

    /// Sets one configuration key (dotted path) on every replica (takes effect at start).
    fn set(&mut self, key: &str, value: Value) -> &mut Cluster {
        for r in &mut self.replicas {
            set_path(&mut r.cfg, key, value.clone());
        }
        self
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.replicas[i].dir.join("portcullis.yaml")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.replicas[i].dir.join("serve.log")
    }

    /// Starts replica `i` and waits until it answers `/.auth/healthz`.
    async fn start(&mut self, i: usize) {
        self.start_some(&[i]).await;
    }

    /// Starts every replica at once (they race to create whatever is created once).
    async fn start_all(&mut self) {
        let all: Vec<usize> = (0..self.replicas.len()).collect();
        self.start_some(&all).await;
    }

    async fn start_some(&mut self, which: &[usize]) {
        let mut tasks = Vec::new();
        for &i in which {
            assert!(
                self.replicas[i].served.is_none(),
                "replica {i} runs already"
            );
            let config = self.config_path(i);
            write_yaml(&config, &self.replicas[i].cfg);
            let log = self.log_path(i);
            let port = self.replicas[i].port;
            tasks.push((
                i,
                tokio::spawn(async move { Served::start(&config, &log, port, &[]).await }),
            ));
        }
        for (i, t) in tasks {
            let served = t
                .await
                .unwrap_or_else(|e| panic!("replica {i} did not start: {e}\n{}", self.logs()));
            self.replicas[i].served = Some(served);
        }
    }

    /// SIGKILLs replica `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.replicas[i].served.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// `http://127.0.0.1:{port of replica i}`
    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.replicas[i].port)
    }

    fn port(&self, i: usize) -> u16 {
        self.replicas[i].port
    }

    /// A new client aimed at replica `i` itself (not through the balancer).
    fn http(&self, i: usize) -> Http {
        Http::new(&self.base(i))
    }

    fn lb(&self) -> &Balancer {
        self.lb.as_ref().expect("this cluster has no balancer")
    }

    /// The tail of every replica's log (and the balancer's error log), for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            out.push_str(&format!(
                "\n--- replica {i} (port {}) log ---\n{}\n",
                r.port,
                tail(&self.log_path(i), 60)
            ));
        }
        if let Some(lb) = &self.lb {
            out.push_str(&format!("\n--- nginx error log ---\n{}\n", lb.error_log()));
        }
        out
    }

    /// `POST /.auth/api/login` on replica `on`, asserting 200; returns the challenge id.
    async fn ask(&self, on: usize, email: &str) -> String {
        let r = self
            .http(on)
            .send(Req::post("/.auth/api/login").json(&json!({ "email": email })))
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "api/login {email} on replica {on}: {}\n{}",
            r.text(),
            self.logs()
        );
        r.json()["challenge_id"].as_str().unwrap().to_string()
    }

    /// `POST /.auth/api/verify {challenge_id, code, issue_token}` on replica `on`.
    async fn verify_code(&self, on: usize, id: &str, code: &str) -> Resp {
        self.http(on)
            .send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"challenge_id": id, "code": code, "issue_token": true})),
            )
            .await
    }

    /// `POST /.auth/api/verify {link_token, issue_token}` on replica `on`.
    async fn verify_link(&self, on: usize, token: &str) -> Resp {
        self.http(on)
            .send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"link_token": token, "issue_token": true})),
            )
            .await
    }

    /// Asks on `ask_on`, enters the mailed code on `verify_on`; returns the session token.
    async fn sign_in(&self, smtp: &Smtp, email: &str, ask_on: usize, verify_on: usize) -> String {
        let id = self.ask(ask_on, email).await;
        let code = smtp.wait_for_mail(email, WAIT).await.code();
        let r = self.verify_code(verify_on, &id, &code).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "api/verify {email} on replica {verify_on}: {}\n{}",
            r.text(),
            self.logs()
        );
        r.json()["session_token"].as_str().unwrap().to_string()
    }

    /// `GET path` on replica `on` with the session as a bearer token.
    async fn get_as(&self, on: usize, path: &str, token: &str) -> Resp {
        self.http(on)
            .send(Req::get(path).header("authorization", &bearer(token)))
            .await
    }
}

/// Sends `req` to `base`, failing the test if no answer comes within `limit`; returns the answer
/// and how long it took.
async fn timed(base: &str, req: Req, limit: Duration, what: &str) -> (Resp, Duration) {
    let start = Instant::now();
    let r = tokio::time::timeout(limit, Http::new(base).try_send(req))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?} (the gateway hangs)"))
        .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    (r, start.elapsed())
}

/// Like `timed`, but a connection error or timeout is `None` (for polling during outages).
async fn try_get(base: &str, req: Req, limit: Duration) -> Option<Resp> {
    tokio::time::timeout(limit, Http::new(base).try_send(req))
        .await
        .ok()?
        .ok()
}

// ---------------------------------------------------------------------------------------------
// The harness itself (no gateway)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_redis_restart_keeps_data_and_sentinel_promotes_the_replica() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let ok = |r: std::io::Result<crate::support::redis::Reply>| r.unwrap().text();
    assert_eq!(ok(redis.cmd(&["SET", "k", "v1"])).as_deref(), Some("OK"));
    redis.kill();
    assert!(!redis.is_running());
    assert!(redis.cmd(&["PING"]).is_err(), "a killed server answered");
    redis.restart();
    assert_eq!(
        ok(redis.cmd(&["GET", "k"])).as_deref(),
        Some("v1"),
        "the append-only file did not survive SIGKILL + restart:\n{}",
        redis.log_text()
    );
    assert_eq!(redis.keys("k*"), vec!["k".to_string()]);

    let Some(mut set) = SentinelSet::start(3) else {
        return;
    };
    assert_eq!(
        ok(set.primary.cmd(&["SET", "before", "failover"])).as_deref(),
        Some("OK")
    );
    set.wait_replicated();
    // The replica refuses writes until it is promoted.
    let r = set.replica.cmd(&["SET", "x", "y"]).unwrap();
    assert!(
        matches!(&r, crate::support::redis::Reply::Error(e) if e.starts_with("READONLY")),
        "{r:?}"
    );
    set.kill_primary();
    let took = set.wait_promoted(Duration::from_secs(30));
    eprintln!(
        "sentinel failover (primary SIGKILLed -> replica promoted, all sentinels agree): {took:?}"
    );
    assert_eq!(
        ok(set.replica.cmd(&["GET", "before"])).as_deref(),
        Some("failover")
    );
    assert_eq!(
        ok(set.replica.cmd(&["SET", "after", "failover"])).as_deref(),
        Some("OK")
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions and challenges cross replicas
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_balancer_and_the_session_works_on_every_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let Some(mut c) = Cluster::new(3, redis_store(&redis, "lb"), smtp.port)
        .with_balancer()
        .await
    else {
        return;
    };
    c.start_all().await;
    let lb_base = c.lb().base.clone();

    // API sign-ins through the balancer: round-robin sends the login and the verify of each to
    // different replicas (checked on nginx's access log below).
    let mut tokens = Vec::new();
    for i in 0..3 {
        let email = format!("lb{i}@example.com");
        let http = Http::new(&lb_base);
        let r = http
            .send(Req::post("/.auth/api/login").json(&json!({ "email": email })))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
        let id = r.json()["challenge_id"].clone();
        let code = smtp.wait_for_mail(&email, WAIT).await.code();
        let r = http
            .send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"challenge_id": id, "code": code, "issue_token": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
        assert_eq!(r.json()["email"], email.as_str());
        let token = r.json()["session_token"].as_str().unwrap().to_string();
        let cookie = http
            .cookie("portcullis_session")
            .expect("verify through the balancer set no session cookie");
        tokens.push((email, token, cookie));
    }
    // Three sign-ins, two requests each, nothing else through the balancer yet.
    let hops = c.lb().hops(6).await;
    let logins: Vec<_> = hops
        .iter()
        .filter(|h| h.method == "POST" && h.uri == "/.auth/api/login" && h.status == 200)
        .collect();
    let verifies: Vec<_> = hops
        .iter()
        .filter(|h| h.method == "POST" && h.uri == "/.auth/api/verify" && h.status == 200)
        .collect();
    assert_eq!(logins.len(), 3, "{hops:?}");
    assert_eq!(verifies.len(), 3, "{hops:?}");
    for (l, v) in logins.iter().zip(&verifies) {
        assert!(
            l.upstream.is_some() && l.upstream != v.upstream,
            "login and verify of one sign-in went to the same replica: {hops:?}"
        );
    }
    let used: BTreeSet<u16> = hops.iter().filter_map(|h| h.upstream).collect();
    let all: BTreeSet<u16> = (0..3).map(|i| c.port(i)).collect();
    assert_eq!(
        used, all,
        "the balancer did not use every replica: {hops:?}"
    );

    // Every session works on every replica itself, as a bearer token and as the cookie.
    for (email, token, cookie) in &tokens {
        for i in 0..3 {
            let r = c.get_as(i, "/.auth/api/session", token).await;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{email}'s session (bearer) on replica {i}: {}\n{}",
                r.text(),
                c.logs()
            );
            assert_eq!(r.json()["email"], email.as_str());
            let r = c
                .http(i)
                .send(
                    Req::get("/.auth/api/session")
                        .header("cookie", &format!("portcullis_session={cookie}")),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{email}'s cookie on replica {i}");
            let r = c.get_as(i, "/dashboard", token).await;
            assert_eq!(r.status, StatusCode::OK, "{email} proxied on replica {i}");
            assert!(r.text().contains(email.as_str()), "{}", r.text());
        }
    }

    // A browser through the balancer: the form and the code land on different replicas, then
    // every page (spread over the replicas) is served.
    let b = Http::new(&lb_base);
    let before = hops.len();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "browser@example.com"), ("rd", "/")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "login form: {}", r.text());
    let code = smtp.wait_for_mail("browser@example.com", WAIT).await.code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "code form on another replica: {}\n{}",
        r.text(),
        c.logs()
    );
    assert!(b.cookie("portcullis_session").is_some());
    for n in 0..6 {
        let r = b.send(Req::get(&format!("/page/{n}"))).await;
        assert_eq!(r.status, StatusCode::OK, "page {n}: {}", r.text());
        assert!(r.text().contains("browser@example.com"));
    }
    let hops = c.lb().hops(before + 8).await;
    let browser: Vec<_> = hops[before..].iter().collect();
    assert_eq!(browser.len(), 8, "{browser:?}");
    assert_ne!(browser[0].upstream, browser[1].upstream, "{browser:?}");
    let used: BTreeSet<u16> = browser[2..].iter().filter_map(|h| h.upstream).collect();
    assert_eq!(used, all, "{browser:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_started_on_one_replica_finishes_on_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let mut c = Cluster::new(3, redis_store(&redis, "cross"), smtp.port);
    c.start_all().await;

    // Code: asked on A, status seen on B, entered on B, session used on C.
    let id = c.ask(0, "code@example.com").await;
    let code = smtp.wait_for_mail("code@example.com", WAIT).await.code();
    let r = c
        .http(1)
        .send(Req::get(&format!("/.auth/api/challenge/{id}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
    assert_eq!(r.json()["completed"], false);
    let r = c.verify_code(1, &id, &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
    let token = r.json()["session_token"].as_str().unwrap().to_string();
    let r = c.get_as(2, "/.auth/api/session", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["email"], "code@example.com");
    let r = c
        .http(0)
        .send(Req::get(&format!("/.auth/api/challenge/{id}")))
        .await;
    assert_eq!(r.json()["completed"], true, "{}", r.text());
    // The spent code is spent everywhere.
    for i in [0, 2] {
        let r = c.verify_code(i, &id, &code).await;
        assert_ne!(
            r.status,
            StatusCode::OK,
            "a code worked twice (replica {i})"
        );
    }

    // Link: asked on A, opened on B (never spends it), redeemed on C, refused again on A.
    c.ask(0, "link@example.com").await;
    let mail = smtp.wait_for_mail("link@example.com", WAIT).await;
    let link = mail.link();
    assert!(
        link.starts_with(&c.public_url),
        "{link} not on {}",
        c.public_url
    );
    let token = mail.token();
    let r = c
        .http(1)
        .send(Req::get(&format!("/.auth/verify?token={token}")).navigate())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
    assert!(r.text().contains("Confirm sign-in"), "{}", r.text());
    let r = c.verify_link(2, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
    assert_eq!(r.json()["email"], "link@example.com");
    let session = r.json()["session_token"].as_str().unwrap().to_string();
    let r = c.verify_link(0, &token).await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text());
    assert_eq!(r.error_code(), "already_used");
    for i in 0..3 {
        let r = c.get_as(i, "/.auth/api/session", &session).await;
        assert_eq!(r.status, StatusCode::OK, "replica {i}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_on_two_replicas_give_exactly_one_session() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let mut c = Cluster::new(3, redis_store(&redis, "race"), smtp.port);
    c.start_all().await;
    let c = Arc::new(c);

    for round in 0..10 {
        let (a, b) = (round % 3, (round + 1) % 3);
        let email = format!("race{round}@example.com");
        c.ask(round % 3, &email).await;
        let token = smtp.wait_for_mail(&email, WAIT).await.token();
        let (c1, c2, t1, t2) = (c.clone(), c.clone(), token.clone(), token.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { c1.verify_link(a, &t1).await }),
            tokio::spawn(async move { c2.verify_link(b, &t2).await }),
        );
        let rs = [r1.unwrap(), r2.unwrap()];
        let winners: Vec<&Resp> = rs.iter().filter(|r| r.status == StatusCode::OK).collect();
        assert_eq!(
            winners.len(),
            1,
            "link round {round} (replicas {a} and {b}): {:?}\n{}",
            rs.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>(),
            c.logs()
        );
        let loser = rs.iter().find(|r| r.status != StatusCode::OK).unwrap();
        assert_eq!(loser.status, StatusCode::GONE, "{}", loser.text());
        assert_eq!(loser.error_code(), "already_used");
        let session = winners[0].json()["session_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = c
            .get_as((round + 2) % 3, "/.auth/api/session", &session)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }

    // The same for the right code entered at once on two replicas.
    for round in 0..5 {
        let (a, b) = (round % 3, (round + 2) % 3);
        let email = format!("coderace{round}@example.com");
        let id = c.ask((round + 1) % 3, &email).await;
        let code = smtp.wait_for_mail(&email, WAIT).await.code();
        let (c1, c2) = (c.clone(), c.clone());
        let (i1, i2, k1, k2) = (id.clone(), id.clone(), code.clone(), code.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { c1.verify_code(a, &i1, &k1).await }),
            tokio::spawn(async move { c2.verify_code(b, &i2, &k2).await }),
        );
        let rs = [r1.unwrap(), r2.unwrap()];
        let ok = rs.iter().filter(|r| r.status == StatusCode::OK).count();
        assert_eq!(
            ok,
            1,
            "code round {round} (replicas {a} and {b}): {:?}\n{}",
            rs.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>(),
            c.logs()
        );
        let loser = rs.iter().find(|r| r.status != StatusCode::OK).unwrap();
        assert!(
            loser.status.is_client_error(),
            "{} {}",
            loser.status,
            loser.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_spread_over_replicas_lock_the_challenge() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let mut c = Cluster::new(3, redis_store(&redis, "lock"), smtp.port);
    c.set("login.max_code_attempts", json!(5));
    c.start_all().await;
    let c = Arc::new(c);

    /// A wrong code of the right shape.
    fn wrong(code: &str) -> String {
        if code == "000000" { "000001" } else { "000000" }.to_string()
    }

    /// The right code on every replica must now be refused as locked.
    async fn assert_locked(c: &Cluster, id: &str, code: &str, what: &str) {
        for i in 0..3 {
            let r = c.verify_code(i, id, code).await;
            assert_eq!(
                r.status,
                StatusCode::GONE,
                "{what}: the right code on replica {i} after 5 wrong ones: {}\n{}",
                r.text(),
                c.logs()
            );
            assert_eq!(r.error_code(), "locked", "{what}");
        }
    }

    // One after the other, round-robin: 4 wrong_code answers, the 5th locks.
    let id = c.ask(0, "seq@example.com").await;
    let code = smtp.wait_for_mail("seq@example.com", WAIT).await.code();
    for n in 0..5 {
        let r = c.verify_code(n % 3, &id, &wrong(&code)).await;
        let expect = if n < 4 { "wrong_code" } else { "locked" };
        assert_eq!(
            r.error_code(),
            expect,
            "wrong code {} on replica {}: {} {}",
            n + 1,
            n % 3,
            r.status,
            r.text()
        );
    }
    assert_locked(&c, &id, &code, "sequential").await;

    // At once, spread over the replicas: 5 wrong codes still lock it, and exactly one of them is
    // the one that locked it.
    for (label, wrongs) in [("5 at once", 5usize), ("12 at once", 12)] {
        let email = format!("burst{wrongs}@example.com");
        let id = c.ask(1, &email).await;
        let code = smtp.wait_for_mail(&email, WAIT).await.code();
        let mut tasks = Vec::new();
        for n in 0..wrongs {
            let (c, id, w) = (c.clone(), id.clone(), wrong(&code));
            tasks.push(tokio::spawn(
                async move { c.verify_code(n % 3, &id, &w).await },
            ));
        }
        let mut answers: HashMap<String, usize> = HashMap::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_ne!(r.status, StatusCode::OK, "a wrong code signed in");
            *answers.entry(r.error_code()).or_default() += 1;
        }
        assert_eq!(
            answers.get("wrong_code").copied().unwrap_or(0),
            4,
            "{label}: {answers:?}\n{}",
            c.logs()
        );
        assert_eq!(
            answers.get("locked").copied().unwrap_or(0),
            wrongs - 4,
            "{label}: {answers:?}"
        );
        assert_locked(&c, &id, &code, label).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_ip_sign_in_limit_is_shared_by_all_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let mut c = Cluster::new(3, redis_store(&redis, "ratelimit"), smtp.port);
    c.set("login.rate_limit.per_ip_per_minute", json!(6));
    c.start_all().await;
    for i in 0..6 {
        let r = c
            .http(i % 3)
            .send(
                Req::post("/.auth/api/login").json(&json!({"email": format!("ip{i}@example.com")})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {} on replica {}: {}",
            i + 1,
            i % 3,
            r.text()
        );
    }
    for i in 0..3 {
        let r = c
            .http(i)
            .send(
                Req::post("/.auth/api/login")
                    .json(&json!({"email": format!("over{i}@example.com")})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "7th+ sign-in request from 127.0.0.1, on replica {i}: {}\n{}",
            r.text(),
            c.logs()
        );
        assert_eq!(r.error_code(), "rate_limited");
        let retry: u64 = r
            .header("retry-after")
            .expect("429 without Retry-After")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // The refused requests sent nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        assert!(smtp.mails_to(&format!("over{i}@example.com")).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_replica_is_refused_on_the_others_within_a_second() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let mut c = Cluster::new(3, redis_store(&redis, "revoke"), smtp.port);
    c.start_all().await;

    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let email = format!("bye{round}@example.com");
        let token = c.sign_in(&smtp, &email, 0, 1).await;
        // Hot on B and C: used a few times, the last use right before the logout.
        for _ in 0..5 {
            for i in [1, 2] {
                for path in ["/.auth/api/session", "/app"] {
                    let r = c.get_as(i, path, &token).await;
                    assert_eq!(r.status, StatusCode::OK, "{path} on replica {i}");
                }
            }
        }
        let r = c
            .http(0)
            .send(
                Req::post("/.auth/api/logout")
                    .header("authorization", &bearer(&token))
                    .json(&json!({})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "logout: {}", r.text());
        let t0 = Instant::now();
        // The replica that logged out refuses at once.
        for path in ["/.auth/api/session", "/app"] {
            let r = c.get_as(0, path, &token).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{path} on A after logout"
            );
        }
        let mut refused: HashMap<(usize, &str), Duration> = HashMap::new();
        while refused.len() < 4 && t0.elapsed() < Duration::from_secs(3) {
            for i in [1, 2] {
                for path in ["/.auth/api/session", "/app"] {
                    if refused.contains_key(&(i, path)) {
                        continue;
                    }
                    let r = c.get_as(i, path, &token).await;
                    match r.status {
                        StatusCode::UNAUTHORIZED => {
                            refused.insert((i, path), t0.elapsed());
                        }
                        StatusCode::OK => {}
                        s => panic!("{path} on replica {i} after logout: {s} {}", r.text()),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut delays: Vec<_> = refused.iter().collect();
        delays.sort();
        eprintln!("revocation round {round}: refused after {delays:?}");
        assert_eq!(
            refused.len(),
            4,
            "still accepted 3 s after the logout: {delays:?}"
        );
        let max = *refused.values().max().unwrap();
        assert!(
            max <= Duration::from_secs(1),
            "a logged-out session was accepted for {max:?} (> 1 s) on another replica: {delays:?}"
        );
        worst = worst.max(max);
    }
    eprintln!("revocation delay across replicas, worst of 3 rounds: {worst:?}");
}

// ---------------------------------------------------------------------------------------------
// Signed identity
// ---------------------------------------------------------------------------------------------

/// Three replicas with `headers.jwt` in front of an echo upstream, started at once, with or
/// without a shared `secrets_file`; every replica's assertion verifies against every replica's
/// JWKS. Returns the `kid`s seen.
async fn jwt_round(redis: &RedisServer, smtp: &Smtp, secrets_file: Option<&Path>) -> Vec<String> {
    let up = Upstream::start().await;
    let mut c = Cluster::new(3, redis_store(redis, "jwt"), smtp.port);
    c.set("upstream", json!(up.url))
        .set("headers.jwt", json!("X-Portcullis-Jwt-Assertion"));
    if let Some(f) = secrets_file {
        c.set("secrets_file", json!(f.display().to_string()));
    }
    let mode = if secrets_file.is_some() {
        "shared secrets_file"
    } else {
        "secret in Redis"
    };
    c.start_all().await;
    let email = format!(
        "jwt-{}@example.com",
        if secrets_file.is_some() {
            "file"
        } else {
            "redis"
        }
    );
    let token = c.sign_in(smtp, &email, 0, 1).await;

    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(jwks(&c.base(i)).await);
    }
    for i in 1..3 {
        assert_eq!(
            keys[i], keys[0],
            "{mode}: replica {i} publishes other keys than replica 0"
        );
    }
    let mut kids = Vec::new();
    for i in 0..3 {
        let r = c
            .http(i)
            .send(
                Req::get("/reports")
                    .header("host", "app.example.com")
                    .header("authorization", &bearer(&token)),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{mode}: replica {i}: {}",
            r.text()
        );
        let all = echoed(&r.json(), JWT_HEADER);
        assert_eq!(all.len(), 1, "{mode}: replica {i}: {all:?}");
        let jwt = &all[0];
        kids.push(
            jsonwebtoken::decode_header(jwt)
                .unwrap()
                .kid
                .unwrap_or_default(),
        );
        for (j, k) in keys.iter().enumerate() {
            let claims = verify(k, jwt, "app.example.com", &c.public_url).unwrap_or_else(|e| {
                panic!("{mode}: replica {i}'s assertion does not verify against replica {j}'s JWKS: {e}\n{jwt}\n{k}")
            });
            assert_eq!(claims.sub, email);
            assert_eq!(claims.email, email);
        }
    }
    if secrets_file.is_none() {
        // The secret made at the first start is kept in Redis: a restarted replica finds it.
        c.kill(2);
        c.start(2).await;
        assert_eq!(
            jwks(&c.base(2)).await,
            keys[0],
            "{mode}: a restarted replica signs with a new key"
        );
    }
    kids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_assertions_of_every_replica_verify_against_every_replicas_jwks() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let from_redis = jwt_round(&redis, &smtp, None).await;

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let hex: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&secret, format!("{hex}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let from_file = jwt_round(&redis, &smtp, Some(&secret)).await;
    assert!(
        from_redis.iter().all(|k| !from_file.contains(k)),
        "the secrets_file run signed with the Redis run's key: {from_redis:?} {from_file:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The shared outbox
// ---------------------------------------------------------------------------------------------

/// A port that accepts SMTP connections and never says a word: a send there hangs mid-way.
struct BlackHole {
    accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn bind(port: u16) -> BlackHole {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                h.lock().unwrap().push(s);
                a.fetch_add(1, Ordering::SeqCst);
            }
        });
        BlackHole {
            accepted,
            held,
            task,
        }
    }

    async fn wait_accepted(&self, n: usize, what: &str) {
        let deadline = Instant::now() + WAIT;
        while self.accepted.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes every held connection and the listener (the port is free afterwards).
    async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
        self.held.lock().unwrap().clear();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_of_a_replica_killed_mid_send_is_sent_by_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let smtp_port = quiet_port();
    let hole = BlackHole::bind(smtp_port).await;
    let mut c = Cluster::new(3, redis_store(&redis, "lease"), smtp_port);
    // A send hangs until the test closes the connection (or kills the sender).
    c.set("email.smtp.timeout", json!("60s"));

    // A alone takes the first mail and hangs in the middle of sending it.
    c.start(0).await;
    let id_a = c.ask(0, "first@example.com").await;
    hole.wait_accepted(1, "replica A never tried to send its mail")
        .await;
    c.start_some(&[1, 2]).await;
    let id_b = c.ask(1, "second@example.com").await;
    hole.wait_accepted(2, "nobody tried to send the second mail")
        .await;
    c.kill(0);
    let killed = Instant::now();
    // The survivors' attempts fail now; then SMTP comes up on the same port.
    hole.close().await;
    let smtp = Smtp::start_on(smtp_port);

    smtp.wait_for_mail("second@example.com", Duration::from_secs(75))
        .await;
    let second_after = killed.elapsed();
    smtp.wait_for_mail("first@example.com", Duration::from_secs(75))
        .await;
    let first_after = killed.elapsed();
    eprintln!(
        "outbox: second mail (sender alive) delivered {second_after:?} after the kill; the killed replica's mail {first_after:?} after it (lease 30 s)"
    );
    // Late duplicates would come now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n_first = smtp.mails_to("first@example.com").len();
    let n_second = smtp.mails_to("second@example.com").len();
    assert!(
        (1..=2).contains(&n_first),
        "first@ delivered {n_first} times\n{}",
        c.logs()
    );
    assert!(
        (1..=2).contains(&n_second),
        "second@ delivered {n_second} times\n{}",
        c.logs()
    );
    assert_eq!(smtp.all().len(), n_first + n_second, "unexpected mail");
    eprintln!("deliveries: first@ {n_first}, second@ {n_second}");

    // The newest mail of each signs in (on a replica that did not ask).
    let last = |to: &str| smtp.mails_to(to).last().unwrap().code();
    for (id, to) in [(&id_a, "first@example.com"), (&id_b, "second@example.com")] {
        let r = c.verify_code(2, id, &last(to)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "the delivered code of {to} does not sign in: {}\n{}",
            r.text(),
            c.logs()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Redis outages and failover
// ---------------------------------------------------------------------------------------------

/// With Redis unreachable: a protected request whose session is not cached, `api/session` and a
/// sign-in request get 503 (sign-in with `Retry-After`) within 3 s, readiness turns 503.
async fn assert_fails_closed(c: &Cluster, token: &str, phase: &str, email: &str) {
    let limit = Duration::from_secs(3);
    for i in 0..c.replicas.len() {
        let base = c.base(i);
        for path in ["/app", "/.auth/api/session"] {
            let (r, took) = timed(
                &base,
                Req::get(path).header("authorization", &bearer(token)),
                Duration::from_secs(10),
                path,
            )
            .await;
            eprintln!(
                "Redis {phase}: {path} on replica {i} with an uncached session: {} in {took:?}",
                r.status
            );
            assert_eq!(
                r.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis {phase}: {path} on replica {i}: {}\n{}",
                r.text(),
                c.logs()
            );
            assert!(
                took <= limit,
                "Redis {phase}: {path} on replica {i} took {took:?}"
            );
        }
        let (r, took) = timed(
            &base,
            Req::post("/.auth/api/login").json(&json!({ "email": email })),
            Duration::from_secs(10),
            "api/login",
        )
        .await;
        eprintln!(
            "Redis {phase}: api/login on replica {i}: {} in {took:?}",
            r.status
        );
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis {phase}: api/login on replica {i}: {}\n{}",
            r.text(),
            c.logs()
        );
        assert!(
            took <= limit,
            "Redis {phase}: api/login on replica {i} took {took:?}"
        );
        assert!(
            r.header("retry-after").is_some(),
            "Redis {phase}: 503 without Retry-After"
        );
        assert!(!r.error_code().is_empty());
        // Readiness follows (it may be probed periodically).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (r, _) = timed(&base, Req::get("/.auth/readyz"), limit, "readyz").await;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Redis {phase}: readyz on replica {i} still {} 5 s into the outage: {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits (at most 10 s) until every replica is ready and accepts `token` again; never a 401 for
/// it meanwhile. Returns how long it took.
async fn wait_recovered(c: &Cluster, token: &str, phase: &str) -> Duration {
    let limit = Duration::from_secs(3);
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    loop {
        let mut last = None;
        for i in 0..c.replicas.len() {
            let base = c.base(i);
            let ready = try_get(&base, Req::get("/.auth/readyz"), limit).await;
            let app = try_get(
                &base,
                Req::get("/app").header("authorization", &bearer(token)),
                limit,
            )
            .await;
            let statuses = (ready.map(|r| r.status), app.map(|r| r.status));
            assert_ne!(
                statuses.1,
                Some(StatusCode::UNAUTHORIZED),
                "after Redis {phase}: the old session was refused (401) on replica {i}"
            );
            if statuses != (Some(StatusCode::OK), Some(StatusCode::OK)) {
                last = Some(format!("replica {i}: (readyz, old session) {statuses:?}"));
            }
        }
        let Some(last) = last else {
            return back.elapsed();
        };
        assert!(
            Instant::now() < deadline,
            "not recovered 10 s after Redis {phase}: {last}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_recovers_without_a_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let smtp = Smtp::start();
    let mut c = Cluster::new(2, redis_store(&redis, "outage"), smtp.port);
    c.start_all().await;
    let token = c.sign_in(&smtp, &email_of("before"), 0, 1).await;
    for i in 0..2 {
        let r = c.get_as(i, "/app", &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let r = c.http(i).send(Req::get("/.auth/readyz")).await;
        assert_eq!(r.status, StatusCode::OK, "readyz: {}", r.text());
    }

    // Redis hangs (SIGSTOP): every command must time out, not wait forever.
    // Longer than any per-process session cache first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.pause();
    assert_fails_closed(&c, &token, "frozen", &email_of("frozen")).await;
    redis.resume();
    let took = wait_recovered(&c, &token, "thawed").await;
    eprintln!("Redis thawed: readyz and the old session OK on both replicas after {took:?}");

    // Redis dies (SIGKILL) and comes back on the same port and data.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.kill();
    assert_fails_closed(&c, &token, "down", &email_of("during")).await;
    // Nothing came through while Redis was down.
    assert!(smtp.mails_to(&email_of("during")).is_empty());
    redis.restart();
    let took = wait_recovered(&c, &token, "restarted").await;
    eprintln!("Redis back: readyz and the old session OK on both replicas after {took:?}");
    let fresh = c.sign_in(&smtp, &email_of("after"), 1, 0).await;
    for i in 0..2 {
        let r = c.get_as(i, "/app", &fresh).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

fn email_of(tag: &str) -> String {
    format!("{tag}@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_sessions_and_sign_in_works_after_it() {
    let Some(mut set) = SentinelSet::start(3) else {
        return;
    };
    let smtp = Smtp::start();
    let store = json!({
        "sentinels": set.addrs(),
        "master_name": MASTER_NAME,
        "prefix": prefix("sentinel"),
        "timeout": "1s",
    });
    let mut c = Cluster::new(2, store, smtp.port);
    c.start_all().await;
    let token = c.sign_in(&smtp, "early@example.com", 0, 1).await;
    // A sign-in in progress across the failover.
    let pending = c.ask(1, "pending@example.com").await;
    let pending_code = smtp.wait_for_mail("pending@example.com", WAIT).await.code();
    for i in 0..2 {
        let r = c.get_as(i, "/.auth/api/session", &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    set.wait_replicated();

    set.kill_primary();
    let killed = Instant::now();
    // Before the promotion: answers come quickly and are 200 or 503, never 500, never a hang.
    for i in 0..2 {
        let (r, took) = timed(
            &c.base(i),
            Req::post("/.auth/api/login").json(&json!({"email": "window@example.com"})),
            Duration::from_secs(10),
            "api/login with the primary gone",
        )
        .await;
        eprintln!(
            "sentinel: api/login on replica {i} with the primary gone: {} in {took:?}",
            r.status
        );
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "api/login with the primary gone: {} {}\n{}",
            r.status,
            r.text(),
            c.logs()
        );
        assert!(took <= Duration::from_secs(3), "{took:?}");
    }
    let promoted = set.wait_promoted(Duration::from_secs(30));
    eprintln!("sentinel: replica promoted {promoted:?} after the primary was killed");

    // A new sign-in: retried while the gateways find the new primary (503 only, never 500).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let id = loop {
        let r = try_get(
            &c.base(0),
            Req::post("/.auth/api/login").json(&json!({"email": "late@example.com"})),
            Duration::from_secs(5),
        )
        .await;
        match r {
            Some(r) if r.status == StatusCode::OK => {
                break r.json()["challenge_id"].as_str().unwrap().to_string()
            }
            Some(r) => {
                assert_eq!(
                    r.status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api/login during failover: {}\n{}",
                    r.text(),
                    c.logs()
                );
                seen.push(r.status);
            }
            None => seen.push(StatusCode::REQUEST_TIMEOUT),
        }
        assert!(
            Instant::now() < deadline,
            "no sign-in 15 s after the promotion: {seen:?}\n{}\n{}",
            c.logs(),
            set.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let login_ok = killed.elapsed();
    let code = smtp.wait_for_mail("late@example.com", WAIT).await.code();
    let r = c.verify_code(1, &id, &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), c.logs());
    let late = r.json()["session_token"].as_str().unwrap().to_string();
    eprintln!(
        "sentinel: first sign-in accepted {login_ok:?} after the kill ({} refusals before), signed in {:?} after it",
        seen.len(),
        killed.elapsed()
    );

    // The session made before the failover is valid on both gateways (never a 401 meanwhile).
    for i in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = c.get_as(i, "/.auth/api/session", &token).await;
            if r.status == StatusCode::OK {
                break;
            }
            assert_eq!(
                r.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "the pre-failover session on replica {i}: {}\n{}",
                r.text(),
                c.logs()
            );
            assert!(Instant::now() < deadline, "replica {i} never recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = c.get_as(i, "/.auth/api/session", &late).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // The challenge started before the failover is still there.
    let r = c.verify_code(0, &pending, &pending_code).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a challenge made before the failover: {}\n{}",
        r.text(),
        c.logs()
    );
}
