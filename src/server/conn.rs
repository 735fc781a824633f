//! One connection's phases and their time limits: before the first request (TLS handshake,
//! silence, protocol detection, HTTP/2 preface, request head), idle between requests, a later
//! request head, draining. Requests in progress, streamed bodies and upgrades are never timed here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::limits::ConnSlot;

/// How long a connection the gateway closes keeps reading what the client still sends (and
/// drops it), at most: see [`linger`].
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// A lingering connection closes after this long without a byte from the client.
pub const LINGER_QUIET: Duration = Duration::from_millis(500);
/// A lingering connection closes after dropping this many bytes.
pub const LINGER_BYTES: usize = 256 * 1024;

/// The lingering close (nginx's `lingering_close`): after the gateway has written its last
/// bytes and shut its side down, it reads and drops what the client still sends, until the
/// client closes, [`LINGER_QUIET`] passes without a byte, [`LINGER_TIME`] is over or
/// [`LINGER_BYTES`] were dropped. Closing a socket with unread bytes makes the kernel send a
/// reset, and a reset can make the client lose what it had not read yet: the last answer, a
/// 431, an HTTP/2 GOAWAY saying which requests were not served.
pub async fn linger<R: AsyncRead + Unpin>(io: &mut R) {
    use tokio::io::AsyncReadExt;
    let end = Instant::now() + LINGER_TIME;
    let mut scratch = vec![0u8; 16 * 1024];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        let until = (Instant::now() + LINGER_QUIET).min(end);
        match tokio::time::timeout_at(until, io.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// The time limits of a connection (`limits.header_read_timeout`, `limits.idle_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// The phase whose time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing usable before `header_read_timeout`: silence, a TLS handshake or HTTP/2 preface
    /// left half-way, or a request head still incomplete.
    FirstRequest,
    /// Between requests for `idle_timeout` (HTTP/1 keep-alive; HTTP/2 with no open stream).
    Idle,
    /// A later HTTP/1 request head began and did not end within `header_read_timeout`.
    RequestHead,
}

impl Phase {
    pub fn describe(self) -> &'static str {
        match self {
            Phase::FirstRequest => "no request within limits.header_read_timeout",
            Phase::Idle => "idle for limits.idle_timeout",
            Phase::RequestHead => "request head not finished within limits.header_read_timeout",
        }
    }
}

/// What the connection is doing, as seen by its service (requests) and its socket (reads).
/// Times are milliseconds since the connection was accepted.
#[derive(Debug)]
pub struct Phases {
    started: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    h2: AtomicBool,
    /// When the last request in flight ended.
    idle_since: AtomicU64,
    /// 1 + when the first byte arrived while idle (an HTTP/1 head starting); 0: none.
    head_since: AtomicU64,
}

impl Phases {
    pub fn new(started: Instant) -> Arc<Phases> {
        Arc::new(Phases {
            started,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// A request head was parsed; the request counts as in progress until the returned guard
    /// (carried by the response body) is dropped.
    pub fn request_started(self: &Arc<Self>, version: http::Version) -> InFlight {
        if version == http::Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(0, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Bytes arrived. Between HTTP/1 requests that is the next head starting: from then on the
    /// head has `header_read_timeout`, not `idle_timeout`. (HTTP/2 reads pings and window
    /// updates while idle, so it keeps the idle clock.)
    fn bytes_read(&self) {
        if self.head_since.load(Ordering::Relaxed) == 0
            && self.requests.load(Ordering::Relaxed) > 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_since
                .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
        }
    }

    /// When the current phase ends, and which it is; `None` while a request is in progress.
    fn deadline(&self, t: Timeouts) -> Option<(Instant, Phase)> {
        if self.requests.load(Ordering::SeqCst) == 0 {
            return Some((self.started + t.header_read, Phase::FirstRequest));
        }
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let head = self.head_since.load(Ordering::SeqCst);
        if head != 0 {
            return Some((self.at(head - 1) + t.header_read, Phase::RequestHead));
        }
        let idle = self.idle_since.load(Ordering::SeqCst);
        Some((self.at(idle) + t.idle, Phase::Idle))
    }
}

/// A request in progress; dropped with its response body (or when the request is abandoned).
#[derive(Debug)]
pub struct InFlight(Arc<Phases>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let p = &self.0;
        p.idle_since.store(p.now_ms(), Ordering::SeqCst);
        p.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in progress until it is sent or dropped:
/// a streamed response is never idle.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The client socket with its connection slot (given back when the socket closes, also after an
/// upgrade) and a report of reads to the connection's [`Phases`].
pub struct Metered {
    stream: Stream,
    phases: Arc<Phases>,
    _slot: ConnSlot,
}

impl Metered {
    pub fn new(stream: Stream, phases: Arc<Phases>, slot: ConnSlot) -> Metered {
        Metered {
            stream,
            phases,
            _slot: slot,
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phases.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a supervised connection ended.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// It finished (client closed, error, graceful close, handed over to hyper or to an upgrade).
    Finished(Result<T, E>),
    /// Cut: the phase's time ran out.
    TimedOut(Phase),
    /// Closed because the server is stopping and no request had arrived.
    Stopping,
}

/// Drives `conn` while enforcing the phase limits: before the first request and for a late
/// request head it is dropped (closed) when time runs out; an idle connection gets a graceful
/// close (HTTP/2 GOAWAY), dropped if that does not finish within `header_read_timeout`. When
/// `drain` turns true (server stopping) the connection is closed gracefully, at once if no
/// request ever came. Once hyper hands the socket to an upgrade, `conn` finishes and nothing
/// here times the upgraded stream.
pub async fn supervise<C, T, E>(
    mut conn: Pin<&mut C>,
    mut graceful: impl FnMut(Pin<&mut C>),
    phases: &Phases,
    t: Timeouts,
    drain: &mut watch::Receiver<bool>,
) -> Outcome<T, E>
where
    C: Future<Output = Result<T, E>>,
{
    let mut closing: Option<Instant> = None;
    let mut draining = false;
    let side = Sides::new();
    loop {
        let next = match closing {
            Some(hard) => Some((hard, Phase::Idle)),
            None => phases.deadline(t),
        };
        // Requests starting and ending and heads beginning never wake this loop (that would
        // cost every request a wake-up and a new timer). None of them brings a deadline closer
        // than the shorter of `header_read_timeout` and `idle_timeout` from when it happens: so
        // look again after that long at the latest (a busy connection: one timer per that
        // period), and every deadline is still kept exactly.
        let soon = Instant::now() + t.header_read.min(t.idle);
        let wake = match (next, closing) {
            (Some((at, _)), Some(_)) => at,
            (Some((at, _)), None) => at.min(soon),
            (None, _) => soon,
        };
        let mut sleep = std::pin::pin!(tokio::time::sleep_until(wake));
        let mut changed = std::pin::pin!(drain.changed());
        side.arm();
        // The connection first; the timer and the drain signal only when their own wakers
        // fired (or on the first poll): a connection is woken twice per request, and polling
        // both each time (a timer-wheel check, a lock in the watch) cost as much as parsing a
        // header line.
        let mut registered: Option<Waker> = None;
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Conn(r));
            }
            // The task's waker does not change from one poll to the next: stored once (and
            // kept: a side's wake-up does not take it).
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *side.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
                registered = Some(cx.waker().clone());
            }
            if side.timer.due()
                && sleep
                    .as_mut()
                    .poll(&mut Context::from_waker(&side.timer_waker))
                    .is_ready()
            {
                return Poll::Ready(Event::Timer);
            }
            if !draining
                && side.drain.due()
                && changed
                    .as_mut()
                    .poll(&mut Context::from_waker(&side.drain_waker))
                    .is_ready()
            {
                return Poll::Ready(Event::Drain);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Conn(r) => return Outcome::Finished(r),
            Event::Timer => {
                if closing.is_some() {
                    return Outcome::TimedOut(Phase::Idle);
                }
                // The phase may have moved on while sleeping: act only on a deadline still past.
                match phases.deadline(t) {
                    Some((at, phase)) if at <= Instant::now() => match phase {
                        Phase::FirstRequest | Phase::RequestHead => {
                            return Outcome::TimedOut(phase)
                        }
                        Phase::Idle => {
                            graceful(conn.as_mut());
                            closing = Some(Instant::now() + t.header_read);
                        }
                    },
                    _ => {}
                }
            }
            Event::Drain => {
                draining = true;
                if phases.requests() == 0 {
                    return Outcome::Stopping;
                }
                graceful(conn.as_mut());
            }
        }
    }
}

/// What ended one wait of [`supervise`].
enum Event<R> {
    Conn(R),
    Timer,
    Drain,
}

/// The wakers [`supervise`] polls its timer and the drain signal with: each marks its side as
/// due and wakes the connection's task, so a wake-up for the connection polls the connection only.
struct Sides {
    task: TaskWaker,
    timer: Arc<Side>,
    drain: Arc<Side>,
    timer_waker: Waker,
    drain_waker: Waker,
}

/// One side's mark: set by its waker (and when a wait begins), cleared when it is polled.
struct Side {
    fired: AtomicBool,
    task: TaskWaker,
}

/// The connection task's waker, for the sides to wake it with. Set when it changes (in practice
/// once); a lock only when a side fires, which is rare.
type TaskWaker = Arc<std::sync::Mutex<Option<Waker>>>;

impl Side {
    /// Whether this side is to be polled (its mark is cleared): a plain load when it is not.
    fn due(&self) -> bool {
        self.fired.load(Ordering::Acquire) && self.fired.swap(false, Ordering::AcqRel)
    }
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(w) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
            w.wake_by_ref();
        }
    }
}

impl Sides {
    fn new() -> Sides {
        let task = TaskWaker::default();
        let side = || {
            Arc::new(Side {
                fired: AtomicBool::new(true),
                task: task.clone(),
            })
        };
        let (timer, drain) = (side(), side());
        Sides {
            timer_waker: Waker::from(timer.clone()),
            drain_waker: Waker::from(drain.clone()),
            task,
            timer,
            drain,
        }
    }

    /// A new wait: its timer and drain future are fresh and must be polled once to register.
    fn arm(&self) {
        self.timer.fired.store(true, Ordering::Release);
        self.drain.fired.store(true, Ordering::Release);
    }
}
