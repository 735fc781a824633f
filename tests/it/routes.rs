//! Many apps, one login: routes by host (exact, wildcard, catch-all) and path prefix, per-route
//! access, public routes and public paths, per-route idle timeouts, `allowed_emails_file` reloads.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::upstream::echoed;
use crate::support::{
    eventually, raw_exchange, raw_status, unescape, GatewayBuilder, Http, Req, Resp, TestGateway,
    Upstream, WAIT,
};

/// A gateway with six routes over two echo upstreams, `a` and `b`, and no catch-all.
struct Apps {
    gw: TestGateway,
    a: Upstream,
    b: Upstream,
}

fn routes(a: &Upstream, b: &Upstream) -> Value {
    json!([
        {"host": "app.example.com", "upstream": a.url},
        {"host": "app.example.com", "path_prefix": "/api", "upstream": b.url},
        {"host": "*.tools.example.com", "upstream": b.url},
        {
            "host": "admin.example.com",
            "upstream": a.url,
            "access": {"allowed_emails": ["alice@example.com"], "allowed_domains": []},
            "session": {"idle_timeout": "1h"},
        },
        {"host": "status.example.com", "upstream": b.url, "access": {"public": true}},
        {"host": "docs.example.com", "upstream": a.url, "public_paths": ["/static/", "/healthz"]},
    ])
}

async fn apps_with(change: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> Apps {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let builder = TestGateway::builder()
        .set("upstream", Value::Null)
        .set("routes", routes(&a, &b));
    let gw = change(builder).start().await;
    Apps { gw, a, b }
}

async fn apps() -> Apps {
    apps_with(|b| b).await
}

/// A client carrying `email`'s session cookie.
async fn client(gw: &TestGateway, email: &str) -> Http {
    let token = gw.sign_in(email).await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    c
}

async fn get(c: &Http, host: &str, path: &str) -> Resp {
    c.send(Req::get(path).header("host", host)).await
}

async fn navigate(c: &Http, host: &str, path: &str) -> Resp {
    c.send(Req::get(path).header("host", host).navigate()).await
}

impl Apps {
    /// Which upstream received `path` (each test path is used once).
    fn served_by(&self, path: &str) -> &'static str {
        match (self.a.seen_path(path).len(), self.b.seen_path(path).len()) {
            (1, 0) => "a",
            (0, 1) => "b",
            (0, 0) => "none",
            _ => "both or twice",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_reaches_the_upstream_of_its_host_and_path() {
    let apps = apps().await;
    let c = client(&apps.gw, "alice@example.com").await;
    for (host, path, want) in [
        ("app.example.com", "/home", "a"),
        ("app.example.com", "/api", "b"),
        ("app.example.com", "/api/items?x=1", "b"),
        ("app.example.com", "/apiary", "a"),
        ("x.tools.example.com", "/t1", "b"),
        ("deep.x.tools.example.com", "/t2", "b"),
        ("admin.example.com", "/panel", "a"),
        // Host matching ignores case and port.
        ("APP.Example.COM:8443", "/case", "a"),
        ("app.example.com:80", "/port", "a"),
        ("Build.TOOLS.example.com:9000", "/t3", "b"),
    ] {
        let r = get(&c, host, path).await;
        assert_eq!(r.status, StatusCode::OK, "{host}{path}: {}", r.text());
        let bare = path.split('?').next().unwrap();
        assert_eq!(apps.served_by(bare), want, "{host}{path}");
        let v = r.json();
        assert_eq!(v["uri"], path, "{host}");
        assert_eq!(
            echoed(&v, "host"),
            [host.to_ascii_lowercase()],
            "the upstream gets the canonical Host the decision was made for"
        );
        assert_eq!(echoed(&v, "x-forwarded-email"), ["alice@example.com"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_get_404_unless_a_catch_all_exists() {
    let mut apps = apps().await;
    let c = client(&apps.gw, "alice@example.com").await;
    let anonymous = apps.gw.http();
    for (who, client) in [("signed in", &c), ("anonymous", &anonymous)] {
        for host in ["unknown.example.org", "tools.example.com", "example.com"] {
            let r = client
                .send(
                    Req::get("/x")
                        .header("host", host)
                        .header("accept", "application/json"),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::NOT_FOUND,
                "{who} {host}: {}",
                r.text()
            );
            assert!(r
                .header("content-type")
                .unwrap()
                .starts_with("application/json"));
            assert_eq!(r.error_code(), "no_route", "{who} {host}");
            assert!(r.json()["error"].as_str().unwrap().contains(host));

            let r = navigate(client, &format!("{host}:8080"), "/page").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{who} {host}");
            assert!(r.header("content-type").unwrap().starts_with("text/html"));
            assert!(r.header("location").is_none());
            assert!(unescape(&r.text()).contains(host), "{}", r.text());
        }
    }
    assert!(apps.a.seen().is_empty() && apps.b.seen().is_empty());

    // With a `*` route the same hosts are served by it; named hosts keep their own route.
    let b_url = apps.b.url.clone();
    apps.gw
        .restart_with(|cfg| {
            cfg["routes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"host": "*", "upstream": b_url}));
        })
        .await;
    let r = get(&c, "unknown.example.org", "/caught").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(apps.served_by("/caught"), "b");
    let r = get(&c, "app.example.com", "/still-a").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(apps.served_by("/still-a"), "a");
    // The catch-all is protected like any route.
    let r = anonymous
        .send(Req::get("/anon").header("host", "unknown.example.org"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(apps.served_by("/anon"), "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_not_allowed_on_a_route_gets_403_and_no_login_loop() {
    let apps = apps().await;
    let bob = client(&apps.gw, "bob@example.com").await;
    let r = navigate(&bob, "admin.example.com", "/panel").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.header("location").is_none(), "a 403 must not redirect");
    let page = unescape(&r.text());
    assert!(page.contains("bob@example.com"), "{page}");
    assert!(
        page.contains("/.auth/login"),
        "a way to switch account: {page}"
    );

    let r = get(&bob, "admin.example.com", "/api/users").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "not_allowed");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("bob@example.com"));

    // The same session is fine on a route that allows example.com.
    let r = navigate(&bob, "app.example.com", "/bob-home").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(echoed(&r.json(), "x-forwarded-email"), ["bob@example.com"]);

    // An address allowed globally is not allowed on a route that overrides `access`.
    let guest = client(&apps.gw, "guest@partner.org").await;
    assert_eq!(
        get(&guest, "admin.example.com", "/guest").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&guest, "app.example.com", "/guest-app").await.status,
        StatusCode::OK
    );

    let alice = client(&apps.gw, "alice@example.com").await;
    let r = navigate(&alice, "admin.example.com", "/alice-panel").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        echoed(&r.json(), "x-forwarded-email"),
        ["alice@example.com"]
    );

    assert!(apps.a.seen_path("/panel").is_empty());
    assert!(apps.a.seen_path("/api/users").is_empty());
    assert!(apps.a.seen_path("/guest").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_route_needs_no_session_and_strips_client_identity() {
    let apps = apps().await;
    let c = apps.gw.http();
    let r = c
        .send(
            Req::get("/status")
                .header("host", "status.example.com")
                .header("x-forwarded-email", "evil@x.com")
                .header("X-Forwarded-User", "evil")
                .header("remote-user", "evil")
                .header("x-auth-request-email", "evil@x.com")
                .header("x_forwarded_email", "evil@x.com"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(apps.served_by("/status"), "b");
    let seen = &apps.b.seen_path("/status")[0];
    for h in [
        "x-forwarded-email",
        "x-forwarded-user",
        "remote-user",
        "x-auth-request-email",
        "x_forwarded_email",
    ] {
        assert!(seen.all(h).is_empty(), "{h} reached the upstream: {seen:?}");
    }

    // Navigations and other methods are not sent to the login page either.
    let r = navigate(&c, "status.example.com", "/page").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c
        .send(
            Req::post("/report")
                .header("host", "status.example.com")
                .body("x"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body"], "x");

    // The public route does not make its neighbours public.
    let r = get(&c, "app.example.com", "/private").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(apps.served_by("/private"), "none");
}

async fn raw_get(gw: &TestGateway, host: &str, target: &str, accept: &str) -> String {
    raw_exchange(
        gw.addr(),
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_paths_are_public_but_cannot_be_climbed_out_of() {
    let apps = apps().await;
    let gw = &apps.gw;
    for path in [
        "/static/app.js",
        "/static/css/site.css",
        "/static",
        "/healthz",
    ] {
        let resp = raw_get(gw, "docs.example.com", path, "application/json").await;
        assert_eq!(raw_status(&resp), Some(200), "{path}: {resp}");
        let seen = apps.a.seen_path(path);
        assert_eq!(seen.len(), 1, "{path}");
        assert!(seen[0].all("x-forwarded-email").is_empty());
    }
    for path in [
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/static/%2E%2E/admin",
        "/static/..%2fadmin",
        "/static/..%2Fadmin",
        "/static/..%5cadmin",
        "//static/../admin",
        "/static/./../admin",
        "/healthz/x",
        "/staticx",
        "/admin",
    ] {
        let resp = raw_get(gw, "docs.example.com", path, "application/json").await;
        // Spellings servers read differently are refused outright (400); the rest need a login.
        let ambiguous = path.contains('%') && !path.to_ascii_lowercase().contains("%2e");
        let want = if ambiguous { 400 } else { 401 };
        assert_eq!(
            raw_status(&resp),
            Some(want),
            "{path} must need a login: {resp}"
        );
        let resp = raw_get(gw, "docs.example.com", path, "text/html").await;
        if ambiguous {
            assert_eq!(raw_status(&resp), Some(400), "{path}: {resp}");
            continue;
        }
        assert_eq!(raw_status(&resp), Some(302), "{path}: {resp}");
        assert!(resp.contains("/.auth/login?rd="), "{resp}");
    }
    assert_eq!(
        apps.a.seen().len(),
        4,
        "only the public paths reached the upstream: {:?}",
        apps.a
            .seen()
            .iter()
            .map(|s| s.uri.clone())
            .collect::<Vec<_>>()
    );

    // The same public paths on another route are not public.
    let resp = raw_get(gw, "app.example.com", "/static/app.js", "application/json").await;
    assert_eq!(raw_status(&resp), Some(401), "{resp}");

    // With a session the protected paths are served, as the raw path.
    let c = client(gw, "carol@example.com").await;
    let r = get(&c, "docs.example.com", "/static/%2e%2e/admin").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/static/%2e%2e/admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_have_a_shorter_idle_timeout() {
    let apps = apps().await;
    let gw = &apps.gw;
    let alice = client(gw, "alice@example.com").await;
    assert_eq!(
        get(&alice, "admin.example.com", "/i1").await.status,
        StatusCode::OK
    );
    gw.clock.advance(30 * 60);
    assert_eq!(
        get(&alice, "admin.example.com", "/i2").await.status,
        StatusCode::OK
    );

    // Two idle hours: too long for admin (1h), fine for the global idle timeout (1d).
    gw.clock.advance(2 * 3600);
    let r = get(&alice, "admin.example.com", "/i3").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = navigate(&alice, "admin.example.com", "/i4?q=1").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.location(),
        format!(
            "{}/.auth/login?rd={}",
            gw.base,
            crate::support::enc("http://admin.example.com/i4?q=1")
        )
    );
    assert!(apps.a.seen_path("/i3").is_empty() && apps.a.seen_path("/i4").is_empty());
    let r = get(&alice, "app.example.com", "/i5").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // The global idle timeout still applies to the other routes.
    gw.clock.advance(24 * 3600 + 60);
    assert_eq!(
        get(&alice, "app.example.com", "/i6").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_emails_file_is_honoured_and_reread_when_it_changes() {
    let files = tempfile::tempdir().unwrap();
    let list = files.path().join("allowed.txt");
    std::fs::write(
        &list,
        "# people from partner.org\ncarol@partner.org\n\n  Dave@Partner.org  \n",
    )
    .unwrap();
    let list_path = list.display().to_string();
    let apps = apps_with(GatewayBuilder::config_file).await;
    let mut gw = apps.gw;
    let a_url = apps.a.url.clone();
    // The reloader snapshots the files' mtimes when its task starts (shortly after `start`
    // returns) and mtimes are coarse: let both settle before editing the config file.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.write_config(|cfg| {
        cfg["routes"].as_array_mut().unwrap().push(json!({
            "host": "files.example.com",
            "upstream": a_url,
            "access": {"allowed_emails_file": list_path, "allowed_domains": []},
        }));
    });
    // The config file changed: wait for the reloader to serve the new route.
    let probe = gw.http();
    eventually(WAIT, "the new route was never served", || {
        let probe = probe.clone();
        async move {
            let r = get(&probe, "files.example.com", "/probe").await;
            (r.status == StatusCode::UNAUTHORIZED).then_some(())
        }
    })
    .await;

    let carol = client(&gw, "carol@partner.org").await;
    let dave = client(&gw, "dave@partner.org").await;
    for (c, who) in [(&carol, "carol@partner.org"), (&dave, "dave@partner.org")] {
        let r = get(c, "files.example.com", "/f").await;
        assert_eq!(r.status, StatusCode::OK, "{who}: {}", r.text());
        assert_eq!(echoed(&r.json(), "x-forwarded-email"), [who]);
        // The file only opens its own route.
        assert_eq!(
            get(c, "app.example.com", "/f").await.status,
            StatusCode::FORBIDDEN
        );
    }
    let denied = portcullis::metrics::Metrics::get(&gw.state().metrics.login_denied);
    gw.api_login("erin@partner.org").await;
    assert_eq!(
        portcullis::metrics::Metrics::get(&gw.state().metrics.login_denied),
        denied + 1,
        "erin is not on the list yet"
    );

    // Dave leaves, Erin joins: only the list file changes.
    std::fs::write(&list, "carol@partner.org\nerin@partner.org\n").unwrap();
    eventually(
        Duration::from_secs(15),
        "dave was not locked out after the list changed",
        || {
            let dave = dave.clone();
            async move {
                let r = get(&dave, "files.example.com", "/dave").await;
                (r.status == StatusCode::FORBIDDEN).then_some(())
            }
        },
    )
    .await;
    let r = navigate(&dave, "files.example.com", "/dave-page").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(unescape(&r.text()).contains("dave@partner.org"));
    assert_eq!(
        get(&carol, "files.example.com", "/carol").await.status,
        StatusCode::OK
    );
    let erin = client(&gw, "erin@partner.org").await;
    let r = get(&erin, "files.example.com", "/erin").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(echoed(&r.json(), "x-forwarded-email"), ["erin@partner.org"]);
    // (`/dave` was polled and served until the reload; the page after it was not.)
    assert!(apps.a.seen_path("/dave-page").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_disable_the_idle_timeout() {
    let a = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set("session.idle_timeout", "1h")
        .set(
            "routes",
            json!([
                {"host": "app.example.com", "upstream": a.url},
                {"host": "kiosk.example.com", "upstream": a.url, "session": {"idle_timeout": "0"}},
            ]),
        )
        .start()
        .await;
    let c = client(&gw, "bob@example.com").await;
    gw.clock.advance(3 * 3600);
    assert_eq!(
        get(&c, "app.example.com", "/app").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&c, "kiosk.example.com", "/kiosk").await.status,
        StatusCode::OK
    );
    // The sweeper honours the longest idle timeout any route grants: it must not delete the
    // session the kiosk route still accepts (it used to apply the global 1h).
    gw.clock.advance(3 * 3600);
    portcullis::server::sweeper::sweep_once(gw.state())
        .await
        .unwrap();
    assert_eq!(
        get(&c, "kiosk.example.com", "/kiosk1").await.status,
        StatusCode::OK,
        "the sweep cut a session a route still allows"
    );
    // The absolute lifetime (7d) still ends it.
    gw.clock.advance(7 * 24 * 3600);
    assert_eq!(
        get(&c, "kiosk.example.com", "/kiosk2").await.status,
        StatusCode::UNAUTHORIZED
    );
}
