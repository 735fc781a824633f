//! Operations: Prometheus metrics, readiness, live reload (SIGHUP and file edits) of the real
//! binary, systemd notifications and watchdog, JSON logs with request ids, audit lines, masking.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::process::{rewrite_keeping_mtime, with, write_yaml, Served, Setup};
use crate::support::upstream::echoed;
use crate::support::{eventually, free_port, metric, Http, Req, TestGateway, Upstream, WAIT};

async fn sample(gw: &TestGateway, name: &str) -> f64 {
    let text = gw.metrics_text().await;
    metric(&text, name).unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// Waits until the sample reaches `want`.
async fn sample_reaches(gw: &TestGateway, name: &str, want: f64) {
    eventually(
        WAIT,
        &format!("{name} never reached {want}"),
        || async move {
            let text = gw.metrics_text().await;
            (metric(&text, name) == Some(want)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_traffic_sign_ins_failures_and_mail() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .metrics()
        .start()
        .await;
    let port = gw.metrics_port.unwrap();
    let r = Http::new(&format!("http://127.0.0.1:{port}"))
        .send(Req::get("/metrics"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            assert!(
                rest.starts_with(" HELP ") || rest.starts_with(" TYPE "),
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
        assert!(name.starts_with("portcullis_"), "{line}");
    }
    for (name, kind) in [
        ("portcullis_signins_total", "counter"),
        ("portcullis_codes_failed_total", "counter"),
        ("portcullis_mail_sent_total", "counter"),
        ("portcullis_route_responses_total", "counter"),
        ("portcullis_upstream_latency_seconds", "histogram"),
        ("portcullis_active_sessions", "gauge"),
        ("portcullis_outbox_depth", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing:\n{text}"
        );
    }
    let other = Http::new(&format!("http://127.0.0.1:{port}"))
        .send(Req::get("/"))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    // The metrics are not on the public listener.
    let r = gw.http().send(Req::get("/metrics")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let route =
        |class: &str| format!("portcullis_route_responses_total{{route=\"*\",status=\"{class}\"}}");
    assert_eq!(sample(&gw, &route("4xx")).await, 1.0, "the 401 just above");
    assert_eq!(sample(&gw, &route("2xx")).await, 0.0);
    assert_eq!(sample(&gw, "portcullis_signins_total").await, 0.0);
    assert_eq!(sample(&gw, "portcullis_active_sessions").await, 0.0);

    let token = gw.sign_in("bob@example.com").await;
    assert_eq!(sample(&gw, "portcullis_signins_total").await, 1.0);
    assert_eq!(sample(&gw, "portcullis_mail_queued_total").await, 1.0);
    sample_reaches(&gw, "portcullis_mail_sent_total", 1.0).await;
    sample_reaches(&gw, "portcullis_outbox_depth", 0.0).await;
    assert_eq!(sample(&gw, "portcullis_active_sessions").await, 1.0);

    // A wrong code.
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
    assert_eq!(sample(&gw, "portcullis_codes_failed_total").await, 1.0);
    assert_eq!(sample(&gw, "portcullis_signins_total").await, 1.0);
    sample_reaches(&gw, "portcullis_mail_sent_total", 2.0).await;

    // Proxied traffic by status class, and the upstream latency histogram.
    let authed = gw.http();
    authed.set_cookie("portcullis_session", &token);
    for path in ["/a", "/b", "/status/503", "/status/404"] {
        authed.send(Req::get(path)).await;
    }
    assert_eq!(sample(&gw, &route("2xx")).await, 2.0);
    assert_eq!(sample(&gw, &route("4xx")).await, 2.0);
    assert_eq!(sample(&gw, &route("5xx")).await, 1.0);
    assert_eq!(
        sample(
            &gw,
            "portcullis_upstream_latency_seconds_count{route=\"*\"}"
        )
        .await,
        4.0
    );
    assert_eq!(
        sample(
            &gw,
            "portcullis_upstream_latency_seconds_bucket{route=\"*\",le=\"+Inf\"}"
        )
        .await,
        4.0
    );
    assert_eq!(sample(&gw, "portcullis_requests_proxied_total").await, 4.0);
    assert_eq!(
        sample(&gw, "portcullis_requests_unauthenticated_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_store_and_shows_no_outbox_and_metrics_show_undelivered_mail() {
    let gw = TestGateway::builder().metrics().start().await;
    let r = gw.http().send(Req::get("/.auth/readyz")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"store": true, "mail": true}));
    let r = gw
        .http()
        .send(Req::new(http::Method::HEAD, "/.auth/readyz"))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // SMTP down: the mail waits in the outbox, which only the metrics listener shows. readyz
    // answers the same before and after a sign-in, so it cannot tell whether an address may
    // sign in (a disallowed address queues no mail).
    let down = TestGateway::builder()
        .smtp_port(free_port())
        .metrics()
        .start()
        .await;
    let before = down.http().send(Req::get("/.auth/readyz")).await;
    down.api_login("queued@example.com").await;
    assert_eq!(sample(&down, "portcullis_outbox_depth").await, 1.0);
    assert_eq!(sample(&down, "portcullis_mail_sent_total").await, 0.0);
    let after = down.http().send(Req::get("/.auth/readyz")).await;
    assert_eq!(after.status, StatusCode::OK, "queued mail is not a failure");
    assert_eq!(before.status, after.status);
    assert_eq!(
        before.text(),
        after.text(),
        "readyz changed with the outbox"
    );
    assert!(!after.text().contains("outbox"), "{}", after.text());
    assert_eq!(after.json()["store"], true);
}

// ---------------------------------------------------------------------------------------------
// The binary: reload, systemd, logs
// ---------------------------------------------------------------------------------------------

/// `/.auth/api/session` with a bearer token: 200 when the route allows the address, else 403.
async fn session_status(s: &Served, token: &str) -> StatusCode {
    s.http()
        .send(Req::get("/.auth/api/session").header("authorization", &format!("Bearer {token}")))
        .await
        .status
}

async fn status_becomes(s: &Served, token: &str, want: StatusCode, what: &str) {
    eventually(WAIT, what, || async move {
        (session_status(s, token).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_edits_reload_and_a_bad_config_keeps_the_old_one() {
    let setup = Setup::new();
    let cfg = setup.base();
    let s = setup.serve(&cfg, &[]).await;
    let bob = setup.sign_in("bob@example.com").await;
    let alice = setup.sign_in("alice@example.com").await;
    assert_eq!(session_status(&s, &bob).await, StatusCode::OK);

    // Only alice from now on. The mtime is kept, so only SIGHUP can notice.
    let only_alice = with(
        cfg.clone(),
        "access",
        json!({"allowed_emails": ["alice@example.com"], "allowed_domains": []}),
    );
    rewrite_keeping_mtime(&setup.config, &serde_yaml::to_string(&only_alice).unwrap());
    s.signal("HUP");
    status_becomes(
        &s,
        &bob,
        StatusCode::FORBIDDEN,
        "SIGHUP did not apply the new access rule",
    )
    .await;
    assert_eq!(session_status(&s, &alice).await, StatusCode::OK);
    let log = s.wait_log("configuration reloaded").await;
    assert!(log.contains("SIGHUP"), "{log}");

    // An invalid file is refused, logged with the reason, and the running config stays.
    let broken = with(only_alice.clone(), "session.ttl", json!("forever"));
    let broken = with(
        broken,
        "access",
        json!({"allowed_domains": ["example.com"]}),
    );
    rewrite_keeping_mtime(&setup.config, &serde_yaml::to_string(&broken).unwrap());
    s.signal("HUP");
    let log = s.wait_log("reload refused").await;
    assert!(
        log.contains("session.ttl"),
        "the log does not say why:\n{log}"
    );
    assert!(log.contains("forever"), "{log}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        session_status(&s, &bob).await,
        StatusCode::FORBIDDEN,
        "half-applied"
    );
    assert_eq!(session_status(&s, &alice).await, StatusCode::OK);
    let r = s.http().send(Req::get("/.auth/healthz")).await;
    assert_eq!(r.status, StatusCode::OK);

    // A reload is applied whole or not at all: a valid file whose certificate cannot be loaded
    // is refused, and its new access rule (example.com again) must not be live either.
    let garbage = setup.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let bad_tls = with(
        with(
            only_alice.clone(),
            "access",
            json!({"allowed_domains": ["example.com"]}),
        ),
        "tls",
        json!({"listen": format!("127.0.0.1:{}", free_port()), "cert": garbage, "key": garbage}),
    );
    rewrite_keeping_mtime(&setup.config, &serde_yaml::to_string(&bad_tls).unwrap());
    s.signal("HUP");
    let log = s.wait_log("tls:").await;
    assert!(log.contains("reload refused"), "{log}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        session_status(&s, &bob).await,
        StatusCode::FORBIDDEN,
        "a refused reload (broken certificate) applied its access rule"
    );

    // Editing the file is enough (polled every 2 s): example.com is back.
    write_yaml(&setup.config, &cfg);
    status_becomes(
        &s,
        &bob,
        StatusCode::OK,
        "the edited file was not picked up",
    )
    .await;
    let log = s.wait_log("file changed").await;
    assert!(log.contains("configuration reloaded"), "{log}");

    // Listeners are not rebound by a reload, and the log says so.
    let mport = free_port();
    let moved = with(
        cfg.clone(),
        "metrics_listen",
        json!(format!("127.0.0.1:{mport}")),
    );
    write_yaml(&setup.config, &moved);
    let log = s.wait_log("takes effect only after a restart").await;
    assert!(log.contains("metrics_listen"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", mport)).is_err());
    assert_eq!(session_status(&s, &bob).await, StatusCode::OK);
}

/// The notify socket systemd would listen on.
struct NotifySocket {
    sock: tokio::net::UnixDatagram,
    path: std::path::PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for a datagram with a line equal to `line`; returns that datagram.
    async fn expect(&mut self, line: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let n = match tokio::time::timeout(left, self.sock.recv(&mut buf)).await {
                Ok(r) => r.unwrap(),
                Err(_) => panic!("no {line:?} from sd_notify; got {:?}", self.seen),
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_reloading_stopping_and_gets_watchdog_pings() {
    let setup = Setup::new();
    let mut notify = NotifySocket::bind(setup.dir.path());
    let socket = notify.path.display().to_string();
    let mut s = setup
        .serve(
            &setup.base(),
            &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")],
        )
        .await;
    let ready = notify.expect("READY=1").await;
    assert!(ready.contains("STATUS="), "{ready:?}");
    // Pings at half the interval: a few within seconds.
    for _ in 0..3 {
        notify.expect("WATCHDOG=1").await;
    }
    s.signal("HUP");
    notify.expect("RELOADING=1").await;
    notify.expect("READY=1").await;
    s.signal("TERM");
    notify.expect("STOPPING=1").await;
    let status = s.wait_exit(WAIT).expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", s.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watchdog_usec_there_are_no_pings() {
    let setup = Setup::new();
    let mut notify = NotifySocket::bind(setup.dir.path());
    let socket = notify.path.display().to_string();
    let mut s = setup
        .serve(&setup.base(), &[("NOTIFY_SOCKET", &socket)])
        .await;
    notify.expect("READY=1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.stop();
    notify.expect("STOPPING=1").await;
    assert!(
        !notify.seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "{:?}",
        notify.seen
    );
}

/// Every line of a JSON log, parsed.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn field<'a>(line: &'a Value, name: &str) -> &'a Value {
    // tracing-subscriber's JSON format puts event fields under "fields" (or flattens them).
    if line["fields"].get(name).is_some() {
        &line["fields"][name]
    } else {
        &line[name]
    }
}

/// Signs bob in, makes carol fail a code and sends one proxied request; returns the request id
/// the upstream saw for `/logged`.
async fn traffic(setup: &Setup, s: &Served, up: &Upstream) -> String {
    let token = setup.sign_in("bob@example.com").await;
    let http = s.http();
    let r = http
        .send(Req::post("/.auth/api/login").json(&json!({"email": "carol@example.com"})))
        .await;
    let code = setup
        .smtp
        .wait_for_mail("carol@example.com", WAIT)
        .await
        .code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = http
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": r.json()["challenge_id"], "code": wrong})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = http
        .send(Req::get("/logged?q=1").header("authorization", &format!("Bearer {token}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ids = echoed(&r.json(), "x-request-id");
    assert_eq!(ids.len(), 1);
    assert_eq!(up.seen_path("/logged").len(), 1);
    ids[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_line_per_request_with_request_id_and_masked_audit_lines() {
    let setup = Setup::new();
    let up = Upstream::start().await;
    let cfg = with(setup.base(), "upstream", json!(up.url));
    let cfg = with(cfg, "log_format", json!("json"));
    let mut s = setup.serve(&cfg, &[]).await;
    let request_id = traffic(&setup, &s, &up).await;
    s.stop();
    let log = s.log_text();
    let lines = json_lines(&log);

    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "portcullis::access")
        .collect();
    let logged: Vec<&&Value> = access
        .iter()
        .filter(|l| field(l, "path") == "/logged")
        .collect();
    assert_eq!(logged.len(), 1, "one line per request:\n{log}");
    let line = logged[0];
    assert_eq!(field(line, "request_id"), request_id.as_str(), "{line}");
    assert_eq!(field(line, "status"), 200, "{line}");
    assert_eq!(field(line, "method"), "GET", "{line}");
    assert!(
        line["timestamp"].is_string() && line["level"] == "INFO",
        "{line}"
    );
    // Request ids are unique per request line.
    let mut ids: Vec<String> = access
        .iter()
        .map(|l| field(l, "request_id").as_str().unwrap_or("").to_string())
        .collect();
    assert!(ids.iter().all(|i| !i.is_empty()), "{log}");
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "request ids repeat:\n{log}");

    let audit = |event: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["target"] == "portcullis::audit" && field(l, "event") == event)
            .collect()
    };
    let sign_in = audit("sign_in");
    assert_eq!(sign_in.len(), 1, "{log}");
    assert_eq!(
        field(sign_in[0], "email"),
        "b***@example.com",
        "{}",
        sign_in[0]
    );
    assert_eq!(field(sign_in[0], "ip"), "127.0.0.1");
    let failed = audit("code_failed");
    assert_eq!(failed.len(), 1, "{log}");
    assert_eq!(field(failed[0], "email"), "c***@example.com");
    assert_eq!(failed[0]["level"], "WARN");
    // log_emails is off: the addresses appear nowhere in the log.
    for a in ["bob@example.com", "carol@example.com"] {
        assert!(!log.contains(a), "{a} is in the log unmasked:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_show_addresses_only_with_log_emails() {
    let setup = Setup::new();
    let up = Upstream::start().await;
    let cfg = with(setup.base(), "upstream", json!(up.url));
    let cfg = with(cfg, "log_emails", json!(true));
    let mut s = setup.serve(&cfg, &[]).await;
    let request_id = traffic(&setup, &s, &up).await;
    s.stop();
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("portcullis::access") && l.contains("/logged"))
        .unwrap_or_else(|| panic!("no access line for /logged:\n{log}"));
    assert!(
        line.contains(&format!("request_id={request_id}"))
            || line.contains(&format!("request_id=\"{request_id}\"")),
        "{line}"
    );
    let sign_in = log
        .lines()
        .find(|l| l.contains("portcullis::audit") && l.contains("sign_in"))
        .unwrap_or_else(|| panic!("no sign_in audit line:\n{log}"));
    assert!(sign_in.contains("bob@example.com"), "{sign_in}");
    let failed = log
        .lines()
        .find(|l| l.contains("portcullis::audit") && l.contains("code_failed"))
        .unwrap_or_else(|| panic!("no code_failed audit line:\n{log}"));
    assert!(failed.contains("carol@example.com"), "{failed}");
    assert!(!log.contains("b***@example.com"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_metrics_are_per_route_and_survive_a_reload() {
    let up = Upstream::start().await;
    let mut gw = TestGateway::builder()
        .set("upstream", Value::Null)
        .set(
            "routes",
            json!([
                {"host": "app.example.com", "upstream": up.url},
                {"host": "app.example.com", "path_prefix": "/api", "upstream": up.url},
            ]),
        )
        .metrics()
        .config_file()
        .start()
        .await;
    let token = gw.sign_in("bob@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let send = |path: &'static str, authed: bool| {
        let c = if authed { c.clone() } else { gw.http() };
        async move {
            c.send(Req::get(path).header("host", "app.example.com"))
                .await
                .status
        }
    };
    assert_eq!(send("/x", true).await, StatusCode::OK);
    assert_eq!(send("/api/y", true).await, StatusCode::OK);
    assert_eq!(send("/api/z", true).await, StatusCode::OK);
    assert_eq!(send("/w", false).await, StatusCode::UNAUTHORIZED);
    let key = |route: &str, class: &str| {
        format!("portcullis_route_responses_total{{route=\"{route}\",status=\"{class}\"}}")
    };
    let text = gw.metrics_text().await;
    assert_eq!(
        metric(&text, &key("app.example.com", "2xx")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &key("app.example.com/api", "2xx")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &key("app.example.com", "4xx")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &key("app.example.com/api", "4xx")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "portcullis_upstream_latency_seconds_count{route=\"app.example.com/api\"}"
        ),
        Some(2.0),
        "{text}"
    );

    // A reload adds a route; the existing routes keep their counts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let url = up.url.clone();
    gw.write_config(|cfg| {
        cfg["routes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"host": "new.example.com", "upstream": url}));
    });
    let gw = &gw;
    eventually(WAIT, "the reloaded route never showed up", || async move {
        let text = gw.metrics_text().await;
        metric(&text, &key("new.example.com", "2xx")).map(|_| ())
    })
    .await;
    let text = gw.metrics_text().await;
    assert_eq!(
        metric(&text, &key("app.example.com", "2xx")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &key("app.example.com/api", "2xx")),
        Some(2.0),
        "{text}"
    );
}

/// Asks for a sign-in mail for `email` and returns its text part.
async fn fresh_mail_text(gw: &TestGateway, email: &str) -> String {
    gw.api_login(email).await;
    gw.mail(email).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_templates_are_reloaded_when_they_change_and_a_broken_one_is_refused() {
    let mut gw = TestGateway::builder().config_file().start().await;
    let template = gw.dir.path().join("signin.txt");
    std::fs::write(&template, "version one for {{ email }}\n\n{{ code }}\n").unwrap();
    // Let the reloader snapshot the files first (it starts with the gateway; mtimes are coarse).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let path = template.display().to_string();
    gw.write_config(|cfg| cfg["email"]["templates"] = json!({"text": path}));
    let gw = &gw;
    eventually(
        WAIT,
        "the configured template was never used",
        || async move {
            let text = fresh_mail_text(gw, "tpl@example.com").await;
            text.starts_with("version one for tpl@example.com")
                .then_some(())
        },
    )
    .await;

    // Editing the template file alone is enough.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&template, "version two\n\n{{ code }}\n").unwrap();
    eventually(WAIT, "the edited template was never used", || async move {
        let text = fresh_mail_text(gw, "tpl@example.com").await;
        text.starts_with("version two").then_some(())
    })
    .await;

    // A template that does not compile is refused; mail keeps the running one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&template, "broken {% if %}\n").unwrap();
    // Two polls of the reloader.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let text = fresh_mail_text(gw, "tpl@example.com").await;
    assert!(text.starts_with("version two"), "{text}");
    let code = text.lines().nth(2).unwrap_or("");
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{text}"
    );
}
