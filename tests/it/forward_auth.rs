//! Forward-auth: `/.auth/check/nginx` as nginx asks it (`X-Original-URL`), `/.auth/check/forward`
//! as Traefik/Caddy ask it (`X-Forwarded-Method/-Proto/-Host/-Uri`), and the shipped snippets in
//! front of real nginx and Caddy: redirect to login, sign-in through the proxy, identity,
//! WebSockets. Attacks on all of this live in `bypass.rs`.

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::jwt::{jwks, verify, JWT_HEADER};
use crate::support::proxies::{self, Proxy, APP_HOST};
use crate::support::upstream::echoed;
use crate::support::{enc, free_port, unescape, Http, Req, Resp, TestGateway, Upstream, WAIT};

/// A gateway that trusts loopback proxies, with routes for `app.example.com` (`/public/` public),
/// `admin.example.com` (alice only) and `127.0.0.1` (`/public/` public).
async fn gateway(trusted: bool) -> (TestGateway, Upstream) {
    let up = Upstream::start().await;
    let trusted = if trusted {
        json!(["127.0.0.1/32"])
    } else {
        json!([])
    };
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([
                {"host": "app.example.com", "upstream": up.url, "public_paths": ["/public/"]},
                {
                    "host": "admin.example.com",
                    "upstream": up.url,
                    "access": {"allowed_emails": ["alice@example.com"], "allowed_domains": []},
                },
                {"host": "127.0.0.1", "upstream": up.url, "public_paths": ["/public/"]},
                {"host": "status.example.com", "upstream": up.url, "access": {"public": true}},
            ]),
        )
        .set("trusted_proxies", trusted)
        .start()
        .await;
    (gw, up)
}

/// The legacy endpoint (X-Forwarded-* family only).
fn check() -> Req {
    Req::get("/.auth/check")
}

/// Traefik/Caddy style (`/.auth/check/forward`): the original request in `X-Forwarded-*`.
fn fwd(method: &str, proto: &str, host: &str, uri: &str) -> Req {
    fwd_at("/.auth/check/forward", method, proto, host, uri)
}

fn fwd_at(endpoint: &str, method: &str, proto: &str, host: &str, uri: &str) -> Req {
    Req::get(endpoint)
        .header("x-forwarded-method", method)
        .header("x-forwarded-proto", proto)
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", uri)
}

/// nginx style (`/.auth/check/nginx`): the original request in `X-Original-URL`.
fn orig(url: &str) -> Req {
    Req::get("/.auth/check/nginx")
        .header("x-original-url", url)
        .header("x-original-method", "GET")
}

fn login_for(gw: &TestGateway, original: &str) -> String {
    format!("{}/.auth/login?rd={}", gw.base, enc(original))
}

async fn with_session(gw: &TestGateway, email: &str) -> Http {
    let token = gw.sign_in(email).await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    c
}

fn assert_identity(r: &Resp, email: &str) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for h in ["x-forwarded-email", "x-forwarded-user"] {
        let all: Vec<_> = r.headers.get_all(h).iter().collect();
        assert_eq!(all.len(), 1, "{h}: {all:?}");
        assert_eq!(all[0], email, "{h}");
    }
}

fn assert_anonymous_401(r: &Resp) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.header("x-forwarded-email").is_none());
    assert!(r.header("x-forwarded-user").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_style_check_answers_401_with_the_login_location() {
    let (gw, up) = gateway(true).await;
    let anon = gw.http();
    let original = "http://app.example.com/dash?x=1&y=a%20b";
    for req in [
        orig(original).navigate(),
        orig(original).header("accept", "text/html,*/*"),
    ] {
        let r = anon.send(req).await;
        assert_anonymous_401(&r);
        // nginx turns the 401 of a browser navigation into a redirect itself, with this Location.
        assert_eq!(r.location(), login_for(&gw, original));
    }
    // API calls get a plain 401: no Location, so nginx passes the 401 on.
    for req in [
        orig(original),
        orig(original).header("accept", "application/json"),
    ] {
        let r = anon.send(req).await;
        assert_anonymous_401(&r);
        assert!(r.header("location").is_none(), "API 401 carries a Location");
    }

    let bob = with_session(&gw, "bob@example.com").await;
    assert_identity(&bob.send(orig(original)).await, "bob@example.com");
    // The policy of the original host applies: admin is alice's only.
    let r = bob.send(orig("https://admin.example.com/users")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "not_allowed");
    assert!(r.header("x-forwarded-email").is_none());
    let alice = with_session(&gw, "alice@example.com").await;
    assert_identity(
        &alice.send(orig("https://admin.example.com/users")).await,
        "alice@example.com",
    );
    // Host matching ignores case and port here too.
    assert_identity(
        &alice
            .send(orig("https://ADMIN.example.com:8443/users"))
            .await,
        "alice@example.com",
    );

    // Public paths of the original URI need no session; climbing out of them does.
    let r = anon
        .send(orig("http://app.example.com/public/logo.png"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Present and empty: a proxy copying it sends the app an empty identity, not a placeholder.
    assert_eq!(r.header("x-forwarded-email").as_deref(), Some(""));
    for url in [
        "http://app.example.com/public/../secret",
        "http://app.example.com/public/%2e%2e/secret",
        "http://app.example.com/publicity",
    ] {
        assert_anonymous_401(&anon.send(orig(url)).await);
    }
    // An ambiguous path (hidden separator) is refused (400, 401 or 403: never a 200).
    let r = anon
        .send(orig("http://app.example.com/public/..%2fsecret"))
        .await;
    assert!(
        matches!(r.status.as_u16(), 400 | 401 | 403),
        "{}: {}",
        r.status,
        r.text()
    );
    assert!(r.header("x-forwarded-email").is_none());
    // A public route needs no session; with one, the identity is still passed on.
    let r = anon.send(orig("http://status.example.com/anything")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-forwarded-email").as_deref(), Some(""));
    assert_identity(
        &bob.send(orig("http://status.example.com/anything")).await,
        "bob@example.com",
    );
    // A host no route serves.
    let r = bob.send(orig("http://unknown.example.org/")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.header("x-forwarded-email").is_none());
    // The check forwards nothing.
    assert!(up.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_style_check_redirects_navigations_and_401s_api_calls() {
    let (gw, _up) = gateway(true).await;
    let anon = gw.http();
    let original = "https://app.example.com/dash?x=1";
    let fw = || fwd("GET", "https", "app.example.com", "/dash?x=1");

    let r = anon.send(fw().navigate()).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert_eq!(r.location(), login_for(&gw, original));
    let r = anon.send(fw().header("accept", "text/html")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.location(), login_for(&gw, original));
    let r = anon.send(fw().header("sec-fetch-mode", "navigate")).await;
    assert_eq!(r.status, StatusCode::FOUND);

    let r = anon.send(fw().header("accept", "application/json")).await;
    assert_anonymous_401(&r);
    assert_eq!(r.error_code(), "unauthenticated");
    let r = anon
        .send(
            fw().header("sec-fetch-mode", "cors")
                .header("accept", "text/html"),
        )
        .await;
    assert_anonymous_401(&r);
    // A POST is never redirected, even from a navigation.
    let r = anon
        .send(fwd("POST", "https", "app.example.com", "/form").navigate())
        .await;
    assert_anonymous_401(&r);

    let bob = with_session(&gw, "bob@example.com").await;
    assert_identity(&bob.send(fw().navigate()).await, "bob@example.com");
    let r = bob
        .send(fwd("GET", "https", "admin.example.com", "/").navigate())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("x-forwarded-email").is_none());
    assert!(r.header("location").is_none());

    let r = anon
        .send(fwd("GET", "https", "app.example.com", "/public/app.js"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = anon
        .send(fwd("GET", "https", "app.example.com", "/public/../admin").navigate())
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let r = anon
        .send(fwd(
            "GET",
            "https",
            "app.example.com",
            "//public/%2e%2e/admin",
        ))
        .await;
    assert_anonymous_401(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_original_requests_fail_closed() {
    let (gw, _up) = gateway(true).await;
    let bob = with_session(&gw, "bob@example.com").await;
    // Sanity: the same session passes with well-formed headers.
    assert_identity(
        &bob.send(orig("http://app.example.com/ok")).await,
        "bob@example.com",
    );
    let broken = [
        orig("not a url"),
        orig("/relative/path"),
        orig("ftp://app.example.com/file"),
        orig("http://"),
        orig(""),
        fwd("GET", "https", "app.example.com", "dash"),
        fwd(
            "GET",
            "https",
            "app.example.com",
            "http://app.example.com/public/x",
        ),
        fwd("GET", "https", "app.example.com", ""),
        fwd("GET", "ftp", "app.example.com", "/dash"),
        fwd("GET", "https", "evil.com/x", "/dash"),
        fwd("GET", "https", "a@app.example.com", "/dash"),
        fwd("GET", "https", "app example.com", "/dash"),
        fwd("GET", "https", "app.example.com", "/a b"),
        check().header("x-forwarded-uri", "public/x"),
    ];
    for (i, req) in broken.into_iter().enumerate() {
        let r = bob.send(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "case {i}: {}", r.text());
        assert_anonymous_401(&r);
        assert_eq!(r.error_code(), "unauthenticated", "case {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_of_untrusted_peers_are_ignored() {
    let (mut gw, _up) = gateway(true).await;
    let anon = gw.http();
    let spoofs = |port: u16| {
        vec![
            fwd("GET", "http", "127.0.0.1", "/public/x"),
            fwd_at("/.auth/check", "GET", "http", "127.0.0.1", "/public/x"),
            fwd("GET", "http", "app.example.com", "/public/x"),
            orig(&format!("http://127.0.0.1:{port}/public/x")),
            orig("http://app.example.com/public/x"),
        ]
    };
    // From a trusted peer these name a public path: 200.
    for (i, req) in spoofs(gw.port).into_iter().enumerate() {
        assert_eq!(anon.send(req).await.status, StatusCode::OK, "case {i}");
    }

    gw.restart_with(|cfg| cfg["trusted_proxies"] = json!([]))
        .await;
    let anon = gw.http();
    for (i, req) in spoofs(gw.port).into_iter().enumerate() {
        let r = anon.send(req.navigate()).await;
        // 302, or 401 (with or without a Location: nginx builds the redirect itself).
        assert!(
            matches!(r.status.as_u16(), 302 | 401),
            "case {i}: {} {}",
            r.status,
            r.text()
        );
        // The check is about the request itself: its own host and `/`.
        if let Some(l) = r.header("location") {
            assert_eq!(l, login_for(&gw, &format!("{}/", gw.base)), "case {i}");
        }
    }
    for req in spoofs(gw.port) {
        assert_anonymous_401(&anon.send(req).await);
    }
    // An untrusted peer's X-Original-URL does not pick another route's policy either (admin is
    // alice's only): the request's own host decides (the global policy lets bob in there), or
    // the nginx endpoint, having no original request it may believe, fails closed.
    let bob = with_session(&gw, "bob@example.com").await;
    let spoof =
        |endpoint: &str| Req::get(endpoint).header("x-original-url", "http://admin.example.com/");
    assert_identity(&bob.send(spoof("/.auth/check")).await, "bob@example.com");
    let r = bob.send(spoof("/.auth/check/nginx")).await;
    match r.status {
        StatusCode::OK => assert_identity(&r, "bob@example.com"),
        _ => assert_anonymous_401(&r),
    }
}

// ---------------------------------------------------------------------------------------------
// Real nginx and Caddy with the shipped snippets
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nginx,
    Caddy,
}

/// The echo app behind a real proxy that asks the gateway; public_url is the site the proxy
/// serves (`http://app.example.com`). Clients connect to the proxy's port and send that Host.
struct Stack {
    gw: TestGateway,
    proxy: Proxy,
    /// `http://app.example.com`: public_url, and what the proxies describe the original URL with.
    site: String,
}

impl Stack {
    /// `None` when the proxy is not installed (the test is skipped).
    async fn start(kind: Kind) -> Option<Stack> {
        let port = free_port();
        let site = format!("http://{APP_HOST}");
        let gw = TestGateway::builder()
            .echo_upstream()
            .public_url(&site)
            .set("trusted_proxies", json!(["127.0.0.1/32"]))
            .set("headers.jwt", "X-Portcullis-Jwt-Assertion")
            .start()
            .await;
        let app: u16 = gw
            .upstream()
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let proxy = match kind {
            Kind::Nginx => proxies::nginx(port, gw.port, app).await?,
            Kind::Caddy => proxies::caddy(port, gw.port, app).await?,
        };
        Some(Stack { gw, proxy, site })
    }

    fn browser(&self) -> Http {
        Http::new(&self.proxy.base)
    }

    /// `req` for the site: `Host: app.example.com`; an absolute URL of the site becomes its path.
    fn at(&self, req: impl FnOnce(&str) -> Req, url: &str) -> Req {
        req(url.strip_prefix(self.site.as_str()).unwrap_or(url)).header("host", APP_HOST)
    }

    /// A WebSocket handshake for `/ws` on the site, through the proxy.
    fn ws_request(&self, cookie: Option<&str>) -> http::Request<()> {
        let url = format!("ws://127.0.0.1:{}/ws", self.proxy.port);
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("host", APP_HOST.parse().unwrap());
        if let Some(c) = cookie {
            req.headers_mut().insert("cookie", c.parse().unwrap());
        }
        req
    }

    /// Context for failure messages.
    fn logs(&self) -> String {
        format!("--- {} log ---\n{}", self.proxy.name, self.proxy.log_text())
    }
}

/// Unauthenticated navigation → login page through the proxy → form → mailed code → session →
/// the app gets exactly one identity, not the client's.
async fn full_sign_in(kind: Kind) {
    let Some(s) = Stack::start(kind).await else {
        return;
    };
    let base = s.site.clone();
    let b = s.browser();
    let original = format!("{base}/dash?x=1");

    let r = b.send(s.at(Req::get, "/dash?x=1").navigate()).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}\n{}", r.text(), s.logs());
    let login = r.location();
    assert_eq!(login, format!("{base}/.auth/login?rd={}", enc(&original)));
    assert!(s.gw.upstream().seen().is_empty(), "{}", s.logs());

    // The login page is served by the gateway through the proxy.
    let r = b.send(s.at(Req::get, &login)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", s.logs());
    assert!(
        unescape(&r.text()).contains(&format!("value=\"{original}\"")),
        "{}",
        r.text()
    );

    let r = b
        .send(
            s.at(Req::post, "/.auth/login")
                .header("origin", &base)
                .form(&[("email", "alice@example.com"), ("rd", &original)]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "{}\n{}",
        r.text(),
        s.logs()
    );
    assert_eq!(r.location(), "/.auth/check-email");
    let r = b.send(s.at(Req::get, "/.auth/check-email")).await;
    assert!(r.text().contains("Check your email"), "{}", r.text());
    let mail = s.gw.mail("alice@example.com").await;
    // The mailed link points at the site (public_url), and the mail names the client.
    assert!(mail
        .link()
        .starts_with(&format!("{base}/.auth/verify?token=")));
    let r = b
        .send(
            s.at(Req::post, "/.auth/code")
                .header("origin", &base)
                .form(&[("code", &mail.code())]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "{}\n{}",
        r.text(),
        s.logs()
    );
    assert_eq!(r.location(), original);
    assert!(b.cookie("portcullis_session").is_some());

    let r = b
        .send(
            s.at(Req::get, "/dash?x=1")
                .navigate()
                .header("x-forwarded-email", "evil@x.com")
                .header("x-forwarded-user", "evil@x.com")
                .header("x-portcullis-jwt-assertion", "forged"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text(), s.logs());
    assert_eq!(r.header("x-upstream").as_deref(), Some("echo"));
    let v = r.json();
    assert_eq!(v["uri"], "/dash?x=1");
    assert_eq!(
        echoed(&v, "x-forwarded-email"),
        ["alice@example.com"],
        "{v}"
    );
    assert_eq!(echoed(&v, "x-forwarded-user"), ["alice@example.com"], "{v}");
    let jwt = echoed(&v, JWT_HEADER);
    assert_eq!(jwt.len(), 1, "{v}");
    assert_ne!(jwt[0], "forged");
    let claims = verify(&jwks(&s.gw.base).await, &jwt[0], APP_HOST, &base)
        .unwrap_or_else(|e| panic!("{kind:?}: the assertion does not verify: {e}"));
    assert_eq!(claims.email, "alice@example.com");

    // Signing out through the proxy ends it.
    let r = b
        .send(s.at(Req::post, "/.auth/logout").header("origin", &base))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let r = b.send(s.at(Req::get, "/after-logout").navigate()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.location().starts_with(&format!("{base}/.auth/login?rd=")));
    assert!(s.gw.upstream().seen_path("/after-logout").is_empty());
}

/// An API call without a session gets the gateway's 401, not a redirect.
async fn api_call_gets_401(kind: Kind) {
    let Some(s) = Stack::start(kind).await else {
        return;
    };
    let b = s.browser();
    for req in [
        s.at(Req::get, "/api/items")
            .header("accept", "application/json"),
        s.at(Req::post, "/api/items")
            .header("content-type", "application/json")
            .body("{}"),
    ] {
        let r = b.send(req).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{kind:?}: an API call without a session must get 401 (location {:?}): {}\n{}",
            r.header("location"),
            r.text(),
            s.logs()
        );
    }
    assert!(s.gw.upstream().seen().is_empty());
}

async fn websocket(kind: Kind) {
    let Some(s) = Stack::start(kind).await else {
        return;
    };
    let token = s.gw.sign_in("ws@example.com").await;

    // Without a session the upgrade is refused and never reaches the app.
    let err = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(s.ws_request(None)))
        .await
        .expect("websocket handshake timed out")
        .expect_err("websocket opened without a session");
    match err {
        // Not a navigation: the gateway's 401 passes through the proxy.
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{kind:?}")
        }
        other => panic!("{kind:?}: unexpected error {other}"),
    }
    assert!(s.gw.upstream().seen_path("/ws").is_empty());

    let mut req = s.ws_request(Some(&format!("portcullis_session={token}")));
    req.headers_mut()
        .insert("x-forwarded-email", "evil@x.com".parse().unwrap());
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake timed out")
        .unwrap_or_else(|e| panic!("{kind:?}: websocket handshake failed: {e}\n{}", s.logs()));
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let next =
        |m: Option<Result<Message, _>>| m.expect("websocket closed").expect("websocket error");
    let hello = next(tokio::time::timeout(WAIT, ws.next()).await.unwrap());
    assert_eq!(hello, Message::Text("hello ws@example.com".into()));
    ws.send(Message::Text("through the proxy".into()))
        .await
        .unwrap();
    let m = next(tokio::time::timeout(WAIT, ws.next()).await.unwrap());
    assert_eq!(m, Message::Text("echo: through the proxy".into()));
    ws.close(None).await.unwrap();
    let seen = s.gw.upstream().seen_path("/ws");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("x-forwarded-email"), ["ws@example.com"]);
}
/// A signed-in upload of a few megabytes (a notebook, a data file) reaches the app whole: the
/// snippet sets no body limit of the proxy's own.
async fn upload(kind: Kind) {
    let Some(s) = Stack::start(kind).await else {
        return;
    };
    let token = s.gw.sign_in("up@example.com").await;
    let body: Vec<u8> = (0..4 * 1024 * 1024 + 7)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let r = s
        .browser()
        .send(
            s.at(Req::post, "/upload")
                .header("cookie", &format!("portcullis_session={token}"))
                .header("content-type", "application/octet-stream")
                .body(body.clone()),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{kind:?}: {}\n{}",
        r.text().chars().take(500).collect::<String>(),
        s.logs()
    );
    assert_eq!(r.json()["body_len"], body.len(), "{kind:?}");
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(body.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_upload_of_a_few_megabytes() {
    upload(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_upload_of_a_few_megabytes() {
    upload(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_full_sign_in_and_identity() {
    full_sign_in(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_api_call_without_session_gets_401() {
    api_call_gets_401(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_websocket() {
    websocket(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_full_sign_in_and_identity() {
    full_sign_in(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_api_call_without_session_gets_401() {
    api_call_gets_401(Kind::Caddy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_websocket() {
    websocket(Kind::Caddy).await;
}
