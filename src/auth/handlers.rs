//! The `/.auth/` endpoints: HTML sign-in pages, the JSON API, forward-auth check and health.

use std::sync::Arc;

use cookie::{Cookie, SameSite};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use minijinja::context;
use serde::Deserialize;

use crate::auth::account;
use crate::auth::challenge::{self, Requester};
use crate::auth::policy::{after_form, is_navigation, safe_redirect, same_origin};
use crate::auth::regulation;
use crate::auth::session::{self, authenticate};
use crate::config::Config;
use crate::crypto;
use crate::error::AuthError;
use crate::http::extract::{form, query, read_body};
use crate::http::response::{html, json, origin_only_referrer, redirect, set_cookie, text, Body};
use crate::http::response::{login_url, unauthenticated};
use crate::http::{client_ip, ConnInfo};
use crate::request::{canonical_authority, canonicalize, CanonicalPath, RequestView};
use crate::routing;
use crate::state::AppState;
use crate::store::Challenge;

type Reply = Result<Response<Body>, AuthError>;

/// Every `/.auth/` path this gateway answers (for 405 vs 404).
const KNOWN: [&str; 22] = [
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
    req: Request<Incoming>,
    conn: &ConnInfo,
    view: &RequestView,
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
        // Liveness: the process answers. It does not claim the storage works (readyz does).
        (&Method::GET | &Method::HEAD, "/.auth/healthz") if state.store.writable() => {
            Ok(text(StatusCode::OK, "ok\n"))
        }
        (&Method::GET | &Method::HEAD, "/.auth/healthz") => Ok(text(
            StatusCode::OK,
            "alive; storage cannot write (retrying)\n",
        )),
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
        (&Method::GET | &Method::HEAD, "/.auth/login") => h.login_page(&req),
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

/// Which forward-auth header family an endpoint reads. Each reads only its own: a header of the
/// other family, which a proxy may pass through from the client untouched, is never looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `/.auth/check/nginx`: `X-Original-URL` and `X-Original-Method` (nginx `auth_request`).
    Nginx,
    /// `/.auth/check/forward`: `X-Forwarded-Method/-Proto/-Host/-Uri` (Traefik, Caddy).
    Forward,
    /// `/.auth/check` (kept for existing set-ups): the `X-Forwarded-*` family only.
    Legacy,
}

/// The request a forward-auth check is about, canonicalised like a proxied request.
struct Original {
    method: String,
    /// Canonical host without port.
    host: String,
    path: CanonicalPath<'static>,
    /// Absolute URL, for the login redirect.
    url: String,
    /// Asked by nginx `auth_request`: answer 401/403, never 302 or 400.
    nginx: bool,
    /// Read from a trusted proxy's headers. Otherwise the check is about the asker's own host
    /// and `/`, and nothing is public.
    trusted: bool,
}

/// Exactly one value of a header, as text: `Ok(None)` when absent, `Err` when repeated or not ASCII.
fn single<'h>(h: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, &'static str> {
    let mut all = h.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err("a forward-auth header is repeated");
    }
    first
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| "a forward-auth header is not ASCII")
        })
        .transpose()
}

fn method_of(v: Option<&str>) -> Result<String, &'static str> {
    match v {
        None => Ok("GET".into()),
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(m.to_ascii_uppercase())
        }
        Some(_) => Err("the original method is not a method"),
    }
}

/// Splits an absolute `http(s)://authority/path?query` without normalising anything (the `url`
/// crate would resolve dot segments and hide what the upstream will see).
fn split_url(url: &str) -> Result<(&'static str, &str, &str), &'static str> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("https", r)
    } else {
        return Err("X-Original-URL is not an absolute http(s) URL");
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, pq) = rest.split_at(end);
    if pq.starts_with('#') || pq.contains('#') {
        return Err("X-Original-URL has a fragment");
    }
    Ok((scheme, authority, pq))
}

/// Reads the original request of a forward-auth check from the headers of `family`, only from
/// trusted proxies. `Err` (a reason for the log) fails closed.
fn original_request(
    cfg: &Config,
    req: &Request<Incoming>,
    conn: &ConnInfo,
    view: &RequestView,
    family: Family,
) -> Result<Original, &'static str> {
    let h = req.headers();
    if !crate::config::is_trusted(&cfg.trusted_proxies, conn.peer.ip()) {
        if family != Family::Legacy {
            return Err("the asking peer is not in trusted_proxies");
        }
        return Ok(Original {
            method: "GET".into(),
            host: view.host.clone(),
            path: canonicalize("/"),
            url: format!("{}://{}/", view.scheme, view.authority()),
            nginx: false,
            trusted: false,
        });
    }
    let (method, scheme, authority, pq) = match family {
        Family::Nginx => {
            let url = single(h, "x-original-url")?.ok_or("no X-Original-URL")?;
            let (scheme, authority, pq) = split_url(url)?;
            let method = method_of(single(h, "x-original-method")?)?;
            (method, scheme, authority.to_string(), pq.to_string())
        }
        Family::Forward | Family::Legacy => {
            // Caddy and Traefik always send the whole family: anything missing fails closed.
            let uri = single(h, "x-forwarded-uri")?.ok_or("no X-Forwarded-Uri")?;
            if uri.is_empty() {
                return Err("empty X-Forwarded-Uri");
            }
            let authority = single(h, "x-forwarded-host")?
                .ok_or("no X-Forwarded-Host")?
                .to_string();
            let scheme = match single(h, "x-forwarded-proto")? {
                None => view.scheme,
                Some(p) if p.eq_ignore_ascii_case("https") => "https",
                Some(p) if p.eq_ignore_ascii_case("http") => "http",
                Some(_) => return Err("X-Forwarded-Proto is not http or https"),
            };
            let method = method_of(single(h, "x-forwarded-method")?)?;
            (method, scheme, authority, uri.to_string())
        }
    };
    let a = canonical_authority(&authority).map_err(|e| e.0)?;
    let pq: http::uri::PathAndQuery = if pq.is_empty() {
        http::uri::PathAndQuery::from_static("/")
    } else {
        pq.parse()
            .map_err(|_| "the original path is not a URI path")?
    };
    if !pq.path().starts_with('/') {
        return Err("the original path does not start with /");
    }
    let c = canonicalize(pq.path());
    let path = CanonicalPath {
        primary: std::borrow::Cow::Owned(c.primary.into_owned()),
        alternates: c.alternates,
        ambiguity: c.ambiguity,
    };
    let host = a.host.into_owned();
    let url = match a.port {
        Some(p) => format!("{scheme}://{host}:{p}{pq}"),
        None => format!("{scheme}://{host}{pq}"),
    };
    Ok(Original {
        method,
        host,
        path,
        url,
        nginx: family == Family::Nginx,
        trusted: true,
    })
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

/// The mail transport's health, probed at most every [`MAIL_PROBE_EVERY`] per mailer (a reload
/// makes a new mailer, which is probed afresh); cached between probes.
async fn mail_health(state: &AppState) -> bool {
    type Probes = Vec<(usize, std::time::Instant, bool)>;
    static LAST: std::sync::Mutex<Probes> = std::sync::Mutex::new(Vec::new());
    let mailer = state.mailer.load_full();
    let key = Arc::as_ptr(&mailer) as usize;
    let cached = {
        let g = LAST.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, at, ok)| (*at, *ok))
    };
    if let Some((at, ok)) = cached {
        if at.elapsed() < MAIL_PROBE_EVERY {
            return ok;
        }
    }
    let remember = |ok: bool| {
        let mut g = LAST.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|(k, _, _)| *k != key);
        if g.len() >= 16 {
            g.remove(0);
        }
        g.push((key, std::time::Instant::now(), ok));
    };
    // Claim the slot before dialling, so concurrent readyz calls do not all dial.
    remember(cached.is_none_or(|(_, ok)| ok));
    let ok = mailer.healthy().await;
    remember(ok);
    ok
}

const MAIL_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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

struct Ctx<'a> {
    state: &'a Arc<AppState>,
    cfg: &'a Config,
    who: &'a Requester,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(body).map_err(|e| {
        AuthError::BadRequest(
            "invalid_json",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

/// The browser-binding cookie's name.
fn binding_name(cfg: &Config) -> String {
    format!("{}_login", cfg.session.cookie_name)
}

fn binding_cookie(cfg: &Config, value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build((binding_name(cfg), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/.auth/")
        .secure(cfg.secure_cookies())
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// Reads the binding cookie: (challenge id, secret).
fn binding(cfg: &Config, headers: &HeaderMap) -> Option<(String, String)> {
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
fn bound_to(headers: &HeaderMap, cfg: &Config, c: &Challenge) -> bool {
    match (binding(cfg, headers), c.binding_hash) {
        (Some((id, secret)), Some(h)) => {
            id == c.id && crypto::ct_eq(&crypto::sha256(secret.as_bytes()), &h)
        }
        _ => false,
    }
}

#[derive(Deserialize)]
struct ApiLogin {
    email: String,
    #[serde(default)]
    redirect_to: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
struct ApiResend {
    challenge_id: String,
}

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
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if same_origin(self.cfg, headers) {
            Ok(())
        } else {
            tracing::warn!(ip = %self.who.ip, "cross-origin form post refused");
            Err(AuthError::CrossOrigin)
        }
    }

    /// The public keys upstreams verify `headers.jwt` assertions with (RFC 7517).
    fn jwks(&self) -> Response<Body> {
        let mut r = text(StatusCode::OK, self.state.jwt.load().jwks.clone());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        r
    }

    /// Readiness: `200` while the store accepts writes, else `503`. It shows no counts and
    /// nothing that changes with the outbox (a sign-in followed by a readyz must not tell whether
    /// that address may sign in); the mail transport's health is shown but does not fail
    /// readiness (mail waits in the outbox), and is probed at most every 10 seconds so the
    /// endpoint cannot be used to make the gateway dial SMTP. Counts are on the metrics listener.
    async fn readyz(&self) -> Reply {
        let store_ok = self.state.store.check().await.is_ok();
        let mail_ok = mail_health(self.state).await;
        let status = if store_ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Ok(json(
            status,
            &serde_json::json!({"store": store_ok, "mail": mail_ok}),
        ))
    }

    fn login_page(&self, req: &Request<Incoming>) -> Reply {
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

    async fn login_submit(&self, req: Request<Incoming>) -> Reply {
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

    async fn code_submit(&self, req: Request<Incoming>) -> Reply {
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

    async fn resend_submit(&self, req: Request<Incoming>) -> Reply {
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
    async fn verify_page(&self, req: &Request<Incoming>) -> Reply {
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

    async fn verify_submit(&self, req: Request<Incoming>) -> Reply {
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
    fn continue_page(&self, req: &Request<Incoming>) -> Response<Body> {
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
    /// of its own for that address, which requests from elsewhere cannot spend.
    fn known_browser_cookie(&self, email: &str) -> Cookie<'static> {
        self.who
            .known
            .after_sign_in(&self.state.secret, self.cfg, email)
    }

    /// Creates the session for a completed challenge (fresh token, flushed to disk).
    async fn sign_in(&self, c: &Challenge) -> Result<(String, crate::store::Session), AuthError> {
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

    async fn logout(&self, req: Request<Incoming>) -> Reply {
        self.check_origin(req.headers())?;
        self.revoke_presented(req.headers()).await?;
        let mut r = redirect(StatusCode::SEE_OTHER, "/.auth/login");
        set_cookie(&mut r, &session::removal_cookie(self.cfg));
        Ok(r)
    }

    async fn revoke_presented(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if let Some(id) = authenticate(self.state, self.cfg, headers, None).await? {
            self.state.store.remove_session(&id.token_hash).await?;
            self.state.store.flush().await?;
            self.state
                .audit(
                    "logout",
                    &id.email,
                    &self.who.ip,
                    &format!("session {}", id.session.id),
                )
                .await;
        }
        Ok(())
    }

    /// Forward-auth (nginx `auth_request` at `/.auth/check/nginx`; Traefik `forwardAuth` and Caddy
    /// `forward_auth` at `/.auth/check/forward`; `/.auth/check` as `forward`): makes the same
    /// decision as the proxy for the original request. 200 with identity headers when allowed,
    /// 302 to the login page for a browser navigation (not for nginx, which handles 401 itself),
    /// 401 otherwise, 403 when signed in but not allowed. Anything unparsable fails closed (401).
    async fn check(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        view: &RequestView,
        family: Family,
    ) -> Reply {
        let orig = match original_request(self.cfg, req, conn, view, family) {
            Ok(o) => o,
            Err(why) => {
                tracing::warn!(ip = %self.who.ip, reason = why, endpoint = ?family, "forward-auth: cannot read the original request; denying");
                return Err(AuthError::Unauthenticated);
            }
        };
        let decision = match routing::decide(
            &self.cfg.routes,
            &orig.host,
            &orig.path,
            self.cfg.ambiguous_paths,
        ) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(no_route(self.state, &orig.host, false)),
            Err(a) => {
                let why = crate::request::Refusal::Path(a).message();
                tracing::info!(ip = %self.who.ip, reason = %why, "forward-auth: ambiguous path refused");
                // nginx turns anything but 401/403 into a 500: give it the 403.
                return Err(if orig.nginx {
                    AuthError::Forbidden(why)
                } else {
                    AuthError::BadRequest("ambiguous_path", why)
                });
            }
        };
        let public = decision.public && orig.trusted;
        let id = authenticate(self.state, self.cfg, req.headers(), Some(&decision)).await?;
        match id {
            Some(id) if id.allowed => {
                let mut r = text(StatusCode::OK, "");
                for name in [&self.cfg.headers.email, &self.cfg.headers.user] {
                    if let Ok(v) = HeaderValue::from_str(&id.email) {
                        r.headers_mut().insert(name.clone(), v);
                    }
                }
                if let Some((name, value)) = self.state.assertion(self.cfg, &id.email, &orig.host) {
                    r.headers_mut().insert(name, value);
                }
                Ok(r)
            }
            // Public: the identity headers are present and empty, so a proxy that copies them
            // (Caddy's `copy_headers` leaves its placeholder in place of a missing header)
            // sends the app an empty value, never a stale or placeholder one.
            _ if public => {
                let mut r = text(StatusCode::OK, "");
                let mut names = vec![&self.cfg.headers.email, &self.cfg.headers.user];
                names.extend(self.cfg.headers.jwt.as_ref());
                for name in names {
                    r.headers_mut()
                        .insert(name.clone(), HeaderValue::from_static(""));
                }
                Ok(r)
            }
            Some(id) => Ok(forbidden(self.state, &id.email, false)),
            None => {
                let login = login_url(self.cfg, &orig.url);
                let navigation = orig.method == "GET" && is_navigation(&Method::GET, req.headers());
                if !navigation {
                    return Ok(unauthenticated(self.cfg));
                }
                // Caddy and Traefik pass the 302 on; nginx's auth_request only takes 401 and
                // builds the redirect from this Location (see docs/forward-auth/nginx.conf).
                let mut r = if orig.nginx {
                    unauthenticated(self.cfg)
                } else {
                    redirect(StatusCode::FOUND, &login)
                };
                if let Ok(v) = HeaderValue::from_str(&login) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                Ok(r)
            }
        }
    }

    async fn api_body<T: serde::de::DeserializeOwned>(
        &self,
        req: Request<Incoming>,
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

    async fn api_login(&self, req: Request<Incoming>) -> Reply {
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

    async fn api_resend(&self, req: Request<Incoming>) -> Reply {
        let b: ApiResend = self.api_body(req).await?;
        let c = challenge::resend(self.state, self.cfg, &b.challenge_id, self.who).await?;
        Ok(self.challenge_json(&c))
    }

    async fn api_challenge(&self, id: &str) -> Reply {
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

    async fn api_verify(&self, req: Request<Incoming>) -> Reply {
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

    async fn api_session(&self, req: &Request<Incoming>, view: &RequestView) -> Reply {
        let decision = self.cfg.decide_for(&view.host, &canonicalize("/"));
        match authenticate(self.state, self.cfg, req.headers(), decision.as_ref()).await? {
            Some(id) if id.allowed => Ok(json(
                StatusCode::OK,
                &serde_json::json!({"email": id.email, "expires_at": id.session.expires_at}),
            )),
            Some(id) => Err(AuthError::NotAllowed(id.email)),
            None => Err(AuthError::Unauthenticated),
        }
    }

    async fn api_logout(&self, req: Request<Incoming>) -> Reply {
        if !is_json(req.headers()) && !same_origin(self.cfg, req.headers()) {
            return Err(AuthError::CrossOrigin);
        }
        self.revoke_presented(req.headers()).await?;
        let mut r = json(StatusCode::OK, &serde_json::json!({"signed_out": true}));
        set_cookie(&mut r, &session::removal_cookie(self.cfg));
        Ok(r)
    }
}
