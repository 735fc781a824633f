//! `server::h1::parse` + `request` (the gateway's own HTTP/1.1 loop), judged against an
//! independent httparse reading of the same bytes: a head is taken only when it is a complete
//! HTTP/1.1 head with no body framing (`Content-Length`, `Transfer-Encoding`), no `Upgrade`,
//! no `Expect`, no `upgrade` in `Connection`, not `CONNECT`; the request built from it has
//! exactly the head's method, target and fields in order; the next request starts right after
//! it; `close` is true exactly when a `Connection` field lists `close`. Whatever the input, no
//! panic. (tests/it/own_loop.rs compares whole byte sequences with hyper's own server.)
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use portcullis::server::h1::{parse, request, Head, Parse};

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

fuzz_target!(|data: &[u8]| {
    let mut head = Head::default();
    let decided = parse(data, &mut head);
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut raw = httparse::Request::new(&mut slots);
    let independent = raw.parse(data);
    let Parse::Head { len, fields, close } = decided else {
        if decided == Parse::Partial {
            assert!(matches!(independent, Ok(httparse::Status::Partial)), "partial only when httparse says so");
        }
        return;
    };
    assert_eq!(independent, Ok(httparse::Status::Complete(len)));
    assert!(len <= data.len());
    assert_eq!(raw.version, Some(1), "only HTTP/1.1 is taken");
    assert_ne!(raw.method, Some("CONNECT"));
    assert_eq!(raw.headers.len(), fields);
    let named = |n: &'static str| raw.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(n));
    for framing in ["content-length", "transfer-encoding", "upgrade", "expect"] {
        assert!(named(framing).next().is_none(), "took a head with {framing}");
    }
    let conn_tokens: Vec<&[u8]> = named("connection").flat_map(|h| tokens(h.value)).collect();
    assert!(!conn_tokens.iter().any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    assert_eq!(close, conn_tokens.iter().any(|t| t.eq_ignore_ascii_case(b"close")));
    // The head alone reads the same (what follows is the next request's).
    assert_eq!(parse(&data[..len], &mut Head::default()), Parse::Head { len, fields, close });
    let bytes = Bytes::copy_from_slice(&data[..len]);
    if let Some(req) = request(&bytes, &head, fields) {
        assert_eq!(req.method().as_str(), raw.method.unwrap_or(""));
        assert_eq!(Some(req.uri()), raw.path.and_then(|p| p.parse::<http::Uri>().ok()).as_ref());
        assert_eq!(req.version(), http::Version::HTTP_11);
        let built: Vec<(String, &[u8])> =
            req.headers().iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes())).collect();
        let mut want: Vec<(String, &[u8])> =
            raw.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value)).collect();
        let mut got = built;
        // A header map groups a name's values (in their order).
        want.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "fields changed");
    }
});
