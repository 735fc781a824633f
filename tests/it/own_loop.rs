//! The gateway's own HTTP/1.1 loop against hyper: whatever bytes a client sends, the requests the
//! loop reads before it hands the connection over, followed by what hyper reads from the rest,
//! are exactly the requests hyper alone reads from those bytes (method, target, version, every
//! field in order, body). So no request can be framed one way by the loop and another way by the
//! server that would otherwise have read it. Then the same through a running gateway.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis::server::h1::{parse, request, Head, Parse};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// One request as read: method, target, version, fields in order, body.
type Seen = (String, String, String, Vec<(String, Vec<u8>)>, Vec<u8>);

fn seen<B>(req: &http::Request<B>, body: Vec<u8>) -> Seen {
    (
        req.method().to_string(),
        req.uri().to_string(),
        format!("{:?}", req.version()),
        req.headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
    )
}

/// What hyper's HTTP/1 server, configured as the gateway configures it, reads from `bytes`.
async fn hyper_reads(bytes: &[u8]) -> Vec<Seen> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = log.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = tokio::time::timeout(Duration::from_millis(500), body.collect()).await;
            if let Ok(Ok(b)) = body {
                let req = http::Request::from_parts(parts, ());
                sink.lock().unwrap().push(seen(&req, b.to_bytes().to_vec()));
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            ))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(16 * 1024)
        .keep_alive(true)
        .serve_connection(TokioIo::new(server), service);
    let (mut rd, mut wr) = tokio::io::split(client);
    let input = bytes.to_vec();
    // The write side stays open (hyper leaves requests still buffered unread once it sees the
    // client's FIN; the own loop does not, and real clients keep it open anyway); each input ends
    // with a request that closes the connection.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&input).await;
        std::future::pending::<()>().await;
        drop(wr);
    });
    let reader = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
    });
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
    writer.abort();
    reader.abort();
    let out = log.lock().unwrap().clone();
    out
}

/// What the own loop reads from `bytes` before it hands over (or closes), and where it stopped.
fn own_reads(bytes: &[u8]) -> (Vec<Seen>, usize, bool) {
    let mut head = Head::default();
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match parse(&bytes[at..], &mut head) {
            Parse::Head { len, fields, close } => {
                let b = Bytes::copy_from_slice(&bytes[at..at + len]);
                let Some(req) = request(&b, &head, fields) else {
                    return (out, at, false);
                };
                assert!(
                    req.headers().get("content-length").is_none()
                        && req.headers().get("transfer-encoding").is_none(),
                    "took a request with body framing: {:?}",
                    String::from_utf8_lossy(&b)
                );
                out.push(seen(&req, Vec::new()));
                at += len;
                if close {
                    return (out, at, true);
                }
            }
            Parse::Partial | Parse::HandOver => return (out, at, false),
        }
    }
}

/// Ends every input: a request that closes the connection.
const LAST: &[u8] = b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// How many requests the own loop took, and whether hyper then read the rest.
async fn check(input: &[u8]) -> Result<(usize, bool), String> {
    let bytes = &[input, LAST].concat()[..];
    let alone = hyper_reads(bytes).await;
    let (mut both, at, closed) = own_reads(bytes);
    let taken = both.len();
    if !closed {
        both.extend(hyper_reads(&bytes[at..]).await);
    }
    if both == alone {
        Ok((taken, !closed))
    } else {
        Err(format!(
            "input {:?}\n  hyper alone: {alone:?}\n  own loop ({at} bytes) then hyper: {both:?}",
            String::from_utf8_lossy(bytes)
        ))
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "DELETE", "OPTIONS", "CONNECT", "get", "G T", "PRI", "TRACE",
];
const TARGETS: &[&str] = &[
    "/",
    "/a%2Fb",
    "/..;/admin",
    "*",
    "http://h/x",
    "//x",
    "/a b",
    "/\x7f",
    "/é",
    "",
    "/?q=1#f",
    "a:443",
];
const VERSIONS: &[&str] = &[
    "HTTP/1.1",
    "HTTP/1.0",
    "HTTP/1.2",
    "HTTP/2.0",
    "http/1.1",
    "HTTP/1.1 ",
    "HTTP/1",
];
const EOLS: &[&str] = &["\r\n", "\n", "\r"];
const FIELDS: &[&str] = &[
    "Host: a",
    "Host: b",
    "Content-Length: 3",
    "Content-Length: 0",
    "Content-Length: 3, 3",
    "Content-Length: +3",
    "Content-Length: 03",
    "content-LENGTH: 5",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: xchunked",
    "Transfer-Encoding : chunked",
    " Transfer-Encoding: chunked",
    "Transfer-Encoding:\tchunked",
    "transfer-encoding: CHUNKED",
    "Transfer-Encoding: gzip, chunked",
    "Transfer_Encoding: chunked",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: keep-alive, Upgrade",
    "connection: CLOSE, x",
    "Upgrade: websocket",
    "Expect: 100-continue",
    "X-A: b\0c",
    "X-A: caf\u{e9}",
    "Bad Name: x",
    ": empty",
    "X-Empty:",
    "X-Fold: a\r\n b",
    "Cookie: portcullis_session=x",
    "X-Forwarded-For: 1.2.3.4",
];
const BODIES: &[&str] = &[
    "",
    "abc",
    "0\r\n\r\n",
    "3\r\nabc\r\n0\r\n\r\n",
    "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "\r\n",
];

/// `usual` with probability `p`, else any entry of `list`.
fn pick(rng: &mut impl Rng, p: f64, usual: &'static str, list: &[&'static str]) -> &'static str {
    if rng.gen_bool(p) {
        usual
    } else {
        list[rng.gen_range(0..list.len())]
    }
}

fn random_request(rng: &mut impl Rng) -> String {
    let eol = pick(rng, 0.85, "\r\n", EOLS);
    let method = pick(rng, 0.6, "GET", METHODS);
    let target = pick(rng, 0.6, "/", TARGETS);
    let version = pick(rng, 0.7, "HTTP/1.1", VERSIONS);
    let mut s = format!("{method} {target} {version}{eol}");
    for _ in 0..rng.gen_range(0..5) {
        s.push_str(FIELDS[rng.gen_range(0..FIELDS.len())]);
        s.push_str(eol);
    }
    s.push_str(eol);
    if rng.gen_bool(0.4) {
        s.push_str(BODIES[rng.gen_range(0..BODIES.len())]);
    }
    s
}

/// The reported framing attacks and their neighbours, then thousands of random request sequences
/// built from the same parts: the loop never reads a request hyper would not read the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_loop_reads_every_byte_sequence_exactly_as_hyper_does() {
    let table: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after-close HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let mut failures = Vec::new();
    // (inputs where the loop took a request, took one and then handed over)
    let mut seen = (0, 0);
    let mut tally = |r: Result<(usize, bool), String>| match r {
        Ok((taken, handed)) => {
            seen.0 += usize::from(taken > 0);
            seen.1 += usize::from(taken > 0 && handed);
        }
        Err(e) => failures.push(e),
    };
    for raw in table {
        tally(check(raw).await);
    }
    let seed: u64 = std::env::var("OWN_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001);
    let cases: usize = std::env::var("OWN_LOOP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..cases {
        let n = rng.gen_range(1..=3);
        let raw: String = (0..n).map(|_| random_request(&mut rng)).collect();
        tally(check(raw.as_bytes()).await);
    }
    eprintln!(
        "own loop vs hyper: {} inputs; the loop took requests in {}, then handed over in {}",
        table.len() + cases,
        seen.0,
        seen.1
    );
    // The generator must exercise both the loop and the hand-over, or this proves nothing.
    assert!(seen.0 > cases / 10 && seen.1 > cases / 20, "{seen:?}");
    assert!(
        failures.is_empty(),
        "{} of {} inputs read differently (seed {seed}):\n{}",
        failures.len(),
        table.len() + cases,
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Reads from `s` until the gateway closes it.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// One client write carries four requests: two without a body (the own loop), one with a body
/// (handed to hyper mid-connection with the bytes already read), one more, then
/// `Connection: close`. Each gets its own answer, in order; the upstream sees each exactly once
/// with the gateway's identity, never the client's spoofed one; the connection then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_and_without_bodies_are_answered_in_order_on_one_connection() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("alice@example.com").await;
    let host = gw.addr();
    let cookie =
        format!("Cookie: portcullis_session={token}\r\nX-Forwarded-Email: mallory@example.com\r\n");
    let raw = format!(
        "GET /one HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\n\
         HEAD /two HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\n\
         POST /three HTTP/1.1\r\nHost: {host}\r\n{cookie}Content-Length: 5\r\n\r\nhello\
         GET /four HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let out = read_to_close(&mut s).await;
    let starts: Vec<usize> = out.match_indices("HTTP/1.1 ").map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 4, "{out}");
    let answers: Vec<&str> = starts
        .iter()
        .enumerate()
        .map(|(i, &a)| &out[a..starts.get(i + 1).copied().unwrap_or(out.len())])
        .collect();
    for (i, path) in ["/one", "/two", "/three", "/four"].iter().enumerate() {
        assert!(
            answers[i].starts_with("HTTP/1.1 200"),
            "answer {i}: {}",
            answers[i]
        );
        if *path != "/two" {
            assert!(
                answers[i].contains(&format!("\"uri\":\"{path}\"")),
                "answer {i}: {}",
                answers[i]
            );
        }
    }
    assert!(
        !answers[1].contains("\"uri\""),
        "a HEAD answer carried a body: {}",
        answers[1]
    );
    assert!(answers[2].contains("\"body\":\"hello\""), "{}", answers[2]);
    assert!(
        answers[3]
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        answers[3]
    );
    let seen = gw.upstream().seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(paths, ["/one", "/two", "/three", "/four"]);
    for r in &seen {
        assert_eq!(r.all("x-forwarded-email"), ["alice@example.com"], "{r:?}");
    }
}

/// The lingering close is bounded whatever the client does after the answer: silent for a
/// second (closed after `LINGER_QUIET`: its next bytes are refused at once), trickling a byte
/// every 100 ms (read until `LINGER_TIME`, then refused) or sending as fast as it can (refused
/// after `LINGER_BYTES`, well before `LINGER_TIME`). The client sees the gateway's close as its
/// writes failing (a reset answers bytes sent to a closed socket). The answer always arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_close_ends_in_bounded_time_whatever_the_client_sends() {
    use portcullis::server::{LINGER_QUIET, LINGER_TIME};
    let gw = TestGateway::start().await;
    let closing = "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let ms = Duration::from_millis;
    // (client behaviour, writes fail no sooner than, and no later than: after the answer)
    for (what, earliest, latest) in [
        ("silent", ms(1000), ms(1000) + ms(1500)),
        ("trickle", LINGER_TIME - ms(300), LINGER_TIME + ms(1500)),
        ("flood", ms(0), LINGER_TIME - ms(500)),
    ] {
        let s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let (mut r, mut w) = s.into_split();
        w.write_all(closing.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf))
                .await
                .expect("no answer")
                .unwrap();
            assert!(n > 0, "{what}: closed before the answer");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
            "{what}"
        );
        let answered = tokio::time::Instant::now();
        if what == "silent" {
            tokio::time::sleep(ms(1000)).await;
            assert!(LINGER_QUIET < ms(1000));
        }
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let sent = if what == "flood" {
                    w.write_all(&[b'x'; 64 * 1024]).await
                } else {
                    tokio::time::sleep(ms(100)).await;
                    w.write_all(b"x").await
                };
                if sent.is_err() {
                    return answered.elapsed();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: the gateway still read after 10 s"));
        assert!(
            refused >= earliest && refused <= latest,
            "{what}: writes refused after {refused:?}, expected {earliest:?}..{latest:?}"
        );
    }
}

/// The connection reuses its field map from one request to the next: no field of an earlier
/// request ever reaches the upstream with a later one, after small and large (60-field)
/// requests alike, and every request's own fields arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_field_of_one_request_reaches_the_next_on_a_kept_connection() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("alice@example.com").await;
    let host = gw.addr();
    let mut raw = String::new();
    let counts = [3usize, 0, 60, 1, 40, 0, 2];
    for (i, n) in counts.iter().enumerate() {
        raw.push_str(&format!(
            "GET /r{i} HTTP/1.1\r\nHost: {host}\r\nCookie: portcullis_session={token}\r\n"
        ));
        for f in 0..*n {
            raw.push_str(&format!("X-R{i}-F{f}: v{i}-{f}\r\n"));
        }
        if i + 1 == counts.len() {
            raw.push_str("Connection: close\r\n");
        }
        raw.push_str("\r\n");
    }
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let out = read_to_close(&mut s).await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), counts.len(), "{out}");
    let seen = gw.upstream().seen();
    assert_eq!(seen.len(), counts.len());
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r.uri, format!("/r{i}"));
        for (j, n) in counts.iter().enumerate() {
            for f in 0..*n {
                let got = r.all(&format!("x-r{j}-f{f}"));
                let want = if i == j {
                    vec![format!("v{j}-{f}")]
                } else {
                    vec![]
                };
                assert_eq!(got, want, "request {i}, field x-r{j}-f{f}");
            }
        }
    }
}

/// A streamed upstream answer (no length known) reaches an own-loop client chunked, each part as
/// soon as the upstream sends it (the first arrives while the upstream still holds the second),
/// and the connection stays usable for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_chunked_part_by_part_and_the_connection_is_kept() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("alice@example.com").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let host = gw.addr();
    let req = |path: &str, last: bool| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: portcullis_session={token}\r\n{}\r\n",
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    s.write_all(req("/drip", false).as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("first chunk") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the first part was held back until the answer ended")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    gw.upstream().release();
    s.write_all(req("/after", true).as_bytes()).await.unwrap();
    let rest = read_to_close(&mut s).await;
    let all = format!("{}{rest}", String::from_utf8_lossy(&got));
    let (first, second) = all.split_at(all.rfind("HTTP/1.1 ").unwrap());
    assert!(
        first.ends_with("c\r\nfirst chunk\n\r\nd\r\nsecond chunk\n\r\n0\r\n\r\n"),
        "{first:?}"
    );
    assert!(
        second.starts_with("HTTP/1.1 200") && second.contains("\"uri\":\"/after\""),
        "{second}"
    );
}

/// A head over `limits.max_header_bytes` gets 431 however it arrives: in one write, or complete
/// only after the gateway's buffer had room for more than the limit (the first part just under
/// the limit, then the rest); one just under the limit is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_gets_431_however_it_is_split() {
    let gw = TestGateway::builder()
        .set("limits.max_header_bytes", 10000)
        .start()
        .await;
    for (total, split, want) in [
        (9_500, 9_000, "200"),
        (10_500, 9_000, "431"),
        (12_000, 9_000, "431"),
        (10_001, 10_001, "431"),
        (30_000, 30_000, "431"),
    ] {
        let start = "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ";
        let pad = "a".repeat(total - start.len() - 4);
        let raw = format!("{start}{pad}\r\n\r\n");
        assert_eq!(raw.len(), total);
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(&raw.as_bytes()[..split]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The gateway may have answered and closed already.
        let _ = s.write_all(&raw.as_bytes()[split..]).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want}")),
            "{total}-byte head split at {split}: {:.120}",
            out
        );
    }
}

/// The lingering close: a client still sending when the gateway ends the connection (a 431 for
/// an over-long head; an answer to `Connection: close` followed by a pipelined request) reads
/// the answer and then a clean end of stream, never a reset (which the bytes it sent and the
/// gateway never read would cause, and which can cost a client the answer on a real network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_connection_reads_what_the_client_still_sends() {
    let gw = TestGateway::builder()
        .set("limits.max_header_bytes", 10000)
        .start()
        .await;
    let big = format!(
        "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let closing = "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (first, want) in [(big.as_str(), "HTTP/1.1 431"), (closing, "HTTP/1.1 200")] {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(first.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // More requests the gateway will never answer: 100 KB of them, sent after its answer.
        let more = "GET /.auth/healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2_500);
        s.write_all(more.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the gateway never closed");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(want), "{want}: {:.120}", text);
        assert!(
            read.is_ok(),
            "{want}: the connection ended with {read:?}, not a clean close"
        );
    }
}

/// A client that goes away in the middle of a streamed answer: the gateway drops that answer
/// (its upstream connection is not used again with the rest of it in flight) and the next
/// client on a new connection gets its own answer, not the leftover of the abandoned one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_answer_leaves_nothing_behind_for_the_next() {
    let gw = TestGateway::builder().echo_upstream().start().await;
    let token = gw.sign_in("alice@example.com").await;
    let host = gw.addr();
    let req = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: portcullis_session={token}\r\nConnection: close\r\n\r\n"
        )
    };
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(req("/drip").as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("first chunk") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("the first part never came")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        drop(s);
        // The upstream sends the rest after the client is gone.
        tokio::time::sleep(Duration::from_millis(50)).await;
        gw.upstream().release();
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(req("/after").as_bytes()).await.unwrap();
        let out = read_to_close(&mut s).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("\"uri\":\"/after\""), "{out}");
        assert!(!out.contains("second chunk"), "{out}");
    }
}
