//! The `portcullis` binary: `check` reports config problems with file and line or key path;
//! `serve` refuses bad configs, serves, and exits cleanly on SIGTERM with its data intact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::{free_port, Http, Req, Smtp, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn check(path: &Path) -> Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const MIN: &str = "public_url: http://127.0.0.1:8080\nupstream: builtin:whoami\naccess:\n  allowed_domains: [example.com]\n";

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let out = check(&example);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("config OK"), "{stdout}");
}

#[test]
fn check_prints_who_may_enter_each_route() {
    let dir = tempfile::tempdir().unwrap();
    let text = "public_url: https://auth.example.com\naccess: { allowed_domains: [example.com] }\nroutes:\n  - { host: app.example.com, upstream: 'http://127.0.0.1:1', public_paths: [/static/] }\n  - { host: app.example.com, path_prefix: /admin, upstream: 'http://127.0.0.1:2', access: { allowed_emails: [boss@example.com] } }\n  - { host: status.example.com, upstream: 'http://127.0.0.1:3', access: { public: true } }\n";
    let out = check(&write(dir.path(), "c.yaml", text));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The route's own access replaces the global block: only boss, not the domain.
    let admin = stdout
        .split("route         app.example.com/admin")
        .nth(1)
        .and_then(|s| s.lines().nth(1))
        .unwrap_or_default();
    assert_eq!(admin.trim(), "who may enter  boss@example.com", "{stdout}");
    assert!(
        stdout.contains("who may enter  anyone @example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("who may enter  anyone, no sign-in (public route)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("public paths   /static/ (exact spelling only)"),
        "{stdout}"
    );
    assert!(stdout.contains("are refused (400)"), "{stdout}");
}

#[test]
fn check_summarises_the_branding_and_refuses_a_pale_accent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pages")).unwrap();
    write(
        dir.path(),
        "pages/login.html",
        "{% extends \"base.html\" %}{% block content %}x{% endblock %}",
    );
    let text = format!("{MIN}login: {{ hint: 'Use your @example.com address' }}\nbranding: {{ name: Acme tools, accent: '#0b6e4f', support: https://help.example.com, templates_dir: pages }}\n");
    let out = check(&write(dir.path(), "c.yaml", &text));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("pages         \"Acme tools\", accent #0b6e4f (dark mode #"),
        "{stdout}"
    );
    assert!(
        stdout.contains(", support https://help.example.com, own templates: login.html"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint          \"Use your @example.com address\""),
        "{stdout}"
    );
    let plain = check(&write(dir.path(), "d.yaml", MIN));
    assert!(String::from_utf8_lossy(&plain.stdout)
        .contains("pages         \"Portcullis\", built-in colours"));

    let err = check_fails(&format!("{MIN}branding: {{ accent: '#ffcc00' }}\n"));
    assert!(
        err.contains("branding.accent: `#ffcc00` gives white button text a contrast of"),
        "{err}"
    );
}

/// Runs `check` on `text` and returns stderr, asserting exit code 1 and the file name in it.
fn check_fails(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "gateway.yaml", text);
    let out = check(&p);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&p.display().to_string()),
        "file not named: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("config OK"));
    stderr
}

#[test]
fn check_names_the_line_of_an_unknown_key() {
    let err = check_fails(&format!("{MIN}login:\n  ttl: 10m\n  resend_cooldwn: 5s\n"));
    assert!(err.contains("line 7"), "{err}");
    assert!(err.contains("resend_cooldwn"), "{err}");
}

#[test]
fn check_names_the_key_of_a_bad_duration() {
    let err = check_fails(&format!("{MIN}login:\n  ttl: ten minutes\n"));
    assert!(err.contains("login.ttl"), "{err}");
    assert!(err.contains("ten minutes"), "{err}");
}

#[test]
fn check_names_the_index_of_a_bad_allowed_email() {
    let err = check_fails(&format!(
        "{MIN}  allowed_emails: [\"ok@example.org\", \"Bob <bob@example.org>\"]\n"
    ));
    assert!(err.contains("access.allowed_emails[1]"), "{err}");
    assert!(!err.contains("allowed_emails[0]"), "{err}");
}

#[test]
fn check_requires_public_url() {
    let err = check_fails("upstream: builtin:whoami\naccess:\n  allowed_domains: [example.com]\n");
    assert!(err.contains("public_url"), "{err}");
    assert!(err.contains("required"), "{err}");
}

#[test]
fn check_reports_every_problem_at_once() {
    let err = check_fails(
        "public_url: ftp://x\nupstream: builtin:whoami\nlogin: { code_length: 2, max_code_attempts: 0 }\naccess: { allowed_domains: [\"bad domain\"] }\n",
    );
    for key in [
        "public_url",
        "login.code_length",
        "login.max_code_attempts",
        "access.allowed_domains[0]",
    ] {
        assert!(err.contains(key), "{key} missing: {err}");
    }
}

#[test]
fn check_reports_a_missing_file() {
    let out = check(Path::new("/nonexistent/portcullis.yaml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/portcullis.yaml"));
}

#[test]
fn serve_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = write(
        dir.path(),
        "bad.yaml",
        &format!("listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: builtin:whoami\naccess: {{ allowed_domains: [example.com] }}\nsession: {{ ttl: forever }}\n"),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&p)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, WAIT).expect("serve kept running with a bad config");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("session.ttl"), "{stderr}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "it listens anyway"
    );
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `portcullis serve` process; killed if the test fails half-way.
struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(config: &Path, log: &Path, base: &str) -> Served {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let served = Served { child };
    let http = Http::new(base);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.try_send(Req::get("/.auth/healthz")).await {
            if r.status == StatusCode::OK {
                return served;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(s: &mut Served) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_exit(&mut s.child, WAIT).expect("serve did not exit after SIGTERM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_cleanly_on_sigterm_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write(
        dir.path(),
        "portcullis.yaml",
        &format!(
            "listen: 127.0.0.1:{port}\npublic_url: {base}\ndata_dir: {}\nupstream: builtin:whoami\naccess:\n  allowed_domains: [example.com]\nemail:\n  transport: smtp\n  smtp: {{ host: 127.0.0.1, port: {}, security: none }}\nlimits:\n  shutdown_grace: 2s\n",
            dir.path().join("data").display(),
            smtp.port
        ),
    );
    let log = dir.path().join("serve.log");
    let mut s = serve(&config, &log, &base).await;

    let http = Http::new(&base);
    let r = http
        .send(Req::post("/.auth/api/login").json(&json!({"email": "cli@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["challenge_id"].clone();
    let code = smtp.wait_for_mail("cli@example.com", WAIT).await.code();
    let r = http
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": id, "code": code, "issue_token": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.json()["session_token"].as_str().unwrap().to_string();

    let status = sigterm(&mut s);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "exit on SIGTERM: {status}\n{logs}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // Started again on the same data_dir, the session is still there.
    let mut s = serve(&config, &log, &base).await;
    let r = Http::new(&base)
        .send(Req::get("/.auth/api/session").header("authorization", &format!("Bearer {token}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["email"], "cli@example.com");
    let status = sigterm(&mut s);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_reports_a_busy_port() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let p = write(
        dir.path(),
        "busy.yaml",
        &format!(
            "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\ndata_dir: {}\nupstream: builtin:whoami\naccess: {{ allowed_domains: [example.com] }}\n",
            dir.path().join("data").display()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, WAIT).expect("serve kept running on a busy port");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    drop(busy);
}

/// A self-signed certificate for `localhost` / 127.0.0.1 made with Debian's openssl; returns its DER.
fn make_cert(cert: &Path, key: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl is needed for the TLS test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(cert).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    der
}

/// Connects with TLS offering one ALPN protocol; returns the stream, the negotiated protocol and
/// the server's certificate. The client trusts exactly `trusted` (DER).
async fn tls_connect(
    port: u16,
    alpn: &[u8],
    trusted: &[Vec<u8>],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
    Vec<u8>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for t in trusted {
        roots
            .add(rustls::pki_types::CertificateDer::from(t.clone()))
            .unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    let proto = conn.alpn_protocol().map(|p| p.to_vec());
    let peer = conn.peer_certificates().unwrap()[0].to_vec();
    (tls, proto, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_h2_and_http1_by_alpn_and_reloads_its_certificate() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = make_cert(&cert, &key);
    let (port, tls_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "gateway.yaml",
        &format!(
            "listen: 127.0.0.1:{port}\ntls: {{ listen: \"127.0.0.1:{tls_port}\", cert: {}, key: {} }}\npublic_url: https://localhost:{tls_port}\nupstream: builtin:whoami\ndata_dir: {}\naccess: {{ allowed_domains: [example.com] }}\nemail: {{ transport: file, dir: {} }}\n",
            cert.display(),
            key.display(),
            dir.path().join("data").display(),
            dir.path().join("mail").display()
        ),
    );
    let mut served = serve(
        &config,
        &dir.path().join("log"),
        &format!("http://127.0.0.1:{port}"),
    )
    .await;

    // HTTP/2 by ALPN.
    let (tls, proto, peer) = tls_connect(tls_port, b"h2", std::slice::from_ref(&first)).await;
    assert_eq!(proto.as_deref(), Some(&b"h2"[..]));
    assert_eq!(peer, first);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{tls_port}/.auth/healthz"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    // A protected page over h2 redirects to the https login page.
    let req = http::Request::get(format!("https://localhost:{tls_port}/app"))
        .header("sec-fetch-mode", "navigate")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!(
            "https://localhost:{tls_port}/.auth/login?rd=https%3A%2F%2Flocalhost"
        )),
        "{loc}"
    );

    // HTTP/1.1 by ALPN.
    let (tls, proto, _) = tls_connect(tls_port, b"http/1.1", std::slice::from_ref(&first)).await;
    assert_eq!(proto.as_deref(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/.auth/healthz")
        .header("host", format!("localhost:{tls_port}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok\n");

    // A broken replacement is refused and the old certificate keeps serving.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, _, peer) = tls_connect(tls_port, b"http/1.1", std::slice::from_ref(&first)).await;
    assert_eq!(
        peer, first,
        "a broken certificate file replaced the working one"
    );

    // A new certificate is picked up without a restart.
    let (cert2, key2) = (dir.path().join("cert2.pem"), dir.path().join("key2.pem"));
    let second = make_cert(&cert2, &key2);
    std::fs::rename(&key2, &key).unwrap();
    std::fs::rename(&cert2, &cert).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, peer) =
            tls_connect(tls_port, b"http/1.1", &[first.clone(), second.clone()]).await;
        if peer == second {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(sigterm(&mut served).success());
}

/// `kill -9` right after the answers: what a client was told about (a session, a pending
/// challenge, a queued mail) is on disk, because the gateway fsyncs before it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_challenges_and_queued_mail_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start();
    let dead_smtp = free_port();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let yaml = |smtp_port: u16| {
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: {base}\ndata_dir: {}\nupstream: builtin:whoami\naccess:\n  allowed_domains: [example.com]\nemail:\n  transport: smtp\n  smtp: {{ host: 127.0.0.1, port: {smtp_port}, security: none }}\n",
            dir.path().join("data").display(),
        )
    };
    let config = write(dir.path(), "portcullis.yaml", &yaml(smtp.port));
    let log = dir.path().join("serve.log");
    let mut s = serve(&config, &log, &base).await;
    let http = Http::new(&base);
    let r = http
        .send(Req::post("/.auth/api/login").json(&json!({"email": "k9@example.com"})))
        .await;
    let id = r.json()["challenge_id"].clone();
    let code = smtp.wait_for_mail("k9@example.com", WAIT).await.code();
    let r = http
        .send(
            Req::post("/.auth/api/verify")
                .json(&json!({"challenge_id": id, "code": code, "issue_token": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let token = r.json()["session_token"].as_str().unwrap().to_string();
    s.child.kill().unwrap(); // SIGKILL: no shutdown, no final flush
    s.child.wait().unwrap();

    // Restart with SMTP down, ask for a mail, kill -9 again before it can be sent.
    std::fs::write(&config, yaml(dead_smtp)).unwrap();
    let mut s = serve(&config, &log, &base).await;
    let r = Http::new(&base)
        .send(Req::get("/.auth/api/session").header("authorization", &format!("Bearer {token}")))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "session lost by kill -9: {}",
        r.text()
    );
    let r = Http::new(&base)
        .send(Req::post("/.auth/api/login").json(&json!({"email": "later@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let pending = r.json()["challenge_id"].as_str().unwrap().to_string();
    s.child.kill().unwrap();
    s.child.wait().unwrap();

    // Back with SMTP up: the challenge is there and the queued mail goes out.
    std::fs::write(&config, yaml(smtp.port)).unwrap();
    let mut s = serve(&config, &log, &base).await;
    let r = Http::new(&base)
        .send(Req::get(&format!("/.auth/api/challenge/{pending}")))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "challenge lost by kill -9: {}",
        r.text()
    );
    smtp.wait_for_mail("later@example.com", WAIT).await;
    assert!(sigterm(&mut s).success());
}
