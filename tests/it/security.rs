//! Security properties, one test each: secrets, single use, binding, lockout, expiry, redirects,
//! strict addresses, identity headers, credentials, CSRF, enumeration, sessions, limits, framing.

use std::collections::HashSet;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::upstream::echoed;
use crate::support::{enc, keys, raw_exchange, raw_status, unescape, Http, Req, TestGateway, WAIT};

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_tokens_are_256_bit_and_codes_are_plain_digits() {
    let gw = TestGateway::start().await;
    let mut tokens = HashSet::new();
    let mut codes = HashSet::new();
    let mut digits = HashSet::new();
    for i in 0..20 {
        let email = format!("user{i}@example.com");
        gw.api_login(&email).await;
        let mail = gw.mail(&email).await;
        let t = mail.token();
        assert_eq!(t.len(), 43, "{t}");
        assert!(is_b64url(&t), "{t}");
        let c = mail.code();
        assert_eq!(c.len(), 6, "{c}");
        assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        digits.extend(c.chars());
        tokens.insert(t);
        codes.insert(c);
    }
    assert_eq!(tokens.len(), 20, "link tokens repeat");
    assert!(codes.len() >= 18, "codes repeat too often: {codes:?}");
    // 120 random digits: every digit shows up (a skewed generator would not).
    assert!(digits.len() >= 9, "digits used: {digits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_length_is_configurable() {
    let gw = TestGateway::builder()
        .set("login.code_length", 8)
        .start()
        .await;
    let v = gw.api_login("a@example.com").await;
    let code = gw.mail("a@example.com").await.code();
    assert_eq!(code.len(), 8);
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Every key and value of every tree of a (stopped) gateway's database.
fn dump_db(dir: &std::path::Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    // The stopped gateway's last handles may take a moment to let go of the lock.
    let deadline = std::time::Instant::now() + WAIT;
    let db = loop {
        match sled::open(dir.join("db")) {
            Ok(db) => break db,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot open the database: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let tname = String::from_utf8_lossy(&name).into_owned();
        for kv in tree.iter() {
            let (k, v) = kv.unwrap();
            out.push((tname.clone(), k.to_vec(), v.to_vec()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hashes_of_secrets_are_stored() {
    let mut gw = TestGateway::start().await;
    // One challenge still pending (link + code live), one completed with a session.
    gw.api_login("pending@example.com").await;
    let pending = gw.mail("pending@example.com").await;
    let session_token = gw.sign_in("done@example.com").await;
    // Browser flow too: its binding secret must not be stored raw either.
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "browser@example.com")]))
        .await;
    let bound = gw.mail("browser@example.com").await;
    let binding = b.cookie("portcullis_session_login").unwrap();
    let (_, binding_secret) = binding.split_once('.').unwrap();
    assert_eq!(gw.state().store.outbox_len().await, 0, "all mail delivered");

    // Through the store API: challenge records hold hashes only.
    let id = gw
        .state()
        .store
        .challenge_for_link(&portcullis::crypto::sha256(pending.token().as_bytes()))
        .await
        .unwrap()
        .expect("the link index knows the token's hash");
    let c = gw.state().store.challenge(&id).await.unwrap().unwrap();
    let record = serde_json::to_string(&c).unwrap();
    assert!(!record.contains(&pending.token()));
    assert!(!record.contains(&pending.code()), "{record}");
    assert_eq!(
        c.link_hash,
        Some(portcullis::crypto::sha256(pending.token().as_bytes()))
    );
    assert!(c.code_mac.is_some());

    gw.stop().await;
    let secrets: Vec<(&str, String)> = vec![
        ("pending link token", pending.token()),
        ("session token", session_token.clone()),
        ("browser link token", bound.token()),
        ("binding secret", binding_secret.to_string()),
    ];
    for (tree, k, v) in dump_db(gw.dir.path()) {
        for (what, s) in &secrets {
            assert!(
                !contains(&k, s.as_bytes()) && !contains(&v, s.as_bytes()),
                "{what} stored in tree {tree}"
            );
        }
        if tree == "challenges" {
            for code in [pending.code(), bound.code()] {
                let text = String::from_utf8_lossy(&v);
                assert!(
                    !text.contains(&format!("\"{code}\"")),
                    "code stored in {text}"
                );
            }
        }
    }
    // The session token never went to the outbox, so it is nowhere on disk, not even in sled's log.
    for f in files_under(gw.dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, session_token.as_bytes()),
            "session token in {}",
            f.display()
        );
        assert!(
            !contains(&bytes, binding_secret.as_bytes()),
            "binding secret in {}",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_of_one_link_make_one_session() {
    let gw = TestGateway::start().await;
    gw.api_login("race@example.com").await;
    let token = gw.mail("race@example.com").await.token();
    let mut tasks = Vec::new();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    for _ in 0..10 {
        let c = gw.http();
        let token = token.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            c.send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"link_token": token, "issue_token": true})),
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut tokens = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::OK {
            ok += 1;
            tokens.push(r.json()["session_token"].as_str().unwrap().to_string());
        } else {
            assert_eq!(r.status, StatusCode::GONE, "{}", r.text());
            assert_eq!(r.error_code(), "already_used");
        }
    }
    assert_eq!(ok, 1, "exactly one redemption wins");
    assert_eq!(gw.state().store.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_of_one_code_make_one_session() {
    let gw = TestGateway::start().await;
    let v = gw.api_login("race@example.com").await;
    let code = gw.mail("race@example.com").await.code();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let c = gw.http();
        let body = json!({"challenge_id": v["challenge_id"], "code": code});
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            c.send(Req::post("/.auth/api/verify").json(&body))
                .await
                .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(gw.state().store.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_only_works_on_its_own_challenge() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let a = gw.api_login("same@example.com").await;
    let code_a = gw.mail("same@example.com").await.code();
    let b = gw.api_login("same@example.com").await;
    let code_b = gw.mail("same@example.com").await.code();
    if code_a == code_b {
        return; // one in a million: nothing to tell apart
    }
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": b["challenge_id"], "code": code_a})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "wrong_code");
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": b["challenge_id"], "code": code_b})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": a["challenge_id"], "code": code_a})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_lock_the_challenge_even_for_the_right_code() {
    let gw = TestGateway::builder()
        .set("login.max_code_attempts", 3)
        .start()
        .await;
    let c = gw.http();
    let v = gw.api_login("lock@example.com").await;
    let id = v["challenge_id"].clone();
    let mail = gw.mail("lock@example.com").await;
    let code = mail.code();
    let wrong = if code == "999999" { "999998" } else { "999999" };
    let verify = |code: String| {
        let c = c.clone();
        let id = id.clone();
        async move {
            c.send(Req::post("/.auth/api/verify").json(&json!({"challenge_id": id, "code": code})))
                .await
        }
    };
    let r = verify(wrong.into()).await;
    assert_eq!(r.error_code(), "wrong_code");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("2 attempts left"),
        "{}",
        r.text()
    );
    assert_eq!(verify(wrong.into()).await.error_code(), "wrong_code");
    let r = verify(wrong.into()).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.error_code(), "locked");
    let r = verify(code.clone()).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.error_code(), "locked");
    // The link of a locked challenge is dead too, and a resend does not unlock it.
    let r = c
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": mail.token()})))
        .await;
    assert_eq!(r.error_code(), "locked");
    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": id})))
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.error_code(), "locked");
    assert_eq!(gw.state().store.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_does_not_refill_code_attempts() {
    let gw = TestGateway::builder()
        .set("login.max_code_attempts", 3)
        .start()
        .await;
    let c = gw.http();
    let v = gw.api_login("refill@example.com").await;
    let id = v["challenge_id"].clone();
    let first = gw.mail("refill@example.com").await.code();
    // A well-formed wrong code (a malformed one would not count).
    let other = |code: &str| if code == "000000" { "111111" } else { "000000" };
    for _ in 0..2 {
        let r = c
            .send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"challenge_id": id, "code": other(&first)})),
            )
            .await;
        assert_eq!(r.error_code(), "wrong_code");
    }
    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": id})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let fresh = gw.mail("refill@example.com").await.code();
    // One more wrong code uses the last attempt.
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": id, "code": other(&fresh)})),
        )
        .await;
    assert_eq!(r.error_code(), "locked");
    let r = c
        .send(Req::post("/.auth/api/verify").json(&json!({"challenge_id": id, "code": fresh})))
        .await;
    assert_eq!(r.error_code(), "locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_challenges_are_refused() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "late@example.com")]))
        .await;
    let mail = gw.mail("late@example.com").await;
    gw.clock.advance(15 * 60);

    let r = b.send(Req::get(&mail.link())).await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text());
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &mail.code())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert!(r.set_cookie("portcullis_session").is_none());
    // The page says so, and offers a new mail for the same sign-in (no retyping).
    let page = b.follow(&r).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.text());
    assert!(
        page.text().contains("This sign-in expired"),
        "{}",
        page.text()
    );
    assert!(
        unescape(&page.text()).contains("action=\"/.auth/resend\""),
        "{}",
        page.text()
    );
    let r = c
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": mail.token()})))
        .await;
    assert_eq!(r.error_code(), "expired");
    assert_eq!(gw.state().store.session_count().await, 0);
    // "Send a new mail" revives it: a new link and code, valid for a new ttl.
    let r = b.send(Req::post("/.auth/resend")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(b
        .follow(&r)
        .await
        .text()
        .contains("A new mail is on its way"));
    let fresh = gw.mail("late@example.com").await;
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &fresh.code())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookie("portcullis_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_is_valid_until_just_before_its_ttl() {
    let gw = TestGateway::builder().set("login.ttl", "5m").start().await;
    let v = gw.api_login("edge@example.com").await;
    assert_eq!(v["expires_in"], 300);
    let code = gw.mail("edge@example.com").await.code();
    gw.clock.advance(299);
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Signs in through the HTML code flow with `rd` and returns the final redirect.
async fn final_location(gw: &TestGateway, email: &str, rd: &str) -> String {
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", email), ("rd", rd)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{rd:?}: {}", r.text());
    let code = gw.mail(email).await.code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{rd:?}: {}", r.text());
    r.location()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_fall_back_to_the_public_root() {
    let gw = TestGateway::start().await;
    let root = gw.url("/");
    let evil = [
        "//evil.com".to_string(),
        "///evil.com/x".to_string(),
        "https://evil.com".to_string(),
        "http://evil.com/".to_string(),
        "/\\evil.com".to_string(),
        "\\\\evil.com".to_string(),
        "%2F%2Fevil.com".to_string(),
        "/%2F%2Fevil.com".to_string(),
        "/%252F%252Fevil.com".to_string(),
        "javascript:alert(1)".to_string(),
        "JaVaScRiPt:alert(document.cookie)".to_string(),
        "data:text/html,<script>alert(1)</script>".to_string(),
        format!("http://127.0.0.1:{}@evil.com/", gw.port),
        format!("http://user:pw@127.0.0.1:{}/", gw.port),
        "/ok\r\nLocation: https://evil.com".to_string(),
        "/ok%0d%0aSet-Cookie:%20x=1".to_string(),
        "http://127.0.0.2/".to_string(),
        format!("http://127.0.0.1:{}/.auth/logout", gw.port),
        "/.auth/verify?token=x".to_string(),
        " https://evil.com".to_string(),
        "https:evil.com".to_string(),
    ];
    for (i, rd) in evil.iter().enumerate() {
        let loc = final_location(&gw, &format!("r{i}@example.com"), rd).await;
        assert_eq!(loc, root, "rd {rd:?} led to {loc:?}");
    }
    // The same holds for the API's redirect_to.
    let c = gw.http();
    for (i, rd) in evil.iter().enumerate() {
        let email = format!("api{i}@example.com");
        let r = c
            .send(Req::post("/.auth/api/login").json(&json!({"email": email, "redirect_to": rd})))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let code = gw.mail(&email).await.code();
        let r = c
            .send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"challenge_id": r.json()["challenge_id"], "code": code})),
            )
            .await;
        assert_eq!(r.json()["redirect_to"], root.as_str(), "redirect_to {rd:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_targets_are_kept_and_tokens_never_land_in_location() {
    let gw = TestGateway::start().await;
    let loc = final_location(&gw, "a@example.com", "/app/x?y=1#frag").await;
    assert_eq!(loc, gw.url("/app/x?y=1"));
    let loc = final_location(&gw, "b@example.com", &gw.url("/abs?q=1")).await;
    assert_eq!(loc, gw.url("/abs?q=1"));

    // Link flow, same browser: the Location holds neither the link token nor the session token.
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "c@example.com"), ("rd", "/next")]))
        .await;
    let mail = gw.mail("c@example.com").await;
    let r = b.send(Req::get(&mail.link())).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let loc = r.location();
    assert_eq!(loc, gw.url("/next"));
    assert!(!loc.contains(&mail.token()));
    assert!(!loc.contains(&b.cookie("portcullis_session").unwrap()));
    assert!(!loc.contains("token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_targets_survive_the_sign_in() {
    // The gateway itself builds rd from the URL the user asked for; ordinary percent-escapes
    // (a space in a search, non-ASCII in a path) must bring the user back to that URL.
    let gw = TestGateway::start().await;
    for (i, target) in ["/search?q=a%20b", "/wiki/Caf%C3%A9", "/files/a%2Bb?x=%26"]
        .iter()
        .enumerate()
    {
        let b = gw.http();
        let r = b.send(Req::get(target).navigate()).await;
        assert_eq!(r.status, StatusCode::FOUND);
        let rd = url::Url::parse(&r.location())
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "rd")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        assert_eq!(rd, gw.url(target));
        let loc = final_location(&gw, &format!("p{i}@example.com"), &rd).await;
        assert_eq!(
            loc,
            gw.url(target),
            "signed in from {target}, sent to {loc}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_pages_are_not_cached_and_referrers_stop_at_the_origin() {
    let gw = TestGateway::start().await;
    gw.api_login("ref@example.com").await;
    let mail = gw.mail("ref@example.com").await;
    let b = gw.http();
    // A Referer from the token page never holds more than the origin (never the token), while
    // its confirm form still posts with a real Origin (on plain http the only CSRF signal).
    const ORIGIN_ONLY: &str = "strict-origin";
    let r = b.send(Req::get(&mail.link())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("referrer-policy").as_deref(), Some(ORIGIN_ONLY));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let r = b
        .send(Req::post("/.auth/verify").form(&[("token", &mail.token())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("referrer-policy").as_deref(), Some(ORIGIN_ONLY));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    // An invalid token's error page too.
    let r = b
        .send(Req::get(&format!("/.auth/verify?token={}", "A".repeat(43))))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("referrer-policy").as_deref(), Some(ORIGIN_ONLY));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_parsed_strictly_and_bad_ones_get_no_mail() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let bad = [
        "\"alice\"@example.com",
        "\"a b\"@example.com",
        "Alice <alice@example.com>",
        "alice@example.com <bob@example.com>",
        "alice@example.com\r\nBcc: victim@example.com",
        "alice@example.com\nBcc: victim@example.com",
        "alice@example.com,bob@evil.com",
        "alice@example.com;bob@evil.com",
        "alice@[127.0.0.1]",
        "alice@127.0.0.1",
        "alice(comment)@example.com",
        "ålice@example.com",
        "alice@exämple.com",
        "alice@@example.com",
        "alice",
        "@example.com",
        "alice@",
        "alice@example.com.",
        "a..b@example.com",
        "|cmd@example.com",
        "alice%evil.com@example.com",
        "",
    ];
    for e in bad {
        let r = c
            .send(Req::post("/.auth/api/login").json(&json!({"email": e})))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{e:?} accepted: {}",
            r.text()
        );
        assert_eq!(r.error_code(), "invalid_email", "{e:?}");
        let r = c
            .send(Req::post("/.auth/login").form(&[("email", e)]))
            .await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/.auth/login".to_string()),
            "{e:?} accepted by the form"
        );
        assert!(r.set_cookie("portcullis_session_login").is_none());
    }
    assert_eq!(gw.state().store.challenge_count().await, 0);
    assert_eq!(gw.state().store.outbox_len().await, 0);
    // Give a wrongly queued mail time to show up, behind a good one.
    gw.api_login("good@example.com").await;
    gw.mail("good@example.com").await;
    assert_eq!(gw.smtp().all().len(), 1, "{:?}", gw.smtp().all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_to_the_canonical_lower_case_address() {
    let gw = TestGateway::start().await;
    let v = gw.api_login("  Alice.Smith+Tools@EXAMPLE.Com ").await;
    let mail = gw.mail("alice.smith+tools@example.com").await;
    assert_eq!(mail.rcpt.len(), 1);
    assert!(mail
        .header("to")
        .unwrap()
        .contains("alice.smith+tools@example.com"));
    assert!(!mail.raw.contains("EXAMPLE.Com"));
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": mail.code()})),
        )
        .await;
    assert_eq!(r.json()["email"], "alice.smith+tools@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("real@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let forged = || {
        Req::get("/whoami")
            .header("X-Forwarded-Email", "admin@example.com")
            .header("X-Forwarded-Email", "second@example.com")
            .header("x_forwarded_email", "admin@example.com")
            .header("X-FORWARDED-USER", "admin")
            .header("x_forwarded_user", "admin")
            .header("Remote-User", "admin")
            .header("remote_user", "admin")
            .header("X-Auth-Request-Email", "admin@example.com")
            .header("X-Auth-Request-User", "admin")
            .header("X-Remote-User", "admin")
            .header("X-WebAuth-User", "admin")
            .header("X-Forwarded-Groups", "admins")
            .header("X-Forwarded-Access-Token", "forged")
    };
    // Control: sent straight to the upstream, every one of these arrives.
    let direct = Http::new(&gw.upstream().url).send(forged()).await.json();
    assert_eq!(echoed(&direct, "x_forwarded_email"), ["admin@example.com"]);
    assert_eq!(echoed(&direct, "x-forwarded-email").len(), 2);
    assert_eq!(echoed(&direct, "remote_user"), ["admin"]);
    let r = c.send(forged()).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(echoed(&v, "x-forwarded-email"), ["real@example.com"]);
    assert_eq!(echoed(&v, "x-forwarded-user"), ["real@example.com"]);
    for name in [
        "x_forwarded_email",
        "x_forwarded_user",
        "remote-user",
        "remote_user",
        "x-auth-request-email",
        "x-auth-request-user",
        "x-remote-user",
        "x-webauth-user",
        "x-forwarded-groups",
        "x-forwarded-access-token",
    ] {
        assert!(
            echoed(&v, name).is_empty(),
            "{name} reached the upstream: {v}"
        );
    }
    let all = v["headers"].to_string();
    assert!(!all.contains("admin"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_the_injected_identity() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("real@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let r = c
        .send(
            Req::get("/conn")
                .header(
                    "connection",
                    "X-Forwarded-Email, X-Forwarded-User, X-Forwarded-For, X-Forwarded-Host",
                )
                .header("x-forwarded-email", "admin@example.com"),
        )
        .await;
    let v = r.json();
    assert_eq!(echoed(&v, "x-forwarded-email"), ["real@example.com"]);
    assert_eq!(echoed(&v, "x-forwarded-user"), ["real@example.com"]);
    assert_eq!(echoed(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed(&v, "x-forwarded-host").len(), 1);
    assert!(
        echoed(&v, "connection")
            .iter()
            .all(|c| !c.to_ascii_lowercase().contains("x-forwarded")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("hop@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let hop = || {
        Req::get("/hop")
            .header("connection", "keep-alive, X-Secret-Hop")
            .header("x-secret-hop", "must-not-pass")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("trailer", "X-Foo")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("proxy-connection", "keep-alive")
            .header("upgrade", "h2c")
            .header("x-normal", "passes")
    };
    let direct = Http::new(&gw.upstream().url).send(hop()).await.json();
    for name in [
        "x-secret-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            !echoed(&direct, name).is_empty(),
            "control: the client did not send {name}"
        );
    }
    let v = c.send(hop()).await.json();
    for name in [
        "x-secret-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(echoed(&v, name).is_empty(), "{name} was forwarded: {v}");
    }
    assert_eq!(echoed(&v, "x-normal"), ["passes"]);

    // And on the way back: the upstream's hop-by-hop response headers are dropped.
    let r = c.send(Req::get("/status/200")).await;
    assert_eq!(r.header("x-upstream-status").as_deref(), Some("200"));
    assert!(r.header("x-hop-resp").is_none(), "{:?}", r.headers);
    assert!(r.header("keep-alive").is_none(), "{:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_credentials_are_removed_and_other_credentials_pass() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("cred@example.com").await;
    let c = gw.http();
    let r = c
        .send(
            Req::get("/cookies")
                .header("cookie", &format!("a=1; portcullis_session={token}; b=2"))
                .header("authorization", "Basic YXBwOnNlY3JldA=="),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(echoed(&v, "cookie"), ["a=1; b=2"]);
    assert_eq!(echoed(&v, "authorization"), ["Basic YXBwOnNlY3JldA=="]);
    assert!(
        !v.to_string().contains(&token),
        "session token reached the upstream: {v}"
    );

    let r = c
        .send(
            Req::get("/bearer")
                .header("authorization", &format!("Bearer {token}"))
                .header("cookie", "theme=dark"),
        )
        .await;
    let v = r.json();
    assert!(echoed(&v, "authorization").is_empty(), "{v}");
    assert_eq!(echoed(&v, "cookie"), ["theme=dark"]);
    assert!(!v.to_string().contains(&token));

    // Only our cookie: no Cookie header at all.
    let r = c
        .send(Req::get("/only").header("cookie", &format!("portcullis_session={token}")))
        .await;
    assert!(echoed(&r.json(), "cookie").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_form_posts_are_refused() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    for (h, v) in [
        ("origin", "https://evil.com"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("referer", "https://evil.com/page"),
    ] {
        let r = c
            .send(
                Req::post("/.auth/login")
                    .header(h, v)
                    .form(&[("email", "victim@example.com")]),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{h}: {v}");
        assert!(r.set_cookie("portcullis_session_login").is_none());
    }
    assert_eq!(gw.state().store.challenge_count().await, 0);

    // The gateway's own pages pass.
    let b = gw.http();
    let r = b
        .send(
            Req::post("/.auth/login")
                .header("origin", &gw.base)
                .form(&[("email", "victim@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mail = gw.mail("victim@example.com").await;

    // Code, resend and link confirmation posted from another site are refused.
    let r = b
        .send(
            Req::post("/.auth/code")
                .header("origin", "https://evil.com")
                .form(&[("code", &mail.code())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b
        .send(Req::post("/.auth/resend").header("sec-fetch-site", "cross-site"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = gw
        .http()
        .send(
            Req::post("/.auth/verify")
                .header("origin", "https://evil.com")
                .form(&[("token", &mail.token())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(gw.state().store.session_count().await, 0);

    // A cross-site logout does not sign the user out.
    let r = b
        .send(
            Req::post("/.auth/code")
                .header("sec-fetch-site", "same-origin")
                .form(&[("code", &mail.code())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = b
        .send(Req::post("/.auth/logout").header("origin", "https://evil.com"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        b.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK
    );
    let r = b
        .send(
            Req::post("/.auth/api/logout")
                .header("origin", "https://evil.com")
                .form(&[]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        b.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_disallowed_addresses_are_indistinguishable() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let mut api = Vec::new();
    let mut pages = Vec::new();
    for e in [
        "someone@example.com",
        "someone@elsewhere.org",
        "guest@partner.org",
        "nobody@partner.org",
    ] {
        let r = c
            .send(Req::post("/.auth/api/login").json(&json!({"email": e})))
            .await;
        let v = r.json();
        api.push((
            r.status,
            keys(&v),
            v["method"].clone(),
            v["expires_in"].clone(),
            r.header("content-type"),
        ));
        // Resending and polling the challenge look the same too.
        let id = v["challenge_id"].clone();
        let r = c
            .send(Req::post("/.auth/api/resend").json(&json!({ "challenge_id": id })))
            .await;
        let v = r.json();
        api.push((
            r.status,
            keys(&v),
            v["method"].clone(),
            v["expires_in"].clone(),
            r.header("content-type"),
        ));
        let r = c
            .send(Req::get(&format!(
                "/.auth/api/challenge/{}",
                id.as_str().unwrap()
            )))
            .await;
        let v = r.json();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(v["expired"], false);
        assert_eq!(v["completed"], false);
        let r = c
            .send(Req::post("/.auth/login").form(&[("email", e)]))
            .await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/.auth/check-email".to_string())
        );
        assert!(r.set_cookie("portcullis_session_login").is_some());
        let page = c.follow(&r).await;
        // The page differs only by the address shown.
        pages.push((
            page.status,
            page.text().replace(e, "ADDRESS"),
            page.header("content-type"),
        ));
    }
    for a in &api {
        assert_eq!(a, &api[0]);
    }
    for p in &pages {
        assert_eq!(p, &pages[0]);
    }
    assert_eq!(api[0].0, StatusCode::OK);
    assert_eq!(pages[0].0, StatusCode::OK);
    // Mail went only to the allowed addresses (two logins and a resend each; a resend replaces
    // its challenge's mail when that is still queued, so the first login's may not go out).
    gw.api_login("marker@example.com").await;
    gw.mail("marker@example.com").await;
    for e in ["someone@elsewhere.org", "nobody@partner.org"] {
        assert!(gw.smtp().mails_to(e).is_empty(), "mail sent to {e}");
    }
    for e in ["someone@example.com", "guest@partner.org"] {
        let n = gw.smtp().mails_to(e).len();
        assert!((2..=3).contains(&n), "{n} mails to {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sign_in_gets_a_fresh_session_token() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    // An attacker plants a well-formed session cookie before the victim signs in.
    let planted = "P".repeat(43);
    b.set_cookie("portcullis_session", &planted);
    b.send(Req::post("/.auth/login").form(&[("email", "fix@example.com")]))
        .await;
    let code = gw.mail("fix@example.com").await.code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let first = r
        .set_cookie("portcullis_session")
        .unwrap()
        .value()
        .to_string();
    assert_ne!(first, planted);
    let attacker = gw.http();
    attacker.set_cookie("portcullis_session", &planted);
    assert_eq!(
        attacker.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Signing in again (already signed in) makes another token; both are distinct sessions.
    b.send(Req::post("/.auth/login").form(&[("email", "fix@example.com")]))
        .await;
    let code = gw.mail("fix@example.com").await.code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    let second = r
        .set_cookie("portcullis_session")
        .unwrap()
        .value()
        .to_string();
    assert_ne!(first, second);
    assert_eq!(gw.state().store.session_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_rechecked_against_access_after_a_config_change() {
    let mut gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("old@example.com").await;
    let guest = gw.sign_in("guest@partner.org").await;
    gw.restart_with(|cfg| {
        crate::support::set_path(
            cfg,
            "access",
            json!({"allowed_domains": ["example.org"], "allowed_emails": ["guest@partner.org"]}),
        );
    })
    .await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let r = c.send(Req::get("/app")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "not_allowed");
    let r = c.send(Req::get("/app").navigate()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text().contains("old@example.com"), "{}", r.text());
    assert_eq!(
        c.send(Req::get("/.auth/check")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(gw.upstream().seen_path("/app").is_empty());

    // The individually allowed address still gets through.
    let g = gw.http();
    g.set_cookie("portcullis_session", &guest);
    assert_eq!(g.send(Req::get("/app")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_absolute_session_lifetimes_are_enforced() {
    let gw = TestGateway::builder()
        .set("session.idle_timeout", "1h")
        .set("session.ttl", "3h")
        .start()
        .await;
    let token = gw.sign_in("idle@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    // Activity every 50 minutes keeps it alive past the idle timeout...
    for _ in 0..3 {
        gw.clock.advance(50 * 60);
        assert_eq!(
            c.send(Req::get("/.auth/api/session")).await.status,
            StatusCode::OK
        );
    }
    // ...but not past the absolute lifetime (3h).
    gw.clock.advance(35 * 60);
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::UNAUTHORIZED
    );

    let other = gw.sign_in("idle2@example.com").await;
    c.set_cookie("portcullis_session", &other);
    gw.clock.advance(3601);
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let gw = TestGateway::builder()
        .set("limits.max_header_bytes", 16384)
        .start()
        .await;
    let big = "a".repeat(20_000);
    let req = format!(
        "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    );
    let resp = raw_exchange(gw.addr(), req.as_bytes()).await;
    assert_eq!(raw_status(&resp), Some(431), "{resp:.200}");
    // A normal request still works afterwards.
    assert_eq!(
        gw.http().send(Req::get("/.auth/healthz")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_header_limit_is_honoured_at_its_minimum() {
    // hyper's HTTP/1 buffer cannot go below 8 KiB, so the config refuses smaller limits.
    let err = portcullis::Config::parse(
        "public_url: http://127.0.0.1:1\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\nlimits: { max_header_bytes: 4096 }\n",
        std::path::Path::new("t.yaml"),
    )
    .unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.starts_with("limits.max_header_bytes")),
        "{err}"
    );
    let gw = TestGateway::builder()
        .set("limits.max_header_bytes", 8192)
        .start()
        .await;
    for (size, want) in [(4_000, 200), (12_000, 431)] {
        let big = "a".repeat(size);
        let req = format!(
            "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        );
        let resp = raw_exchange(gw.addr(), req.as_bytes()).await;
        assert_eq!(
            raw_status(&resp),
            Some(want),
            "{size}-byte head with max_header_bytes: 8192: {resp:.200}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_form_bodies_get_413() {
    let gw = TestGateway::start().await;
    let big = "x".repeat(20_000);
    let r = gw
        .http()
        .send(Req::post("/.auth/login").form(&[("email", "a@example.com"), ("rd", &big)]))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(gw.state().store.challenge_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_cut_off_while_others_are_served() {
    let gw = TestGateway::builder()
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    // Slowloris: one byte at a time, never finishing the head.
    let mut slow = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    slow.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dripper = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let started = tokio::time::Instant::now();
        loop {
            if slow.write_all(b"X").await.is_err() {
                return (true, started.elapsed());
            }
            match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (true, started.elapsed()),
                Ok(Ok(_)) => {} // e.g. a 408 before the close
                Err(_) => {}
            }
            if started.elapsed() > WAIT {
                return (false, started.elapsed());
            }
        }
    });
    // Meanwhile other clients are served.
    for _ in 0..3 {
        let r = gw.http().send(Req::get("/.auth/healthz")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let (closed, after) = dripper.await.unwrap();
    assert!(closed, "the slow client was never cut off ({after:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_request_head_is_closed_after_the_timeout() {
    let gw = TestGateway::builder()
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "connection with an unfinished head still open after {WAIT:?}"
    );
}

/// Sends a request with broken framing over a raw socket, with a valid session.
async fn framing_case(
    gw: &TestGateway,
    token: &str,
    path: &str,
    framing: &str,
    body: &str,
) -> String {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: portcullis_session={token}\r\n{framing}\r\n{body}",
        gw.port
    );
    raw_exchange(gw.addr(), req.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_framing_is_rejected_and_never_reaches_the_upstream() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("frame@example.com").await;
    let cases = [
        (
            "/f1",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "hello!",
        ),
        ("/f2", "Content-Length: abc\r\n", "hello"),
        ("/f3", "Content-Length: -1\r\n", "hello"),
        ("/f4", "Transfer-Encoding: gzip\r\n", "hello"),
        (
            "/f5",
            "Transfer-Encoding: chunked, identity\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (path, framing, body) in cases {
        let resp = framing_case(&gw, &token, path, framing, body).await;
        assert_eq!(raw_status(&resp), Some(400), "{framing:?}: {resp:.300}");
        assert!(
            gw.upstream().seen_path(path).is_empty(),
            "{framing:?} reached the upstream"
        );
    }
}

/// A classic smuggling body: the chunked body hides a second request.
fn smuggling_body() -> String {
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_length_headers_cannot_smuggle_a_request() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("smuggle@example.com").await;
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let _ = framing_case(&gw, &token, "/cl-te", framing, &smuggling_body()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        gw.upstream().seen_path("/smuggled").is_empty(),
        "request smuggled to the upstream"
    );
    for s in gw.upstream().seen() {
        assert!(
            s.all("content-length").is_empty() || s.all("transfer-encoding").is_empty(),
            "the upstream got both framings: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// RFC 9112 §6.1 lets a server either refuse a request carrying both Content-Length and
/// Transfer-Encoding or frame it by Transfer-Encoding alone and close the connection afterwards.
/// hyper does the latter; the upstream must never see the Content-Length.
async fn content_length_with_transfer_encoding_is_framed_by_te_and_closes() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("smuggle@example.com").await;
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ] {
        let resp = framing_case(&gw, &token, "/cl-te", framing, &smuggling_body()).await;
        let status = raw_status(&resp);
        if status != Some(400) {
            assert_eq!(status, Some(200), "{resp:.300}");
            assert!(
                resp.to_ascii_lowercase().contains("connection: close"),
                "the connection must close after a CL+TE request: {resp:.400}"
            );
        }
    }
    for s in gw.upstream().seen_path("/cl-te") {
        assert!(
            s.all("content-length").is_empty(),
            "the upstream got the Content-Length: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunked_body_is_rejected_and_never_reaches_the_upstream() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("chunk@example.com").await;
    let resp = framing_case(
        &gw,
        &token,
        "/bad-chunk",
        "Transfer-Encoding: chunked\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), Some(400), "{resp:.300}");
    assert!(
        gw.upstream().seen_path("/bad-chunk").is_empty(),
        "invalid chunked body reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_form_with_a_crlf_in_the_rd_keeps_headers_intact() {
    let gw = TestGateway::start().await;
    let r = gw
        .http()
        .send(Req::get(&format!(
            "/.auth/login?rd={}",
            enc("/x\r\nSet-Cookie: evil=1")
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookie("evil").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emailed_links_are_built_from_public_url_not_the_host_header() {
    let gw = TestGateway::start().await;
    for host in ["evil.com", "127.0.0.1:1", "attacker.example.com"] {
        let r = gw
            .http()
            .send(
                Req::post("/.auth/api/login")
                    .header("host", host)
                    .header("x-forwarded-host", "evil.com")
                    .json(&json!({"email": "victim@example.com"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let link = gw.mail("victim@example.com").await.link();
        assert!(
            link.starts_with(&format!("{}/.auth/verify?token=", gw.base)),
            "Host {host} changed the mailed link: {link}"
        );
    }
    // The redirect to the login page also points at public_url.
    let r = gw
        .http()
        .send(Req::get("/x").header("host", "evil.com").navigate())
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.location().starts_with(&gw.url("/.auth/login?rd=")),
        "{}",
        r.location()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_details_in_the_mail_are_escaped() {
    let gw = TestGateway::start().await;
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/login")
                .header(
                    "user-agent",
                    "<img src=x onerror=alert(1)><a href=\"https://evil.com\">click</a>",
                )
                .json(&json!({"email": "ua@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mail = gw.mail("ua@example.com").await;
    let html = mail.html();
    assert!(!html.contains("<img src=x"), "{html}");
    assert!(!html.contains("<a href=\"https://evil.com\""), "{html}");
    // The client's text is not in the mail at all: only a parsed device name.
    assert!(
        !html.contains("evil.com") && !mail.text().contains("evil.com"),
        "{html}"
    );
    assert!(html.contains("Unknown browser"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_x_forwarded_for_does_not_evade_the_ip_limit() {
    let gw = TestGateway::builder()
        .set("login.rate_limit.per_ip_per_minute", 2)
        .start()
        .await;
    let c = gw.http();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = c
            .send(
                Req::post("/.auth/api/login")
                    .header("x-forwarded-for", &format!("10.0.0.{i}"))
                    .header("x-real-ip", &format!("10.0.1.{i}"))
                    .json(&json!({"email": format!("s{i}@example.com")})),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_clients_are_limited_one_by_one() {
    let gw = TestGateway::builder()
        .set("login.rate_limit.per_ip_per_minute", 1)
        .set("trusted_proxies", json!(["127.0.0.1"]))
        .start()
        .await;
    let c = gw.http();
    let login = |xff: &'static str, email: &'static str| {
        let c = c.clone();
        async move {
            c.send(
                Req::post("/.auth/api/login")
                    .header("x-forwarded-for", xff)
                    .json(&json!({ "email": email })),
            )
            .await
            .status
        }
    };
    assert_eq!(login("198.51.100.1", "a@example.com").await, StatusCode::OK);
    assert_eq!(login("198.51.100.2", "b@example.com").await, StatusCode::OK);
    assert_eq!(
        login("198.51.100.1", "c@example.com").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A client cannot pick its own bucket by prepending addresses: the nearest untrusted hop counts.
    assert_eq!(
        login("203.0.113.9, 198.51.100.1", "d@example.com").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_when_public_url_is_https() {
    let gw = TestGateway::builder().public_https().start().await;
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "tls@example.com")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let binding = r.set_cookie("portcullis_session_login").unwrap();
    assert_eq!(binding.secure(), Some(true), "{binding}");
    let mail = gw.mail("tls@example.com").await;
    assert!(
        mail.link().starts_with(&format!(
            "https://127.0.0.1:{}/.auth/verify?token=",
            gw.port
        )),
        "{}",
        mail.link()
    );
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &mail.code())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let session = r.set_cookie("portcullis_session").unwrap();
    assert_eq!(session.secure(), Some(true), "{session}");
    assert_eq!(r.location(), format!("https://127.0.0.1:{}/", gw.port));
    // An https deployment never redirects to http.
    let b2 = gw.http();
    b2.send(
        Req::post("/.auth/login").form(&[("email", "tls2@example.com"), ("rd", &gw.url("/plain"))]),
    )
    .await;
    let code = gw.mail("tls2@example.com").await.code();
    let r = b2
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.location(), format!("https://127.0.0.1:{}/", gw.port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_zero_disables_the_idle_check() {
    let gw = TestGateway::builder()
        .set("session.idle_timeout", "0")
        .set("session.ttl", "7d")
        .start()
        .await;
    let token = gw.sign_in("noidle@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    gw.clock.advance(6 * 86400);
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK
    );
    gw.clock.advance(86400);
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_head_request_does_not_spend_the_link() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "head@example.com")]))
        .await;
    let mail = gw.mail("head@example.com").await;
    // Even from the bound browser, a HEAD (link preview, prefetch) does not sign in.
    let r = b.send(Req::new(http::Method::HEAD, &mail.link())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookie("portcullis_session").is_none());
    assert_eq!(gw.state().store.session_count().await, 0);
    let r = b.send(Req::get(&mail.link())).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_auth_body_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::builder()
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /.auth/api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("a stalled body held the request open")
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(raw_status(&resp), Some(408), "{resp}");
    assert!(resp.contains("body_timeout"), "{resp}");
    assert_eq!(gw.state().store.challenge_count().await, 0);
}

/// The sign-in mail names the requesting device in parsed form only: client-chosen text (a fake
/// "restore access" URL in the User-Agent) never reaches a genuine mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_shows_a_parsed_device_never_the_raw_user_agent() {
    let gw = TestGateway::start().await;
    let ua = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Restore access at https://evil.example/fix now";
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/login")
                .header("user-agent", ua)
                .json(&json!({"email": "victim@example.com"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mail = gw.mail("victim@example.com").await;
    for body in [mail.text(), mail.html()] {
        assert!(body.contains("Chrome on Linux"), "{body}");
        assert!(!body.contains("evil.example"), "{body}");
        assert!(
            !body.to_ascii_lowercase().contains("restore access"),
            "{body}"
        );
    }
}

/// The account pages act with the whole session: on an app's host (where the app's own scripts
/// are same-origin with `/.auth/`) they redirect to the sign-in host, and their POSTs are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_pages_are_served_only_on_the_sign_in_host() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set(
            "routes",
            json!([{"host": "app.example.com", "upstream": "builtin:whoami"}]),
        )
        .start()
        .await;
    let token = gw.sign_in("ann@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let on_app = |r: Req| r.header("host", "app.example.com");
    let r = c.send(Req::get("/.auth/sessions")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for path in ["/.auth/sessions", "/.auth/admin"] {
        let r = c.send(on_app(Req::get(path))).await;
        assert_eq!(r.status, StatusCode::FOUND, "{path}");
        assert_eq!(r.location(), format!("{}{path}", gw.base), "{path}");
    }
    for path in ["/.auth/sessions/revoke", "/.auth/admin/revoke"] {
        let r = c
            .send(
                on_app(Req::post(path))
                    .header("origin", "http://app.example.com")
                    .form(&[("all", "1")]),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
    }
    // Nothing was revoked.
    let r = c.send(Req::get("/.auth/api/session")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
