//! Forwarding an authenticated request to the upstream: header preparation, streaming both ways, upgrades (re-checked against their session and access while open), errors.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;

use crate::request::ClientBody;
use hyper_util::rt::TokioIo;
use minijinja::context;

use crate::auth::policy::is_navigation;
use crate::auth::session::{Identity, Via};
use crate::config::{is_trusted, Config, Upstream};
use crate::http::response::{html, json, Body};
use crate::http::ConnInfo;
use crate::proxy::headers::{drop_our_set_cookies, lists_token, remove_hop_by_hop};
use crate::proxy::outgoing::{self, to_header_map, Outgoing};
use crate::proxy::upstream::{ForwardBody, ForwardError, UpstreamBody};
use crate::proxy::wire;
use crate::request::RequestView;
use crate::routing::Route;
use crate::state::AppState;

/// The `Upgrade` value when the client asks for a protocol switch (`Connection: upgrade`).
fn requested_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if lists_token(req.headers(), &header::CONNECTION, "upgrade") {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Replaces the request's headers with the upstream's (see [`Outgoing::write`]), for hyper's
/// client and the `whoami` page.
fn replace_headers(req: &mut Request<ClientBody>, fields: &Outgoing<'_>) -> Result<(), ()> {
    let mut block = Vec::with_capacity(512);
    fields.write(req.headers(), &mut block);
    *req.headers_mut() = to_header_map(bytes::Bytes::from(block)).ok_or(())?;
    Ok(())
}

/// The upstream did not answer within `limits.upstream_timeout`.
struct TimedOut;

/// Who a request is forwarded for.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The session it was let through with; `None` on public routes and paths.
    pub identity: Option<&'a Identity>,
    /// Its `X-Request-Id` (a trusted proxy's, or made by the gateway), passed upstream.
    pub request_id: &'a [u8],
}

/// Sends the prepared request upstream and streams the answer back.
pub async fn forward(
    state: &Arc<AppState>,
    cfg: &Config,
    route: &Route,
    req: &mut Request<ClientBody>,
    caller: Caller<'_>,
    conn: &ConnInfo,
    view: &RequestView<'_>,
) -> Response<Body> {
    let id = caller.identity;
    // Whether an error answer is an HTML page or JSON: worked out only where one can be made.
    let navigation_of = |r: &Request<ClientBody>| is_navigation(r.method(), r.headers());
    let downstream_version = req.version();
    let downstream_h1 = downstream_version < Version::HTTP_2;
    let upgrade = requested_upgrade(req);
    let identity_names = cfg.identity_headers();
    let assertion = id.and_then(|i| state.assertion(cfg, i.email(), &view.host));
    // What the upstream's headers are made of; written straight into the request the own
    // client sends, or into a header map for hyper's.
    let fields = Outgoing {
        trusted: is_trusted(&cfg.trusted_proxies, conn.peer.ip()),
        identity_names: &identity_names,
        cookie_name: &cfg.session.cookie_name,
        bearer_used: id.is_some_and(|i| i.via == Via::Bearer),
        peer: conn.peer.ip(),
        scheme: view.scheme,
        host: &view.host,
        port: view.port,
        identity: id.map(|i| outgoing::Identity {
            email: i.email(),
            email_header: &cfg.headers.email,
            user_header: &cfg.headers.user,
        }),
        assertion: assertion.as_ref(),
        upgrade: upgrade.as_ref(),
        request_id: Some(caller.request_id),
    };
    let cannot_forward = |navigation| {
        upstream_error(
            StatusCode::BAD_REQUEST,
            "the request target cannot be forwarded",
            navigation,
        )
    };
    let (scheme, authority) = match &route.upstream {
        Upstream::Whoami => {
            if replace_headers(req, &fields).is_err() {
                return cannot_forward(navigation_of(req));
            }
            return whoami(state, req, id);
        }
        Upstream::Http { scheme, authority } => (scheme, authority),
    };
    // HTTP/1 clients send one request at a time per connection: give each its own plain-HTTP
    // upstream connection (no pool lock, no hand-off). HTTP/2 clients and https upstreams use
    // the worker's pooled client.
    let own = scheme == "http" && downstream_h1;
    // The common case, a bodyless request that asks for no upgrade to a plain-http upstream,
    // goes through the gateway's own client in this task: on the downstream connection's own
    // upstream connection (HTTP/1) or one from the worker's pool (HTTP/2). Requests with a body
    // (streamed both ways) go through hyper's.
    let direct = scheme == "http"
        && upgrade.is_none()
        && req.method() != Method::CONNECT
        && req.body().is_end_stream();
    let mut client_upgrade = None;
    let started;
    let navigation;
    let sent = if direct {
        // Origin-form (RFC 9112 §3.2.1); Host is written with the other fields.
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        started = std::time::Instant::now();
        let home = if downstream_h1 {
            wire::Home::Slot(conn.upstream.wire.clone())
        } else {
            wire::Home::Pool(state.wire_pool(conn.worker).clone())
        };
        let client = req.headers();
        // Bounded inside (`limits.upstream_timeout`, on a timer the connection keeps).
        let fill = |out: &mut Vec<u8>| fields.write(client, out);
        let limit = cfg.limits.upstream_timeout;
        let sent = match wire::send(home, authority, req.method(), target, fill, limit).await {
            Ok(mut resp) => {
                // The app's cookies are checked in a header map (below); other answers keep
                // their fields as lines for the own HTTP/1 loop.
                if resp.body().holds_set_cookie() {
                    if let Some(raw) = resp.body_mut().take_fields() {
                        raw.append_to(resp.headers_mut());
                    }
                }
                Ok(Ok(resp.map(UpstreamBody::Right)))
            }
            Err(wire::WireError::TimedOut) => Err(TimedOut),
            Err(e) => Ok(Err(ForwardError::from(e))),
        };
        navigation = !matches!(sent, Ok(Ok(_))) && navigation_of(req);
        sent
    } else {
        // This request is sent with its body (or upgraded) through hyper's client: it goes whole.
        let mut req = crate::request::take_request(req);
        navigation = navigation_of(&req);
        let uri = if own {
            // Origin-form on a direct connection (RFC 9112 §3.2.1); Host is among the fields.
            Ok(Uri::from(
                req.uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            ))
        } else {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Uri::builder()
                .scheme(scheme.as_str())
                .authority(authority.as_str())
                .path_and_query(pq)
                .build()
        };
        let uri = match uri {
            Ok(u) => u,
            Err(_) => return cannot_forward(navigation),
        };
        if replace_headers(&mut req, &fields).is_err() {
            return cannot_forward(navigation);
        }
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let req = match with_first_frame(req, cfg.limits.header_read_timeout).await {
            Ok(r) => r,
            Err(status) => {
                return upstream_error(
                    status,
                    "the request body is malformed or incomplete",
                    navigation,
                )
            }
        };
        started = std::time::Instant::now();
        let method = req.method().clone();
        let exchange = async {
            let mut resp = if own {
                conn.upstream.send(authority, req).await?
            } else {
                state.client(conn.worker).request(req).await?
            };
            let (status, version) = (resp.status(), resp.version());
            wire::vet_answer(resp.headers_mut(), status, version, &method)?;
            Ok::<_, ForwardError>(resp.map(UpstreamBody::Left))
        };
        // Boxed: hyper's client future is KiBs, and inline it would make every request's future
        // that large (each `.await` of a fresh future moves it whole), the direct path's too.
        Box::pin(tokio::time::timeout(cfg.limits.upstream_timeout, exchange))
            .await
            .map_err(|_| TimedOut)
    };
    let mut resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if caused_by_request_body(&e) => {
            tracing::info!(error = %e, "request body failed while streaming upstream");
            return upstream_error(
                StatusCode::BAD_REQUEST,
                "the request body is malformed or incomplete",
                navigation,
            );
        }
        Ok(Err(e)) => {
            state.metrics.upstream_errors();
            tracing::warn!(error = %e, upstream = %authority, "upstream request failed");
            return upstream_error(
                StatusCode::BAD_GATEWAY,
                "the application behind this gateway is not reachable",
                navigation,
            );
        }
        Err(_) => {
            state.metrics.upstream_errors();
            tracing::warn!(upstream = %authority, timeout = ?cfg.limits.upstream_timeout, "upstream timed out");
            return upstream_error(
                StatusCode::GATEWAY_TIMEOUT,
                "the application behind this gateway did not answer in time",
                navigation,
            );
        }
    };
    state.metrics.requests_proxied();
    route.stats.upstream_latency(started.elapsed());
    if resp.headers().contains_key(header::SET_COOKIE) {
        // The session, browser-binding, flash-message and known-browser cookies are the
        // gateway's alone (the last two are signed: an app could only clear them).
        let name = &cfg.session.cookie_name;
        let (binding, flash, known) = (
            format!("{name}_login"),
            format!("{name}_flash"),
            format!("{name}_known"),
        );
        drop_our_set_cookies(resp.headers_mut(), &[name, &binding, &flash, &known]);
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let watch = Watch {
                state: Arc::downgrade(state),
                token_hash: id.map(|i| i.token_hash),
                view: view.clone().into_owned(),
                route: route.name.clone(),
                upstream: route.upstream.clone(),
            };
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((c, u)) => pipe(TokioIo::new(c), TokioIo::new(u), watch).await,
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
    } else {
        remove_hop_by_hop(resp.headers_mut());
    }
    // The client hears the gateway's own protocol version, not the upstream's (RFC 9110 §6.2):
    // an HTTP/1.0 upstream must not turn the client's HTTP/1.1 connection into a 1.0 one.
    *resp.version_mut() = downstream_version;
    resp.map(http_body_util::Either::Right)
}

/// How often an upgraded connection's session and access are checked again.
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What an upgraded connection (WebSocket or any `Upgrade`) was let through on, kept with the
/// pipe so it can be judged again while it is open: the session's token hash (none on a public
/// route) and the request's canonical view, decided afresh with the configuration in force.
struct Watch {
    /// Weak: a stopped gateway's state is not kept alive (nor its database open) by the
    /// connections it let through; they end at their next check.
    state: std::sync::Weak<AppState>,
    token_hash: Option<[u8; 32]>,
    view: RequestView<'static>,
    route: String,
    upstream: Upstream,
}

impl Watch {
    /// `None` while the connection's request would still be let through now; otherwise why not.
    /// Only the store and the current configuration are read, so this holds for any session
    /// store (a shared one sees a revoke made on another replica at its next check).
    async fn verdict(&self) -> Option<&'static str> {
        let Some(state) = self.state.upgrade() else {
            return Some("the gateway stopped");
        };
        let cfg = state.config();
        let decision = match cfg.decide(&self.view) {
            Ok(Some(d)) => d,
            _ => return Some("no route serves it any more"),
        };
        if decision.route.name != self.route
            || !same_upstream(&decision.route.upstream, &self.upstream)
        {
            return Some("its route changed");
        }
        let Some(hash) = &self.token_hash else {
            // Let through without a session: only while that is still allowed.
            return (!decision.public).then_some("its route is no longer public");
        };
        let session = match state.store.session(hash).await {
            Ok(Some(s)) => s,
            Ok(None) => return Some("its session was signed out or revoked"),
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed for an upgraded connection");
                return Some("its session cannot be checked");
            }
        };
        let now = state.clock.now();
        if session.expires_at <= now {
            return Some("its session expired");
        }
        if !decision.allows(&session.email) {
            return Some("access no longer allows its user");
        }
        // An open connection is activity: the idle timeout is not run against it (and the
        // session stays alive for the user's other requests), recorded once a minute at most.
        let seen = session
            .last_seen
            .max(state.store.pending_touch(hash).unwrap_or(0));
        if seen.saturating_add(60) <= now {
            state.store.touch_session(hash, now);
        }
        None
    }

    /// Resolves (with the reason) once the connection may no longer stay open.
    async fn revoked(&self) -> &'static str {
        let mut every = tokio::time::interval(RECHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            if let Some(why) = self.verdict().await {
                return why;
            }
        }
    }
}

fn same_upstream(a: &Upstream, b: &Upstream) -> bool {
    match (a, b) {
        (Upstream::Whoami, Upstream::Whoami) => true,
        (
            Upstream::Http {
                scheme: s1,
                authority: a1,
            },
            Upstream::Http {
                scheme: s2,
                authority: a2,
            },
        ) => s1 == s2 && a1 == a2,
        _ => false,
    }
}

/// Copies both ways between the client and the upstream until either side ends, or until the
/// connection's session or access no longer lets it through: then both sides are shut down.
async fn pipe<C, U>(mut client: C, mut upstream: U, watch: Watch)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let why = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
        why = watch.revoked() => why,
    };
    tracing::info!(
        route = %watch.route,
        host = %watch.view.host,
        reason = why,
        "upgraded connection closed"
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = client.shutdown().await;
        let _ = upstream.shutdown().await;
    })
    .await;
}

/// Reads the first body frame before anything is sent upstream, so a body that is malformed from
/// its first byte (bad chunk size, early EOF) gets a 400 and never reaches the upstream.
async fn with_first_frame(
    req: Request<ClientBody>,
    wait: std::time::Duration,
) -> Result<Request<ForwardBody>, StatusCode> {
    let (parts, mut body) = req.into_parts();
    let first = if body.is_end_stream() {
        None
    } else {
        match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(Ok(f))) => Some(f),
            Ok(None) => None,
            Ok(Some(Err(_))) => return Err(StatusCode::BAD_REQUEST),
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
        }
    };
    Ok(Request::from_parts(parts, ForwardBody::new(first, body)))
}

/// Whether a failed upstream exchange was the client's body's fault (hyper marks those "user" errors).
fn caused_by_request_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_user())
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn upstream_error(status: StatusCode, message: &str, navigation: bool) -> Response<Body> {
    if navigation {
        let page = format!(
            "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>{}</title><body style=\"font-family:sans-serif;max-width:32em;margin:4em auto;padding:0 1em\"><h1>{} {}</h1><p>{}. Try again in a moment.</p>",
            status.as_u16(),
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            message
        );
        html(status, page)
    } else {
        let code = match status {
            StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
            StatusCode::BAD_GATEWAY => "upstream_unreachable",
            StatusCode::REQUEST_TIMEOUT => "body_timeout",
            _ => "bad_request_body",
        };
        json(
            status,
            &serde_json::json!({ "error": message, "code": code }),
        )
    }
}

/// The built-in `whoami` upstream: shows the identity and exactly the headers an upstream would get.
fn whoami(state: &AppState, req: &Request<ClientBody>, id: Option<&Identity>) -> Response<Body> {
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    let page = state.pages.render(
        "whoami.html",
        context! {
            title => "Who am I",
            wide => true,
            email => id.map_or("(anonymous: public path)", |i| i.email()),
            headers => headers,
            method => req.method().as_str(),
            uri => req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        },
    );
    html(StatusCode::OK, page)
}
