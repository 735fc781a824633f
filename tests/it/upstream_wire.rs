//! How the gateway must treat what an upstream sends back, as tables over each class, against a
//! scripted raw-TCP upstream: body framings, bodiless and interim responses, malformed or
//! ambiguous framing (502), broken bodies, response desynchronisation, idle connections the
//! upstream closes, and which response headers reach the client; for HTTP/2 clients, the
//! worker's pool of upstream connections.
//!
//! Every table runs all its rows, prints each row's verdict (`--nocapture` shows them) and then
//! fails naming every failing row. (An upstream that never answers: `proxy.rs`,
//! `slow_upstream_gives_504_instead_of_hanging`.)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::TestGateway;

/// Hang guard for one read from the gateway (and one connect): a hang fails its row clearly.
const HANG: Duration = Duration::from_secs(10);
/// Hang guard for a whole row.
const ROW_HANG: Duration = Duration::from_secs(60);

// =============================================================================================
// Helpers: the scripted upstream, a raw client, the table runner
// =============================================================================================

/// One scripted answer: runs of bytes, each written after its delay (the first one as soon as
/// the request head has arrived), then the connection is closed or kept open for the next request.
#[derive(Clone)]
struct Reply {
    parts: Vec<(Duration, Vec<u8>)>,
    close: bool,
}

impl Reply {
    /// `bytes` right after the request head; the connection stays open.
    fn keep(bytes: impl AsRef<[u8]>) -> Reply {
        Reply {
            parts: vec![(Duration::ZERO, bytes.as_ref().to_vec())],
            close: false,
        }
    }

    /// `bytes` right after the request head, then the upstream closes the connection.
    fn close(bytes: impl AsRef<[u8]>) -> Reply {
        Reply {
            close: true,
            ..Reply::keep(bytes)
        }
    }

    /// Then `bytes` as a separate write, `after` the previous one.
    fn then(mut self, after: Duration, bytes: impl AsRef<[u8]>) -> Reply {
        self.parts.push((after, bytes.as_ref().to_vec()));
        self
    }

    /// Then the upstream closes the connection, `after` its last write.
    fn close_after(self, after: Duration) -> Reply {
        Reply {
            close: true,
            ..self.then(after, b"")
        }
    }
}

/// What the upstream answers once its script has run out: a status no row expects.
const EXHAUSTED: &[u8] =
    b"HTTP/1.1 500 Script Exhausted\r\nContent-Length: 16\r\n\r\nscript exhausted";

/// A raw-TCP upstream: each request head it reads, on whichever connection, is answered with the
/// next reply of its script. It counts the connections it accepted and records the request heads.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    accepted: Arc<AtomicUsize>,
    /// Each request head received, with the number of the connection it came on (0, 1, …).
    heads: Arc<Mutex<Vec<(usize, String)>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            script: Arc::default(),
            accepted: Arc::default(),
            heads: Arc::default(),
        };
        let this = up.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let conn = this.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(this.clone().serve(s, conn));
            }
        });
        up
    }

    async fn serve(self, mut s: TcpStream, conn: usize) {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut s, &mut buf).await {
            self.heads.lock().unwrap().push((conn, head));
            let next = self.script.lock().unwrap().pop_front();
            let reply = next.unwrap_or_else(|| Reply::close(EXHAUSTED));
            for (after, bytes) in &reply.parts {
                if !after.is_zero() {
                    tokio::time::sleep(*after).await;
                }
                if s.write_all(bytes).await.is_err() {
                    return;
                }
            }
            if reply.close {
                // FIN, then wait for the gateway to let go: closing with unread bytes would send a
                // reset, which can destroy the reply still in flight.
                let _ = s.shutdown().await;
                let _ = tokio::time::timeout(HANG, read_to_eof(&mut s)).await;
                return;
            }
        }
    }

    /// Replaces the script and forgets the connections and request heads seen so far.
    fn script(&self, replies: Vec<Reply>) {
        *self.script.lock().unwrap() = replies.into();
        self.heads.lock().unwrap().clear();
        self.accepted.store(0, Ordering::SeqCst);
    }

    /// Connections accepted since the script was set.
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<(usize, String)> {
        self.heads.lock().unwrap().clone()
    }
}

/// Reads one request head (through its blank line) from `s`; `None` once the gateway closes.
/// The requests of these tests carry no body.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n", 0) {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_to_eof(s: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk).await {
        if n == 0 {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A gateway in front of a scripted upstream, and a session token for it.
struct Env {
    gw: TestGateway,
    up: Upstream,
    token: String,
}

impl Env {
    async fn start() -> Env {
        Env::start_with(&[]).await
    }

    /// With extra configuration settings (`key`, `value`).
    async fn start_with(settings: &[(&str, &str)]) -> Env {
        let up = Upstream::start().await;
        let mut b = TestGateway::builder().set("upstream", format!("http://{}", up.addr));
        for (k, v) in settings {
            b = b.set(k, *v);
        }
        let gw = b.start().await;
        let token = gw.sign_in("wire@example.com").await;
        Env { gw, up, token }
    }

    /// A new kept-alive client connection to the gateway, signed in by cookie.
    async fn client(&self) -> Result<Client, String> {
        let s = tokio::time::timeout(HANG, TcpStream::connect(self.gw.addr()))
            .await
            .map_err(|_| "connecting to the gateway hung".to_string())?
            .map_err(|e| format!("connecting to the gateway: {e}"))?;
        Ok(Client {
            s,
            buf: Vec::new(),
            port: self.gw.port,
            token: self.token.clone(),
        })
    }
}

/// A response as the client read it off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    reason: String,
    /// Names lower-cased, values byte for byte, in the order received.
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Resp {
    /// Every value of header `name`, in order.
    fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.all(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn is_gateway_502(&self) -> bool {
        let ct = self.header("content-type").unwrap_or_default();
        self.status == 502 && (ct.contains("json") || ct.contains("html"))
    }

    fn describe(&self) -> String {
        format!(
            "{} {:?}, {}-byte body {}",
            self.status,
            self.reason,
            self.body.len(),
            preview(&self.body)
        )
    }
}

/// How reading one response ended.
#[derive(Debug)]
enum Outcome {
    Complete(Resp),
    /// The connection closed before the response was complete; `got` is what had arrived of it.
    Closed {
        got: Vec<u8>,
    },
}

impl Outcome {
    /// The complete response, or why there is none.
    fn complete(self, what: &str) -> Result<Resp, String> {
        match self {
            Outcome::Complete(r) => Ok(r),
            Outcome::Closed { got } => Err(format!(
                "{what}: connection closed before the response was complete; got {}",
                preview(&got)
            )),
        }
    }
}

/// Bytes for a message: escaped, cut after 160 characters.
fn preview(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.len() > 160 {
        format!("\"{}…\" ({} bytes)", &s[..160], b.len())
    } else {
        format!("\"{s}\"")
    }
}

/// A raw client connection to the gateway that reads responses by their framing.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    port: u16,
    token: String,
}

impl Client {
    /// GET `path`: the response must be complete, 200, with exactly `body` (`what` names the
    /// request in the error).
    async fn get_ok(&mut self, path: &str, body: &[u8], what: &str) -> Result<Resp, String> {
        let r = self.exchange("GET", path).await?.complete(what)?;
        ensure(r.status == 200 && r.body == body, || {
            format!(
                "{what}: got {}, want 200 with {}",
                r.describe(),
                preview(body)
            )
        })?;
        Ok(r)
    }

    /// Sends one request (no body) and reads its response.
    async fn exchange(&mut self, method: &str, path: &str) -> Result<Outcome, String> {
        self.exchange_body(method, path, "").await
    }

    /// Sends one request with `body` (a `Content-Length` one, unless empty) and reads its response.
    async fn exchange_body(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<Outcome, String> {
        let length = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: portcullis_session={}\r\n{length}\r\n{body}",
            self.port, self.token
        );
        self.s
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{method} {path}: sending the request: {e}"))?;
        self.read(method == "HEAD")
            .await
            .map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Reads more bytes; `false` once the gateway has closed (a reset counts as closed).
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(HANG, self.s.read(&mut chunk)).await {
            Err(_) => Err(format!(
                "no byte from the gateway within {HANG:?} (hang); had {}",
                preview(&self.buf)
            )),
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
            Ok(Err(e)) => Err(format!("reading from the gateway: {e}")),
        }
    }

    /// Fills until the buffer holds `len` bytes; `false` if the connection closed first.
    async fn need(&mut self, len: usize) -> Result<bool, String> {
        while self.buf.len() < len {
            if !self.fill().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The position of the next CRLF at or after `from`; `None` if the connection closed first.
    async fn line_end(&mut self, from: usize) -> Result<Option<usize>, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n", from) {
                return Ok(Some(i));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    fn closed(&mut self) -> Outcome {
        Outcome::Closed {
            got: std::mem::take(&mut self.buf),
        }
    }

    /// Reads one final response (interim 1xx ones are skipped), framed as RFC 9112 §6.3 says.
    async fn read(&mut self, head_request: bool) -> Result<Outcome, String> {
        loop {
            let Some(end) = self.head_end().await? else {
                return Ok(self.closed());
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let (version, code) = (parts.next(), parts.next());
            let reason = parts.next().unwrap_or_default().to_string();
            let status: u16 = match (version, code.and_then(|c| c.parse().ok())) {
                (Some("HTTP/1.1"), Some(s)) => s,
                _ => {
                    return Err(format!(
                        "the gateway sent a bad status line {status_line:?}"
                    ))
                }
            };
            // Header values byte for byte (obs-text), from the raw buffer.
            let mut headers = Vec::new();
            let mut at = find(&self.buf, b"\r\n", 0).unwrap_or(end) + 2;
            while at < end {
                let eol = find(&self.buf, b"\r\n", at).unwrap_or(end).min(end);
                let line = &self.buf[at..eol];
                let colon = line.iter().position(|b| *b == b':').ok_or_else(|| {
                    format!("the gateway sent a bad header line {}", preview(line))
                })?;
                let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
                headers.push((name, line[colon + 1..].trim_ascii().to_vec()));
                at = eol + 2;
            }
            let body_start = end + 4;
            if (100..200).contains(&status) && status != 101 {
                self.buf.drain(..body_start);
                continue;
            }
            let mut resp = Resp {
                status,
                reason,
                headers,
                body: Vec::new(),
            };
            let te = resp.all("transfer-encoding");
            let chunked = te.last().is_some_and(|v| {
                let v = String::from_utf8_lossy(v).to_ascii_lowercase();
                v.rsplit(',').next().is_some_and(|t| t.trim() == "chunked")
            });
            // The gateway's own framing must be unambiguous (RFC 9110 §8.6, RFC 9112 §6.3).
            let lengths = resp.all("content-length");
            let length: Option<usize> = match lengths.as_slice() {
                [] => None,
                [v] if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
                    String::from_utf8_lossy(v).parse().ok()
                }
                _ => {
                    return Err(format!(
                        "the gateway's response has invalid framing: Content-Length {:?} (one decimal value allowed)",
                        lengths.iter().map(|v| preview(v)).collect::<Vec<_>>()
                    ))
                }
            };
            if length.is_some() && !te.is_empty() {
                return Err(
                    "the gateway's response has both Content-Length and Transfer-Encoding".into(),
                );
            }
            let consumed = if head_request || status == 204 || status == 304 {
                body_start
            } else if chunked {
                match self.read_chunked(body_start, &mut resp.body).await? {
                    Some(end) => end,
                    None => return Ok(self.closed()),
                }
            } else if !te.is_empty() || length.is_none() {
                // Close-delimited: complete at EOF.
                while self.fill().await? {}
                resp.body = self.buf[body_start..].to_vec();
                self.buf.len()
            } else {
                let len = length.unwrap_or_default();
                if !self.need(body_start + len).await? {
                    return Ok(self.closed());
                }
                resp.body = self.buf[body_start..body_start + len].to_vec();
                body_start + len
            };
            self.buf.drain(..consumed);
            return Ok(Outcome::Complete(resp));
        }
    }

    async fn head_end(&mut self) -> Result<Option<usize>, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n", 0) {
                return Ok(Some(i));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Decodes a chunked body starting at `at` into `body`; the end of the message (after the
    /// trailer section), or `None` if the connection closed first.
    async fn read_chunked(
        &mut self,
        mut at: usize,
        body: &mut Vec<u8>,
    ) -> Result<Option<usize>, String> {
        loop {
            let Some(eol) = self.line_end(at).await? else {
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&self.buf[at..eol]).into_owned();
            let hex = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| format!("the gateway sent a bad chunk size line {line:?}"))?;
            at = eol + 2;
            if size == 0 {
                // Trailer section, up to its blank line.
                loop {
                    let Some(eol) = self.line_end(at).await? else {
                        return Ok(None);
                    };
                    let blank = eol == at;
                    at = eol + 2;
                    if blank {
                        return Ok(Some(at));
                    }
                }
            }
            if !self.need(at + size + 2).await? {
                return Ok(None);
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            if &self.buf[at + size..at + size + 2] != b"\r\n" {
                return Err("the gateway sent chunk data without its CRLF".into());
            }
            at += size + 2;
        }
    }
}

/// Each row's verdict, printed as it comes; `finish` fails naming every failing row.
struct Verdicts {
    table: &'static str,
    rows: usize,
    failed: Vec<String>,
}

impl Verdicts {
    fn new(table: &'static str) -> Verdicts {
        Verdicts {
            table,
            rows: 0,
            failed: Vec::new(),
        }
    }

    /// Runs one row's check under the row hang guard and records the verdict.
    async fn row(
        &mut self,
        name: &str,
        check: impl std::future::Future<Output = Result<(), String>>,
    ) {
        self.rows += 1;
        let verdict = tokio::time::timeout(ROW_HANG, check)
            .await
            .unwrap_or_else(|_| Err(format!("row hung for {ROW_HANG:?}")));
        match verdict {
            Ok(()) => eprintln!("[{}] ok   {name}", self.table),
            Err(e) => {
                eprintln!("[{}] FAIL {name}: {e}", self.table);
                self.failed.push(format!("  {name}: {e}"));
            }
        }
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{}: {} of {} rows failed:\n{}",
            self.table,
            self.failed.len(),
            self.rows,
            self.failed.join("\n")
        );
    }
}

/// Fails with `msg` unless `ok`.
/// Runs every row of a table against one gateway (`$run(&env, &row)`), then fails naming every
/// failing row.
macro_rules! run_table {
    ($name:expr, $rows:expr, $run:ident) => {{
        let env = Env::start().await;
        let mut v = Verdicts::new($name);
        for row in $rows {
            v.row(&row.name, $run(&env, &row)).await;
        }
        v.finish();
    }};
}

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

/// `n` bytes of a pattern that holds CR, LF and every other byte value.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// A chunked body of these chunks (lower-case hex sizes), ending with the last chunk.
fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A plain keep-alive answer with this body.
fn ok_reply(body: &str) -> Reply {
    Reply::keep(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

const CHUNKED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// =============================================================================================
// 1. Body framings that pass intact
// =============================================================================================

/// Whether the gateway keeps its upstream connection across the row's three requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reuse {
    /// Keep-alive framing: one upstream connection for all three.
    One,
    /// The upstream closes (or says it will): a new upstream connection for each.
    Each,
    /// Either is right.
    Either,
}

struct Framing {
    name: &'static str,
    reply: Reply,
    body: Vec<u8>,
    reuse: Reuse,
}

fn framing_rows() -> Vec<Framing> {
    let big = pattern(256 * 1024);
    let bytes: Vec<&[u8]> = b"hello world".chunks(1).collect();
    let row = |name, reply, body: &[u8], reuse| Framing {
        name,
        reply,
        body: body.to_vec(),
        reuse,
    };
    vec![
        row(
            "Content-Length",
            Reply::keep(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            ),
            b"hello",
            Reuse::One,
        ),
        row(
            "Content-Length: 0",
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            b"",
            Reuse::One,
        ),
        row(
            "Content-Length, 256 KiB binary body",
            Reply::keep(cat(&[
                b"HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n",
                &big,
            ])),
            &big,
            Reuse::One,
        ),
        row(
            "Content-Length, lower-case header name",
            Reply::keep("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
            b"hello",
            Reuse::One,
        ),
        row(
            "Content-Length, head and body split over several writes",
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Le")
                .then(ms(20), "ngth: 5\r\n\r")
                .then(ms(20), "\nhel")
                .then(ms(20), "lo"),
            b"hello",
            Reuse::One,
        ),
        row(
            "two Content-Length headers with the same value (5 and 5)",
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            b"hello",
            Reuse::One,
        ),
        row(
            "Content-Length list of one repeated value (5, 5)",
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"),
            b"hello",
            Reuse::One,
        ),
        row(
            "chunked, one chunk",
            Reply::keep(cat(&[CHUNKED_HEAD, &chunked(&[b"hello"])])),
            b"hello",
            Reuse::One,
        ),
        row(
            "chunked, 1-byte chunks",
            Reply::keep(cat(&[CHUNKED_HEAD, &chunked(&bytes)])),
            b"hello world",
            Reuse::One,
        ),
        row(
            "chunked, one 256 KiB chunk (upper-case hex size)",
            Reply::keep(cat(&[CHUNKED_HEAD, b"40000\r\n", &big, b"\r\n0\r\n\r\n"])),
            &big,
            Reuse::One,
        ),
        row(
            "chunked, chunk extensions",
            Reply::keep(cat(&[
                CHUNKED_HEAD,
                b"5;name=value\r\nhello\r\n6;a;b=\"q x\"\r\n world\r\n0;end=1\r\n\r\n",
            ])),
            b"hello world",
            Reuse::One,
        ),
        row(
            "chunked, upper-case hex sizes",
            Reply::keep(cat(&[
                CHUNKED_HEAD,
                b"A\r\n0123456789\r\n1F\r\nabcdefghijklmnopqrstuvwxyz01234\r\n0\r\n\r\n",
            ])),
            b"0123456789abcdefghijklmnopqrstuvwxyz01234",
            Reuse::One,
        ),
        row(
            "chunked, lower-case hex sizes",
            Reply::keep(cat(&[
                CHUNKED_HEAD,
                b"a\r\n0123456789\r\n1f\r\nabcdefghijklmnopqrstuvwxyz01234\r\n0\r\n\r\n",
            ])),
            b"0123456789abcdefghijklmnopqrstuvwxyz01234",
            Reuse::One,
        ),
        row(
            "chunked, sizes with leading zeros",
            Reply::keep(cat(&[CHUNKED_HEAD, b"0005\r\nhello\r\n000\r\n\r\n"])),
            b"hello",
            Reuse::One,
        ),
        row(
            "chunked, trailer section after the last chunk",
            Reply::keep(cat(&[
                CHUNKED_HEAD,
                b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
            ])),
            b"hello",
            Reuse::One,
        ),
        row(
            "chunked, empty body (last chunk only)",
            Reply::keep(cat(&[CHUNKED_HEAD, b"0\r\n\r\n"])),
            b"",
            Reuse::One,
        ),
        row(
            "chunked, coding name in upper case (Transfer-Encoding: CHUNKED)",
            Reply::keep(cat(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
                &chunked(&[b"hello"]),
            ])),
            b"hello",
            Reuse::One,
        ),
        row(
            "chunked, split mid size line, mid data and mid CRLF over several writes",
            Reply::keep(cat(&[CHUNKED_HEAD, b"1"]))
                .then(ms(20), "0\r\n0123456")
                .then(ms(20), "789abcdef\r")
                .then(ms(20), "\n0\r\n")
                .then(ms(20), "\r\n"),
            b"0123456789abcdef",
            Reuse::One,
        ),
        row(
            "close-delimited (HTTP/1.1, no Content-Length, no Transfer-Encoding)",
            Reply::close("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"),
            b"until the end",
            Reuse::Each,
        ),
        row(
            "close-delimited, 256 KiB binary body",
            Reply::close(cat(&[b"HTTP/1.1 200 OK\r\n\r\n", &big])),
            &big,
            Reuse::Each,
        ),
        row(
            "HTTP/1.0 with Content-Length, then close",
            Reply::close("HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nold server\n"),
            b"old server\n",
            Reuse::Each,
        ),
        row(
            "HTTP/1.0 without Content-Length (close-delimited)",
            Reply::close("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold server\n"),
            b"old server\n",
            Reuse::Each,
        ),
        row(
            "HTTP/1.0 Connection: keep-alive with Content-Length (may be reused)",
            Reply::keep(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
            ),
            b"hello",
            Reuse::Either,
        ),
        row(
            "Connection: close with Content-Length, then close",
            Reply::close("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"),
            b"hello",
            Reuse::Each,
        ),
        row(
            "Connection: close with Content-Length, upstream leaves the connection open",
            Reply::keep("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"),
            b"hello",
            Reuse::Each,
        ),
    ]
}

async fn framing_row(env: &Env, row: &Framing) -> Result<(), String> {
    env.up.script(vec![row.reply.clone(); 3]);
    let mut c = env.client().await?;
    for i in 0..3 {
        let r = c
            .exchange("GET", &format!("/f{i}"))
            .await?
            .complete(&format!("request {i}"))?;
        ensure(r.status == 200 && r.body == row.body, || {
            format!(
                "request {i}: got {}, want 200 with {}-byte body {}",
                r.describe(),
                row.body.len(),
                preview(&row.body)
            )
        })?;
    }
    let heads = env.up.heads();
    ensure(heads.len() == 3, || {
        format!("the upstream got {} requests, want 3", heads.len())
    })?;
    let conns = env.up.connections();
    match row.reuse {
        Reuse::One => ensure(conns == 1, || {
            format!("{conns} upstream connections for 3 keep-alive requests, want 1")
        }),
        Reuse::Each => ensure(conns == 3, || {
            format!("{conns} upstream connections for 3 requests the upstream closes after, want 3")
        }),
        Reuse::Either => Ok(()),
    }
}

/// Every body framing an upstream may use reaches the client intact, the client connection stays
/// usable, and keep-alive framings keep one upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_framings_pass_intact_and_keep_alive_framings_reuse_the_upstream_connection() {
    run_table!("framings", framing_rows(), framing_row);
}

// =============================================================================================
// 2. Bodiless responses
// =============================================================================================

struct Bodiless {
    name: &'static str,
    method: &'static str,
    reply: &'static str,
    status: u16,
}

const BODILESS: &[Bodiless] = &[
    Bodiless {
        name: "HEAD answered with Content-Length: 100 and no body",
        method: "HEAD",
        reply: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        status: 200,
    },
    Bodiless {
        name: "HEAD answered with Transfer-Encoding: chunked and no body",
        method: "HEAD",
        reply: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        status: 200,
    },
    Bodiless {
        name: "204 without Content-Length",
        method: "GET",
        reply: "HTTP/1.1 204 No Content\r\n\r\n",
        status: 204,
    },
    Bodiless {
        name: "204 with Content-Length: 0",
        method: "GET",
        reply: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        status: 204,
    },
    Bodiless {
        name: "304 without Content-Length",
        method: "GET",
        reply: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
        status: 304,
    },
    Bodiless {
        name: "304 with Content-Length: 100 (the length it would have)",
        method: "GET",
        reply: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n",
        status: 304,
    },
];

async fn bodiless_row(env: &Env, row: &Bodiless) -> Result<(), String> {
    env.up
        .script(vec![Reply::keep(row.reply), ok_reply("next")]);
    let mut c = env.client().await?;
    let r = c
        .exchange(row.method, "/first")
        .await?
        .complete("first request")?;
    ensure(r.status == row.status && r.body.is_empty(), || {
        format!(
            "first request: got {}, want {} without a body",
            r.describe(),
            row.status
        )
    })?;
    c.get_ok("/next", b"next", "next request").await?;
    let conns = env.up.connections();
    ensure(conns == 1, || {
        format!("{conns} upstream connections, want 1 (the bodiless answer's connection reused)")
    })
}

/// HEAD answers and 204/304 carry no body whatever their headers say, and leave both the client
/// connection and the upstream connection usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_reach_the_client_without_a_body_and_the_connections_stay_usable() {
    run_table!("bodiless", BODILESS, bodiless_row);
}

// =============================================================================================
// 3. Interim responses
// =============================================================================================

struct Interim {
    name: &'static str,
    reply: Reply,
}

fn interim_rows() -> Vec<Interim> {
    const FINAL: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal";
    const HINTS: &str = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n";
    vec![
        Interim {
            name: "100 Continue before the 200",
            reply: Reply::keep(format!("HTTP/1.1 100 Continue\r\n\r\n{FINAL}")),
        },
        Interim {
            name: "103 Early Hints with a Link before the 200",
            reply: Reply::keep(format!("{HINTS}{FINAL}")),
        },
        Interim {
            name: "100 Continue and 103 Early Hints before the 200",
            reply: Reply::keep(format!("HTTP/1.1 100 Continue\r\n\r\n{HINTS}{FINAL}")),
        },
        Interim {
            name: "103 Early Hints, then the 200 in a separate write 50 ms later",
            reply: Reply::keep(HINTS).then(ms(50), FINAL),
        },
    ]
}

async fn interim_row(env: &Env, row: &Interim) -> Result<(), String> {
    env.up.script(vec![row.reply.clone(), ok_reply("next")]);
    let mut c = env.client().await?;
    c.get_ok("/first", b"final", "first request").await?;
    c.get_ok("/next", b"next", "next request").await?;
    let conns = env.up.connections();
    ensure(conns == 1, || {
        format!("{conns} upstream connections, want 1")
    })
}

/// Interim (1xx) responses before the final one do not take its place: the client gets the final
/// response and its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_are_followed_by_the_final_response_and_its_body() {
    run_table!("interim", interim_rows(), interim_row);
}

// =============================================================================================
// 4. Ambiguous or malformed framing: 502, and the upstream connection is not reused
// =============================================================================================

struct Malformed {
    name: &'static str,
    /// Written, then the connection is left open (so a reuse would show).
    reply: Vec<u8>,
}

fn malformed_rows() -> Vec<Malformed> {
    let row = |name, reply: &str| Malformed {
        name,
        reply: reply.as_bytes().to_vec(),
    };
    let cl = |name, value: &str| Malformed {
        name,
        reply: format!("HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\nhello").into_bytes(),
    };
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        row(
            "Transfer-Encoding: chunked and Content-Length",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        row(
            "Content-Length and Transfer-Encoding: chunked (Content-Length first)",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        // Today the gateway forwards the upstream's Content-Length with the de-chunked body:
        // a smaller one truncates the body in a response that looks complete.
        row(
            "Transfer-Encoding: chunked and a smaller Content-Length (3 for a 5-byte body)",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        row(
            "Transfer-Encoding: chunked and a larger Content-Length (9 for a 5-byte body)",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        row(
            "two Content-Length headers with different values (5 and 7)",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        ),
        cl("Content-Length: 5, 7", "5, 7"),
        cl("Content-Length: abc", "abc"),
        cl("Content-Length: -1", "-1"),
        cl("Content-Length: +5", "+5"),
        cl("Content-Length: (empty)", " "),
        cl("Content-Length: 0x10", "0x10"),
        cl(
            "Content-Length: 99999999999999999999999 (overflows u64)",
            "99999999999999999999999",
        ),
        row(
            "HTTP/1.0 with Transfer-Encoding: chunked (RFC 9112 §6.1: faulty framing)",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        row(
            "status line HTTP/1.1 2OO OK",
            "HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        row(
            "status line HTTTP/1.1 200 OK",
            "HTTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        row("status line hello", "hello\r\n\r\n"),
        row(
            "header line without a colon",
            "HTTP/1.1 200 OK\r\nX-Broken\r\nContent-Length: 5\r\n\r\nhello",
        ),
        row(
            "space before the colon (Content-Length : 5)",
            "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
        ),
        row(
            "NUL byte in a header value",
            "HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 5\r\n\r\nhello",
        ),
        Malformed {
            name: "response head over 64 KiB (one 70 KB header)",
            reply: format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 5\r\n\r\nhello",
                "a".repeat(70_000)
            )
            .into_bytes(),
        },
        // A transfer coding other than chunked: the gateway cannot undo it, and the header is
        // hop-by-hop, so forwarding the bytes would hand the client encoded bytes unlabelled.
        row(
            "Transfer-Encoding: gzip (close-delimited by RFC 9112 §6.3, but not decodable here)",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot really gzip",
        ),
        row(
            "Transfer-Encoding: gzip, chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        Malformed {
            name: "more than 100 header lines (120)",
            reply: format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 5\r\n\r\nhello").into_bytes(),
        },
    ]
}

async fn malformed_row(env: &Env, row: &Malformed) -> Result<(), String> {
    env.up
        .script(vec![Reply::keep(&row.reply), ok_reply("good")]);
    let mut problems = Vec::new();
    let mut c = env.client().await?;
    let r = c
        .exchange("GET", "/bad")
        .await?
        .complete("the malformed answer")?;
    if !r.is_gateway_502() {
        problems.push(format!(
            "got {} (content-type {:?}), want the gateway's 502 error page",
            r.describe(),
            r.header("content-type")
        ));
    }
    if r.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        c = env.client().await?;
    }
    let r = c
        .exchange("GET", "/after")
        .await?
        .complete("the request after")?;
    if r.status != 200 || r.body != b"good" {
        problems.push(format!(
            "the request after: got {}, want 200 \"good\"",
            r.describe()
        ));
    }
    let conns = env.up.connections();
    if conns != 2 {
        problems.push(format!(
            "{conns} upstream connections, want 2 (the malformed answer's connection must not be reused)"
        ));
    }
    ensure(problems.is_empty(), || problems.join("; "))
}

/// Framing that is ambiguous or malformed gets the client a 502 from the gateway, never a
/// response built from a guess, and the upstream connection it came on is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_malformed_framing_gives_502_and_the_upstream_connection_is_dropped() {
    run_table!("malformed", malformed_rows(), malformed_row);
}

// =============================================================================================
// 5. Broken bodies never look complete
// =============================================================================================

struct Broken {
    name: &'static str,
    reply: Reply,
}

fn broken_rows() -> Vec<Broken> {
    vec![
        Broken {
            name: "Content-Length: 100, 50 bytes, then close",
            reply: Reply::close(cat(&[
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                &[b'x'; 50],
            ])),
        },
        Broken {
            name: "Content-Length: 10, close right after the head",
            reply: Reply::close("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        },
        Broken {
            name: "chunked, chunk size line zz (connection left open)",
            reply: Reply::keep(cat(&[
                CHUNKED_HEAD,
                b"5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n",
            ])),
        },
        Broken {
            name: "chunked, chunk size line zz as the first chunk (connection left open)",
            reply: Reply::keep(cat(&[CHUNKED_HEAD, b"zz\r\nhello\r\n0\r\n\r\n"])),
        },
        Broken {
            name: "chunked, cut off before the last chunk (upstream closes)",
            reply: Reply::close(cat(&[CHUNKED_HEAD, b"5\r\nhello\r\n"])),
        },
        Broken {
            name: "chunked, cut off inside a chunk (upstream closes)",
            reply: Reply::close(cat(&[CHUNKED_HEAD, b"a\r\nhello"])),
        },
        Broken {
            name: "chunked, chunk data not followed by CRLF (connection left open)",
            reply: Reply::keep(cat(&[CHUNKED_HEAD, b"5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n"])),
        },
    ]
}

async fn broken_row(env: &Env, row: &Broken) -> Result<(), String> {
    env.up.script(vec![row.reply.clone(), ok_reply("good")]);
    let mut c = env.client().await?;
    match c.exchange("GET", "/broken").await? {
        // What the framing the client was given said had not all arrived: right.
        Outcome::Closed { got } => {
            eprintln!(
                "    {}: closed mid-response after {}",
                row.name,
                preview(&got)
            );
        }
        // The gateway noticed before it answered: a 502 of its own is right too.
        Outcome::Complete(r) if r.is_gateway_502() => {
            eprintln!("    {}: the gateway answered 502", row.name);
        }
        Outcome::Complete(r) => {
            return Err(format!(
                "the broken answer looked complete to the client: {}",
                r.describe()
            ))
        }
    }
    let mut fresh = env.client().await?;
    fresh
        .get_ok(
            "/after",
            b"good",
            "the request after, on a new client connection",
        )
        .await
        .map(drop)
}

/// A body the upstream breaks off or garbles never reaches the client as a complete response:
/// the client's connection ends before its framing says the body is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_never_look_complete_to_the_client() {
    run_table!("broken bodies", broken_rows(), broken_row);
}

// =============================================================================================
// 6. Response desynchronisation
// =============================================================================================

const FORGED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";

struct Desync {
    name: String,
    method: &'static str,
    /// The first answer and, in the same write or later, the forged one; left open.
    reply: Reply,
    status: u16,
}

fn desync_rows() -> Vec<Desync> {
    let answers: [(&str, &str, String, u16); 4] = [
        (
            "a Content-Length body",
            "GET",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst".into(),
            200,
        ),
        (
            "a chunked body",
            "GET",
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                String::from_utf8(chunked(&[b"first"])).unwrap()
            ),
            200,
        ),
        (
            "a 204",
            "GET",
            "HTTP/1.1 204 No Content\r\n\r\n".into(),
            204,
        ),
        (
            "a HEAD response's head",
            "HEAD",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".into(),
            200,
        ),
    ];
    let mut rows = Vec::new();
    for (after, method, answer, status) in answers {
        rows.push(Desync {
            name: format!("extra bytes after {after}, in the same write"),
            method,
            reply: Reply::keep(format!("{answer}{FORGED}")),
            status,
        });
        rows.push(Desync {
            name: format!("extra bytes after {after}, 100 ms later on the idle connection"),
            method,
            reply: Reply::keep(&answer).then(ms(100), FORGED),
            status,
        });
    }
    rows
}

async fn desync_row(env: &Env, row: &Desync) -> Result<(), String> {
    env.up.script(vec![
        row.reply.clone(),
        Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"),
    ]);
    let mut c = env.client().await?;
    let r = c
        .exchange(row.method, "/first")
        .await?
        .complete("first request")?;
    ensure(r.status == row.status, || {
        format!("first request: got {}, want {}", r.describe(), row.status)
    })?;
    // Long enough for the late extra bytes (100 ms) to have arrived while the connection is idle:
    // bytes arriving after the next request was sent could not be told from its answer.
    tokio::time::sleep(ms(500)).await;
    let r = c
        .exchange("GET", "/second")
        .await?
        .complete("second request")?;
    ensure(r.body != b"forged", || {
        "DESYNC: the second request was answered with the bytes the upstream sent before it".into()
    })?;
    ensure(r.status == 200 && r.body == b"real", || {
        format!("second request: got {}, want 200 \"real\"", r.describe())
    })?;
    let conns = env.up.connections();
    ensure(conns == 2, || {
        format!("{conns} upstream connections, want 2 (a connection that sent unasked-for bytes is not reused)")
    })
}

/// Bytes an upstream sends when no request is waiting for them are never taken as the answer to
/// the next request: the next request goes to a fresh upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_an_upstream_sends_unasked_never_answer_the_next_request() {
    run_table!("desync", desync_rows(), desync_row);
}

// =============================================================================================
// 7. Idle kept connections that the upstream closes
// =============================================================================================

struct IdleClose {
    name: &'static str,
    reply: Reply,
}

fn idle_close_rows() -> Vec<IdleClose> {
    vec![
        IdleClose {
            name: "Content-Length answer, upstream closes 100 ms later",
            reply: Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
                .close_after(ms(100)),
        },
        IdleClose {
            name: "chunked answer, upstream closes 100 ms later",
            reply: Reply::keep(cat(&[CHUNKED_HEAD, &chunked(&[b"first"])])).close_after(ms(100)),
        },
        IdleClose {
            name: "204 answer, upstream closes 100 ms later",
            reply: Reply::keep("HTTP/1.1 204 No Content\r\n\r\n").close_after(ms(100)),
        },
        IdleClose {
            name: "Content-Length answer, upstream closes right after (no Connection: close)",
            reply: Reply::close("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"),
        },
    ]
}

async fn idle_close_row(env: &Env, row: &IdleClose) -> Result<(), String> {
    env.up.script(vec![row.reply.clone(), ok_reply("second")]);
    let mut c = env.client().await?;
    let r = c
        .exchange("GET", "/first")
        .await?
        .complete("first request")?;
    ensure(r.status == 200 || r.status == 204, || {
        format!("first request: got {}", r.describe())
    })?;
    tokio::time::sleep(ms(400)).await;
    c.get_ok("/second", b"second", "second request")
        .await
        .map(drop)
}

/// A kept upstream connection the upstream closed while idle is not used for the next request:
/// that request succeeds on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_connection_the_upstream_closed_does_not_fail_the_next_request() {
    run_table!("idle close", idle_close_rows(), idle_close_row);
}

// =============================================================================================
// 8. Response headers, status and reason phrase
// =============================================================================================

struct Headers {
    name: &'static str,
    reply: Vec<u8>,
    status: u16,
    reason: &'static str,
    body: &'static [u8],
    /// Headers that must arrive with exactly these values, in this order.
    present: &'static [(&'static str, &'static [&'static [u8]])],
    /// Header names that must not arrive.
    absent: &'static [&'static str],
    /// Text that must not appear anywhere in the response head (case-insensitive).
    unmentioned: &'static [&'static str],
}

fn header_rows() -> Vec<Headers> {
    let row = |name, reply: &[u8], status, reason, body: &'static [u8]| Headers {
        name,
        reply: reply.to_vec(),
        status,
        reason,
        body,
        present: &[],
        absent: &[],
        unmentioned: &[],
    };
    vec![
        Headers {
            present: &[("x-kept", &[b"yes"])],
            absent: &["x-private", "keep-alive", "proxy-connection", "upgrade"],
            unmentioned: &["x-private", "timeout=5", "h2c"],
            ..row(
                "hop-by-hop headers (Connection, what it names, Keep-Alive, Proxy-Connection, Upgrade) dropped",
                b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
                200,
                "OK",
                b"ok",
            )
        },
        Headers {
            present: &[("x-kept", &[b"yes"])],
            ..row(
                "the upstream's Transfer-Encoding does not reach the client (only the gateway's own framing)",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                200,
                "OK",
                b"hello",
            )
        },
        Headers {
            present: &[
                ("set-cookie", &[b"a=1; Path=/", b"b=2", b"c=3; HttpOnly"]),
                ("x-multi", &[b"one", b"two"]),
            ],
            ..row(
                "repeated headers kept, in order (three Set-Cookie, two X-Multi)",
                b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Multi: one\r\nSet-Cookie: b=2\r\nX-Other: z\r\nX-Multi: two\r\nSet-Cookie: c=3; HttpOnly\r\nContent-Length: 2\r\n\r\nok",
                200,
                "OK",
                b"ok",
            )
        },
        Headers {
            present: &[("x-obs", &[b"caf\xe9 \x80\xff end"])],
            ..row(
                "obs-text bytes (0x80-0xff) in a header value pass byte for byte",
                b"HTTP/1.1 200 OK\r\nX-Obs: caf\xe9 \x80\xff end\r\nContent-Length: 2\r\n\r\nok",
                200,
                "OK",
                b"ok",
            )
        },
        row(
            "418 I'm a teapot",
            b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 6\r\n\r\nteapot",
            418,
            "I'm a teapot",
            b"teapot",
        ),
        row(
            "custom reason phrase 200 Fine",
            b"HTTP/1.1 200 Fine\r\nContent-Length: 4\r\n\r\nfine",
            200,
            "Fine",
            b"fine",
        ),
        row(
            "404 passes through",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nmissing",
            404,
            "Not Found",
            b"missing",
        ),
        row(
            "500 passes through",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\n\r\nbroken",
            500,
            "Internal Server Error",
            b"broken",
        ),
        row(
            "599 with its own reason passes through",
            b"HTTP/1.1 599 Custom\r\nContent-Length: 3\r\n\r\n599",
            599,
            "Custom",
            b"599",
        ),
    ]
}

async fn header_row(env: &Env, row: &Headers) -> Result<(), String> {
    env.up.script(vec![Reply::keep(&row.reply)]);
    let mut c = env.client().await?;
    let r = c.exchange("GET", "/h").await?.complete("the request")?;
    ensure(
        r.status == row.status && r.reason == row.reason && r.body == row.body,
        || {
            format!(
                "got {}, want {} {:?} with body {}",
                r.describe(),
                row.status,
                row.reason,
                preview(row.body)
            )
        },
    )?;
    for (name, want) in row.present {
        let got = r.all(name);
        ensure(got == *want, || {
            format!(
                "{name}: got {:?}, want {:?}",
                got.iter().map(|v| preview(v)).collect::<Vec<_>>(),
                want.iter().map(|v| preview(v)).collect::<Vec<_>>()
            )
        })?;
    }
    for name in row.absent {
        ensure(r.all(name).is_empty(), || {
            format!("{name} reached the client: {}", preview(r.all(name)[0]))
        })?;
    }
    let head: String = r
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v).to_ascii_lowercase()))
        .collect();
    for text in row.unmentioned {
        ensure(!head.contains(text), || {
            format!("{text:?} reached the client in the head:\n{head}")
        })?;
    }
    // Whatever the upstream sent, the only Transfer-Encoding the client sees is the gateway's own
    // chunked framing.
    let te = r.all("transfer-encoding");
    ensure(te.is_empty() || te == [b"chunked".as_slice()], || {
        format!("Transfer-Encoding reaching the client: {te:?}")
    })
}

/// Hop-by-hop response headers stop at the gateway; end-to-end ones, repeated ones in order,
/// obs-text values, status codes and reason phrases reach the client as the upstream sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_status_and_reason_reach_the_client_as_sent_except_hop_by_hop() {
    run_table!("headers", header_rows(), header_row);
}

// =============================================================================================
// HTTP/2 clients: bodyless requests share the worker's pool of upstream connections
// =============================================================================================

/// An HTTP/2 (prior knowledge) client to the gateway.
fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn h2_get(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    url: String,
    token: &str,
) -> (http::StatusCode, Vec<u8>) {
    use http_body_util::BodyExt;
    let req = http::Request::get(url)
        .header("cookie", format!("portcullis_session={token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(HANG, client.request(req))
        .await
        .expect("HTTP/2 request hung")
        .expect("HTTP/2 request failed");
    let status = resp.status();
    let body = tokio::time::timeout(HANG, resp.into_body().collect())
        .await
        .expect("HTTP/2 body hung")
        .expect("HTTP/2 body failed")
        .to_bytes();
    (status, body.to_vec())
}

/// Many concurrent streams of one HTTP/2 connection each get the answer to their own request
/// (an upstream that answers with the request's path), and the upstream connections opened for
/// the first round are reused by the next ones: never more connections than streams at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_get_their_own_answers_over_pooled_upstream_connections() {
    const STREAMS: usize = 8;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let path = head.split(' ').nth(1).unwrap_or("?").to_string();
                    // A little later, so the streams overlap.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                        path.len()
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = TestGateway::builder()
        .set("upstream", format!("http://{addr}"))
        .start()
        .await;
    let token = gw.sign_in("h2pool@example.com").await;
    let client = h2_client();
    for round in 0..3 {
        let answers = futures_util::future::join_all((0..STREAMS).map(|i| {
            let path = format!("/r{round}/s{i}");
            let fut = h2_get(&client, gw.url(&path), &token);
            async move { (path, fut.await) }
        }))
        .await;
        for (path, (status, body)) in answers {
            assert_eq!(status, http::StatusCode::OK, "{path}");
            assert_eq!(String::from_utf8_lossy(&body), path, "round {round}");
        }
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=STREAMS).contains(&opened),
        "{opened} upstream connections for {STREAMS} concurrent streams over 3 rounds"
    );
}

/// The desynchronisation rule holds for pooled connections too: bytes an upstream sent after a
/// complete answer never answer another HTTP/2 stream's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_never_get_bytes_an_upstream_sent_unasked() {
    for (name, first) in [
        (
            "same write",
            Reply::keep(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello{FORGED}"
            )),
        ),
        (
            "later write",
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").then(ms(100), FORGED),
        ),
    ] {
        // A gateway per row: the pool starts empty, so the connection count is the row's own.
        let env = Env::start().await;
        let client = h2_client();
        env.up.script(vec![first, ok_reply("second")]);
        let (status, body) = h2_get(&client, env.gw.url("/one"), &env.token).await;
        assert_eq!(
            (status, body.as_slice()),
            (http::StatusCode::OK, b"hello".as_slice()),
            "{name}"
        );
        tokio::time::sleep(ms(300)).await;
        let (status, body) = h2_get(&client, env.gw.url("/two"), &env.token).await;
        assert_eq!(status, http::StatusCode::OK, "{name}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            "second",
            "{name}: answered with unasked bytes"
        );
        assert_eq!(
            env.up.connections(),
            2,
            "{name}: the connection that sent unasked bytes was reused"
        );
    }
}

// =============================================================================================
// 9. Answers to requests with a body (still read by hyper's client) follow the same rules
// =============================================================================================

/// A POST with a body goes through hyper's client; the answer's framing is held to the same
/// rules afterwards: ambiguous framing gives the gateway's 502, a repeated equal
/// `Content-Length` reaches the client as one value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_requests_with_a_body_are_held_to_the_same_framing_rules() {
    let env = Env::start().await;
    let refused = [
        (
            "chunked and Content-Length",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunked and a smaller Content-Length (a truncated body looked complete)",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding: gzip",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nnot really gzip",
        ),
    ];
    let mut problems = Vec::new();
    for (name, reply) in refused {
        env.up.script(vec![Reply::close(reply)]);
        let mut c = env.client().await.unwrap();
        match c.exchange_body("POST", "/submit", "ping").await {
            Ok(Outcome::Complete(r)) if r.is_gateway_502() => {}
            Ok(other) => problems.push(format!("{name}: got {other:?}, want the gateway's 502")),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    env.up.script(vec![Reply::close(
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    )]);
    let mut c = env.client().await.unwrap();
    match c.exchange_body("POST", "/submit", "ping").await {
        Ok(Outcome::Complete(r)) => {
            let lengths: Vec<&[u8]> = r.all("content-length");
            if r.status != 200 || r.body != b"hello" || lengths != [b"5".as_slice()] {
                problems.push(format!(
                    "Content-Length: 5, 5: got {}, lengths {lengths:?}",
                    r.describe()
                ));
            }
        }
        other => problems.push(format!("Content-Length: 5, 5: got {other:?}")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `limits.upstream_timeout` on a kept upstream connection, whose timer is moved on from one
/// exchange to the next: quick answers never trip it, a stalled one still gets 504 at the
/// limit, and a timer that fired while its connection sat idle gives the next exchange a fresh
/// deadline (no spurious 504). One client connection throughout, so one kept upstream
/// connection at a time (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_timeout_holds_on_a_kept_connection_across_exchanges_and_idle_time() {
    let env = Env::start_with(&[("limits.upstream_timeout", "1s")]).await;
    {
        let mut script = env.up.script.lock().unwrap();
        for i in 0..3 {
            script.push_back(ok_reply(&format!("q{i}")));
        }
        script.push_back(Reply::keep("").then(
            Duration::from_secs(4),
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate",
        ));
        for i in 3..6 {
            script.push_back(ok_reply(&format!("q{i}")));
        }
    }
    let mut c = env.client().await.unwrap();
    // `/q{i}` answered `q{i}`, for each i.
    async fn quick(c: &mut Client, range: std::ops::Range<usize>, what: &str) {
        for i in range {
            let q = format!("q{i}");
            c.get_ok(&format!("/{q}"), q.as_bytes(), what)
                .await
                .unwrap();
        }
    }
    quick(&mut c, 0..3, "a quick answer").await;
    assert_eq!(
        env.up.accepted.load(Ordering::SeqCst),
        1,
        "the upstream connection was not kept"
    );
    let t = std::time::Instant::now();
    let r = c
        .exchange("GET", "/stalled")
        .await
        .unwrap()
        .complete("the stalled answer")
        .unwrap();
    assert_eq!(r.status, 504, "{}", r.describe());
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "504 after {:?}",
        t.elapsed()
    );
    c.get_ok("/q3", b"q3", "the answer after a 504")
        .await
        .unwrap();
    assert_eq!(
        env.up.accepted.load(Ordering::SeqCst),
        2,
        "a timed-out connection was reused"
    );
    // Past the kept timer's deadline: it fires while the connection is idle.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    quick(&mut c, 4..6, "a quick answer after idling").await;
    assert_eq!(
        env.up.accepted.load(Ordering::SeqCst),
        2,
        "the idle connection was not reused"
    );
}
