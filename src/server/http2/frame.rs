//! HTTP/2 frames (RFC 9113 §4 and §6): the 9-byte header, the frame types and error codes, and
//! writers that append frames to a connection's output buffer.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The frame header's length.
pub const HEADER_LEN: usize = 9;

/// The largest frame payload this server reads and writes (the protocol's default
/// SETTINGS_MAX_FRAME_SIZE; this server never advertises more).
pub const MAX_FRAME: usize = 16_384;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// An error code (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown error code",
        }
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads the header at the front of `buf`, if it holds 9 bytes.
    pub fn parse(buf: &[u8]) -> Option<Head> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame header.
pub fn head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Appends a SETTINGS frame with these (id, value) pairs.
pub fn settings(out: &mut Vec<u8>, values: &[(u16, u32)]) {
    head(out, values.len() * 6, SETTINGS, 0, 0);
    for (id, v) in values {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn settings_ack(out: &mut Vec<u8>) {
    head(out, 0, SETTINGS, ACK, 0);
}

pub fn ping_ack(out: &mut Vec<u8>, payload: &[u8; 8]) {
    head(out, 8, PING, ACK, 0);
    out.extend_from_slice(payload);
}

pub fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & 0x7fff_ffff).to_be_bytes());
}

pub fn rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    head(out, 8, GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
}

/// Appends a header block as HEADERS plus as many CONTINUATION frames as it needs.
pub fn headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool) {
    let mut chunks = block.chunks(MAX_FRAME);
    let first = chunks.next().unwrap_or(&[]);
    let single = block.len() <= MAX_FRAME;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if single {
        flags |= END_HEADERS;
    }
    head(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    let mut rest = chunks.peekable();
    while let Some(c) = rest.next() {
        let last = rest.peek().is_none();
        head(
            out,
            c.len(),
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            stream,
        );
        out.extend_from_slice(c);
    }
}

/// Appends one DATA frame (`data` is at most [`MAX_FRAME`] bytes).
pub fn data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    head(
        out,
        data.len(),
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
    out.extend_from_slice(data);
}

/// The payload of a HEADERS or DATA frame without its padding (and, for HEADERS, the priority
/// fields). `None`: the padding is as long as the payload or longer (PROTOCOL_ERROR).
pub fn unpad(h: &Head, payload: &[u8]) -> Option<(usize, usize)> {
    let mut start = 0;
    let mut end = payload.len();
    if h.has(PADDED) {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if h.kind == HEADERS && h.has(PRIORITY_FLAG) {
        start += 5;
    }
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips() {
        let mut out = Vec::new();
        head(&mut out, 0x12345, HEADERS, END_HEADERS | END_STREAM, 7);
        let h = Head::parse(&out).unwrap();
        assert_eq!(
            h,
            Head {
                len: 0x12345,
                kind: HEADERS,
                flags: END_HEADERS | END_STREAM,
                stream: 7
            }
        );
        assert!(Head::parse(&out[..8]).is_none());
    }

    #[test]
    fn the_reserved_bit_is_ignored() {
        let h = Head::parse(&[0, 0, 0, 0, 0, 0x80, 0, 0, 3]).unwrap();
        assert_eq!(h.stream, 3);
    }

    #[test]
    fn a_large_block_is_split_into_continuations() {
        let block = vec![7u8; MAX_FRAME * 2 + 5];
        let mut out = Vec::new();
        headers(&mut out, 1, &block, true);
        let a = Head::parse(&out).unwrap();
        assert_eq!((a.kind, a.len, a.flags), (HEADERS, MAX_FRAME, END_STREAM));
        let b = Head::parse(&out[9 + MAX_FRAME..]).unwrap();
        assert_eq!((b.kind, b.len, b.flags), (CONTINUATION, MAX_FRAME, 0));
        let c = Head::parse(&out[18 + 2 * MAX_FRAME..]).unwrap();
        assert_eq!((c.kind, c.len, c.flags), (CONTINUATION, 5, END_HEADERS));
        assert_eq!(out.len(), 27 + block.len());
    }

    #[test]
    fn padding_is_removed_or_refused() {
        let h = Head {
            len: 6,
            kind: DATA,
            flags: PADDED,
            stream: 1,
        };
        assert_eq!(unpad(&h, &[2, b'a', b'b', b'c', 0, 0]), Some((1, 4)));
        assert_eq!(unpad(&h, &[6, 0, 0, 0, 0, 0]), None);
        assert_eq!(unpad(&h, &[]), None);
        let p = Head {
            len: 7,
            kind: HEADERS,
            flags: PADDED | PRIORITY_FLAG,
            stream: 1,
        };
        assert_eq!(unpad(&p, &[1, 0, 0, 0, 3, 9, b'x', 0]), Some((6, 7)));
        assert_eq!(unpad(&p, &[3, 0, 0, 0, 3, 9, b'x']), None);
    }
}
