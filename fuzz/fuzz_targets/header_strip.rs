//! The forwarding header pipeline: hop-by-hop removal, identity stripping, credential stripping,
//! identity injection. Afterwards the upstream sees exactly our identity and no client-forged one,
//! no hop-by-hop headers, no credentials of ours; every other header passes untouched.
#![no_main]

use http::header::{HeaderName, AUTHORIZATION, CONNECTION, COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::headers::{inject, remove_hop_by_hop, strip_credentials, strip_identity};

const COOKIE_NAME: &str = "portcullis_session";
const EMAIL: &str = "alice@example.com";
const USER: &str = "alice";

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

fn identity_like(name: &str) -> bool {
    let n: String = name.to_ascii_lowercase().replace('_', "-");
    IDENTITY.contains(&n.as_str()) || n.starts_with("x-auth-request-") || n.starts_with("x-portcullis-")
}

/// The input is a header block: one `name: value` per line (split at the first `:`, one leading
/// space or tab dropped from the value). Lines that are no valid header are skipped.
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
    let mut h = headers(data);
    let before = h.clone();

    // Names listed in Connection values (RFC 9110 §7.6.1), also next to non-ASCII tokens.
    let connection_named: Vec<String> = before
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| std::str::from_utf8(t).ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();

    let email_h = HeaderName::from_static("x-forwarded-email");
    let user_h = HeaderName::from_static("x-forwarded-user");
    remove_hop_by_hop(&mut h);
    strip_identity(&mut h, &[&email_h, &user_h]);
    strip_credentials(&mut h, COOKIE_NAME, true);
    inject(&mut h, &email_h, HeaderValue::from_static(EMAIL));
    inject(&mut h, &user_h, HeaderValue::from_static(USER));

    for name in h.keys() {
        let s = name.as_str();
        assert!(!HOP.contains(&s), "hop-by-hop {s} left: {h:?}");
        assert!(
            !identity_like(s) || name == email_h || name == user_h,
            "identity header {s} left: {h:?}"
        );
        assert!(name != AUTHORIZATION, "authorization left: {h:?}");
        assert!(
            !connection_named.iter().any(|c| c == s) || name == email_h || name == user_h,
            "{s} named in Connection left: {h:?}"
        );
    }
    let emails: Vec<_> = h.get_all(&email_h).iter().collect();
    assert_eq!(emails, [EMAIL], "{h:?}");
    let users: Vec<_> = h.get_all(&user_h).iter().collect();
    assert_eq!(users, [USER], "{h:?}");
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
    let cookies_named = connection_named.iter().any(|c| c == "cookie");
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

    // Nothing else was touched: every other header keeps all its values, in order.
    for name in before.keys() {
        let s = name.as_str();
        if HOP.contains(&s)
            || identity_like(s)
            || connection_named.iter().any(|c| c == s)
            || name == AUTHORIZATION
            || name == COOKIE
        {
            continue;
        }
        let was: Vec<_> = before.get_all(name).iter().collect();
        let now: Vec<_> = h.get_all(name).iter().collect();
        assert_eq!(was, now, "{s} changed");
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
});
