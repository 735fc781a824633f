//! Listeners and connections: accept loop, TLS handshakes, HTTP/1.1 + HTTP/2 with upgrades, limits, graceful shutdown.

pub mod control;
pub mod metrics;
pub mod reload;
pub mod systemd;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http::router::handle;
use crate::http::ConnInfo;
use crate::state::AppState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bound sockets: plain HTTP, optionally HTTPS and the metrics endpoint.
pub struct Listeners {
    pub http: TcpListener,
    pub tls: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

async fn bind(addr: std::net::SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{key} {addr}: {e}")))
}

impl Listeners {
    /// Binds the addresses of the configuration.
    pub async fn bind(cfg: &crate::config::Config) -> std::io::Result<Listeners> {
        let http = bind(cfg.listen, "listen").await?;
        let tls = match &cfg.tls {
            Some(t) => Some(bind(t.listen, "tls.listen").await?),
            None => None,
        };
        let metrics = match cfg.metrics_listen {
            Some(m) => Some(bind(m, "metrics_listen").await?),
            None => None,
        };
        Ok(Listeners { http, tls, metrics })
    }
}

fn builder(cfg: &crate::config::Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.limits.header_read_timeout)
        .max_buf_size(cfg.limits.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        .keep_alive_interval(Some(Duration::from_secs(30)));
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
        tokio::spawn(crate::store::sweeper::run(state.clone(), stop_rx.clone())),
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
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(builder(&cfg));
    let workers_io = Workers::start(state.clone(), builder)?;
    tracing::info!(
        listen = %listeners.http.local_addr()?,
        tls = ?listeners.tls.as_ref().and_then(|l| l.local_addr().ok()),
        public_url = %cfg.public_url,
        routes = cfg.routes.len(),
        workers = workers_io.len(),
        "portcullis is serving"
    );
    systemd::notify("READY=1\nSTATUS=serving");
    tokio::pin!(shutdown);
    let mut next = 0usize;
    loop {
        let (stream, peer, tls) = tokio::select! {
            r = listeners.http.accept() => match r {
                Ok((s, p)) => (s, p, false),
                Err(e) => { accept_error(e).await; continue; }
            },
            r = accept_opt(listeners.tls.as_ref()) => match r {
                Ok((s, p)) => (s, p, true),
                Err(e) => { accept_error(e).await; continue; }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
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
                watcher: graceful.watcher(),
            },
        );
    }
    drop(listeners.http);
    drop(listeners.tls);
    systemd::notify("STOPPING=1\nSTATUS=finishing in-flight requests");
    let grace = state.config().limits.shutdown_grace;
    tracing::info!(connections = graceful.count(), grace = ?grace, "shutting down: finishing in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
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
    state.store.flush_touches()?;
    state.store.flush().await?;
    tracing::info!("stopped; database flushed");
    Ok(())
}

/// One accepted connection, handed to a worker.
struct Job {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: bool,
    watcher: hyper_util::server::graceful::Watcher,
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
                .build()?;
            let (state, builder) = (state.clone(), builder.clone());
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-w{worker}"))
                .spawn(move || {
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
        watcher,
    } = job;
    let stream = match TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register connection");
            return;
        }
    };
    let tls_config = if tls {
        match state.tls.load_full() {
            Some(c) => Some(c),
            None => return,
        }
    } else {
        None
    };
    let timeout = state.config().limits.header_read_timeout;
    let conn_info = ConnInfo {
        peer,
        tls,
        worker,
        upstream: Arc::default(),
    };
    let service = service_fn(move |req| {
        let st = state.clone();
        let conn_info = conn_info.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(st, req, conn_info).await) }
    });
    let result = match tls_config {
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(conn.into_owned()).await
        }
        Some(c) => {
            let Some(tls_stream) = handshake(TlsAcceptor::from(c), stream, timeout).await else {
                return;
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
            watcher.watch(conn.into_owned()).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection error");
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("tls handshake timed out");
            None
        }
    }
}

/// Out of file descriptors and similar: log, back off briefly, keep serving.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Pings the systemd watchdog at half its interval while the store answers.
async fn watchdog(state: Arc<AppState>, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval / 2) => {}
            _ = stop.changed() => return,
        }
        if state.store.challenge("watchdog-probe").is_ok() {
            systemd::notify("WATCHDOG=1");
        } else {
            tracing::error!("store does not answer; withholding the watchdog ping");
        }
    }
}
