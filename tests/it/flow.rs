//! The browser sign-in flow through the HTML pages: redirect to login, form, mail, code or link, session, logout.

use http::StatusCode;

use crate::support::upstream::echoed;
use crate::support::{enc, unescape, Req, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigation_without_session_redirects_to_login_with_original_url() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let b = gw.http();

    let r = b.send(Req::get("/app/page?x=1&y=a%20b").navigate()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let original = format!("{}/app/page?x=1&y=a%20b", gw.base);
    assert_eq!(
        r.location(),
        format!("{}/.auth/login?rd={}", gw.base, enc(&original))
    );

    // A plain GET that accepts HTML (no Sec-Fetch-Mode) is a navigation too.
    let r = b
        .send(Req::get("/dash").header("accept", "text/html"))
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.location(),
        format!("{}/.auth/login?rd={}", gw.base, enc(&gw.url("/dash")))
    );

    // The upstream saw none of it.
    assert!(gw.upstream().seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_request_without_session_gets_401_json() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let b = gw.http();
    for req in [
        Req::get("/api/items").header("accept", "application/json"),
        Req::post("/api/items").body("{}"),
        Req::get("/api/items")
            .header("sec-fetch-mode", "cors")
            .header("accept", "text/html"),
    ] {
        let r = b.send(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(r.error_code(), "unauthenticated");
        assert!(r.header("location").is_none());
    }
    assert!(gw.upstream().seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_renders_form_with_escaped_rd() {
    let gw = TestGateway::start().await;
    let r = gw
        .http()
        .send(Req::get(&format!(
            "/.auth/login?rd={}",
            enc("/x\"><script>alert(1)</script>")
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let page = r.text();
    assert!(page.contains("name=\"email\""), "{page}");
    assert!(page.contains("action=\"/.auth/login\""), "{page}");
    assert!(
        !page.contains("<script>alert(1)"),
        "rd is not escaped: {page}"
    );
    assert!(page.contains("&lt;script&gt;"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_signs_in_and_returns_to_original_url() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let b = gw.http();

    let r = b.send(Req::get("/reports/q3?format=pdf").navigate()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    let login = r.location();
    let rd = url::Url::parse(&login)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .unwrap();

    let r = b.send(Req::get(&login)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        unescape(&r.text()).contains(&format!("value=\"{rd}\"")),
        "{}",
        r.text()
    );

    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "alice@example.com"), ("rd", &rd)]))
        .await;
    // POST-redirect-GET: the form's answer is a 303 to a page that can be reloaded.
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), "/.auth/check-email");
    let page = b.follow(&r).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Check your email"), "{}", page.text());
    assert!(page.text().contains("alice@example.com"));
    let binding = r
        .set_cookie("portcullis_session_login")
        .expect("binding cookie");
    assert_eq!(binding.path(), Some("/.auth/"));
    assert_eq!(binding.http_only(), Some(true));
    assert!(
        r.set_cookie("portcullis_session").is_none(),
        "no session before the code"
    );

    let mail = gw.mail("alice@example.com").await;
    let code = mail.code();
    assert_eq!(code.len(), 6);
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), gw.url("/reports/q3?format=pdf"));
    let session = r.set_cookie("portcullis_session").expect("session cookie");
    assert_eq!(session.value().len(), 43);
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.path(), Some("/"));
    assert_eq!(
        session.same_site(),
        Some(cookie::SameSite::Lax),
        "session cookie must be SameSite=Lax"
    );
    // The binding cookie is cleared.
    assert!(b.cookie("portcullis_session_login").is_none());

    let r = b.send(Req::get("/reports/q3?format=pdf").navigate()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["uri"], "/reports/q3?format=pdf");
    assert_eq!(
        echoed(&echo, "x-forwarded-email"),
        vec!["alice@example.com"]
    );
    assert_eq!(gw.state().store.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_code_shows_the_form_again_with_attempts_left() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "bob@example.com")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let code = gw.mail("bob@example.com").await.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", wrong)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), "/.auth/check-email");
    assert!(r.set_cookie("portcullis_session").is_none());
    let page = b.follow(&r).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text()
            .contains("That code is not right. 4 attempts left."),
        "{}",
        page.text()
    );
    assert!(page.text().contains("name=\"code\""));
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), gw.url("/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_needs_the_browser_that_asked() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "carol@example.com")]))
        .await;
    let code = gw.mail("carol@example.com").await.code();

    // Another browser (no binding cookie) cannot use the code.
    let other = gw.http();
    let r = other
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.set_cookie("portcullis_session").is_none());

    // Nor with a forged binding cookie naming the right challenge but a wrong secret.
    let real = b.cookie("portcullis_session_login").unwrap();
    let (id, _) = real.split_once('.').unwrap();
    other.set_cookie("portcullis_session_login", &format!("{id}.forgedsecret"));
    let r = other
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.set_cookie("portcullis_session").is_none());

    // The right browser still can.
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_in_another_browser_asks_for_confirmation_and_is_not_spent_by_get() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "dave@example.com"), ("rd", "/inbox")]))
        .await;
    let mail = gw.mail("dave@example.com").await;
    let link = mail.link();
    assert!(
        link.starts_with(&format!("{}/.auth/verify?token=", gw.base)),
        "{link}"
    );

    // A mail scanner or another device opens the link: confirmation page, token not spent.
    let phone = gw.http();
    for _ in 0..2 {
        let r = phone.send(Req::get(&link)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.text().contains("Confirm sign-in"), "{}", r.text());
        assert!(r.text().contains("dave@example.com"));
        assert!(r.text().contains(&mail.token()));
        assert!(r.set_cookie("portcullis_session").is_none());
    }
    assert_eq!(gw.state().store.session_count().await, 0);

    let r = phone
        .send(Req::post("/.auth/verify").form(&[("token", &mail.token())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), gw.url("/inbox"));
    assert!(r.set_cookie("portcullis_session").is_some());

    // Spent now.
    let r = gw.http().send(Req::get(&link)).await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text());
    assert!(
        r.text().contains("This link was already used"),
        "{}",
        r.text()
    );
    let late = gw.http();
    let r = late
        .send(Req::post("/.auth/verify").form(&[("token", &mail.token())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert!(r.set_cookie("portcullis_session").is_none());
    let page = late.follow(&r).await;
    assert_eq!(page.status, StatusCode::GONE, "{}", page.text());
    assert!(
        page.text().contains("This link was already used"),
        "{}",
        page.text()
    );
    assert_eq!(gw.state().store.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_in_the_same_browser_signs_in_at_once() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    b.send(
        Req::post("/.auth/login").form(&[("email", "erin@example.com"), ("rd", "/docs?page=2")]),
    )
    .await;
    let link = gw.mail("erin@example.com").await.link();
    let r = b.send(Req::get(&link)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), gw.url("/docs?page=2"));
    assert!(r.set_cookie("portcullis_session").is_some());
    let r = b.send(Req::get("/.auth/api/session")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["email"], "erin@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_mails_new_credentials_and_kills_the_old_ones() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "frank@example.com")]))
        .await;
    let first = gw.mail("frank@example.com").await;

    let r = b.send(Req::post("/.auth/resend")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let page = b.follow(&r).await;
    assert!(
        page.text().contains("A new mail is on its way"),
        "{}",
        page.text()
    );
    let second = gw.mail("frank@example.com").await;
    assert_ne!(first.token(), second.token());

    // The old link and code are dead.
    let r = gw.http().send(Req::get(&first.link())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    if first.code() != second.code() {
        let r = b
            .send(Req::post("/.auth/code").form(&[("code", &first.code())]))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        assert!(r.set_cookie("portcullis_session").is_none());
        assert!(b.follow(&r).await.text().contains("That code is not right"));
    }
    // The new one works.
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &second.code())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_respects_the_cooldown() {
    let gw = TestGateway::builder()
        .set("login.resend_cooldown", "30s")
        .start()
        .await;
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "gina@example.com")]))
        .await;
    gw.mail("gina@example.com").await;
    let r = b.send(Req::post("/.auth/resend")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("retry-after").as_deref(), Some("30"));
    let page = b.follow(&r).await.text();
    assert!(
        page.contains("Wait 30 seconds before asking for another mail."),
        "{page}"
    );
    assert_eq!(gw.smtp().mails_to("gina@example.com").len(), 1);
    gw.clock.advance(30);
    let r = b.send(Req::post("/.auth/resend")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert!(b
        .follow(&r)
        .await
        .text()
        .contains("A new mail is on its way"));
    gw.mail("gina@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_session_on_the_server() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let b = gw.browser_sign_in("henry@example.com").await;
    let token = b.cookie("portcullis_session").unwrap();
    assert_eq!(b.send(Req::get("/x")).await.status, StatusCode::OK);

    let r = b.send(Req::post("/.auth/logout")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/.auth/login");
    let cleared = r.set_cookie("portcullis_session").expect("removal cookie");
    assert_eq!(cleared.value(), "");
    assert!(cleared.max_age().is_some_and(|a| a.is_zero()), "{cleared}");
    assert_eq!(gw.state().store.session_count().await, 0);

    // Replaying the old cookie does not work: the session is gone server-side.
    let replay = gw.http();
    replay.set_cookie("portcullis_session", &token);
    let r = replay.send(Req::get("/x")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = replay.send(Req::get("/.auth/check")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_logout_revokes_a_bearer_token() {
    let gw = TestGateway::start().await;
    let token = gw.sign_in("iris@example.com").await;
    let auth = format!("Bearer {token}");
    let c = gw.http();
    assert_eq!(
        c.send(Req::get("/.auth/api/session").header("authorization", &auth))
            .await
            .status,
        StatusCode::OK
    );
    let r = c
        .send(
            Req::post("/.auth/api/logout")
                .header("authorization", &auth)
                .json(&serde_json::json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["signed_out"], true);
    let r = c
        .send(Req::get("/.auth/api/session").header("authorization", &auth))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_whoami_shows_the_signed_in_address() {
    let gw = TestGateway::start().await;
    let b = gw.browser_sign_in("judy@example.com").await;
    let r = b.send(Req::get("/anything?q=1").navigate()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = unescape(&r.text());
    assert!(
        page.contains("<strong id=\"email\">judy@example.com</strong>"),
        "{page}"
    );
    assert!(page.contains("x-forwarded-email"), "{page}");
    assert!(page.contains("GET /anything?q=1"), "{page}");
    assert!(
        !page.contains(&b.cookie("portcullis_session").unwrap()),
        "whoami leaks the session token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_address_sees_the_same_page_and_gets_no_mail() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "mallory@evil.com")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookie("portcullis_session_login").is_some());
    assert!(b.follow(&r).await.text().contains("Check your email"));
    // Any code is refused, and no mail was queued.
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", "123456")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookie("portcullis_session").is_none());
    assert!(b.follow(&r).await.text().contains("That code is not right"));
    assert_eq!(gw.state().store.outbox_len().await, 0);
    // Mail for an allowed address queued afterwards is delivered; none for mallory came before it.
    b.send(Req::post("/.auth/login").form(&[("email", "kim@example.com")]))
        .await;
    gw.mail("kim@example.com").await;
    assert!(gw.smtp().mails_to("mallory@evil.com").is_empty());
    assert_eq!(gw.smtp().all().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_email_in_the_form_shows_an_error() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "not an email"), ("rd", "/x")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/.auth/login?rd=%2Fx");
    assert!(r.set_cookie("portcullis_session_login").is_none());
    // The form again, with the message and what was typed.
    let page = b.follow(&r).await;
    assert_eq!(page.status, StatusCode::OK);
    let text = unescape(&page.text());
    assert!(text.contains("id=\"error\""), "{text}");
    assert!(text.contains("value=\"not an email\""), "{text}");
    assert!(text.contains("value=\"/x\""), "{text}");
    assert_eq!(gw.state().store.challenge_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_typed_with_spaces_or_dashes_are_accepted() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    b.send(Req::post("/.auth/login").form(&[("email", "typist@example.com")]))
        .await;
    let code = gw.mail("typist@example.com").await.code();
    let typed = format!(" {}-{} ", &code[..3], &code[3..]);
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &typed)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{typed:?}: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_lifetimes_follow_the_configuration() {
    let gw = TestGateway::builder()
        .set("session.ttl", "2d")
        .set("login.ttl", "10m")
        .start()
        .await;
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "life@example.com")]))
        .await;
    let binding = r.set_cookie("portcullis_session_login").unwrap();
    let binding_age = binding.max_age().unwrap().whole_seconds();
    assert!(
        binding_age >= 600,
        "binding cookie dies before the code: {binding_age}"
    );
    let code = gw.mail("life@example.com").await.code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    let session = r.set_cookie("portcullis_session").unwrap();
    assert_eq!(session.max_age().unwrap().whole_seconds(), 2 * 86400);
}
