//! HTTP/2 on the wire (RFC 9113), with a raw frame client (`support::h2raw`): what any correct
//! HTTP/2 server in this gateway must do with well-formed, malformed and abusive frames. The
//! security property checked throughout: a malformed or abusive request never reaches the
//! upstream, the stream or connection ends with the RFC's error code, and the gateway keeps
//! serving other clients.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::h2raw::{code, flag, setting, ty, Block, Outcome, H2};
use crate::support::TestGateway;

const T: Duration = Duration::from_secs(10);

async fn gateway() -> (TestGateway, String) {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("wire@example.com").await;
    (gw, format!("portcullis_session={token}"))
}

/// A fresh connection gets a 200 from the upstream for `path` within `within`.
async fn still_serves(gw: &TestGateway, cookie: &str, path: &str, within: Duration) {
    let started = Instant::now();
    let fut = async {
        let mut h = H2::connect(gw.addr()).await;
        h.get(1, path, &[("cookie", cookie)]).await;
        h.outcome(1, within).await
    };
    let o = tokio::time::timeout(within, fut)
        .await
        .unwrap_or(Outcome::Timeout);
    assert_eq!(o.status(), Some(200), "a new client is not served: {o:?}");
    assert!(started.elapsed() <= within);
}

fn json(o: &Outcome) -> Value {
    serde_json::from_str(&o.body_text()).unwrap_or_else(|e| panic!("not JSON ({e}): {o:?}"))
}

/// A malformed request: RST_STREAM or GOAWAY PROTOCOL_ERROR, or a 400 from the gateway.
fn is_refused_as_malformed(o: &Outcome) -> bool {
    matches!(o, Outcome::Reset(code::PROTOCOL_ERROR))
        || matches!(
            o,
            Outcome::GoAway {
                code: code::PROTOCOL_ERROR,
                ..
            }
        )
        || o.status() == Some(400)
}

/// A connection error with exactly `want`.
fn assert_goaway(o: &Outcome, want: u32, what: &str) {
    match o {
        Outcome::GoAway { code, .. } if *code == want => {}
        o => panic!("{what}: expected GOAWAY({want:#x}), got {o:?}"),
    }
}

// --- a. handshake ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_settings_ack_ping_and_unknown_frames_are_ignored() {
    let (gw, cookie) = gateway().await;
    // Our SETTINGS carries an id no RFC defines: it must be ignored (RFC 9113 §6.5.2).
    let mut h = H2::connect_with(gw.addr(), &[(0x99, 7), (setting::ENABLE_PUSH, 0)]).await;
    let first = h.first_frame.clone().unwrap();
    assert_eq!(first.ty, ty::SETTINGS, "server's first frame: {first:?}");
    assert!(
        !first.has(flag::ACK),
        "the server preface is a non-ACK SETTINGS"
    );
    h.handshake().await;

    h.ping(*b"pcullis1").await;
    assert!(
        h.read_until(T, |h| !h.ping_acks.is_empty()).await,
        "no PING ACK"
    );
    assert_eq!(h.ping_acks[0], *b"pcullis1");

    // Unknown frame types (on stream 0 and on an idle stream) and a PRIORITY are ignored.
    h.send_frame(0xfa, 0xff, 0, b"ignore me").await;
    h.send_frame(0x20, 0, 1, b"and me").await;
    h.priority(3, 0, 16).await;
    h.settings(&[(0x4242, 1)]).await;
    h.get(1, "/after-unknown", &[("cookie", &cookie)]).await;
    let o = h.outcome(1, T).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    assert_eq!(json(&o)["uri"], "/after-unknown");
    assert!(h.goaway.is_none(), "{:?}", h.goaway);
    assert!(
        h.read_until(T, |h| h.settings_acks >= 2).await,
        "our second SETTINGS was not ACKed"
    );
}

// --- b. a signed-in request ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_get_is_proxied_and_identity_headers_cannot_be_spoofed() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.get(
        1,
        "/raw?x=1",
        &[
            ("cookie", &cookie),
            ("x-forwarded-email", "admin@example.com"),
            ("x-forwarded-user", "admin@example.com"),
        ],
    )
    .await;
    let o = h.outcome(1, T).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    let v = json(&o);
    assert_eq!(v["uri"], "/raw?x=1");
    let seen = gw.upstream().seen_path("/raw");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("x-forwarded-email"), ["wire@example.com"]);
    assert_eq!(seen[0].all("x-forwarded-user"), ["wire@example.com"]);

    // Without a session the request is not forwarded at all.
    h.get(3, "/raw-anon", &[]).await;
    let o = h.outcome(3, T).await;
    assert!(o.status().is_some_and(|s| s != 200), "{o:?}");
    assert!(gw.upstream().seen_path("/raw-anon").is_empty());
}

// --- c. malformed requests ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_never_forwarded() {
    let (gw, cookie) = gateway().await;
    let authority = gw.addr().to_string();
    let base = |path: &str| {
        Block::new()
            .lit(":method", "GET")
            .lit(":scheme", "http")
            .lit(":authority", &authority)
            .lit(":path", path)
            .lit("cookie", &cookie)
    };
    let cases: Vec<(&str, Block)> = vec![
        ("uppercase field name", base("/m1").lit("X-Upper", "1")),
        ("connection", base("/m2").lit("connection", "close")),
        ("keep-alive", base("/m3").lit("keep-alive", "timeout=5")),
        (
            "proxy-connection",
            base("/m4").lit("proxy-connection", "keep-alive"),
        ),
        (
            "transfer-encoding",
            base("/m5").lit("transfer-encoding", "chunked"),
        ),
        ("upgrade", base("/m6").lit("upgrade", "websocket")),
        ("te: gzip", base("/m7").lit("te", "gzip")),
        (
            "missing :method",
            Block::new()
                .lit(":scheme", "http")
                .lit(":authority", &authority)
                .lit(":path", "/m8")
                .lit("cookie", &cookie),
        ),
        (
            "missing :scheme",
            Block::new()
                .lit(":method", "GET")
                .lit(":authority", &authority)
                .lit(":path", "/m9")
                .lit("cookie", &cookie),
        ),
        (
            "missing :path",
            Block::new()
                .lit(":method", "GET")
                .lit(":scheme", "http")
                .lit(":authority", &authority)
                .lit("cookie", &cookie),
        ),
        ("duplicate :path", base("/m10").lit(":path", "/m10b")),
        (
            "pseudo-header after a regular field",
            Block::new()
                .lit(":method", "GET")
                .lit(":scheme", "http")
                .lit(":authority", &authority)
                .lit("cookie", &cookie)
                .lit(":path", "/m11"),
        ),
        ("unknown pseudo-header", base("/m12").lit(":foo", "bar")),
        ("response pseudo-header", base("/m13").lit(":status", "200")),
        (
            "empty :path",
            Block::new()
                .lit(":method", "GET")
                .lit(":scheme", "http")
                .lit(":authority", &authority)
                .lit(":path", "")
                .lit("cookie", &cookie),
        ),
        ("CR in a value", base("/m14").lit("x-v", "a\rb")),
        ("LF in a value", base("/m15").lit("x-v", "a\nx-injected: 1")),
        ("NUL in a value", base("/m16").lit("x-v", "a\0b")),
        ("space in a name", base("/m17").lit("x y", "1")),
        ("colon in a name", base("/m18").lit("x:y", "1")),
    ];
    for (what, block) in &cases {
        let mut h = H2::connect(gw.addr()).await;
        h.headers(1, block, true).await;
        let o = h.outcome(1, T).await;
        eprintln!("{what}: {o:?}");
        assert!(
            is_refused_as_malformed(&o),
            "{what}: expected RST_STREAM/GOAWAY PROTOCOL_ERROR or 400, got {o:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = gw.upstream().seen();
    assert!(
        seen.is_empty(),
        "malformed requests reached the upstream: {seen:?}"
    );
    still_serves(&gw, &cookie, "/after-malformed", T).await;
}

// --- d. stream identifiers ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_identifier_violations_are_connection_errors() {
    let (gw, cookie) = gateway().await;
    for what in [
        "even stream id",
        "decreasing stream id",
        "DATA on 0",
        "HEADERS on 0",
    ] {
        let mut h = H2::connect(gw.addr()).await;
        h.handshake().await;
        match what {
            "even stream id" => h.get(2, "/even", &[("cookie", &cookie)]).await,
            "decreasing stream id" => {
                h.get(5, "/five", &[("cookie", &cookie)]).await;
                let o = h.outcome(5, T).await;
                assert_eq!(o.status(), Some(200), "{o:?}");
                h.get(3, "/three", &[("cookie", &cookie)]).await;
            }
            "DATA on 0" => h.send_frame(ty::DATA, flag::END_STREAM, 0, b"hello").await,
            _ => {
                let b = h.request_block("GET", "/zero", &[("cookie", &cookie)]);
                h.headers(0, &b, true).await;
            }
        }
        let o = h.connection_outcome(T).await;
        assert_goaway(&o, code::PROTOCOL_ERROR, what);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for p in ["/even", "/three", "/zero"] {
        assert!(gw.upstream().seen_path(p).is_empty(), "{p} was forwarded");
    }
    still_serves(&gw, &cookie, "/after-ids", T).await;
}

/// A connection error while the client is still sending: the GOAWAY reaches it and the
/// connection ends cleanly (the gateway reads and drops what comes after the bad frame for a
/// while), not with a reset that could cost the client the GOAWAY on a real network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_reaches_a_client_that_is_still_sending() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _cookie) = gateway().await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let mut first = crate::support::h2raw::PREFACE.to_vec();
    first.extend(crate::support::h2raw::frame(ty::SETTINGS, 0, 0, &[]));
    // DATA on stream 0: a connection error (RFC 9113 §6.1), then 50 KB of PINGs in the same
    // write and 50 KB more after the GOAWAY went out: the server reads none of them as frames.
    first.extend(crate::support::h2raw::frame(ty::DATA, 0, 0, b"hello"));
    let ping = crate::support::h2raw::frame(ty::PING, 0, 0, &[0; 8]);
    let pings = ping.repeat(50_000 / ping.len());
    first.extend(&pings);
    s.write_all(&first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wrote = s.write_all(&pings).await;
    assert!(wrote.is_ok(), "the gateway reset the connection: {wrote:?}");
    let mut out = Vec::new();
    let read = tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("the gateway never closed");
    // The frames: SETTINGS (and its ACK) first, then the GOAWAY.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= out.len() {
        let len =
            usize::from(out[at]) << 16 | usize::from(out[at + 1]) << 8 | usize::from(out[at + 2]);
        if out[at + 3] == ty::GOAWAY && at + 9 + len <= out.len() && len >= 8 {
            let p = &out[at + 9..at + 9 + len];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(goaway, Some(code::PROTOCOL_ERROR), "{out:?}");
    assert!(
        read.is_ok(),
        "the connection ended with {read:?}, not a clean close"
    );
}

// --- e. frame sizes -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_max_frame_size_is_a_frame_size_error() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    let max = h.max_frame_size();
    let b = h.request_block("POST", "/too-big", &[("cookie", &cookie)]);
    h.headers(1, &b, false).await;
    h.data(1, &vec![b'x'; max + 1], true).await;
    let o = h.connection_outcome(T).await;
    assert_goaway(&o, code::FRAME_SIZE_ERROR, "DATA of max_frame_size + 1");
    still_serves(&gw, &cookie, "/after-size", T).await;
}

/// (what, frame bytes) for control frames whose length is fixed by the RFC.
fn bad_length_frames() -> Vec<(&'static str, Vec<u8>)> {
    use crate::support::h2raw::frame;
    vec![
        (
            "SETTINGS of 7 bytes",
            frame(ty::SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff, 0]),
        ),
        ("PING of 7 bytes", frame(ty::PING, 0, 0, b"1234567")),
        ("PING of 9 bytes", frame(ty::PING, 0, 0, b"123456789")),
        (
            "WINDOW_UPDATE of 3 bytes",
            frame(ty::WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
        ),
        (
            "WINDOW_UPDATE of 5 bytes",
            frame(ty::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1, 0]),
        ),
        (
            "RST_STREAM of 3 bytes",
            frame(ty::RST_STREAM, 0, 1, &[0, 0, 8]),
        ),
        (
            "RST_STREAM of 5 bytes",
            frame(ty::RST_STREAM, 0, 1, &[0, 0, 0, 8, 0]),
        ),
    ]
}

async fn bad_length_outcomes() {
    let (gw, cookie) = gateway().await;
    for (what, bytes) in bad_length_frames() {
        let mut h = H2::connect(gw.addr()).await;
        h.handshake().await;
        if what.starts_with("RST_STREAM") {
            // An open stream to reset (a request body still to come).
            let b = h.request_block("POST", "/rst-len", &[("cookie", &cookie)]);
            h.headers(1, &b, false).await;
        }
        let _ = h.send_raw(&bytes).await;
        let o = h.connection_outcome(T).await;
        assert_goaway(&o, code::FRAME_SIZE_ERROR, what);
    }
    still_serves(&gw, &cookie, "/after-lengths", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_of_the_wrong_length_are_frame_size_errors() {
    bad_length_outcomes().await;
}

// --- f. SETTINGS values -------------------------------------------------------------------------

async fn bad_settings_outcomes(cases: &[(&str, u16, u32, u32)]) {
    let (gw, cookie) = gateway().await;
    for (what, id, value, want) in cases {
        let mut h = H2::connect(gw.addr()).await;
        h.handshake().await;
        h.settings(&[(*id, *value)]).await;
        let o = h.connection_outcome(T).await;
        assert_goaway(&o, *want, what);
    }
    still_serves(&gw, &cookie, "/after-settings", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_values_are_protocol_errors() {
    bad_settings_outcomes(&[
        (
            "ENABLE_PUSH=2",
            setting::ENABLE_PUSH,
            2,
            code::PROTOCOL_ERROR,
        ),
        (
            "MAX_FRAME_SIZE=16383",
            setting::MAX_FRAME_SIZE,
            16_383,
            code::PROTOCOL_ERROR,
        ),
        (
            "MAX_FRAME_SIZE=2^24",
            setting::MAX_FRAME_SIZE,
            1 << 24,
            code::PROTOCOL_ERROR,
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_window_size_over_2_31_minus_1_is_a_flow_control_error() {
    bad_settings_outcomes(&[(
        "INITIAL_WINDOW_SIZE=2^31",
        setting::INITIAL_WINDOW_SIZE,
        1 << 31,
        code::FLOW_CONTROL_ERROR,
    )])
    .await;
}

// --- g. WINDOW_UPDATE ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_zero_and_overflows_are_errors() {
    let (gw, cookie) = gateway().await;

    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    h.window_update(0, 0).await;
    assert_goaway(
        &h.connection_outcome(T).await,
        code::PROTOCOL_ERROR,
        "WINDOW_UPDATE 0 on the connection",
    );

    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    h.window_update(0, 0x7fff_ffff).await;
    assert_goaway(
        &h.connection_outcome(T).await,
        code::FLOW_CONTROL_ERROR,
        "connection window past 2^31-1",
    );

    // A stream still open on the server's side (its response is delayed).
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    h.get(1, "/delay/3000", &[("cookie", &cookie)]).await;
    h.window_update(1, 0x7fff_ffff).await;
    let o = h.outcome(1, T).await;
    assert!(
        matches!(o, Outcome::Reset(code::FLOW_CONTROL_ERROR))
            || matches!(
                o,
                Outcome::GoAway {
                    code: code::FLOW_CONTROL_ERROR,
                    ..
                }
            ),
        "stream window past 2^31-1: {o:?}"
    );
    still_serves(&gw, &cookie, "/after-window", T).await;
}

// --- h. response flow control -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_data_respects_the_clients_windows() {
    let (gw, cookie) = gateway().await;
    const N: usize = 100_000;
    let mut h = H2::connect_with(gw.addr(), &[(setting::INITIAL_WINDOW_SIZE, 100)]).await;
    h.auto_window_update = false;
    h.handshake().await;
    h.get(1, &format!("/bytes/{N}"), &[("cookie", &cookie)])
        .await;
    let got = |h: &H2| h.streams.get(&1).map_or(0, |s| s.data_received);
    let status = |h: &H2| h.streams.get(&1).and_then(|s| s.status);
    assert!(
        h.read_until(T, |h| got(h) >= 100).await,
        "no data: {:?}",
        h.streams.get(&1)
    );
    assert_eq!(status(&h), Some(200));
    h.drain_for(Duration::from_millis(500)).await;
    assert_eq!(got(&h), 100, "more DATA than the stream window of 100");

    // The stream window opened wide: the connection window (65,535) still holds.
    h.window_update(1, 1_000_000).await;
    assert!(
        h.read_until(T, |h| got(h) >= 65_535).await,
        "stalled at {}",
        got(&h)
    );
    h.drain_for(Duration::from_millis(500)).await;
    assert_eq!(got(&h), 65_535, "more DATA than the connection window");

    h.window_update(0, 1_000_000).await;
    assert!(
        h.read_until(T, |h| h.streams.get(&1).is_some_and(|s| s.ended))
            .await,
        "the body never finished: {}",
        got(&h)
    );
    let body = &h.streams[&1].body;
    let want: Vec<u8> = (0..N).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(body.len(), N);
    assert!(body == &want, "the body arrived altered");
}

// --- i. request bodies --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_request_body_reaches_the_upstream_intact() {
    let (gw, cookie) = gateway().await;
    const N: usize = 1 << 20;
    let body: Vec<u8> = (0..N).map(|i| b'A' + (i % 26) as u8).collect();
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    let len = N.to_string();
    let b = h.request_block(
        "POST",
        "/upload",
        &[("cookie", &cookie), ("content-length", &len)],
    );
    h.headers(1, &b, false).await;
    h.send_body(1, &body, true, Duration::from_secs(30))
        .await
        .unwrap();
    let o = h.outcome(1, Duration::from_secs(30)).await;
    assert_eq!(o.status(), Some(200), "{:?}", o.code());
    let v = json(&o);
    assert_eq!(v["body_len"], N);
    assert!(
        v["body"].as_str() == Some(std::str::from_utf8(&body).unwrap()),
        "body altered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_content_length_is_never_a_success() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    let b = h.request_block(
        "POST",
        "/short",
        &[("cookie", &cookie), ("content-length", "5")],
    );
    h.headers(1, &b, false).await;
    h.data(1, b"abc", true).await;
    let o = h.outcome(1, T).await;
    let ok = matches!(o, Outcome::Reset(code::PROTOCOL_ERROR))
        || matches!(
            o,
            Outcome::GoAway {
                code: code::PROTOCOL_ERROR,
                ..
            }
        )
        || o.status().is_some_and(|s| s >= 400);
    assert!(ok, "content-length 5 with 3 bytes: {o:?}");
    // A body longer than content-length too.
    let b = h.request_block(
        "POST",
        "/long",
        &[("cookie", &cookie), ("content-length", "2")],
    );
    h.headers(3, &b, false).await;
    h.data(3, b"abcdef", true).await;
    let o = h.outcome(3, T).await;
    let ok = matches!(o, Outcome::Reset(code::PROTOCOL_ERROR))
        || matches!(
            o,
            Outcome::GoAway {
                code: code::PROTOCOL_ERROR,
                ..
            }
        )
        || o.status().is_some_and(|s| s >= 400);
    assert!(ok, "content-length 2 with 6 bytes: {o:?}");
}

// --- j. header list limits ----------------------------------------------------------------------

/// 431, or the stream/connection refused; never a response from the upstream.
fn is_refused_as_too_large(o: &Outcome) -> bool {
    o.status() == Some(431)
        || matches!(o, Outcome::Reset(_))
        || matches!(o, Outcome::GoAway { code, .. } if *code != code::NO_ERROR)
        || matches!(o, Outcome::Eof)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_max_header_bytes_is_refused() {
    let (gw, cookie) = gateway().await;
    let limit = gw.state().config().limits.max_header_bytes;
    assert_eq!(limit, 16 * 1024, "the default limits.max_header_bytes");
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    let mut b = h.request_block("GET", "/big-head", &[("cookie", &cookie)]);
    let v = "v".repeat(4000);
    let mut i = 0;
    while b.len() < limit + 4096 {
        b = b.lit(format!("x-big-{i}"), &v);
        i += 1;
    }
    let max = h.max_frame_size();
    let (first, rest) = b.0.split_at(max.min(b.len()));
    h.headers_open(1, first, true).await;
    let chunks: Vec<&[u8]> = rest.chunks(max).collect();
    for (k, c) in chunks.iter().enumerate() {
        h.continuation(1, c, k + 1 == chunks.len()).await;
    }
    let o = h.outcome(1, T).await;
    assert!(is_refused_as_too_large(&o), "{o:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.upstream().seen_path("/big-head").is_empty());
    still_serves(&gw, &cookie, "/after-big-head", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_quickly() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    // One 4,000-byte entry in the dynamic table (index 62), then 4,000 one-byte references:
    // 8 KB on the wire, 16 MB decoded.
    let mut b = h
        .request_block("GET", "/bomb", &[("cookie", &cookie)])
        .lit_indexed("x-bomb", "b".repeat(4000));
    for _ in 0..4000 {
        b = b.indexed(62);
    }
    assert!(b.len() < h.max_frame_size());
    let started = Instant::now();
    h.headers(1, &b, true).await;
    let o = h.outcome(1, T).await;
    let took = started.elapsed();
    assert!(is_refused_as_too_large(&o), "{o:?}");
    assert!(took < Duration::from_secs(2), "the bomb took {took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.upstream().seen_path("/bomb").is_empty());
    still_serves(&gw, &cookie, "/after-bomb", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let (gw, cookie) = gateway().await;
    let limit = gw.state().config().limits.max_header_bytes;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    h.write_timeout = Duration::from_secs(3);
    let max = h.max_frame_size();
    let b = h.request_block("GET", "/flood", &[("cookie", &cookie)]);
    h.headers_open(1, &b.0, true).await;
    // Each CONTINUATION: whole literal fields, so a decoder can keep decoding them.
    let mut chunk = Block::new();
    while chunk.len() + 110 < max {
        chunk = chunk.lit("x-flood", "f".repeat(100));
    }
    let frame = crate::support::h2raw::frame(ty::CONTINUATION, 0, 1, &chunk.0);
    let start = h.written;
    let budget = 8 << 20;
    let mut closed_at = None;
    while h.written - start < budget {
        if h.send_raw(&frame).await.is_err() {
            closed_at = Some(h.written - start);
            break;
        }
        // Give the server a moment to act, and look for its GOAWAY.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2);
        if let crate::support::h2raw::Read::Eof = h.read_frame(deadline).await {
            closed_at = Some(h.written - start);
            break;
        }
        if h.goaway.is_some() {
            closed_at = Some(h.written - start);
            break;
        }
    }
    let closed_at = closed_at.unwrap_or_else(|| {
        panic!(
            "the server took {} MB of CONTINUATION without closing",
            budget >> 20
        )
    });
    eprintln!(
        "CONTINUATION flood cut off after {closed_at} bytes; goaway {:?}",
        h.goaway_code()
    );
    assert!(
        closed_at <= limit + (1 << 20),
        "closed only after {closed_at} bytes of CONTINUATION"
    );
    if let Some((c, _)) = h.goaway_code() {
        assert_ne!(c, code::NO_ERROR);
    }
    assert!(gw.upstream().seen_path("/flood").is_empty());
    still_serves(&gw, &cookie, "/after-flood", T).await;
}

// --- k. concurrency -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_max_concurrent_streams_are_refused() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    let max = *h
        .server_settings
        .get(&setting::MAX_CONCURRENT_STREAMS)
        .expect("the server does not limit concurrent streams");
    assert!((1..=1000).contains(&max), "MAX_CONCURRENT_STREAMS {max}");
    // `max` streams held open: request bodies that never come.
    for i in 0..max {
        let b = h.request_block("POST", &format!("/hold/{i}"), &[("cookie", &cookie)]);
        h.headers(2 * i + 1, &b, false).await;
    }
    let extra = 2 * max + 1;
    h.get(extra, "/one-too-many", &[("cookie", &cookie)]).await;
    let o = h.outcome(extra, T).await;
    assert!(
        matches!(
            o,
            Outcome::Reset(code::REFUSED_STREAM | code::PROTOCOL_ERROR)
        ),
        "stream {} of {max}: {o:?}",
        max + 1
    );
    for s in (1..extra).step_by(2) {
        assert!(
            h.streams.get(&s).and_then(|st| st.reset).is_none(),
            "stream {s} was reset"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.upstream().seen_path("/one-too-many").is_empty());
    // A refused stream is not a connection error: once one closes, a new stream works.
    h.data(1, b"", true).await;
    assert_eq!(h.outcome(1, T).await.status(), Some(200));
    h.get(extra + 2, "/after-refusal", &[("cookie", &cookie)])
        .await;
    let o = h.outcome(extra + 2, T).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_each_get_their_own_answer() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    let mut batch = Vec::new();
    for i in 0..200u32 {
        let b = h.request_block("GET", &format!("/mix/{i}?n={i}"), &[("cookie", &cookie)]);
        batch.extend(crate::support::h2raw::frame(
            ty::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            2 * i + 1,
            &b.0,
        ));
    }
    h.send_raw(&batch).await.unwrap();
    for i in 0..200u32 {
        let o = h.outcome(2 * i + 1, Duration::from_secs(30)).await;
        assert_eq!(o.status(), Some(200), "stream {}: {o:?}", 2 * i + 1);
        assert_eq!(
            json(&o)["uri"],
            format!("/mix/{i}?n={i}"),
            "mixed up answers"
        );
    }
    assert_eq!(gw.upstream().seen().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sequential_requests_on_one_connection() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    for i in 0..1000u32 {
        let s = 2 * i + 1;
        h.get(s, &format!("/seq/{i}"), &[("cookie", &cookie)]).await;
        let o = h.outcome(s, T).await;
        assert_eq!(o.status(), Some(200), "request {i}: {o:?}");
        assert_eq!(json(&o)["uri"], format!("/seq/{i}"));
        h.streams.remove(&s);
    }
    assert!(h.goaway.is_none());
}

// --- l. rapid reset -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_keeps_the_gateway_responsive() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    h.write_timeout = Duration::from_secs(5);
    let mut sent = 0u32;
    let mut batch = Vec::new();
    'attack: for i in 0..5000u32 {
        let s = 2 * i + 1;
        let b = h.request_block("GET", &format!("/rr/{i}"), &[("cookie", &cookie)]);
        batch.extend(crate::support::h2raw::frame(
            ty::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            s,
            &b.0,
        ));
        batch.extend(crate::support::h2raw::frame(
            ty::RST_STREAM,
            0,
            s,
            &code::CANCEL.to_be_bytes(),
        ));
        sent += 1;
        if batch.len() > 32 * 1024 || i == 4999 {
            if h.send_raw(&batch).await.is_err() {
                break 'attack;
            }
            batch.clear();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(1);
            let _ = h.read_frame(deadline).await;
            if h.goaway.is_some() || h.eof {
                break 'attack;
            }
        }
    }
    let _ = h.connection_outcome(Duration::from_millis(500)).await;
    eprintln!(
        "rapid reset: {sent} streams sent, goaway {:?}, eof {}",
        h.goaway_code(),
        h.eof
    );
    still_serves(&gw, &cookie, "/after-rapid-reset", Duration::from_secs(3)).await;
    let forwarded = gw
        .upstream()
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/rr/"))
        .count();
    eprintln!("rapid reset: {forwarded} reached the upstream");
    assert!(
        forwarded <= 5000,
        "{forwarded} requests reached the upstream"
    );
}

// --- m. floods without reading ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_without_reading_are_bounded() {
    let (gw, cookie) = gateway().await;
    for kind in ["PING", "SETTINGS"] {
        let mut h = H2::connect(gw.addr()).await;
        h.handshake().await;
        h.write_timeout = Duration::from_secs(3);
        let one = match kind {
            "PING" => crate::support::h2raw::frame(ty::PING, 0, 0, b"floodpng"),
            _ => crate::support::h2raw::frame(ty::SETTINGS, 0, 0, &[]),
        };
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        // 50,000 frames at least; go on (up to 2,000,000) until the server closes or stops
        // reading: kernel buffers alone can hold the first few MB.
        let mut frames = 0usize;
        let mut stopped = None;
        while frames < 2_000_000 {
            match h.send_raw(&batch).await {
                Ok(()) => frames += 1000,
                Err(e) => {
                    stopped = Some(e.kind());
                    break;
                }
            }
        }
        eprintln!("{kind} flood: {frames} frames written, then {stopped:?}");
        assert!(frames >= 1000, "{kind}: the server closed at once");
        assert!(
            stopped.is_some(),
            "{kind}: the server read {frames} frames without ever closing or pushing back"
        );
        still_serves(&gw, &cookie, &format!("/after-{kind}-flood"), T).await;
        drop(h);
    }
}

// --- n. graceful stop ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_sends_goaway_and_finishes_the_in_flight_response() {
    let (mut gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    h.get(1, "/delay/1000", &[("cookie", &cookie)]).await;
    let up = gw.upstream.clone().unwrap();
    crate::support::eventually(T, "the request reached the upstream", || {
        let n = up.seen_path("/delay/1000").len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let stopper = tokio::spawn(async move {
        gw.stop().await;
        gw
    });
    assert!(
        h.read_until(T, |h| h.goaway.is_some()).await,
        "no GOAWAY on stop"
    );
    let (c, _) = h.goaway_code().unwrap();
    assert_eq!(c, code::NO_ERROR, "a graceful stop is GOAWAY(NO_ERROR)");
    let o = h.outcome(1, T).await;
    assert_eq!(o.status(), Some(200), "the in-flight response: {o:?}");
    assert_eq!(json(&o)["delayed_ms"], 1000);
    let _gw = stopper.await.unwrap();
}

// --- o. answers while a header block is half gathered -------------------------------------------

/// A request's header block split over HEADERS and CONTINUATION, with another stream's answer
/// sent in between: both requests reach the upstream whole and get their own answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_between_headers_and_continuation_leaves_the_block_intact() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    // Stream 1's answer comes 300 ms later, while stream 3's block waits for its CONTINUATION.
    h.get(1, "/delay/300", &[("cookie", &cookie)]).await;
    let b = h.request_block(
        "GET",
        "/second-split",
        &[("cookie", &cookie), ("x-split", "yes")],
    );
    let (front, back) = b.0.split_at(b.0.len() / 2);
    // Nothing else may be sent until the block ends (RFC 9113 §6.10), not even WINDOW_UPDATE.
    h.auto_window_update = false;
    h.headers_open(3, front, true).await;
    let o = h.outcome(1, T).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    assert!(o.body_text().contains("delayed_ms"), "{}", o.body_text());
    h.continuation(3, back, true).await;
    let o = h.outcome(3, T).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    let seen = gw.upstream().seen_path("/second-split");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("x-split"), vec!["yes".to_string()]);
}

// --- p. resets of any origin, stalls, late frames, large answers --------------------------------

/// Rapid reset in every form: the client's own RST_STREAM, and stream errors it provokes so that
/// the server resets the stream ("MadeYouReset": WINDOW_UPDATE of 0 on the stream, a PRIORITY
/// on itself, DATA after END_STREAM). Each stream is being answered (its handler started) when
/// it ends; the connection must be sent away with ENHANCE_YOUR_CALM long before the attacker's
/// 2,000 streams, and few of them may reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_resets_of_every_kind_end_the_connection() {
    use crate::support::h2raw::frame;
    let (gw, cookie) = gateway().await;
    for kind in [
        "RST_STREAM",
        "WINDOW_UPDATE 0",
        "PRIORITY on itself",
        "DATA after END_STREAM",
    ] {
        let mut h = H2::connect(gw.addr()).await;
        h.handshake().await;
        h.write_timeout = Duration::from_secs(5);
        let prefix = format!("/delay/100/{}", kind.replace(' ', "-"));
        let sent = h
            .flood_streams(2000, &prefix, &[("cookie", &cookie)], |s| match kind {
                "RST_STREAM" => frame(ty::RST_STREAM, 0, s, &code::CANCEL.to_be_bytes()),
                "WINDOW_UPDATE 0" => frame(ty::WINDOW_UPDATE, 0, s, &[0, 0, 0, 0]),
                "PRIORITY on itself" => {
                    let mut p = s.to_be_bytes().to_vec();
                    p.push(16);
                    frame(ty::PRIORITY, 0, s, &p)
                }
                _ => frame(ty::DATA, 0, s, b"x"),
            })
            .await;
        let o = h.connection_outcome(T).await;
        assert_goaway(&o, code::ENHANCE_YOUR_CALM, kind);
        assert!(
            sent < 1000,
            "{kind}: {sent} streams before the connection ended"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reached = gw
            .upstream()
            .seen()
            .iter()
            .filter(|r| r.uri.starts_with(&prefix))
            .count();
        assert!(reached <= 400, "{kind}: {reached} reached the upstream");
    }
    still_serves(&gw, &cookie, "/after-resets", T).await;
}

/// A client that keeps its connection alive but never opens its window holds an answer no
/// longer than `limits.idle_timeout`: the stream is reset with CANCEL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_stalled_on_the_clients_window_is_cancelled() {
    let gw = TestGateway::builder()
        .echo_upstream()
        .set("limits.idle_timeout", "1s")
        .start()
        .await;
    let cookie = format!(
        "portcullis_session={}",
        gw.sign_in("stall@example.com").await
    );
    let mut h = H2::connect_with(gw.addr(), &[(setting::INITIAL_WINDOW_SIZE, 0)]).await;
    h.auto_window_update = false;
    h.handshake().await;
    h.get(1, "/bytes/5000", &[("cookie", &cookie)]).await;
    let started = Instant::now();
    let o = h.outcome(1, Duration::from_secs(10)).await;
    assert!(matches!(o, Outcome::Reset(c) if c == code::CANCEL), "{o:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "cancelled after {waited:?}"
    );
    assert_eq!(h.streams.get(&1).map_or(0, |s| s.data_received), 0);
}

/// DATA and trailers the client sent before the server's early answer (and its RST_STREAM
/// NO_ERROR) reached it are ignored: the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_after_an_early_answer_are_ignored() {
    let (gw, cookie) = gateway().await;
    let mut h = H2::connect(gw.addr()).await;
    h.handshake().await;
    // No session: answered at once, without reading the body.
    let b = h.request_block("POST", "/early", &[]);
    h.headers(1, &b, false).await;
    let o = h.outcome(1, T).await;
    assert!(
        matches!(o, Outcome::Response { .. } | Outcome::Reset(_)),
        "{o:?}"
    );
    h.data(1, b"late body", false).await;
    let trailers = crate::support::h2raw::Block::new().lit("x-trailer", "1");
    h.headers(1, &trailers, true).await;
    h.get(3, "/after-early", &[("cookie", &cookie)]).await;
    let o = h.outcome(3, T).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    assert!(gw.upstream().seen_path("/early").is_empty());
}

/// A large answer to a client with large windows (as browsers grant) arrives whole and without
/// stalls while the server's output buffer fills and drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_flows_without_stalls() {
    let (gw, cookie) = gateway().await;
    const N: usize = 6_000_000;
    let mut h = H2::connect_with(gw.addr(), &[(setting::INITIAL_WINDOW_SIZE, 16 << 20)]).await;
    h.handshake().await;
    h.window_update(0, 16 << 20).await;
    h.get(1, &format!("/bytes/{N}"), &[("cookie", &cookie)])
        .await;
    // Without the drain wake-up each 256 KiB waited for the 10 s phase timer.
    let o = h.outcome(1, Duration::from_secs(8)).await;
    match o {
        Outcome::Response { status, body, .. } => {
            assert_eq!(status, 200);
            assert_eq!(body.len(), N);
        }
        o => panic!("{o:?}"),
    }
}

// --- q. random frames ---------------------------------------------------------------------------

/// Random frame sequences (any type, flags, stream id and payload, after a valid handshake and
/// among valid requests) never crash or hang the server: each connection ends or goes on, and a
/// fresh client is served afterwards. 300 connections of up to 40 frames, from a fixed seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frame_sequences_never_break_the_server() {
    use crate::support::h2raw::frame;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A panic in a connection task would only end that task: count them (nextest runs each test
    // in its own process, so the hook sees this test's panics only).
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let (gw, cookie) = gateway().await;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x9e37_79b9);
    let mut next = move || rand::Rng::gen::<u64>(&mut rng);
    for round in 0..300u32 {
        let mut h = H2::connect(gw.addr()).await;
        h.handshake().await;
        h.write_timeout = Duration::from_secs(2);
        let mut bytes = Vec::new();
        for _ in 0..(next() % 40) {
            let r = next();
            let ty = (r % 12) as u8;
            let flags = (r >> 8) as u8;
            let stream = match (r >> 16) % 4 {
                0 => 0,
                1 => 1,
                2 => ((r >> 20) % 50) as u32,
                _ => (r >> 32) as u32,
            };
            let len = ((r >> 40) % 64) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if (r >> 60) % 4 == 0 {
                let b = h.request_block("GET", &format!("/rand/{round}"), &[("cookie", &cookie)]);
                bytes.extend(frame(
                    ty::HEADERS,
                    flag::END_HEADERS | flag::END_STREAM,
                    stream | 1,
                    &b.0,
                ));
            } else {
                bytes.extend(frame(ty, flags, stream, &payload));
            }
        }
        let _ = h.send_raw(&bytes).await;
        // Whatever the server makes of it, it answers or closes within the time limit.
        h.drain_for(Duration::from_millis(20)).await;
    }
    still_serves(&gw, &cookie, "/after-random", T).await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
}
