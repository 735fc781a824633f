//! The JSON API (`/.auth/api/*`), forward-auth (`/.auth/check`) and health.

use http::StatusCode;
use serde_json::json;

use crate::support::{keys, Req, TestGateway};

const CHALLENGE_KEYS: [&str; 4] = ["challenge_id", "expires_at", "expires_in", "method"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_the_challenge_and_mails_link_and_code() {
    let gw = TestGateway::start().await;
    let v = gw.api_login("alice@example.com").await;
    assert_eq!(keys(&v), CHALLENGE_KEYS);
    assert_eq!(v["method"], "LINK_OTP");
    assert_eq!(v["expires_in"], 900);
    assert_eq!(
        v["expires_at"].as_u64().unwrap(),
        portcullis::Clock::now(&gw.clock) + 900
    );
    assert_eq!(v["challenge_id"].as_str().unwrap().len(), 22);

    let mail = gw.mail("alice@example.com").await;
    assert!(mail.link_opt().is_some());
    assert!(mail.code_opt().is_some());
    assert_eq!(mail.header("subject").as_deref(), Some("Your sign-in link"));
    assert!(mail.header("to").unwrap().contains("alice@example.com"));
    assert!(
        mail.html().contains(&mail.token()),
        "the HTML part carries the same link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_follows_the_configuration() {
    let gw = TestGateway::builder()
        .set("login.methods", json!(["code"]))
        .start()
        .await;
    let v = gw.api_login("a@example.com").await;
    assert_eq!(v["method"], "OTP");
    let mail = gw.mail("a@example.com").await;
    assert!(
        mail.link_opt().is_none(),
        "code-only mail has a link:\n{}",
        mail.text()
    );
    assert!(mail.code_opt().is_some());

    let gw = TestGateway::builder()
        .set("login.methods", json!(["link"]))
        .start()
        .await;
    let v = gw.api_login("a@example.com").await;
    assert_eq!(v["method"], "LINK");
    let mail = gw.mail("a@example.com").await;
    assert!(mail.link_opt().is_some());
    assert!(
        mail.code_opt().is_none(),
        "link-only mail has a code:\n{}",
        mail.text()
    );
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": "123456"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "codes_disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_address_gets_the_same_answer_and_no_mail() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let denied = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "mallory@evil.com"})))
        .await;
    assert_eq!(
        gw.state().store.outbox_len().await,
        0,
        "mail queued for a disallowed address"
    );
    let allowed = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "bob@example.com"})))
        .await;
    assert_eq!(denied.status, allowed.status);
    assert_eq!(denied.status, StatusCode::OK);
    let (d, a) = (denied.json(), allowed.json());
    assert_eq!(keys(&d), keys(&a));
    assert_eq!(d["method"], a["method"]);
    assert_eq!(d["expires_in"], a["expires_in"]);
    assert_eq!(
        d["challenge_id"].as_str().unwrap().len(),
        a["challenge_id"].as_str().unwrap().len()
    );
    assert_eq!(
        denied.header("content-type"),
        allowed.header("content-type")
    );

    gw.mail("bob@example.com").await;
    assert!(gw.smtp().mails_to("mallory@evil.com").is_empty());
    assert_eq!(gw.smtp().all().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_ip() {
    let gw = TestGateway::builder()
        .set("login.rate_limit.per_ip_per_minute", 3)
        .start()
        .await;
    let c = gw.http();
    for i in 0..3 {
        let r = c
            .send(
                Req::post("/.auth/api/login").json(&json!({"email": format!("u{i}@example.com")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "u9@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        gw.state().store.challenge_count().await,
        3,
        "a refused request created a challenge"
    );

    // The HTML form is limited by the same counter.
    let r = c
        .send(Req::post("/.auth/login").form(&[("email", "u8@example.com")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let page = c.follow(&r).await;
    assert!(page.text().contains("Too many requests"), "{}", page.text());
    assert!(page.text().contains("u8@example.com"), "{}", page.text());

    // A minute later it works again.
    gw.clock.advance(61);
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "u9@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_rate_limited_per_canonical_address() {
    let gw = TestGateway::builder()
        .set("login.rate_limit.per_email_per_hour", 2)
        .set("login.rate_limit.per_email_burst", 2)
        .start()
        .await;
    let c = gw.http();
    for e in ["A@Example.com", "a@example.com"] {
        let r = c
            .send(Req::post("/.auth/api/login").json(&json!({"email": e})))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{e}");
    }
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "a@EXAMPLE.COM"})))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "rate_limited");
    assert!(r.header("retry-after").is_some());
    // Resends count against the address too.
    let first = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "b@example.com"})))
        .await
        .json();
    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": first["challenge_id"]})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": first["challenge_id"]})))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Other addresses are unaffected.
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "c@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requires_a_json_content_type() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let body = serde_json::to_vec(&json!({"email": "a@example.com"})).unwrap();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut req = Req::post("/.auth/api/login").body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = c.send(req).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(r.error_code(), "unsupported_media_type");
    }
    let r = c
        .send(
            Req::post("/.auth/api/login")
                .header("content-type", "application/json; charset=utf-8")
                .body(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(gw.state().store.challenge_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejects_bad_input() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "nope"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_email");
    let r = c
        .send(
            Req::post("/.auth/api/login")
                .header("content-type", "application/json")
                .body("{\"email\":"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_json");
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"mail": "a@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_json");
    let r = c
        .send(
            Req::post("/.auth/api/login")
                .json(&json!({"email": "a@example.com", "state": "x".repeat(1025)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_state");
    assert_eq!(gw.state().store.outbox_len().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_api_bodies_get_413() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let big = json!({"email": "a@example.com", "state": "x".repeat(40_000)});
    let r = c.send(Req::post("/.auth/api/login").json(&big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "payload_too_large");

    // Without a Content-Length (chunked) the limit holds as well.
    let (tx, body) = crate::support::ChannelBody::pair();
    let send = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![b' '; 4096]);
        for _ in 0..16 {
            if tx.send(chunk.clone()).await.is_err() {
                break;
            }
        }
    });
    let r = c
        .try_send(
            Req::post("/.auth/api/login")
                .header("content-type", "application/json")
                .stream(body),
        )
        .await;
    send.abort();
    match r {
        Ok(r) => assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE),
        // The gateway may answer and close before the client finished sending.
        Err(e) => panic!("chunked oversized body: no response ({e})"),
    }
    assert_eq!(gw.state().store.challenge_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_issues_new_credentials_for_the_same_challenge() {
    let gw = TestGateway::builder()
        .set("login.resend_cooldown", "60s")
        .start()
        .await;
    let c = gw.http();
    let v = gw.api_login("bob@example.com").await;
    let first = gw.mail("bob@example.com").await;
    let id = v["challenge_id"].clone();

    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": id})))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "resend_cooldown");
    assert_eq!(r.header("retry-after").as_deref(), Some("60"));

    gw.clock.advance(60);
    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": id})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v2 = r.json();
    assert_eq!(keys(&v2), CHALLENGE_KEYS);
    assert_eq!(v2["challenge_id"], id);
    assert_eq!(v2["expires_in"], 900, "a resend restarts the validity");
    let second = gw.mail("bob@example.com").await;
    assert_ne!(first.token(), second.token());

    let r = c
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": first.token()})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "invalid_link");
    if first.code() != second.code() {
        let r = c
            .send(
                Req::post("/.auth/api/verify")
                    .json(&json!({"challenge_id": id, "code": first.code()})),
            )
            .await;
        assert_eq!(r.error_code(), "wrong_code");
    }
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": id, "code": second.code()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = c
        .send(
            Req::post("/.auth/api/resend").json(&json!({"challenge_id": "AAAAAAAAAAAAAAAAAAAAAA"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "unknown_challenge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_status_reports_expired_and_completed() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let a = gw.api_login("a@example.com").await;
    let id = a["challenge_id"].as_str().unwrap().to_string();
    let r = c
        .send(Req::get(&format!("/.auth/api/challenge/{id}")))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"challenge_id": id, "expired": false, "completed": false})
    );

    let code = gw.mail("a@example.com").await.code();
    c.send(Req::post("/.auth/api/verify").json(&json!({"challenge_id": id, "code": code})))
        .await;
    let r = c
        .send(Req::get(&format!("/.auth/api/challenge/{id}")))
        .await;
    assert_eq!(
        r.json(),
        json!({"challenge_id": id, "expired": false, "completed": true})
    );

    let b = gw.api_login("b@example.com").await;
    let bid = b["challenge_id"].as_str().unwrap().to_string();
    gw.clock.advance(900);
    let r = c
        .send(Req::get(&format!("/.auth/api/challenge/{bid}")))
        .await;
    assert_eq!(
        r.json(),
        json!({"challenge_id": bid, "expired": true, "completed": false})
    );

    let r = c.send(Req::get("/.auth/api/challenge/doesnotexist")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "unknown_challenge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_by_code_returns_identity_state_and_token() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let c = gw.http();
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({
            "email": "Carol@Example.com",
            "redirect_to": "/after?x=1",
            "state": "opaque-123",
        })))
        .await;
    let id = r.json()["challenge_id"].clone();
    let code = gw.mail("carol@example.com").await.code();
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": id, "code": code, "issue_token": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(
        keys(&v),
        [
            "email",
            "expires_at",
            "redirect_to",
            "session_token",
            "state"
        ]
    );
    assert_eq!(v["email"], "carol@example.com");
    assert_eq!(v["state"], "opaque-123");
    assert_eq!(v["redirect_to"], gw.url("/after?x=1"));
    assert_eq!(
        v["expires_at"].as_u64().unwrap(),
        portcullis::Clock::now(&gw.clock) + 7 * 86400
    );
    let token = v["session_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 43);
    // The cookie carries the same session.
    assert_eq!(r.set_cookie("portcullis_session").unwrap().value(), token);

    // The token works as a bearer on the API, forward-auth and proxied traffic.
    let bearer = format!("Bearer {token}");
    let fresh = gw.http();
    let r = fresh
        .send(Req::get("/.auth/api/session").header("authorization", &bearer))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(keys(&r.json()), ["email", "expires_at"]);
    assert_eq!(r.json()["email"], "carol@example.com");
    let r = fresh
        .send(Req::get("/data").header("authorization", &bearer))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_by_link_token_without_issue_token() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    gw.api_login("dan@example.com").await;
    let token = gw.mail("dan@example.com").await.token();
    let r = c
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": token})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["email"], "dan@example.com");
    assert!(
        v.get("session_token").is_none(),
        "token issued without issue_token: {v}"
    );
    assert_eq!(v["state"], serde_json::Value::Null);
    assert_eq!(v["redirect_to"], gw.url("/"));
    let r = c.send(Req::get("/.auth/api/session")).await;
    assert_eq!(r.status, StatusCode::OK, "the cookie of api/verify works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_errors_have_status_and_code() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let v = gw.api_login("eve@example.com").await;
    let id = v["challenge_id"].clone();
    let mail = gw.mail("eve@example.com").await;
    let wrong = if mail.code() == "000000" {
        "000001"
    } else {
        "000000"
    };

    let cases = [
        (
            json!({"challenge_id": id, "code": wrong}),
            StatusCode::BAD_REQUEST,
            "wrong_code",
        ),
        (
            json!({"challenge_id": "nosuchchallenge", "code": "123456"}),
            StatusCode::NOT_FOUND,
            "unknown_challenge",
        ),
        (
            json!({"link_token": "x".repeat(43)}),
            StatusCode::BAD_REQUEST,
            "invalid_link",
        ),
        (
            json!({"link_token": "short"}),
            StatusCode::BAD_REQUEST,
            "invalid_link",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            json!({"challenge_id": id, "code": mail.code(), "link_token": mail.token()}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = c.send(Req::post("/.auth/api/verify").json(&body)).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(r.error_code(), code, "{body}");
        assert!(r.set_cookie("portcullis_session").is_none());
    }
    // Spent: the second use of the code (and of the link) is refused.
    let ok = c
        .send(
            Req::post("/.auth/api/verify").json(&json!({"challenge_id": id, "code": mail.code()})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = c
        .send(
            Req::post("/.auth/api/verify").json(&json!({"challenge_id": id, "code": mail.code()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.error_code(), "already_used");
    let r = c
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": mail.token()})))
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.error_code(), "already_used");
    assert_eq!(gw.state().store.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_endpoint_and_forward_auth_check() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let r = c.send(Req::get("/.auth/api/session")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthenticated");
    let r = c.send(Req::get("/.auth/check")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("x-forwarded-email").is_none());

    let token = gw.sign_in("fay@example.com").await;
    c.set_cookie("portcullis_session", &token);
    let r = c.send(Req::get("/.auth/api/session")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["email"], "fay@example.com");
    assert!(r.json()["expires_at"].as_u64().unwrap() > portcullis::Clock::now(&gw.clock));
    let r = c.send(Req::get("/.auth/check")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("x-forwarded-email").as_deref(),
        Some("fay@example.com")
    );
    assert_eq!(
        r.header("x-forwarded-user").as_deref(),
        Some("fay@example.com")
    );
    assert_eq!(r.headers.get_all("x-forwarded-email").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_identity_header_names_are_used() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set(
            "headers",
            json!({"email": "X-Auth-Email", "user": "X-Auth-User"}),
        )
        .start()
        .await;
    let token = gw.sign_in("gus@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let r = c.send(Req::get("/.auth/check")).await;
    assert_eq!(r.header("x-auth-email").as_deref(), Some("gus@example.com"));
    let r = c
        .send(
            Req::get("/p")
                .header("x-auth-email", "evil@example.com")
                .header("x_auth_user", "evil"),
        )
        .await;
    let v = r.json();
    assert_eq!(
        crate::support::upstream::echoed(&v, "x-auth-email"),
        ["gus@example.com"]
    );
    assert_eq!(
        crate::support::upstream::echoed(&v, "x-auth-user"),
        ["gus@example.com"]
    );
    assert!(crate::support::upstream::echoed(&v, "x_auth_user").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unknown_paths() {
    let gw = TestGateway::start().await;
    let c = gw.http();
    let r = c.send(Req::get("/.auth/healthz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "ok\n");
    let r = c.send(Req::get("/.auth/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c.send(Req::get("/.auth/api/nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");
    let r = c.send(Req::get("/.auth/api/login")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_code(), "method_not_allowed");
    let r = c.send(Req::new(http::Method::DELETE, "/.auth/login")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resends_send_one_mail() {
    let gw = TestGateway::builder()
        .set("login.resend_cooldown", "30s")
        .start()
        .await;
    let v = gw.api_login("twice@example.com").await;
    gw.mail("twice@example.com").await;
    gw.clock.advance(30);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(6));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = gw.http();
        let body = json!({"challenge_id": v["challenge_id"]});
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            c.send(Req::post("/.auth/api/resend").json(&body))
                .await
                .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        if s == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(ok, 1, "resends racing past the cooldown");
    let second = gw.mail("twice@example.com").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(gw.smtp().mails_to("twice@example.com").len(), 2);
    let r = gw
        .http()
        .send(Req::post("/.auth/api/verify").json(&json!({"link_token": second.token()})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}
