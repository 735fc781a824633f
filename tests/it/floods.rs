//! Sign-in floods: the global pending cap (503 without work), IPv6 /64 budgets, known browsers that others cannot lock out, a bounded wait for fresh browsers and bounded mail per address.

use http::StatusCode;
use serde_json::json;

use crate::support::{eventually, Http, Req, TestGateway, WAIT};

/// `POST /.auth/api/login` for `email` as seen behind a trusted proxy from `ip`.
async fn login_from(c: &Http, ip: &str, email: &str) -> crate::support::Resp {
    c.send(
        Req::post("/.auth/api/login")
            .header("x-forwarded-for", ip)
            .json(&json!({ "email": email })),
    )
    .await
}

/// A gateway with the shipped rate limits (the test default lifts them), behind a trusted
/// proxy on 127.0.0.1 so tests can pick client addresses with `X-Forwarded-For`.
async fn gateway_with_default_limits() -> TestGateway {
    TestGateway::builder()
        .set("login.rate_limit", json!({}))
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await
}

/// Waits until `n` mails to `to` arrived, then a moment more, and returns how many there are.
async fn mails_settle(gw: &TestGateway, to: &str, n: usize) -> usize {
    eventually(WAIT, &format!("{n} mails to {to}"), || async {
        (gw.smtp().mails_to(to).len() >= n).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    gw.smtp().mails_to(to).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_pending_sign_in_answers_503_without_work() {
    let gw = TestGateway::builder()
        .set("login.max_pending", 3)
        .start()
        .await;
    for i in 0..3 {
        gw.api_login(&format!("p{i}@example.com")).await;
    }
    let r = gw
        .http()
        .send(Req::post("/.auth/api/login").json(&json!({"email": "late@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error_code(), "busy");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The sign-in form says the same, with the address kept in the form.
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "late@example.com")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.header("retry-after").is_some());
    let r = b.follow(&r).await;
    assert!(
        r.text().contains("Too many sign-ins are in progress"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("late@example.com"));

    // No challenge, no mail.
    assert_eq!(gw.state().store.challenge_count().await, 3);
    for i in 0..3 {
        assert_eq!(mails_settle(&gw, &format!("p{i}@example.com"), 1).await, 1);
    }
    assert!(gw.smtp().mails_to("late@example.com").is_empty());
    assert_eq!(gw.smtp().all().len(), 3);

    // Once the sweep removed the expired ones there is room again.
    gw.clock.advance(15 * 60 + 61);
    let (gone, _) = portcullis::server::sweeper::sweep_once(gw.state())
        .await
        .unwrap();
    assert_eq!(gone, 3);
    assert_eq!(gw.state().limiter.pending(), 0);
    gw.api_login("late@example.com").await;
    gw.mail("late@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_one_budget_per_64() {
    let gw = TestGateway::builder()
        .set("login.rate_limit.per_ip_per_minute", 2)
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let c = gw.http();
    let status = |ip: &'static str, email: &'static str| {
        let c = c.clone();
        async move { login_from(&c, ip, email).await.status }
    };
    assert_eq!(
        status("2001:db8:1:2::1", "a@example.com").await,
        StatusCode::OK
    );
    assert_eq!(
        status("2001:db8:1:2:ffff:ffff:ffff:fffe", "b@example.com").await,
        StatusCode::OK
    );
    // A third address of the same /64 is the same client.
    let r = login_from(&c, "2001:db8:1:2:1234::3", "c@example.com").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "rate_limited");
    // The neighbouring /64 has a budget of its own.
    assert_eq!(
        status("2001:db8:1:3::1", "d@example.com").await,
        StatusCode::OK
    );
    // IPv4 clients are still counted one address at a time.
    assert_eq!(
        status("198.51.100.7", "e@example.com").await,
        StatusCode::OK
    );
    assert_eq!(
        status("198.51.100.8", "f@example.com").await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_browser_signs_in_despite_an_attacker_burst() {
    let gw = gateway_with_default_limits().await;
    let victim = "vera@example.com";
    let b = gw.browser_sign_in(victim).await;
    let known = b.cookie("portcullis_session_known");
    assert!(known.is_some(), "no known-browser cookie after sign-in");

    // Ten requests for the victim's address from two other addresses empty its shared budget.
    let attacker = gw.http();
    let mut admitted = 0;
    for i in 0..10 {
        let ip = if i % 2 == 0 {
            "203.0.113.1"
        } else {
            "203.0.113.2"
        };
        if login_from(&attacker, ip, victim).await.status == StatusCode::OK {
            admitted += 1;
        }
    }
    let r = login_from(&gw.http(), "203.0.113.3", victim).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the burst did not exhaust the address"
    );
    let before = mails_settle(&gw, victim, 1 + admitted).await;

    // The victim's browser, even from an attacker's (exhausted) address, still signs in.
    let r = b
        .send(
            Req::post("/.auth/login")
                .header("x-forwarded-for", "203.0.113.1")
                .form(&[("email", victim), ("rd", "/")]),
        )
        .await;
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (StatusCode::SEE_OTHER, Some("/.auth/check-email")),
        "known browser refused: {}",
        r.text()
    );
    assert_eq!(mails_settle(&gw, victim, before + 1).await, before + 1);
    let code = gw.smtp().mails_to(victim).last().unwrap().code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());

    // Someone else's known-browser cookie (for their own address), or a made-up one, is
    // worth nothing for the victim's address.
    let mallory = gw.browser_sign_in("mallory@example.com").await;
    let r = mallory
        .send(
            Req::post("/.auth/api/login")
                .header("x-forwarded-for", "203.0.113.9")
                .json(&json!({ "email": victim })),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    let forged = known.unwrap().replace(|c: char| c != '.', "A");
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/login")
                .header("x-forwarded-for", "203.0.113.9")
                .header("cookie", &format!("portcullis_session_known={forged}"))
                .json(&json!({ "email": victim })),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_browser_waits_at_most_five_minutes_after_a_burst() {
    let gw = gateway_with_default_limits().await;
    let victim = "fred@example.com";
    let attacker = gw.http();
    for i in 0..10 {
        let ip = if i % 2 == 0 {
            "203.0.113.1"
        } else {
            "203.0.113.2"
        };
        let r = login_from(&attacker, ip, victim).await;
        assert_eq!(r.status, StatusCode::OK, "burst request {i}: {}", r.text());
    }
    let fresh = gw.http();
    let r = login_from(&fresh, "198.51.100.20", victim).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "Retry-After {retry}");
    // The refused request did not spend the fresh client's network budget (5 a minute).
    for i in 0..5 {
        let r = login_from(&fresh, "198.51.100.20", &format!("x{i}@example.com")).await;
        assert_eq!(r.status, StatusCode::OK, "{i}: {}", r.text());
    }
    gw.clock.advance(retry);
    let r = login_from(&fresh, "198.51.100.20", victim).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_one_address_per_hour_stays_bounded_under_attack() {
    let gw = gateway_with_default_limits().await;
    let victim = "mia@example.com";
    let c = gw.http();
    // Two hours of one request every 20 s, each from a new network.
    let mut per_hour = [0usize; 2];
    for step in 0..360u32 {
        let ip = format!("203.0.{}.{}", step / 200, step % 200 + 1);
        if login_from(&c, &ip, victim).await.status == StatusCode::OK {
            per_hour[(step / 180) as usize] += 1;
            // This request's own mail is delivered before the (manual) clock moves on and the
            // sign-in expires (waiting for "a mail" would accept an earlier one).
            let want = per_hour[0] + per_hour[1];
            let deadline = tokio::time::Instant::now() + crate::support::WAIT;
            while gw.smtp().mails_to(victim).len() < want {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "mail {want} never came"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        gw.clock.advance(20);
    }
    // Burst 10 plus one per 5 minutes: at most 10 + 12 in the first hour, 12 after.
    assert!(per_hour[0] <= 22, "{per_hour:?}");
    assert!(per_hour[1] <= 12, "{per_hour:?}");
    assert!(
        per_hour[0] >= 10,
        "the address was not served at all: {per_hour:?}"
    );
    // One mail per admitted request, never more.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(gw.smtp().mails_to(victim).len(), per_hour[0] + per_hour[1]);
}
