//! The gateway's own HTTP/1.1 upstream client: writes a bodyless request's head, reads the answer's head and frames its body strictly (RFC 9112 §6), streams it in the caller's task and keeps the connection only after a clean exchange.
//!
//! Why not hyper's client here: each request through `client::conn::http1` is handed to the
//! connection's own task through a channel and its answer comes back through another (two task
//! wake-ups, a oneshot and a body channel per request), and its parser builds what this module
//! gets from one `httparse` pass. This client is used for the common case only (a bodyless
//! request that asks for no upgrade, to a plain-http upstream): HTTP/1 clients on their
//! connection's own kept upstream connection ([`Home::Slot`]), HTTP/2 clients on connections
//! from their worker's [`Pool`]. Requests with a body, upgrades and https upstreams still go
//! through hyper's client (`UpstreamSlot::send`, the pooled client).
//!
//! Strictness, where an upstream's answer could be read two ways: `Transfer-Encoding` together
//! with `Content-Length`, differing or malformed `Content-Length`s, a transfer coding other than
//! `chunked`, `Transfer-Encoding` in an HTTP/1.0 answer, a malformed chunk and an unexpected
//! `101` are errors (the client gets a 502
//! or a cut-off body, never a guess); bytes left over after a complete answer, or arriving on
//! an idle kept connection, retire the connection, so no answer is ever taken from bytes the
//! upstream sent before the request was written.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::headers::{decimal, hop_index, names_fields, parse_decimal, tokens};

/// The most header lines an answer may have (hyper's default).
pub const MAX_HEADERS: usize = 100;
/// The most bytes an answer's head (status line and header section) may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (with extensions) of a chunked body.
pub const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailer section after a chunked body (read and dropped).
pub const MAX_TRAILERS: usize = 16 * 1024;
/// The most interim (1xx) answers before the final one.
const MAX_INTERIM: usize = 16;
/// The most idle connections a worker's [`Pool`] keeps (nginx's `keepalive` in the benchmark
/// is 512 for the whole server; two workers here).
pub const POOL_MAX_IDLE: usize = 256;
/// How much is read from the upstream at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("upstream i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("the upstream closed the connection in the middle of its answer's head")]
    ClosedInHead,
    #[error("the upstream's answer has a malformed head: {0}")]
    Head(&'static str),
    #[error("the upstream's answer head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the upstream's answer has ambiguous or malformed framing: {0}")]
    Framing(&'static str),
    #[error("the upstream's body ended before its framing said it would")]
    Truncated,
    #[error("the upstream's chunked body is malformed: {0}")]
    Chunk(&'static str),
    #[error("the upstream did not answer within limits.upstream_timeout")]
    TimedOut,
}

/// One kept HTTP/1.1 connection to an upstream, between exchanges (its buffer is then empty).
#[derive(Debug)]
pub struct WireConn {
    authority: Box<str>,
    stream: TcpStream,
    buf: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    out: Vec<u8>,
    /// The deadline of the exchange under way, reused from one exchange to the next: moving a
    /// timer that has not fired to a later deadline is one atomic update, where a new timer per
    /// request is registered in the runtime's timer wheel and removed again (a lock each).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WireConn {
    /// Connects to `authority` (`host:port`). Boxed for its whole life: it moves between its
    /// home and the answers it carries as one pointer (the answer, and so every response on its
    /// way to the client, stays ~100 bytes smaller).
    pub async fn connect(authority: &str) -> Result<Box<WireConn>, std::io::Error> {
        let stream = connect_tcp(authority).await?;
        Ok(Box::new(WireConn {
            authority: authority.into(),
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            timer: None,
        }))
    }

    /// The upstream this connection goes to.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether a kept connection can carry another request: the upstream has neither closed it
    /// nor sent anything unasked while it was idle. Costs no system call unless the socket was
    /// reported readable since its last read.
    pub fn still_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(
                    self.stream.try_read(&mut probe),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                )
            }
        }
    }
}

/// A TCP connection to an upstream (`host:port`) within 5 s, with Nagle off: the own client's
/// connections and a downstream connection's own hyper connection are opened here (the pooled
/// hyper client has its own connector).
pub async fn connect_tcp(authority: &str) -> Result<TcpStream, std::io::Error> {
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TcpStream::connect(authority),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How an answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    Close,
}

/// An answer's head, parsed.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// The fields the client gets, as lines.
    pub fields: RawFields,
    /// The reason phrase, when it is not the status code's usual one.
    pub reason: Option<Bytes>,
    pub framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// An answer's end-to-end fields as the client gets them: `name: value\r\n` lines, names in
/// lower case (as hyper writes them), hop-by-hop fields and those named in `Connection` left
/// out, a repeated `Content-Length` folded into one, none on a 204 or 304. The gateway's own
/// HTTP/1 loop writes the block as it is; every other way out turns it into a header map
/// ([`RawFields::append_to`]).
#[derive(Debug, Clone, Default)]
pub struct RawFields {
    pub block: Bytes,
    /// A `Content-Length` line is in the block.
    pub length: bool,
    /// A `Date` line is in the block.
    pub date: bool,
    /// A `Set-Cookie` line is in the block (the gateway filters those in a header map).
    pub set_cookie: bool,
}

impl RawFields {
    /// Appends the block's fields to `headers`, in order. Each line was checked when the block
    /// was made (an `http` header name and value), so none is refused here.
    pub fn append_to(&self, headers: &mut HeaderMap) {
        for (name, (v0, v1)) in self.spans() {
            match (
                // Names were written in lower case.
                HeaderName::from_lowercase(name),
                HeaderValue::from_maybe_shared(self.block.slice(v0..v1)),
            ) {
                (Ok(n), Ok(v)) => {
                    headers.append(n, v);
                }
                _ => tracing::warn!("an answer field checked before was refused; left out"),
            }
        }
    }

    /// The block's fields in order: each name (lower case) and value.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans()
            .map(|(name, (v0, v1))| (name, self.block.get(v0..v1).unwrap_or_default()))
    }

    /// Each field's name and where its value lies in the block.
    fn spans(&self) -> impl Iterator<Item = (&[u8], (usize, usize))> {
        let block = &self.block[..];
        // Every line ends in CRLF, and neither a name nor a value holds LF (checked when made).
        let mut at = 0;
        std::iter::from_fn(move || loop {
            let n = memchr::memchr(b'\n', block.get(at..)?)?;
            let (start, end) = (at, at + n.saturating_sub(1));
            at += n + 1;
            let line = &block[start..end];
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let v0 = (start + colon + 2).min(end);
            return Some((&line[..colon], (v0, end)));
        })
    }

    /// The fields as a header map.
    pub fn to_map(&self) -> HeaderMap {
        let mut m = HeaderMap::new();
        self.append_to(&mut m);
        m
    }
}

/// What `http::HeaderValue` accepts: visible ASCII, obs-text, space and tab. httparse already
/// refused every other byte in a value it parsed (a unit test holds it to this, byte by byte).
fn is_field_value(v: &[u8]) -> bool {
    v.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// What [`parse_head`] found at the start of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim (1xx, not 101) answer of this many bytes, to be skipped.
    Interim(usize),
    /// A final answer: its head, and how many bytes of the buffer it took.
    Final(Head, usize),
}

/// Parses an answer's head at the start of `buf` (the answer to a request with `method`).
/// A final head is copied into one buffer of its own that its header values share: the
/// connection's read buffer stays unshared and is reused without a new allocation.
pub fn parse_head(buf: &[u8], method: &Method) -> Result<Parsed, WireError> {
    // Uninitialised slots: zeroing 100 of them cost more than parsing a typical head.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(WireError::HeadTooLarge)
            } else {
                Ok(Parsed::Partial)
            }
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError::Head("more than 100 header lines"))
        }
        Err(httparse::Error::Status) => return Err(WireError::Head("status code")),
        Err(httparse::Error::Version) => return Err(WireError::Head("protocol version")),
        Err(httparse::Error::HeaderName) => return Err(WireError::Head("header name")),
        Err(httparse::Error::HeaderValue) => return Err(WireError::Head("header value")),
        Err(_) => return Err(WireError::Head("status line or header syntax")),
    };
    if len > MAX_HEAD {
        return Err(WireError::HeadTooLarge);
    }
    let code = resp.code.ok_or(WireError::Head("status code"))?;
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Head("status code"))?;
    match code {
        101 => {
            return Err(WireError::Head(
                "101 Switching Protocols without an upgrade",
            ))
        }
        100..=199 => return Ok(Parsed::Interim(len)),
        _ => {}
    }
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(WireError::Head("protocol version")),
    };
    let reason = match resp.reason {
        Some(r) if !r.is_empty() && status.canonical_reason() != Some(r) => {
            Some(Bytes::copy_from_slice(r.as_bytes()))
        }
        _ => None,
    };
    let fields = read_fields(resp.headers.iter().map(|h| (h.name.as_bytes(), h.value)))?;
    let framing = framing(&fields, status, version, method)?;
    let keep_alive =
        framing != Framing::Close && version == Version::HTTP_11 && !fields.connection_close;
    // Hop-by-hop fields (and those named in `Connection`) are not the client's: left out here.
    // A repeated `Content-Length` becomes one; a 204 or 304 gets none (as hyper writes them).
    let no_length = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut block = Vec::with_capacity(len);
    let mut raw = RawFields::default();
    for h in resp.headers.iter() {
        // httparse let only RFC 9110 token characters into a name: what `HeaderName` accepts.
        let start = block.len();
        block.extend_from_slice(h.name.as_bytes());
        block[start..].make_ascii_lowercase();
        let lower = &block[start..];
        if hop_index(lower).is_some()
            || (fields.connection_names && connection_lists(resp.headers, lower))
        {
            block.truncate(start);
            continue;
        }
        let mut value = h.value;
        let mut folded = [0u8; 20];
        match lower {
            b"content-length" => {
                if no_length || raw.length {
                    block.truncate(start);
                    continue;
                }
                raw.length = true;
                if let (Some(n), true) = (fields.content_length, fields.content_lengths > 1) {
                    value = decimal(n, &mut folded);
                }
            }
            b"date" => raw.date = true,
            b"set-cookie" => raw.set_cookie = true,
            _ => {}
        }
        // httparse let no other byte through (see `is_field_value`): not scanned a second time.
        debug_assert!(is_field_value(value));
        block.extend_from_slice(b": ");
        block.extend_from_slice(value);
        block.extend_from_slice(b"\r\n");
    }
    raw.block = Bytes::from(block);
    Ok(Parsed::Final(
        Head {
            status,
            version,
            fields: raw,
            reason,
            framing,
            keep_alive,
        },
        len,
    ))
}

/// Whether a raw `Connection` field lists `name` (any case).
fn connection_lists(raw: &[httparse::Header<'_>], name: &[u8]) -> bool {
    raw.iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name)))
}

/// The same framing rules for an answer hyper's client read (requests with a body, upgrades,
/// https upstreams): hyper takes `Transfer-Encoding` over `Content-Length` and forwards both,
/// and passes a `Content-Length` list and other transfer codings on. Repeated equal
/// `Content-Length`s are folded into one value, as here.
pub fn vet_answer(
    headers: &mut HeaderMap,
    status: StatusCode,
    version: Version,
    method: &Method,
) -> Result<(), WireError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(());
    }
    let fields = read_fields(
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )?;
    framing(&fields, status, version, method)?;
    if let (Some(n), true) = (fields.content_length, fields.content_lengths > 1) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(())
}

/// What an answer's head says about its framing and its connection, read from its fields (names
/// in any case).
#[derive(Debug, Default)]
struct FramingFields {
    /// A `Transfer-Encoding` field is present.
    transfer_encoding: bool,
    /// Its codings are exactly one `chunked`.
    chunked_only: bool,
    /// The one `Content-Length` (repeats must agree), and how many values were given.
    content_length: Option<u64>,
    content_lengths: usize,
    /// A `Connection` field names a field besides `keep-alive`/`close`/`upgrade` (see
    /// [`names_fields`]), and whether one lists `close`.
    connection_names: bool,
    connection_close: bool,
}

/// Reads [`FramingFields`] from `(name, value)` pairs. Differing or malformed `Content-Length`
/// values are an error here (a list is never forwarded, RFC 9110 §8.6).
fn read_fields<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<FramingFields, WireError> {
    let mut f = FramingFields::default();
    let mut codings = 0usize;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in tokens(value) {
                f.content_lengths += 1;
                let n =
                    parse_decimal(part).ok_or(WireError::Framing("malformed Content-Length"))?;
                match f.content_length {
                    Some(prev) if prev != n => {
                        return Err(WireError::Framing("differing Content-Length values"))
                    }
                    _ => f.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            f.transfer_encoding = true;
            for c in tokens(value) {
                codings += 1;
                f.chunked_only = codings == 1 && c.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            f.connection_close |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"close"));
            f.connection_names |= names_fields(value);
        }
    }
    Ok(f)
}

/// How the body after this head is delimited; an answer that two readers could delimit
/// differently is an error.
fn framing(
    fields: &FramingFields,
    status: StatusCode,
    version: Version,
    method: &Method,
) -> Result<Framing, WireError> {
    let te = fields.transfer_encoding;
    if te && fields.content_length.is_some() {
        return Err(WireError::Framing(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if te && version == Version::HTTP_10 {
        return Err(WireError::Framing(
            "Transfer-Encoding in an HTTP/1.0 answer",
        ));
    }
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if te {
        // Exactly `chunked`: another coding could not be undone here, and Transfer-Encoding is
        // hop-by-hop, so its bytes would reach the client unlabelled.
        return if fields.chunked_only {
            Ok(Framing::Chunked)
        } else {
            Err(WireError::Framing("a transfer coding other than chunked"))
        };
    }
    Ok(match fields.content_length {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// A chunked-body decoder (RFC 9112 §7.1) over a growing buffer: strict about sizes and line
/// ends, bounded in line and trailer length; extensions and trailer fields are dropped.
#[derive(Debug, Clone)]
pub struct ChunkDecoder {
    state: ChunkState,
    /// How many bytes at the front of the buffer are known to hold no line end: a line that
    /// trickles in byte by byte is searched once, not once per byte.
    scanned: usize,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder {
            state: ChunkState::Size,
            scanned: 0,
        }
    }
}

impl ChunkDecoder {
    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes what it can from `buf`: `Some(data)` is the next piece of the body; `None`
    /// means more input is needed, or the body is complete ([`ChunkDecoder::is_done`]).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(None),
                ChunkState::Size => {
                    let Some(line) = take_line(
                        buf,
                        &mut self.scanned,
                        MAX_CHUNK_LINE,
                        "chunk-size line too long",
                    )?
                    else {
                        return Ok(None);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(WireError::Chunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let room = MAX_TRAILERS.saturating_sub(seen);
                    let Some(line) =
                        take_line(buf, &mut self.scanned, room, "trailer section too long")?
                    else {
                        return Ok(None);
                    };
                    self.state = if line.len() == 2 {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailers(seen + line.len())
                    };
                }
            }
        }
    }
}

/// Splits one CRLF-terminated line (with its CRLF) off `buf`; `None` until it is complete.
/// The search starts after the `scanned` bytes already searched, and resets once a line is taken.
fn take_line(
    buf: &mut BytesMut,
    scanned: &mut usize,
    max: usize,
    too_long: &'static str,
) -> Result<Option<BytesMut>, WireError> {
    let window = &buf[..buf.len().min(max)];
    let from = (*scanned).min(window.len());
    match window[from..].iter().position(|b| *b == b'\n') {
        Some(at) => {
            let i = from + at;
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(WireError::Chunk("line not ended by CRLF"));
            }
            *scanned = 0;
            Ok(Some(buf.split_to(i + 1)))
        }
        None if buf.len() >= max => Err(WireError::Chunk(too_long)),
        None => {
            *scanned = window.len();
            Ok(None)
        }
    }
}

/// The size of a chunk-size line (`1*HEXDIG [ BWS ";" ext ] CRLF`).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let line = &line[..line.len() - 2];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(WireError::Chunk("chunk size is not hexadecimal"));
    }
    let mut size: u64 = 0;
    for d in &line[..digits] {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(v)))
            .ok_or(WireError::Chunk("chunk size overflows"))?;
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    let ws_only = rest
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count()
        == rest.len() - ext.len();
    if !ws_only {
        return Err(WireError::Chunk("chunk size line has stray bytes"));
    }
    if !ext.is_empty()
        && (ext[0] != b';' || ext.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f))
    {
        return Err(WireError::Chunk("chunk size line has stray bytes"));
    }
    Ok(size)
}

/// Whether a request whose exchange failed may be sent again on a fresh connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// It never reached the upstream (writing it failed).
    Safe,
    /// The connection closed before a byte of answer: the upstream may or may not have acted
    /// on it (a kept connection's close racing the request); only an idempotent one is resent.
    IfIdempotent,
    /// An answer had begun.
    No,
}

/// Whether the bytes from `from` on end a line: only then can a parse of the head get further
/// than the last one did (complete it, or find it malformed).
fn ends_a_line(buf: &[u8], from: usize) -> bool {
    buf[from.min(buf.len())..].contains(&b'\n')
}

/// Writes a bodyless request on `conn` and reads its answer's head. A head that trickles in is
/// parsed again only when a read completed a line: at most about one parse per header line
/// (100 at most), not one per read.
async fn exchange(
    conn: &mut WireConn,
    method: &Method,
    target: &str,
    fields: &impl Fn(&mut Vec<u8>),
) -> Result<Head, (WireError, Resend)> {
    let out = &mut conn.out;
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    fields(out);
    out.extend_from_slice(b"\r\n");
    if let Err(e) = conn.stream.write_all(&conn.out).await {
        return Err((e.into(), Resend::Safe));
    }
    let mut interim = 0usize;
    let mut answered = false;
    // Bytes at the front of the buffer already parsed or searched for a line end.
    let mut scanned = 0usize;
    loop {
        if !conn.buf.is_empty() && !ends_a_line(&conn.buf, scanned) {
            answered = true;
            if conn.buf.len() >= MAX_HEAD {
                return Err((WireError::HeadTooLarge, Resend::No));
            }
            scanned = conn.buf.len();
        } else if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&conn.buf, method) {
                Ok(Parsed::Partial) => scanned = conn.buf.len(),
                Ok(Parsed::Interim(len)) => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err((WireError::Head("too many interim answers"), Resend::No));
                    }
                    scanned = 0;
                    conn.buf.advance(len);
                    continue;
                }
                Ok(Parsed::Final(head, len)) => {
                    conn.buf.advance(len);
                    return Ok(head);
                }
                Err(e) => return Err((e, Resend::No)),
            }
        }
        crate::net::make_room(&mut conn.buf, READ_CHUNK);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if answered => return Err((WireError::ClosedInHead, Resend::No)),
            Ok(0) => return Err((WireError::ClosedBeforeAnswer, Resend::IfIdempotent)),
            Ok(_) => {}
            Err(e) if answered => return Err((e.into(), Resend::No)),
            Err(e) => return Err((e.into(), Resend::IfIdempotent)),
        }
    }
}

/// Methods whose request may be sent again when a kept connection turned out closed
/// (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The kept connection of one downstream HTTP/1 connection, shared with the body that returns it.
pub type Slot = std::sync::Arc<std::sync::Mutex<Option<Box<WireConn>>>>;

/// Idle connections of one connection worker, for its HTTP/2 clients (many concurrent streams,
/// each needing a connection of its own while its exchange lasts). Last in, first out: the most
/// recently used connection is the one least likely to have been closed by the upstream.
#[derive(Debug)]
pub struct Pool {
    idle: std::sync::Mutex<std::collections::VecDeque<Box<WireConn>>>,
    max_idle: usize,
}

impl Pool {
    /// A pool keeping at most `max_idle` idle connections (the oldest is closed first).
    pub fn new(max_idle: usize) -> Pool {
        Pool {
            idle: std::sync::Mutex::new(std::collections::VecDeque::new()),
            max_idle,
        }
    }
}

/// Where a connection goes back to once its exchange ended cleanly.
#[derive(Debug, Clone)]
pub enum Home {
    /// A downstream HTTP/1 connection's one kept connection.
    Slot(Slot),
    /// A worker's pool (HTTP/2 clients).
    Pool(std::sync::Arc<Pool>),
}

impl Home {
    /// A kept connection to `authority` that can carry another request; unusable ones found on
    /// the way are closed.
    fn take(&self, authority: &str) -> Option<Box<WireConn>> {
        match self {
            Home::Slot(slot) => {
                let kept = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                kept.filter(|c| c.authority() == authority)
                    .and_then(|mut c| c.still_usable().then_some(c))
            }
            Home::Pool(pool) => {
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(i) = idle.iter().rposition(|c| c.authority() == authority) {
                    if let Some(mut c) = idle.remove(i) {
                        if c.still_usable() {
                            return Some(c);
                        }
                    }
                }
                None
            }
        }
    }

    fn put(&self, conn: Box<WireConn>) {
        match self {
            Home::Slot(slot) => *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn),
            Home::Pool(pool) => {
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() >= pool.max_idle {
                    idle.pop_front();
                }
                if pool.max_idle > 0 {
                    idle.push_back(conn);
                }
            }
        }
    }
}

/// Sends a bodyless request (origin-form `target`, its header fields written by `fields` as
/// `name: value\r\n` lines, valid ones only) to `authority` on a kept
/// connection from `home`, or a new one, and returns the answer with its body streaming from
/// the connection (which goes back to `home` when the body has been read to its end). A kept
/// connection that closed before it answered is replaced once for an idempotent request.
pub async fn send(
    home: Home,
    authority: &str,
    method: &Method,
    target: &str,
    fields: impl Fn(&mut Vec<u8>),
    limit: std::time::Duration,
) -> Result<Response<WireBody>, WireError> {
    // `limit` bounds connecting, writing and reading the head (not the body).
    let deadline = tokio::time::Instant::now() + limit;
    let connect = |authority| async move {
        tokio::time::timeout_at(deadline, WireConn::connect(authority))
            .await
            .map_err(|_| WireError::TimedOut)?
            .map_err(WireError::from)
    };
    let mut reused = false;
    let mut conn = match home.take(authority) {
        Some(c) => {
            reused = true;
            c
        }
        None => connect(authority).await?,
    };
    let head = loop {
        let mut timer = match conn.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let done = tokio::select! {
            biased;
            r = exchange(&mut conn, method, target, &fields) => Some(r),
            () = timer.as_mut() => None,
        };
        conn.timer = Some(timer);
        match done {
            None => return Err(WireError::TimedOut),
            Some(Ok(head)) => break head,
            Some(Err((e, resend))) => {
                let again = match resend {
                    Resend::Safe => true,
                    Resend::IfIdempotent => idempotent(method),
                    Resend::No => false,
                };
                if reused && again {
                    reused = false;
                    conn = connect(authority).await?;
                    continue;
                }
                return Err(e);
            }
        }
    };
    let mut body = WireBody::new(conn, head.framing, head.keep_alive, home);
    body.fields = Some(head.fields);
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    if let Some(r) = head.reason {
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(r) {
            resp.extensions_mut().insert(r);
        }
    }
    Ok(resp)
}

/// Where a [`WireBody`] is.
#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkDecoder),
    Close,
    Done,
}

/// An answer's body, read from the upstream connection as the downstream side asks for it.
/// Once it has been read to its end and the exchange was clean (keep-alive, nothing left over),
/// the connection goes back home (the downstream connection's slot, or the worker's pool).
#[derive(Debug)]
pub struct WireBody {
    conn: Option<Box<WireConn>>,
    state: BodyState,
    keep_alive: bool,
    home: Home,
    /// The answer's fields, until they are written or moved into the response's header map.
    fields: Option<RawFields>,
}

impl WireBody {
    fn new(conn: Box<WireConn>, framing: Framing, keep_alive: bool, home: Home) -> WireBody {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkDecoder::default()),
            Framing::Close => BodyState::Close,
        };
        let mut body = WireBody {
            conn: Some(conn),
            state,
            keep_alive,
            home,
            fields: None,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// The answer's fields, taken out (once) to be written or put into a header map.
    pub fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }

    /// Whether the fields still held here include a `Set-Cookie`.
    pub fn holds_set_cookie(&self) -> bool {
        self.fields.as_ref().is_some_and(|f| f.set_cookie)
    }

    /// The body is complete: the connection goes home if it may be used again.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.home.put(conn);
            }
        }
    }

    /// Reads more from the upstream into the buffer; `Ok(0)` at its end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        loop {
            match conn.stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            crate::net::make_room(&mut conn.buf, READ_CHUNK);
            match conn.stream.try_read_buf(&mut conn.buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn fail(&mut self, e: WireError) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.state = BodyState::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl HttpBody for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(dec) => match dec.step(&mut conn.buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) if dec.is_done() => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(e) => return this.fail(e),
                },
                BodyState::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match this.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.state, BodyState::Close) {
                        // Close-delimited: the end of the stream is the end of the body.
                        this.state = BodyState::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    return this.fail(WireError::Truncated);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Parsed, WireError> {
        parse_head(raw.as_bytes(), &method)
    }

    /// Every byte value in a header value, at its start, middle and end: the head is refused
    /// exactly when the byte is not one `HeaderValue` accepts (what `parse_head` relies on instead
    /// of scanning values again). CR and LF end the line, so they are left out.
    #[test]
    fn a_value_byte_is_refused_exactly_when_a_header_value_could_not_hold_it() {
        for b in (0u8..=255).filter(|b| *b != b'\r' && *b != b'\n') {
            for (pre, post) in [(&b""[..], &b"x"[..]), (b"a", b"z"), (b"x", b"")] {
                let mut raw = b"HTTP/1.1 200 OK\r\nx-test: ".to_vec();
                raw.extend_from_slice(pre);
                raw.push(b);
                raw.extend_from_slice(post);
                raw.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
                let ok = matches!(parse_head(&raw, &Method::GET), Ok(Parsed::Final(..)));
                // Leading and trailing space and tab are not part of a value (RFC 9112 5).
                let legal = is_field_value(&[b]);
                assert_eq!(ok, legal, "byte {b:#04x} after {pre:?}");
                if let (true, Ok(Parsed::Final(h, _))) = (ok, parse_head(&raw, &Method::GET)) {
                    // Kept as sent (less the edge whitespace), and a header value can hold it:
                    // `to_map` leaves out a field `HeaderValue` refuses, so a missing field fails.
                    let map = h.fields.to_map();
                    let v = map.get("x-test").map(|v| v.as_bytes().to_vec());
                    let mut sent = pre.to_vec();
                    sent.push(b);
                    sent.extend_from_slice(post);
                    assert_eq!(v.as_deref(), Some(sent.trim_ascii()), "byte {b:#04x}");
                    assert!(is_field_value(sent.trim_ascii()), "byte {b:#04x}");
                }
            }
        }
    }

    fn framing_of(raw: &str) -> Result<Framing, WireError> {
        match head(raw, Method::GET)? {
            Parsed::Final(h, _) => Ok(h.framing),
            other => panic!("not a final head: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc9112_and_refuses_ambiguity() {
        let ok: &[(&str, Framing)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
                Framing::Chunked,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                Framing::Length(3),
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                Framing::Empty,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::Empty),
        ];
        for (raw, want) in ok {
            assert_eq!(framing_of(raw).unwrap(), *want, "{raw:?}");
        }
        let bad = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 2OO OK\r\n\r\n",
            "HTTTP/1.1 200 OK\r\n\r\n",
            "hello\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ];
        for raw in bad {
            assert!(head(raw, Method::GET).is_err(), "accepted {raw:?}");
        }
        // Ambiguity is refused even where no body follows.
        assert!(head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            Method::HEAD
        )
        .is_err());
    }

    #[test]
    fn a_repeated_content_length_is_forwarded_as_one_value() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        ] {
            match head(raw, Method::GET).unwrap() {
                Parsed::Final(h, _) => {
                    let map = h.fields.to_map();
                    let all: Vec<_> = map.get_all(header::CONTENT_LENGTH).iter().collect();
                    assert_eq!(all, [HeaderValue::from_static("5")], "{raw:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn head_requests_and_interim_answers() {
        match head(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        {
            Parsed::Final(h, _) => assert_eq!(h.framing, Framing::Empty),
            other => panic!("{other:?}"),
        }
        let interim = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n";
        match head(interim, Method::GET).unwrap() {
            Parsed::Interim(n) => assert_eq!(n, interim.len()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET).unwrap(),
            Parsed::Partial
        ));
    }

    #[test]
    fn keep_alive_only_for_a_clean_http11_answer() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n",
                false,
            ),
            ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\n\r\n", false),
        ];
        for (raw, want) in cases {
            match head(raw, Method::GET).unwrap() {
                Parsed::Final(h, _) => assert_eq!(h.keep_alive, want, "{raw:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn head_limits_hold() {
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), Method::GET).is_err());
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            head(&big, Method::GET),
            Err(WireError::HeadTooLarge)
        ));
    }

    #[test]
    fn reason_phrase_kept_only_when_unusual() {
        for (raw, want) in [
            ("HTTP/1.1 200 OK\r\n\r\n", None),
            ("HTTP/1.1 200 Fine\r\n\r\n", Some("Fine")),
            ("HTTP/1.1 418 I'm a teapot\r\n\r\n", None),
            ("HTTP/1.1 599 Custom thing\r\n\r\n", Some("Custom thing")),
        ] {
            match head(raw, Method::GET).unwrap() {
                Parsed::Final(h, _) => {
                    assert_eq!(h.reason.as_deref(), want.map(str::as_bytes), "{raw:?}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Decodes `wire` fed in pieces cut at `cuts` (feeding stops once the decoder is done): the
    /// body, whether it ended, and how many bytes of `wire` it did not consume; or the first error.
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool, usize), WireError> {
        let mut dec = ChunkDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut ends: Vec<usize> = cuts.iter().copied().filter(|c| *c < wire.len()).collect();
        ends.sort_unstable();
        ends.push(wire.len());
        for end in ends {
            buf.extend_from_slice(&wire[at..end.max(at)]);
            at = end.max(at);
            while let Some(d) = dec.step(&mut buf)? {
                out.extend_from_slice(&d);
            }
            if dec.is_done() {
                break;
            }
        }
        // What was fed but not consumed.
        Ok((out, dec.is_done(), buf.len() + wire.len() - at))
    }

    fn chunked(body: &[u8], sizes: &[usize], ext: &str, trailers: &str) -> Vec<u8> {
        let mut w = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            w.extend_from_slice(format!("{n:X}{ext}\r\n").as_bytes());
            w.extend_from_slice(&rest[..n]);
            w.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        w.extend_from_slice(format!("0{ext}\r\n{trailers}\r\n").as_bytes());
        w
    }

    /// Property: for any body, chunking and split of the input, the decoder yields exactly the
    /// body, ends exactly at the end of the chunked encoding and leaves the bytes after it.
    #[test]
    fn chunked_decoding_is_exact_under_any_split() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..400 {
            let len = (next() % 3000) as usize;
            let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let sizes: Vec<usize> = (0..4).map(|_| 1 + (next() % 700) as usize).collect();
            let ext = ["", ";a=b", " ;name=\"v\"", "\t;x"][round % 4];
            let trailers = ["", "X-T: 1\r\n", "A: 1\r\nB: 2\r\n"][round % 3];
            let mut wire = chunked(&body, &sizes, ext, trailers);
            wire.extend_from_slice(b"NEXT");
            // Every tenth round byte by byte (a trickling upstream): the line searches resume.
            let cuts: Vec<usize> = if round % 10 == 0 {
                (0..wire.len()).collect()
            } else {
                (0..(next() % 8))
                    .map(|_| (next() % (wire.len() as u64 + 1)) as usize)
                    .collect()
            };
            let (out, done, left) = decode_in_pieces(&wire, &cuts).unwrap();
            assert!(done, "round {round}");
            assert_eq!(out, body, "round {round}");
            assert_eq!(
                left, 4,
                "round {round}: the bytes after the body are not consumed"
            );
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        let bad: &[&[u8]] = &[
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\x00\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
        ];
        for w in bad {
            assert!(
                decode_in_pieces(w, &[]).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(w)
            );
        }
        let long_line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
        assert!(decode_in_pieces(long_line.as_bytes(), &[]).is_err());
        let long_trailers = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(decode_in_pieces(long_trailers.as_bytes(), &[]).is_err());
        // Cut short: not an error by itself, but never done.
        let (_, done, _) = decode_in_pieces(b"5\r\nhel", &[]).unwrap();
        assert!(!done);
    }
    /// An upstream that writes its answer one byte at a time: every spelling of line ends, a
    /// leading empty line and an interim answer still give the right answer (the head is parsed
    /// only when a line ended), and a malformed status line is refused as soon as it ends, not
    /// when the upstream gives up.
    #[tokio::test]
    async fn a_trickled_answer_is_read_the_same() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cases: &[(&str, Option<&str>)] = &[
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", Some("hello")),
            ("HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", Some("hello")),
            ("\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Some("hello")),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\nT: 1\r\n\r\n",
                Some("hello"),
            ),
            ("HTTTP/1.1 200 OK\r\n", None),
        ];
        for (reply, want) in cases {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let reply = reply.as_bytes().to_vec();
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).await.unwrap();
                    head.extend_from_slice(&b[..n]);
                }
                for byte in reply {
                    if s.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
                // Keep the connection open: a malformed head must be refused without a close.
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            });
            let home = Home::Slot(Slot::default());
            let got = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                send(
                    home,
                    &addr,
                    &Method::GET,
                    "/",
                    |_: &mut Vec<u8>| {},
                    std::time::Duration::from_secs(30),
                ),
            )
            .await
            .expect("hung on a trickled answer");
            match (got, want) {
                (Ok(resp), Some(body)) => {
                    use http_body_util::BodyExt;
                    assert_eq!(resp.status(), StatusCode::OK);
                    let b = resp.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(&b[..], body.as_bytes());
                }
                (Err(_), None) => {}
                (got, want) => panic!("{want:?}: got {:?}", got.map(|r| r.status())),
            }
            server.abort();
        }
    }
}
