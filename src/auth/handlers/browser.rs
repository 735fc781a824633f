//! The HTML sign-in flow: the login form, "check your email" with the code form and resend, the
//! mailed link (confirm page or immediate sign-in), the cross-host continue page, and logout.
//!
//! Every form post answers `303` to a page that can be reloaded safely (POST-redirect-GET): a
//! reload never starts a sign-in, spends an attempt or sends a mail. The pages read the state of
//! the sign-in this browser is bound to (binding cookie) from the store, and what the post had to
//! say from a one-shot signed cookie ([`crate::auth::flash`]).

use crate::request::ClientBody;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use minijinja::context;

use crate::auth::challenge::{self, Liveness};
use crate::auth::flash::{self, Flash, Tone};
use crate::auth::policy::{after_form, safe_redirect};
use crate::auth::session::{self, authenticate};
use crate::error::{AuthError, WayOn};
use crate::http::extract::{form, query, read_body};
use crate::http::response::{html, redirect, set_cookie, Body};
use crate::store::Challenge;

use super::ctx::{binding, binding_cookie, bound_to, Ctx, Reply};

/// Where every sign-in form post lands: the state of this browser's sign-in.
const CHECK_EMAIL: &str = "/.auth/check-email";

/// `?rd=…` for a login URL (empty when there is no target).
fn rd_query(rd: &str) -> String {
    if rd.is_empty() {
        String::new()
    } else {
        let enc: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        format!("?rd={enc}")
    }
}

impl Ctx<'_> {
    /// A `303` to `location` carrying `flash` to the page there.
    fn see_other(&self, location: &str, flash: Option<&Flash>) -> Response<Body> {
        let mut r = redirect(StatusCode::SEE_OTHER, location);
        if let Some(f) = flash {
            set_cookie(&mut r, &flash::cookie(self.cfg, &self.state.secret, f));
        }
        r
    }

    /// The message of the post before this page, if any; the answer clears it.
    fn take_flash(&self, headers: &HeaderMap) -> Option<Flash> {
        flash::read(self.cfg, &self.state.secret, headers)
    }

    /// Clears a read flash from the answer (a reload shows the page without it).
    fn cleared(&self, mut r: Response<Body>, had: bool) -> Response<Body> {
        if had {
            set_cookie(&mut r, &flash::removal(self.cfg));
        }
        r
    }

    /// `GET /.auth/login?rd=[&email=]`: the email form, or, for a browser that is signed in,
    /// who it is signed in as, with "Continue" and "Use another account".
    pub(super) async fn login_page(&self, req: &Request<ClientBody>) -> Reply {
        let mut q = query(req);
        let rd = q.remove("rd").unwrap_or_default();
        let flash = self.take_flash(req.headers());
        if let Some(id) = authenticate(self.state, self.cfg, req.headers(), None).await? {
            let target = safe_redirect(self.cfg, &rd);
            let host = url::Url::parse(&target)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let page = self.state.pages.render(
                "signed_in.html",
                context! { title => "Signed in", email => id.email(), target => &target, host => host, rd => &rd },
            );
            return Ok(self.cleared(html(StatusCode::OK, page), flash.is_some()));
        }
        let (error, notice) = match &flash {
            Some(f) if f.tone == Tone::Error => (Some(f.text.clone()), None),
            Some(f) => (None, Some(f.text.clone())),
            None => (None, None),
        };
        let email: String = flash
            .as_ref()
            .and_then(|f| f.email.clone())
            .or_else(|| q.remove("email"))
            .unwrap_or_default()
            .chars()
            .take(254)
            .collect();
        let page = self.state.pages.render(
            "login.html",
            context! {
                title => "Sign in", rd => rd, email => email, error => error, notice => notice,
                code => self.cfg.login.code, hint => &self.cfg.login.hint,
            },
        );
        Ok(self.cleared(html(StatusCode::OK, page), flash.is_some()))
    }

    /// `POST /.auth/login`: starts a sign-in and binds this browser to it; `303` to the
    /// check-email page. A refused address or a rate limit goes back to the form with the message
    /// and the address typed.
    pub(super) async fn login_submit(&self, req: Request<ClientBody>) -> Reply {
        self.check_origin(req.headers())?;
        let (_, body) = read_body(req, &self.cfg.limits).await?;
        let f = form(&body);
        let email = f.get("email").map(String::as_str).unwrap_or("");
        let rd = f.get("rd").map(String::as_str).unwrap_or("");
        match challenge::start(self.state, self.cfg, email, rd, None, self.who).await {
            Ok(issued) => {
                let mut r = self.see_other(CHECK_EMAIL, None);
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
                let flash = Flash::error(e.code(), e.to_string()).with_email(email);
                let r = self.see_other(&format!("/.auth/login{}", rd_query(rd)), Some(&flash));
                Ok(with_retry_after(r, &e))
            }
            Err(e) => Err(e),
        }
    }

    /// The challenge this browser is bound to (binding cookie), if any.
    async fn bound(&self, headers: &HeaderMap) -> Result<Option<Challenge>, AuthError> {
        let Some((id, _)) = binding(self.cfg, headers) else {
            return Ok(None);
        };
        let Some(c) = self.state.store.challenge(&id).await? else {
            return Ok(None);
        };
        Ok(bound_to(headers, self.cfg, &c).then_some(c))
    }

    /// The challenge this browser is bound to, or a page telling the user to start again.
    async fn bound_challenge(&self, headers: &HeaderMap) -> Result<Challenge, AuthError> {
        self.bound(headers).await?.ok_or(AuthError::NoSignIn)
    }

    /// What an error page may offer for the sign-in `c` (the address, the target, a resend).
    fn way_on(&self, c: &Challenge) -> WayOn {
        let now = self.state.clock.now();
        WayOn {
            email: Some(c.email.clone()),
            rd: Some(c.redirect_to.clone()),
            resend: challenge::liveness(self.cfg, c, now) == Liveness::Expired,
        }
    }

    /// `GET /.auth/check-email`: the sign-in this browser is bound to, as it stands: the code
    /// form and resend while it is live (with the message of the post before, if any), its own
    /// page once it is locked, used or expired. Reads only; a reload changes nothing.
    pub(super) async fn check_email_page(&self, req: &Request<ClientBody>) -> Reply {
        let flash = self.take_flash(req.headers());
        let had = flash.is_some();
        let Some(c) = self.bound(req.headers()).await? else {
            // A link confirmed in a browser without a sign-in of its own lands here too.
            let e = flash
                .as_ref()
                .and_then(|f| f.code.as_deref())
                .and_then(terminal)
                .unwrap_or(AuthError::NoSignIn);
            return Ok(self.cleared(e.to_page(self.state), had));
        };
        let now = self.state.clock.now();
        let state = challenge::liveness(self.cfg, &c, now);
        if let Some(e) = state.error() {
            return Ok(self.cleared(e.page_with(self.state, &self.way_on(&c)), had));
        }
        let (error, notice) = match &flash {
            Some(f) if f.tone == Tone::Error => (Some(f.text.clone()), None),
            Some(f) => (None, Some(f.text.clone())),
            None => (None, None),
        };
        let rd: String = url::form_urlencoded::byte_serialize(c.redirect_to.as_bytes()).collect();
        let cooldown = self.cfg.login.resend_cooldown.as_secs();
        let resend_wait = cooldown.saturating_sub(now.saturating_sub(c.last_sent_at));
        let max = self.cfg.login.max_code_attempts;
        let attempts_left =
            (c.attempts > 0).then(|| crate::error::attempts(max.saturating_sub(c.attempts)));
        let page = self.state.pages.render(
            "check_email.html",
            context! {
                title => "Check your email",
                email => &c.email,
                link => self.cfg.login.link,
                code => self.cfg.login.code,
                code_length => self.cfg.login.code_length,
                ttl_minutes => c.expires_at.saturating_sub(now).div_ceil(60),
                resend_wait => resend_wait,
                attempts_left => attempts_left,
                hint => &self.cfg.login.hint,
                rd_param => rd,
                error => error,
                notice => notice,
            },
        );
        Ok(self.cleared(html(StatusCode::OK, page), had))
    }

    /// `POST /.auth/code`: signs in with the right code; anything else goes back to the
    /// check-email page with what was wrong (a malformed code costs no attempt).
    pub(super) async fn code_submit(&self, req: Request<ClientBody>) -> Reply {
        self.check_origin(req.headers())?;
        let (headers, body) = read_body(req, &self.cfg.limits).await?;
        let c = self.bound_challenge(&headers).await?;
        let code = form(&body).remove("code").unwrap_or_default();
        match challenge::redeem_code(self.state, self.cfg, &c.id, &code, &self.who.ip).await {
            Ok(done) => self.finish_html(&done, true, true).await,
            Err(e @ (AuthError::WrongCode(_) | AuthError::MalformedCode(_))) => {
                Ok(self.see_other(CHECK_EMAIL, Some(&Flash::error(e.code(), e.to_string()))))
            }
            // The page shows the state itself (locked, used, expired).
            Err(AuthError::Locked | AuthError::AlreadyUsed | AuthError::Expired) => {
                Ok(self.see_other(CHECK_EMAIL, None))
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /.auth/resend`: a new mail for this browser's sign-in; `303` to the check-email page.
    pub(super) async fn resend_submit(&self, req: Request<ClientBody>) -> Reply {
        self.check_origin(req.headers())?;
        let (headers, _) = read_body(req, &self.cfg.limits).await?;
        let c = self.bound_challenge(&headers).await?;
        match challenge::resend(self.state, self.cfg, &c.id, self.who).await {
            Ok(_) => Ok(self.see_other(
                CHECK_EMAIL,
                Some(&Flash::notice(
                    "A new mail is on its way. The previous link and code no longer work.",
                )),
            )),
            Err(
                e @ (AuthError::ResendCooldown(_) | AuthError::RateLimited(_) | AuthError::Busy(_)),
            ) => {
                let r = self.see_other(CHECK_EMAIL, Some(&Flash::error(e.code(), e.to_string())));
                Ok(with_retry_after(r, &e))
            }
            Err(AuthError::Locked | AuthError::AlreadyUsed | AuthError::Expired) => {
                Ok(self.see_other(CHECK_EMAIL, None))
            }
            Err(e) => Err(e),
        }
    }

    /// Opening a mailed link. Never spends the token (scanners prefetch links), unless this is
    /// the browser that asked for it (binding cookie), which signs in at once.
    pub(super) async fn verify_page(&self, req: &Request<ClientBody>) -> Reply {
        let token = query(req).remove("token").unwrap_or_default();
        let c = match challenge::peek_link(self.state, self.cfg, &token).await {
            Ok(c) => c,
            Err(e) => return Ok(self.link_error(e, req.headers()).await),
        };
        self.state.metrics.links_opened();
        if req.method() == Method::GET && bound_to(req.headers(), self.cfg, &c) {
            let done = challenge::redeem_link(self.state, self.cfg, &token).await?;
            return self.finish_html(&done, true, false).await;
        }
        let host = self.cfg.public_url.host_str().unwrap_or("this site");
        let page = self.state.pages.render(
            "confirm.html",
            context! { title => "Confirm sign-in", email => &c.email, token => token, host => host },
        );
        Ok(html(StatusCode::OK, page))
    }

    /// The page for a link that cannot sign in (used, expired, locked, replaced), with the way on
    /// of this browser's own sign-in when it has one.
    async fn link_error(&self, e: AuthError, headers: &HeaderMap) -> Response<Body> {
        if terminal(e.code()).is_none() {
            return e.to_page(self.state);
        }
        match self.bound(headers).await {
            Ok(Some(c)) => e.page_with(self.state, &self.way_on(&c)),
            _ => e.to_page(self.state),
        }
    }

    /// `POST /.auth/verify` (the confirm page's button): spends the token and signs in; a link
    /// that cannot sign in goes to the check-email page, which says why.
    pub(super) async fn verify_submit(&self, req: Request<ClientBody>) -> Reply {
        self.check_origin(req.headers())?;
        let (_, body) = read_body(req, &self.cfg.limits).await?;
        let token = form(&body).remove("token").unwrap_or_default();
        match challenge::redeem_link(self.state, self.cfg, &token).await {
            Ok(done) => self.finish_html(&done, true, true).await,
            Err(e) if terminal(e.code()).is_some() => {
                Ok(self.see_other(CHECK_EMAIL, Some(&Flash::error(e.code(), e.to_string()))))
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /.auth/continue?to=`: where a sign-in form's answer goes when the target is on
    /// another origin (see [`after_form`]). A page, not a redirect, so the browser leaves by a
    /// navigation of its own (refresh, or the link), which the form page's `form-action` does
    /// not govern. The target is validated again; anything else leads to the public root.
    pub(super) fn continue_page(&self, req: &Request<ClientBody>) -> Response<Body> {
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

    /// `GET /.auth/logout`: a page with a "Sign out" button (apps can link to it; signing out
    /// takes the button's POST, so a link or an image cannot sign anyone out).
    pub(super) async fn logout_page(&self, req: &Request<ClientBody>) -> Reply {
        let id = authenticate(self.state, self.cfg, req.headers(), None).await?;
        let page = self.state.pages.render(
            "logout.html",
            context! { title => "Sign out", email => id.as_ref().map(|i| i.email()) },
        );
        Ok(html(StatusCode::OK, page))
    }

    /// `POST /.auth/logout`: ends the session; `303` to the login page, which says so (and keeps
    /// the `rd` of "Use another account").
    pub(super) async fn logout(&self, req: Request<ClientBody>) -> Reply {
        self.check_origin(req.headers())?;
        let (headers, body) = read_body(req, &self.cfg.limits).await?;
        self.revoke_presented(&headers).await?;
        let rd = form(&body).remove("rd").unwrap_or_default();
        let mut r = self.see_other(
            &format!("/.auth/login{}", rd_query(&rd)),
            Some(&Flash::notice("You are signed out.")),
        );
        set_cookie(&mut r, &session::removal_cookie(self.cfg));
        Ok(r)
    }
}

/// A refusal's `Retry-After` on the `303` that reports it (for scripts; the page says it in words).
fn with_retry_after(mut r: Response<Body>, e: &AuthError) -> Response<Body> {
    if let AuthError::ResendCooldown(s) | AuthError::RateLimited(s) | AuthError::Busy(s) = e {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(*s));
    }
    r
}

/// The errors that end a sign-in for good, which get a page of their own, from their code.
fn terminal(code: &str) -> Option<AuthError> {
    Some(match code {
        "locked" => AuthError::Locked,
        "already_used" => AuthError::AlreadyUsed,
        "expired" => AuthError::Expired,
        "invalid_link" => AuthError::InvalidLink,
        _ => return None,
    })
}
