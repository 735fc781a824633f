//! Forward-auth: `/.auth/check/nginx` (nginx `auth_request`), `/.auth/check/forward` (Traefik,
//! Caddy) and `/.auth/check` (kept for older set-ups). Each reads the original request from its
//! own header family only, and makes the same decision as the proxy.

use crate::request::ClientBody;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};

use crate::auth::policy::is_navigation;
use crate::auth::session::authenticate;
use crate::config::Config;
use crate::error::AuthError;
use crate::http::response::{login_url, redirect, text, unauthenticated};
use crate::http::ConnInfo;
use crate::request::{canonical_authority, canonicalize, CanonicalPath, RequestView};
use crate::routing;

use super::ctx::{Ctx, Reply};
use super::{forbidden, no_route};

/// Which forward-auth header family an endpoint reads. Each reads only its own: a header of the
/// other family, which a proxy may pass through from the client untouched, is never looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
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
    req: &Request<ClientBody>,
    conn: &ConnInfo,
    view: &RequestView<'_>,
    family: Family,
) -> Result<Original, &'static str> {
    let h = req.headers();
    if !crate::config::is_trusted(&cfg.trusted_proxies, conn.peer.ip()) {
        if family != Family::Legacy {
            return Err("the asking peer is not in trusted_proxies");
        }
        return Ok(Original {
            method: "GET".into(),
            host: view.host.to_string(),
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
    let path = canonicalize(pq.path()).into_owned();
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
/// 401 otherwise, 403 when signed in but not allowed. Anything unparsable fails closed (401).
impl Ctx<'_> {
    /// Forward-auth (nginx `auth_request` at `/.auth/check/nginx`; Traefik `forwardAuth` and Caddy
    /// `forward_auth` at `/.auth/check/forward`; `/.auth/check` as `forward`): makes the same
    /// decision as the proxy for the original request. 200 with identity headers when allowed,
    /// 302 to the login page for a browser navigation (not for nginx, which handles 401 itself),
    /// 401 otherwise, 403 when signed in but not allowed. Anything unparsable fails closed (401).
    pub(super) async fn check(
        &self,
        req: &Request<ClientBody>,
        conn: &ConnInfo,
        view: &RequestView<'_>,
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
                    if let Ok(v) = HeaderValue::from_str(id.email()) {
                        r.headers_mut().insert(name.clone(), v);
                    }
                }
                if let Some((name, value)) = self.state.assertion(self.cfg, id.email(), &orig.host)
                {
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
            Some(id) => Ok(forbidden(self.state, id.email(), false)),
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
}
