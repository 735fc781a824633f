//! Upgraded connections end with their session: a real WebSocket through the gateway to the echo
//! upstream's `/ws` is closed on both sides within seconds of logout, "sign out everywhere", an
//! admin revoke, `portcullis sessions revoke`, the session's expiry, or an `access` change by
//! reload; other users' sockets stay open, and an open socket counts as activity.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::process::BIN;
use crate::support::{Req, TestGateway, Upstream, WAIT};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// "Within a few seconds": the gateway re-checks every second; the rest is slack for a busy machine.
const LIMIT: Duration = Duration::from_secs(4);

async fn gateway() -> TestGateway {
    TestGateway::builder().echo_upstream().start().await
}

/// Opens `/ws` through the gateway with `header: value` as the credential; checks it works.
async fn open_with(gw: &TestGateway, header: &str, value: &str, email: &str) -> Ws {
    let mut req = format!("ws://127.0.0.1:{}/ws", gw.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
        http::HeaderValue::from_str(value).unwrap(),
    );
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let hello = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert_eq!(
        hello.unwrap().unwrap(),
        Message::Text(format!("hello {email}"))
    );
    assert_alive(&mut ws).await;
    ws
}

async fn open(gw: &TestGateway, token: &str, email: &str) -> Ws {
    open_with(gw, "cookie", &format!("portcullis_session={token}"), email).await
}

/// The socket still carries messages both ways.
async fn assert_alive(ws: &mut Ws) {
    ws.send(Message::Text("ping".into())).await.unwrap();
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no echo")
        .expect("the socket was closed")
        .expect("the socket failed");
    assert_eq!(m, Message::Text("echo: ping".into()));
}

/// Waits until the gateway ends the connection (close, EOF or reset); returns how long it took.
async fn ended(ws: &mut Ws, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let left = LIMIT.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("{what}: the WebSocket is still open {LIMIT:?} later"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                let took = start.elapsed();
                eprintln!("{what}: WebSocket closed {} ms after", took.as_millis());
                return took;
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// The upstream's side is closed too: it holds `n` sockets (within a second or two).
async fn upstream_holds(gw: &TestGateway, n: usize) {
    holds(gw.upstream(), n).await;
}

async fn holds(up: &Upstream, n: usize) {
    let deadline = Instant::now() + LIMIT;
    while up.open_websockets() != n {
        assert!(
            Instant::now() < deadline,
            "the upstream still holds {} WebSocket(s), expected {n}",
            up.open_websockets()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST path` with a session cookie, as the gateway's own page would.
fn post_as(token: &str, path: &str, fields: &[(&str, &str)]) -> Req {
    Req::post(path)
        .header("cookie", &format!("portcullis_session={token}"))
        .form(fields)
}

async fn status_of(gw: &TestGateway, token: &str) -> StatusCode {
    gw.http()
        .send(Req::get("/x").header("cookie", &format!("portcullis_session={token}")))
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_sessions_open_websocket_and_no_other() {
    let gw = gateway().await;
    let alice = gw.sign_in("alice@example.com").await;
    let bob = gw.sign_in("bob@example.com").await;
    let mut ws = open(&gw, &alice, "alice@example.com").await;
    let mut other = open(&gw, &bob, "bob@example.com").await;
    upstream_holds(&gw, 2).await;

    let r = gw.http().send(post_as(&alice, "/.auth/logout", &[])).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    ended(&mut ws, "logout").await;
    upstream_holds(&gw, 1).await;
    assert_alive(&mut other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_everywhere_ends_every_socket_of_the_user_cookie_or_bearer() {
    let gw = gateway().await;
    let one = gw.sign_in("carol@example.com").await;
    let two = gw.sign_in("carol@example.com").await;
    let bob = gw.sign_in("bob@example.com").await;
    let mut a = open(&gw, &one, "carol@example.com").await;
    let mut b = open_with(
        &gw,
        "authorization",
        &format!("Bearer {two}"),
        "carol@example.com",
    )
    .await;
    let mut other = open(&gw, &bob, "bob@example.com").await;

    let r = gw
        .http()
        .send(post_as(&one, "/.auth/sessions/revoke", &[("id", "all")]))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    ended(&mut a, "sign out everywhere (cookie socket)").await;
    ended(&mut b, "sign out everywhere (bearer socket)").await;
    upstream_holds(&gw, 1).await;
    assert_alive(&mut other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revoke_ends_the_users_open_websockets() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("admins", json!(["root@example.com"]))
        .start()
        .await;
    let root = gw.sign_in("root@example.com").await;
    let dave = gw.sign_in("dave@example.com").await;
    let mut ws = open(&gw, &dave, "dave@example.com").await;
    let mut own = open(&gw, &root, "root@example.com").await;

    let r = gw
        .http()
        .send(post_as(
            &root,
            "/.auth/admin/revoke",
            &[("email", "dave@example.com")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    ended(&mut ws, "admin revoke").await;
    upstream_holds(&gw, 1).await;
    assert_alive(&mut own).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sessions_revoke_ends_the_users_open_websockets() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .config_file()
        .start()
        .await;
    let erin = gw.sign_in("erin@example.com").await;
    let mut ws = open(&gw, &erin, "erin@example.com").await;
    let config = gw.config_path.clone().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args([
                "sessions",
                "revoke",
                "--email",
                "erin@example.com",
                "--config",
            ])
            .arg(config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ended(&mut ws, "portcullis sessions revoke").await;
    upstream_holds(&gw, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_ends_the_open_websocket() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("session.ttl", "1h")
        .start()
        .await;
    let token = gw.sign_in("frank@example.com").await;
    let mut ws = open(&gw, &token, "frank@example.com").await;
    gw.clock.advance(30 * 60);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_alive(&mut ws).await;
    gw.clock.advance(30 * 60 + 1);
    ended(&mut ws, "session expiry").await;
    upstream_holds(&gw, 0).await;
    assert_eq!(status_of(&gw, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_counts_as_activity_for_the_idle_timeout() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("session.idle_timeout", "10m")
        .start()
        .await;
    let token = gw.sign_in("gina@example.com").await;
    let mut ws = open(&gw, &token, "gina@example.com").await;
    // 24 minutes with no request, but the socket open all along.
    for _ in 0..4 {
        gw.clock.advance(6 * 60);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_alive(&mut ws).await;
    }
    assert_eq!(status_of(&gw, &token).await, StatusCode::OK);
    ws.close(None).await.unwrap();
    upstream_holds(&gw, 0).await;
    // Once it is closed, the idle timeout runs again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.clock.advance(11 * 60);
    assert_eq!(status_of(&gw, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_change_by_reload_ends_sockets_it_no_longer_allows() {
    let mut gw = TestGateway::builder()
        .echo_upstream()
        .config_file()
        .start()
        .await;
    let hugo = gw.sign_in("hugo@example.com").await;
    let guest = gw.sign_in("guest@partner.org").await;
    let mut ws = open(&gw, &hugo, "hugo@example.com").await;
    let mut kept = open(&gw, &guest, "guest@partner.org").await;
    // Let the file's modification time move on before the edit (coarse mtimes).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gw.write_config(|cfg| {
        cfg["access"] = json!({"allowed_domains": [], "allowed_emails": ["guest@partner.org"]});
    });
    // The moment the new access list is in force, new requests get 403 …
    let deadline = Instant::now() + WAIT;
    while status_of(&gw, &hugo).await != StatusCode::FORBIDDEN {
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // … and the open socket ends within seconds of it.
    ended(&mut ws, "access change by reload").await;
    upstream_holds(&gw, 1).await;
    assert_alive(&mut kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_route_made_private_by_reload_ends_anonymous_sockets() {
    let up = Upstream::start().await;
    let mut gw = TestGateway::builder()
        .config_file()
        .set("upstream", serde_json::Value::Null)
        .set(
            "routes",
            json!([{"host": "127.0.0.1", "upstream": up.url, "access": {"public": true}}]),
        )
        .start()
        .await;
    let mut ws = open_with(&gw, "x-test", "anonymous", "").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_alive(&mut ws).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gw.write_config(|cfg| {
        cfg["routes"][0]["access"] = json!({"allowed_domains": ["example.com"]});
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let r = gw.http().send(Req::get("/x")).await;
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ended(&mut ws, "public route made private").await;
    holds(&up, 0).await;
}
