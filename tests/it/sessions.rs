//! Sessions users and admins can see and end: `/.auth/sessions`, `/.auth/admin`, the request
//! details in the sign-in mail, and `portcullis sessions list|revoke` through the control socket.

use std::os::unix::fs::PermissionsExt;

use http::StatusCode;
use serde_json::json;

use crate::support::process::Setup;
use crate::support::{unescape, Http, Req, TestGateway};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CURL: &str = "curl/8.5.0";

/// Signs in through the HTML pages with a User-Agent; returns the browser.
async fn browser(gw: &TestGateway, email: &str, ua: &str) -> Http {
    let b = gw.http();
    let r = b
        .send(
            Req::post("/.auth/login")
                .header("user-agent", ua)
                .form(&[("email", email), ("rd", "/")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let code = gw.mail(email).await.code();
    let r = b
        .send(
            Req::post("/.auth/code")
                .header("user-agent", ua)
                .form(&[("code", &code)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    b
}

fn bearer(gw: &TestGateway, token: &str) -> Http {
    let c = gw.http();
    c.set_cookie("portcullis_session", token);
    c
}

async fn session_ok(c: &Http) -> bool {
    let r = c.send(Req::get("/.auth/api/session")).await;
    match r.status {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => false,
        s => panic!("unexpected {s}: {}", r.text()),
    }
}

/// A row of the sessions page: (session id, row text).
fn rows(page: &str) -> Vec<(String, String)> {
    let page = unescape(page);
    page.split("<tr>")
        .filter_map(|row| {
            let (_, rest) = row.split_once("name=\"id\" value=\"")?;
            let id: String = rest.chars().take_while(|c| *c != '"').collect();
            Some((id, row.to_string()))
        })
        .collect()
}

/// A form POST from the gateway's own pages.
fn post_form(path: &str, gw: &TestGateway, fields: &[(&str, &str)]) -> Req {
    Req::post(path).header("origin", &gw.base).form(fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_and_sign_out_their_own_sessions() {
    let gw = TestGateway::start().await;
    let firefox = browser(&gw, "bob@example.com", FIREFOX).await;
    let curl = browser(&gw, "bob@example.com", CURL).await;
    let carol = bearer(&gw, &gw.sign_in("carol@example.com").await);

    let r = firefox.send(Req::get("/.auth/sessions")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(unescape(&page).contains("bob@example.com"));
    assert!(
        !page.contains("carol@example.com"),
        "another user's sessions are listed"
    );
    let list = rows(&page);
    let ids: Vec<&str> = list
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| *id != "all")
        .collect();
    assert_eq!(ids.len(), 2, "two sign-ins, two rows:\n{page}");
    for id in &ids {
        assert_eq!(id.len(), 12, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    let current: Vec<&(String, String)> = list
        .iter()
        .filter(|(_, row)| row.contains("(this browser)"))
        .collect();
    assert_eq!(
        current.len(),
        1,
        "exactly one row is the current one:\n{page}"
    );
    assert!(
        current[0].1.contains("Firefox on Linux"),
        "{}",
        current[0].1
    );
    let other = list
        .iter()
        .find(|(id, row)| id != "all" && !row.contains("(this browser)"))
        .unwrap();
    assert!(other.1.contains("curl"), "{}", other.1);
    assert!(other.1.contains("127.0.0.1"), "{}", other.1);
    let (firefox_id, curl_id) = (current[0].0.clone(), other.0.clone());

    // Signing out the other session ends exactly that one.
    let r = firefox
        .send(post_form(
            "/.auth/sessions/revoke",
            &gw,
            &[("id", &curl_id)],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), "/.auth/sessions");
    assert!(!session_ok(&curl).await, "the revoked session still works");
    assert!(session_ok(&firefox).await);
    assert!(session_ok(&carol).await);
    let page = firefox.send(Req::get("/.auth/sessions")).await.text();
    let left: Vec<String> = rows(&page)
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id != "all")
        .collect();
    assert_eq!(left, vec![firefox_id]);

    // Unknown ids and other users' ids revoke nothing.
    let carol_id = {
        let r = carol.send(Req::get("/.auth/sessions")).await;
        rows(&r.text())[0].0.clone()
    };
    for id in ["000000000000", carol_id.as_str(), ""] {
        let r = firefox
            .send(post_form("/.auth/sessions/revoke", &gw, &[("id", id)]))
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{id}");
    }
    assert!(session_ok(&firefox).await && session_ok(&carol).await);

    // A cross-origin POST is refused and changes nothing.
    let r = firefox
        .send(
            Req::post("/.auth/sessions/revoke")
                .header("origin", "https://evil.example")
                .form(&[("id", "all")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(session_ok(&firefox).await);

    // "Sign out everywhere": every session of bob, then the login page.
    let api = bearer(&gw, &gw.sign_in("bob@example.com").await);
    let r = firefox
        .send(post_form("/.auth/sessions/revoke", &gw, &[("id", "all")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/.auth/login");
    let removal = r
        .set_cookie("portcullis_session")
        .expect("the cookie is cleared");
    assert!(removal.value().is_empty());
    let page = firefox.follow(&r).await.text();
    assert!(
        page.contains("You are signed out on every device."),
        "{page}"
    );
    assert!(!session_ok(&firefox).await);
    assert!(!session_ok(&api).await);
    assert!(session_ok(&carol).await, "another user was signed out");
    assert_eq!(gw.state().store.session_count().await, 1);

    // Signed out: the page sends you to sign in and back.
    let r = firefox.send(Req::get("/.auth/sessions")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location(),
        format!(
            "{}/.auth/login?rd={}",
            gw.base,
            crate::support::enc(&gw.url("/.auth/sessions"))
        )
    );
    let r = gw
        .http()
        .send(post_form("/.auth/sessions/revoke", &gw, &[("id", "all")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(gw.state().store.session_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_every_session_and_recent_events_and_revoke_by_user() {
    let gw = TestGateway::builder()
        .set("admins", json!(["Root@Example.com"]))
        .start()
        .await;
    let bob1 = bearer(&gw, &gw.sign_in("bob@example.com").await);
    let bob2 = browser(&gw, "bob@example.com", FIREFOX).await;
    let carol = bearer(&gw, &gw.sign_in("carol@example.com").await);
    let root = browser(&gw, "root@example.com", CURL).await;
    // A wrong code, for the events list.
    let c = gw.api_login("carol@example.com").await;
    let code = gw.mail("carol@example.com").await.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = gw
        .http()
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": c["challenge_id"], "code": wrong})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Not for users.
    let r = bob1.send(Req::get("/.auth/admin").navigate()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = unescape(&r.text());
    assert!(page.contains("bob@example.com"), "{page}");
    assert!(!page.contains("carol@example.com"), "{page}");
    let r = bob1
        .send(post_form(
            "/.auth/admin/revoke",
            &gw,
            &[("email", "carol@example.com")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(session_ok(&carol).await, "a non-admin revoked someone");
    let r = gw.http().send(Req::get("/.auth/admin")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().contains("/.auth/login?rd="));

    // The admin sees everyone's sessions and the recent security events.
    let r = root.send(Req::get("/.auth/admin")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = unescape(&r.text());
    assert!(page.contains("4 active sessions"), "{page}");
    for who in ["bob@example.com", "carol@example.com", "root@example.com"] {
        assert!(
            page.contains(&format!("<td>{who}</td>")),
            "{who} missing:\n{page}"
        );
    }
    assert!(page.contains("Firefox on Linux"), "{page}");
    let events = page.split("id=\"events\"").nth(1).expect("no events table");
    assert!(events.contains("<td>sign_in</td>"), "{events}");
    assert!(events.contains("<td>code_failed</td>"), "{events}");
    assert!(events.contains("<td>carol@example.com</td>"), "{events}");

    // Cross-origin revokes are refused.
    let r = root
        .send(
            Req::post("/.auth/admin/revoke")
                .header("origin", "https://evil.example")
                .form(&[("email", "carol@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(session_ok(&carol).await);

    // Revoke by user (any case): every session of bob, nobody else's.
    let r = root
        .send(post_form(
            "/.auth/admin/revoke",
            &gw,
            &[("email", "Bob@Example.COM")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), "/.auth/admin?revoked=2");
    assert!(!session_ok(&bob1).await && !session_ok(&bob2).await);
    assert!(session_ok(&carol).await && session_ok(&root).await);
    let page = unescape(&root.send(Req::get(&r.location())).await.text());
    assert!(page.contains("Revoked 2 session(s)."), "{page}");
    assert!(page.contains("2 active sessions"), "{page}");
    let listed = page
        .split("id=\"sessions\"")
        .nth(1)
        .and_then(|p| p.split("id=\"events\"").next())
        .expect("no sessions table");
    assert!(
        !listed.contains("bob@example.com"),
        "bob is still listed:\n{listed}"
    );
    assert!(listed.contains("carol@example.com"), "{listed}");
    assert!(page.contains("<td>revoke</td>"), "{page}");

    let r = root
        .send(post_form(
            "/.auth/admin/revoke",
            &gw,
            &[("email", "not an address")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_mail_names_the_requesting_ip_and_browser() {
    let gw = TestGateway::builder()
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let r = gw
        .http()
        .send(
            Req::post("/.auth/login")
                .header("user-agent", FIREFOX)
                .form(&[("email", "dora@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mail = gw.mail("dora@example.com").await;
    let text = mail.text();
    // The device in parsed form, never the raw User-Agent text.
    assert!(text.contains("from 127.0.0.1 (Firefox on Linux)"), "{text}");
    assert!(!text.contains(FIREFOX), "{text}");
    assert!(
        unescape(&mail.html()).contains("Firefox on Linux"),
        "{}",
        mail.html()
    );
    assert!(unescape(&mail.html()).contains("127.0.0.1"));

    // Behind a trusted proxy the client's address is named, and the session remembers it.
    let b = gw.http();
    let r = b
        .send(
            Req::post("/.auth/login")
                .header("user-agent", CURL)
                .header("x-forwarded-for", "203.0.113.9")
                .form(&[("email", "eve@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let mail = gw.mail("eve@example.com").await;
    assert!(
        mail.text().contains("from 203.0.113.9 (curl)"),
        "{}",
        mail.text()
    );
    let r = b
        .send(
            Req::post("/.auth/code")
                .header("user-agent", CURL)
                .header("x-forwarded-for", "203.0.113.9")
                .form(&[("code", &mail.code())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = b.send(Req::get("/.auth/sessions")).await.text();
    assert!(page.contains("203.0.113.9"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_and_revokes_sessions_of_the_running_server() {
    let setup = Setup::new();
    let mut s = setup.serve(&setup.base(), &[]).await;
    let bob1 = setup.sign_in("bob@example.com").await;
    let bob2 = setup.sign_in("bob@example.com").await;
    let carol = setup.sign_in("carol@example.com").await;
    let ok = |token: String| {
        let http = s.http();
        async move {
            let r = http
                .send(
                    Req::get("/.auth/api/session")
                        .header("authorization", &format!("Bearer {token}")),
                )
                .await;
            r.status == StatusCode::OK
        }
    };

    let sock = setup.dir.path().join("data/control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control.sock mode {mode:o}");

    let out = setup.sessions_cli(&["list"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert_eq!(stdout.matches("bob@example.com").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("carol@example.com").count(), 1, "{stdout}");
    assert!(stdout.contains("127.0.0.1"), "{stdout}");
    assert!(stdout.contains("3 session(s)"), "{stdout}");
    // Columns line up: every row's LAST SEEN and DEVICE start where the header's do.
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.ends_with("session(s)"))
        .collect();
    let header = lines[0];
    for col in ["EMAIL", "IP", "CREATED", "LAST SEEN", "DEVICE"] {
        let at = header.find(col).unwrap();
        for row in &lines[1..] {
            let before = &row[..at];
            assert!(
                before.ends_with("  ") && !row[at..].starts_with(' '),
                "column {col} misaligned:\n{stdout}"
            );
        }
    }

    let out = setup.sessions_cli(&["list", "--email", "Carol@Example.com"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    assert!(!stdout.contains("bob@example.com"), "{stdout}");
    assert!(
        stdout.contains("carol@example.com") && stdout.contains("1 session(s)"),
        "{stdout}"
    );

    let out = setup.sessions_cli(&["revoke", "--email", "bob@example.com"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("revoked 2"), "{stdout}");
    assert!(!ok(bob1).await && !ok(bob2).await, "bob is still signed in");
    assert!(ok(carol.clone()).await);
    let out = setup.sessions_cli(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 session(s)"));

    let out = setup.sessions_cli(&["revoke", "--email", "not an address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    let out = setup.sessions_cli(&["revoke"]);
    assert!(!out.status.success(), "revoke without --email");
    assert!(ok(carol).await);

    // With no server running the CLI says so and fails.
    s.stop();
    let out = setup.sessions_cli(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the running server"),
        "{stderr}"
    );
    assert!(stderr.contains("portcullis serve"), "{stderr}");
    assert!(out.stdout.is_empty());
    let out = setup.sessions_cli(&["revoke", "--email", "carol@example.com"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_403_page_names_the_signed_in_address_exactly() {
    let gw = TestGateway::builder()
        .set("admins", json!(["root@example.com"]))
        .start()
        .await;
    let bob = bearer(&gw, &gw.sign_in("bob@example.com").await);
    let r = bob.send(Req::get("/.auth/admin").navigate()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let page = unescape(&r.text());
    assert!(page.contains("bob@example.com"), "{page}");
}
