//! What the `/.auth/` endpoints share: the per-request context, the origin check, the
//! browser-binding cookie, and signing in or out once a challenge is settled.

use std::sync::Arc;

use cookie::{Cookie, SameSite};
use http::{header, HeaderMap, Response};

use crate::auth::challenge::Requester;
use crate::auth::policy::same_origin;
use crate::auth::session::{self, authenticate};
use crate::config::Config;
use crate::crypto;
use crate::error::AuthError;
use crate::http::response::Body;
use crate::state::AppState;
use crate::store::Challenge;

/// What every endpoint answers.
pub(super) type Reply = Result<Response<Body>, AuthError>;

/// One request's view of the gateway: shared state, the config snapshot, who is asking.
pub(super) struct Ctx<'a> {
    pub(super) state: &'a Arc<AppState>,
    pub(super) cfg: &'a Config,
    pub(super) who: &'a Requester,
}

/// Whether the request says its body is JSON.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses a JSON API body, or a 400 naming what is wrong.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(body).map_err(|e| {
        AuthError::BadRequest(
            "invalid_json",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

/// The browser-binding cookie's name.
pub(super) fn binding_name(cfg: &Config) -> String {
    format!("{}_login", cfg.session.cookie_name)
}

/// The cookie binding this browser to its challenge (`{id}.{secret}`), only sent to `/.auth/`.
pub(super) fn binding_cookie(cfg: &Config, value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build((binding_name(cfg), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/.auth/")
        .secure(cfg.secure_cookies())
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// Reads the binding cookie: (challenge id, secret).
pub(super) fn binding(cfg: &Config, headers: &HeaderMap) -> Option<(String, String)> {
    let name = binding_name(cfg);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.split_once('.'))
        .map(|(id, secret)| (id.to_string(), secret.to_string()))
}

/// Whether the binding cookie belongs to `c`.
pub(super) fn bound_to(headers: &HeaderMap, cfg: &Config, c: &Challenge) -> bool {
    match (binding(cfg, headers), c.binding_hash) {
        (Some((id, secret)), Some(h)) => {
            id == c.id && crypto::ct_eq(&crypto::sha256(secret.as_bytes()), &h)
        }
        _ => false,
    }
}

impl Ctx<'_> {
    /// Refuses a form post from another site (see [`same_origin`]).
    pub(super) fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if same_origin(self.cfg, headers) {
            Ok(())
        } else {
            tracing::warn!(ip = %self.who.ip, "cross-origin form post refused");
            Err(AuthError::CrossOrigin)
        }
    }

    /// The known-browser cookie after a sign-in as `email`: this browser gets a sign-in budget
    /// of its own for that address, which requests from elsewhere cannot spend.
    pub(super) fn known_browser_cookie(&self, email: &str) -> Cookie<'static> {
        self.who
            .known
            .after_sign_in(&self.state.secret, self.cfg, email)
    }

    /// Creates the session for a completed challenge (fresh token, flushed to disk).
    pub(super) async fn sign_in(
        &self,
        c: &Challenge,
    ) -> Result<(String, crate::store::Session), AuthError> {
        if !self.cfg.may_sign_in(&c.email) {
            return Err(AuthError::NotAllowed(c.email.clone()));
        }
        let (token, s) = session::create(
            self.state,
            self.cfg,
            &c.email,
            &self.who.ip,
            &self.who.user_agent,
        )
        .await?;
        self.state.store.flush().await?;
        self.state.metrics.signins();
        self.state
            .audit(
                "sign_in",
                &c.email,
                &self.who.ip,
                &format!("session {}", s.id),
            )
            .await;
        Ok((token, s))
    }

    /// Deletes the session the request presents (cookie or bearer token), if any.
    pub(super) async fn revoke_presented(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if let Some(id) = authenticate(self.state, self.cfg, headers, None).await? {
            self.state.store.remove_session(&id.token_hash).await?;
            self.state.store.flush().await?;
            self.state
                .audit(
                    "logout",
                    id.email(),
                    &self.who.ip,
                    &format!("session {}", id.session.id),
                )
                .await;
        }
        Ok(())
    }
}
