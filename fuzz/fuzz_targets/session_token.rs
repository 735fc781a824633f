//! `presented_tokens` + `looks_like_token` (+ the upstream's header block as the inverse): the
//! tokens read are pieces of the request's own headers, at most 4, bearer first; whatever the
//! gateway reads as a credential is gone from what the upstream gets.
//!
//! Input: lines of `authorization: …` or `cookie: …` (other lines only feed `looks_like_token`);
//! a first line `#name <cookie name>` replaces the default cookie name `portcullis_session`.
#![no_main]

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::auth::session::{presented_tokens, Via};
use portcullis::crypto::looks_like_token;
use portcullis::proxy::outgoing::{to_header_map, Outgoing};

fn base64url(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the config validator allows as `session.cookie_name`.
fn valid_cookie_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_shape(s: &str) {
    let looks = looks_like_token(s);
    assert_eq!(looks, s.len() == 43 && base64url(s), "looks_like_token({s:?}) = {looks}");
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n').peekable();
    let mut cookie_name = "portcullis_session".to_string();
    if let Some(first) = lines.peek() {
        if let Some(n) = first.strip_prefix(b"#name ") {
            let Ok(n) = std::str::from_utf8(n) else { return };
            if !valid_cookie_name(n) {
                return;
            }
            cookie_name = n.to_string();
            lines.next();
        }
    }
    let mut h = HeaderMap::new();
    let mut values: Vec<String> = Vec::new();
    for line in lines.take(16) {
        if let Ok(s) = std::str::from_utf8(line) {
            check_shape(s);
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].to_ascii_lowercase();
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let Ok(hv) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = match name.as_slice() {
            b"authorization" => AUTHORIZATION,
            b"cookie" => COOKIE,
            _ => continue,
        };
        if let Ok(s) = hv.to_str() {
            values.push(s.to_string());
        }
        h.append(name, hv);
    }

    let tokens: Vec<(&str, Via)> = presented_tokens(&cookie_name, &h).collect();
    assert!(tokens.len() <= 4, "{} tokens", tokens.len());
    let mut seen_cookie = false;
    for (t, via) in &tokens {
        assert!(values.iter().any(|v| v.contains(t)), "{t:?} is in no header: {h:?}");
        match via {
            Via::Bearer => {
                assert!(!seen_cookie, "bearer after cookie: {tokens:?}");
                assert_eq!(t.trim(), *t, "untrimmed bearer token {t:?}");
            }
            Via::Cookie => {
                seen_cookie = true;
                assert!(!t.contains(';'), "cookie token spans pairs: {t:?}");
            }
        }
        check_shape(t);
    }

    // In what the upstream gets (bearer used), nothing is left that the gateway would read.
    let fields = Outgoing {
        trusted: false,
        identity_names: &[],
        cookie_name: &cookie_name,
        bearer_used: true,
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
        scheme: "http",
        host: "app.example.com",
        port: None,
        identity: None,
        assertion: None,
        upgrade: None,
        request_id: None,
    };
    let mut block = Vec::new();
    fields.write(&h, &mut block);
    let h = to_header_map(bytes::Bytes::from(block)).expect("the block parses back");
    let left: Vec<(&str, Via)> = presented_tokens(&cookie_name, &h).collect();
    assert!(left.is_empty(), "still presented after strip: {left:?} in {h:?}");
});
