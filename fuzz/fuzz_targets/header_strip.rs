//! The upstream request's header block (`Outgoing::write`, what both upstream clients send):
//! the upstream sees exactly our identity and no client-forged one, no hop-by-hop headers, no
//! credentials of ours, proxy headers only as trust allows (and ours always last in the chain),
//! our one Host; every other header passes untouched; the block parses back line for line (no
//! field can be injected).
//!
//! Input: a header block, one `name: value` per line (split at the first `:`, one leading space
//! or tab dropped from the value; lines that are no valid header are skipped). A first line
//! `#trusted` makes the peer a trusted proxy.
#![no_main]

use bytes::Bytes;
use http::header::{HeaderName, AUTHORIZATION, CONNECTION, COOKIE, HOST};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::outgoing::{to_header_map, Identity, Outgoing};

const COOKIE_NAME: &str = "portcullis_session";
const EMAIL: &str = "alice@example.com";
const PEER: &str = "10.9.8.7";
const HOST_NAME: &str = "app.example.com";

/// Comparison form used by the property (written independently of the code under test).
const IDENTITY: &[&str] = &[
    "remote-user", "remote-email", "remote-name", "remote-groups", "x-remote-user", "x-remote-email",
    "x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups",
    "x-forwarded-access-token", "x-webauth-user",
];
const HOP: &[&str] = &[
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate",
];
const PROXY: &[&str] = &[
    "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-prefix", "x-forwarded-server", "x-forwarded-ssl", "x-forwarded-scheme",
    "x-forwarded-uri", "x-forwarded-method", "x-original-url", "x-original-method",
    "x-original-host", "x-rewrite-url", "x-real-ip", "x-host",
];
/// What a trusted proxy may send (exact spelling); the chains and the host are rewritten.
const FAMILY: &[&str] = &["x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip"];
/// What the gateway always writes itself.
const OURS: &[&str] = &[
    "host", "x-forwarded-for", "forwarded", "x-forwarded-host", "x-forwarded-email", "x-forwarded-user", "x-request-id",
];

fn spelled(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn identity_like(name: &str) -> bool {
    let n = spelled(name);
    IDENTITY.contains(&n.as_str()) || n.starts_with("x-auth-request-") || n.starts_with("x-portcullis-")
}

fn headers(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(64) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").or_else(|| value.strip_prefix(b"\t")).unwrap_or(value);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        h.append(name, value);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let (trusted, data) = match data.strip_prefix(b"#trusted\n") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let before = headers(data);

    // Names listed in Connection values (RFC 9110 §7.6.1), also next to non-ASCII tokens.
    let connection_named: Vec<String> = before
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| std::str::from_utf8(t).ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let dropped_by_connection = |s: &str| connection_named.iter().any(|c| c == s);

    let email_h = HeaderName::from_static("x-forwarded-email");
    let user_h = HeaderName::from_static("x-forwarded-user");
    let configured = [&email_h, &user_h];
    let request_id = HeaderValue::from_static("pc-0000000001");
    let fields = Outgoing {
        trusted,
        identity_names: &configured,
        cookie_name: COOKIE_NAME,
        bearer_used: true,
        peer: PEER.parse().unwrap(),
        scheme: "https",
        host: HOST_NAME,
        port: None,
        identity: Some(Identity { email: EMAIL, email_header: &email_h, user_header: &user_h }),
        assertion: None,
        upgrade: None,
        request_id: Some(request_id.as_bytes()),
    };
    let mut block = Vec::new();
    fields.write(&before, &mut block);
    let lines = block.windows(2).filter(|w| w == b"\r\n").count();
    assert!(block.is_empty() || block.ends_with(b"\r\n"));
    let h = to_header_map(Bytes::from(block.clone())).expect("the block parses back");
    assert_eq!(h.len(), lines, "a line was not one field: {:?}", String::from_utf8_lossy(&block));

    for name in h.keys() {
        let s = name.as_str();
        assert!(!HOP.contains(&s), "hop-by-hop {s} left: {h:?}");
        assert!(!identity_like(s) || name == email_h || name == user_h, "identity header {s} left: {h:?}");
        assert!(name != AUTHORIZATION, "authorization left: {h:?}");
        assert!(
            !dropped_by_connection(s) || OURS.contains(&s) || s == "x-forwarded-proto",
            "{s} named in Connection left: {h:?}"
        );
        if PROXY.contains(&spelled(s).as_str()) {
            assert!(
                OURS.contains(&s) || s == "x-forwarded-proto" || (trusted && FAMILY.contains(&s)),
                "proxy header {s} left (trusted: {trusted}): {h:?}"
            );
        }
    }
    let all = |n: &str| -> Vec<&[u8]> { h.get_all(n).iter().map(|v| v.as_bytes()).collect() };
    assert_eq!(all("x-forwarded-email"), [EMAIL.as_bytes()], "{h:?}");
    assert_eq!(all("x-forwarded-user"), [EMAIL.as_bytes()], "{h:?}");
    assert_eq!(all(HOST.as_str()), [HOST_NAME.as_bytes()], "{h:?}");
    assert_eq!(all("x-request-id"), [b"pc-0000000001".as_slice()], "{h:?}");
    assert_eq!(all("x-forwarded-host"), [HOST_NAME.as_bytes()], "{h:?}");
    let xff = all("x-forwarded-for");
    assert_eq!(xff.len(), 1, "{h:?}");
    assert!(xff[0] == PEER.as_bytes() || (trusted && xff[0].ends_with(format!(", {PEER}").as_bytes())), "{h:?}");
    let fwd = all("forwarded");
    let own = format!("for={PEER};proto=https;host={HOST_NAME}");
    assert_eq!(fwd.len(), 1, "{h:?}");
    assert!(fwd[0] == own.as_bytes() || (trusted && fwd[0].ends_with(format!(", {own}").as_bytes())), "{h:?}");
    let proto = all("x-forwarded-proto");
    let client_proto = trusted && before.contains_key("x-forwarded-proto") && !dropped_by_connection("x-forwarded-proto");
    if client_proto {
        let was: Vec<&[u8]> = before.get_all("x-forwarded-proto").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(proto, was, "{h:?}");
    } else {
        assert_eq!(proto, [b"https".as_slice()], "{h:?}");
    }

    assert!(h.get_all(COOKIE).iter().count() <= 1, "cookie headers not merged: {h:?}");
    // Cookie pairs as raw bytes (an app's cookie need not be ASCII text): trimmed, non-empty.
    fn pairs(v: &HeaderValue) -> Vec<Vec<u8>> {
        v.as_bytes()
            .split(|b| *b == b';')
            .map(|p| p.trim_ascii().to_vec())
            .filter(|p| !p.is_empty())
            .collect()
    }
    fn name(pair: &[u8]) -> &[u8] {
        pair.split(|b| *b == b'=').next().unwrap_or(pair).trim_ascii()
    }
    // A lone Cookie field without our cookie may pass exactly as sent; otherwise it is rebuilt.
    let lone = before.get_all(COOKIE).iter().count() == 1;
    let cookies_named = dropped_by_connection("cookie");
    let unchanged = lone && !cookies_named && h.get(COOKIE) == before.get(COOKIE);
    for v in h.get_all(COOKIE) {
        for p in pairs(v) {
            assert_ne!(name(&p), COOKIE_NAME.as_bytes(), "session cookie left: {v:?}");
        }
        if !unchanged {
            let raw: Vec<&[u8]> = v.as_bytes().split(|b| *b == b';').collect();
            assert!(raw.iter().all(|p| !p.trim_ascii().is_empty()), "empty cookie pair in {v:?}");
        }
    }
    // Every other cookie pair passes, in order (unless Connection named `cookie`).
    let kept_in: Vec<Vec<u8>> = before
        .get_all(COOKIE)
        .iter()
        .filter(|_| !cookies_named)
        .flat_map(pairs)
        .filter(|p| name(p) != COOKIE_NAME.as_bytes())
        .collect();
    let kept_out: Vec<Vec<u8>> = h.get_all(COOKIE).iter().flat_map(pairs).collect();
    assert_eq!(kept_in, kept_out, "other cookies changed");

    // Nothing else was touched: every other header keeps all its values, in order.
    for name in before.keys() {
        let s = name.as_str();
        if HOP.contains(&s)
            || identity_like(s)
            || dropped_by_connection(s)
            || PROXY.contains(&spelled(s).as_str())
            || OURS.contains(&s)
            || name == AUTHORIZATION
            || name == COOKIE
        {
            continue;
        }
        let was: Vec<_> = before.get_all(name).iter().collect();
        let now: Vec<_> = h.get_all(name).iter().collect();
        assert_eq!(was, now, "{s} changed");
    }
    // A trusted proxy's family passes as sent (unless named in Connection; X-Forwarded-Proto,
    // written by the gateway when the proxy sent none, is checked above).
    if trusted {
        for f in FAMILY {
            if dropped_by_connection(f) || *f == "x-forwarded-proto" {
                continue;
            }
            let was: Vec<_> = before.get_all(*f).iter().collect();
            let now: Vec<_> = h.get_all(*f).iter().collect();
            assert_eq!(was, now, "{f} from a trusted proxy changed");
        }
    }
});
