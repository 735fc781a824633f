//! Listeners and connections: accept loop, TLS handshakes, HTTP/1.1 + HTTP/2 with upgrades, limits, graceful shutdown.

mod conn;
/// The lingering close's bounds (see `conn::linger`).
pub use conn::{LINGER_BYTES, LINGER_QUIET, LINGER_TIME};
pub mod control;
pub mod h1;
pub mod http2;
pub mod limits;
pub mod metrics;
pub mod recovery;
pub mod reload;
pub mod sweeper;
pub mod systemd;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::http::router::handle;
use crate::http::ConnInfo;
use crate::state::AppState;

use conn::{Metered, Outcome, Phases, Stream, Timeouts, Tracked};
use limits::{AcceptBackoff, ClientKey, ConnLimiter, ConnSlot, Refusal, RefusalLog};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound sockets: plain HTTP, optionally HTTPS and the metrics endpoint.
pub struct Listeners {
    pub http: TcpListener,
    pub tls: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

/// Connections the kernel completes and queues for the accept loop. `TcpListener::bind` asks for
/// 128: a burst of more new connections than that (clients reconnecting after a restart, a load
/// balancer opening its pool) overflows it, and the kernel drops the extra SYNs, which the
/// clients resend only after a second or more. The kernel caps it at `net.core.somaxconn`
/// (4096 by default); nginx asks for 511.
pub const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restart can bind while old connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
}

impl Listeners {
    /// Binds the addresses of the configuration.
    pub async fn bind(cfg: &crate::config::Config) -> std::io::Result<Listeners> {
        let http = bind(cfg.listen, "listen")?;
        let tls = match &cfg.tls {
            Some(t) => Some(bind(t.listen, "tls.listen")?),
            None => None,
        };
        let metrics = match cfg.metrics_listen {
            Some(m) => Some(bind(m, "metrics_listen")?),
            None => None,
        };
        Ok(Listeners { http, tls, metrics })
    }
}

/// Requests one HTTP/2 connection may have in progress (SETTINGS_MAX_CONCURRENT_STREAMS).
const MAX_HTTP2_STREAMS: u32 = 250;

/// hyper serves HTTP/1 only (what the own HTTP/1 loop hands over: bodies, upgrades, HTTP/1.0);
/// HTTP/2 is the own server's ([`http2`]). hyper's own header timer is off: it only starts after
/// protocol detection and would also cut keep-alive idle at `header_read_timeout`.
/// [`conn::supervise`] times every phase.
fn builder(cfg: &crate::config::Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new()).http1_only();
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(cfg.limits.max_header_bytes)
        .keep_alive(true);
    b
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// within the grace period, stops the background workers and flushes the store.
pub async fn run(
    state: Arc<AppState>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let cfg = state.config();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = vec![
        tokio::spawn(crate::mail::outbox::run(state.clone(), stop_rx.clone())),
        tokio::spawn(crate::server::sweeper::run(state.clone(), stop_rx.clone())),
        tokio::spawn(crate::server::recovery::run(state.clone(), stop_rx.clone())),
        tokio::spawn(reload::run(state.clone(), stop_rx.clone())),
    ];
    if let Some(m) = listeners.metrics {
        tracing::info!(listen = %m.local_addr()?, "serving Prometheus metrics on /metrics");
        workers.push(tokio::spawn(metrics::serve(
            state.clone(),
            m,
            stop_rx.clone(),
        )));
    }
    match control::bind(&cfg.data_dir) {
        Ok(l) => workers.push(tokio::spawn(control::serve(
            state.clone(),
            l,
            stop_rx.clone(),
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket; `portcullis sessions` will not reach this server")
        }
    }
    if let Some(interval) = systemd::watchdog_interval() {
        workers.push(tokio::spawn(watchdog(
            state.clone(),
            interval,
            stop_rx.clone(),
        )));
    }
    let (drain_tx, _) = watch::channel(false);
    let limiter = ConnLimiter::new();
    let builder = Arc::new(builder(&cfg));
    let workers_io = Workers::start(state.clone(), builder)?;
    tracing::info!(
        listen = %listeners.http.local_addr()?,
        tls = ?listeners.tls.as_ref().and_then(|l| l.local_addr().ok()),
        public_url = %cfg.public_url,
        routes = cfg.routes.len(),
        workers = workers_io.len(),
        max_connections = cfg.limits.max_connections,
        max_connections_per_ip = cfg.limits.max_connections_per_ip,
        "portcullis is serving"
    );
    if matches!(cfg.email.transport, crate::config::MailTransport::Log) {
        tracing::info!(
            "open {} in a browser; sign-in mails (link and code) are printed here, not sent (email.transport: log)",
            cfg.public_url
        );
    }
    limits::check_open_file_limit(cfg.limits.max_connections);
    drop(cfg);
    systemd::notify("READY=1\nSTATUS=serving");
    tokio::pin!(shutdown);
    let mut next = 0usize;
    let mut refusals = RefusalLog::default();
    let mut backoff = AcceptBackoff::default();
    loop {
        if let Some(pause) = backoff.take_pause() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => break,
            }
        }
        let (stream, peer, tls) = tokio::select! {
            r = listeners.http.accept() => match r {
                Ok((s, p)) => (s, p, false),
                Err(e) => { backoff.failed(&e); continue; }
            },
            r = accept_opt(listeners.tls.as_ref()) => match r {
                Ok((s, p)) => (s, p, true),
                Err(e) => { backoff.failed(&e); continue; }
            },
            _ = at(refusals.due()) => { refusals.report(); continue; }
            _ = &mut shutdown => break,
        };
        backoff.succeeded();
        let Some(slot) = admit(&state, &limiter, &mut refusals, &stream, peer, tls) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = crate::net::watch_peer(&stream) {
            tracing::debug!(%peer, error = %e, "cannot set keep-alive probes on a client connection");
        }
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        next = (next + 1) % workers_io.len();
        workers_io.send(
            next,
            Job {
                stream: std_stream,
                peer,
                tls,
                accepted: Instant::now(),
                slot,
                drain: drain_tx.subscribe(),
            },
        );
    }
    drop(listeners.http);
    drop(listeners.tls);
    systemd::notify("STOPPING=1\nSTATUS=finishing in-flight requests");
    let grace = state.config().limits.shutdown_grace;
    tracing::info!(connections = drain_tx.receiver_count(), grace = ?grace, "shutting down: finishing in-flight requests");
    drain_tx.send_replace(true);
    if tokio::time::timeout(grace, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    workers_io.stop();
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    state.store.flush_touches().await?;
    state.store.flush().await?;
    tracing::info!("stopped; database flushed");
    Ok(())
}

/// Counts a new connection against `limits.max_connections` and, unless the peer is a trusted
/// proxy (it speaks for many clients), `limits.max_connections_per_ip`. Over a cap the
/// connection is closed at once; a plain-HTTP one first gets a minimal 503.
fn admit(
    state: &AppState,
    limiter: &Arc<ConnLimiter>,
    refusals: &mut RefusalLog,
    stream: &TcpStream,
    peer: std::net::SocketAddr,
    tls: bool,
) -> Option<ConnSlot> {
    let cfg = state.config();
    let ip = peer.ip().to_canonical();
    let key = (!crate::config::is_trusted(&cfg.trusted_proxies, ip)).then(|| ClientKey::of(ip));
    let (max, per_ip) = (
        cfg.limits.max_connections,
        cfg.limits.max_connections_per_ip,
    );
    match limiter.admit(key, max, per_ip) {
        Ok(slot) => Some(slot),
        Err(why) => {
            refusals.refused(why, ip, if why == Refusal::Total { max } else { per_ip });
            if !tls {
                // Non-blocking: a fresh socket's send buffer is empty. Read what the client
                // already sent so that closing sends FIN, not RST (which could discard the 503).
                let _ = stream.try_write(limits::REFUSED_RESPONSE);
                let mut sink = [0u8; 2048];
                let _ = stream.try_read(&mut sink);
            }
            None
        }
    }
}

/// Resolves at `deadline`, never without one.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One accepted connection, handed to a worker.
struct Job {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: bool,
    accepted: Instant,
    /// Its place in the connection counts, given back when the socket closes.
    slot: ConnSlot,
    /// Turns true when the server stops; the connection then closes gracefully.
    drain: watch::Receiver<bool>,
}

/// Connection workers: each a thread with a single-threaded runtime that serves whole
/// connections (TLS, HTTP, and the upstream exchange with its own client), so a request never
/// hops between threads. The accept loop deals connections out round-robin.
struct Workers {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(
        state: Arc<AppState>,
        builder: Arc<auto::Builder<TokioExecutor>>,
    ) -> std::io::Result<Workers> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for worker in 0..state.clients.len() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // The worker's access lines are gathered and handed to the log writer in
                // batches; whatever is gathered goes when the worker has nothing left to do.
                .on_thread_park(crate::logsink::flush_this_thread)
                .build()?;
            let (state, builder) = (state.clone(), builder.clone());
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-w{worker}"))
                .spawn(move || {
                    crate::logsink::batch_this_thread();
                    rt.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(serve_connection(
                                state.clone(),
                                builder.clone(),
                                job,
                                worker,
                            ));
                        }
                    });
                    // The runtime (and any connection it still held) first, then the lines left.
                    drop(rt);
                    crate::logsink::flush_this_thread();
                })?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Workers { senders, threads })
    }

    fn len(&self) -> usize {
        self.senders.len()
    }

    fn send(&self, worker: usize, job: Job) {
        if self.senders[worker].send(job).is_err() {
            tracing::error!(worker, "connection worker is gone; connection dropped");
        }
    }

    /// Closes the queues; each worker's runtime ends (dropping what is left) and its thread is joined.
    fn stop(self) {
        drop(self.senders);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn serve_connection(
    state: Arc<AppState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    job: Job,
    worker: usize,
) {
    let Job {
        stream,
        peer,
        tls,
        accepted,
        slot,
        mut drain,
    } = job;
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register connection");
            return;
        }
    };
    let timeouts = {
        let cfg = state.config();
        Timeouts {
            header_read: cfg.limits.header_read_timeout,
            idle: cfg.limits.idle_timeout,
        }
    };
    let phases = Phases::new(accepted);
    // The TLS handshake is part of the time before the first request.
    let stream = if tls {
        let Some(c) = state.tls.load_full() else {
            return;
        };
        let deadline = phases.started() + timeouts.header_read;
        let handshake = tokio::time::timeout_at(deadline, TlsAcceptor::from(c).accept(stream));
        let done = tokio::select! {
            r = handshake => r,
            // The server is stopping: no request has come, nothing to finish.
            _ = drain.changed() => return,
        };
        match done {
            Ok(Ok(s)) => Stream::Tls(Box::new(s)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out (limits.header_read_timeout)");
                return;
            }
        }
    } else {
        Stream::Plain(stream)
    };
    let conn_info = ConnInfo {
        peer,
        tls,
        worker,
        upstream: Arc::default(),
    };
    let io = Metered::new(stream, phases.clone(), slot);
    // HTTP/1.1 requests without a body are served by the own loop; it hands anything else over.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let max_head = state.config().limits.max_header_bytes;
    let outcome = {
        let own = std::pin::pin!(h1::serve(io, &state, &conn_info, &phases, &stop, max_head));
        conn::supervise(
            own,
            |_| stop.store(true, std::sync::atomic::Ordering::Relaxed),
            &phases,
            timeouts,
            &mut drain,
        )
        .await
    };
    let (io, pre) = match outcome {
        Outcome::Finished(Ok(h1::Next::HandOver(io, pre))) => (io, pre),
        Outcome::Finished(Ok(h1::Next::Done)) | Outcome::Stopping => return,
        Outcome::Finished(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection error");
            return;
        }
        Outcome::TimedOut(phase) => {
            tracing::debug!(%peer, requests = phases.requests(), "connection closed: {}", phase.describe());
            return;
        }
    };
    // HTTP/2 (prior knowledge, or ALPN `h2`: either way the client's preface comes first) is
    // served by the own HTTP/2 server.
    let n = pre.len().min(http2::frame::PREFACE.len());
    if n > 0 && pre[..n] == http2::frame::PREFACE[..n] {
        let cfg = http2::conn::Config {
            max_header_bytes: max_head,
            max_streams: MAX_HTTP2_STREAMS,
            stall_timeout: timeouts.idle,
        };
        let own = std::pin::pin!(http2::conn::serve(
            io, pre, &state, &conn_info, &phases, &stop, cfg
        ));
        let outcome = conn::supervise(
            own,
            |_| stop.store(true, std::sync::atomic::Ordering::Relaxed),
            &phases,
            timeouts,
            &mut drain,
        )
        .await;
        log_end(peer, &phases, outcome);
        return;
    }
    let ph = phases.clone();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let in_flight = ph.request_started(req.version());
        let st = state.clone();
        let conn_info = conn_info.clone();
        // Boxed: hyper keeps this future in its dispatcher and moves it there whole (a few
        // KiB); a box moves as one pointer. (HTTP/2 requests box theirs in `http2::conn`.)
        Box::pin(async move {
            let mut req = req.map(crate::request::ClientBody::Hyper);
            let mut resp = handle(&st, &mut req, &conn_info).await;
            crate::http::response::settle_fields(&mut resp);
            Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, in_flight)))
        })
    });
    let io = TokioIo::new(h1::Rewind::new(io, pre));
    let mut conn = std::pin::pin!(builder.serve_connection_with_upgrades(io, service));
    if *drain.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    let outcome = conn::supervise(
        conn,
        |c| c.graceful_shutdown(),
        &phases,
        timeouts,
        &mut drain,
    )
    .await;
    log_end(peer, &phases, outcome);
}

/// Logs (at debug) how a connection served to its end finished, if not normally.
fn log_end<E: std::fmt::Display>(
    peer: std::net::SocketAddr,
    phases: &Phases,
    outcome: Outcome<(), E>,
) {
    match outcome {
        Outcome::Finished(Ok(())) | Outcome::Stopping => {}
        Outcome::Finished(Err(e)) => tracing::debug!(%peer, error = %e, "connection error"),
        Outcome::TimedOut(phase) => {
            tracing::debug!(%peer, requests = phases.requests(), "connection closed: {}", phase.describe())
        }
    }
}

/// Accepts on the TLS listener, if there is one.
async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Pings the systemd watchdog at half its interval while the store answers and can write (so
/// systemd restarts a gateway whose storage never recovers).
async fn watchdog(state: Arc<AppState>, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval / 2) => {}
            _ = stop.changed() => return,
        }
        if !state.store.writable() {
            tracing::error!("store cannot write; withholding the watchdog ping");
        } else if state.store.check().await.is_ok() {
            systemd::notify("WATCHDOG=1");
        } else {
            tracing::error!("store does not answer; withholding the watchdog ping");
        }
    }
}
