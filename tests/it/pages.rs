//! The sign-in pages as a person meets them: POST-redirect-GET (reloads change nothing), malformed
//! codes cost no attempt, each state with its own heading and a one-click way on, sign-out and
//! "already signed in" pages, the resend countdown, the login hint and branding.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::{enc, unescape, Http, Req, Resp, TestGateway};

/// The challenge id this browser is bound to (from its binding cookie).
fn bound_id(b: &Http) -> String {
    let v = b
        .cookie("portcullis_session_login")
        .expect("binding cookie");
    v.split_once('.').unwrap().0.to_string()
}

/// Starts a sign-in through the form; returns the browser (the 303 followed once).
async fn start(gw: &TestGateway, email: &str, rd: &str) -> Http {
    let b = gw.http();
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", email), ("rd", rd)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), "/.auth/check-email");
    let page = b.follow(&r).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    b
}

/// A 6-digit code that is not `code`.
fn other(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

async fn attempts(gw: &TestGateway, id: &str) -> u32 {
    gw.state()
        .store
        .challenge(id)
        .await
        .unwrap()
        .expect("challenge")
        .attempts
}

/// Waits until the outbox is empty and no mail arrived for a moment; returns the mails to `to`.
async fn mails_settled(gw: &TestGateway, to: &str) -> usize {
    for _ in 0..50 {
        if gw.state().store.outbox_len().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.smtp().mails_to(to).len()
}

fn text(r: &Resp) -> String {
    unescape(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_any_page_of_the_sign_in_creates_no_challenge_and_sends_no_mail() {
    let gw = TestGateway::start().await;
    let b = start(&gw, "reload@example.com", "/after").await;
    let id = bound_id(&b);
    let first = gw.mail("reload@example.com").await;

    // Reloading "Check your email" (a phone switching to the mail app and back).
    for _ in 0..5 {
        let r = b.send(Req::get("/.auth/check-email")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.text().contains("reload@example.com"), "{}", r.text());
        assert!(r.set_cookie("portcullis_session_login").is_none());
    }
    assert_eq!(gw.state().store.challenge_count().await, 1);
    assert_eq!(mails_settled(&gw, "reload@example.com").await, 1);

    // A wrong code: one attempt, the message once; reloads spend nothing more.
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", other(&first.code()))]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/.auth/check-email");
    let page = b.follow(&r).await;
    assert!(
        page.text()
            .contains("That code is not right. 4 attempts left."),
        "{}",
        page.text()
    );
    for _ in 0..3 {
        let r = b.send(Req::get("/.auth/check-email")).await;
        assert_eq!(r.status, StatusCode::OK);
        // The one-shot message is gone; the state (attempts left) stays.
        assert!(!r.text().contains("That code is not right"), "{}", r.text());
        assert!(r.text().contains("4 attempts left."), "{}", r.text());
    }
    assert_eq!(attempts(&gw, &id).await, 1);

    // A resend: one new mail, however often the page is reloaded afterwards.
    let r = b.send(Req::post("/.auth/resend")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(b
        .follow(&r)
        .await
        .text()
        .contains("A new mail is on its way."));
    for _ in 0..3 {
        let r = b.send(Req::get("/.auth/check-email")).await;
        assert!(!r.text().contains("A new mail is on its way"));
    }
    assert_eq!(gw.state().store.challenge_count().await, 1);
    assert_eq!(mails_settled(&gw, "reload@example.com").await, 2);
    let second = gw.mail("reload@example.com").await;

    // The newest code still signs in, and the code is never in a URL or cookie.
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &second.code())]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), gw.url("/after"));
    assert_eq!(gw.state().store.challenge_count().await, 1);
    assert_eq!(mails_settled(&gw, "reload@example.com").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_is_never_carried_to_the_next_page() {
    let gw = TestGateway::start().await;
    let b = start(&gw, "carry@example.com", "/").await;
    let code = gw.mail("carry@example.com").await.code();
    let wrong = other(&code);
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", wrong)]))
        .await;
    assert!(!r.location().contains(wrong));
    for c in r.set_cookies() {
        assert!(!c.value().contains(wrong), "{c}");
        let decoded = base64_payload(c.value());
        assert!(!decoded.contains(wrong), "{decoded}");
    }
}

/// The payload part of a flash cookie, decoded (empty for other cookies).
fn base64_payload(v: &str) -> String {
    use base64::Engine;
    v.split_once('.')
        .and_then(|(p, _)| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_codes_are_refused_without_costing_an_attempt() {
    let gw = TestGateway::start().await;
    let b = start(&gw, "typo@example.com", "/").await;
    let id = bound_id(&b);
    let code = gw.mail("typo@example.com").await.code();
    let malformed = [
        "abcdef",
        "12345",
        "1234567",
        "12a456",
        "",
        "      ",
        "١٢٣٤٥٦",
        "１２３４５６",
        "123 456 7",
        "12.456",
    ];
    for m in malformed {
        let r = b.send(Req::post("/.auth/code").form(&[("code", m)])).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{m:?}");
        let page = b.follow(&r).await;
        assert!(
            page.text().contains(
                "A code has 6 digits. Type the 6 digits from the mail (spaces and dashes are fine); this did not count as an attempt."
            ),
            "{m:?}: {}",
            page.text()
        );
        assert!(!page.text().contains("attempts left"), "{m:?}");
    }
    assert_eq!(attempts(&gw, &id).await, 0);

    // The JSON API the same: 400 `malformed_code`, no attempt.
    let api = gw.api_login("typo2@example.com").await;
    let api_id = api["challenge_id"].as_str().unwrap().to_string();
    let api_code = gw.mail("typo2@example.com").await.code();
    let c = gw.http();
    for m in malformed {
        let r = c
            .send(Req::post("/.auth/api/verify").json(&json!({"challenge_id": api_id, "code": m})))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m:?}");
        assert_eq!(r.error_code(), "malformed_code", "{m:?}");
    }
    assert_eq!(attempts(&gw, &api_id).await, 0);
    // One real wrong code counts (so counting still works) ...
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": api_id, "code": other(&api_code)})),
        )
        .await;
    assert_eq!(r.error_code(), "wrong_code");
    assert_eq!(attempts(&gw, &api_id).await, 1);

    // ... and the right codes still sign in, typed with spaces and dashes.
    let typed = format!("{} {}-{}", &code[..2], &code[2..4], &code[4..]);
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &typed)]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookie("portcullis_session").is_some(), "{typed:?}");
    let r = c
        .send(
            Req::post("/.auth/api/verify").json(&json!({"challenge_id": api_id, "code": api_code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sign_in_has_its_own_page_and_starts_again_with_the_address() {
    let gw = TestGateway::builder()
        .set("login.max_code_attempts", 2)
        .start()
        .await;
    let b = start(&gw, "locked@example.com", "/deep/page?x=1").await;
    let code = gw.mail("locked@example.com").await.code();
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", other(&code))]))
        .await;
    let page = b.follow(&r).await;
    assert!(
        page.text()
            .contains("That code is not right. 1 attempt left."),
        "{}",
        page.text()
    );
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", other(&code))]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.follow(&r).await;
    assert_eq!(page.status, StatusCode::GONE);
    let t = text(&page);
    assert!(t.contains("<h1>Too many wrong codes</h1>"), "{t}");
    assert!(!t.contains("Sign-in link expired"), "{t}");
    // The same on a reload; and no resend is offered (it would not unlock it).
    let again = b.send(Req::get("/.auth/check-email")).await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(!text(&again).contains("/.auth/resend"), "{}", again.text());
    // One click on: the form with the address and the destination filled in.
    let target = gw.url("/deep/page?x=1");
    let start_again = format!(
        "/.auth/login?rd={}&email=locked%40example.com",
        enc(&target)
    );
    assert!(
        t.contains(&format!(
            "<a href=\"{start_again}\" id=\"action\">Start again</a>"
        )),
        "{t}"
    );
    let form = text(&b.send(Req::get(&start_again)).await);
    assert!(form.contains("value=\"locked@example.com\""), "{form}");
    assert!(form.contains(&format!("value=\"{target}\"")), "{form}");
    // Even the right code is refused now.
    let r = b
        .send(Req::post("/.auth/code").form(&[("code", &code)]))
        .await;
    assert!(r.set_cookie("portcullis_session").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_link_in_the_browser_that_asked_says_so_and_starts_again_with_the_address() {
    let gw = TestGateway::start().await;
    let b = start(&gw, "used@example.com", "/").await;
    let mail = gw.mail("used@example.com").await;
    // Confirmed on another device.
    let phone = gw.http();
    let r = phone
        .send(Req::post("/.auth/verify").form(&[("token", &mail.token())]))
        .await;
    assert!(r.set_cookie("portcullis_session").is_some());
    // The first browser's page and its link now say what happened.
    let page = b.send(Req::get("/.auth/check-email")).await;
    assert_eq!(page.status, StatusCode::GONE);
    let t = text(&page);
    assert!(t.contains("<h1>This link was already used</h1>"), "{t}");
    assert!(t.contains("email=used%40example.com"), "{t}");
    let page = b.send(Req::get(&mail.link())).await;
    assert_eq!(page.status, StatusCode::GONE);
    let t = text(&page);
    assert!(t.contains("<h1>This link was already used</h1>"), "{t}");
    assert!(t.contains("email=used%40example.com"), "{t}");
    // A browser without the sign-in learns nothing about the address.
    let t = text(&gw.http().send(Req::get(&mail.link())).await);
    assert!(t.contains("<h1>This link was already used</h1>"), "{t}");
    assert!(!t.contains("used@example.com"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_has_a_confirm_page_and_says_you_are_signed_out() {
    let gw = TestGateway::start().await;
    // Not signed in: no 405, a page saying so.
    let r = gw.http().send(Req::get("/.auth/logout").navigate()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("You are not signed in"), "{}", r.text());

    let b = gw.browser_sign_in("bye@example.com").await;
    let r = b.send(Req::get("/.auth/logout").navigate()).await;
    assert_eq!(r.status, StatusCode::OK);
    let t = text(&r);
    assert!(t.contains("<h1>Sign out?</h1>"), "{t}");
    assert!(t.contains("bye@example.com"), "{t}");
    assert!(
        t.contains("<form method=\"post\" action=\"/.auth/logout\">"),
        "{t}"
    );
    // Opening the page signs nobody out.
    assert_eq!(gw.state().store.session_count().await, 1);

    let r = b.send(Req::post("/.auth/logout")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/.auth/login");
    assert_eq!(gw.state().store.session_count().await, 0);
    let page = b.follow(&r).await;
    let t = text(&page);
    assert!(
        t.contains("<p class=\"ok\" role=\"status\" id=\"notice\">You are signed out.</p>"),
        "{t}"
    );
    assert!(t.contains("name=\"email\""), "{t}");
    // Once: a reload is the plain form.
    let t = text(&b.send(Req::get("/.auth/login")).await);
    assert!(!t.contains("You are signed out"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_while_signed_in_offers_continue_and_another_account() {
    let gw = TestGateway::start().await;
    let b = gw.browser_sign_in("here@example.com").await;
    let r = b
        .send(Req::get("/.auth/login?rd=%2Freports").navigate())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let t = text(&r);
    assert!(t.contains("<h1>You are already signed in</h1>"), "{t}");
    assert!(t.contains("here@example.com"), "{t}");
    assert!(
        t.contains(&format!("href=\"{}\" id=\"continue\"", gw.url("/reports"))),
        "{t}"
    );
    assert!(!t.contains("name=\"email\""), "no email form: {t}");
    // An unsafe rd is not offered as "Continue".
    let t = text(
        &b.send(Req::get("/.auth/login?rd=https%3A%2F%2Fevil.com%2F"))
            .await,
    );
    assert!(!t.contains("evil.com\" id=\"continue\""), "{t}");

    // "Use another account": signs out, back to the form for the same destination.
    let r = b
        .send(Req::post("/.auth/logout").form(&[("rd", "/reports")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/.auth/login?rd=%2Freports");
    let t = text(&b.follow(&r).await);
    assert!(t.contains("You are signed out."), "{t}");
    assert!(t.contains("name=\"rd\" value=\"/reports\""), "{t}");
    assert!(t.contains("name=\"email\" value=\"\""), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_method_not_allowed_and_not_an_admin_have_their_own_words() {
    let gw = TestGateway::start().await;
    let b = gw.http();
    let r = b.send(Req::get("/.auth/nothing-here").navigate()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let t = text(&r);
    assert!(t.contains("<h1>Page not found</h1>"), "{t}");
    assert!(!t.contains("Cannot sign in"), "{t}");

    let r = b
        .send(Req::new(http::Method::PUT, "/.auth/login").navigate())
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let t = text(&r);
    assert!(t.contains("<h1>Method not allowed</h1>"), "{t}");
    assert!(!t.contains("Cannot sign in"), "{t}");

    let user = gw.browser_sign_in("user@example.com").await;
    let r = user.send(Req::get("/.auth/admin").navigate()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let t = text(&r);
    assert!(t.contains("<h1>Administrators only</h1>"), "{t}");
    assert!(
        t.contains("The address user@example.com is not an administrator of this gateway."),
        "{t}"
    );
    assert!(!t.contains("may not access this site"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_sentences_in_pages_and_json() {
    let gw = TestGateway::builder()
        .set("login.max_code_attempts", 2)
        .set("login.resend_cooldown", "1m")
        .start()
        .await;
    let v = gw.api_login("words@example.com").await;
    let code = gw.mail("words@example.com").await.code();
    let c = gw.http();
    let r = c
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": v["challenge_id"], "code": other(&code)})),
        )
        .await;
    assert_eq!(
        r.json()["error"],
        "That code is not right. 1 attempt left.",
        "{}",
        r.text()
    );
    let r = c
        .send(Req::post("/.auth/api/resend").json(&json!({"challenge_id": v["challenge_id"]})))
        .await;
    assert_eq!(
        r.json()["error"],
        "Wait 60 seconds before asking for another mail."
    );
    let r = c
        .send(Req::post("/.auth/api/login").json(&json!({"email": "nope@"})))
        .await;
    assert_eq!(r.json()["error"], "The domain is not valid.");
    // Every JSON error message of these starts with a capital and ends with a full stop.
    for path in ["/.auth/api/session", "/.auth/api/nothing"] {
        let r = c
            .send(Req::get(path).header("accept", "application/json"))
            .await;
        let m = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            m.chars().next().unwrap().is_uppercase() && m.ends_with('.'),
            "{path}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_hint_is_opt_in_and_shown_on_the_form_and_the_check_email_page() {
    let gw = TestGateway::start().await;
    let t = text(&gw.http().send(Req::get("/.auth/login")).await);
    assert!(!t.contains("id=\"hint\""), "{t}");
    let b = start(&gw, "someone@elsewhere.org", "/").await;
    let t = text(&b.send(Req::get("/.auth/check-email")).await);
    assert!(!t.contains("id=\"hint\""), "{t}");

    let gw = TestGateway::builder()
        .set("login.hint", "Use your @example.com address")
        .start()
        .await;
    let t = text(&gw.http().send(Req::get("/.auth/login")).await);
    assert!(
        t.contains("<p class=\"small\" id=\"hint\">Use your @example.com address</p>"),
        "{t}"
    );
    assert!(t.contains("aria-describedby=\"hint\""), "{t}");
    // The same page for an address that may not sign in: the hint is what tells them.
    let b = start(&gw, "someone@elsewhere.org", "/").await;
    let t = text(&b.send(Req::get("/.auth/check-email")).await);
    assert!(t.contains("Use your @example.com address"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resend_button_counts_down_without_javascript_and_its_script_is_allowed_by_hash() {
    let gw = TestGateway::builder()
        .set("login.resend_cooldown", "30s")
        .start()
        .await;
    let b = start(&gw, "wait@example.com", "/").await;
    let r = b.send(Req::get("/.auth/check-email")).await;
    let t = text(&r);
    assert!(
        t.contains("id=\"resend\" data-wait=\"30\" disabled>Send a new mail<span id=\"resend-wait\"> (in 30 seconds)</span>"),
        "{t}"
    );
    // The inline script that counts down is the only script, allowed by its hash.
    let csp = r.header("content-security-policy").unwrap();
    let script = t
        .split("<script>")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .expect("the countdown script");
    let hash = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script.as_bytes()))
    };
    assert!(
        csp.contains(&format!("script-src 'sha256-{hash}';")),
        "{csp}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(t.matches("<script").count(), 1, "{t}");

    // The server's answer follows the clock (a reload without JavaScript shows the time left).
    gw.clock.advance(29);
    let t = text(&b.send(Req::get("/.auth/check-email")).await);
    assert!(t.contains("data-wait=\"1\" disabled"), "{t}");
    assert!(t.contains("(in 1 second)"), "{t}");
    gw.clock.advance(1);
    let t = text(&b.send(Req::get("/.auth/check-email")).await);
    assert!(
        t.contains("id=\"resend\" data-wait=\"0\">Send a new mail"),
        "{t}"
    );
    assert!(!t.contains("<script"), "{t}");

    // A resend starts the wait again, and an early click is refused with the seconds left.
    let r = b.send(Req::post("/.auth/resend")).await;
    let t = text(&b.follow(&r).await);
    assert!(t.contains("A new mail is on its way."), "{t}");
    assert!(t.contains("data-wait=\"30\" disabled"), "{t}");
    gw.clock.advance(10);
    let r = b.send(Req::post("/.auth/resend")).await;
    assert_eq!(r.header("retry-after").as_deref(), Some("20"));
    let t = text(&b.follow(&r).await);
    assert!(
        t.contains("Wait 20 seconds before asking for another mail."),
        "{t}"
    );
    assert!(t.contains("data-wait=\"20\" disabled"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branding_shows_on_every_page_and_in_the_mail() {
    let gw = TestGateway::builder()
        .set(
            "branding",
            json!({
                "name": "Acme tools",
                "logo": "https://cdn.example.com/brand/logo.png",
                "accent": "#0b6e4f",
                "support": "help@example.com",
            }),
        )
        .start()
        .await;
    let b = gw.http();
    let brand = "<span>Acme tools</span>";
    let logo = "<img src=\"https://cdn.example.com/brand/logo.png\" alt=\"\">";
    let check = |r: &Resp, what: &str| {
        let t = text(r);
        assert!(t.contains(brand), "{what}: {t}");
        assert!(t.contains(logo), "{what}: {t}");
        assert!(t.contains(" · Acme tools</title>"), "{what}: {t}");
        assert!(!t.contains("Portcullis"), "{what}: {t}");
        assert!(
            t.contains(":root{--accent:#0b6e4f;--on-accent:#fff}"),
            "{what}: {t}"
        );
        assert!(
            t.contains("Need help? <a href=\"mailto:help@example.com\">help@example.com</a>"),
            "{what}: {t}"
        );
        let csp = r.header("content-security-policy").unwrap();
        assert!(
            csp.contains("img-src 'self' data: https://cdn.example.com;"),
            "{what}: {csp}"
        );
    };
    check(&b.send(Req::get("/.auth/login")).await, "login");
    check(&b.send(Req::get("/.auth/nothing").navigate()).await, "404");
    check(&b.send(Req::get("/.auth/logout")).await, "logout");
    let r = b
        .send(Req::post("/.auth/login").form(&[("email", "brand@example.com")]))
        .await;
    check(&b.follow(&r).await, "check-email");
    let mail = gw.mail("brand@example.com").await;
    check(&gw.http().send(Req::get(&mail.link())).await, "confirm");
    assert!(text(&gw.http().send(Req::get(&mail.link())).await)
        .contains("Sign in to <strong id=\"confirm-site\">Acme tools</strong>"));
    // The mail names the site, not the host, in the accent colour, with the logo and support.
    let html = unescape(&mail.html());
    assert!(html.contains("Sign in to Acme tools"), "{html}");
    assert!(html.contains("background:#0b6e4f"), "{html}");
    assert!(
        html.contains("https://cdn.example.com/brand/logo.png"),
        "{html}"
    );
    assert!(html.contains("mailto:help@example.com"), "{html}");
    let text_mail = mail.text();
    assert!(text_mail.contains("sign in to Acme tools"), "{text_mail}");
    assert!(
        text_mail.contains("Need help? help@example.com"),
        "{text_mail}"
    );
    // Pages made on the proxied path too (whoami).
    let b = gw.browser_sign_in("brand2@example.com").await;
    check(&b.send(Req::get("/").navigate()).await, "whoami");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logo_file_is_inlined_and_pages_fall_back_to_the_default_brand() {
    let gw = TestGateway::start().await;
    let t = text(&gw.http().send(Req::get("/.auth/login")).await);
    assert!(t.contains("<span>Portcullis</span>"), "{t}");
    assert!(t.contains("<svg"), "{t}");
    assert!(!t.contains("--on-accent:#fff}@media"), "{t}");
    assert!(!t.contains("id=\"support\""), "{t}");
    let mail = {
        let b = gw.http();
        b.send(Req::post("/.auth/login").form(&[("email", "plain@example.com")]))
            .await;
        gw.mail("plain@example.com").await
    };
    // Without a name, mails keep naming the host.
    assert!(
        mail.text().contains("sign in to 127.0.0.1 as"),
        "{}",
        mail.text()
    );

    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.png");
    std::fs::write(&logo, b"\x89PNG\r\n\x1a\nfake").unwrap();
    let gw = TestGateway::builder()
        .set("branding.logo", logo.display().to_string())
        .start()
        .await;
    let r = gw.http().send(Req::get("/.auth/login")).await;
    let t = text(&r);
    assert!(
        t.contains("<img src=\"data:image/png;base64,iVBORw0KGgpmYWtl\" alt=\"\">"),
        "{t}"
    );
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("img-src 'self' data:;"), "{csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_templates_can_be_replaced_and_are_reloaded() {
    let mut gw = TestGateway::builder().config_file().start().await;
    let pages = gw.dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    let login = pages.join("login.html");
    let ours = |v: &str| {
        format!("{{% extends \"base.html\" %}}{{% block content %}}<h1 id=\"ours\">{v} for {{{{ site }}}}</h1><form method=\"post\" action=\"/.auth/login\"><input name=\"email\"></form>{{% endblock %}}")
    };
    std::fs::write(&login, ours("version one")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = pages.display().to_string();
    gw.write_config(|cfg| {
        cfg["branding"] = json!({"name": "Acme", "templates_dir": dir});
    });
    let gw = &gw;
    let login_page = || async move { text(&gw.http().send(Req::get("/.auth/login")).await) };
    crate::support::eventually(
        crate::support::WAIT,
        "the page template was never used",
        || async move {
            login_page()
                .await
                .contains("<h1 id=\"ours\">version one for Acme</h1>")
                .then_some(())
        },
    )
    .await;
    // Other pages keep the built-in template (with the branding).
    let b = start(gw, "tpl@example.com", "/").await;
    let t = text(&b.send(Req::get("/.auth/check-email")).await);
    assert!(t.contains("<h1>Check your email</h1>"), "{t}");
    assert!(t.contains("<span>Acme</span>"), "{t}");

    // Editing the file is enough; a broken one is refused and the running one stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&login, ours("version two")).unwrap();
    crate::support::eventually(
        crate::support::WAIT,
        "the edited template was never used",
        || async move {
            login_page()
                .await
                .contains("version two for Acme")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&login, "{% if %}").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(login_page().await.contains("version two for Acme"));
}
