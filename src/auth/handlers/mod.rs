//! The `/.auth/` endpoints: one router that sends each request to the file doing its job (the HTML
//! sign-in flow, the JSON API, forward-auth, health) and renders its error the way its caller
//! expects (page or JSON). The challenge logic they share lives below them, in
//! [`crate::auth::challenge`]; what the endpoints share with each other is in [`ctx`].

mod api;
mod browser;
mod ctx;
mod forward_auth;
mod ops;

use std::sync::Arc;

use crate::request::ClientBody;
use http::{header, Method, Request, Response, StatusCode};

use crate::auth::account;
use crate::auth::challenge::Requester;
use crate::auth::regulation;
use crate::config::Config;
use crate::error::AuthError;
use crate::http::response::{html, json, origin_only_referrer, redirect, Body};
use crate::http::{client_ip, ConnInfo};
use crate::request::{canonical_authority, RequestView};
use crate::state::AppState;

use ctx::Ctx;
use forward_auth::Family;

/// Every `/.auth/` path this gateway answers (for 405 vs 404).
const KNOWN: [&str; 23] = [
    "/.auth/check-email",
    "/.auth/continue",
    "/.auth/sessions",
    "/.auth/sessions/revoke",
    "/.auth/admin",
    "/.auth/admin/revoke",
    "/.auth/jwks.json",
    "/.auth/healthz",
    "/.auth/login",
    "/.auth/code",
    "/.auth/resend",
    "/.auth/verify",
    "/.auth/logout",
    "/.auth/check",
    "/.auth/check/nginx",
    "/.auth/check/forward",
    "/.auth/api/login",
    "/.auth/api/resend",
    "/.auth/api/verify",
    "/.auth/api/session",
    "/.auth/api/logout",
    "/.auth/api/challenge",
    "/.auth/readyz",
];

/// Routes one `/.auth/` request and renders its error the way its caller expects (page or JSON).
pub async fn dispatch(
    state: &Arc<AppState>,
    req: Request<ClientBody>,
    conn: &ConnInfo,
    view: &RequestView<'_>,
) -> Response<Body> {
    let cfg = state.config();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let wants_json = path.starts_with("/.auth/api/") || path.starts_with("/.auth/check");
    let who = Requester {
        ip: client_ip(&cfg, conn, req.headers()).to_string(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown browser")
            .chars()
            .take(256)
            .collect(),
        known: regulation::KnownBrowser::from_headers(&cfg, req.headers()),
    };
    let h = Ctx {
        state,
        cfg: &cfg,
        who: &who,
    };
    // The account pages act with the user's whole session (list, revoke, admin): they are served
    // only on the sign-in host, so an app's own scripts, same-origin with `/.auth/` on the app's
    // host, cannot read or drive them.
    if is_account_path(&path) && !on_sign_in_host(&cfg, view) {
        return if method == Method::GET {
            redirect(StatusCode::FOUND, &cfg.public_link(&path))
        } else {
            let e = AuthError::Forbidden(
                "account actions are only accepted on the sign-in host".into(),
            );
            if wants_json {
                e.to_json()
            } else {
                e.to_page(state)
            }
        };
    }
    let result = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/.auth/healthz") => Ok(ops::healthz(state)),
        (&Method::GET | &Method::HEAD, "/.auth/readyz") => h.readyz().await,
        (&Method::GET | &Method::HEAD, "/.auth/jwks.json") => Ok(h.jwks()),
        (&Method::GET, "/.auth/sessions") => account::sessions_page(state, &cfg, &req).await,
        (&Method::POST, "/.auth/sessions/revoke") => {
            account::revoke_own(state, &cfg, req, &who).await
        }
        (&Method::GET, "/.auth/admin") => account::admin_page(state, &cfg, &req).await,
        (&Method::POST, "/.auth/admin/revoke") => {
            account::admin_revoke(state, &cfg, req, &who).await
        }
        (&Method::GET | &Method::HEAD, "/.auth/login") => h.login_page(&req).await,
        (&Method::GET | &Method::HEAD, "/.auth/check-email") => h.check_email_page(&req).await,
        (&Method::GET | &Method::HEAD, "/.auth/logout") => h.logout_page(&req).await,
        (&Method::POST, "/.auth/login") => h.login_submit(req).await,
        (&Method::POST, "/.auth/code") => h.code_submit(req).await,
        (&Method::POST, "/.auth/resend") => h.resend_submit(req).await,
        (&Method::GET | &Method::HEAD, "/.auth/verify") => h.verify_page(&req).await,
        (&Method::POST, "/.auth/verify") => h.verify_submit(req).await,
        (&Method::GET | &Method::HEAD, "/.auth/continue") => Ok(h.continue_page(&req)),
        (&Method::POST, "/.auth/logout") => h.logout(req).await,
        (&Method::GET | &Method::HEAD, "/.auth/check") => {
            h.check(&req, conn, view, Family::Legacy).await
        }
        (&Method::GET | &Method::HEAD, "/.auth/check/nginx") => {
            h.check(&req, conn, view, Family::Nginx).await
        }
        (&Method::GET | &Method::HEAD, "/.auth/check/forward") => {
            h.check(&req, conn, view, Family::Forward).await
        }
        (&Method::POST, "/.auth/api/login") => h.api_login(req).await,
        (&Method::POST, "/.auth/api/resend") => h.api_resend(req).await,
        (&Method::POST, "/.auth/api/verify") => h.api_verify(req).await,
        (&Method::GET, "/.auth/api/session") => h.api_session(&req, view).await,
        (&Method::POST, "/.auth/api/logout") => h.api_logout(req).await,
        (&Method::GET, p) if p.starts_with("/.auth/api/challenge/") => {
            h.api_challenge(&p["/.auth/api/challenge/".len()..]).await
        }
        (_, p) if KNOWN.contains(&p) || p.starts_with("/.auth/api/challenge/") => {
            Err(AuthError::MethodNotAllowed)
        }
        _ => Err(AuthError::NotFound),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) if wants_json => e.to_json(),
        Err(e) => e.to_page(state),
    };
    // The verify URL carries the link token: a Referer from it never holds more than the origin.
    if path == "/.auth/verify" {
        origin_only_referrer(resp)
    } else {
        resp
    }
}

/// 404 for a (canonical) host and path no route serves.
pub fn no_route(state: &AppState, host: &str, navigation: bool) -> Response<Body> {
    let msg = format!("No application is configured for {host}.");
    if navigation {
        html(
            StatusCode::NOT_FOUND,
            state.pages.message("Not found", &msg, None),
        )
    } else {
        json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": msg, "code": "no_route"}),
        )
    }
}

/// `/.auth/sessions…` and `/.auth/admin…`: pages that act with the user's whole session.
fn is_account_path(path: &str) -> bool {
    ["/.auth/sessions", "/.auth/admin"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// Whether the request is addressed to `public_url`'s host (canonical comparison).
fn on_sign_in_host(cfg: &Config, view: &RequestView) -> bool {
    cfg.public_url
        .host_str()
        .and_then(|h| canonical_authority(h).ok())
        .is_some_and(|a| a.host == view.host)
}

/// A 403 for a signed-in user whose address this site does not allow: who they are and how to switch.
pub fn forbidden(state: &AppState, email: &str, navigation: bool) -> Response<Body> {
    if navigation {
        let page = state.pages.message(
            "Access denied",
            &format!("You are signed in as {email}, which may not open this site. Sign out and sign in with another address."),
            Some(("/.auth/login", "Sign in with another address")),
        );
        html(StatusCode::FORBIDDEN, page)
    } else {
        AuthError::NotAllowed(email.to_string()).to_json()
    }
}
