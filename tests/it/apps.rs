//! Many apps, one login, on real host names over plain http (what `e2e/apps.mjs` drives in
//! Chromium), at the HTTP level: a sign-in form for an app host answers with a same-origin
//! continue page (a form's `form-action 'self'` also governs its redirect), form pages send a
//! real `Origin` (`Referrer-Policy: same-origin`) and the origin check takes it while refusing
//! other sites and sibling apps; `check` warns about plain http; cookie_domain errors explain
//! themselves; large uploads pass.

use http::StatusCode;
use serde_json::json;

use crate::support::process::{write_yaml, BIN};
use crate::support::{enc, unescape, Http, Req, TestGateway};

const DOMAIN: &str = "apps.example";

/// A gateway whose public_url is `http://auth.apps.example:{port}` with `cookie_domain:
/// apps.example` and whoami routes for two app hosts. Clients reach it on 127.0.0.1 and send
/// the host names in `Host`, as a browser with `--host-resolver-rules` does.
struct Apps {
    gw: TestGateway,
    /// The port in public_url and in every `Host`/`Origin` (as behind a proxy on that port).
    port: u16,
}

impl Apps {
    async fn start() -> Apps {
        let port = crate::support::free_port();
        let gw = TestGateway::builder()
            .public_url(&format!("http://auth.{DOMAIN}:{port}"))
            .set("session.cookie_domain", DOMAIN)
            .set(
                "routes",
                json!([
                    {"host": format!("jupyter.{DOMAIN}"), "upstream": "builtin:whoami"},
                    {"host": format!("grafana.{DOMAIN}"), "upstream": "builtin:whoami"},
                ]),
            )
            .start()
            .await;
        Apps { gw, port }
    }

    fn origin(&self, host: &str) -> String {
        format!("http://{host}.{DOMAIN}:{}", self.port)
    }

    /// A request for `host` (`auth`, `jupyter`…) as a browser sends it from a page of `from`.
    fn at(&self, req: Req, host: &str, from: Option<&str>) -> Req {
        let req = req.header("host", &format!("{host}.{DOMAIN}:{}", self.port));
        match from {
            Some(o) => req.header("origin", o),
            None => req,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_sign_in_for_an_app_host_continues_by_get_from_the_forms_own_origin() {
    let apps = Apps::start().await;
    let gw = &apps.gw;
    assert_eq!(gw.state().config().public_origin(), apps.origin("auth"));
    let auth = apps.origin("auth");
    let target = format!("{}/lab?x=1&y=%20z", apps.origin("jupyter"));

    // The code form.
    let b = gw.http();
    let r = b
        .send(
            apps.at(Req::post("/.auth/login"), "auth", Some(&auth))
                .form(&[("email", "alice@example.com"), ("rd", &target)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let code = gw.mail("alice@example.com").await.code();
    let r = b
        .send(
            apps.at(Req::post("/.auth/code"), "auth", Some(&auth))
                .form(&[("code", &code)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let continue_at = format!("/.auth/continue?to={}", enc(&target));
    assert_eq!(
        r.location(),
        continue_at,
        "a relative, same-origin Location"
    );
    let session = r.set_cookie("portcullis_session").expect("session cookie");
    assert_eq!(session.domain(), Some(DOMAIN));

    // The continue page: a page (no redirect) that goes on by GET to the validated target.
    let r = b.send(apps.at(Req::get(&continue_at), "auth", None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = unescape(&r.text());
    assert!(
        page.contains(&format!(
            "<meta http-equiv=\"refresh\" content=\"0;url={target}\">"
        )),
        "{page}"
    );
    assert!(page.contains(&format!("href=\"{target}\"")), "{page}");
    assert!(r.header("location").is_none());
    assert!(r.set_cookie("portcullis_session").is_none());
    assert!(r
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    // And the app host takes the cookie.
    let r = b
        .send(apps.at(Req::get("/lab?x=1").navigate(), "jupyter", None))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("alice@example.com"));

    // The confirm form (link opened in another browser) goes the same way.
    let asker = gw.http();
    let grafana = format!("{}/d/1", apps.origin("grafana"));
    asker
        .send(
            apps.at(Req::post("/.auth/login"), "auth", Some(&auth))
                .form(&[("email", "bob@example.com"), ("rd", &grafana)]),
        )
        .await;
    let mail = gw.mail("bob@example.com").await;
    let phone = gw.http();
    let r = phone
        .send(
            apps.at(Req::post("/.auth/verify"), "auth", Some(&auth))
                .form(&[("token", &mail.token())]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(
        r.location(),
        format!("/.auth/continue?to={}", enc(&grafana))
    );

    // A link opened in the browser that asked is a plain navigation: straight to the app.
    let c = gw.http();
    c.send(
        apps.at(Req::post("/.auth/login"), "auth", Some(&auth))
            .form(&[("email", "carol@example.com"), ("rd", &grafana)]),
    )
    .await;
    let link = gw.mail("carol@example.com").await.link();
    let path = link.split_once(&auth).unwrap().1.to_string();
    let r = c.send(apps.at(Req::get(&path), "auth", None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(r.location(), grafana);

    // Whatever else the continue page is given leads to the public root.
    for evil in [
        "https://evil.example/",
        "//evil.example",
        "javascript:alert(1)",
        "http://evil.apps.example.evil.com/",
    ] {
        let r = gw
            .http()
            .send(apps.at(
                Req::get(&format!("/.auth/continue?to={}", enc(evil))),
                "auth",
                None,
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let page = unescape(&r.text());
        assert!(
            page.contains(&format!("content=\"0;url={auth}/\"")),
            "{evil}: {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_pages_send_a_real_origin_and_plain_http_sign_in_checks_it() {
    let apps = Apps::start().await;
    let gw = &apps.gw;
    let auth = apps.origin("auth");

    // Every gateway page: same-origin, so the browser's own posts carry `Origin`.
    let r = gw
        .http()
        .send(apps.at(Req::get("/.auth/login?rd=%2F"), "auth", None))
        .await;
    assert_eq!(
        r.header("referrer-policy").as_deref(),
        Some("same-origin"),
        "the login page"
    );
    let b = gw.http();
    let r = b
        .send(
            apps.at(Req::post("/.auth/login"), "auth", Some(&auth))
                .form(&[("email", "dave@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let r = b
        .send(apps.at(Req::get("/.auth/check-email"), "auth", None))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("referrer-policy").as_deref(),
        Some("same-origin"),
        "the check-your-email page"
    );

    // Posts a browser makes from elsewhere (on plain http: no Sec-Fetch-Site) are refused.
    let sibling = apps.origin("evil");
    for origin in [
        "http://evil.example",
        "null",
        sibling.as_str(),
        &format!("http://auth.{DOMAIN}:1"),
    ] {
        let r = gw
            .http()
            .send(
                apps.at(Req::post("/.auth/login"), "auth", Some(origin))
                    .form(&[("email", "victim@example.com")]),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "Origin {origin}: {}",
            r.text()
        );
    }
    // Where the browser does send Sec-Fetch-Site (secure origins), a sibling app is same-site.
    let r = gw
        .http()
        .send(
            apps.at(Req::post("/.auth/login"), "auth", None)
                .header("sec-fetch-site", "same-site")
                .form(&[("email", "victim@example.com")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(gw.smtp().mails_to("victim@example.com").is_empty());

    // A gateway page on an app host (whoami's "Sign out") posts to that host: accepted there,
    // refused from a sibling app.
    let token = gw.sign_in("erin@example.com").await;
    let cookie = format!("portcullis_session={token}");
    let r = gw
        .http()
        .send(
            apps.at(Req::post("/.auth/logout"), "jupyter", Some(&sibling))
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let jupyter = apps.origin("jupyter");
    let r = gw
        .http()
        .send(
            apps.at(Req::post("/.auth/logout"), "jupyter", Some(&jupyter))
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let r = gw
        .http()
        .send(
            apps.at(Req::get("/x"), "jupyter", None)
                .header("cookie", &cookie),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "signed out");
}

fn check(cfg: &serde_json::Value) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let mut cfg = cfg.clone();
    cfg["data_dir"] = json!(dir.path().join("data").display().to_string());
    write_yaml(&path, &cfg);
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn minimal(public_url: &str) -> serde_json::Value {
    json!({
        "public_url": public_url,
        "upstream": "builtin:whoami",
        "access": {"allowed_domains": ["example.com"]},
    })
}

#[test]
fn check_warns_when_public_url_is_plain_http_on_a_network_name() {
    for url in [
        "http://auth.apps.example",
        "http://10.0.0.5:8080",
        "http://intranet:8080",
    ] {
        let (ok, out, err) = check(&minimal(url));
        assert!(ok, "{url}: {out}{err}");
        let warning = out
            .lines()
            .find(|l| l.trim_start().starts_with("warning"))
            .unwrap_or_else(|| panic!("{url}: no warning:\n{out}"));
        assert!(warning.contains("plain http"), "{warning}");
        assert!(warning.contains("in clear"), "{warning}");
        assert!(warning.contains("cookies"), "{warning}");
    }
    for url in [
        "https://auth.apps.example",
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://app.localhost",
        "http://[::1]:8080",
    ] {
        let (ok, out, err) = check(&minimal(url));
        assert!(ok, "{url}: {out}{err}");
        assert!(!out.contains("warning"), "{url}:\n{out}");
    }
}

#[test]
fn a_single_label_cookie_domain_is_refused_with_the_reason_and_the_fix() {
    let mut cfg = minimal("http://auth.localtest:8080");
    cfg["session"] = json!({"cookie_domain": ".localtest"});
    let (ok, out, err) = check(&cfg);
    assert!(!ok, "{out}");
    assert!(err.contains("session.cookie_domain"), "{err}");
    assert!(err.contains("single label"), "{err}");
    assert!(err.contains("at least two"), "{err}");
    assert!(err.contains("top-level"), "{err}");
    assert!(err.contains("`.apps.localtest`"), "{err}");
    // The suggested fix is accepted.
    let mut cfg = minimal("http://auth.apps.localtest:8080");
    cfg["session"] = json!({"cookie_domain": ".apps.localtest"});
    let (ok, out, err) = check(&cfg);
    assert!(ok, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_upload_passes_the_gateway_unchanged() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("up@example.com").await;
    let body: Vec<u8> = (0..4 * 1024 * 1024 + 7)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let r = Http::new(&gw.base)
        .send(
            Req::post("/upload")
                .header("cookie", &format!("portcullis_session={token}"))
                .header("content-type", "application/octet-stream")
                .body(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["body_len"], body.len());
}
