//! Listeners and connections: accept loop, TLS handshakes, HTTP/1.1 + HTTP/2 with upgrades, limits, graceful shutdown.

pub mod tls;

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::http::router::handle;
use crate::http::ConnInfo;
use crate::state::AppState;

/// The bound sockets: plain HTTP and, optionally, HTTPS.
pub struct Listeners {
    pub http: TcpListener,
    pub tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of the configuration.
    pub async fn bind(cfg: &crate::config::Config) -> std::io::Result<Listeners> {
        let http = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen {}: {e}", cfg.listen)))?;
        let tls = match &cfg.tls {
            Some(t) => Some(TcpListener::bind(t.listen).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("tls.listen {}: {e}", t.listen))
            })?),
            None => None,
        };
        Ok(Listeners { http, tls })
    }
}

fn builder(cfg: &crate::config::Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.limits.header_read_timeout)
        .max_buf_size(cfg.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    b
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// within the grace period, stops the background workers and flushes the store.
pub async fn run(
    state: Arc<AppState>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cfg = state.config();
    let acceptor = match &cfg.tls {
        Some(t) => Some(TlsAcceptor::from(tls::server_config(&t.cert, &t.key)?)),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = vec![
        tokio::spawn(crate::mail::outbox::run(state.clone(), stop_rx.clone())),
        tokio::spawn(crate::store::sweeper::run(state.clone(), stop_rx.clone())),
    ];
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(builder(&cfg));
    tracing::info!(listen = %listeners.http.local_addr()?, tls = ?listeners.tls.as_ref().and_then(|l| l.local_addr().ok()), public_url = %cfg.public_url, "portcullis is serving");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, tls) = tokio::select! {
            r = listeners.http.accept() => match r {
                Ok((s, p)) => (s, p, false),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(std::time::Duration::from_millis(50)).await; continue; }
            },
            r = accept_opt(listeners.tls.as_ref()) => match r {
                Ok((s, p)) => (s, p, true),
                Err(e) => { tracing::warn!(error = %e, "tls accept failed"); tokio::time::sleep(std::time::Duration::from_millis(50)).await; continue; }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo { peer, tls };
        let st = state.clone();
        let service = service_fn(move |req| {
            let st = st.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(st, req, conn).await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        if tls {
            let Some(acceptor) = acceptor.clone() else {
                continue;
            };
            let timeout = cfg.limits.header_read_timeout;
            tokio::spawn(async move {
                let tls_stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection error");
                }
            });
        } else {
            tokio::spawn(async move {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection error");
                }
            });
        }
    }
    drop(listeners);
    tracing::info!(connections = graceful.count(), grace = ?cfg.limits.shutdown_grace, "shutting down: finishing in-flight requests");
    if tokio::time::timeout(cfg.limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
    }
    state.store.flush_touches()?;
    state.store.flush().await?;
    tracing::info!("stopped; database flushed");
    Ok(())
}

async fn accept_opt(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
