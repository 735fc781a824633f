//! Sessions: reading the cookie or bearer token, validating it against the store and `access`, issuing and revoking.

use std::sync::Arc;

use cookie::{Cookie, SameSite};
use http::{header, HeaderMap};

use crate::config::Config;
use crate::crypto;
use crate::routing::Decision;
use crate::state::AppState;
use crate::store::{Session, StoreError};

/// Granularity of `last_seen` tracking: activity is recorded at most once a minute per session.
const TOUCH_EVERY: u64 = 60;

/// Where the presented session token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cookie,
    Bearer,
}

/// A request's verified identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub token_hash: [u8; 32],
    pub via: Via,
    /// Shared with the store's cache.
    pub session: Arc<Session>,
    /// False when `access` no longer allows the email: the caller answers 403.
    pub allowed: bool,
}

impl Identity {
    /// The signed-in address (canonical), read from the shared session record: no copy.
    pub fn email(&self) -> &str {
        &self.session.email
    }
}

/// The session tokens a request presents: bearer first, then every cookie with our name.
/// At most four are tried (no allocation: a fixed array).
pub fn presented_tokens<'a>(
    cookie_name: &str,
    headers: &'a HeaderMap,
) -> impl Iterator<Item = (&'a str, Via)> {
    let mut out: [Option<(&'a str, Via)>; 4] = [None; 4];
    let mut n = 0;
    let mut push = |t: (&'a str, Via)| {
        if let Some(slot) = out.get_mut(n) {
            *slot = Some(t);
            n += 1;
        }
    };
    for v in headers.get_all(header::AUTHORIZATION) {
        if let Ok(s) = v.to_str() {
            if let Some((scheme, token)) = s.split_once(' ') {
                if scheme.eq_ignore_ascii_case("bearer") {
                    push((token.trim(), Via::Bearer));
                }
            }
        }
    }
    for v in headers.get_all(header::COOKIE) {
        // Visible ASCII, space and tab only (as `to_str` checks): only space and tab are trimmed.
        if let Ok(s) = v.to_str() {
            for pair in s.split(';') {
                if let Some((name, value)) = pair.trim_ascii().split_once('=') {
                    if name == cookie_name {
                        push((value.trim_matches('"'), Via::Cookie));
                    }
                }
            }
        }
    }
    out.into_iter().flatten()
}

/// Looks up the request's session. `Ok(None)` when there is no valid one.
/// Reads the store (through its short session cache) and, at most once a minute per session,
/// records activity in memory.
/// `decision` decides the idle timeout and who is allowed; without one the global policy applies.
pub async fn authenticate(
    state: &AppState,
    cfg: &Config,
    headers: &HeaderMap,
    decision: Option<&Decision<'_>>,
) -> Result<Option<Identity>, StoreError> {
    let idle_timeout = decision.map_or(cfg.session.idle_timeout, |d| d.idle_timeout());
    let now = state.clock.now();
    for (token, via) in presented_tokens(&cfg.session.cookie_name, headers) {
        if !crypto::looks_like_token(token) {
            continue;
        }
        let hash = crypto::sha256(token.as_bytes());
        let Some(session) = state.store.session(&hash).await? else {
            continue;
        };
        if session.expires_at <= now {
            continue;
        }
        let mut seen = session.last_seen;
        if let Some(idle) = idle_timeout {
            if seen.saturating_add(idle.as_secs()) < now {
                seen = seen.max(state.store.pending_touch(&hash).unwrap_or(0));
                if seen.saturating_add(idle.as_secs()) < now {
                    continue;
                }
            }
        }
        if seen + TOUCH_EVERY <= now {
            state.store.touch_session(&hash, now);
        }
        let allowed = match decision {
            Some(d) => d.allows(&session.email),
            None => cfg.may_sign_in(&session.email),
        };
        return Ok(Some(Identity {
            token_hash: hash,
            via,
            session,
            allowed,
        }));
    }
    Ok(None)
}

/// Creates a fresh session (new random token: no fixation) and returns its token.
pub async fn create(
    state: &AppState,
    cfg: &Config,
    email: &str,
    ip: &str,
    user_agent: &str,
) -> Result<(String, Session), StoreError> {
    let now = state.clock.now();
    let token = crypto::random_token();
    let hash = crypto::sha256(token.as_bytes());
    let session = Session {
        id: hex_prefix(&hash),
        email: email.to_string(),
        created_at: now,
        expires_at: now.saturating_add(cfg.session.ttl.as_secs()),
        last_seen: now,
        ip: ip.to_string(),
        user_agent: user_agent.chars().take(256).collect(),
    };
    state.store.insert_session(&hash, &session).await?;
    Ok((token, session))
}

/// The first 12 hex digits of a token hash: a public handle for a session.
pub fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The session cookie: HttpOnly, SameSite=Lax, Path=/, Secure on https, Domain when configured.
pub fn cookie(cfg: &Config, token: &str) -> Cookie<'static> {
    let mut c = Cookie::build((cfg.session.cookie_name.clone(), token.to_string()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(cfg.secure_cookies())
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(cfg.session.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        ))
        .build();
    if let Some(d) = &cfg.session.cookie_domain {
        c.set_domain(d.clone());
    }
    c
}

/// A cookie that deletes the session cookie.
pub fn removal_cookie(cfg: &Config) -> Cookie<'static> {
    let mut c = cookie(cfg, "");
    c.make_removal();
    c
}
