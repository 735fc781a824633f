//! Synthetic responses of the gateway itself (pages, JSON, redirects) and the shared body type.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::config::Config;
use crate::http::pages::Page;

/// A response body: either produced here or streamed from the upstream.
pub type Body = Either<Full<Bytes>, crate::proxy::upstream::UpstreamBody>;

/// Takes an upstream answer's fields out of its body (see [`crate::proxy::wire::RawFields`]):
/// the gateway's own HTTP/1 loop writes them as they are.
pub fn take_raw_fields(body: &mut Body) -> Option<crate::proxy::wire::RawFields> {
    match body {
        Either::Right(Either::Right(w)) => w.take_fields(),
        _ => None,
    }
}

/// Moves an upstream answer's fields still held by its body into the response's header map:
/// what every way out except the own HTTP/1 loop needs (hyper's HTTP/1 and HTTP/2 servers), and
/// what the gateway's checks on answer fields read.
pub fn settle_fields(resp: &mut Response<Body>) {
    if let Some(raw) = take_raw_fields(resp.body_mut()) {
        raw.append_to(resp.headers_mut());
    }
}

/// Wraps bytes as a body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(b.into()))
}

/// An empty body.
pub fn empty() -> Body {
    Either::Left(Full::new(Bytes::new()))
}

fn base(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// An HTML page of the gateway: no caching, no framing, the page's own `Content-Security-Policy`
/// (inline style; scripts only by hash, see [`crate::http::pages`]), and
/// `Referrer-Policy: same-origin`: other sites learn nothing from its links, while the browser
/// sends a real `Origin` with the page's own form posts. (Under `no-referrer` browsers post
/// `Origin: null`, and on plain http they send no `Sec-Fetch-Site` either: the same-origin check
/// would have nothing to accept.)
pub fn html(status: StatusCode, page: impl Into<Page>) -> Response<Body> {
    let page = page.into();
    let mut r = base(status, "text/html; charset=utf-8", full(page.html));
    let h = r.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp);
    r
}

/// For a page whose URL holds a secret (`/.auth/verify?token=`): `Referer` never carries more
/// than the origin, to anyone, while its form still posts with a real `Origin`.
pub fn origin_only_referrer(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin"),
    );
    r
}

/// A JSON body.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = base(
        status,
        "application/json",
        full(serde_json::to_vec(value).unwrap_or_default()),
    );
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Plain text (health checks, metrics).
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    base(status, "text/plain; charset=utf-8", full(body))
}

/// A redirect (302 for protected traffic, 303 after a POST). Falls back to `/` if `location` is not a header value.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = base(status, "text/plain; charset=utf-8", empty());
    let v = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    r.headers_mut().insert(header::LOCATION, v);
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Appends a `Set-Cookie` header.
pub fn set_cookie(r: &mut Response<Body>, cookie: &cookie::Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// `{public_url}/.auth/login?rd=<original URL>`.
pub fn login_url(cfg: &Config, original: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
    cfg.public_link(&format!("/.auth/login?rd={rd}"))
}

/// 401 JSON for API clients.
pub fn unauthenticated(cfg: &Config) -> Response<Body> {
    let mut r = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "sign in first", "code": "unauthenticated"}),
    );
    if let Ok(v) = format!("Portcullis realm=\"{}\"", cfg.public_origin()).parse() {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
