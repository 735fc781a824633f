//! The canonical view of a request, made once and used for every decision and for what is forwarded.
//!
//! ```text
//! raw request ──RequestView::of──▶ host (canonical, port split off) ─┐
//!                                  path (readings, ambiguity)        ├─▶ routing::decide ─▶ policy, JWT aud, forward
//!                                  scheme (from the connection)     ─┘
//! ```
//! Refusals (RFC 9112 §3.2: a missing or repeated `Host`, an absolute-form or HTTP/2 authority
//! that disagrees with it, a host that is not a host name) are `400`; `CONNECT` and `TRACE` are
//! `405`. Nothing here does I/O or knows about configuration.

pub mod body;
pub mod host;
pub mod path;
pub mod streamed;

use std::borrow::Cow;

use http::{header, HeaderMap, HeaderValue, Method, Request, Uri, Version};

pub use body::{take_request, ClientBody};
pub use host::{canonical_authority, Authority, BadHost};
pub use path::{canonicalize, Ambiguity, CanonicalPath};

/// Why a request is refused before any routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the host is missing, repeated, malformed, or disagrees with the request target.
    Host(&'static str),
    /// 400: the path reads differently on common servers (and the config refuses such paths).
    Path(Ambiguity),
    /// 405: `CONNECT` and `TRACE` are never proxied.
    Method,
}

impl Refusal {
    /// A sentence for the client (no internals).
    pub fn message(&self) -> String {
        match self {
            Refusal::Host(why) => format!("The request's host is not acceptable: {why}."),
            Refusal::Path(a) => format!(
                "The request path contains {}, which servers read differently; it was refused.",
                a.describe()
            ),
            Refusal::Method => "This method is not allowed through the gateway.".into(),
        }
    }
}

/// Methods the gateway forwards (`Allow` of its 405): everything but `CONNECT` and `TRACE`.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A request's first `Host` field, and whether it has another (a request with two is refused).
pub fn host_fields(headers: &HeaderMap) -> (Option<&HeaderValue>, bool) {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    (first, hosts.next().is_some())
}

/// One request as every decision sees it. Borrows the request's `Host` value and target when
/// they already are canonical (the common case: no allocation per request); [`Self::into_owned`]
/// for a view kept beyond them.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    /// Canonical host without port; empty only for an HTTP/1.0 request without `Host`.
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
    /// `https` when the client connection is TLS.
    pub scheme: &'static str,
    pub path: CanonicalPath<'a>,
}

impl<'a> RequestView<'a> {
    /// Builds the view of `req`, or the reason it must be refused. The path's ambiguity is
    /// recorded, not refused here: whether it is refused depends on the configuration.
    pub fn of<B>(req: &'a Request<B>, tls: bool) -> Result<RequestView<'a>, Refusal> {
        let (first, more) = host_fields(req.headers());
        Self::of_parts(req.method(), req.version(), req.uri(), first, more, tls)
    }

    /// [`Self::of`] from the parts it reads: the method, the version, the target, the first
    /// `Host` value and whether there was another. The view borrows only `uri` and `host_header`
    /// (so a caller holding cheap clones of them may still change the request).
    pub fn of_parts(
        method: &Method,
        version: Version,
        uri: &'a Uri,
        host_header: Option<&'a HeaderValue>,
        more_than_one_host: bool,
        tls: bool,
    ) -> Result<RequestView<'a>, Refusal> {
        if method == Method::CONNECT || method == Method::TRACE {
            return Err(Refusal::Method);
        }
        if more_than_one_host {
            return Err(Refusal::Host("more than one Host header"));
        }
        let from_header = match host_header {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .ok_or(Refusal::Host("non-ASCII Host header"))
                    .and_then(|s| canonical_authority(s.trim()).map_err(|e| Refusal::Host(e.0)))?,
            ),
            None => None,
        };
        let scheme = if tls { "https" } else { "http" };
        let from_target = match uri.authority() {
            Some(a) => Some(canonical_authority(a.as_str()).map_err(|e| Refusal::Host(e.0))?),
            None => None,
        };
        let authority = match (from_header, from_target) {
            (Some(h), Some(t)) => {
                let target_scheme = uri.scheme_str().unwrap_or(scheme);
                if h.host != t.host
                    || effective_port(h.port, scheme) != effective_port(t.port, target_scheme)
                {
                    return Err(Refusal::Host(
                        "the request target's authority and the Host header disagree",
                    ));
                }
                Some(h)
            }
            (h, t) => h.or(t),
        };
        let (host, port) = match authority {
            Some(a) => (a.host, a.port),
            None if version <= Version::HTTP_10 => (Cow::Borrowed(""), None),
            None => return Err(Refusal::Host("no Host header")),
        };
        let path = canonicalize(uri.path());
        Ok(RequestView {
            host,
            port,
            scheme,
            path,
        })
    }

    /// The same view owning its strings (kept with an upgraded connection, for instance).
    pub fn into_owned(self) -> RequestView<'static> {
        RequestView {
            host: Cow::Owned(self.host.into_owned()),
            port: self.port,
            scheme: self.scheme,
            path: self.path.into_owned(),
        }
    }

    /// `host[:port]` as the client addressed it, canonical.
    pub fn authority(&self) -> String {
        let mut s = String::with_capacity(self.host.len() + 6);
        s.push_str(&self.host);
        if let Some(p) = self.port {
            use std::fmt::Write;
            let _ = write!(s, ":{p}");
        }
        s
    }
}

fn effective_port(port: Option<u16>, scheme: &str) -> u16 {
    port.unwrap_or(if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(target);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn host_rules() {
        let r = req("/x", &["App.Example.com.:8080"]);
        let v = RequestView::of(&r, false).unwrap();
        assert_eq!((&*v.host, v.port), ("app.example.com", Some(8080)));
        assert!(RequestView::of(&req("/x", &["a.com", "b.com"]), false).is_err());
        assert!(RequestView::of(&req("/x", &["a.com", "a.com"]), false).is_err());
        assert!(RequestView::of(&req("/x", &[]), false).is_err());
        assert!(RequestView::of(&req("http://a.com/x", &["b.com"]), false).is_err());
        assert!(RequestView::of(&req("http://a.com/x", &["A.com.:80"]), false).is_ok());
        assert!(RequestView::of(&req("http://a.com:81/x", &["a.com"]), false).is_err());
        let r = req("http://a.com/x", &[]);
        let v = RequestView::of(&r, false).unwrap();
        assert_eq!(v.host, "a.com");
        // Already canonical: borrowed from the request, nothing allocated; owned on request.
        let r = req("/a/b", &["a.com"]);
        let v = RequestView::of(&r, false).unwrap();
        assert!(matches!(v.host, std::borrow::Cow::Borrowed("a.com")));
        assert!(matches!(v.path.primary, std::borrow::Cow::Borrowed("/a/b")));
        let owned: RequestView<'static> = v.clone().into_owned();
        assert_eq!(
            (&*owned.host, &*owned.path.primary),
            (&*v.host, &*v.path.primary)
        );
    }

    #[test]
    fn methods() {
        for m in [Method::CONNECT, Method::TRACE] {
            let r = Request::builder()
                .method(m)
                .uri("/")
                .header("host", "a.com")
                .body(())
                .unwrap();
            assert_eq!(RequestView::of(&r, false).unwrap_err(), Refusal::Method);
        }
    }
}
