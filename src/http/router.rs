//! The hyper service: one request in, one response out. Sends `/.auth/*` to the auth handlers and everything else through session checks to the upstream.

use std::sync::Arc;
use std::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::handlers;
use crate::auth::policy::is_navigation;
use crate::auth::session::authenticate;
use crate::config::{is_trusted, Config};
use crate::http::response::{html, json, redirect, Body};
use crate::http::ConnInfo;
use crate::proxy::forward::{forward, request_host};
use crate::state::AppState;

/// Handles one request. Never fails: every error becomes a response here or in `error.rs`.
pub async fn handle(
    state: Arc<AppState>,
    mut req: Request<Incoming>,
    conn: ConnInfo,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // One config snapshot per request (each load touches a shared reference count).
    let cfg = state.config();
    let request_id = request_id(&state, &cfg, &mut req, &conn);
    let resp = if path == "/.auth" || path.starts_with("/.auth/") {
        handlers::dispatch(&state, req, &conn).await
    } else {
        protected(&state, cfg, req, &conn).await
    };
    tracing::info!(
        target: "portcullis::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        peer = %conn.peer.ip(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = request_id.to_str().unwrap_or("-"),
        "request"
    );
    resp
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request's id: kept from a trusted proxy's `X-Request-Id`, otherwise made here
/// (random per-process prefix + counter: unique, and cheap on the hot path). Passed upstream.
fn request_id(
    state: &AppState,
    cfg: &Config,
    req: &mut Request<Incoming>,
    conn: &ConnInfo,
) -> HeaderValue {
    if let Some(v) = req.headers().get(X_REQUEST_ID) {
        if is_trusted(&cfg.trusted_proxies, conn.peer.ip()) && v.len() <= 128 {
            return v.clone();
        }
    }
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}{n:010x}", state.instance_id);
    let v = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"));
    req.headers_mut().insert(X_REQUEST_ID, v.clone());
    v
}

const X_REQUEST_ID: &str = "x-request-id";

async fn protected(
    state: &Arc<AppState>,
    cfg: Arc<Config>,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Response<Body> {
    let navigation = is_navigation(req.method(), req.headers());
    let host = request_host(&req).unwrap_or_default();
    let Some(route) = cfg.route(&host, req.uri().path()) else {
        return handlers::no_route(state, &host, navigation);
    };
    let public = route.is_public_path(req.uri().path());
    let resp = match authenticate(state, &cfg, req.headers(), Some(route)) {
        Ok(Some(id)) if id.allowed => forward(state, &cfg, route, req, Some(&id), conn).await,
        Ok(_) if public => forward(state, &cfg, route, req, None, conn).await,
        Ok(Some(id)) => {
            state.metrics.requests_denied();
            handlers::forbidden(state, &id.email, navigation)
        }
        Ok(None) => {
            state.metrics.requests_unauthenticated();
            if navigation {
                let scheme = if conn.tls { "https" } else { "http" };
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                redirect(
                    StatusCode::FOUND,
                    &login_url(&cfg, &format!("{scheme}://{host}{pq}")),
                )
            } else {
                unauthenticated(&cfg)
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                state.pages.message(
                    "Something went wrong",
                    "The gateway could not check your session.",
                    None,
                ),
            )
        }
    };
    route.stats.status(resp.status().as_u16());
    resp
}

/// `{public_url}/.auth/login?rd=<original URL>`.
pub fn login_url(cfg: &Config, original: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
    cfg.public_link(&format!("/.auth/login?rd={rd}"))
}

/// 401 JSON for API clients.
pub fn unauthenticated(cfg: &Config) -> Response<Body> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "sign in first", "code": "unauthenticated"}),
    );
    if let Ok(v) = format!("Portcullis realm=\"{}\"", cfg.public_origin()).parse() {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
