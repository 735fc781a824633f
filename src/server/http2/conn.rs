//! One client connection over HTTP/2 (RFC 9113): reads frames, turns each request's header
//! block into a request for the router, runs the handlers side by side in the connection's own
//! task, and writes the answers within the client's flow-control windows.
//!
//! Strictness: a request the RFC calls malformed (uppercase or connection-specific fields, a
//! value with CR, LF, NUL or surrounding white space, missing or repeated pseudo-fields, a body
//! that disagrees with its `content-length`) is reset with PROTOCOL_ERROR and never reaches the
//! router. Bounded: at most `max_streams` requests at once (and handlers still running count),
//! a header block at most twice `limits.max_header_bytes` compressed and `max_header_bytes`
//! decoded (431 past that), output past [`OUT_HIGH`] pauses reading, request bodies are held
//! within the windows this server grants, an answer waiting for the client's window longer than
//! `stall_timeout` is cancelled, and clients that make more than [`MAX_RESETS`] streams in
//! progress end in resets within [`RESET_WINDOW`] (their own or provoked), or send floods of
//! empty frames, are sent away with ENHANCE_YOUR_CALM.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{CONTENT_LENGTH, COOKIE, DATE, SET_COOKIE};
use http::{uri, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::frame::{self, Head, Reason, MAX_FRAME, MAX_WINDOW};
use super::hpack;
use crate::http::response::{take_raw_fields, Body};
use crate::http::ConnInfo;
use crate::request::streamed::{self as body, BodyError, Inbound};
use crate::request::ClientBody;
use crate::server::conn::{InFlight, Metered, Phases};
use crate::state::AppState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The window granted to each request body, and to the connection.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
/// Output waiting to be written beyond which the connection stops reading frames and stops
/// taking more answer data (a client that does not read cannot make it buffer more).
const OUT_HIGH: usize = 256 * 1024;
/// Empty DATA and CONTINUATION frames (doing nothing) a connection may send.
const MAX_EMPTY_FRAMES: u32 = 1_000;
/// Streams being answered that may end in a reset (sent by either side) within
/// [`RESET_WINDOW`]: more is a rapid-reset attack (CVE-2023-44487, and CVE-2025-8671 where the
/// client makes the server reset them), each reset costing an upstream exchange begun for nothing.
const MAX_RESETS: u32 = 200;
const RESET_WINDOW: Duration = Duration::from_secs(10);
/// Streams closed while the client could still send on them, remembered so that frames it had
/// already sent (trailers, DATA) are ignored rather than taken for a protocol error.
const RECENTLY_CLOSED: usize = 64;

/// The limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// `limits.max_header_bytes`: the decoded header list of a request.
    pub max_header_bytes: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// `limits.idle_timeout`: how long an answer may wait for the client to open its window
    /// before its stream is reset (CANCEL). A client that keeps its connection alive but never
    /// grants window would otherwise hold the stream, and its upstream exchange, for ever.
    pub stall_timeout: Duration,
}

/// A request being answered: the router's future, named by its stream.
type Job<'a> = Abortable<Pin<Box<dyn Future<Output = (u32, Response<Body>)> + Send + 'a>>>;

/// An open stream.
struct Stream {
    id: u32,
    /// The client may still send DATA (no END_STREAM yet).
    recv_open: bool,
    inbound: Option<Inbound>,
    /// Bytes the client may still send on this stream.
    recv_window: i64,
    /// Window given back by the reader and not yet announced.
    unannounced: u64,
    length: Option<u64>,
    received: u64,
    /// Bytes this server may still send on this stream.
    send_window: i64,
    /// While the router works on it.
    abort: Option<AbortHandle>,
    head: bool,
    /// The answer body being sent, and data taken from it but not yet sent.
    body: Option<Body>,
    pending: Option<Bytes>,
    /// Since when answer data has been waiting for the client's window.
    stalled_since: Option<Instant>,
    _in_flight: InFlight,
}

impl Stream {
    fn answering(&self) -> bool {
        self.abort.is_some() || self.body.is_some()
    }
}

/// A header block spread over CONTINUATION frames.
struct Continuation {
    stream: u32,
    end_stream: bool,
    bad_priority: bool,
}

/// What a request's header block held (built once per request and moved at once: the size of
/// its request variant costs nothing).
#[allow(clippy::large_enum_variant)]
enum Decoded {
    Request(Request<()>, Option<u64>),
    Malformed,
    TooLarge,
}

/// The connection.
struct Conn<'a> {
    io: Metered,
    state: &'a Arc<AppState>,
    info: &'a ConnInfo,
    phases: &'a Arc<Phases>,
    stop: &'a AtomicBool,
    cfg: Config,
    rbuf: BytesMut,
    out: Vec<u8>,
    written: usize,
    unflushed: bool,
    decoder: hpack::Decoder,
    /// A request's header block being gathered from CONTINUATION frames.
    block: Vec<u8>,
    /// Where an answer's header block is encoded (apart from `block`: an answer may be
    /// encoded while a request's block is half gathered).
    answer: Vec<u8>,
    continuing: Option<Continuation>,
    preface: bool,
    settings_seen: bool,
    streams: Vec<Stream>,
    jobs: FuturesUnordered<Job<'a>>,
    last_stream: u32,
    conn_recv_window: i64,
    conn_unannounced: u64,
    conn_send_window: i64,
    peer_initial_window: i64,
    goaway_sent: Option<u32>,
    peer_goaway: bool,
    read_closed: bool,
    failed: Option<Reason>,
    /// Resets of streams being answered in the current [`RESET_WINDOW`], and when it began.
    resets: u32,
    resets_since: Instant,
    empty_frames: u32,
    /// See [`RECENTLY_CLOSED`].
    recently_closed: VecDeque<u32>,
    /// Reading or answering stopped because output piled up: when it drains, go on.
    throttled: bool,
    /// The earliest time a stream's answer was waiting for the client's window, and the timer
    /// that ends streams waiting longer than `idle_timeout`.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Serves HTTP/2 on `io` (`pre`: bytes already read, the start of the client's preface) until
/// the client leaves, a connection error, or a graceful close (`stop`) once its streams end.
pub async fn serve(
    io: Metered,
    pre: Bytes,
    state: &Arc<AppState>,
    info: &ConnInfo,
    phases: &Arc<Phases>,
    stop: &AtomicBool,
    cfg: Config,
) -> Result<(), BoxError> {
    let mut rbuf = BytesMut::with_capacity(frame::HEADER_LEN + MAX_FRAME + 1024);
    rbuf.extend_from_slice(&pre);
    let mut conn = Conn {
        io,
        state,
        info,
        phases,
        stop,
        cfg,
        rbuf,
        out: Vec::with_capacity(4096),
        written: 0,
        unflushed: false,
        decoder: hpack::Decoder::new(4096),
        block: Vec::new(),
        answer: Vec::with_capacity(512),
        continuing: None,
        preface: false,
        settings_seen: false,
        streams: Vec::new(),
        jobs: FuturesUnordered::new(),
        last_stream: 0,
        conn_recv_window: i64::from(CONN_WINDOW),
        conn_unannounced: 0,
        conn_send_window: 65_535,
        peer_initial_window: 65_535,
        goaway_sent: None,
        peer_goaway: false,
        read_closed: false,
        failed: None,
        resets: 0,
        resets_since: Instant::now(),
        empty_frames: 0,
        recently_closed: VecDeque::new(),
        throttled: false,
        stall: None,
    };
    let ended = std::future::poll_fn(|cx| conn.poll(cx)).await;
    // A GOAWAY (graceful or for an error) while the client may still be sending: it must reach
    // the client, not be lost to the reset that closing on unread bytes would send.
    if (ended.is_ok() || conn.failed.is_some()) && !conn.read_closed {
        crate::server::conn::linger(&mut conn.io).await;
    }
    ended
}

impl<'a> Conn<'a> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let mut progress = false;
            if self.failed.is_none()
                && self.goaway_sent.is_none()
                && self.stop.load(Ordering::Relaxed)
            {
                if self.preface {
                    frame::goaway(&mut self.out, self.last_stream, Reason::NO_ERROR);
                }
                self.goaway_sent = Some(self.last_stream);
            }
            if self.waiting() >= OUT_HIGH {
                self.throttled = true;
            }
            if self.failed.is_none() && !self.read_closed && self.waiting() < OUT_HIGH {
                match self.read_frames(cx) {
                    Ok(p) => progress |= p,
                    Err(reason) => self.fail(reason),
                }
            }
            if self.failed.is_none() {
                progress |= self.poll_jobs(cx);
                progress |= self.send_bodies(cx);
                self.give_back_windows();
                progress |= self.poll_stall(cx);
            }
            if self.waiting() >= OUT_HIGH {
                self.throttled = true;
            }
            match self.write(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(())) => {
                    // Reading or answering waited for the output to drain, and nothing else
                    // will wake this task for it: go on now.
                    if std::mem::take(&mut self.throttled) {
                        progress = true;
                    }
                    if self.finished() {
                        // TLS: close_notify goes out before the socket closes.
                        if Pin::new(&mut self.io).poll_shutdown(cx).is_pending() {
                            return Poll::Pending;
                        }
                        return Poll::Ready(match self.failed {
                            Some(r) if r != Reason::NO_ERROR => {
                                Err(format!("HTTP/2 connection error {}", r.name()).into())
                            }
                            _ => Ok(()),
                        });
                    }
                }
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Output not yet written.
    fn waiting(&self) -> usize {
        self.out.len() - self.written
    }

    fn finished(&self) -> bool {
        self.failed.is_some()
            || self.read_closed
            || ((self.goaway_sent.is_some() || self.peer_goaway) && self.streams.is_empty())
    }

    /// A connection error: GOAWAY with `reason`, and every stream ends.
    fn fail(&mut self, reason: Reason) {
        if self.preface {
            // Never above a last stream announced before (RFC 9113 §6.8).
            let last = self
                .goaway_sent
                .map_or(self.last_stream, |g| g.min(self.last_stream));
            frame::goaway(&mut self.out, last, reason);
        }
        self.failed = Some(reason);
        self.end_streams();
    }

    /// The client is gone (or the connection failed): every stream ends, its handler stops.
    fn end_streams(&mut self) {
        for s in self.streams.drain(..) {
            if let Some(a) = &s.abort {
                a.abort();
            }
            if let Some(i) = &s.inbound {
                i.fail(BodyError::Closed);
            }
        }
    }

    /// Writes what is waiting, then flushes. Ready(Ok): nothing is left.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.written = 0;
        if self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and handles frames until the socket has nothing more or output piles up.
    fn read_frames(&mut self, cx: &mut Context<'_>) -> Result<bool, Reason> {
        let mut progress = false;
        loop {
            if !self.preface {
                let n = self.rbuf.len().min(frame::PREFACE.len());
                if self.rbuf[..n] != frame::PREFACE[..n] {
                    // Not HTTP/2 after all: closed without a word.
                    self.read_closed = true;
                    return Ok(true);
                }
                if n == frame::PREFACE.len() {
                    self.rbuf.advance(n);
                    self.preface = true;
                    frame::settings(
                        &mut self.out,
                        &[
                            (frame::SETTINGS_MAX_CONCURRENT_STREAMS, self.cfg.max_streams),
                            (frame::SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                            (
                                frame::SETTINGS_MAX_HEADER_LIST_SIZE,
                                u32::try_from(self.cfg.max_header_bytes).unwrap_or(u32::MAX),
                            ),
                        ],
                    );
                    frame::window_update(&mut self.out, 0, CONN_WINDOW - 65_535);
                    progress = true;
                }
            }
            while self.preface {
                let Some(h) = Head::parse(&self.rbuf) else {
                    break;
                };
                if h.len > MAX_FRAME {
                    return Err(Reason::FRAME_SIZE_ERROR);
                }
                if self.rbuf.len() < frame::HEADER_LEN + h.len {
                    break;
                }
                let mut f = self.rbuf.split_to(frame::HEADER_LEN + h.len);
                f.advance(frame::HEADER_LEN);
                self.on_frame(h, f.freeze(), cx)?;
                self.check_resets()?;
                progress = true;
                if self.waiting() >= OUT_HIGH || self.failed.is_some() {
                    return Ok(progress);
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(frame::HEADER_LEN + MAX_FRAME);
            }
            let read = {
                let mut r = std::pin::pin!(self.io.read_buf(&mut self.rbuf));
                r.as_mut().poll(cx)
            };
            match read {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.read_closed = true;
                    self.end_streams();
                    return Ok(true);
                }
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Pending => return Ok(progress),
            }
        }
    }

    fn find(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id)
    }

    fn on_frame(&mut self, h: Head, payload: Bytes, cx: &mut Context<'_>) -> Result<(), Reason> {
        if !self.settings_seen && h.kind != frame::SETTINGS {
            return Err(Reason::PROTOCOL_ERROR);
        }
        if self.continuing.is_some() && h.kind != frame::CONTINUATION {
            return Err(Reason::PROTOCOL_ERROR);
        }
        match h.kind {
            frame::DATA => self.on_data(h, payload, cx),
            frame::HEADERS => self.on_headers(h, payload),
            frame::PRIORITY => {
                if h.stream == 0 {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                let reason = if h.len != 5 {
                    Reason::FRAME_SIZE_ERROR
                } else if depends_on_itself(&h, &payload) {
                    Reason::PROTOCOL_ERROR
                } else {
                    return Ok(());
                };
                // No RST_STREAM on a stream never opened (RFC 9113 §6.4): the connection ends.
                if h.stream > self.last_stream {
                    return Err(reason);
                }
                self.reset(h.stream, reason);
                Ok(())
            }
            frame::RST_STREAM => {
                if h.len != 4 {
                    return Err(Reason::FRAME_SIZE_ERROR);
                }
                if h.stream == 0 || h.stream > self.last_stream {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                if let Some(i) = self.find(h.stream) {
                    let s = self.streams.swap_remove(i);
                    self.count_reset(&s);
                    self.drop_stream(s, BodyError::Reset);
                }
                self.check_resets()
            }
            frame::SETTINGS => self.on_settings(h, &payload),
            frame::PUSH_PROMISE => Err(Reason::PROTOCOL_ERROR),
            frame::PING => {
                if h.stream != 0 {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                let Ok(p) = <&[u8; 8]>::try_from(&payload[..]) else {
                    return Err(Reason::FRAME_SIZE_ERROR);
                };
                if !h.has(frame::ACK) {
                    frame::ping_ack(&mut self.out, p);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if h.stream != 0 {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                if h.len < 8 {
                    return Err(Reason::FRAME_SIZE_ERROR);
                }
                self.peer_goaway = true;
                Ok(())
            }
            frame::WINDOW_UPDATE => self.on_window_update(h, &payload),
            frame::CONTINUATION => {
                let Some(c) = &self.continuing else {
                    return Err(Reason::PROTOCOL_ERROR);
                };
                if h.stream != c.stream {
                    return Err(Reason::PROTOCOL_ERROR);
                }
                if payload.is_empty() && !h.has(frame::END_HEADERS) {
                    self.empty_frame()?;
                }
                if self.block.len() + payload.len() > self.block_cap() {
                    return Err(Reason::ENHANCE_YOUR_CALM);
                }
                self.block.extend_from_slice(&payload);
                if h.has(frame::END_HEADERS) {
                    if let Some(c) = self.continuing.take() {
                        let block = Bytes::from(std::mem::take(&mut self.block));
                        self.on_block(c.stream, c.end_stream, c.bad_priority, block)?;
                    }
                }
                Ok(())
            }
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    /// The compressed size a header block may reach.
    fn block_cap(&self) -> usize {
        self.cfg.max_header_bytes.saturating_mul(2).max(32 * 1024)
    }

    fn empty_frame(&mut self) -> Result<(), Reason> {
        self.empty_frames += 1;
        if self.empty_frames > MAX_EMPTY_FRAMES {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        Ok(())
    }

    fn on_settings(&mut self, h: Head, payload: &[u8]) -> Result<(), Reason> {
        if h.stream != 0 {
            return Err(Reason::PROTOCOL_ERROR);
        }
        if h.has(frame::ACK) {
            return if h.len == 0 {
                Ok(())
            } else {
                Err(Reason::FRAME_SIZE_ERROR)
            };
        }
        if h.len % 6 != 0 {
            return Err(Reason::FRAME_SIZE_ERROR);
        }
        // The streams' windows move once per frame, by the last value it carries (a frame of
        // thousands of entries must not walk the stream table thousands of times).
        let mut initial_window = None;
        for s in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                frame::SETTINGS_ENABLE_PUSH if v > 1 => return Err(Reason::PROTOCOL_ERROR),
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > MAX_WINDOW {
                        return Err(Reason::FLOW_CONTROL_ERROR);
                    }
                    initial_window = Some(v);
                }
                frame::SETTINGS_MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&v) => {
                    return Err(Reason::PROTOCOL_ERROR)
                }
                // The rest (header table size: this server's encoder never indexes; concurrent
                // streams: it never pushes; header list size: advisory) changes nothing here.
                _ => {}
            }
        }
        if let Some(v) = initial_window {
            let delta = v - self.peer_initial_window;
            self.peer_initial_window = v;
            for st in &mut self.streams {
                st.send_window += delta;
                if st.send_window > MAX_WINDOW {
                    return Err(Reason::FLOW_CONTROL_ERROR);
                }
            }
        }
        self.settings_seen = true;
        frame::settings_ack(&mut self.out);
        Ok(())
    }

    fn on_window_update(&mut self, h: Head, payload: &[u8]) -> Result<(), Reason> {
        let Ok(b) = <[u8; 4]>::try_from(payload) else {
            return Err(Reason::FRAME_SIZE_ERROR);
        };
        let inc = i64::from(u32::from_be_bytes(b) & 0x7fff_ffff);
        if h.stream == 0 {
            if inc == 0 {
                return Err(Reason::PROTOCOL_ERROR);
            }
            self.conn_send_window += inc;
            if self.conn_send_window > MAX_WINDOW {
                return Err(Reason::FLOW_CONTROL_ERROR);
            }
            return Ok(());
        }
        if h.stream > self.last_stream {
            return Err(Reason::PROTOCOL_ERROR);
        }
        let Some(i) = self.find(h.stream) else {
            return Ok(());
        };
        if inc == 0 {
            self.reset(h.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let s = &mut self.streams[i];
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            self.reset(h.stream, Reason::FLOW_CONTROL_ERROR);
        }
        Ok(())
    }

    fn on_data(&mut self, h: Head, payload: Bytes, cx: &mut Context<'_>) -> Result<(), Reason> {
        if h.stream == 0 {
            return Err(Reason::PROTOCOL_ERROR);
        }
        let len = h.len as i64;
        if len > self.conn_recv_window {
            return Err(Reason::FLOW_CONTROL_ERROR);
        }
        self.conn_recv_window -= len;
        let (start, end) = frame::unpad(&h, &payload).ok_or(Reason::PROTOCOL_ERROR)?;
        let data_len = (end - start) as u64;
        // Padding is never read by anyone: its window comes back at once.
        self.conn_unannounced += h.len as u64 - data_len;
        let Some(i) = self.find(h.stream) else {
            if h.stream > self.last_stream {
                return Err(Reason::PROTOCOL_ERROR);
            }
            self.conn_unannounced += data_len;
            // Sent before our RST_STREAM or final answer reached the client: ignored.
            if !self.recently_closed.contains(&h.stream) {
                frame::rst_stream(&mut self.out, h.stream, Reason::STREAM_CLOSED);
            }
            return Ok(());
        };
        if data_len == 0 && !h.has(frame::END_STREAM) {
            self.empty_frame()?;
        } else {
            self.empty_frames = 0;
        }
        let s = &mut self.streams[i];
        if !s.recv_open {
            self.conn_unannounced += data_len;
            self.reset(h.stream, Reason::STREAM_CLOSED);
            return Ok(());
        }
        if len > s.recv_window {
            self.conn_unannounced += data_len;
            self.reset(h.stream, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        s.recv_window -= len;
        s.unannounced += h.len as u64 - data_len;
        s.received += data_len;
        if s.length.is_some_and(|n| s.received > n) {
            self.conn_unannounced += data_len;
            self.reset(h.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let end_stream = h.has(frame::END_STREAM);
        if end_stream && s.length.is_some_and(|n| s.received != n) {
            self.conn_unannounced += data_len;
            self.reset(h.stream, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if let Some(inbound) = &s.inbound {
            if !inbound.push(&payload[start..end], cx.waker()) {
                s.unannounced += data_len;
                self.conn_unannounced += data_len;
            }
            if end_stream {
                inbound.end();
            }
        }
        if end_stream {
            s.recv_open = false;
            if !s.answering() {
                let s = self.streams.swap_remove(i);
                self.drop_stream(s, BodyError::Closed);
            }
        }
        Ok(())
    }

    fn on_headers(&mut self, h: Head, payload: Bytes) -> Result<(), Reason> {
        if h.stream == 0 {
            return Err(Reason::PROTOCOL_ERROR);
        }
        let (start, end) = frame::unpad(&h, &payload).ok_or(Reason::PROTOCOL_ERROR)?;
        let bad_priority = h.has(frame::PRIORITY_FLAG) && {
            let at = usize::from(h.has(frame::PADDED));
            payload
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .is_some_and(|b| u32::from_be_bytes(b) & 0x7fff_ffff == h.stream)
        };
        let end_stream = h.has(frame::END_STREAM);
        if h.has(frame::END_HEADERS) {
            // A copy: the request's fields share it, and a slice would keep the whole read
            // buffer alive as long as the request lives.
            let block = Bytes::copy_from_slice(&payload[start..end]);
            return self.on_block(h.stream, end_stream, bad_priority, block);
        }
        if end - start > self.block_cap() {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        self.block.clear();
        self.block.extend_from_slice(&payload[start..end]);
        self.continuing = Some(Continuation {
            stream: h.stream,
            end_stream,
            bad_priority,
        });
        Ok(())
    }

    /// A complete header block: a new request, or a request's trailers.
    fn on_block(
        &mut self,
        id: u32,
        end_stream: bool,
        bad_priority: bool,
        block: Bytes,
    ) -> Result<(), Reason> {
        if id <= self.last_stream {
            return self.on_trailers(id, end_stream, &block);
        }
        if id % 2 == 0 {
            return Err(Reason::PROTOCOL_ERROR);
        }
        self.last_stream = id;
        let decoded = decode_request(&mut self.decoder, &block, self.cfg.max_header_bytes)?;
        if self.goaway_sent.is_some_and(|last| id > last) {
            // After GOAWAY new streams are ignored (RFC 9113 §6.8).
            return Ok(());
        }
        if bad_priority {
            frame::rst_stream(&mut self.out, id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        // Handlers of reset streams still finishing count too.
        if self.streams.len().max(self.jobs.len()) >= self.cfg.max_streams as usize {
            frame::rst_stream(&mut self.out, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let (req, length, too_large) = match decoded {
            Decoded::Request(req, length) => (req, length, false),
            Decoded::Malformed => {
                frame::rst_stream(&mut self.out, id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            Decoded::TooLarge => (Request::new(()), None, true),
        };
        if end_stream && length.is_some_and(|n| n != 0) {
            frame::rst_stream(&mut self.out, id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let (inbound, body) = if end_stream {
            (None, ClientBody::Empty)
        } else {
            let (tx, rx) = body::channel(length);
            (Some(tx), ClientBody::H2(rx))
        };
        let head = req.method() == Method::HEAD;
        let req = req.map(|()| body);
        let in_flight = self.phases.request_started(http::Version::HTTP_2);
        let (state, info) = (self.state, self.info);
        let fut: Pin<Box<dyn Future<Output = (u32, Response<Body>)> + Send + 'a>> = if too_large {
            Box::pin(async move {
                drop(req);
                let mut r = Response::new(crate::http::response::empty());
                *r.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                (id, r)
            })
        } else {
            Box::pin(async move {
                let mut req = req;
                let resp = crate::http::router::handle(state, &mut req, info).await;
                (id, resp)
            })
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.jobs.push(Abortable::new(fut, registration));
        self.streams.push(Stream {
            id,
            recv_open: !end_stream,
            inbound,
            recv_window: i64::from(STREAM_WINDOW),
            unannounced: 0,
            length,
            received: 0,
            send_window: self.peer_initial_window,
            abort: Some(abort),
            head,
            body: None,
            pending: None,
            stalled_since: None,
            _in_flight: in_flight,
        });
        Ok(())
    }

    /// A header block on a stream already seen: trailers of a request body still arriving
    /// (decoded and left out; no pseudo-fields allowed, and they must end the stream), or a
    /// frame on a closed stream.
    fn on_trailers(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Reason> {
        let mut pseudo = false;
        let complete = self
            .decoder
            .decode(block, self.cfg.max_header_bytes, |name, _| {
                pseudo |= name.first() == Some(&b':');
            })
            .map_err(|_| Reason::COMPRESSION_ERROR)?;
        // A header block on a stream no longer open, or never opened (a lower identifier than
        // one already used): both are connection errors (RFC 9113 §5.1, §5.1.1).
        let Some(i) = self.find(id) else {
            // Trailers the client sent before our RST_STREAM or final answer reached it.
            if self.recently_closed.contains(&id) {
                return Ok(());
            }
            return Err(Reason::PROTOCOL_ERROR);
        };
        if !self.streams[i].recv_open {
            self.reset(id, Reason::STREAM_CLOSED);
            return Ok(());
        }
        if pseudo || !end_stream || !complete {
            self.reset(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let s = &mut self.streams[i];
        if s.length.is_some_and(|n| s.received != n) {
            self.reset(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        s.recv_open = false;
        if let Some(inbound) = &s.inbound {
            inbound.end();
        }
        if !s.answering() {
            let s = self.streams.swap_remove(i);
            self.drop_stream(s, BodyError::Closed);
        }
        Ok(())
    }

    /// A stream error the client caused: RST_STREAM, and the stream ends (counted against
    /// [`MAX_RESETS`] when it was being answered).
    fn reset(&mut self, id: u32, reason: Reason) {
        self.reset_stream(id, reason, true);
    }

    /// RST_STREAM with `reason`, and the stream ends; `counted`: the client's doing (a stream
    /// error it caused), not the gateway's (a failed answer, a stalled window).
    fn reset_stream(&mut self, id: u32, reason: Reason, counted: bool) {
        frame::rst_stream(&mut self.out, id, reason);
        if let Some(i) = self.find(id) {
            let s = self.streams.swap_remove(i);
            if counted {
                self.count_reset(&s);
            }
            self.drop_stream(s, BodyError::Reset);
        }
    }

    /// Counts a reset of `s` against [`MAX_RESETS`] when it was being answered.
    fn count_reset(&mut self, s: &Stream) {
        if !s.answering() {
            return;
        }
        if self.resets_since.elapsed() > RESET_WINDOW {
            self.resets = 0;
            self.resets_since = Instant::now();
        }
        self.resets += 1;
    }

    /// A connection error once too many streams being answered ended in a reset.
    fn check_resets(&self) -> Result<(), Reason> {
        if self.resets > MAX_RESETS {
            return Err(Reason::ENHANCE_YOUR_CALM);
        }
        Ok(())
    }

    /// Ends a stream taken out of the table: its handler stops, its body reader gets `why`, and
    /// the window its unread bytes held comes back to the connection.
    fn drop_stream(&mut self, s: Stream, why: BodyError) {
        if s.recv_open {
            if self.recently_closed.len() == RECENTLY_CLOSED {
                self.recently_closed.pop_front();
            }
            self.recently_closed.push_back(s.id);
        }
        if let Some(a) = &s.abort {
            a.abort();
        }
        if let Some(i) = &s.inbound {
            i.fail(why);
            self.conn_unannounced += i.take_released() as u64;
        }
    }

    /// Collects the answers the router finished.
    fn poll_jobs(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(done)) = self.jobs.poll_next_unpin(cx) {
            progress = true;
            let Ok((id, resp)) = done else {
                continue;
            };
            if let Some(i) = self.find(id) {
                self.start_answer(i, resp);
            }
        }
        progress
    }

    /// Sends an answer's HEADERS; its body follows in [`Self::send_bodies`].
    fn start_answer(&mut self, i: usize, resp: Response<Body>) {
        let (parts, mut body) = resp.into_parts();
        let raw = take_raw_fields(&mut body);
        let status = parts.status;
        let s = &mut self.streams[i];
        s.abort = None;
        let id = s.id;
        if status.is_informational() {
            self.reset_stream(id, Reason::INTERNAL_ERROR, false);
            return;
        }
        let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
        let end_now = s.head || no_content || body.is_end_stream();
        let block = &mut self.answer;
        block.clear();
        hpack::encode_status(status.as_u16(), block);
        let mut has_length = false;
        let mut has_date = false;
        for (name, value) in parts.headers.iter() {
            if is_connection_specific(name.as_str().as_bytes()) {
                continue;
            }
            if *name == CONTENT_LENGTH {
                if no_content {
                    continue;
                }
                has_length = true;
            }
            has_date |= *name == DATE;
            hpack::encode_field(
                name.as_str().as_bytes(),
                value.as_bytes(),
                value.is_sensitive() || *name == SET_COOKIE,
                block,
            );
        }
        if let Some(raw) = &raw {
            for (name, value) in raw.fields() {
                if is_connection_specific(name) {
                    continue;
                }
                if name == b"content-length" {
                    if no_content {
                        continue;
                    }
                    has_length = true;
                }
                hpack::encode_field(name, value, name == b"set-cookie", block);
            }
            has_date |= raw.date;
        }
        if !has_length && !no_content {
            let known = if body.is_end_stream() {
                Some(0)
            } else {
                body.size_hint().exact()
            };
            if let Some(n) = known.filter(|&n| !s.head || n > 0) {
                let mut digits = [0u8; 20];
                hpack::encode_field(
                    b"content-length",
                    crate::proxy::headers::decimal(n, &mut digits),
                    false,
                    block,
                );
            }
        }
        if !has_date {
            crate::server::h1::with_date(|d| hpack::encode_field(b"date", d, false, block));
        }
        frame::headers(&mut self.out, id, block, end_now);
        if end_now {
            self.answered(i);
        } else {
            s.body = Some(body);
        }
    }

    /// The answer to stream `i` is complete: the stream ends (a client still sending its body
    /// is told to stop with RST_STREAM NO_ERROR, RFC 9113 §8.1).
    fn answered(&mut self, i: usize) {
        let s = self.streams.swap_remove(i);
        if s.recv_open {
            frame::rst_stream(&mut self.out, s.id, Reason::NO_ERROR);
        }
        self.drop_stream(s, BodyError::Closed);
    }

    /// Sends answer bodies within the windows, until output piles up.
    fn send_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.streams.len() {
            if self.waiting() >= OUT_HIGH {
                break;
            }
            match self.send_body(i, cx) {
                Sent::Done => {
                    progress = true;
                    self.answered(i);
                    continue;
                }
                Sent::Failed => {
                    progress = true;
                    let id = self.streams[i].id;
                    self.reset_stream(id, Reason::INTERNAL_ERROR, false);
                    continue;
                }
                Sent::Some => progress = true,
                Sent::Nothing => {}
            }
            i += 1;
        }
        progress
    }

    fn send_body(&mut self, i: usize, cx: &mut Context<'_>) -> Sent {
        let out_high = OUT_HIGH;
        let Conn {
            streams,
            out,
            written,
            conn_send_window,
            ..
        } = self;
        let s = &mut streams[i];
        let Some(body) = s.body.as_mut() else {
            return Sent::Nothing;
        };
        let mut sent = Sent::Nothing;
        loop {
            if s.pending.is_none() {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => return sent,
                    Poll::Ready(None) => {
                        frame::data(out, s.id, &[], true);
                        return Sent::Done;
                    }
                    Poll::Ready(Some(Err(_))) => return Sent::Failed,
                    Poll::Ready(Some(Ok(f))) => {
                        // Trailers are not sent (as over HTTP/1.1).
                        if let Ok(d) = f.into_data() {
                            if !d.is_empty() {
                                s.pending = Some(d);
                            }
                        }
                        sent = Sent::Some;
                    }
                }
            }
            let Some(p) = s.pending.as_mut() else {
                continue;
            };
            let window = (*conn_send_window).min(s.send_window);
            if window <= 0 {
                s.stalled_since.get_or_insert_with(Instant::now);
                return sent;
            }
            s.stalled_since = None;
            let n = p.len().min(MAX_FRAME).min(window as usize);
            let chunk = p.split_to(n);
            if p.is_empty() {
                s.pending = None;
            }
            let last = s.pending.is_none() && body.is_end_stream();
            frame::data(out, s.id, &chunk, last);
            *conn_send_window -= n as i64;
            s.send_window -= n as i64;
            if last {
                return Sent::Done;
            }
            sent = Sent::Some;
            if out.len() - *written >= out_high {
                return sent;
            }
        }
    }

    /// Ends streams whose answer waited for the client's window longer than `stall_timeout`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(since) = self.streams.iter().filter_map(|s| s.stalled_since).min() else {
            self.stall = None;
            return false;
        };
        let deadline = since + self.cfg.stall_timeout;
        let timer = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.stall = None;
        let now = Instant::now();
        let late: Vec<u32> = self
            .streams
            .iter()
            .filter(|s| {
                s.stalled_since
                    .is_some_and(|t| t + self.cfg.stall_timeout <= now)
            })
            .map(|s| s.id)
            .collect();
        for id in late {
            self.reset_stream(id, Reason::CANCEL, false);
        }
        true
    }

    /// Announces window the request-body readers gave back.
    fn give_back_windows(&mut self) {
        for s in &mut self.streams {
            let Some(inbound) = &s.inbound else {
                continue;
            };
            let n = inbound.take_released() as u64;
            s.unannounced += n;
            self.conn_unannounced += n;
            if s.recv_open && s.unannounced >= u64::from(STREAM_WINDOW / 4) {
                let inc = u32::try_from(s.unannounced).unwrap_or(STREAM_WINDOW);
                frame::window_update(&mut self.out, s.id, inc);
                s.recv_window += i64::from(inc);
                s.unannounced -= u64::from(inc);
            }
        }
        if self.conn_unannounced >= u64::from(CONN_WINDOW / 4) {
            let inc = u32::try_from(self.conn_unannounced).unwrap_or(CONN_WINDOW);
            frame::window_update(&mut self.out, 0, inc);
            self.conn_recv_window += i64::from(inc);
            self.conn_unannounced -= u64::from(inc);
        }
    }
}

/// What one turn of sending a body did.
enum Sent {
    Nothing,
    Some,
    Done,
    Failed,
}

/// A PRIORITY frame whose stream depends on itself (RFC 9113 §5.3.1).
fn depends_on_itself(h: &Head, payload: &[u8]) -> bool {
    payload
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .is_some_and(|b| u32::from_be_bytes(b) & 0x7fff_ffff == h.stream)
}

/// Fields that are about one connection, not the message: malformed in HTTP/2 (RFC 9113 §8.2.2).
fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Bytes of `s` shared with `block` when `s` lies in it (no copy), else copied.
fn share(block: &Bytes, s: &[u8]) -> Bytes {
    let base = block.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    if p >= base && p + s.len() <= base + block.len() {
        block.slice(p - base..p - base + s.len())
    } else {
        Bytes::copy_from_slice(s)
    }
}

/// A field name HTTP/2 allows: a token in lower case.
fn is_lower_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().all(|&b| {
            matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
        })
}

/// The pseudo-fields of a request.
#[derive(Default)]
struct Pseudo {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
}

/// Decodes a request's header block and checks it (RFC 9113 §8.2 and §8.3).
fn decode_request(
    decoder: &mut hpack::Decoder,
    block: &Bytes,
    max_list: usize,
) -> Result<Decoded, Reason> {
    let mut pseudo = Pseudo::default();
    let mut headers = HeaderMap::new();
    let mut cookie: Option<Vec<u8>> = None;
    let mut malformed = false;
    let mut regular = false;
    let mut lengths: Option<u64> = None;
    let complete = decoder
        .decode(block, max_list, |name, value| {
            if malformed {
                return;
            }
            if let Some(p) = name.strip_prefix(b":") {
                let slot = match p {
                    b"method" => &mut pseudo.method,
                    b"scheme" => &mut pseudo.scheme,
                    b"authority" => &mut pseudo.authority,
                    b"path" => &mut pseudo.path,
                    _ => {
                        malformed = true;
                        return;
                    }
                };
                if regular || slot.is_some() {
                    malformed = true;
                    return;
                }
                *slot = Some(share(block, value));
                return;
            }
            regular = true;
            let bad_value = value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'))
                || value.first().is_some_and(|&b| b == b' ' || b == b'\t')
                || value.last().is_some_and(|&b| b == b' ' || b == b'\t');
            if !is_lower_token(name) || bad_value || is_connection_specific(name) {
                malformed = true;
                return;
            }
            if name == b"te" && value != b"trailers" {
                malformed = true;
                return;
            }
            if name == b"cookie" {
                // Crumbs join into one field for HTTP/1.1 (RFC 9113 §8.2.3).
                let c = cookie.get_or_insert_with(Vec::new);
                if !c.is_empty() {
                    c.extend_from_slice(b"; ");
                }
                c.extend_from_slice(value);
                return;
            }
            let Ok(n) = HeaderName::from_bytes(name) else {
                malformed = true;
                return;
            };
            let Ok(v) = HeaderValue::from_maybe_shared(share(block, value)) else {
                malformed = true;
                return;
            };
            if n == CONTENT_LENGTH {
                match crate::proxy::headers::parse_decimal(value) {
                    Some(len) if lengths.is_none_or(|l| l == len) => lengths = Some(len),
                    _ => {
                        malformed = true;
                        return;
                    }
                }
            }
            headers.append(n, v);
        })
        .map_err(|_| Reason::COMPRESSION_ERROR)?;
    if !complete {
        return Ok(Decoded::TooLarge);
    }
    if malformed {
        return Ok(Decoded::Malformed);
    }
    if let Some(c) = cookie {
        match HeaderValue::from_maybe_shared(Bytes::from(c)) {
            Ok(v) => {
                headers.insert(COOKIE, v);
            }
            Err(_) => return Ok(Decoded::Malformed),
        }
    }
    Ok(match build_request(pseudo, headers) {
        Some(r) => Decoded::Request(r, lengths),
        None => Decoded::Malformed,
    })
}

/// The request from its pseudo-fields, as hyper's HTTP/2 server built it (the URI carries the
/// scheme and `:authority` when one came), and stricter: `:path` is required but for CONNECT.
fn build_request(p: Pseudo, headers: HeaderMap) -> Option<Request<()>> {
    let method = Method::from_bytes(&p.method?).ok()?;
    let connect = method == Method::CONNECT;
    let mut parts = uri::Parts::default();
    if let Some(a) = p.authority {
        parts.authority = Some(uri::Authority::from_maybe_shared(a).ok()?);
    }
    if connect {
        if p.scheme.is_some() || p.path.is_some() || parts.authority.is_none() {
            return None;
        }
    } else {
        let scheme = uri::Scheme::try_from(&p.scheme?[..]).ok()?;
        if parts.authority.is_some() {
            parts.scheme = Some(scheme);
        }
        let path = p.path?;
        if path.is_empty() {
            return None;
        }
        parts.path_and_query = Some(uri::PathAndQuery::from_maybe_shared(path).ok()?);
    }
    let uri = http::Uri::from_parts(parts).ok()?;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = headers;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&str, &str)]) -> Bytes {
        let mut b = Vec::new();
        for (n, v) in fields {
            hpack::encode_field(n.as_bytes(), v.as_bytes(), false, &mut b);
        }
        Bytes::from(b)
    }

    fn decode(fields: &[(&str, &str)]) -> Decoded {
        let mut d = hpack::Decoder::new(4096);
        decode_request(&mut d, &block(fields), 16 * 1024).unwrap()
    }

    const BASE: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "app.example.com"),
        (":path", "/a?b"),
    ];

    #[test]
    fn a_plain_request_is_built_as_hyper_built_it() {
        let mut f = BASE.to_vec();
        f.push(("accept", "*/*"));
        f.push(("cookie", "a=1"));
        f.push(("cookie", "b=2"));
        let Decoded::Request(req, len) = decode(&f) else {
            panic!("not a request");
        };
        assert_eq!(len, None);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().to_string(), "https://app.example.com/a?b");
        assert_eq!(req.version(), http::Version::HTTP_2);
        assert_eq!(req.headers()["accept"], "*/*");
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("Accept", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("connection", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("keep-alive", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("transfer-encoding", "chunked"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("upgrade", "h2c"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("proxy-connection", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            vec![(":scheme", "https"), (":path", "/")],
            vec![(":method", "GET"), (":path", "/")],
            vec![(":method", "GET"), (":scheme", "https")],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                (":path", "/x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                ("a", "b"),
                (":path", "/"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                (":foo", "x"),
            ],
            vec![(":method", "GET"), (":scheme", "https"), (":path", "")],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a", "x\ry"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a", "x\ny"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a", "x\0y"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a", " x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a", "x\t"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a b", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("a:b", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("content-length", "1"),
                ("content-length", "2"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                ("content-length", "x"),
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/"),
                (":status", "200"),
            ],
            vec![
                (":method", "CONNECT"),
                (":authority", "a:443"),
                (":path", "/"),
            ],
            vec![
                (":method", "CONNECT"),
                (":scheme", "https"),
                (":authority", "a:443"),
            ],
            vec![(":method", "G T"), (":scheme", "https"), (":path", "/")],
        ];
        for c in &cases {
            assert!(matches!(decode(c), Decoded::Malformed), "{c:?}");
        }
    }

    #[test]
    fn te_trailers_and_connect_pass() {
        let mut f = BASE.to_vec();
        f.push(("te", "trailers"));
        assert!(matches!(decode(&f), Decoded::Request(..)));
        assert!(matches!(
            decode(&[(":method", "CONNECT"), (":authority", "a:443")]),
            Decoded::Request(..)
        ));
    }

    #[test]
    fn an_oversized_list_is_too_large() {
        let mut f = BASE.to_vec();
        let big = "x".repeat(20_000);
        f.push(("a", &big));
        assert!(matches!(decode(&f), Decoded::TooLarge));
    }

    #[test]
    fn values_are_shared_with_the_block() {
        let b = Bytes::from_static(b"hello world");
        let s = share(&b, &b[6..]);
        assert_eq!(&s[..], b"world");
        assert_eq!(s.as_ptr(), b[6..].as_ptr());
        let other = share(&b, b"x");
        assert_eq!(&other[..], b"x");
    }
}
