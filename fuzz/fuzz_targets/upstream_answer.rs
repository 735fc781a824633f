//! The gateway's own upstream client reading an answer (`proxy::wire`): head parsing and
//! chunked decoding must not depend on how the bytes were split into reads, and what is accepted
//! is unambiguous (checked against the raw head, read here with `httparse` on its own), and no
//! hop-by-hop field (or one named in `Connection`) is handed on. A reader whose result depends
//! on TCP segmentation could be made to see two different answers in one byte stream (response
//! desynchronisation).
#![no_main]

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis::proxy::wire::{parse_head, ChunkDecoder, Framing, Parsed, MAX_HEAD};

/// Decodes a chunked body fed in two pieces cut at `cut`: (body, done, bytes not consumed),
/// or `None` on an error.
fn decode(wire: &[u8], cut: usize) -> Option<(Vec<u8>, bool, usize)> {
    let mut dec = ChunkDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let cut = cut.min(wire.len());
    let mut fed = 0;
    for piece in [&wire[..cut], &wire[cut..]] {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match dec.step(&mut buf) {
                Ok(Some(d)) => out.extend_from_slice(&d),
                Ok(None) => break,
                Err(_) => return None,
            }
        }
        if dec.is_done() {
            break;
        }
    }
    Some((out, dec.is_done(), buf.len() + wire.len() - fed))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let method = if sel & 1 == 0 { Method::GET } else { Method::HEAD };
    if sel & 2 == 0 {
        // A chunked body: the same result however the bytes are split.
        let whole = decode(data, data.len());
        let cut = (sel as usize >> 2) * data.len() / 64;
        assert_eq!(whole, decode(data, cut), "split at {cut} changes the decoding");
        if let Some((body, true, left)) = &whole {
            assert!(body.len() + left <= data.len());
        }
        return;
    }
    let all = Bytes::copy_from_slice(data);
    let parsed = parse_head(&all, &method);
    if let Ok(Parsed::Final(head, len)) = &parsed {
        assert!(*len <= data.len() && *len <= MAX_HEAD);
        // Any prefix that holds the whole head parses to the same answer.
        let prefix = Bytes::copy_from_slice(&data[..*len]);
        match parse_head(&prefix, &method) {
            Ok(Parsed::Final(again, len2)) => {
                assert_eq!(*len, len2);
                assert_eq!(head.status, again.status);
                assert_eq!(head.framing, again.framing);
                assert_eq!(head.fields.to_map(), again.fields.to_map());
            }
            other => panic!("the head alone parses differently: {other:?}"),
        }
        // Accepted framing is unambiguous, judged on the raw head.
        let mut slots = [httparse::EMPTY_HEADER; 100];
        let mut raw = httparse::Response::new(&mut slots);
        assert!(matches!(raw.parse(&data[..*len]), Ok(httparse::Status::Complete(_))));
        let fields: &[httparse::Header<'_>] = raw.headers;
        let named = |n: &'static str| fields.iter().filter(move |h| h.name.eq_ignore_ascii_case(n));
        let raw_te = named("transfer-encoding").next().is_some();
        let raw_cl: Vec<u64> = named("content-length")
            .flat_map(|h| h.value.split(|b| *b == b','))
            .map(|v| std::str::from_utf8(v.trim_ascii()).unwrap().parse::<u64>().unwrap())
            .collect();
        assert!(!(raw_te && !raw_cl.is_empty()), "both Transfer-Encoding and Content-Length");
        assert!(raw_cl.windows(2).all(|w| w[0] == w[1]), "differing Content-Length values");
        match head.framing {
            Framing::Length(n) => assert!(!raw_te && raw_cl.first() == Some(&n)),
            Framing::Chunked => assert!(raw_te),
            Framing::Empty => assert!(method == Method::HEAD || [204, 304].contains(&head.status.as_u16())),
            Framing::Close => assert!(raw_cl.is_empty() && !raw_te),
        }
        // The block the own HTTP/1 loop writes as it is: well-formed lines a client reads back
        // as exactly the fields of the map every other way out gets (nothing lost, nothing
        // injected), names in lower case, the flags true to the block.
        let map = head.fields.to_map();
        let wrapped = [&b"HTTP/1.1 200 OK\r\n"[..], &head.fields.block, b"\r\n"].concat();
        let mut back_slots = [httparse::EMPTY_HEADER; 100];
        let mut back = httparse::Response::new(&mut back_slots);
        assert_eq!(back.parse(&wrapped), Ok(httparse::Status::Complete(wrapped.len())), "block {:?}", head.fields.block);
        assert_eq!(back.headers.len(), map.len(), "a block line did not reach the map");
        // A map groups a name's values (in their order); compare grouped by name.
        let mut from_block: Vec<(&[u8], &[u8])> =
            back.headers.iter().map(|h| (h.name.as_bytes(), h.value)).collect();
        let mut from_map: Vec<(&[u8], &[u8])> =
            map.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())).collect();
        from_block.sort_by_key(|f| f.0);
        from_map.sort_by_key(|f| f.0);
        assert_eq!(from_block, from_map, "the block and the map differ (names are written in lower case)");
        assert_eq!(head.fields.length, map.contains_key(CONTENT_LENGTH));
        assert_eq!(head.fields.date, map.contains_key("date"));
        assert_eq!(head.fields.set_cookie, map.contains_key("set-cookie"));
        if [204, 304].contains(&head.status.as_u16()) {
            assert!(!head.fields.length, "Content-Length on a {}", head.status);
        }
        // Every other field passes unchanged and in order.
        let listed: Vec<String> = named("connection")
            .flat_map(|h| h.value.split(|b| *b == b','))
            .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok().map(str::to_ascii_lowercase))
            .collect();
        let hop = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];
        let expect: Vec<(String, &[u8])> = fields
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value))
            .filter(|(n, _)| !hop.contains(&n.as_str()) && !listed.contains(n) && n != "content-length")
            .collect();
        let mut expect = expect;
        let mut passed: Vec<(String, &[u8])> = map
            .iter()
            .filter(|(n, _)| *n != CONTENT_LENGTH)
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes()))
            .collect();
        expect.sort_by(|a, b| a.0.cmp(&b.0));
        passed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(passed, expect, "end-to-end fields changed");
        // What is handed on: one Content-Length at most, the raw one; nothing hop-by-hop.
        let cl: Vec<_> = map.get_all(CONTENT_LENGTH).iter().collect();
        assert!(cl.len() <= 1, "Content-Length forwarded more than once");
        if let Some(v) = cl.first() {
            assert_eq!(v.to_str().ok().and_then(|v| v.parse::<u64>().ok()).as_ref(), raw_cl.first());
        }
        for hop in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
            assert!(!map.contains_key(hop), "{hop} handed on");
        }
        assert!(!map.contains_key(TRANSFER_ENCODING) && !map.contains_key(CONNECTION));
        for token in named("connection").flat_map(|h| h.value.split(|b| *b == b',')) {
            if let Ok(t) = std::str::from_utf8(token.trim_ascii()) {
                if !t.is_empty() {
                    assert!(!map.contains_key(t.to_ascii_lowercase().as_str()), "{t} named in Connection handed on");
                }
            }
        }
        if head.keep_alive {
            assert!(head.framing != Framing::Close);
        }
    }
    // A shorter input never turns an error or a complete head into something else mid-way:
    // every prefix is Partial, or the same outcome.
    if let Ok(Parsed::Partial) = &parsed {
        return;
    }
    for cut in [data.len() / 3, data.len() / 2] {
        let prefix = Bytes::copy_from_slice(&data[..cut]);
        if let (Ok(Parsed::Final(_, a)), Ok(Parsed::Final(_, b))) = (&parsed, parse_head(&prefix, &method)) {
            assert_eq!(*a, b, "a prefix completes a different head");
        }
    }
});
