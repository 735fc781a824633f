//! The hyper service: one request in, one response out. Sends `/.auth/*` to the auth handlers and everything else through session checks to the upstream.

use std::sync::Arc;
use std::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::request::ClientBody;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::auth::handlers;
use crate::auth::policy::is_navigation;
use crate::auth::session::authenticate;
use crate::config::{is_trusted, Config};
use crate::http::access;
use crate::http::response::{html, json, login_url, redirect, unauthenticated, Body};
use crate::http::ConnInfo;
use crate::proxy::forward::{forward, Caller};
use crate::request::{Refusal, RequestView, ALLOWED_METHODS};
use crate::state::AppState;

/// Handles one request. Never fails: every error becomes a response here or in `error.rs`.
///
/// The request is borrowed, not moved: an async fn keeps a moved-in argument twice in its
/// future (as passed, and as the local it becomes when first polled) and copies it between
/// them, and each layer below (`protected`, `forward`) would do the same. Whoever needs it
/// whole (the auth handlers, a request with a body) takes it out with [`take_request`](crate::request::take_request).
pub async fn handle(
    state: &Arc<AppState>,
    req: &mut Request<ClientBody>,
    conn: &ConnInfo,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    // Shares the request's bytes (no copy) for the access log.
    let uri = req.uri().clone();
    // One config snapshot per request (each load touches a shared reference count).
    let cfg = state.config();
    let request_id = request_id(state, &cfg, req, conn);
    // The one canonical view: every decision below and what is forwarded come from it. It
    // borrows the target and the Host value through clones (reference counts, no copy), so the
    // request itself stays free to be changed and taken.
    let (host, more_hosts) = crate::request::host_fields(req.headers());
    let host = host.cloned();
    let view = RequestView::of_parts(
        req.method(),
        req.version(),
        &uri,
        host.as_ref(),
        more_hosts,
        conn.tls,
    );
    let resp = match view {
        Err(refusal) => refuse(state, &refusal, is_navigation(req.method(), req.headers())),
        // Boxed: the gateway's own endpoints are a large future (mail, store writes) that the
        // proxied requests should not carry (and copy) inline.
        Ok(view) if is_auth_path(&view.path.primary) => {
            Box::pin(handlers::dispatch(
                state,
                crate::request::take_request(req),
                conn,
                &view,
            ))
            .await
        }
        Ok(view) => protected(state, cfg, req, conn, &view, request_id.as_bytes()).await,
    };
    access::log(&access::Entry {
        method: method.as_str(),
        path: uri.path(),
        status: resp.status().as_u16(),
        peer: conn.peer.ip(),
        elapsed: started.elapsed(),
        request_id: request_id.as_str(),
    });
    resp
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A request's id: a trusted proxy's `X-Request-Id`, or one made here (held inline: no
/// allocation per request).
enum RequestId {
    Given(HeaderValue),
    Made { buf: [u8; 32], len: usize },
}

impl RequestId {
    /// As passed upstream with the other headers the gateway writes (`proxy::outgoing`).
    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Given(v) => v.as_bytes(),
            RequestId::Made { buf, len } => &buf[..*len],
        }
    }

    /// For the access log (`-` for a given id that is not visible ASCII).
    fn as_str(&self) -> &str {
        match self {
            RequestId::Given(v) => v.to_str().unwrap_or("-"),
            RequestId::Made { buf, len } => std::str::from_utf8(&buf[..*len]).unwrap_or("-"),
        }
    }
}

/// The request's id: kept from a trusted proxy's `X-Request-Id`, otherwise made here
/// (random per-process prefix + counter: unique, and cheap on the hot path). Passed upstream.
fn request_id(
    state: &AppState,
    cfg: &Config,
    req: &Request<ClientBody>,
    conn: &ConnInfo,
) -> RequestId {
    if let Some(v) = req.headers().get(X_REQUEST_ID) {
        if is_trusted(&cfg.trusted_proxies, conn.peer.ip()) && v.len() <= 128 {
            return RequestId::Given(v.clone());
        }
    }
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{instance_id}{n:010x}` written into a buffer the id holds: no formatting machinery.
    let mut buf = [0u8; 32];
    // The instance id is hex (`AppState::instance_id`); anything else is left out, so the id is
    // always a valid header value.
    let prefix = state.instance_id.as_bytes();
    let p = prefix
        .iter()
        .take(buf.len() - 10)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    buf[..p].copy_from_slice(&prefix[..p]);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf[p..p + 10].iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (9 - i))) & 0xf) as usize];
    }
    RequestId::Made { buf, len: p + 10 }
}

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Whether a canonical path belongs to the gateway's own endpoints.
fn is_auth_path(canonical: &str) -> bool {
    canonical == "/.auth" || canonical.starts_with("/.auth/")
}

/// The answer to a request refused before routing: 400 (host, path) or 405 with `Allow`.
pub fn refuse(state: &AppState, refusal: &Refusal, navigation: bool) -> Response<Body> {
    let (status, code, title) = match refusal {
        Refusal::Method => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
        ),
        Refusal::Host(_) => (StatusCode::BAD_REQUEST, "bad_host", "Bad request"),
        Refusal::Path(_) => (StatusCode::BAD_REQUEST, "ambiguous_path", "Bad request"),
    };
    tracing::info!(reason = %refusal.message(), "request refused");
    let mut r = if navigation {
        html(status, state.pages.message(title, &refusal.message(), None))
    } else {
        json(
            status,
            &serde_json::json!({"error": refusal.message(), "code": code}),
        )
    };
    if status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    }
    r
}

/// The protected path: route → public? → authenticate → allowed? → forward.
async fn protected(
    state: &Arc<AppState>,
    cfg: Arc<Config>,
    req: &mut Request<ClientBody>,
    conn: &ConnInfo,
    view: &RequestView<'_>,
    request_id: &[u8],
) -> Response<Body> {
    // Only answers made here need it (forwarding works it out for its own errors).
    let navigation = |r: &Request<ClientBody>| is_navigation(r.method(), r.headers());
    let decision = match cfg.decide(view) {
        Ok(Some(d)) => d,
        Ok(None) => return handlers::no_route(state, &view.host, navigation(req)),
        Err(a) => return refuse(state, &Refusal::Path(a), navigation(req)),
    };
    let route = decision.route;
    let resp = match authenticate(state, &cfg, req.headers(), Some(&decision)).await {
        Ok(Some(id)) if id.allowed => {
            let caller = Caller {
                identity: Some(&id),
                request_id,
            };
            forward(state, &cfg, route, req, caller, conn, view).await
        }
        Ok(_) if decision.public => {
            let caller = Caller {
                identity: None,
                request_id,
            };
            forward(state, &cfg, route, req, caller, conn, view).await
        }
        Ok(Some(id)) => {
            state.metrics.requests_denied();
            handlers::forbidden(state, id.email(), navigation(req))
        }
        Ok(None) => {
            state.metrics.requests_unauthenticated();
            if navigation(req) {
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                redirect(
                    StatusCode::FOUND,
                    &login_url(&cfg, &format!("{}://{}{pq}", view.scheme, view.authority())),
                )
            } else {
                unauthenticated(&cfg)
            }
        }
        Err(e) if e.is_unavailable() => {
            tracing::error!(error = %e, "session lookup failed: storage unavailable");
            let mut r = html(
                StatusCode::SERVICE_UNAVAILABLE,
                state.pages.message(
                    "Try again soon",
                    "The gateway cannot check your session right now. Try again in a minute.",
                    None,
                ),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::error::STORE_RETRY_AFTER),
            );
            r
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
