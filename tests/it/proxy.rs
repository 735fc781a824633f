//! Forwarding signed-in traffic to a real upstream: requests and responses intact and streamed,
//! forwarding headers, WebSockets, upstream failures.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::upstream::echoed;
use crate::support::{free_port, ChannelBody, Http, Req, TestGateway, WAIT};

/// A gateway in front of the echo upstream and a client signed in to it (by cookie).
async fn signed_in(email: &str) -> (TestGateway, Http, String) {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in(email).await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    (gw, c, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_path_query_body_and_forwarding_headers_arrive() {
    let (gw, c, _) = signed_in("alice@example.com").await;
    let r = c
        .send(
            Req::new(http::Method::PUT, "/a/b%20c/../d?x=1&y=%2F&x=2")
                .header("content-type", "text/plain")
                .header("x-custom", "kept")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "evil.com")
                .body("hello upstream"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-upstream").as_deref(), Some("echo"));
    let v = r.json();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["uri"], "/a/b%20c/../d?x=1&y=%2F&x=2");
    assert_eq!(v["body"], "hello upstream");
    assert_eq!(echoed(&v, "content-type"), ["text/plain"]);
    assert_eq!(echoed(&v, "x-custom"), ["kept"]);
    // The client is not a trusted proxy: its X-Forwarded-* are replaced.
    assert_eq!(echoed(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed(&v, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        echoed(&v, "x-forwarded-host"),
        [format!("127.0.0.1:{}", gw.port)]
    );
    assert_eq!(echoed(&v, "host"), [format!("127.0.0.1:{}", gw.port)]);
    assert_eq!(echoed(&v, "x-forwarded-email"), ["alice@example.com"]);
    assert_eq!(echoed(&v, "x-forwarded-user"), ["alice@example.com"]);

    for method in ["GET", "POST", "DELETE", "PATCH", "OPTIONS"] {
        let r = c
            .send(
                Req::new(method.parse().unwrap(), "/m").body(if method == "GET" {
                    ""
                } else {
                    "b"
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{method}");
        assert_eq!(r.json()["method"], method);
    }
    let r = c.send(Req::new(http::Method::HEAD, "/head")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(gw.upstream().seen_path("/head")[0].method, "HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_keep_forwarding_headers() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("trusted_proxies", serde_json::json!(["127.0.0.1/32"]))
        .start()
        .await;
    let token = gw.sign_in("t@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let r = c
        .send(
            Req::get("/t")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "app.example.com"),
        )
        .await;
    let v = r.json();
    assert_eq!(echoed(&v, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(echoed(&v, "x-forwarded-proto"), ["https"]);
    // The host the decision was made for, never a host the upstream could route differently on.
    assert_eq!(echoed(&v, "x-forwarded-host"), [gw.addr().to_string()]);
    // RFC 7239: the trusted chain is kept and this hop appended.
    let r = c
        .send(Req::get("/t").header("forwarded", "for=203.0.113.7;proto=https"))
        .await;
    let fwd = echoed(&r.json(), "forwarded");
    assert_eq!(fwd.len(), 1, "{fwd:?}");
    assert!(
        fwd[0].starts_with("for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host="),
        "{fwd:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_intact_both_ways() {
    let (gw, c, _) = signed_in("big@example.com").await;
    let body: String = (0..3_000_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = c.send(Req::post("/upload").body(body.clone())).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["body_len"], 3_000_000);
    assert!(
        v["body"].as_str().unwrap() == body,
        "request body changed on the way"
    );

    let r = c.send(Req::get("/bytes/5000000")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 5_000_000);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_streamed_not_buffered() {
    let (gw, c, _) = signed_in("stream@example.com").await;
    let (tx, body) = ChannelBody::pair();
    let req = c.clone();
    let pending = tokio::spawn(async move { req.send(Req::post("/stream-in").stream(body)).await });

    tx.send(Bytes::from_static(b"part one;")).await.unwrap();
    // The upstream must see the first part while the client still holds back the second.
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.upstream().chunks().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first part of the body never reached the upstream: the gateway buffers request bodies"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.upstream().chunks().concat(), b"part one;");
    tx.send(Bytes::from_static(b"part two")).await.unwrap();
    drop(tx);
    let r = pending.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body"], "part one;part two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_are_streamed_not_buffered() {
    let (gw, _c, token) = signed_in("drip@example.com").await;
    // Read the response frame by frame with a raw hyper connection.
    let stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/drip")
        .header("host", format!("127.0.0.1:{}", gw.port))
        .header("cookie", format!("portcullis_session={token}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("first chunk held back: the gateway buffers response bodies")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, Bytes::from_static(b"first chunk\n"));
    gw.upstream().release();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second chunk\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_status_and_headers_come_back() {
    let (_gw, c, _) = signed_in("status@example.com").await;
    for code in [201u16, 404, 418, 500, 503] {
        let r = c.send(Req::get(&format!("/status/{code}"))).await;
        assert_eq!(r.status.as_u16(), code);
        assert_eq!(r.header("x-upstream-status"), Some(code.to_string()));
        assert_eq!(r.text(), format!("status {code}"));
        // The application's own cookies reach the browser.
        assert_eq!(r.set_cookie("app_cookie").unwrap().value(), "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_works_through_the_gateway() {
    let (gw, _c, token) = signed_in("ws@example.com").await;
    let mut req = format!("ws://127.0.0.1:{}/ws", gw.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "cookie",
        format!("portcullis_session={token}").parse().unwrap(),
    );
    req.headers_mut()
        .insert("x-forwarded-email", "admin@example.com".parse().unwrap());
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let hello = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(hello, Message::Text("hello ws@example.com".into()));
    for i in 0..3 {
        ws.send(Message::Text(format!("ping {i}"))).await.unwrap();
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::Text(format!("echo: ping {i}")));
    }
    ws.send(Message::Binary(vec![0, 1, 2, 255])).await.unwrap();
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Binary(vec![0, 1, 2, 255]));
    ws.close(None).await.unwrap();
    // The upgrade request carried the session-derived identity and no session cookie.
    let seen = gw.upstream().seen_path("/ws");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("x-forwarded-email"), ["ws@example.com"]);
    assert!(seen[0].all("cookie").iter().all(|c| !c.contains(&token)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_without_a_session_is_refused() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let req = format!("ws://127.0.0.1:{}/ws", gw.port)
        .into_client_request()
        .unwrap();
    let err = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .expect_err("websocket opened without a session");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(gw.upstream().seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_502() {
    let port = free_port();
    let gw = TestGateway::builder()
        .set("upstream", format!("http://127.0.0.1:{port}"))
        .start()
        .await;
    let token = gw.sign_in("down@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    let r = c.send(Req::get("/api/x")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.error_code(), "upstream_unreachable");
    let r = c.send(Req::get("/page").navigate()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("502"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gives_504_instead_of_hanging() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("limits.upstream_timeout", "1s")
        .start()
        .await;
    let token = gw.sign_in("slow@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    // Quick exchanges first, then the slow one must time out at the limit (1 s, well before the
    // 5 s bound here). This client opens a connection per request; the kept upstream
    // connection's own timer is tested in upstream_wire.rs.
    for i in 0..5 {
        let r = c.send(Req::get(&format!("/delay/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let t = std::time::Instant::now();
    let r = c.send(Req::get("/slow")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.error_code(), "upstream_timeout");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    let r = c.send(Req::get("/slow").navigate()).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("504"));
    // A quick answer right after is fine.
    let r = c.send(Req::get("/delay/10")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_traffic_is_not_rate_limited_like_sign_ins() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("login.rate_limit.per_ip_per_minute", 1)
        .start()
        .await;
    let token = gw.sign_in("busy@example.com").await;
    let c = gw.http();
    c.set_cookie("portcullis_session", &token);
    for i in 0..30 {
        let r = c.send(Req::get(&format!("/n/{i}"))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(gw.upstream().seen().len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_are_all_answered() {
    let (gw, c, _) = signed_in("many@example.com").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.send(Req::get(&format!("/c/{i}"))).await;
            (r.status, r.json()["uri"].as_str().unwrap().to_string())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, uri) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(uri, format!("/c/{i}"));
    }
    assert_eq!(gw.upstream().seen().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_the_request_id() {
    let (_gw, c, _) = signed_in("rid@example.com").await;
    let v = c
        .send(Req::get("/rid").header("x-request-id", "forged-id"))
        .await
        .json();
    let ids = echoed(&v, "x-request-id");
    assert_eq!(ids.len(), 1, "{v}");
    assert_ne!(ids[0], "forged-id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_forwarded_with_identity() {
    let (gw, _c, token) = signed_in("h2@example.com").await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::get(gw.url("/h2?x=1"))
        .header("cookie", format!("portcullis_session={token}"))
        .header("x-forwarded-email", "admin@example.com")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["uri"], "/h2?x=1");
    assert_eq!(echoed(&v, "x-forwarded-email"), ["h2@example.com"]);
    assert_eq!(echoed(&v, "x-forwarded-user"), ["h2@example.com"]);
    assert_eq!(
        echoed(&v, "x-forwarded-host"),
        [format!("127.0.0.1:{}", gw.port)]
    );
    assert_eq!(echoed(&v, "host"), [format!("127.0.0.1:{}", gw.port)]);
    assert!(!v.to_string().contains(&token));

    // Without a session over HTTP/2: the same redirect as over HTTP/1.1.
    let req = http::Request::get(gw.url("/h2page"))
        .header("sec-fetch-mode", "navigate")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!(
            "{}/.auth/login?rd={}",
            gw.base,
            crate::support::enc(&gw.url("/h2page"))
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_connection_carries_many_requests() {
    let (gw, _c, token) = signed_in("keepalive@example.com").await;
    let stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Full<Bytes>>(
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    use http_body_util::BodyExt;
    for i in 0..5 {
        // Mix signed-in, auth-endpoint and unauthenticated requests on the same connection.
        let (path, cookie) = match i % 3 {
            0 => (format!("/k/{i}"), Some(token.clone())),
            1 => ("/.auth/api/session".to_string(), Some(token.clone())),
            _ => (format!("/k/{i}"), None),
        };
        let method = if i % 3 == 1 { "GET" } else { "POST" };
        let mut b = http::Request::builder()
            .method(method)
            .uri(&path)
            .header("host", format!("127.0.0.1:{}", gw.port))
            .header("accept", "application/json");
        if let Some(t) = &cookie {
            b = b.header("cookie", format!("portcullis_session={t}"));
        }
        let body = if i % 3 == 1 {
            String::new()
        } else {
            format!("body {i}")
        };
        let req = b
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        tokio::time::timeout(WAIT, sender.ready())
            .await
            .unwrap()
            .unwrap();
        let resp = tokio::time::timeout(WAIT, sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        match i % 3 {
            0 => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(v["body"], format!("body {i}"));
                assert_eq!(echoed(&v, "x-forwarded-email"), ["keepalive@example.com"]);
            }
            1 => assert_eq!(v["email"], "keepalive@example.com"),
            _ => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert!(v["headers"].is_null());
            }
        }
    }
    assert!(
        !conn.is_finished(),
        "the connection was closed between requests"
    );
    assert_eq!(gw.upstream().seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_with_expect_100_continue_work() {
    let (gw, _c, token) = signed_in("expect@example.com").await;
    let body = "x".repeat(100_000);
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: portcullis_session={token}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        gw.port,
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // Like curl: wait (a while) for "100 Continue", then send the body anyway.
    let mut buf = vec![0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
    let interim = match got {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    };
    s.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("no response to an Expect: 100-continue upload")
        .unwrap();
    let all = format!("{interim}{}", String::from_utf8_lossy(&rest));
    assert!(all.starts_with("HTTP/1.1 100 Continue"), "{all:.300}");
    let final_head = all.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(final_head.starts_with("HTTP/1.1 200"), "{all:.500}");
    assert!(all.contains("\"body_len\":100000"), "{all:.500}");
}

/// An upstream that answers HTTP/1.0 (python's http.server, old appliances): the client still
/// gets an HTTP/1.1 response on its kept-alive HTTP/1.1 connection, and the next request works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_does_not_downgrade_the_client_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nold server\n")
                    .await;
                // HTTP/1.0: the upstream closes after each response.
            });
        }
    });
    let gw = TestGateway::builder()
        .set("upstream", format!("http://{up}"))
        .start()
        .await;
    let token = gw.sign_in("old@example.com").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    for i in 0..2 {
        let req = format!(
            "GET /page{i} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: portcullis_session={token}\r\n\r\n",
            gw.port
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let resp = crate::connections::read_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
        assert!(resp.ends_with("old server\n"), "request {i}: {resp}");
    }
}
