//! Slow and silent connections: every phase before the first request is bounded by
//! `limits.header_read_timeout`, idle keep-alive by `limits.idle_timeout`, and connections are
//! capped per client IP and in total, while long-lived upgrades and streams are left alone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{eventually, raw_status, TestGateway, WAIT};

/// How long a connection the server should close may take to be closed: the configured timeout
/// plus a generous margin for a busy 2-core machine.
const CLOSE_BOUND: Duration = Duration::from_secs(15);

/// A TCP connection to `addr` from the loopback address `src` (Linux routes all of 127/8 to `lo`).
async fn connect_from(src: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(src), 0)).unwrap();
    s.connect(addr).await.unwrap()
}

/// Reads (and keeps) whatever arrives until the server closes the connection. `Some(bytes, how
/// long)` if it did within `bound`, `None` if the connection was still open.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    bound: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(bound, read_all).await {
        Ok(()) => Some((out, started.elapsed())),
        Err(_) => None,
    }
}

/// `GET /.auth/healthz` on a fresh connection from `src`; the raw response.
async fn healthz_from(src: Ipv4Addr, addr: SocketAddr) -> String {
    let mut s = connect_from(src, addr).await;
    s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (out, _) = closed_within(&mut s, WAIT)
        .await
        .expect("healthz connection never closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from a kept-alive connection.
pub(crate) async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("no content-length");
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let gw = TestGateway::builder()
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    let mut silent = TcpStream::connect(gw.addr()).await.unwrap();
    let (got, after) = closed_within(&mut silent, CLOSE_BOUND)
        .await
        .expect("a connection that sends nothing is still open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    eprintln!("silent connection closed after {after:?}");

    // A client that takes a moment before its request is still served.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(raw_status(&r), Some(200), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_http2_preface_is_closed_after_the_header_read_timeout() {
    let gw = TestGateway::builder()
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (_, after) = closed_within(&mut s, CLOSE_BOUND)
        .await
        .expect("a connection stuck in the HTTP/2 preface is still open");
    eprintln!("partial preface closed after {after:?}");

    // The whole preface and then no request at all: also bounded.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut s, CLOSE_BOUND)
        .await
        .expect("an HTTP/2 connection that never sends a request is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gw = TestGateway::builder()
        .set("limits.idle_timeout", "1s")
        .set("limits.header_read_timeout", "60s")
        .start()
        .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(raw_status(&r), Some(200), "{r}");
        // Well within the idle timeout: the connection is reused.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (got, after) = closed_within(&mut s, CLOSE_BOUND)
        .await
        .expect("an idle keep-alive connection is still open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    eprintln!("idle HTTP/1.1 keep-alive closed {after:?} after the last response (+200 ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_request_head_left_unfinished_is_cut_after_the_header_read_timeout() {
    // Idle for a minute is fine; a head that starts and stalls gets header_read_timeout.
    let gw = TestGateway::builder()
        .set("limits.idle_timeout", "60s")
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(raw_status(&r), Some(200), "{r}");
    // Longer than header_read_timeout, well within idle_timeout: still open and served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(raw_status(&r), Some(200), "{r}");
    s.write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (got, after) = closed_within(&mut s, CLOSE_BOUND)
        .await
        .expect("an unfinished second request head is still open");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    eprintln!("unfinished second head closed after {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let gw = TestGateway::builder()
        .set("limits.idle_timeout", "1s")
        .set("limits.header_read_timeout", "60s")
        .start()
        .await;
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1:{}/.auth/healthz", gw.port))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    resp.into_body().collect().await.unwrap();
    tokio::time::timeout(CLOSE_BOUND, conn)
        .await
        .expect("an idle HTTP/2 connection is still open")
        .unwrap()
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_cannot_take_every_connection() {
    const N: usize = 4;
    let gw = TestGateway::builder()
        .set("limits.max_connections_per_ip", N)
        .set("limits.header_read_timeout", "60s")
        .start()
        .await;
    let attacker = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(connect_from(attacker, gw.addr()).await);
    }
    // The attacker's next connection is refused at once (long before the header read timeout).
    let mut extra = connect_from(attacker, gw.addr()).await;
    let (got, after) = closed_within(&mut extra, CLOSE_BOUND)
        .await
        .expect("the connection over the per-IP limit was not refused");
    let got = String::from_utf8_lossy(&got);
    assert_eq!(raw_status(&got), Some(503), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    eprintln!("connection {} from one IP refused after {after:?}", N + 1);

    // Everyone else is served.
    let r = healthz_from(Ipv4Addr::new(127, 0, 0, 2), gw.addr()).await;
    assert_eq!(raw_status(&r), Some(200), "{r}");

    // A closed connection frees its slot.
    drop(held.pop());
    eventually(WAIT, "the freed per-IP slot was not reused", || async {
        let r = healthz_from(attacker, gw.addr()).await;
        (raw_status(&r) == Some(200)).then_some(())
    })
    .await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_connection_cap_refuses_new_connections_and_recovers() {
    const N: usize = 3;
    let gw = TestGateway::builder()
        .set("limits.max_connections", N)
        .set("limits.header_read_timeout", "60s")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(connect_from(Ipv4Addr::new(127, 0, 0, 1), gw.addr()).await);
    }
    let other = Ipv4Addr::new(127, 0, 0, 3);
    let mut extra = connect_from(other, gw.addr()).await;
    let (got, _) = closed_within(&mut extra, CLOSE_BOUND)
        .await
        .expect("the connection over the global limit was not refused");
    let got = String::from_utf8_lossy(&got);
    assert_eq!(raw_status(&got), Some(503), "{got}");

    drop(held.pop());
    eventually(WAIT, "the freed global slot was not reused", || async {
        let r = healthz_from(other, gw.addr()).await;
        (raw_status(&r) == Some(200)).then_some(())
    })
    .await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_streams_and_slow_answers_outlive_the_idle_timeout() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("limits.idle_timeout", "1s")
        .set("limits.header_read_timeout", "1s")
        .start()
        .await;
    let token = gw.sign_in("long@example.com").await;
    let cookie = format!("portcullis_session={token}");
    let quiet = Duration::from_millis(2500);

    // A WebSocket that says nothing for longer than both timeouts.
    let mut req = format!("ws://127.0.0.1:{}/ws", gw.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    let hello = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(hello, Message::Text("hello long@example.com".into()));
    tokio::time::sleep(quiet).await;
    ws.send(Message::Text("still there?".into())).await.unwrap();
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .expect("the WebSocket was cut")
        .expect("the WebSocket was cut");
    assert_eq!(m, Message::Text("echo: still there?".into()));
    ws.close(None).await.unwrap();

    // A streamed response that pauses for longer than both timeouts.
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/drip")
        .header("host", format!("127.0.0.1:{}", gw.port))
        .header("cookie", &cookie)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, Bytes::from_static(b"first chunk\n"));
    tokio::time::sleep(quiet).await;
    gw.upstream().release();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .expect("the streamed response was cut")
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second chunk\n"));

    // An upstream that takes longer than both timeouts to answer.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(
        format!("GET /delay/2500 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(raw_status(&r), Some(200), "{r}");
}

#[test]
fn connection_limits_have_defaults_and_bad_values_name_their_key() {
    const MIN: &str = "public_url: http://127.0.0.1:8080\nupstream: builtin:whoami\naccess: { allowed_domains: [example.com] }\n";
    let cfg = portcullis::Config::parse(MIN, Path::new("min.yaml")).unwrap();
    assert_eq!(cfg.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.limits.max_connections, 10_000);
    assert_eq!(cfg.limits.max_connections_per_ip, 256);
    for (limits, key) in [
        ("{ idle_timeout: 0s }", "limits.idle_timeout"),
        ("{ idle_timeout: soon }", "limits.idle_timeout"),
        ("{ idle_timeout: 2h }", "limits.idle_timeout"),
        ("{ max_connections: 0 }", "limits.max_connections"),
        (
            "{ max_connections_per_ip: 0 }",
            "limits.max_connections_per_ip",
        ),
        ("{ max_connections: -1 }", "limits.max_connections"),
    ] {
        let err =
            portcullis::Config::parse(&format!("{MIN}limits: {limits}\n"), Path::new("c.yaml"))
                .unwrap_err()
                .to_string();
        assert!(err.contains(key), "{limits}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// TLS: an in-process gateway with an HTTPS listener and a throw-away certificate
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost` made with openssl; returns its DER.
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
            "subjectAltName=DNS:localhost",
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

/// A gateway serving plain HTTP and HTTPS, stopped on drop.
struct TlsGateway {
    tls_port: u16,
    cert: Vec<u8>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl TlsGateway {
    async fn start(limits: &str) -> TlsGateway {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let cert = make_cert(&cert_path, &key_path);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (port, tls_port) = (
            http.local_addr().unwrap().port(),
            tls.local_addr().unwrap().port(),
        );
        let yaml = format!(
            "listen: 127.0.0.1:{port}\ntls: {{ listen: \"127.0.0.1:{tls_port}\", cert: {}, key: {} }}\npublic_url: https://localhost:{tls_port}\nupstream: builtin:whoami\ndata_dir: {}\naccess: {{ allowed_domains: [example.com] }}\nemail: {{ transport: file, dir: {} }}\nlimits: {limits}\n",
            cert_path.display(),
            key_path.display(),
            dir.path().join("data").display(),
            dir.path().join("mail").display()
        );
        let cfg = portcullis::Config::parse(&yaml, Path::new("tls.yaml"))
            .unwrap_or_else(|e| panic!("config rejected: {e}\n{yaml}"));
        let app = portcullis::App::with_listeners(
            cfg,
            Arc::new(portcullis::SystemClock),
            portcullis::Listeners {
                http,
                tls: Some(tls),
                metrics: None,
            },
        )
        .await
        .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run(async {
            let _ = rx.await;
        }));
        TlsGateway {
            tls_port,
            cert,
            _dir: dir,
            stop: Some(tx),
        }
    }

    /// Completes a TLS handshake (ALPN `alpn`) with the HTTPS listener.
    async fn handshake(
        &self,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.cert.clone()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(("127.0.0.1", self.tls_port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(WAIT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_goes_silent_after_the_handshake_is_closed() {
    let gw = TlsGateway::start("{ header_read_timeout: 1s }").await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut tls = gw.handshake(alpn).await;
        let (_, after) = closed_within(&mut tls, CLOSE_BOUND)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "a TLS connection ({}) silent after its handshake is still open",
                    String::from_utf8_lossy(alpn)
                )
            });
        eprintln!(
            "TLS ({}) silent after the handshake closed after {after:?}",
            String::from_utf8_lossy(alpn)
        );
    }
    // No ClientHello at all: also closed.
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.tls_port))
        .await
        .unwrap();
    closed_within(&mut tcp, CLOSE_BOUND)
        .await
        .expect("a TLS connection that never says hello is still open");

    // And a prompt client is served over TLS.
    let tls = gw.handshake(b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/.auth/healthz")
        .header("host", format!("localhost:{}", gw.tls_port))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A burst of new connections larger than 128 (`TcpListener::bind`'s backlog) while the accept
/// loop is busy: the kernel completes and queues them all, none waits for a SYN resend (a second
/// or more). Here nothing accepts at all, so every handshake that completes was queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_is_queued_while_the_accept_loop_is_busy() {
    // The kernel caps the backlog at net.core.somaxconn (4096 since Linux 5.4, 128 before).
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let burst = 600.min(somaxconn);
    if burst <= 256 {
        crate::support::skip(&format!(
            "net.core.somaxconn is {somaxconn} (sysctl -w net.core.somaxconn=4096 to run this test)"
        ));
        return;
    }
    // IPv4 and, where the machine has an IPv6 loopback, IPv6 (the listener is made per family).
    let mut families = vec!["127.0.0.1:0"];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        families.push("[::1]:0");
    } else {
        eprintln!("no IPv6 loopback on this machine: the burst is tried on IPv4 only");
    }
    for listen in families {
        burst_is_queued(listen, burst).await;
    }
}

async fn burst_is_queued(listen: &str, burst: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = |listen: &str| {
        let yaml = format!(
        "listen: \"{listen}\"\npublic_url: \"http://gw.example.com\"\ndata_dir: \"{}\"\nupstream: \"builtin:whoami\"\naccess:\n  allowed_domains: [\"example.com\"]\nemail:\n  from: \"a@example.com\"\n  transport: file\n  dir: \"{}\"\n",
        dir.path().display(),
        dir.path().display()
    );
        portcullis::Config::parse(&yaml, Path::new("test.yaml")).unwrap()
    };
    let listeners = portcullis::Listeners::bind(&config(listen)).await.unwrap();
    let addr = listeners.http.local_addr().unwrap();
    // SO_REUSEADDR (set as `TcpListener::bind` sets it) never lets a second listener share the
    // port: the second gateway gets an error naming the key and the address.
    let taken = portcullis::Listeners::bind(&config(&addr.to_string())).await;
    let err = taken.err().expect("a second listener bound a port in use");
    assert!(
        err.to_string().starts_with(&format!("listen {addr}: ")),
        "{err}"
    );
    let connects = (0..burst).map(|_| async move {
        tokio::time::timeout(Duration::from_millis(800), TcpStream::connect(addr))
            .await
            .is_ok_and(|r| r.is_ok())
    });
    let done = futures_util::future::join_all(connects).await;
    let queued = done.iter().filter(|ok| **ok).count();
    assert_eq!(
        queued, burst,
        "only {queued} of {burst} simultaneous connections to {addr} completed within 800 ms on a \
         listener nobody accepts from (the rest wait for a SYN resend): the listen backlog is too small"
    );
    drop(listeners);
}

/// The gateway-side sockets of `port`'s established connections as `ss` lists them (one line
/// each, with its timer), or `None` when `ss` (iproute2) is not installed.
fn server_side_sockets(port: u16) -> Option<Vec<String>> {
    let out = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// A client that vanishes (no FIN, no RST) while a request is in progress is noticed by the
/// kernel, HTTP/1 and HTTP/2 alike: every accepted connection, plain or TLS, carries TCP
/// keep-alive probes (and a user timeout: `net::watch_peer`'s own test reads both back). What
/// the kernel shows for the gateway's side of each connection: its keep-alive timer running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_connection_is_watched_for_a_vanished_peer() {
    if server_side_sockets(1).is_none() {
        return crate::support::skip("`ss` (Debian package iproute2) is not installed");
    }
    let gw = TestGateway::start().await;
    let mut plain = TcpStream::connect(gw.addr()).await.unwrap();
    plain
        .write_all(b"GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut plain).await;
    assert_eq!(raw_status(&r), Some(200), "{r}");
    let tls = TlsGateway::start("{ header_read_timeout: 60s }").await;
    let h2 = tls.handshake(b"h2").await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    for (what, port) in [("plain HTTP/1.1", gw.port), ("TLS, ALPN h2", tls.tls_port)] {
        // Both connections were accepted (an answer came, a handshake finished). While sent
        // bytes wait for their (delayed) ACK, `ss` shows the retransmission timer instead: look
        // again until nothing is in flight.
        let deadline = tokio::time::Instant::now() + WAIT;
        let lines = loop {
            let lines = server_side_sockets(port).unwrap_or_default();
            let quiet = !lines.is_empty() && lines.iter().all(|l| !l.contains("timer:(on,"));
            if quiet || tokio::time::Instant::now() >= deadline {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            !lines.is_empty(),
            "{what}: ss lists no connection on port {port}"
        );
        for line in lines {
            assert!(
                line.contains("timer:(keepalive,"),
                "{what}: the gateway's side of a client connection has no keep-alive timer: {line}"
            );
        }
    }
    drop((plain, h2));
}

/// The HTTP/2 attacks of `h2_wire` over TLS (ALPN `h2`), where the HTTP/2 server gets the
/// decrypted stream after the handshake: a connection error, rapid resets and a CONTINUATION
/// flood each end with the GOAWAY they get over plain TCP; a client still sending after the
/// GOAWAY sees the TLS stream end cleanly (close_notify, then the end of the stream: no reset);
/// and a new client is served after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_attacks_over_tls_end_as_they_do_over_plain_tcp() {
    use crate::support::h2raw::{code, frame, ty, Block, Outcome, H2};
    let gw = TlsGateway::start("{ max_header_bytes: 16384 }").await;
    let authority = format!("localhost:{}", gw.tls_port);
    let open = || async {
        let tls = gw.handshake(b"h2").await;
        let mut h = H2::over(Box::new(tls), authority.clone(), &[]).await;
        h.handshake().await;
        h.write_timeout = Duration::from_secs(5);
        h
    };
    let goaway = |o: &Outcome, want: u32, what: &str| match o {
        Outcome::GoAway { code, .. } if *code == want => {}
        o => panic!("{what}: expected GOAWAY({want:#x}), got {o:?}"),
    };
    let still_served = || async {
        let mut h = open().await;
        h.get(1, "/.auth/healthz", &[]).await;
        let o = h.outcome(1, WAIT).await;
        assert_eq!(o.status(), Some(200), "a new client is not served: {o:?}");
    };

    // DATA on stream 0 (a connection error), then 50 KB more after the GOAWAY went out.
    let mut h = open().await;
    h.send_frame(ty::DATA, 0, 0, b"hello").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ping = frame(ty::PING, 0, 0, &[0; 8]);
    let wrote = h.send_raw(&ping.repeat(50_000 / ping.len())).await;
    assert!(wrote.is_ok(), "the gateway reset the connection: {wrote:?}");
    let o = h.connection_outcome(WAIT).await;
    goaway(&o, code::PROTOCOL_ERROR, "DATA on stream 0");
    while !h.eof {
        if let crate::support::h2raw::Read::Timeout =
            h.read_frame(tokio::time::Instant::now() + WAIT).await
        {
            panic!("the connection was not closed after its GOAWAY");
        }
    }
    assert_eq!(h.read_error, None, "the TLS stream did not end cleanly");
    still_served().await;

    // Rapid resets: HEADERS and RST_STREAM pairs, far over the budget of 200 in 10 s.
    let mut h = open().await;
    let sent = h
        .flood_streams(2000, "/reset", &[], |s| {
            frame(ty::RST_STREAM, 0, s, &code::CANCEL.to_be_bytes())
        })
        .await;
    let o = h.connection_outcome(WAIT).await;
    goaway(&o, code::ENHANCE_YOUR_CALM, "rapid resets");
    assert!(sent < 1000, "{sent} streams before the connection ended");
    still_served().await;

    // A CONTINUATION flood: a header block that never ends.
    let mut h = open().await;
    let b = h.request_block("GET", "/flood", &[]);
    h.headers_open(1, &b.0, true).await;
    let mut chunk = Block::new();
    while chunk.len() + 110 < h.max_frame_size() {
        chunk = chunk.lit("x-flood", "f".repeat(100));
    }
    let cont = frame(ty::CONTINUATION, 0, 1, &chunk.0);
    let start = h.written;
    while h.written - start < 8 << 20 && h.goaway.is_none() && !h.eof {
        if h.send_raw(&cont).await.is_err() {
            break;
        }
        h.drain_for(Duration::from_millis(2)).await;
    }
    let cut = h.written - start;
    assert!(
        cut <= 16384 + (1 << 20),
        "CONTINUATION flood cut off only after {cut} bytes"
    );
    if let Some((c, _)) = h.goaway_code() {
        assert_ne!(c, code::NO_ERROR);
    }
    still_served().await;
}
