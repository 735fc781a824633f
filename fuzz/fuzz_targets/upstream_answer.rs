//! The gateway's own upstream client reading an answer (`proxy::wire`): head parsing and
//! chunked decoding must not depend on how the bytes were split into reads, and what is accepted
//! is unambiguous. A reader whose result depends on TCP segmentation could be made to see two
//! different answers in one byte stream (response desynchronisation).
#![no_main]

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
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
                assert_eq!(head.headers, again.headers);
            }
            other => panic!("the head alone parses differently: {other:?}"),
        }
        // Accepted framing is unambiguous.
        let cl: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
        let te = head.headers.contains_key(TRANSFER_ENCODING);
        assert!(cl.len() <= 1, "Content-Length forwarded more than once");
        assert!(!(te && !cl.is_empty()), "both Transfer-Encoding and Content-Length");
        if let Some(v) = cl.first() {
            assert!(v.as_bytes().iter().all(u8::is_ascii_digit), "Content-Length {v:?}");
        }
        match head.framing {
            Framing::Length(n) => {
                assert_eq!(cl.first().and_then(|v| v.to_str().ok()?.parse::<u64>().ok()), Some(n))
            }
            Framing::Chunked => assert!(te),
            Framing::Empty => assert!(method == Method::HEAD || [204, 304].contains(&head.status.as_u16())),
            Framing::Close => assert!(cl.is_empty() && !te),
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
