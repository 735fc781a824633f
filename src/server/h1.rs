//! The gateway's own HTTP/1.1 loop for requests without a body: reads heads with httparse,
//! answers through the router and writes the answer itself. Anything else (a body, an upgrade,
//! `Expect`, HTTP/1.0, HTTP/2, a head it cannot read) hands the connection, with every byte
//! already read, to hyper for the rest of its life. A head over `limits.max_header_bytes` gets
//! 431 here, whatever its kind.
//!
//! Only requests whose framing cannot be read two ways are taken: HTTP/1.1, a head httparse
//! reads completely, no `Content-Length`, `Transfer-Encoding`, `Upgrade` or `Expect` field, no
//! `upgrade` in `Connection`, not `CONNECT`. The request ends where its head ends, so the next
//! bytes are the next request, exactly as hyper would read them. Header names, values, method
//! and target go through the same `http` constructors hyper uses; one it would refuse is handed
//! over, and hyper answers it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use hyper::body::Body;
use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::conn::{Metered, Phases};
use crate::http::response::{take_raw_fields, Body as AnswerBody};
use crate::http::router::handle;
use crate::http::ConnInfo;
use crate::proxy::headers::{decimal, parse_decimal, push_field, tokens};
use crate::request::ClientBody;
use crate::state::AppState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// At most this many fields in a head taken here (hyper's own default; more is handed over).
pub const MAX_FIELDS: usize = 100;

/// The room for fields a connection keeps between requests, at most.
const SPARE_FIELDS: usize = 32;

/// Answer bytes gathered before a write; a larger body frame is written on its own.
const GATHER: usize = 64 * 1024;

/// How the loop ended.
pub enum Next {
    /// The connection is finished (closed by either side, or gracefully).
    Done,
    /// hyper serves the rest: the socket and the bytes read from it but not used.
    HandOver(Metered, Bytes),
}

/// What the front of the read buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A complete head of a request taken here: its length and whether the client asked to close.
    Head {
        len: usize,
        fields: usize,
        close: bool,
    },
    /// Not a whole head yet.
    Partial,
    /// Not for this loop: hyper reads it (and answers or refuses it).
    HandOver,
}

/// Where the parts of a taken head lie in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Spans {
    method: (usize, usize),
    target: (usize, usize),
    fields: [((usize, usize), (usize, usize)); MAX_FIELDS],
}

impl Default for Head {
    fn default() -> Self {
        Head {
            spans: Spans {
                method: (0, 0),
                target: (0, 0),
                fields: [((0, 0), (0, 0)); MAX_FIELDS],
            },
        }
    }
}

/// Reusable space for one parse.
pub struct Head {
    spans: Spans,
}

fn span(base: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start, start + part.len())
}

/// Reads the head at the front of `buf` and decides whether this loop takes it.
pub fn parse(buf: &[u8], head: &mut Head) -> Parse {
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::HandOver,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parse::HandOver;
    };
    if method == "CONNECT" {
        return Parse::HandOver;
    }
    head.spans.method = span(buf, method.as_bytes());
    head.spans.target = span(buf, target.as_bytes());
    let mut close = false;
    for (i, f) in req.headers.iter().enumerate() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parse::HandOver;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(f.value) {
                if t.eq_ignore_ascii_case(b"upgrade") {
                    return Parse::HandOver;
                }
                close |= t.eq_ignore_ascii_case(b"close");
            }
        }
        head.spans.fields[i] = (span(buf, name), span(buf, f.value));
    }
    Parse::Head {
        len,
        fields: req.headers.len(),
        close,
    }
}

/// Builds the request from a taken head (`bytes` is exactly the head). `None`: a part the `http`
/// types refuse (hyper answers those).
pub fn request(bytes: &Bytes, head: &Head, fields: usize) -> Option<Request<ClientBody>> {
    request_into(bytes, head, fields, HeaderMap::with_capacity(fields))
}

/// [`request`] with its fields put into `map` (empty; the connection's map from its last
/// request, cleared: its room is reused, not allocated again).
fn request_into(
    bytes: &Bytes,
    head: &Head,
    fields: usize,
    mut map: HeaderMap,
) -> Option<Request<ClientBody>> {
    let s = &head.spans;
    let method = Method::from_bytes(&bytes[s.method.0..s.method.1]).ok()?;
    let uri = Uri::from_maybe_shared(bytes.slice(s.target.0..s.target.1)).ok()?;
    for &((n0, n1), (v0, v1)) in &s.fields[..fields] {
        let name = HeaderName::from_bytes(&bytes[n0..n1]).ok()?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(v0..v1)).ok()?;
        map.append(name, value);
    }
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Some(req)
}

/// Serves requests on `io` until it closes, a graceful close is asked for (`stop`), or a request
/// comes that hyper should read.
pub async fn serve(
    mut io: Metered,
    state: &Arc<AppState>,
    conn: &ConnInfo,
    phases: &Arc<Phases>,
    stop: &AtomicBool,
    max_head: usize,
) -> Result<Next, BoxError> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // On the heap: the span table is KiBs, and the connection's future is touched for every
    // request (smaller futures, fewer cache misses with many connections).
    let mut head = Box::new(Head::default());
    let mut spare = HeaderMap::new();
    loop {
        let (len, fields, close) = loop {
            if !buf.is_empty() {
                match parse(&buf, &mut head) {
                    // `limits.max_header_bytes` holds exactly, however the head was split into
                    // reads (hyper's own check depends on how much it read at once).
                    Parse::Head { len, .. } if len > max_head => {
                        return too_large(io, &mut out).await
                    }
                    Parse::Head { len, fields, close } => break (len, fields, close),
                    Parse::HandOver => return Ok(Next::HandOver(io, buf.freeze())),
                    Parse::Partial if buf.len() >= max_head => {
                        return too_large(io, &mut out).await
                    }
                    Parse::Partial => {}
                }
            }
            crate::net::make_room(&mut buf, 8 * 1024);
            // Between requests a graceful close ends the connection at once; a head half read
            // is dropped with it (hyper does the same).
            let n = {
                let mut read = std::pin::pin!(io.read_buf(&mut buf));
                poll_fn(|cx| {
                    if stop.load(Ordering::Relaxed) {
                        return Poll::Ready(Ok(0));
                    }
                    read.as_mut().poll(cx)
                })
                .await?
            };
            if n == 0 {
                return Ok(Next::Done);
            }
        };
        let bytes = buf.split_to(len).freeze();
        let Some(mut req) = request_into(&bytes, &head, fields, std::mem::take(&mut spare)) else {
            let mut all = BytesMut::with_capacity(bytes.len() + buf.len());
            all.extend_from_slice(&bytes);
            all.extend_from_slice(&buf);
            return Ok(Next::HandOver(io, all.freeze()));
        };
        drop(bytes);
        let in_flight = phases.request_started(Version::HTTP_11);
        let is_head = req.method() == Method::HEAD;
        let resp = handle(state, &mut req, conn).await;
        // The request's field map is kept (emptied) for the next request on this connection.
        // A large one is not kept (an idle connection holds no more than a usual request needs).
        spare = std::mem::take(req.headers_mut());
        if spare.capacity() > SPARE_FIELDS {
            spare = HeaderMap::new();
        }
        spare.clear();
        drop(req);
        let close = close || stop.load(Ordering::Relaxed);
        let keep = write_answer(&mut io, resp, is_head, close, &mut out).await?;
        drop(in_flight);
        if !keep {
            // The client may have sent its next request already (pipelined, or before it saw
            // a graceful close): read and drop it rather than reset the answer away.
            if io.shutdown().await.is_ok() {
                super::conn::linger(&mut io).await;
            }
            return Ok(Next::Done);
        }
    }
}

/// Answers a request head over `limits.max_header_bytes` with 431 (as hyper words it) and
/// closes the connection.
async fn too_large(mut io: Metered, out: &mut Vec<u8>) -> Result<Next, BoxError> {
    out.clear();
    out.extend_from_slice(
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n",
    );
    date(out);
    out.extend_from_slice(b"\r\n");
    io.write_all(out).await?;
    // The rest of the head is likely on its way: read and drop it, or the reset it would cause
    // could keep the 431 from the client.
    if io.shutdown().await.is_ok() {
        super::conn::linger(&mut io).await;
    }
    Ok(Next::Done)
}

/// How the answer's body is framed on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes one answer. `Ok(false)`: the connection closes after it.
async fn write_answer(
    io: &mut Metered,
    resp: Response<AnswerBody>,
    is_head: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<bool, BoxError> {
    let (parts, mut body) = resp.into_parts();
    let raw = take_raw_fields(&mut body);
    let status = parts.status;
    if status.is_informational() {
        return Err("informational status as a final answer".into());
    }
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // An upstream's own reason phrase passes (hyper's client and the own client both keep it).
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        body.size_hint().exact()
    };
    let mut keep = !close;
    let mut said_close = false;
    let mut wrote_date = false;
    let mut wrote_length = false;
    let mut header_length: Option<u64> = None;
    for (name, value) in parts.headers.iter() {
        if *name == CONTENT_LENGTH {
            if is_head {
                // A HEAD answer states the length a GET would have; no body follows.
                push_field(out, name.as_str(), value.as_bytes());
                wrote_length = true;
                continue;
            }
            let n = parse_decimal(value.as_bytes()).ok_or("invalid Content-Length in answer")?;
            if header_length.is_some_and(|h| h != n) {
                return Err("conflicting Content-Length in answer".into());
            }
            header_length = Some(n);
            continue;
        }
        if *name == TRANSFER_ENCODING {
            // The framing is decided here, from the body.
            continue;
        }
        if *name == CONNECTION && tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"))
        {
            keep = false;
            said_close = true;
        }
        if *name == DATE {
            wrote_date = true;
        }
        push_field(out, name.as_str(), value.as_bytes());
    }
    if let Some(raw) = &raw {
        // An upstream answer's own fields, checked and filtered when its head was read. Its
        // `Content-Length` (if any) is the body's exact length, or on a HEAD what a GET would get.
        out.extend_from_slice(&raw.block);
        wrote_date |= raw.date;
        wrote_length |= raw.length;
    }
    let mut digits = [0u8; 20];
    let framing = if is_head {
        if !wrote_length {
            if let Some(n) = known.filter(|n| *n > 0).or(header_length) {
                push_field(out, "content-length", decimal(n, &mut digits));
            }
        }
        Framing::None
    } else if no_content {
        Framing::None
    } else {
        match known.or(header_length) {
            Some(n) => {
                if header_length.is_some_and(|h| h != n) {
                    return Err("Content-Length disagrees with the answer body".into());
                }
                if !wrote_length {
                    push_field(out, "content-length", decimal(n, &mut digits));
                }
                if n == 0 {
                    Framing::None
                } else {
                    Framing::Length(n)
                }
            }
            None if wrote_length => {
                return Err("an answer field states a length its body does not know".into())
            }
            None => {
                push_field(out, "transfer-encoding", b"chunked");
                Framing::Chunked
            }
        }
    };
    if !keep && !said_close {
        push_field(out, "connection", b"close");
    }
    if !wrote_date {
        date(out);
    }
    out.extend_from_slice(b"\r\n");

    match framing {
        Framing::None => drop(body),
        Framing::Length(n) => {
            let mut left = n;
            while let Some(data) = next_data(io, &mut body, out).await? {
                let len = data.len() as u64;
                if len > left {
                    return Err("answer body longer than its length".into());
                }
                left -= len;
                put(io, out, data).await?;
            }
            if left > 0 {
                return Err("answer body shorter than its length".into());
            }
        }
        Framing::Chunked => {
            while let Some(data) = next_data(io, &mut body, out).await? {
                if data.is_empty() {
                    continue;
                }
                let mut hex = [0u8; 16];
                out.extend_from_slice(hex_len(data.len(), &mut hex));
                out.extend_from_slice(b"\r\n");
                put(io, out, data).await?;
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await?;
    Ok(keep)
}

/// The next data of the body. While the body has nothing ready, what is gathered is written first.
async fn next_data(
    io: &mut Metered,
    body: &mut AnswerBody,
    out: &mut Vec<u8>,
) -> Result<Option<Bytes>, BoxError> {
    loop {
        let ready = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let frame = match ready {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                io.flush().await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
                // Trailers are not sent.
            }
        }
    }
}

/// Appends body data, or writes what is gathered and then the data when it is large.
async fn put(io: &mut Metered, out: &mut Vec<u8>, mut data: Bytes) -> io::Result<()> {
    if out.len() + data.len() <= GATHER {
        out.extend_from_slice(&data);
        return Ok(());
    }
    io.write_all(out).await?;
    out.clear();
    while data.has_remaining() {
        let n = io.write(&data).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data.advance(n);
    }
    Ok(())
}

fn hex_len(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends `date: <IMF-fixdate>\r\n`, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    with_date(|d| push_field(out, "date", d));
}

/// Calls `f` with the current time as an HTTP date (formatted once a second per thread).
pub fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        f(c.1.as_bytes())
    })
}

/// The socket for hyper after a hand-over: the bytes already read come first.
pub struct Rewind {
    pre: Bytes,
    io: Metered,
}

impl Rewind {
    pub fn new(io: Metered, pre: Bytes) -> Rewind {
        Rewind { pre, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(raw: &str) -> Parse {
        parse(raw.as_bytes(), &mut Head::default())
    }

    #[test]
    fn only_requests_without_a_body_or_upgrade_are_taken() {
        let taken = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "HEAD /x HTTP/1.1\r\nHost: a\r\nCookie: c=1\r\n\r\n",
            "DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\n\r\n",
        ];
        for raw in taken {
            assert!(
                matches!(decide(raw), Parse::Head { close: false, .. }),
                "{raw:?}"
            );
        }
        let handed = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, UPGRADE\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}",
        ];
        for raw in handed {
            assert_eq!(decide(raw), Parse::HandOver, "{raw:?}");
        }
        assert_eq!(decide("GET / HTTP/1.1\r\nHost: a\r\n"), Parse::Partial);
        assert_eq!(decide("PRI * HTTP/2"), Parse::HandOver);
        assert_eq!(decide("GET / HTTP/1."), Parse::Partial);
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            decide(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Parse::HandOver
        );
    }

    #[test]
    fn a_head_ends_where_it_ends_and_close_is_read_from_every_connection_field() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\nGET /next HTTP/1.1\r\n";
        let Parse::Head { len, fields, close } = decide(raw) else {
            panic!("not taken");
        };
        assert!(close);
        assert_eq!(fields, 3);
        assert!(raw[len..].starts_with("GET /next"));
    }

    #[test]
    fn the_request_keeps_every_field_in_order_and_shares_the_head_bytes() {
        let raw = Bytes::from_static(
            b"GET /a%2Fb;x?q=1 HTTP/1.1\r\nHost: example.com\r\nCookie: a=1\r\nCookie: b=2\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
        );
        let mut head = Head::default();
        let Parse::Head { len, fields, .. } = parse(&raw, &mut head) else {
            panic!("not taken");
        };
        assert_eq!(len, raw.len());
        let req = request(&raw, &head, fields).expect("built");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/a%2Fb;x");
        assert_eq!(req.uri().query(), Some("q=1"));
        assert_eq!(req.version(), Version::HTTP_11);
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(req.headers()["x-obs"].as_bytes(), "café".as_bytes());
        assert_eq!(req.headers().len(), 4);
    }

    #[test]
    fn parts_the_http_types_refuse_are_not_built() {
        for raw in [
            &b"GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            &b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ] {
            let raw = Bytes::copy_from_slice(raw);
            let mut head = Head::default();
            if let Parse::Head { fields, .. } = parse(&raw, &mut head) {
                assert!(request(&raw, &head, fields).is_none(), "{raw:?}");
            }
        }
    }

    #[test]
    fn content_length_values_and_chunk_sizes() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"123"), Some(123));
        for bad in [
            &b""[..],
            b"+1",
            b"1 ",
            b"0x10",
            b"99999999999999999999",
            b"-1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        let mut b = [0u8; 16];
        assert_eq!(hex_len(0, &mut b), b"0");
        assert_eq!(hex_len(255, &mut b), b"ff");
        assert_eq!(hex_len(65536, &mut b), b"10000");
    }
}
