//! The upstream request's header block, decided in one pass over the client's headers: what passes, what is dropped (hop-by-hop, identity, proxy headers by trust, our credentials) and what the gateway writes itself (Host, `X-Forwarded-*`, `Forwarded`, identity, assertion), written once in HTTP/1.1 form for both upstream clients.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

use crate::proxy::headers::{
    decimal, hop_index, is_identity_name, lists_token, names_fields, proxy_header_kind, push_field,
    push_ip_bytes as push_ip, ProxyHeader,
};

/// Everything besides the client's headers that decides the upstream request's headers.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The peer is in `trusted_proxies`: its documented proxy-header family is believed (the
    /// `X-Forwarded-For`/`Forwarded` chains are appended to, its `X-Forwarded-Proto` kept).
    pub trusted: bool,
    /// The configured identity header names (email, user, assertion): never taken from a client.
    pub identity_names: &'a [&'a HeaderName],
    /// The session cookie's name: that cookie is removed from `Cookie`, every other one passes.
    pub cookie_name: &'a str,
    /// The session came as a bearer token: `Authorization` is removed too.
    pub bearer_used: bool,
    /// The client's address, appended to `X-Forwarded-For` and `Forwarded`.
    pub peer: IpAddr,
    /// `http` or `https`: how the client reached the gateway.
    pub scheme: &'static str,
    /// The canonical host the decision was made for (empty only for an HTTP/1.0 request without
    /// `Host`) and its port: the upstream's `Host`, `X-Forwarded-Host` and `Forwarded` host.
    pub host: &'a str,
    pub port: Option<u16>,
    /// The signed-in user's address and the headers it goes into (none on a public path).
    pub identity: Option<Identity<'a>>,
    /// The signed identity assertion (JWT) header, when configured.
    pub assertion: Option<&'a (HeaderName, HeaderValue)>,
    /// The protocol the client asked to switch to: `Connection: upgrade` and `Upgrade` are sent.
    pub upgrade: Option<&'a HeaderValue>,
    /// The request's `X-Request-Id` (replacing any the client sent).
    pub request_id: Option<&'a [u8]>,
}

/// The identity headers of a signed-in request.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub email: &'a str,
    pub email_header: &'a HeaderName,
    pub user_header: &'a HeaderName,
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_REQUEST_ID: &str = "x-request-id";

impl Outgoing<'_> {
    /// Appends the upstream request's header fields to `out`, one `name: value\r\n` each (no
    /// final empty line): `Host` first, then the client's fields that pass (in their order,
    /// repeated names together), one merged `Cookie` without ours, then the gateway's own.
    /// Every value written is a valid field value (no CR, LF or NUL can be injected).
    pub fn write(&self, client: &HeaderMap, out: &mut Vec<u8>) {
        // A name listed in `Connection` (RFC 9110 §7.6.1) is dropped like a hop-by-hop one. The
        // usual `keep-alive` names no other field: then no field needs the check.
        let connection = client
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| names_fields(v.as_bytes()));
        let named = |name: &str| connection && lists_token(client, &header::CONNECTION, name);
        let host_known = !self.host.is_empty() && visible_ascii(self.host.as_bytes());
        let keep_proto =
            self.trusted && client.contains_key(X_FORWARDED_PROTO) && !named(X_FORWARDED_PROTO);
        if host_known {
            out.extend_from_slice(b"host: ");
            self.push_authority(out);
            out.extend_from_slice(b"\r\n");
        }
        let mut cookies = false;
        for (name, value) in client {
            let n = name.as_str();
            if *name == header::COOKIE {
                cookies = true;
                continue;
            }
            if (host_known && *name == header::HOST)
                || hop_index(n.as_bytes()).is_some()
                || is_identity_name(n.as_bytes(), self.identity_names)
                || (self.bearer_used && *name == header::AUTHORIZATION)
                || (self.request_id.is_some() && n == X_REQUEST_ID)
            {
                continue;
            }
            match proxy_header_kind(n.as_bytes()) {
                ProxyHeader::No => {}
                // A trusted proxy's family passes, except what is written below: the chains
                // (appended to) and the host (always the one the decision was made for).
                ProxyHeader::Family
                    if self.trusted
                        && !matches!(n, "forwarded" | X_FORWARDED_FOR | X_FORWARDED_HOST) => {}
                ProxyHeader::Family | ProxyHeader::Other => continue,
            }
            if named(n) {
                continue;
            }
            push_field(out, n, value.as_bytes());
        }
        if cookies && !named("cookie") {
            self.push_cookies(client, out);
        }
        let ip = self.peer.to_canonical();
        // X-Forwarded-For and Forwarded: a trusted proxy's chain, then this hop.
        for (name, own) in [(X_FORWARDED_FOR, false), ("forwarded", true)] {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            if self.trusted && !named(name) {
                for prev in client.get_all(name) {
                    // Only text values are carried on (as the header-map path always did).
                    let prev = prev.as_bytes().trim_ascii();
                    if !prev.is_empty() && visible_ascii(prev) {
                        out.extend_from_slice(prev);
                        out.extend_from_slice(b", ");
                    }
                }
            }
            if own {
                self.push_forwarded_element(out, ip);
            } else {
                push_ip(out, ip);
            }
            out.extend_from_slice(b"\r\n");
        }
        if !keep_proto {
            push_field(out, X_FORWARDED_PROTO, self.scheme.as_bytes());
        }
        if host_known {
            out.extend_from_slice(b"x-forwarded-host: ");
            self.push_authority(out);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(id) = &self.identity {
            if visible_ascii(id.email.as_bytes()) {
                push_field(out, id.email_header.as_str(), id.email.as_bytes());
                push_field(out, id.user_header.as_str(), id.email.as_bytes());
            }
        }
        if let Some((name, value)) = self.assertion {
            push_field(out, name.as_str(), value.as_bytes());
        }
        if let Some(id) = self.request_id {
            push_field(out, X_REQUEST_ID, id);
        }
        if let Some(u) = self.upgrade {
            out.extend_from_slice(b"connection: upgrade\r\n");
            push_field(out, "upgrade", u.as_bytes());
        }
    }

    /// `host[:port]`.
    fn push_authority(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.host.as_bytes());
        if let Some(p) = self.port {
            out.push(b':');
            out.extend_from_slice(decimal(u64::from(p), &mut [0u8; 20]));
        }
    }

    /// One RFC 7239 `Forwarded` element: `for=…;proto=…;host=…` (IPv6 and ports quoted, §6).
    fn push_forwarded_element(&self, out: &mut Vec<u8>, ip: IpAddr) {
        out.extend_from_slice(b"for=");
        match ip {
            IpAddr::V4(_) => push_ip(out, ip),
            IpAddr::V6(_) => {
                out.extend_from_slice(b"\"[");
                push_ip(out, ip);
                out.extend_from_slice(b"]\"");
            }
        }
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(self.scheme.as_bytes());
        if self.host.is_empty() || !visible_ascii(self.host.as_bytes()) {
            return;
        }
        out.extend_from_slice(b";host=");
        let quote = self.port.is_some() || self.host.as_bytes().contains(&b':');
        if quote {
            out.push(b'"');
        }
        self.push_authority(out);
        if quote {
            out.push(b'"');
        }
    }

    /// The client's `Cookie` fields as one (an HTTP/1.1 upstream expects one, RFC 9113 §8.2.3),
    /// without the session cookie in any spelling; nothing when no other cookie is left.
    fn push_cookies(&self, client: &HeaderMap, out: &mut Vec<u8>) {
        let ours = self.cookie_name.as_bytes();
        let mut values = client.get_all(header::COOKIE).iter();
        if let (Some(only), None) = (values.next(), values.next()) {
            let b = only.as_bytes();
            // The usual cases, without taking the value apart: only our cookie, or no trace of it.
            if b.starts_with(ours) && b.get(ours.len()) == Some(&b'=') && !b.contains(&b';') {
                return;
            }
            if !b.windows(ours.len()).any(|w| w == ours) {
                push_field(out, "cookie", b);
                return;
            }
        }
        // Rebuilt from the raw bytes: an app's cookie that is not ASCII text passes too.
        let start = out.len();
        out.extend_from_slice(b"cookie: ");
        let first = out.len();
        for v in client.get_all(header::COOKIE) {
            for pair in v.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                if pair.is_empty() {
                    continue;
                }
                let name = pair.split(|b| *b == b'=').next().unwrap_or(pair);
                if name.trim_ascii() != ours {
                    if out.len() > first {
                        out.extend_from_slice(b"; ");
                    }
                    out.extend_from_slice(pair);
                }
            }
        }
        if out.len() == first {
            out.truncate(start);
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Visible ASCII and tabs: what `HeaderValue::from_str` accepts.
fn visible_ascii(b: &[u8]) -> bool {
    b.iter().all(|c| *c == b'\t' || (0x20..0x7f).contains(c))
}

/// A header block written by [`Outgoing::write`] as a header map (for hyper's client, and to
/// show it): the values share the block's bytes. `None` if a line is not a valid field, which
/// [`Outgoing::write`] never produces.
pub fn to_header_map(block: Bytes) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(16);
    let mut at = 0;
    while at < block.len() {
        let rest = &block[at..];
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        let colon = line.iter().position(|b| *b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value_at = at + colon + 1 + usize::from(line.get(colon + 1) == Some(&b' '));
        let value = HeaderValue::from_maybe_shared(block.slice(value_at..at + end)).ok()?;
        map.append(name, value);
        at += end + 2;
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &str = "portcullis_session";

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    fn names() -> (HeaderName, HeaderName) {
        (
            HeaderName::from_static("x-forwarded-email"),
            HeaderName::from_static("x-forwarded-user"),
        )
    }

    /// The upstream's fields for `client`, from `peer` (trusted or not), signed in as alice.
    fn fields(client: &[(&str, &str)], trusted: bool, bearer: bool) -> Vec<(String, String)> {
        let (email, user) = names();
        let configured = [&email, &user];
        let request_id = HeaderValue::from_static("rid-1");
        let o = Outgoing {
            trusted,
            identity_names: &configured,
            cookie_name: COOKIE,
            bearer_used: bearer,
            peer: "10.1.2.3".parse().unwrap(),
            scheme: "https",
            host: "app.example.com",
            port: None,
            identity: Some(Identity {
                email: "alice@example.com",
                email_header: &email,
                user_header: &user,
            }),
            assertion: None,
            upgrade: None,
            request_id: Some(request_id.as_bytes()),
        };
        let mut out = Vec::new();
        o.write(&map(client), &mut out);
        let h = to_header_map(Bytes::from(out.clone())).expect("a valid block");
        assert_eq!(h.len(), out.windows(2).filter(|w| w == b"\r\n").count());
        h.iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }

    fn get<'a>(f: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        f.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_are_dropped() {
        let f = fields(
            &[
                ("connection", "close, X-Secret, Cookie"),
                ("x-secret", "1"),
                ("keep-alive", "5"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"),
                ("proxy-authorization", "Basic x"),
                ("cookie", "a=1"),
                ("x-keep", "y"),
            ],
            false,
            false,
        );
        let passed: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            passed,
            [
                "host",
                "x-keep",
                "x-forwarded-for",
                "forwarded",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-email",
                "x-forwarded-user",
                "x-request-id"
            ]
        );
    }

    /// The usual `Connection: keep-alive` skips the per-field check; any other name in any
    /// `Connection` field still drops that field.
    #[test]
    fn fields_named_next_to_keep_alive_are_dropped() {
        let f = fields(
            &[
                ("connection", "keep-alive"),
                ("x-a", "1"),
                ("Connection", "X-A"),
                ("x-b", "2"),
            ],
            false,
            false,
        );
        assert!(get(&f, "x-a").is_empty(), "{f:?}");
        assert_eq!(get(&f, "x-b"), ["2"]);
        let f = fields(&[("connection", "keep-alive"), ("x-a", "1")], false, false);
        assert_eq!(get(&f, "x-a"), ["1"]);
    }

    #[test]
    fn identity_spellings_are_replaced_by_ours() {
        let f = fields(
            &[
                ("X-Forwarded-Email", "evil@example.com"),
                ("x_forwarded_email", "evil@example.com"),
                ("X_FORWARDED_USER", "evil"),
                ("remote_user", "evil"),
                ("Remote-Email", "evil"),
                ("x-auth-request-email", "evil"),
                ("X-Auth-Request-Groups", "admins"),
                ("x-portcullis-jwt-assertion", "forged"),
                ("accept", "*/*"),
            ],
            false,
            false,
        );
        assert_eq!(get(&f, "x-forwarded-email"), ["alice@example.com"]);
        assert_eq!(get(&f, "x-forwarded-user"), ["alice@example.com"]);
        assert_eq!(get(&f, "accept"), ["*/*"]);
        assert!(!f
            .iter()
            .any(|(_, v)| v.contains("evil") || v == "forged" || v == "admins"));
    }

    #[test]
    fn proxy_headers_by_trust() {
        let all = [
            ("Host", "evil.example.com"),
            ("Forwarded", "for=1.1.1.1"),
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", " 2.2.2.2 "),
            ("x_forwarded_for", "6.6.6.6"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "evil"),
            ("X-Forwarded-Port", "1"),
            ("X-Forwarded-Prefix", "/x"),
            ("X-Forwarded-Server", "x"),
            ("X-Forwarded-Uri", "/x"),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URL", "http://a/"),
            ("X-ORIGINAL-HOST", "a"),
            ("X-Rewrite-Url", "/x"),
            ("X-Real-IP", "1.1.1.1"),
            ("x_real_ip", "6.6.6.6"),
            ("X-Host", "a"),
            ("X-Request-Id", "forged"),
            ("accept", "*/*"),
        ];
        let ours = [
            ("host", "app.example.com"),
            ("accept", "*/*"),
            ("x-forwarded-for", "10.1.2.3"),
            ("forwarded", "for=10.1.2.3;proto=https;host=app.example.com"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-email", "alice@example.com"),
            ("x-forwarded-user", "alice@example.com"),
            ("x-request-id", "rid-1"),
        ];
        let owned = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(fields(&all, false, false), owned(&ours));
        let trusted = fields(&all, true, false);
        assert_eq!(
            trusted,
            owned(&[
                ("host", "app.example.com"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-port", "1"),
                ("x-forwarded-prefix", "/x"),
                ("x-real-ip", "1.1.1.1"),
                ("accept", "*/*"),
                ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.1.2.3"),
                (
                    "forwarded",
                    "for=1.1.1.1, for=10.1.2.3;proto=https;host=app.example.com"
                ),
                ("x-forwarded-host", "app.example.com"),
                ("x-forwarded-email", "alice@example.com"),
                ("x-forwarded-user", "alice@example.com"),
                ("x-request-id", "rid-1"),
            ])
        );
        // A trusted proxy's X-Forwarded-Proto named in Connection is gone: ours is written.
        let f = fields(
            &[
                ("connection", "x-forwarded-proto"),
                ("x-forwarded-proto", "http"),
            ],
            true,
            false,
        );
        assert_eq!(get(&f, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn forwarded_elements() {
        let (email, user) = names();
        let configured = [&email, &user];
        for (peer, host, port, want) in [
            (
                "1.2.3.4",
                "a.com",
                None,
                "for=1.2.3.4;proto=http;host=a.com",
            ),
            (
                "::1",
                "a.com",
                Some(8443),
                "for=\"[::1]\";proto=http;host=\"a.com:8443\"",
            ),
            (
                "::ffff:10.0.0.1",
                "[::1]",
                None,
                "for=10.0.0.1;proto=http;host=\"[::1]\"",
            ),
            ("1.2.3.4", "", None, "for=1.2.3.4;proto=http"),
        ] {
            let o = Outgoing {
                trusted: false,
                identity_names: &configured,
                cookie_name: COOKIE,
                bearer_used: false,
                peer: peer.parse().unwrap(),
                scheme: "http",
                host,
                port,
                identity: None,
                assertion: None,
                upgrade: None,
                request_id: None,
            };
            let mut out = Vec::new();
            o.write(&HeaderMap::new(), &mut out);
            let h = to_header_map(Bytes::from(out)).unwrap();
            assert_eq!(h.get("forwarded").unwrap(), want);
            assert_eq!(h.contains_key("host"), !host.is_empty());
            assert_eq!(h.contains_key("x-forwarded-host"), !host.is_empty());
            assert!(!h.contains_key("x-forwarded-email"));
        }
    }

    #[test]
    fn bearer_and_upgrade() {
        let f = fields(&[("authorization", "Bearer tok")], false, true);
        assert!(get(&f, "authorization").is_empty());
        let f = fields(&[("authorization", "Basic x")], false, false);
        assert_eq!(get(&f, "authorization"), ["Basic x"]);
        let (email, user) = names();
        let configured = [&email, &user];
        let ws = HeaderValue::from_static("websocket");
        let o = Outgoing {
            trusted: false,
            identity_names: &configured,
            cookie_name: COOKIE,
            bearer_used: false,
            peer: "1.2.3.4".parse().unwrap(),
            scheme: "http",
            host: "a.com",
            port: None,
            identity: None,
            assertion: None,
            upgrade: Some(&ws),
            request_id: None,
        };
        let mut out = Vec::new();
        o.write(
            &map(&[("connection", "Upgrade"), ("upgrade", "websocket")]),
            &mut out,
        );
        let h = to_header_map(Bytes::from(out)).unwrap();
        assert_eq!(
            h.get_all("connection").iter().collect::<Vec<_>>(),
            ["upgrade"]
        );
        assert_eq!(
            h.get_all("upgrade").iter().collect::<Vec<_>>(),
            ["websocket"]
        );
    }

    /// Whatever shape the `Cookie` fields have, no pair named like our cookie (after trimming)
    /// survives and every other pair does, in order, in one field: the fast paths included.
    #[test]
    fn our_cookie_never_survives_any_spelling() {
        let cases: &[&[&str]] = &[
            &["portcullis_session=tok"],
            &["portcullis_session=tok;"],
            &["portcullis_session=tok; a=1"],
            &["a=1;portcullis_session=tok"],
            &[" portcullis_session=tok"],
            &["portcullis_session =tok"],
            &["portcullis_session=\"tok\""],
            &["portcullis_sessionx=keep"],
            &["xportcullis_session=keep"],
            &["portcullis_session"],
            &["portcullis_session=tok", "portcullis_session=two"],
            &["a=1", "portcullis_session=tok"],
            &["portcullis_session=tok", "b=2"],
            &["portcullis_session=a=b"],
            &["a=1", "b=2"],
            &["a=1;  ;c=3", "portculli\u{f3}_session=x"],
            &["a=1"],
        ];
        for values in cases {
            let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("cookie", *v)).collect();
            let f = fields(&pairs, false, false);
            let want: Vec<String> = values
                .iter()
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .filter(|p| p.split_once('=').map_or(*p, |(n, _)| n).trim() != COOKIE)
                .map(str::to_string)
                .collect();
            let cookies = get(&f, "cookie");
            assert!(cookies.len() <= 1, "{values:?}: {cookies:?}");
            let got: Vec<String> = cookies
                .iter()
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            assert_eq!(got, want, "{values:?}");
        }
    }

    #[test]
    fn a_block_that_is_not_ours_is_refused() {
        for bad in [
            &b"host: a\r\nno colon\r\n"[..],
            b"host: a",
            b"ho st: a\r\n",
            b"a: \x00\r\n",
        ] {
            assert!(to_header_map(Bytes::from_static(bad)).is_none(), "{bad:?}");
        }
        let h = to_header_map(Bytes::from_static(b"a: \r\nb: x y\r\n")).unwrap();
        assert_eq!(h.get("a").unwrap(), "");
        assert_eq!(h.get("b").unwrap(), "x y");
    }
}
