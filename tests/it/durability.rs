//! What survives a restart, the durable mail outbox, and sweeping of expired records.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::{free_port, Req, Smtp, TestGateway, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_pending_challenges_survive_a_restart() {
    let mut gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("keep@example.com").await;
    let browser = gw.browser_sign_in("cookie@example.com").await;
    // A sign-in in progress: one browser waiting for its code, one link not yet opened.
    let waiting = gw.http();
    waiting
        .send(Req::post("/.auth/login").form(&[("email", "pending@example.com"), ("rd", "/after")]))
        .await;
    let code = gw.mail("pending@example.com").await.code();
    gw.api_login("link@example.com").await;
    let link = gw.mail("link@example.com").await;

    gw.restart().await;

    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let r = c.send(Req::get("/.auth/api/session")).await;
    assert_eq!(r.status, StatusCode::OK, "session lost in the restart");
    assert_eq!(r.json()["email"], "keep@example.com");
    let r = browser.send(Req::get("/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/x");

    // The code still matches (the server secret is persistent) and the binding cookie still binds.
    let r = waiting
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), gw.url("/after"));
    let r = gw.http().send(Req::get(&link.link())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Confirm sign-in"));

    // Logout before a restart stays logged out after it.
    let r = c
        .send(Req::post("/.auth/api/logout").json(&json!({})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    gw.restart().await;
    let c2 = gw.http();
    c2.set_cookie("portcullis_session", &token);
    assert_eq!(
        c2.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_links_stay_spent_across_a_restart() {
    let mut gw = TestGateway::start().await;
    gw.api_login("once@example.com").await;
    let token = gw.mail("once@example.com").await.token();
    let r = gw
        .http()
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": token})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    gw.restart().await;
    let r = gw
        .http()
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": token})))
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.error_code(), "already_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_while_smtp_is_down_is_delivered_when_it_returns() {
    let smtp_port = free_port();
    let mut gw = TestGateway::builder()
        .smtp_port(smtp_port)
        .system_clock()
        .start()
        .await;
    let v = gw.api_login("queued@example.com").await;
    assert_eq!(gw.state().store.outbox_len().await, 1);

    // The first attempt fails and is rescheduled, not dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = gw.state().store.outbox().await.unwrap();
        assert_eq!(q.len(), 1, "the mail left the queue while SMTP was down");
        if q[0].1.attempts >= 1 {
            assert!(q[0].1.last_error.is_some());
            assert!(q[0].1.next_attempt_at > q[0].1.created_at);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery attempt was made"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The queue survives a restart while SMTP is still down.
    gw.restart().await;
    assert_eq!(gw.state().store.outbox_len().await, 1);

    let smtp = Smtp::start_on(smtp_port);
    // Backoff is 2 s, 4 s, 8 s ... after the failures so far: allow a generous wait.
    let mail = smtp
        .wait_for_mail("queued@example.com", Duration::from_secs(60))
        .await;
    assert_eq!(mail.rcpt.len(), 1);
    assert!(mail.from.contains("auth@example.com"), "{}", mail.from);
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.state().store.outbox_len().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered mail stays queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        smtp.mails_to("queued@example.com").len(),
        1,
        "mail delivered twice"
    );

    // The delayed mail still signs in.
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": mail.code()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_for_an_expired_sign_in_is_dropped_not_sent() {
    let smtp_port = free_port();
    let gw = TestGateway::builder().smtp_port(smtp_port).start().await;
    gw.api_login("stale@example.com").await;
    // Wait for the first (failed) attempt, so no delivery pass is in flight with the old time.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = gw.state().store.outbox().await.unwrap();
        assert_eq!(q.len(), 1);
        if q[0].1.attempts >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery attempt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.clock.advance(16 * 60);
    let smtp = Smtp::start_on(smtp_port);
    gw.state().outbox_wake.notify_one();
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.state().store.outbox_len().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired mail never left the queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        smtp.all().is_empty(),
        "mail for an expired sign-in was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_challenges_and_sessions_are_swept() {
    let gw = TestGateway::builder()
        .set("session.ttl", "2h")
        .set("session.idle_timeout", "30m")
        .start()
        .await;
    let long = gw.sign_in("active@example.com").await;
    let idle = gw.sign_in("idle@example.com").await;
    gw.api_login("never@example.com").await;
    gw.mail("never@example.com").await;
    let store = &gw.state().store;
    assert_eq!(store.challenge_count().await, 3);
    assert_eq!(store.session_count().await, 2);

    // 20 minutes on: the active session is used, the idle one not.
    gw.clock.advance(20 * 60);
    let c = gw.http();
    c.set_cookie("portcullis_session", &long);
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK
    );
    let now = portcullis::Clock::now(&gw.clock);
    let idle_secs = Some(30 * 60);
    // Completed and pending challenges expired 5 minutes ago (ttl 15 min) but get a minute of grace.
    let (c_gone, s_gone) = store.sweep(now, idle_secs).await.unwrap();
    assert_eq!((c_gone, s_gone), (3, 0));
    assert_eq!(store.challenge_count().await, 0);

    gw.clock.advance(15 * 60);
    let now = portcullis::Clock::now(&gw.clock);
    let (_, s_gone) = store.sweep(now, idle_secs).await.unwrap();
    assert_eq!(s_gone, 1, "the idle session is swept, the active one kept");
    assert_eq!(store.session_count().await, 1);
    let i = gw.http();
    i.set_cookie("portcullis_session", &idle);
    assert_eq!(
        i.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK
    );

    // Past the absolute lifetime everything goes.
    gw.clock.advance(2 * 3600);
    let now = portcullis::Clock::now(&gw.clock);
    assert_eq!(store.sweep(now, None).await.unwrap(), (0, 1));
    assert_eq!(store.session_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_just_past_expiry_is_kept_for_a_minute() {
    let gw = TestGateway::start().await;
    let v = gw.api_login("grace@example.com").await;
    gw.mail("grace@example.com").await;
    gw.clock.advance(15 * 60 + 30);
    let now = portcullis::Clock::now(&gw.clock);
    assert_eq!(gw.state().store.sweep(now, None).await.unwrap(), (0, 0));
    // The user gets "expired", not "unknown".
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": "123456"})),
        )
        .await;
    assert_eq!(r.error_code(), "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_a_graceful_stop() {
    let mut gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("grace@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let pending = tokio::spawn(async move { c.send(Req::get("/delay/1000")).await });
    // Let the request reach the upstream, then stop.
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.upstream().seen_path("/delay/1000").is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["delayed_ms"], 1000);
    // The answer tells the client the connection ends with it.
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_activity_is_kept_across_a_restart() {
    let mut gw = TestGateway::builder()
        .set("session.idle_timeout", "1h")
        .start()
        .await;
    let token = gw.sign_in("busy@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    gw.clock.advance(50 * 60);
    // Activity now: recorded in memory, written in batches or at shutdown.
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK
    );
    gw.restart().await;
    gw.clock.advance(50 * 60);
    // 100 minutes after sign-in but 50 after the last activity: still signed in.
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    assert_eq!(
        c.send(Req::get("/.auth/api/session")).await.status,
        StatusCode::OK,
        "activity before the restart was lost"
    );
}
