//! The Prometheus endpoint on `metrics_listen`: counters, per-route traffic, upstream latency, sessions, outbox.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::response::{text, Body};
use crate::routing::LATENCY_BUCKETS;
use crate::state::AppState;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric in the Prometheus text format.
pub async fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(4096);
    state.metrics.render(&mut out);
    let cfg = state.config();
    let _ = writeln!(out, "# HELP portcullis_route_responses_total Responses to protected traffic by route and status class.");
    let _ = writeln!(out, "# TYPE portcullis_route_responses_total counter");
    for r in &cfg.routes {
        for (i, c) in r.stats.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "portcullis_route_responses_total{{route=\"{}\",status=\"{}xx\"}} {}",
                label(&r.name),
                i + 1,
                c.load(Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP portcullis_upstream_latency_seconds Time to the upstream's response head."
    );
    let _ = writeln!(out, "# TYPE portcullis_upstream_latency_seconds histogram");
    for r in &cfg.routes {
        let name = label(&r.name);
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += r.stats.latency[i].load(Relaxed);
            let _ = writeln!(out, "portcullis_upstream_latency_seconds_bucket{{route=\"{name}\",le=\"{b}\"}} {cumulative}");
        }
        let count = r.stats.latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "portcullis_upstream_latency_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "portcullis_upstream_latency_seconds_sum{{route=\"{name}\"}} {}",
            r.stats.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "portcullis_upstream_latency_seconds_count{{route=\"{name}\"}} {count}"
        );
    }
    let up = usize::from(state.store.writable());
    let _ = writeln!(out, "# HELP portcullis_store_up Whether the store answered and could write at its last use (1) or not (0).\n# TYPE portcullis_store_up gauge\nportcullis_store_up{{backend=\"{}\"}} {up}", state.store.kind());
    for (name, help, v) in [
        (
            "active_sessions",
            "Sessions in the store (expired ones until the next sweep).",
            state.store.session_count().await,
        ),
        (
            "pending_challenges",
            "Sign-in challenges in the store.",
            state.store.challenge_count().await,
        ),
        (
            "outbox_depth",
            "Mails waiting to be sent.",
            state.store.outbox_len().await,
        ),
    ] {
        let _ = writeln!(out, "# HELP portcullis_{name} {help}\n# TYPE portcullis_{name} gauge\nportcullis_{name} {v}");
    }
    out
}

/// Serves `GET /metrics` until `stop`.
pub async fn serve(state: Arc<AppState>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let st = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let st = st.clone();
                async move {
                    let r: Response<Body> = if req.uri().path() == "/metrics" {
                        let mut r = text(StatusCode::OK, render(&st).await);
                        if let Ok(v) = "text/plain; version=0.0.4; charset=utf-8".parse() {
                            r.headers_mut().insert(http::header::CONTENT_TYPE, v);
                        }
                        r
                    } else {
                        text(StatusCode::NOT_FOUND, "metrics are at /metrics\n")
                    };
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
