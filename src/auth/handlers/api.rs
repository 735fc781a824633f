//! The JSON API: `/.auth/api/login`, `resend`, `challenge/{id}`, `verify`, `session`, `logout`.

use crate::request::ClientBody;
use http::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::auth::challenge;
use crate::auth::policy::same_origin;
use crate::auth::session::{self, authenticate};
use crate::error::AuthError;
use crate::http::extract::read_body;
use crate::http::response::{json, set_cookie, Body};
use crate::request::{canonicalize, RequestView};
use crate::store::Challenge;

use super::ctx::{is_json, parse_json, Ctx, Reply};

/// `POST /.auth/api/login`.
#[derive(Deserialize)]
struct ApiLogin {
    email: String,
    #[serde(default)]
    redirect_to: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

/// `POST /.auth/api/resend`.
#[derive(Deserialize)]
struct ApiResend {
    challenge_id: String,
}

/// `POST /.auth/api/verify`: a code for a challenge, or a link token.
#[derive(Deserialize)]
struct ApiVerify {
    #[serde(default)]
    challenge_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    link_token: Option<String>,
    #[serde(default)]
    issue_token: bool,
}

impl Ctx<'_> {
    async fn api_body<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<ClientBody>,
    ) -> Result<T, AuthError> {
        if !is_json(req.headers()) {
            return Err(AuthError::UnsupportedMediaType);
        }
        let (_, body) = read_body(req, &self.cfg.limits).await?;
        parse_json(&body)
    }

    fn challenge_json(&self, c: &Challenge) -> Response<Body> {
        let now = self.state.clock.now();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "challenge_id": c.id,
                "expires_at": c.expires_at,
                "expires_in": c.expires_at.saturating_sub(now),
                "method": self.cfg.login.method_name(),
            }),
        )
    }

    pub(super) async fn api_login(&self, req: Request<ClientBody>) -> Reply {
        let b: ApiLogin = self.api_body(req).await?;
        let issued = challenge::start(
            self.state,
            self.cfg,
            &b.email,
            b.redirect_to.as_deref().unwrap_or(""),
            b.state,
            self.who,
        )
        .await?;
        Ok(self.challenge_json(&issued.challenge))
    }

    pub(super) async fn api_resend(&self, req: Request<ClientBody>) -> Reply {
        let b: ApiResend = self.api_body(req).await?;
        let c = challenge::resend(self.state, self.cfg, &b.challenge_id, self.who).await?;
        Ok(self.challenge_json(&c))
    }

    pub(super) async fn api_challenge(&self, id: &str) -> Reply {
        let c = self
            .state
            .store
            .challenge(id)
            .await?
            .ok_or(AuthError::UnknownChallenge)?;
        let now = self.state.clock.now();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"challenge_id": c.id, "expired": c.expires_at <= now, "completed": c.completed}),
        ))
    }

    pub(super) async fn api_verify(&self, req: Request<ClientBody>) -> Reply {
        let b: ApiVerify = self.api_body(req).await?;
        let done = match (&b.challenge_id, &b.code, &b.link_token) {
            (Some(id), Some(code), None) => {
                challenge::redeem_code(self.state, self.cfg, id, code, &self.who.ip).await?
            }
            (None, None, Some(token)) => {
                challenge::redeem_link(self.state, self.cfg, token).await?
            }
            _ => {
                return Err(AuthError::BadRequest(
                    "invalid_request",
                    "send either {challenge_id, code} or {link_token}".into(),
                ))
            }
        };
        let (token, s) = self.sign_in(&done).await?;
        let mut body = serde_json::json!({
            "email": s.email,
            "state": done.state,
            "redirect_to": done.redirect_to,
            "expires_at": s.expires_at,
        });
        if b.issue_token {
            body["session_token"] = serde_json::Value::String(token.clone());
        }
        let mut r = json(StatusCode::OK, &body);
        set_cookie(&mut r, &session::cookie(self.cfg, &token));
        set_cookie(&mut r, &self.known_browser_cookie(&done.email));
        Ok(r)
    }

    pub(super) async fn api_session(
        &self,
        req: &Request<ClientBody>,
        view: &RequestView<'_>,
    ) -> Reply {
        let decision = self.cfg.decide_for(&view.host, &canonicalize("/"));
        match authenticate(self.state, self.cfg, req.headers(), decision.as_ref()).await? {
            Some(id) if id.allowed => Ok(json(
                StatusCode::OK,
                &serde_json::json!({"email": id.email(), "expires_at": id.session.expires_at}),
            )),
            Some(id) => Err(AuthError::NotAllowed(id.email().to_string())),
            None => Err(AuthError::Unauthenticated),
        }
    }

    pub(super) async fn api_logout(&self, req: Request<ClientBody>) -> Reply {
        if !is_json(req.headers()) && !same_origin(self.cfg, req.headers()) {
            return Err(AuthError::CrossOrigin);
        }
        self.revoke_presented(req.headers()).await?;
        let mut r = json(StatusCode::OK, &serde_json::json!({"signed_out": true}));
        set_cookie(&mut r, &session::removal_cookie(self.cfg));
        Ok(r)
    }
}
