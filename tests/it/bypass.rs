//! Attacks on the gateway's decision: spellings of hosts and paths that the gateway might judge
//! differently from the app that finally acts on them, proxy headers a client makes up, and the
//! forward-auth snippets in front of real nginx and Caddy. Each test names the issue item it proves.
//!
//! The apps behind the gateway are echo upstreams that record, for every request, the path a
//! lenient framework would act on (`Seen::acted`: Tomcat's `;params`, Werkzeug's `%2F`, `\`,
//! case folding, `..`). The invariant is always the same: whatever the app acts on, the requester
//! was allowed there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use http::StatusCode;
use serde_json::{json, Value};

use crate::jwt::{jwks, verify, JWT_HEADER};
use crate::support::proxies::{self, Proxy, APP_HOST};
use crate::support::upstream::{lenient_path, Seen};
use crate::support::{free_port, raw_exchange, raw_status, Http, Req, Resp, TestGateway, Upstream};

const BOSS: &str = "boss@example.com";
const ALICE: &str = "alice@example.com";
const STATUS_HOST: &str = "status.example.com";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/1.1 answer.
struct Raw {
    status: u16,
    head: String,
}

impl Raw {
    fn headers(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).first().copied()
    }
    /// The status line, plus where it redirects and whether the app answered.
    fn brief(&self) -> String {
        let mut b = self
            .head
            .lines()
            .next()
            .unwrap_or("(no answer)")
            .to_string();
        if let Some(l) = self.header("location") {
            let _ = write!(b, " -> {l}");
        }
        if self.forwarded() {
            b.push_str(" [from the app]");
        }
        b
    }
    /// Answered by the echo app (through the gateway or a proxy).
    fn forwarded(&self) -> bool {
        self.status == 200 && self.header("x-upstream") == Some("echo")
    }
}

/// Sends `{line} HTTP/1.1` and `headers` byte for byte (no Host unless given; `Connection: close`
/// added), so request lines, duplicate and misspelled headers reach the server as written.
async fn raw(addr: SocketAddr, line: &str, headers: &[(&str, &str)]) -> Raw {
    let mut req = format!("{line} HTTP/1.1\r\n");
    for (n, v) in headers {
        let _ = write!(req, "{n}: {v}\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    let text = raw_exchange(addr, req.as_bytes()).await;
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    Raw {
        status: raw_status(&text).unwrap_or(0),
        head,
    }
}

/// More header lines for a raw request.
type Extra = &'static [(&'static str, &'static str)];

/// `GET {path}` for `host`, with a session cookie when `cookie` is set.
async fn get(addr: SocketAddr, host: &str, path: &str, cookie: Option<&str>) -> Raw {
    let mut h = vec![("Host", host)];
    h.extend(cookie.map(|c| ("Cookie", c)));
    raw(addr, &format!("GET {path}"), &h).await
}

/// A response in one line: the status and the page's message (or the start of the body).
fn gist(r: &Resp) -> String {
    let text = r.text();
    let msg = match text.split_once("id=\"message\">") {
        Some((_, rest)) => rest.split('<').next().unwrap_or_default().to_string(),
        None => text.chars().take(200).collect(),
    };
    format!("{} {msg}", r.status)
}

/// Signs `email` in and returns the `Cookie` header value carrying the session.
async fn session(gw: &TestGateway, email: &str) -> String {
    format!("portcullis_session={}", gw.sign_in(email).await)
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Routes for `app.example.com`: `/admin` is boss's only, `/` is the whole domain's (or public).
/// (`allowed_domains: []` is spelled out so the test does not depend on whether a route's
/// access replaces the global one: that is `route_access_replaces_global_access`.)
fn admin_routes(up: &Upstream, root_public: bool) -> Value {
    let root = if root_public {
        json!({"host": APP_HOST, "upstream": up.url, "access": {"public": true}})
    } else {
        json!({"host": APP_HOST, "upstream": up.url})
    };
    json!([
        root,
        {
            "host": APP_HOST, "path_prefix": "/admin", "upstream": up.url,
            "access": {"allowed_emails": [BOSS], "allowed_domains": []},
        },
    ])
}

/// A gateway trusting loopback proxies, with `headers.jwt`, in front of `up`.
async fn gateway_with(routes: Value) -> TestGateway {
    TestGateway::builder()
        .set("upstream", Value::Null)
        .set("routes", routes)
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .set("headers.jwt", "X-Portcullis-Jwt-Assertion")
        .start()
        .await
}

/// Requests the app acted on under `prefix` although the requester (the identity the gateway
/// passed on) was not `allowed`.
fn acted_without_right(seen: &[Seen], prefix: &str, allowed: &str) -> Vec<String> {
    seen.iter()
        .filter(|s| s.acted_under(prefix))
        .filter(|s| s.all("x-forwarded-email") != [allowed])
        .map(|s| {
            let who = s.all("x-forwarded-email").join(",");
            let who = if who.is_empty() { "nobody" } else { &who };
            format!("{} (acted on {}) by {who}", s.uri, s.acted)
        })
        .collect()
}

/// Spellings of `/admin/secret` that a lenient app acts on as `/admin/secret`.
const ADMIN_SPELLINGS: [&str; 20] = [
    "/admin%2fsecret",
    "/admin%2Fsecret",
    "/admin%5csecret",
    "/admin%5Csecret",
    "/admin\\secret",
    "/admin;x/secret",
    "/admin;/secret",
    "/ADMIN/secret",
    "/Admin/secret",
    "/%61dmin/secret",
    "/%41DMIN/secret",
    "/x/..%2fadmin/secret",
    "/x/..%5cadmin/secret",
    "/x/..;/admin/secret",
    "/x/%2e%2e/admin/secret",
    "/admin%252fsecret",
    "/x/%252e%252e/admin/secret",
    "//admin/secret",
    "/x/..\\admin/secret",
    "/ADMIN;jsessionid=1/secret",
];

// ---------------------------------------------------------------------------------------------
// 1. Caddy forward-auth: client copies of the headers the check reads
// ---------------------------------------------------------------------------------------------

/// Issue item 1: with the shipped Caddyfile, a client without a session that adds headers naming a
/// public path or a public route (`X-Original-URL`, `X-Forwarded-Uri`, …) to a request for a
/// protected page gets the login redirect or 401, and the app never sees the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_ignores_client_copies_of_the_original_request_headers() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([
                {"host": APP_HOST, "upstream": up.url, "public_paths": ["/public/"]},
                {"host": STATUS_HOST, "upstream": up.url, "access": {"public": true}},
            ]),
        )
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .public_url(&format!("http://{APP_HOST}"))
        .start()
        .await;
    let Some(caddy) = proxies::caddy(free_port(), gw.port, port_of(&up.url)).await else {
        return;
    };
    let b = Http::new(&caddy.base);
    let at = |path: &str| Req::get(path).header("host", APP_HOST);
    let logs = || format!("--- caddy log ---\n{}", caddy.log_text());

    // Controls: the public path is served, the protected page is not.
    let r = b.send(at("/public/x")).await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", gist(&r), logs());
    assert_eq!(r.header("x-upstream").as_deref(), Some("echo"));
    let r = b.send(at("/secret").navigate()).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}\n{}", gist(&r), logs());

    let spoofs: &[&[(&str, &str)]] = &[
        &[("X-Original-URL", "http://app.example.com/public/x")],
        &[("X-Original-URL", "http://status.example.com/secret")],
        &[
            ("x-original-url", "http://status.example.com/"),
            ("X-Original-Method", "GET"),
        ],
        &[("X-Forwarded-Uri", "/public/x")],
        &[
            ("X-Forwarded-Uri", "/public/x"),
            ("X-Forwarded-Host", STATUS_HOST),
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Proto", "http"),
        ],
        &[("X-Forwarded-Host", STATUS_HOST)],
        &[("Forwarded", "host=status.example.com;proto=http")],
        &[("X_Original_URL", "http://app.example.com/public/x")],
        &[("X_Forwarded_Uri", "/public/x")],
        &[("X_Forwarded_Host", STATUS_HOST)],
        &[("X-Forwarded-Prefix", "/public")],
        &[("X-Rewrite-URL", "/public/x")],
        &[("X-Original-Host", STATUS_HOST)],
    ];
    let mut failures = Vec::new();
    for headers in spoofs {
        for navigate in [true, false] {
            let mut req = at("/secret");
            if navigate {
                req = req.navigate();
            }
            for (n, v) in *headers {
                req = req.header(n, v);
            }
            let r = b.send(req).await;
            let ok = match r.status.as_u16() {
                302 => r
                    .header("location")
                    .is_some_and(|l| l.contains("/.auth/login?rd=")),
                401 => true,
                _ => false,
            };
            if !ok || r.header("x-upstream").is_some() {
                failures.push(format!("{headers:?} navigate={navigate}: {}", r.status));
            }
        }
    }
    let served = up.seen_path("/secret").len();
    assert!(
        failures.is_empty() && served == 0,
        "{failures:#?}\nthe app served /secret {served} times\n{}",
        logs()
    );
}

/// Issue item 1 (the gateway side): each check endpoint reads only its own family of headers, so
/// a header a proxy forgot to strip cannot override the one the proxy wrote. Legacy `/.auth/check`
/// ignores `X-Original-URL` (the old Caddyfile did not strip it); incomplete headers fail closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_endpoints_read_only_their_own_headers() {
    let up = Upstream::start().await;
    let gw = gateway_with(json!([
        {"host": APP_HOST, "upstream": up.url, "public_paths": ["/public/"]},
        {"host": STATUS_HOST, "upstream": up.url, "access": {"public": true}},
    ]))
    .await;
    let anon = gw.http();
    let fwd = |endpoint: &str, host: &str, uri: &str| {
        Req::get(endpoint)
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", host)
            .header("x-forwarded-uri", uri)
    };
    let nginx = |url: &str| {
        Req::get("/.auth/check/nginx")
            .header("x-original-url", url)
            .header("x-original-method", "GET")
    };
    // Controls: each endpoint answers for the request its own headers describe.
    for (what, req) in [
        (
            "forward",
            fwd("/.auth/check/forward", APP_HOST, "/public/x"),
        ),
        ("legacy", fwd("/.auth/check", APP_HOST, "/public/x")),
        ("nginx", nginx("http://app.example.com/public/x")),
    ] {
        let r = anon.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", gist(&r));
    }
    for (what, req) in [
        ("forward", fwd("/.auth/check/forward", APP_HOST, "/secret")),
        ("legacy", fwd("/.auth/check", APP_HOST, "/secret")),
        ("nginx", nginx("http://app.example.com/secret")),
    ] {
        let r = anon.send(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", gist(&r));
    }

    let public_url = "http://app.example.com/public/x";
    let cases = [
        // The proxy described /secret in X-Forwarded-*; a client-sent X-Original-URL says public.
        (
            "legacy + X-Original-URL",
            fwd("/.auth/check", APP_HOST, "/secret").header("x-original-url", public_url),
        ),
        (
            "forward + X-Original-URL",
            fwd("/.auth/check/forward", APP_HOST, "/secret").header("x-original-url", public_url),
        ),
        (
            "legacy + X-Original-URL of a public route",
            fwd("/.auth/check", APP_HOST, "/secret")
                .header("x-original-url", "http://status.example.com/"),
        ),
        // nginx described /secret in X-Original-URL; client-sent X-Forwarded-* say public.
        (
            "nginx + X-Forwarded-*",
            nginx("http://app.example.com/secret")
                .header("x-forwarded-host", STATUS_HOST)
                .header("x-forwarded-uri", "/public/x"),
        ),
        // Incomplete descriptions from a trusted peer: fail closed.
        (
            "forward: only X-Forwarded-Uri",
            Req::get("/.auth/check/forward").header("x-forwarded-uri", "/public/x"),
        ),
        (
            "forward: X-Original-URL only",
            Req::get("/.auth/check/forward").header("x-original-url", public_url),
        ),
        (
            "legacy: X-Original-URL only",
            Req::get("/.auth/check").header("x-original-url", public_url),
        ),
        (
            "nginx: X-Forwarded-* only",
            Req::get("/.auth/check/nginx")
                .header("x-forwarded-host", APP_HOST)
                .header("x-forwarded-uri", "/public/x"),
        ),
        ("nginx: nothing", Req::get("/.auth/check/nginx")),
    ];
    let mut failures = Vec::new();
    for (what, req) in cases {
        let r = anon.send(req).await;
        if r.status != StatusCode::UNAUTHORIZED {
            failures.push(format!("{what}: {}", gist(&r)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(up.seen().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. nginx forward-auth: absolute-form request lines
// ---------------------------------------------------------------------------------------------

/// nginx picks the server block by the host of an absolute request line, while `$http_host`
/// still says what the client's `Host` header says: the snippet must describe the request with
/// the block's own name. `status.example.com` is a public route of the gateway.
async fn nginx_absolute_form(beside_public_site: bool) {
    let app = Upstream::start().await;
    let status_app = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([
                {"host": APP_HOST, "upstream": app.url, "public_paths": ["/public/"]},
                {"host": STATUS_HOST, "upstream": status_app.url, "access": {"public": true}},
            ]),
        )
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .public_url(&format!("http://{APP_HOST}"))
        .start()
        .await;
    let port = free_port();
    let (a, s) = (port_of(&app.url), port_of(&status_app.url));
    let nginx = if beside_public_site {
        proxies::nginx_beside_public_site(port, gw.port, a, s).await
    } else {
        proxies::nginx(port, gw.port, a).await
    };
    let Some(nginx) = nginx else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let logs = |p: &Proxy| format!("--- nginx log ---\n{}", p.log_text());

    // Controls: the stack works.
    let r = get(addr, APP_HOST, "/public/x", None).await;
    assert!(r.forwarded(), "{}\n{}", r.head, logs(&nginx));
    let r = get(addr, APP_HOST, "/secret", None).await;
    assert_eq!(r.status, 401, "{}\n{}", r.head, logs(&nginx));

    // What each request must get: the login (302/401, or 400), nginx's 421 for a host no server
    // block names, or the public site (which is nginx's own business, not the app's).
    let other_site = if beside_public_site {
        "public site"
    } else {
        "421"
    };
    let nav: Extra = &[("Accept", "text/html"), ("Sec-Fetch-Mode", "navigate")];
    let spoof: Extra = &[("X-Original-URL", "http://status.example.com/")];
    let app_abs = "GET http://app.example.com/secret";
    let port_abs = format!("GET http://app.example.com:{port}/secret");
    let cases: [(&str, &str, Extra, &str); 10] = [
        ("GET /secret", "unknown.example.com", &[], "421"),
        ("GET /secret", STATUS_HOST, &[], other_site),
        (
            "GET http://status.example.com/secret",
            APP_HOST,
            &[],
            other_site,
        ),
        (app_abs, STATUS_HOST, &[], "login"),
        (app_abs, STATUS_HOST, nav, "login"),
        (app_abs, STATUS_HOST, spoof, "login"),
        (app_abs, "unknown.example.com", &[], "login"),
        (app_abs, "status.example.com/public/x", &[], "login"),
        (
            "GET http://APP.EXAMPLE.COM./secret",
            STATUS_HOST,
            &[],
            "login",
        ),
        (&port_abs, STATUS_HOST, &[], "login"),
    ];
    let mut failures = Vec::new();
    for (line, host, extra, want) in cases {
        let headers: Vec<_> = [("Host", host)]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let r = raw(addr, line, &headers).await;
        let ok = match want {
            "login" => {
                r.status == 401
                    || r.status == 400
                    || (r.status == 302
                        && r.header("location")
                            .is_some_and(|l| l.contains("/.auth/login?rd=")))
            }
            "421" => r.status == 421,
            _ => r.forwarded(),
        };
        if !ok {
            failures.push(format!(
                "{line} {headers:?}: want {want}, got {}",
                r.brief()
            ));
        }
    }
    let served = app.seen_path("/secret");
    assert!(
        failures.is_empty() && served.is_empty(),
        "{failures:#?}\nthe app served /secret {} times\n{}",
        served.len(),
        logs(&nginx)
    );
}

/// Issue item 2, the snippet as the only server blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_absolute_request_line_cannot_borrow_a_public_host() {
    nginx_absolute_form(false).await;
}

/// Issue item 2, the snippet beside another (public) site on the same nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_absolute_request_line_cannot_borrow_a_public_host_beside_other_sites() {
    nginx_absolute_form(true).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Trailing-dot hosts
// ---------------------------------------------------------------------------------------------

/// `app.example.com` is boss's only; every other host falls to a laxer catch-all.
fn dotted_routes(up: &Upstream, catch_all_public: bool) -> Value {
    let catch_all = if catch_all_public {
        json!({"host": "*", "upstream": up.url, "access": {"public": true}})
    } else {
        json!({"host": "*", "upstream": up.url})
    };
    json!([
        {
            "host": APP_HOST, "upstream": up.url,
            "access": {"allowed_emails": [BOSS], "allowed_domains": []},
        },
        catch_all,
    ])
}

/// Requests the app got from anyone but boss.
fn strangers(up: &Upstream) -> Vec<String> {
    up.seen()
        .into_iter()
        .filter(|s| s.all("x-forwarded-email") != [BOSS])
        .map(|s| format!("{} {:?}", s.uri, s.all("x-forwarded-email")))
        .collect()
}

const DOTTED_HOSTS: [&str; 4] = [
    "app.example.com.",
    "APP.Example.COM.",
    "app.example.com.:8080",
    "App.Example.Com.:80",
];

/// Issue item 3, proxy mode: `Host: app.example.com.` is judged as `app.example.com` (never by
/// the catch-all), and the JWT audience is the canonical host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dot_host_is_the_same_host() {
    for catch_all_public in [true, false] {
        let up = Upstream::start().await;
        let gw = gateway_with(dotted_routes(&up, catch_all_public)).await;
        let alice = session(&gw, ALICE).await;
        let boss = session(&gw, BOSS).await;
        let mut failures = Vec::new();
        for host in DOTTED_HOSTS {
            let r = get(gw.addr(), host, "/dash", None).await;
            if !matches!(r.status, 302 | 401 | 400) {
                failures.push(format!("anonymous, Host {host}: {}", r.brief()));
            }
            let r = get(gw.addr(), host, "/dash", Some(&alice)).await;
            if !matches!(r.status, 403 | 400) {
                failures.push(format!("alice, Host {host}: {}", r.brief()));
            }
        }
        assert!(
            failures.is_empty(),
            "catch-all public={catch_all_public}: {failures:#?}"
        );
        assert_eq!(strangers(&up), Vec::<String>::new());

        // Boss passes, and the assertion's audience is the canonical host.
        let keys = jwks(&gw.base).await;
        for host in [
            "App.Example.COM.",
            "app.example.com",
            "app.example.com.:8080",
        ] {
            let r = get(gw.addr(), host, "/dash", Some(&boss)).await;
            assert!(r.forwarded(), "boss, Host {host}: {}", r.head);
            let seen = up.seen().pop().unwrap();
            let jwt = seen.all(JWT_HEADER);
            assert_eq!(jwt.len(), 1, "{seen:?}");
            let claims = verify(&keys, &jwt[0], APP_HOST, &gw.base)
                .unwrap_or_else(|e| panic!("Host {host}: aud is not {APP_HOST}: {e}"));
            assert_eq!(claims.email, BOSS);
        }
    }
}

/// Issue item 3 through a real proxy: the same gateway routes behind nginx or Caddy.
async fn trailing_dot_through(kind: &str) {
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set("routes", dotted_routes(&up, true))
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .public_url(&format!("http://{APP_HOST}"))
        .start()
        .await;
    let port = free_port();
    let proxy = match kind {
        "nginx" => proxies::nginx(port, gw.port, port_of(&up.url)).await,
        _ => proxies::caddy(port, gw.port, port_of(&up.url)).await,
    };
    let Some(proxy) = proxy else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let alice = session(&gw, ALICE).await;
    let boss = session(&gw, BOSS).await;
    let logs = || format!("--- {kind} log ---\n{}", proxy.log_text());

    // Control: boss gets through the proxy.
    let r = get(addr, APP_HOST, "/dash", Some(&boss)).await;
    assert!(r.forwarded(), "{}\n{}", r.head, logs());
    let mut failures = Vec::new();
    for host in DOTTED_HOSTS {
        for (who, cookie) in [("anonymous", None), ("alice", Some(alice.as_str()))] {
            let r = get(addr, host, "/dash", cookie).await;
            if r.header("x-upstream").is_some() {
                failures.push(format!("{who}, Host {host}: {}", r.brief()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", logs());
    assert_eq!(strangers(&up), Vec::<String>::new(), "{}", logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dot_host_through_nginx() {
    trailing_dot_through("nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dot_host_through_caddy() {
    trailing_dot_through("caddy").await;
}

// ---------------------------------------------------------------------------------------------
// 4. Path-prefix routes against a lenient app
// ---------------------------------------------------------------------------------------------

/// Issue item 4, proxy mode: alice (allowed on `/`, not on `/admin`) never gets a request that a
/// lenient app acts on under `/admin` through, whichever spelling she uses; with `/` public, the
/// same holds for anyone without a session. The path reaches the app unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_cannot_reach_a_restricted_prefix() {
    for root_public in [false, true] {
        let up = Upstream::start().await;
        let gw = gateway_with(admin_routes(&up, root_public)).await;
        let boss = session(&gw, BOSS).await;
        let alice = session(&gw, ALICE).await;
        let (who, cookie) = if root_public {
            ("anonymous", None)
        } else {
            ("alice", Some(alice.as_str()))
        };

        // Controls: boss reaches /admin; the requester reaches `/`, with the path unchanged.
        let r = get(gw.addr(), APP_HOST, "/admin/secret", Some(&boss)).await;
        assert!(r.forwarded(), "{}", r.head);
        let r = get(gw.addr(), APP_HOST, "/admin/secret", cookie).await;
        assert!(matches!(r.status, 302 | 401 | 403), "{who}: {}", r.head);
        let odd = "/x/./y/../z%41;p=1";
        let r = get(gw.addr(), APP_HOST, odd, cookie).await;
        assert!(r.forwarded(), "{who} {odd}: {}", r.head);
        assert_eq!(
            up.seen().pop().unwrap().uri,
            odd,
            "the path is forwarded raw"
        );

        let mut failures = Vec::new();
        for path in ADMIN_SPELLINGS {
            assert_eq!(lenient_path(path), "/admin/secret", "{path}");
            let r = get(gw.addr(), APP_HOST, path, cookie).await;
            if r.forwarded() {
                failures.push(format!("{who} {path}: {}", r.brief()));
            }
        }
        let sneaked = acted_without_right(&up.seen(), "/admin", BOSS);
        assert!(
            failures.is_empty() && sneaked.is_empty(),
            "root public={root_public}: forwarded {failures:#?}\nthe app acted on /admin for: {sneaked:#?}"
        );
    }
}

/// Issue item 4 through the check endpoints (trusted peer, as nginx and Caddy ask): the same
/// spellings never get a 200, and the JWT audience is the canonical host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_in_forward_auth_checks() {
    for root_public in [false, true] {
        let up = Upstream::start().await;
        let gw = gateway_with(admin_routes(&up, root_public)).await;
        let boss = session(&gw, BOSS).await;
        let alice = session(&gw, ALICE).await;
        let c = gw.http();
        let (who, cookie) = if root_public {
            ("anonymous", "")
        } else {
            ("alice", alice.as_str())
        };
        let with = |req: Req, cookie: &str| match cookie {
            "" => req,
            c => req.header("cookie", c),
        };
        let forward = |host: &str, uri: &str, cookie: &str| {
            let req = Req::get("/.auth/check/forward")
                .header("x-forwarded-method", "GET")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", host)
                .header("x-forwarded-uri", uri);
            with(req, cookie)
        };
        let nginx = |url: &str, cookie: &str| {
            let req = Req::get("/.auth/check/nginx")
                .header("x-original-url", url)
                .header("x-original-method", "GET");
            with(req, cookie)
        };

        let mut failures = Vec::new();
        for path in ADMIN_SPELLINGS {
            for (endpoint, req) in [
                ("forward", forward(APP_HOST, path, cookie)),
                ("nginx", nginx(&format!("http://{APP_HOST}{path}"), cookie)),
            ] {
                let r = c.send(req).await;
                if r.status == StatusCode::OK {
                    failures.push(format!("{endpoint} {who} {path}: 200"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "root public={root_public}: {failures:#?}"
        );

        // Allowed requests carry an assertion for the canonical host.
        let keys = jwks(&gw.base).await;
        let allowed = [
            forward("App.Example.COM.", "/admin/secret", &boss),
            forward("app.example.com:8443", "/ADMIN/secret", &boss),
            forward("APP.example.com.", "/x", &alice),
            nginx("http://APP.Example.com./admin/secret", &boss),
            nginx("https://app.example.com.:8443/x", &alice),
        ];
        for (i, req) in allowed.into_iter().enumerate() {
            let r = c.send(req).await;
            assert_eq!(r.status, StatusCode::OK, "allowed case {i}: {}", gist(&r));
            let jwt = r.header(JWT_HEADER).expect("no assertion");
            verify(&keys, &jwt, APP_HOST, &gw.base)
                .unwrap_or_else(|e| panic!("case {i}: aud is not {APP_HOST}: {e}"));
        }
        assert!(up.seen().is_empty());
    }
}

/// The strictest reading with `ambiguous_paths: forward`: an ambiguous path is forwarded unchanged
/// (never decoded) but is never public through `public_paths`, and needs the access of every
/// route it could mean. (Refusing it, 400, is always acceptable where several rules could apply.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_forward_mode_judges_the_strictest_reading() {
    let up = Upstream::start().await;
    let mut routes = admin_routes(&up, true);
    for r in [
        json!({"host": "tools.example.com", "upstream": up.url}),
        json!({"host": "docs.example.com", "upstream": up.url, "public_paths": ["/public/"]}),
    ] {
        routes.as_array_mut().unwrap().push(r);
    }
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set("routes", routes)
        .set("ambiguous_paths", "forward")
        .start()
        .await;
    let boss = session(&gw, BOSS).await;
    let alice = session(&gw, ALICE).await;
    let mut failures = Vec::new();
    let mut check = |what: String, r: &Raw, ok: bool| {
        if !ok {
            failures.push(format!("{what}: {}", r.brief()));
        }
    };
    // One route, no rule below it: forwarded unchanged to those its access lets in.
    for path in ["/a%2fb", "/a%5Cb", "/x/..%2fy", "/a%252fb", "/a\\b"] {
        let r = get(gw.addr(), "tools.example.com", path, Some(&alice)).await;
        let raw_path = r.forwarded() && up.seen().pop().is_some_and(|s| s.uri == path);
        check(format!("alice tools {path}"), &r, raw_path);
        let r = get(gw.addr(), "tools.example.com", path, None).await;
        check(
            format!("anonymous tools {path}"),
            &r,
            matches!(r.status, 302 | 401),
        );
    }
    // Never public through public_paths.
    for path in ["/public%2fx", "/public/..%2fsecret", "/public%5cx"] {
        let r = get(gw.addr(), "docs.example.com", path, None).await;
        check(
            format!("anonymous docs {path}"),
            &r,
            matches!(r.status, 302 | 401 | 400),
        );
    }
    // `/` public, `/admin` boss's: a path that could mean /admin needs boss.
    for path in ["/admin%2fsecret", "/admin%5Csecret", "/x/..%2fadmin/secret"] {
        let r = get(gw.addr(), APP_HOST, path, None).await;
        check(
            format!("anonymous {path}"),
            &r,
            matches!(r.status, 302 | 401 | 400),
        );
        let r = get(gw.addr(), APP_HOST, path, Some(&alice)).await;
        check(format!("alice {path}"), &r, matches!(r.status, 403 | 400));
        let r = get(gw.addr(), APP_HOST, path, Some(&boss)).await;
        let raw_path = r.status == 400 || up.seen().pop().is_some_and(|s| s.uri == path);
        check(format!("boss {path}"), &r, raw_path);
    }
    let sneaked = acted_without_right(&up.seen(), "/admin", BOSS);
    assert!(
        failures.is_empty() && sneaked.is_empty(),
        "{failures:#?}\nthe app acted on /admin for: {sneaked:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. `..;` out of a public path
// ---------------------------------------------------------------------------------------------

/// Issue item 5: `public_paths: [/public/]` in front of a Tomcat-like app; `..;` (Tomcat's `..`)
/// does not climb out of the public prefix without a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_dot_semicolon_does_not_leave_a_public_path() {
    let up = Upstream::start().await;
    let gw = gateway_with(json!([{"host": "*", "upstream": up.url, "public_paths": ["/public/"]}]))
        .await;
    let r = get(gw.addr(), APP_HOST, "/public/x", None).await;
    assert!(r.forwarded(), "control: {}", r.head);
    let mut failures = Vec::new();
    for path in [
        "/public/..;/admin/secret",
        "/public/;/../admin/secret",
        "/public/..;x=1/admin/secret",
        "/public/%2e%2e;/admin/secret",
        "/public/.;/../admin/secret",
        "/public;/../admin/secret",
        "/public/..;/..;/admin/secret",
    ] {
        assert_eq!(lenient_path(path), "/admin/secret", "{path}");
        let r = get(gw.addr(), APP_HOST, path, None).await;
        if !matches!(r.status, 302 | 401 | 400) {
            failures.push(format!("{path}: {}", r.brief()));
        }
    }
    let sneaked: Vec<String> = up
        .seen()
        .into_iter()
        .filter(|s| s.acted_under("/admin"))
        .map(|s| s.uri)
        .collect();
    assert!(
        failures.is_empty() && sneaked.is_empty(),
        "{failures:#?}\n{sneaked:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Proxy headers from clients
// ---------------------------------------------------------------------------------------------

/// Headers an app may read as the request's origin, scheme, host or URL.
const PROXY_HEADERS: [&str; 15] = [
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Original-URL",
    "X-Original-Method",
    "X-Original-Host",
    "X-Rewrite-URL",
    "X-Real-IP",
    "X-Host",
];

/// Every spelling of `name` an app might read: as is, upper case, repeated, with `_`.
fn spellings(name: &str, value: &str) -> Vec<(String, String)> {
    vec![
        (name.to_string(), value.to_string()),
        (name.to_ascii_uppercase(), format!("{value}-upper")),
        (name.to_ascii_lowercase(), format!("{value}-again")),
        (name.replace('-', "_"), format!("{value}-underscore")),
    ]
}

/// The upstream's values of a header, matching names the way CGI-style apps do (`_` is `-`).
fn values_at_upstream(seen: &Seen, name: &str) -> Vec<String> {
    let want = name.to_ascii_lowercase();
    seen.headers
        .iter()
        .filter(|(n, _)| n.replace('_', "-") == want)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Sends every spelling of every proxy header (values marked `evil`) to a public route.
async fn send_proxy_headers(gw: &TestGateway, up: &Upstream) -> Seen {
    let mut headers: Vec<(String, String)> = vec![("Host".into(), "App.Example.COM".into())];
    for name in PROXY_HEADERS {
        headers.extend(spellings(name, "evil"));
    }
    headers.extend(spellings("X-Forwarded-For", "6.6.6.6"));
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let r = raw(gw.addr(), "GET /headers", &refs).await;
    assert!(r.forwarded(), "{}", r.head);
    up.seen_path("/headers").pop().unwrap()
}

/// Issue item 6, untrusted peer: the app sees none of the client's proxy headers, only the
/// gateway's own X-Forwarded-For/-Proto/-Host and `Forwarded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_untrusted_clients_are_replaced() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([{"host": "*", "upstream": up.url, "access": {"public": true}}]),
        )
        .start()
        .await;
    let seen = send_proxy_headers(&gw, &up).await;
    let leaked: Vec<_> = seen
        .headers
        .iter()
        .filter(|(_, v)| v.contains("evil") || v.contains("6.6.6.6"))
        .collect();
    assert!(
        leaked.is_empty(),
        "client values reached the app: {leaked:#?}"
    );
    let own = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", APP_HOST),
    ];
    for name in PROXY_HEADERS {
        let values = values_at_upstream(&seen, name);
        let lower = name.to_ascii_lowercase();
        match own.iter().find(|(n, _)| *n == lower) {
            Some((_, v)) => assert_eq!(values, [*v], "{name}: {:#?}", seen.headers),
            None if lower == "forwarded" => {
                assert_eq!(values.len(), 1, "{values:?}");
                let mut pairs: Vec<String> = values[0]
                    .split(';')
                    .map(|p| p.trim().replace('"', "").to_ascii_lowercase())
                    .collect();
                pairs.sort();
                let want = ["for=127.0.0.1", "host=app.example.com", "proto=http"];
                assert_eq!(pairs, want, "Forwarded: {}", values[0]);
            }
            None => assert!(values.is_empty(), "{name} reached the app: {values:?}"),
        }
    }
}

/// Issue item 6, trusted peer: X-Forwarded-For is appended to; the URL-rewriting headers are
/// removed even from a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_trusted_peers() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([{"host": "*", "upstream": up.url, "access": {"public": true}}]),
        )
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .start()
        .await;
    let r = raw(
        gw.addr(),
        "GET /headers",
        &[("Host", APP_HOST), ("X-Forwarded-For", "203.0.113.7")],
    )
    .await;
    assert!(r.forwarded(), "{}", r.head);
    let seen = up.seen_path("/headers").pop().unwrap();
    assert_eq!(
        seen.all("x-forwarded-for").join(", "),
        "203.0.113.7, 127.0.0.1"
    );

    let seen = send_proxy_headers(&gw, &up).await;
    for name in [
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-Original-Host",
        "X-Host",
        "X-Forwarded-Uri",
        "X-Forwarded-Method",
    ] {
        let values = values_at_upstream(&seen, name);
        assert!(values.is_empty(), "{name} reached the app: {values:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Host headers, request lines and methods
// ---------------------------------------------------------------------------------------------

/// Issue item 7: two Host headers, an absolute-form authority that is not the Host, CONNECT and
/// TRACE are refused and never reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_request_targets_and_methods_are_refused() {
    let up = Upstream::start().await;
    let gw =
        gateway_with(json!([{"host": "*", "upstream": up.url, "access": {"public": true}}])).await;
    let addr = gw.addr();
    // Controls: the same authority twice (after canonicalisation) is fine.
    for line in [
        "GET http://app.example.com/ok",
        "GET http://APP.example.com./ok",
    ] {
        let r = raw(addr, line, &[("Host", APP_HOST)]).await;
        assert!(r.forwarded(), "{line}: {}", r.head);
    }
    let n = up.seen().len();

    let bad: &[(&str, &[(&str, &str)])] = &[
        ("GET /dup", &[("Host", APP_HOST), ("Host", STATUS_HOST)]),
        ("GET /dup", &[("Host", APP_HOST), ("Host", APP_HOST)]),
        ("GET /dup", &[("Host", APP_HOST), ("host", "")]),
        ("GET http://status.example.com/abs", &[("Host", APP_HOST)]),
        ("GET http://app.example.com/abs", &[("Host", STATUS_HOST)]),
        ("GET http://app.example.com.evil/abs", &[("Host", APP_HOST)]),
        ("GET http://a@app.example.com/abs", &[("Host", APP_HOST)]),
    ];
    let mut failures = Vec::new();
    for (line, headers) in bad {
        let r = raw(addr, line, headers).await;
        if r.status != 400 {
            failures.push(format!("{line} {headers:?}: {}", r.brief()));
        }
    }
    for line in [
        "CONNECT app.example.com:443",
        "CONNECT 127.0.0.1:22",
        "TRACE /",
        "TRACE /x",
    ] {
        let host = line
            .split(' ')
            .nth(1)
            .filter(|_| line.starts_with("CONNECT"));
        let r = raw(addr, line, &[("Host", host.unwrap_or(APP_HOST))]).await;
        if r.status != 405 || r.header("allow").is_none() {
            failures.push(format!("{line}: {}", r.brief()));
        }
    }
    let reached: Vec<String> = up.seen()[n..]
        .iter()
        .map(|s| format!("{} {} Host {:?}", s.method, s.uri, s.all("host")))
        .collect();
    assert!(
        failures.is_empty() && reached.is_empty(),
        "{failures:#?}\nthe app saw {reached:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. A route's access replaces the global access
// ---------------------------------------------------------------------------------------------

/// Issue item 8: `routes[i].access` replaces `access` as a whole: a route for boss only does not
/// also admit the global `allowed_domains`, nor another route the global `allowed_emails`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_access_replaces_global_access() {
    let up = Upstream::start().await;
    let gw = gateway_with(json!([
        {"host": APP_HOST, "upstream": up.url, "access": {"allowed_emails": [BOSS]}},
        {"host": "partner.example.com", "upstream": up.url, "access": {"allowed_domains": ["other.org"]}},
        {"host": "*", "upstream": up.url},
    ]))
    .await;
    // Global access: allowed_domains [example.com], allowed_emails [guest@partner.org].
    let guest = "guest@partner.org";
    let mut sessions = BTreeMap::new();
    for who in [ALICE, BOSS, guest] {
        sessions.insert(who, session(&gw, who).await);
    }
    let cases = [
        (APP_HOST, BOSS, 200),
        (APP_HOST, ALICE, 403),
        (APP_HOST, guest, 403),
        ("partner.example.com", guest, 403),
        ("partner.example.com", ALICE, 403),
        ("other.example.com", ALICE, 200),
        ("other.example.com", guest, 200),
    ];
    let mut failures = Vec::new();
    for (host, who, want) in cases {
        let r = get(gw.addr(), host, "/x", Some(&sessions[who])).await;
        if r.status != want {
            failures.push(format!("{who} on {host}: want {want}, got {}", r.brief()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// 9. Upstream Set-Cookie for the session cookie
// ---------------------------------------------------------------------------------------------

/// Issue item 9: the app cannot set (fixate, overwrite or delete) the gateway's session cookie;
/// its other cookies pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cannot_set_the_session_cookie() {
    for (cookie_name, other) in [("portcullis_session", "sid"), ("sid", "portcullis_session")] {
        let up = Upstream::start().await;
        let gw = TestGateway::builder()
            .set("upstream", Value::Null)
            .set(
                "routes",
                json!([{"host": "*", "upstream": up.url, "access": {"public": true}}]),
            )
            .set("session.cookie_name", cookie_name)
            .start()
            .await;
        let set = [
            format!("{cookie_name}=evil; Path=/; HttpOnly"),
            format!("{cookie_name}=; Max-Age=0; Path=/"),
            format!("{cookie_name}=evil; Domain=127.0.0.1; Path=/"),
            format!(" {cookie_name} =evil"),
            "app=1; Path=/".into(),
            format!("{other}=2; Path=/"),
            format!("{cookie_name}_x=3"),
            format!("x{cookie_name}=4"),
            format!("{cookie_name}_login=evil"),
            format!("{cookie_name}_flash=evil"),
            format!("{cookie_name}_known=evil"),
        ];
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(set.iter().map(|c| ("c", c)))
            .finish();
        let r = gw
            .http()
            .send(Req::get(&format!("/set-cookie?{query}")))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", gist(&r));
        assert_eq!(r.header("x-upstream").as_deref(), Some("echo"));
        let got: Vec<String> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let names: Vec<String> = got
            .iter()
            .map(|c| c.split('=').next().unwrap_or("").trim().to_string())
            .collect();
        for ours in ["", "_login", "_flash", "_known"] {
            let ours = format!("{cookie_name}{ours}");
            assert!(
                !names.contains(&ours),
                "the gateway's cookie `{ours}` was set by the app: {got:#?}"
            );
        }
        for want in [
            "app",
            other,
            &format!("{cookie_name}_x"),
            &format!("x{cookie_name}"),
        ] {
            assert!(names.iter().any(|n| n == want), "{want} dropped: {got:#?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. The table
// ---------------------------------------------------------------------------------------------

/// What the gateway did with a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decision {
    /// 200 from the app.
    Forwarded,
    /// 302 to the login page or 401.
    Login,
    /// 403.
    Denied,
    /// 400.
    Refused,
    Other(u16),
}

fn decision(r: &Raw) -> Decision {
    match r.status {
        200 if r.forwarded() => Decision::Forwarded,
        302 | 401 => Decision::Login,
        403 => Decision::Denied,
        400 => Decision::Refused,
        s => Decision::Other(s),
    }
}

const A: &str = APP_HOST;
const OTHER: &str = "other.example.org";

/// Canonical requests and what they get: (host, path, without session, as alice).
const REFERENCES: [(&str, &str, Decision, Decision); 8] = {
    use Decision::*;
    [
        (A, "/admin/secret", Login, Denied),
        (A, "/admin/root/x", Login, Denied),
        (A, "/admin/public-docs/intro", Forwarded, Forwarded),
        (A, "/app/private", Login, Forwarded),
        (A, "/app/public/x", Forwarded, Forwarded),
        (A, "/x", Forwarded, Forwarded),
        (A, "/adminx", Forwarded, Forwarded),
        (OTHER, "/admin/secret", Forwarded, Forwarded),
    ]
};

/// (Host, path as sent, the canonical request it must be judged as; `None`: must be refused).
type Row = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

const ADMIN: Option<(&str, &str)> = Some((A, "/admin/secret"));
const PRIVATE: Option<(&str, &str)> = Some((A, "/app/private"));
const PUBLIC: Option<(&str, &str)> = Some((A, "/app/public/x"));

const TABLE: &[Row] = &[
    // Case: restricted prefixes fold case, public paths and routes do not.
    (A, "/ADMIN/secret", ADMIN),
    (A, "/Admin/Secret", ADMIN),
    (A, "/aDmIn/secret", ADMIN),
    (A, "/ADMIN/ROOT/x", Some((A, "/admin/root/x"))),
    (A, "/APP/public/x", PRIVATE),
    (A, "/app/PUBLIC/x", PRIVATE),
    (A, "/app/HEALTHZ", PRIVATE),
    (A, "/ADMIN/public-docs/intro", ADMIN),
    (A, "/admin/PUBLIC-DOCS/intro", ADMIN),
    (A, "/ADMINX", Some((A, "/adminx"))),
    // Unreserved escapes, dot segments, empty segments.
    (A, "/%61dmin/secret", ADMIN),
    (A, "/%41DMIN/secret", ADMIN),
    (A, "/admin/%73ecret", ADMIN),
    (A, "//admin/secret", ADMIN),
    (A, "/admin//secret", ADMIN),
    (A, "/./admin/secret", ADMIN),
    (A, "/x/../admin/secret", ADMIN),
    (A, "/x/%2e%2e/admin/secret", ADMIN),
    (A, "/x/%2E%2E/admin/secret", ADMIN),
    (A, "/x/.%2e/admin/secret", ADMIN),
    (A, "/%2e%2e/admin/secret", ADMIN),
    (A, "/../../admin/secret", ADMIN),
    (A, "/admin/secret?next=/app/public/", ADMIN),
    (A, "/app/public/../private", PRIVATE),
    (A, "/app/public/%2e%2e/private", PRIVATE),
    (A, "/app/static/../../admin/secret", ADMIN),
    (A, "/admin/public-docs/../secret", ADMIN),
    (A, "/admin/public-docs/%2e%2e/secret", ADMIN),
    (A, "/app/public/x?q=%2f", PUBLIC),
    (A, "/app/public/./x", PUBLIC),
    (A, "/app/static/app.js", PUBLIC),
    (A, "/app/healthz", PUBLIC),
    // `;params`: removed for the decision; never public unless public under both readings.
    (A, "/admin;x/secret", ADMIN),
    (A, "/admin;/secret", ADMIN),
    (A, "/ADMIN;jsessionid=1/secret", ADMIN),
    (A, "/admin/root;x/x", Some((A, "/admin/root/x"))),
    (A, "/x/..;/admin/secret", ADMIN),
    (A, "/admin/public-docs/..;/secret", ADMIN),
    (A, "/app/public/..;/private", PRIVATE),
    (A, "/app/public/;/../private", PRIVATE),
    (A, "/app/public;x/x", PRIVATE),
    (A, "/app/healthz;x", PRIVATE),
    // Ambiguous: refused by default.
    (A, "/admin%2fsecret", None),
    (A, "/admin%2Fsecret", None),
    (A, "/admin%5csecret", None),
    (A, "/admin%5Csecret", None),
    (A, "/admin\\secret", None),
    (A, "/app/public/..%2fprivate", None),
    (A, "/app/public%2f..%2f..%2fadmin/secret", None),
    (A, "/admin%00/secret", None),
    (A, "/admin%0a/secret", None),
    (A, "/admin%0D/secret", None),
    (A, "/admin%zz/secret", None),
    (A, "/admin/secret%4", None),
    (A, "/admin%252fsecret", None),
    (A, "/x/%252e%252e/admin/secret", None),
    (A, "/admin%c0%afsecret", None),
    (A, "/admin%e0%80%afsecret", None),
    (A, "/admin%ffsecret", None),
    (A, "/admin%u002fsecret", None),
    (A, "/app/public/%u002e%u002e/private", None),
    // Host spellings.
    ("APP.EXAMPLE.COM", "/admin/secret", ADMIN),
    ("app.example.com.", "/admin/secret", ADMIN),
    ("App.Example.COM.", "/ADMIN/secret", ADMIN),
    ("app.example.com:8080", "/admin/secret", ADMIN),
    ("app.example.com.:8080", "/admin/secret", ADMIN),
    ("APP.example.com.:80", "/app/public/x", PUBLIC),
    ("app.example.com..", "/admin/secret", None),
    (".app.example.com", "/admin/secret", None),
    ("app..example.com", "/admin/secret", None),
    ("a@app.example.com", "/admin/secret", None),
    ("app.example.com:1:2", "/admin/secret", None),
    ("app.example.com:", "/admin/secret", ADMIN),
    ("app%2eexample.com", "/admin/secret", None),
    ("app.example.com,other.example.org", "/admin/secret", None),
    ("app .example.com", "/admin/secret", None),
    ("äpp.example.com", "/admin/secret", None),
    ("app.example.com/x", "/admin/secret", None),
    ("app.example.com\\", "/admin/secret", None),
    (
        "OTHER.example.org.",
        "/admin/secret",
        Some((OTHER, "/admin/secret")),
    ),
];

/// Issue item 10: one configuration with nested restricted prefixes, public paths, a public route
/// inside a restricted one and a public catch-all; every spelling gets the decision of its
/// canonical request (or 400), without a session and with a session that is not boss's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_are_judged_as_their_canonical_form() {
    let up = Upstream::start().await;
    let restricted = |prefix: &str, who: &str| {
        json!({
            "host": A, "path_prefix": prefix, "upstream": up.url,
            "access": {"allowed_emails": [who], "allowed_domains": []},
        })
    };
    let gw = gateway_with(json!([
        {"host": A, "upstream": up.url, "access": {"public": true}},
        {
            "host": A, "path_prefix": "/app", "upstream": up.url,
            "public_paths": ["/app/public/", "/app/static/", "/app/healthz"],
        },
        restricted("/admin", BOSS),
        restricted("/admin/root", "root@example.com"),
        {"host": A, "path_prefix": "/admin/public-docs", "upstream": up.url, "access": {"public": true}},
        {"host": "*", "upstream": up.url, "access": {"public": true}},
    ]))
    .await;
    let alice = session(&gw, ALICE).await;
    let ask = |host: &'static str, path: &'static str, cookie: Option<String>| {
        let addr = gw.addr();
        async move { decision(&get(addr, host, path, cookie.as_deref()).await) }
    };

    let mut refs = BTreeMap::new();
    let mut report = String::new();
    let mut ok = true;
    for (host, path, anon, signed) in REFERENCES {
        let got = (
            ask(host, path, None).await,
            ask(host, path, Some(alice.clone())).await,
        );
        let good = got == (anon, signed);
        ok &= good;
        let _ = writeln!(
            report,
            "{} reference {host} {path}: got {got:?}, want {:?}",
            if good { "  " } else { "!!" },
            (anon, signed)
        );
        refs.insert((host, path), (anon, signed));
    }
    for (host, path, canonical) in TABLE {
        let want = canonical.map(|c| {
            *refs
                .get(&c)
                .unwrap_or_else(|| panic!("{c:?} is not a reference"))
        });
        let got = (
            ask(host, path, None).await,
            ask(host, path, Some(alice.clone())).await,
        );
        let fits = |g: Decision, w: Option<Decision>| g == Decision::Refused || Some(g) == w;
        let good = fits(got.0, want.map(|w| w.0)) && fits(got.1, want.map(|w| w.1));
        ok &= good;
        let want_text = match (canonical, want) {
            (Some(c), Some(w)) => format!("{w:?} as {} {} (or Refused)", c.0, c.1),
            _ => "(Refused, Refused)".to_string(),
        };
        let _ = writeln!(
            report,
            "{} {host:<36} {path:<40} got {got:?}, want {want_text}",
            if good { "  " } else { "!!" }
        );
    }
    assert!(TABLE.len() >= 40, "the table needs at least 40 spellings");
    assert!(ok, "decisions (!! = wrong; anonymous, alice):\n{report}");
}

/// The shipped snippets, as run by the real proxies: an anonymous request to a public path
/// reaches the app with no identity (never a placeholder such as Caddy 2.6's
/// `{http.reverse_proxy.header.X-Forwarded-Email}`), and none of the client's routing or
/// client-address headers pass to the app with the client's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snippets_pass_no_client_routing_headers_and_no_placeholder_identity() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([{"host": APP_HOST, "upstream": up.url, "public_paths": ["/public/"]}]),
        )
        .set("trusted_proxies", json!(["127.0.0.1/32"]))
        .set("headers.jwt", "X-Portcullis-Jwt-Assertion")
        .public_url(&format!("http://{APP_HOST}"))
        .start()
        .await;
    let spoofed: &[(&str, &str)] = &[
        ("X-Forwarded-Email", "evil@example.com"),
        ("X_Forwarded_Email", "evil@example.com"),
        ("X-Forwarded-User", "evil@example.com"),
        ("Remote-User", "evil@example.com"),
        ("X-Portcullis-Jwt-Assertion", "evil.jwt.x"),
        ("X-Forwarded-Ssl", "evil"),
        ("X-Forwarded-Port", "6666"),
        ("X-Forwarded-Server", "evil"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Host", "evil.example.org"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Original-Host", "evil.example.org"),
        ("X-Original-URL", "http://evil.example.org/"),
        ("X-Rewrite-URL", "/evil"),
        ("Forwarded", "for=6.6.6.6;host=evil.example.org"),
    ];
    for kind in ["nginx", "caddy"] {
        let app = port_of(&up.url);
        let proxy = match kind {
            "nginx" => proxies::nginx(free_port(), gw.port, app).await,
            _ => proxies::caddy(free_port(), gw.port, app).await,
        };
        let Some(proxy) = proxy else { return };
        let b = Http::new(&proxy.base);
        let path = format!("/public/{kind}");
        let mut req = Req::get(&path).header("host", APP_HOST);
        for (n, v) in spoofed {
            req = req.header(n, v);
        }
        let r = b.send(req).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{kind}: {}\n{}",
            gist(&r),
            proxy.log_text()
        );
        let seen = up.seen_path(&path);
        assert_eq!(seen.len(), 1, "{kind}");
        let mut leaks = Vec::new();
        for (name, headers_value) in &seen[0].headers {
            let placeholder = headers_value.contains('{');
            let spoof = headers_value.contains("evil") || headers_value.contains("6.6.6.6");
            let identity = [
                "x-forwarded-email",
                "x-forwarded-user",
                "x-portcullis-jwt-assertion",
            ]
            .contains(&name.as_str())
                && !headers_value.is_empty();
            if placeholder || spoof || identity {
                leaks.push(format!("{name}: {headers_value}"));
            }
        }
        assert!(
            leaks.is_empty(),
            "{kind} passed to the app: {leaks:#?}\n{}",
            proxy.config_text
        );
    }
}

/// Issue item 7 over HTTP/2 (prior knowledge on the plain listener): a `:authority` that
/// disagrees with a `host` header is refused (RFC 9113 §8.3.1 / RFC 9112 §3.2) and never
/// reaches the upstream; when they agree, or only `:authority` is sent, the request passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_must_agree_with_host() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = Upstream::start().await;
    let gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([
                {"host": APP_HOST, "upstream": up.url},
                {"host": STATUS_HOST, "upstream": up.url, "access": {"public": true}},
            ]),
        )
        .start()
        .await;
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let cases: [(&str, Option<&str>, &str, bool); 4] = [
        // (authority, host header, path, reaches the public upstream)
        (STATUS_HOST, Some(APP_HOST), "/h2-a", false),
        (APP_HOST, Some(STATUS_HOST), "/h2-b", false),
        (STATUS_HOST, Some("Status.Example.com."), "/h2-c", true),
        (STATUS_HOST, None, "/h2-d", true),
    ];
    for (authority, host, path, passes) in cases {
        let mut b = http::Request::builder().uri(format!("http://{authority}{path}"));
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let req = b.body(Empty::<bytes::Bytes>::new()).unwrap();
        let status = match send.send_request(req).await {
            Ok(r) => {
                let s = r.status();
                let _ = r.into_body().collect().await;
                Some(s)
            }
            Err(_) => None, // a stream reset is an acceptable refusal
        };
        let seen = up.seen_path(path).len();
        if passes {
            assert_eq!(status, Some(StatusCode::OK), "{authority} / {host:?}");
            assert_eq!(seen, 1, "{authority} / {host:?}");
        } else {
            assert!(
                status.is_none() || status == Some(StatusCode::BAD_REQUEST),
                "{authority} / {host:?}: {status:?}"
            );
            assert_eq!(seen, 0, "{authority} / {host:?} reached the upstream");
        }
    }
}
