//! A small raw HTTP/2 client (RFC 9113) over one `TcpStream`, for wire-level tests of the
//! gateway's HTTP/2 server: it writes whatever frames the test builds (malformed ones too),
//! decodes the server's frames (HPACK through the independent `hpack` crate) and classifies
//! what the server did about a stream. Every read and every write has a deadline.

#![allow(dead_code)] // a toolkit: not every test uses every frame helper

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types.
pub mod ty {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// One frame as read from the server (header blocks already decoded in `headers`).
#[derive(Debug, Clone)]
pub struct Frame {
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
    /// The decoded header list of a HEADERS frame (with its CONTINUATIONs).
    pub headers: Option<Vec<(String, String)>>,
}

impl Frame {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        match self.ty {
            ty::RST_STREAM => Some(be32(&self.payload, 0)),
            ty::GOAWAY => Some(be32(&self.payload, 4)),
            _ => None,
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(u32::MAX)
}

/// What one read produced.
#[derive(Debug)]
pub enum Read {
    Frame(Frame),
    Eof,
    Timeout,
}

/// What the server did about a stream (or the whole connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response (END_STREAM seen).
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// RST_STREAM with this code.
    Reset(u32),
    /// GOAWAY that ends the stream (an error, or a last_stream_id below it).
    GoAway {
        code: u32,
        last_stream: u32,
    },
    /// The connection closed without either.
    Eof,
    Timeout,
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The RST_STREAM or GOAWAY error code.
    pub fn code(&self) -> Option<u32> {
        match self {
            Outcome::Reset(c) | Outcome::GoAway { code: c, .. } => Some(*c),
            _ => None,
        }
    }
    pub fn body_text(&self) -> String {
        match self {
            Outcome::Response { body, .. } => String::from_utf8_lossy(body).into_owned(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct StreamState {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub ended: bool,
    pub reset: Option<u32>,
    /// DATA bytes received (flow-controlled length, padding included).
    pub data_received: usize,
}

/// Builds an HPACK block: literals without indexing (no Huffman), indexed references,
/// literals with incremental indexing, and raw bytes for malformed blocks.
#[derive(Debug, Default, Clone)]
pub struct Block(pub Vec<u8>);

fn hpack_int(out: &mut Vec<u8>, prefix_bits: u8, first: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0x00, s.len());
    out.extend_from_slice(s);
}

impl Block {
    pub fn new() -> Block {
        Block(Vec::new())
    }
    /// Literal header field without indexing, new name (RFC 7541 §6.2.2).
    pub fn lit(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Block {
        self.0.push(0x00);
        hpack_str(&mut self.0, name.as_ref());
        hpack_str(&mut self.0, value.as_ref());
        self
    }
    /// Literal header field with incremental indexing, new name (§6.2.1).
    pub fn lit_indexed(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Block {
        self.0.push(0x40);
        hpack_str(&mut self.0, name.as_ref());
        hpack_str(&mut self.0, value.as_ref());
        self
    }
    /// Indexed header field (§6.1).
    pub fn indexed(mut self, index: usize) -> Block {
        hpack_int(&mut self.0, 7, 0x80, index);
        self
    }
    pub fn raw(mut self, bytes: &[u8]) -> Block {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Serialises one frame.
pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    frame_with_len(ty, flags, stream, payload.len(), payload)
}

/// Serialises one frame whose header claims `len` (for length errors).
pub fn frame_with_len(ty: u8, flags: u8, stream: u32, len: usize, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings_payload(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in settings {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

/// A raw HTTP/2 client connection.
/// What the raw client talks over: a TCP stream (prior knowledge) or a TLS one (ALPN `h2`).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

pub struct H2 {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
    decoder: hpack::Decoder<'static>,
    /// `host:port` for `:authority`.
    pub authority: String,
    /// Answer SETTINGS with an ACK automatically.
    pub auto_settings_ack: bool,
    /// Give back flow-control credit (connection and stream) for every DATA frame received.
    pub auto_window_update: bool,
    /// Deadline for each write.
    pub write_timeout: Duration,
    /// The first frame the server sent.
    pub first_frame: Option<Frame>,
    /// The server's SETTINGS (latest value per id).
    pub server_settings: HashMap<u16, u32>,
    /// ACKs received for our SETTINGS.
    pub settings_acks: usize,
    /// PING ACK payloads received.
    pub ping_acks: Vec<[u8; 8]>,
    pub goaway: Option<Frame>,
    pub eof: bool,
    /// How reading ended, when it ended with an error (a reset, a TLS stream cut without
    /// close_notify) rather than a clean end of stream.
    pub read_error: Option<std::io::ErrorKind>,
    pub streams: HashMap<u32, StreamState>,
    /// Every frame read, in order.
    pub log: Vec<Frame>,
    /// Send windows (what the server granted us).
    conn_credit: i64,
    stream_credit: HashMap<u32, i64>,
    conn_sent: i64,
    stream_sent: HashMap<u32, i64>,
    pending_header_block: Option<Frame>,
    /// Bytes written so far.
    pub written: usize,
}

impl H2 {
    /// Connects, writes the preface and a SETTINGS frame with `settings`, and reads until the
    /// server's first frame has arrived (it must be SETTINGS: checked by the caller through
    /// `first_frame`).
    pub async fn connect_with(addr: SocketAddr, settings: &[(u16, u32)]) -> H2 {
        let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        s.set_nodelay(true).unwrap();
        Self::over(Box::new(s), addr.to_string(), settings).await
    }

    /// [`Self::connect_with`] over a stream already open (a TLS one that agreed on `h2`).
    pub async fn over(s: Box<dyn Stream>, authority: String, settings: &[(u16, u32)]) -> H2 {
        let mut h = H2 {
            s,
            buf: Vec::new(),
            decoder: hpack::Decoder::new(),
            authority,
            auto_settings_ack: true,
            auto_window_update: true,
            write_timeout: Duration::from_secs(10),
            first_frame: None,
            server_settings: HashMap::new(),
            settings_acks: 0,
            ping_acks: Vec::new(),
            goaway: None,
            eof: false,
            read_error: None,
            streams: HashMap::new(),
            log: Vec::new(),
            conn_credit: 65_535,
            stream_credit: HashMap::new(),
            conn_sent: 0,
            stream_sent: HashMap::new(),
            pending_header_block: None,
            written: 0,
        };
        let mut first = PREFACE.to_vec();
        first.extend(frame(ty::SETTINGS, 0, 0, &settings_payload(settings)));
        h.send_raw(&first).await.expect("writing the preface");
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.first_frame.is_none() {
            match h.read_frame(deadline).await {
                Read::Frame(_) => {}
                r => panic!("no first frame from the server: {r:?}"),
            }
        }
        h
    }

    pub async fn connect(addr: SocketAddr) -> H2 {
        Self::connect_with(addr, &[]).await
    }

    /// Reads until our SETTINGS were acknowledged.
    pub async fn handshake(&mut self) {
        let ok = self
            .read_until(Duration::from_secs(10), |h| h.settings_acks > 0)
            .await;
        assert!(ok, "the server did not ACK our SETTINGS");
    }

    /// The server's SETTINGS_MAX_FRAME_SIZE.
    pub fn max_frame_size(&self) -> usize {
        *self
            .server_settings
            .get(&setting::MAX_FRAME_SIZE)
            .unwrap_or(&16_384) as usize
    }

    // ----- writing -----------------------------------------------------------------------

    /// Writes bytes, failing with `TimedOut` after `write_timeout`.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(self.write_timeout, self.s.write_all(bytes)).await {
            Ok(r) => {
                r?;
                self.written += bytes.len();
                Ok(())
            }
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            )),
        }
    }

    /// Writes one frame; write errors are ignored (the server may already have closed: the
    /// test then reads what it said).
    pub async fn send_frame(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
        let _ = self.send_raw(&frame(ty, flags, stream, payload)).await;
    }

    pub async fn headers(&mut self, stream: u32, block: &Block, end_stream: bool) {
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        self.send_frame(ty::HEADERS, flags, stream, &block.0).await;
    }

    /// HEADERS without END_HEADERS.
    pub async fn headers_open(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        self.send_frame(ty::HEADERS, flags, stream, block).await;
    }

    pub async fn continuation(&mut self, stream: u32, block: &[u8], end_headers: bool) {
        let flags = if end_headers { flag::END_HEADERS } else { 0 };
        self.send_frame(ty::CONTINUATION, flags, stream, block)
            .await;
    }

    /// DATA without looking at flow control.
    pub async fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        self.conn_sent += data.len() as i64;
        *self.stream_sent.entry(stream).or_default() += data.len() as i64;
        self.send_frame(ty::DATA, flags, stream, data).await;
    }

    pub async fn rst_stream(&mut self, stream: u32, code: u32) {
        self.send_frame(ty::RST_STREAM, 0, stream, &code.to_be_bytes())
            .await;
    }

    pub async fn ping(&mut self, payload: [u8; 8]) {
        self.send_frame(ty::PING, 0, 0, &payload).await;
    }

    pub async fn settings(&mut self, settings: &[(u16, u32)]) {
        self.send_frame(ty::SETTINGS, 0, 0, &settings_payload(settings))
            .await;
    }

    pub async fn settings_ack(&mut self) {
        self.send_frame(ty::SETTINGS, flag::ACK, 0, &[]).await;
    }

    pub async fn window_update(&mut self, stream: u32, increment: u32) {
        self.send_frame(ty::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
            .await;
    }

    pub async fn priority(&mut self, stream: u32, depends_on: u32, weight: u8) {
        let mut p = depends_on.to_be_bytes().to_vec();
        p.push(weight);
        self.send_frame(ty::PRIORITY, 0, stream, &p).await;
    }

    pub async fn goaway(&mut self, last_stream: u32, code: u32) {
        let mut p = last_stream.to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        self.send_frame(ty::GOAWAY, 0, 0, &p).await;
    }

    /// A request head: `:method`, `:scheme http`, `:authority`, `:path`, then `extra`.
    pub fn request_block(&self, method: &str, path: &str, extra: &[(&str, &str)]) -> Block {
        let mut b = Block::new()
            .lit(":method", method)
            .lit(":scheme", "http")
            .lit(":authority", &self.authority)
            .lit(":path", path);
        for (n, v) in extra {
            b = b.lit(n, v);
        }
        b
    }

    /// Sends a GET with END_STREAM.
    pub async fn get(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) {
        let b = self.request_block("GET", path, extra);
        self.headers(stream, &b, true).await;
    }

    /// The send window left on `stream` (the smaller of it and the connection's).
    pub fn send_window(&self, stream: u32) -> i64 {
        let initial = i64::from(
            *self
                .server_settings
                .get(&setting::INITIAL_WINDOW_SIZE)
                .unwrap_or(&65_535),
        );
        let s = initial + self.stream_credit.get(&stream).copied().unwrap_or(0)
            - self.stream_sent.get(&stream).copied().unwrap_or(0);
        s.min(self.conn_credit - self.conn_sent)
    }

    /// Sends `body` on `stream` as DATA frames within the server's windows and frame size,
    /// reading the server's WINDOW_UPDATEs as needed. Err if the stream or connection ends.
    pub async fn send_body(
        &mut self,
        stream: u32,
        body: &[u8],
        end_stream: bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut off = 0;
        while off < body.len() {
            if let Some(c) = self.streams.get(&stream).and_then(|s| s.reset) {
                return Err(format!("stream reset ({c}) after {off} bytes"));
            }
            if self.goaway.is_some() || self.eof {
                return Err(format!("connection ended after {off} bytes"));
            }
            let w = self.send_window(stream);
            if w <= 0 {
                match self.read_frame(deadline).await {
                    Read::Frame(_) => continue,
                    r => return Err(format!("{r:?} waiting for window after {off} bytes")),
                }
            }
            let n = (w as usize)
                .min(self.max_frame_size())
                .min(body.len() - off);
            let last = off + n == body.len();
            self.data(stream, &body[off..off + n], end_stream && last)
                .await;
            off += n;
        }
        if body.is_empty() && end_stream {
            self.data(stream, &[], true).await;
        }
        Ok(())
    }

    // ----- reading -----------------------------------------------------------------------

    async fn fill(&mut self, want: usize, deadline: Instant) -> Result<(), Read> {
        while self.buf.len() < want {
            let mut chunk = vec![0u8; 65_536];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Err(_) => return Err(Read::Timeout),
                Ok(Ok(0)) => {
                    self.eof = true;
                    return Err(Read::Eof);
                }
                Ok(Err(e)) => {
                    self.eof = true;
                    self.read_error = Some(e.kind());
                    return Err(Read::Eof);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        Ok(())
    }

    async fn read_one(&mut self, deadline: Instant) -> Result<Frame, Read> {
        if self.eof {
            return Err(Read::Eof);
        }
        self.fill(9, deadline).await?;
        let len = (usize::from(self.buf[0]) << 16)
            | (usize::from(self.buf[1]) << 8)
            | usize::from(self.buf[2]);
        self.fill(9 + len, deadline).await?;
        let f = Frame {
            ty: self.buf[3],
            flags: self.buf[4],
            stream: be32(&self.buf, 5) & 0x7fff_ffff,
            payload: self.buf[9..9 + len].to_vec(),
            headers: None,
        };
        self.buf.drain(..9 + len);
        Ok(f)
    }

    /// Reads one frame (a HEADERS with its CONTINUATIONs as one), updating the connection
    /// state; answers SETTINGS and gives back DATA credit when so configured.
    pub async fn read_frame(&mut self, deadline: Instant) -> Read {
        let mut f = match self.read_one(deadline).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        if self.first_frame.is_none() {
            self.first_frame = Some(f.clone());
        }
        if f.ty == ty::CONTINUATION {
            if let Some(mut h) = self.pending_header_block.take() {
                h.payload.extend_from_slice(&f.payload);
                h.flags |= f.flags & flag::END_HEADERS;
                f = h;
            }
        }
        match f.ty {
            ty::HEADERS | ty::CONTINUATION => {
                if !f.has(flag::END_HEADERS) {
                    let mut p = f.clone();
                    p.ty = ty::HEADERS;
                    self.pending_header_block = Some(p);
                    self.log.push(f.clone());
                    return Read::Frame(f);
                }
                let mut block: &[u8] = &f.payload;
                let mut pad = 0;
                if f.has(flag::PADDED) && f.ty == ty::HEADERS {
                    pad = usize::from(block[0]);
                    block = &block[1..];
                }
                if f.has(flag::PRIORITY) && f.ty == ty::HEADERS {
                    block = &block[5..];
                }
                let block = &block[..block.len() - pad];
                let list: Vec<(String, String)> = self
                    .decoder
                    .decode(block)
                    .unwrap_or_else(|e| panic!("the server's HPACK block does not decode: {e:?}"))
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect();
                let st = self.streams.entry(f.stream).or_default();
                for (n, v) in &list {
                    if n == ":status" {
                        st.status = v.parse().ok();
                    } else {
                        st.headers.push((n.clone(), v.clone()));
                    }
                }
                if f.has(flag::END_STREAM) {
                    st.ended = true;
                }
                f.ty = ty::HEADERS;
                f.headers = Some(list);
            }
            ty::DATA => {
                let len = f.payload.len();
                let mut body: &[u8] = &f.payload;
                if f.has(flag::PADDED) && !body.is_empty() {
                    let pad = usize::from(body[0]);
                    body = &body[1..body.len().saturating_sub(pad)];
                }
                let st = self.streams.entry(f.stream).or_default();
                st.body.extend_from_slice(body);
                st.data_received += len;
                if f.has(flag::END_STREAM) {
                    st.ended = true;
                }
                if self.auto_window_update && len > 0 {
                    let mut out = frame(ty::WINDOW_UPDATE, 0, 0, &(len as u32).to_be_bytes());
                    if !f.has(flag::END_STREAM) {
                        out.extend(frame(
                            ty::WINDOW_UPDATE,
                            0,
                            f.stream,
                            &(len as u32).to_be_bytes(),
                        ));
                    }
                    let _ = self.send_raw(&out).await;
                }
            }
            ty::RST_STREAM => {
                self.streams.entry(f.stream).or_default().reset = Some(be32(&f.payload, 0));
            }
            ty::SETTINGS => {
                if f.has(flag::ACK) {
                    self.settings_acks += 1;
                } else {
                    for c in f.payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([c[0], c[1]]);
                        let v = u32::from_be_bytes([c[2], c[3], c[4], c[5]]);
                        self.server_settings.insert(id, v);
                    }
                    if self.auto_settings_ack {
                        let _ = self.send_raw(&frame(ty::SETTINGS, flag::ACK, 0, &[])).await;
                    }
                }
            }
            ty::PING if f.has(flag::ACK) && f.payload.len() == 8 => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&f.payload);
                self.ping_acks.push(p);
            }
            ty::GOAWAY => {
                self.goaway = Some(f.clone());
            }
            ty::WINDOW_UPDATE => {
                let inc = i64::from(be32(&f.payload, 0) & 0x7fff_ffff);
                if f.stream == 0 {
                    self.conn_credit += inc;
                } else {
                    *self.stream_credit.entry(f.stream).or_default() += inc;
                }
            }
            _ => {}
        }
        self.log.push(f.clone());
        Read::Frame(f)
    }

    /// Reads frames until `pred` holds (true), or EOF / timeout (false).
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&H2) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            match self.read_frame(deadline).await {
                Read::Frame(_) => {}
                Read::Eof | Read::Timeout => return pred(self),
            }
        }
    }

    /// Reads frames for `d` (or until EOF), whatever they are.
    /// Opens up to `n` streams (odd ids from 1: a GET of `path_prefix/i` with `extra`, ended),
    /// each followed at once by the frames `after(stream)` makes, written in batches of about
    /// 8 KiB with the server's frames read in between; stops when the server ends the
    /// connection or a write fails. Returns how many streams were opened.
    pub async fn flood_streams(
        &mut self,
        n: u32,
        path_prefix: &str,
        extra: &[(&str, &str)],
        after: impl Fn(u32) -> Vec<u8>,
    ) -> u32 {
        let mut batch = Vec::new();
        let mut sent = 0;
        for i in 0..n {
            let s = 2 * i + 1;
            let b = self.request_block("GET", &format!("{path_prefix}/{i}"), extra);
            batch.extend(frame(
                ty::HEADERS,
                flag::END_HEADERS | flag::END_STREAM,
                s,
                &b.0,
            ));
            batch.extend(after(s));
            sent += 1;
            if batch.len() > 8 * 1024 {
                if self.send_raw(&batch).await.is_err() {
                    break;
                }
                batch.clear();
                // Everything the server sent so far (its RST_STREAMs come before its GOAWAY).
                self.drain_for(Duration::from_millis(2)).await;
                if self.goaway.is_some() || self.eof {
                    break;
                }
            }
        }
        sent
    }

    pub async fn drain_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Read::Frame(_) = self.read_frame(deadline).await {}
    }

    /// The GOAWAY's (error code, last stream id), if one came.
    pub fn goaway_code(&self) -> Option<(u32, u32)> {
        self.goaway
            .as_ref()
            .map(|g| (be32(&g.payload, 4), be32(&g.payload, 0) & 0x7fff_ffff))
    }

    /// What the server did about `stream`, as far as known now.
    pub fn outcome_now(&self, stream: u32) -> Option<Outcome> {
        if let Some(st) = self.streams.get(&stream) {
            if let Some(c) = st.reset {
                return Some(Outcome::Reset(c));
            }
            if st.ended {
                if let Some(status) = st.status {
                    return Some(Outcome::Response {
                        status,
                        headers: st.headers.clone(),
                        body: st.body.clone(),
                    });
                }
            }
        }
        if let Some((code, last)) = self.goaway_code() {
            if code != code::NO_ERROR || last < stream {
                return Some(Outcome::GoAway {
                    code,
                    last_stream: last,
                });
            }
        }
        if self.eof {
            // A graceful GOAWAY then the end of the connection.
            if let Some((code, last)) = self.goaway_code() {
                return Some(Outcome::GoAway {
                    code,
                    last_stream: last,
                });
            }
            return Some(Outcome::Eof);
        }
        None
    }

    /// Reads until the server has answered, reset or given up on `stream`.
    pub async fn outcome(&mut self, stream: u32, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(o) = self.outcome_now(stream) {
                return o;
            }
            if let Read::Timeout = self.read_frame(deadline).await {
                return self.outcome_now(stream).unwrap_or(Outcome::Timeout);
            }
        }
    }

    /// Reads until the connection ends (GOAWAY or EOF); returns the GOAWAY's (code, last).
    pub async fn connection_outcome(&mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((code, last)) = self.goaway_code() {
                return Outcome::GoAway {
                    code,
                    last_stream: last,
                };
            }
            if self.eof {
                return Outcome::Eof;
            }
            if let Read::Timeout = self.read_frame(deadline).await {
                return Outcome::Timeout;
            }
        }
    }
}
