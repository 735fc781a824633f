//! Sessions users and admins can see: `/.auth/sessions` (your own, sign out one or all) and `/.auth/admin`.

use std::sync::Arc;

use crate::request::ClientBody;
use http::{Request, Response, StatusCode};
use minijinja::context;
use serde::Serialize;

use crate::auth::address::parse_address;
use crate::auth::challenge::Requester;
use crate::auth::flash::{self, Flash};
use crate::auth::policy::same_origin;
use crate::auth::session::{authenticate, removal_cookie, Identity};
use crate::config::Config;
use crate::error::AuthError;
use crate::http::extract::{form, query_param, read_body};
use crate::http::response::login_url;
use crate::http::response::{html, redirect, set_cookie, Body};
use crate::state::AppState;
use crate::store::Session;

type Reply = Result<Response<Body>, AuthError>;

/// Most sessions the admin page lists (newest first).
const ADMIN_LIST: usize = 500;

/// A session as the pages show it.
#[derive(Serialize)]
struct Row {
    id: String,
    email: String,
    device: String,
    ip: String,
    created: String,
    last_seen: String,
    current: bool,
}

use crate::clock::format_unix as time;

pub use crate::auth::device::device;

fn row(s: &Session, current: bool) -> Row {
    Row {
        id: s.id.clone(),
        email: s.email.clone(),
        device: device(&s.user_agent),
        ip: s.ip.clone(),
        created: time(s.created_at),
        last_seen: time(s.last_seen),
        current,
    }
}

/// The signed-in identity, or a redirect to the login page that comes back to `back`.
async fn signed_in(
    state: &AppState,
    cfg: &Config,
    req: &Request<ClientBody>,
    back: &str,
) -> Result<Identity, Box<Response<Body>>> {
    match authenticate(state, cfg, req.headers(), None).await {
        Ok(Some(id)) if id.allowed => Ok(id),
        Ok(_) => Err(Box::new(redirect(
            StatusCode::SEE_OTHER,
            &login_url(cfg, &cfg.public_link(back)),
        ))),
        Err(e) => Err(Box::new(AuthError::from(e).to_page(state))),
    }
}

/// `GET /.auth/sessions`.
pub async fn sessions_page(
    state: &Arc<AppState>,
    cfg: &Config,
    req: &Request<ClientBody>,
) -> Reply {
    let id = match signed_in(state, cfg, req, "/.auth/sessions").await {
        Ok(id) => id,
        Err(r) => return Ok(*r),
    };
    let rows: Vec<Row> = state
        .store
        .sessions_for(id.email())
        .await?
        .iter()
        .map(|(hash, s)| row(s, *hash == id.token_hash))
        .collect();
    let page = state.pages.render(
        "sessions.html",
        context! { title => "Your sessions", email => id.email(), sessions => rows, wide => true },
    );
    Ok(html(StatusCode::OK, page))
}

/// `POST /.auth/sessions/revoke` with `id` = a session's public id, or `all`.
pub async fn revoke_own(
    state: &Arc<AppState>,
    cfg: &Config,
    req: Request<ClientBody>,
    who: &Requester,
) -> Reply {
    if !same_origin(cfg, req.headers()) {
        return Err(AuthError::CrossOrigin);
    }
    let id = match signed_in(state, cfg, &req, "/.auth/sessions").await {
        Ok(id) => id,
        Err(r) => return Ok(*r),
    };
    let (_, body) = read_body(req, &cfg.limits).await?;
    let target = form(&body).remove("id").unwrap_or_default();
    let mut revoked_current = false;
    let mut n = 0;
    for (hash, s) in state.store.sessions_for(id.email()).await? {
        if target == "all" || s.id == target {
            state.store.remove_session(&hash).await?;
            revoked_current |= hash == id.token_hash;
            n += 1;
        }
    }
    state.store.flush().await?;
    state
        .audit(
            "revoke",
            id.email(),
            &who.ip,
            &format!("{n} session(s) by their owner ({target})"),
        )
        .await;
    if revoked_current {
        let mut r = redirect(StatusCode::SEE_OTHER, "/.auth/login");
        set_cookie(&mut r, &removal_cookie(cfg));
        let signed_out = if target == "all" {
            "You are signed out on every device."
        } else {
            "You are signed out."
        };
        set_cookie(
            &mut r,
            &flash::cookie(cfg, &state.secret, &Flash::notice(signed_out)),
        );
        return Ok(r);
    }
    Ok(redirect(StatusCode::SEE_OTHER, "/.auth/sessions"))
}

async fn admin(
    state: &AppState,
    cfg: &Config,
    req: &Request<ClientBody>,
) -> Result<Identity, Box<Response<Body>>> {
    let id = signed_in(state, cfg, req, "/.auth/admin").await?;
    if cfg.admins.contains(id.email()) {
        Ok(id)
    } else {
        Err(Box::new(
            AuthError::NotAdmin(id.email().to_string()).to_page(state),
        ))
    }
}

/// `GET /.auth/admin`: every session, revoke by user, recent security events.
pub async fn admin_page(state: &Arc<AppState>, cfg: &Config, req: &Request<ClientBody>) -> Reply {
    let id = match admin(state, cfg, req).await {
        Ok(id) => id,
        Err(r) => return Ok(*r),
    };
    let mut all: Vec<Session> = state
        .store
        .sessions()
        .await?
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let total = all.len();
    all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    all.truncate(ADMIN_LIST);
    let rows: Vec<Row> = all.iter().map(|s| row(s, false)).collect();
    let events: Vec<serde_json::Value> = state
        .store
        .recent_events()
        .await?
        .iter()
        .rev()
        .map(|e| serde_json::json!({"at": time(e.at), "event": e.event, "email": e.email, "ip": e.ip, "detail": e.detail}))
        .collect();
    let notice = query_param(req, "revoked").map(|n| format!("Revoked {n} session(s)."));
    let page = state.pages.render(
        "admin.html",
        context! {
            title => "Administration", email => id.email(), sessions => rows, total => total,
            shown => ADMIN_LIST, truncated => total > ADMIN_LIST, events => events, notice => notice, wide => true,
        },
    );
    Ok(html(StatusCode::OK, page))
}

/// `POST /.auth/admin/revoke` with `email`: signs that user out everywhere.
pub async fn admin_revoke(
    state: &Arc<AppState>,
    cfg: &Config,
    req: Request<ClientBody>,
    who: &Requester,
) -> Reply {
    if !same_origin(cfg, req.headers()) {
        return Err(AuthError::CrossOrigin);
    }
    let id = match admin(state, cfg, &req).await {
        Ok(id) => id,
        Err(r) => return Ok(*r),
    };
    let (_, body) = read_body(req, &cfg.limits).await?;
    let email = parse_address(&form(&body).remove("email").unwrap_or_default())?;
    let n = state.store.remove_sessions_for(email.canonical()).await?;
    state.store.flush().await?;
    state
        .audit(
            "revoke",
            email.canonical(),
            &who.ip,
            &format!("{n} session(s) by admin {}", id.email()),
        )
        .await;
    Ok(redirect(
        StatusCode::SEE_OTHER,
        &format!("/.auth/admin?revoked={n}"),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn devices() {
        assert_eq!(
            super::device("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            "Firefox on Linux"
        );
        assert_eq!(super::device("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15"), "Safari on macOS");
        assert_eq!(super::device("curl/8.0"), "curl");
        assert_eq!(super::device(""), "Unknown browser");
    }
}
