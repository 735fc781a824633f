//! The HTML sign-in flow: the login form, "check your email" with the code form and resend, the
//! mailed link (confirm page or immediate sign-in), the cross-host continue page, and logout.

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use minijinja::context;

use crate::auth::challenge;
use crate::auth::policy::{after_form, safe_redirect};
use crate::auth::session;
use crate::error::AuthError;
use crate::http::extract::{form, query, read_body};
use crate::http::response::{html, redirect, set_cookie, Body};
use crate::store::Challenge;

use super::ctx::{binding, binding_cookie, bound_to, Ctx, Reply};

impl Ctx<'_> {
    pub(super) fn login_page(&self, req: &Request<Incoming>) -> Reply {
        let rd = query(req).remove("rd").unwrap_or_default();
        Ok(self.render_login(StatusCode::OK, &rd, "", None))
    }

    fn render_login(
        &self,
        status: StatusCode,
        rd: &str,
        email: &str,
        error: Option<String>,
    ) -> Response<Body> {
        let page = self.state.pages.render(
            "login.html",
            context! { title => "Sign in", rd => rd, email => email, error => error, code => self.cfg.login.code },
        );
        html(status, page)
    }

    fn render_check(
        &self,
        status: StatusCode,
        c: &Challenge,
        error: Option<String>,
        notice: Option<&str>,
    ) -> Response<Body> {
        let now = self.state.clock.now();
        let rd: String = url::form_urlencoded::byte_serialize(c.redirect_to.as_bytes()).collect();
        let page = self.state.pages.render(
            "check_email.html",
            context! {
                title => "Check your email",
                email => &c.email,
                link => self.cfg.login.link,
                code => self.cfg.login.code,
                code_length => self.cfg.login.code_length,
                ttl_minutes => c.expires_at.saturating_sub(now).div_ceil(60),
                cooldown => self.cfg.login.resend_cooldown.as_secs(),
                rd_param => rd,
                error => error,
                notice => notice,
            },
        );
        html(status, page)
    }

    pub(super) async fn login_submit(&self, req: Request<Incoming>) -> Reply {
        self.check_origin(req.headers())?;
        let (_, body) = read_body(req, &self.cfg.limits).await?;
        let f = form(&body);
        let email = f.get("email").map(String::as_str).unwrap_or("");
        let rd = f.get("rd").map(String::as_str).unwrap_or("");
        match challenge::start(self.state, self.cfg, email, rd, None, self.who).await {
            Ok(issued) => {
                let mut r = self.render_check(StatusCode::OK, &issued.challenge, None, None);
                let value = format!("{}.{}", issued.challenge.id, issued.binding);
                set_cookie(
                    &mut r,
                    &binding_cookie(self.cfg, value, self.cfg.login.ttl.as_secs() as i64 + 3600),
                );
                Ok(r)
            }
            Err(
                e @ (AuthError::InvalidEmail(_)
                | AuthError::RateLimited(_)
                | AuthError::Busy(_)
                | AuthError::BadRequest(..)),
            ) => {
                let email_shown: String = email.chars().take(254).collect();
                let mut r = self.render_login(e.status(), rd, &email_shown, Some(e.to_string()));
                if let AuthError::RateLimited(s) | AuthError::Busy(s) = e {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                Ok(r)
            }
            Err(e) => Err(e),
        }
    }

    /// The challenge this browser is bound to, or a page telling the user to start again.
    async fn bound_challenge(&self, headers: &HeaderMap) -> Result<Challenge, AuthError> {
        let (id, _) = binding(self.cfg, headers).ok_or_else(|| {
            AuthError::BadRequest(
                "no_challenge",
                "this browser has no sign-in in progress (or cookies are blocked); start again"
                    .into(),
            )
        })?;
        let c = self
            .state
            .store
            .challenge(&id)
            .await?
            .ok_or(AuthError::UnknownChallenge)?;
        if !bound_to(headers, self.cfg, &c) {
            return Err(AuthError::BadRequest(
                "no_challenge",
                "this sign-in was started in another browser; start again".into(),
            ));
        }
        Ok(c)
    }

    pub(super) async fn code_submit(&self, req: Request<Incoming>) -> Reply {
        self.check_origin(req.headers())?;
        let (headers, body) = read_body(req, &self.cfg.limits).await?;
        let c = self.bound_challenge(&headers).await?;
        let code = form(&body).remove("code").unwrap_or_default();
        match challenge::redeem_code(self.state, self.cfg, &c.id, &code, &self.who.ip).await {
            Ok(done) => self.finish_html(&done, true, true).await,
            Err(e @ AuthError::WrongCode(_)) => {
                Ok(self.render_check(e.status(), &c, Some(e.to_string()), None))
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn resend_submit(&self, req: Request<Incoming>) -> Reply {
        self.check_origin(req.headers())?;
        let (headers, _) = read_body(req, &self.cfg.limits).await?;
        let c = self.bound_challenge(&headers).await?;
        match challenge::resend(self.state, self.cfg, &c.id, self.who).await {
            Ok(c) => Ok(self.render_check(
                StatusCode::OK,
                &c,
                None,
                Some("A new mail is on its way; the previous link and code no longer work."),
            )),
            Err(
                e @ (AuthError::ResendCooldown(_) | AuthError::RateLimited(_) | AuthError::Busy(_)),
            ) => {
                let mut r = self.render_check(e.status(), &c, Some(e.to_string()), None);
                if let AuthError::ResendCooldown(s)
                | AuthError::RateLimited(s)
                | AuthError::Busy(s) = e
                {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                Ok(r)
            }
            Err(e) => Err(e),
        }
    }

    /// Opening a mailed link. Never spends the token (scanners prefetch links), unless this is
    /// the browser that asked for it (binding cookie), which signs in at once.
    pub(super) async fn verify_page(&self, req: &Request<Incoming>) -> Reply {
        let token = query(req).remove("token").unwrap_or_default();
        let c = challenge::peek_link(self.state, self.cfg, &token).await?;
        self.state.metrics.links_opened();
        if req.method() == Method::GET && bound_to(req.headers(), self.cfg, &c) {
            let done = challenge::redeem_link(self.state, self.cfg, &token).await?;
            return self.finish_html(&done, true, false).await;
        }
        let site = self.cfg.public_url.host_str().unwrap_or("this site");
        let page = self.state.pages.render(
            "confirm.html",
            context! { title => "Confirm sign-in", email => &c.email, token => token, host => site },
        );
        Ok(html(StatusCode::OK, page))
    }

    pub(super) async fn verify_submit(&self, req: Request<Incoming>) -> Reply {
        self.check_origin(req.headers())?;
        let (_, body) = read_body(req, &self.cfg.limits).await?;
        let token = form(&body).remove("token").unwrap_or_default();
        let done = challenge::redeem_link(self.state, self.cfg, &token).await?;
        self.finish_html(&done, true, true).await
    }

    /// `GET /.auth/continue?to=`: where a sign-in form's answer goes when the target is on
    /// another origin (see [`after_form`]). A page, not a redirect, so the browser leaves by a
    /// navigation of its own (refresh, or the link), which the form page's `form-action` does
    /// not govern. The target is validated again; anything else leads to the public root.
    pub(super) fn continue_page(&self, req: &Request<Incoming>) -> Response<Body> {
        let target = safe_redirect(self.cfg, &query(req).remove("to").unwrap_or_default());
        let host = url::Url::parse(&target)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let page = self.state.pages.render(
            "continue.html",
            context! { title => "Signed in", target => &target, host => host },
        );
        html(StatusCode::OK, page)
    }

    /// The known-browser cookie after a sign-in as `email`: this browser gets a sign-in budget
    /// Signs in and sends the browser to the challenge's (validated) redirect target; the answer
    /// to a form goes there through `/.auth/continue` when the target is on another origin.
    async fn finish_html(&self, c: &Challenge, clear_binding: bool, from_form: bool) -> Reply {
        let (token, _) = self.sign_in(c).await?;
        let location = if from_form {
            after_form(self.cfg, &c.redirect_to)
        } else {
            c.redirect_to.clone()
        };
        let mut r = redirect(StatusCode::SEE_OTHER, &location);
        set_cookie(&mut r, &session::cookie(self.cfg, &token));
        set_cookie(&mut r, &self.known_browser_cookie(&c.email));
        if clear_binding {
            let mut b = binding_cookie(self.cfg, String::new(), 0);
            b.make_removal();
            set_cookie(&mut r, &b);
        }
        Ok(r)
    }

    pub(super) async fn logout(&self, req: Request<Incoming>) -> Reply {
        self.check_origin(req.headers())?;
        self.revoke_presented(req.headers()).await?;
        let mut r = redirect(StatusCode::SEE_OTHER, "/.auth/login");
        set_cookie(&mut r, &session::removal_cookie(self.cfg));
        Ok(r)
    }
}
