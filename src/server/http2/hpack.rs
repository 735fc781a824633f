//! HPACK (RFC 7541) for the HTTP/2 server: a strict, allocation-light header block decoder with
//! its per-connection dynamic table, and a stateless encoder for response fields.
//!
//! Decoding hands out slices into the block, into the dynamic table or into one reused scratch
//! buffer (Huffman strings only), so an indexed or plain literal field costs no allocation.
//! Every malformation is a [`CompressionError`]; nothing here panics on peer input, and memory
//! stays bounded by the block and the advertised table size.
//!
//! The encoder never inserts into the peer's dynamic table and never Huffman-codes, so it keeps
//! no state and the peer's SETTINGS_HEADER_TABLE_SIZE never matters.

use std::collections::VecDeque;

/// A malformed header block: the connection ends with COMPRESSION_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionError;

impl std::fmt::Display for CompressionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed HPACK header block")
    }
}

impl std::error::Error for CompressionError {}

/// Per-entry overhead in the table and header list size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Scratch buffers bigger than this are dropped after a block instead of kept for the
/// connection's lifetime.
const SCRATCH_KEEP: usize = 64 * 1024;

/// The static table (RFC 7541 Appendix A); index 1 is element 0.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Static-table index of `:status` (RFC 7541 Appendix A).
const STATUS_INDEX: usize = 8;

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// One dynamic table entry: name and value in a single allocation.
struct Entry {
    buf: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Entry {
        let mut buf = Vec::with_capacity(name.len() + value.len());
        buf.extend_from_slice(name);
        buf.extend_from_slice(value);
        Entry {
            buf: buf.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    fn name(&self) -> &[u8] {
        self.buf.get(..self.name_len).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.buf.get(self.name_len..).unwrap_or_default()
    }

    /// RFC 7541 §4.1 size.
    fn size(&self) -> usize {
        self.buf.len() + ENTRY_OVERHEAD
    }
}

/// A string literal's bytes, by position, so the scratch buffer may grow meanwhile.
#[derive(Clone, Copy)]
enum Str {
    Block(usize, usize),
    Scratch(usize, usize),
}

impl Str {
    fn get<'a>(self, block: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Str::Block(a, b) => block.get(a..b).unwrap_or_default(),
            Str::Scratch(a, b) => scratch.get(a..b).unwrap_or_default(),
        }
    }
}

/// Where a literal field's name comes from.
#[derive(Clone, Copy)]
enum Name {
    Static(&'static [u8]),
    Dynamic(usize),
    Literal(Str),
}

/// The header list size accounting for one block (RFC 7541 §4.1, HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
struct List {
    size: usize,
    max: usize,
    within: bool,
}

impl List {
    /// Whether this field may still be delivered; once one does not fit, none after it does.
    fn admit(&mut self, name: &[u8], value: &[u8]) -> bool {
        if !self.within {
            return false;
        }
        let size = self
            .size
            .saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
        if size > self.max {
            self.within = false;
            return false;
        }
        self.size = size;
        true
    }
}

/// The decoding side of one connection: its dynamic table lives as long as the connection.
pub struct Decoder {
    /// Newest entry first: dynamic index 62 is `table[0]`.
    table: VecDeque<Entry>,
    /// Sum of the entries' §4.1 sizes.
    size: usize,
    /// The current maximum set by the peer's last size update (§6.3).
    capacity: usize,
    /// The SETTINGS_HEADER_TABLE_SIZE this server advertised; size updates may not exceed it.
    max_table_size: usize,
    /// Huffman-decoded strings of the current field.
    scratch: Vec<u8>,
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE this server advertised (4096 = the default).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            capacity: max_table_size,
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (a HEADERS frame's fragment plus its CONTINUATION
    /// fragments, concatenated), calling `field(name, value)` for each field in order.
    /// Ok(true): every field was delivered. Ok(false): the decoded list grew past `max_list_size`
    /// (RFC 7541 §4.1 size: name.len() + value.len() + 32 per field); the block is still decoded
    /// to its end so the dynamic table stays in step with the peer's, but no field after the
    /// limit is delivered. Err(CompressionError) on any malformation.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<bool, CompressionError> {
        let mut list = List {
            size: 0,
            max: max_list_size,
            within: true,
        };
        let mut pos = 0;
        let mut seen_field = false;
        let result = loop {
            let Some(&first) = block.get(pos) else {
                break Ok(list.within);
            };
            let step = if first & 0x80 != 0 {
                // §6.1 indexed header field.
                self.indexed(block, &mut pos, &mut list, &mut field)
            } else if first & 0xe0 == 0x20 {
                // §6.3 dynamic table size update: only before the first field.
                if seen_field {
                    break Err(CompressionError);
                }
                self.size_update(block, &mut pos)
            } else if first & 0x40 != 0 {
                // §6.2.1 literal with incremental indexing.
                self.literal(block, &mut pos, 6, true, &mut list, &mut field)
            } else {
                // §6.2.2 without indexing (0000) and §6.2.3 never indexed (0001).
                self.literal(block, &mut pos, 4, false, &mut list, &mut field)
            };
            if let Err(e) = step {
                break Err(e);
            }
            seen_field |= first & 0xe0 != 0x20;
        };
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        result
    }

    /// The (name, value) at a §2.3.3 index: 1..=61 static, then dynamic, newest first.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), CompressionError> {
        if index <= STATIC_TABLE.len() {
            let &(name, value) = index
                .checked_sub(1)
                .and_then(|i| STATIC_TABLE.get(i))
                .ok_or(CompressionError)?;
            return Ok((name, value));
        }
        let entry = self
            .table
            .get(index - STATIC_TABLE.len() - 1)
            .ok_or(CompressionError)?;
        Ok((entry.name(), entry.value()))
    }

    fn name_at(&self, index: usize) -> Result<Name, CompressionError> {
        if index <= STATIC_TABLE.len() {
            let &(name, _) = index
                .checked_sub(1)
                .and_then(|i| STATIC_TABLE.get(i))
                .ok_or(CompressionError)?;
            return Ok(Name::Static(name));
        }
        let i = index - STATIC_TABLE.len() - 1;
        if i < self.table.len() {
            Ok(Name::Dynamic(i))
        } else {
            Err(CompressionError)
        }
    }

    fn indexed(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        list: &mut List,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), CompressionError> {
        let index = decode_int(block, pos, 7)?;
        let (name, value) = self.entry(index)?;
        if list.admit(name, value) {
            field(name, value);
        }
        Ok(())
    }

    fn size_update(&mut self, block: &[u8], pos: &mut usize) -> Result<(), CompressionError> {
        let size = decode_int(block, pos, 5)?;
        if size > self.max_table_size {
            return Err(CompressionError);
        }
        self.capacity = size;
        self.evict_to(size);
        Ok(())
    }

    fn literal(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        prefix: u32,
        index: bool,
        list: &mut List,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), CompressionError> {
        let name_index = decode_int(block, pos, prefix)?;
        self.scratch.clear();
        let name = if name_index == 0 {
            Name::Literal(read_string(block, pos, &mut self.scratch)?)
        } else {
            self.name_at(name_index)?
        };
        let value = read_string(block, pos, &mut self.scratch)?;

        let name = match name {
            Name::Static(name) => name,
            Name::Dynamic(i) => self.table.get(i).ok_or(CompressionError)?.name(),
            Name::Literal(s) => s.get(block, &self.scratch),
        };
        let value = value.get(block, &self.scratch);
        if list.admit(name, value) {
            field(name, value);
        }
        if index {
            // §4.4: build the entry before evicting, since the name may be an entry that goes.
            let size = name.len() + value.len() + ENTRY_OVERHEAD;
            let entry = (size <= self.capacity).then(|| Entry::new(name, value));
            self.insert(entry, size);
        }
        Ok(())
    }

    /// Adds an entry of §4.1 size `size` (None: it exceeds the capacity, so the table empties).
    fn insert(&mut self, entry: Option<Entry>, size: usize) {
        match entry {
            Some(entry) if size <= self.capacity => {
                self.evict_to(self.capacity - size);
                self.size += size;
                self.table.push_front(entry);
            }
            _ => {
                self.table.clear();
                self.size = 0;
            }
        }
    }

    /// Evicts oldest entries until the table's size is at most `limit` (§4.3, §4.4).
    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.table.pop_back() {
                Some(entry) => self.size -= entry.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Reads a §5.1 integer with a `prefix`-bit prefix starting at `block[*pos]`.
/// Values need at most four continuation bytes (so at most 2^28 + 2^prefix - 2).
fn decode_int(block: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, CompressionError> {
    let mask = (1usize << prefix) - 1;
    let first = usize::from(*block.get(*pos).ok_or(CompressionError)?) & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0;
    loop {
        let byte = *block.get(*pos).ok_or(CompressionError)?;
        *pos += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift >= 28 {
            return Err(CompressionError);
        }
    }
}

/// Reads a §5.2 string literal: plain ones stay in the block, Huffman ones go to `scratch`.
fn read_string(
    block: &[u8],
    pos: &mut usize,
    scratch: &mut Vec<u8>,
) -> Result<Str, CompressionError> {
    let huffman = block.get(*pos).ok_or(CompressionError)? & 0x80 != 0;
    let len = decode_int(block, pos, 7)?;
    let start = *pos;
    let end = start.checked_add(len).ok_or(CompressionError)?;
    let raw = block.get(start..end).ok_or(CompressionError)?;
    *pos = end;
    if huffman {
        let from = scratch.len();
        huffman_decode(raw, scratch)?;
        Ok(Str::Scratch(from, scratch.len()))
    } else {
        Ok(Str::Block(start, end))
    }
}

// ---------------------------------------------------------------------------------------------
// Huffman (RFC 7541 Appendix B)
// ---------------------------------------------------------------------------------------------

/// Code length in bits of each symbol; 256 is EOS.
///
/// Bytes 0..=255 are copied from the h2 crate (h2-0.4.20, `src/hpack/huffman/table.rs`,
/// `ENCODE_CODE_LENGTHS`; MIT licensed, Copyright (c) 2017 h2 authors), which transcribes
/// RFC 7541 Appendix B. The code is canonical, so the lengths alone determine every code
/// (see `CODES`; the tests check them against Appendix B and the Appendix C examples).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30, // EOS
];

const EOS: u16 = 256;
const MAX_CODE_LEN: usize = 30;

/// Codes up to this many bits decode with one table look-up (all printable ASCII but a few
/// punctuation marks); longer ones walk the canonical code by length.
const FAST_BITS: usize = 10;

/// Canonical code tables, derived at compile time from `CODE_LENGTHS`.
struct Canonical {
    /// `code[sym]`, right-aligned.
    codes: [u32; 257],
    /// Per length L: one past the last code of length L (the first code of length L is
    /// `limit[L] - count[L]`), right-aligned in L bits.
    limit: [u32; MAX_CODE_LEN + 1],
    /// Per length L: `offset[L] - first_code[L]`, wrapping, so `sorted[code + base[L]]`.
    base: [u32; MAX_CODE_LEN + 1],
    /// Symbols ordered by (length, symbol).
    sorted: [u16; 257],
    /// Indexed by the next FAST_BITS bits: `len << 9 | sym`, or 0 for a longer code.
    fast: [u16; 1 << FAST_BITS],
}

const CANONICAL: Canonical = build_canonical();

const fn build_canonical() -> Canonical {
    let mut t = Canonical {
        codes: [0; 257],
        limit: [0; MAX_CODE_LEN + 1],
        base: [0; MAX_CODE_LEN + 1],
        sorted: [0; 257],
        fast: [0; 1 << FAST_BITS],
    };
    let mut code: u32 = 0;
    let mut n: usize = 0;
    let mut len = 1;
    while len <= MAX_CODE_LEN {
        let first = code;
        let offset = n as u32;
        let mut sym = 0;
        while sym < 257 {
            if CODE_LENGTHS[sym] as usize == len {
                t.codes[sym] = code;
                t.sorted[n] = sym as u16;
                if len <= FAST_BITS {
                    let shift = FAST_BITS - len;
                    let mut i = 0;
                    while i < (1 << shift) {
                        t.fast[((code as usize) << shift) | i] = ((len as u16) << 9) | sym as u16;
                        i += 1;
                    }
                }
                code += 1;
                n += 1;
            }
            sym += 1;
        }
        t.limit[len] = code;
        t.base[len] = offset.wrapping_sub(first);
        code <<= 1;
        len += 1;
    }
    t
}

/// Decodes a Huffman string (§5.2) onto `dst`. Errors: a code for EOS, padding longer than
/// 7 bits, or padding that is not the most significant bits of EOS (all ones).
fn huffman_decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), CompressionError> {
    let t = &CANONICAL;
    dst.reserve(src.len() + src.len() / 2 + 1);
    // Unconsumed bits, most significant first, left-aligned; bits past `nbits` are zero.
    let mut acc: u64 = 0;
    let mut nbits: usize = 0;
    let mut bytes = src.iter();
    loop {
        while nbits <= 56 {
            match bytes.next() {
                Some(&b) => {
                    acc |= u64::from(b) << (56 - nbits);
                    nbits += 8;
                }
                None => break,
            }
        }
        if nbits == 0 {
            return Ok(());
        }
        let fast = t
            .fast
            .get((acc >> (64 - FAST_BITS)) as usize)
            .copied()
            .unwrap_or(0);
        let (sym, len) = if fast != 0 {
            (fast & 0x1ff, usize::from(fast >> 9))
        } else {
            slow_symbol(t, acc).ok_or(CompressionError)?
        };
        if len > nbits {
            // What is left is no whole code: it must be at most 7 bits of EOS's prefix.
            let ones = (1u64 << nbits) - 1;
            return if nbits <= 7 && acc >> (64 - nbits) == ones {
                Ok(())
            } else {
                Err(CompressionError)
            };
        }
        if sym == EOS {
            return Err(CompressionError);
        }
        dst.push(sym as u8);
        acc <<= len;
        nbits -= len;
    }
}

/// A code longer than FAST_BITS: the canonical code's length is the first L whose L-bit
/// prefix is below `limit[L]`.
fn slow_symbol(t: &Canonical, acc: u64) -> Option<(u16, usize)> {
    let mut len = FAST_BITS + 1;
    while len <= MAX_CODE_LEN {
        let code = (acc >> (64 - len)) as u32;
        if code < *t.limit.get(len)? {
            let i = code.wrapping_add(*t.base.get(len)?) as usize;
            return Some((*t.sorted.get(i)?, len));
        }
        len += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// Appends `:status` (indexed from the static table for 200, 204, 206, 304, 400, 404, 500; otherwise a literal with the indexed name `:status`).
pub fn encode_status(code: u16, dst: &mut Vec<u8>) {
    let index = match code {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if index != 0 {
        // §6.1 indexed header field.
        dst.push(0x80 | index);
        return;
    }
    // §6.2.2 literal without indexing, indexed name.
    encode_int(STATUS_INDEX, 4, 0x00, dst);
    let mut digits = [0u8; 5];
    let mut n = 0;
    let mut rest = code;
    loop {
        if let Some(d) = digits.get_mut(n) {
            *d = b'0' + (rest % 10) as u8;
        }
        n += 1;
        rest /= 10;
        if rest == 0 || n == digits.len() {
            break;
        }
    }
    dst.push(n as u8);
    dst.extend(digits.iter().take(n).rev());
}

/// Appends one field as "literal without indexing" (or "never indexed" when `sensitive`),
/// with an indexed name when the name is in the static table; no Huffman (cheaper to produce).
/// The encoder never inserts into the peer's dynamic table, so it keeps no state and a peer's
/// SETTINGS_HEADER_TABLE_SIZE never matters. `name` is lowercase already.
pub fn encode_field(name: &[u8], value: &[u8], sensitive: bool, dst: &mut Vec<u8>) {
    // §6.2.2 (0000xxxx) or §6.2.3 (0001xxxx), 4-bit name index prefix.
    let flags = if sensitive { 0x10 } else { 0x00 };
    dst.reserve(name.len() + value.len() + 8);
    match static_name_index(name) {
        Some(index) => encode_int(index, 4, flags, dst),
        None => {
            dst.push(flags);
            encode_int(name.len(), 7, 0x00, dst);
            dst.extend_from_slice(name);
        }
    }
    encode_int(value.len(), 7, 0x00, dst);
    dst.extend_from_slice(value);
}

/// The first static-table index with this name.
fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// Appends a §5.1 integer with a `prefix`-bit prefix; `flags` fills the first byte's high bits.
fn encode_int(mut value: usize, prefix: u32, flags: u8, dst: &mut Vec<u8>) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        dst.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    dst.push(value as u8);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode(dec: &mut Decoder, block: &[u8]) -> Result<Fields, CompressionError> {
        let mut out = Vec::new();
        let complete = dec.decode(block, usize::MAX, |n, v| out.push((n.to_vec(), v.to_vec())))?;
        assert!(complete);
        Ok(out)
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn table(dec: &Decoder) -> Fields {
        dec.table
            .iter()
            .map(|e| (e.name().to_vec(), e.value().to_vec()))
            .collect()
    }

    fn check(
        dec: &mut Decoder,
        block: &str,
        expect: &[(&str, &str)],
        table_after: &[(&str, &str)],
        size: usize,
    ) {
        assert_eq!(decode(dec, &hex(block)).unwrap(), fields(expect));
        assert_eq!(table(dec), fields(table_after));
        assert_eq!(dec.size, size);
        assert_eq!(dec.size, dec.table.iter().map(Entry::size).sum::<usize>());
    }

    fn is_err(block: &[u8]) -> bool {
        Decoder::new(4096).decode(block, usize::MAX, |_, _| {}) == Err(CompressionError)
    }

    /// xorshift64* — deterministic, no crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Test-only Huffman encoder over the derived canonical codes.
    fn huffman_encode(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut n) = (0u64, 0u32);
        for &b in src {
            let len = u32::from(CODE_LENGTHS[usize::from(b)]);
            acc = (acc << len) | u64::from(CANONICAL.codes[usize::from(b)]);
            n += len;
            while n >= 8 {
                n -= 8;
                out.push((acc >> n) as u8);
            }
        }
        if n > 0 {
            let pad = 8 - n;
            out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
        }
        out
    }

    // --- RFC 7541 Appendix C.2: literal and indexed representations ---------------------------

    #[test]
    fn c2_1_literal_with_indexing() {
        let mut dec = Decoder::new(4096);
        check(
            &mut dec,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            &[("custom-key", "custom-header")],
            &[("custom-key", "custom-header")],
            55,
        );
    }

    #[test]
    fn c2_2_literal_without_indexing() {
        let mut dec = Decoder::new(4096);
        check(
            &mut dec,
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            &[],
            0,
        );
    }

    #[test]
    fn c2_3_literal_never_indexed() {
        let mut dec = Decoder::new(4096);
        check(
            &mut dec,
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            &[("password", "secret")],
            &[],
            0,
        );
    }

    #[test]
    fn c2_4_indexed() {
        let mut dec = Decoder::new(4096);
        check(&mut dec, "82", &[(":method", "GET")], &[], 0);
    }

    // --- C.3 / C.4: requests, without and with Huffman --------------------------------------

    fn requests(blocks: [&str; 3]) {
        let mut dec = Decoder::new(4096);
        let auth = (":authority", "www.example.com");
        let cache = ("cache-control", "no-cache");
        let custom = ("custom-key", "custom-value");
        check(
            &mut dec,
            blocks[0],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                auth,
            ],
            &[auth],
            57,
        );
        check(
            &mut dec,
            blocks[1],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                auth,
                cache,
            ],
            &[cache, auth],
            110,
        );
        check(
            &mut dec,
            blocks[2],
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                auth,
                custom,
            ],
            &[custom, cache, auth],
            164,
        );
    }

    #[test]
    fn c3_requests_without_huffman() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn c4_requests_with_huffman() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    // --- C.5 / C.6: responses, table size 256, eviction --------------------------------------

    fn responses(blocks: [&str; 3]) {
        let mut dec = Decoder::new(256);
        let s302 = (":status", "302");
        let s307 = (":status", "307");
        let cc = ("cache-control", "private");
        let date1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let date2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
        let loc = ("location", "https://www.example.com");
        let gzip = ("content-encoding", "gzip");
        let cookie = (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        );
        check(
            &mut dec,
            blocks[0],
            &[s302, cc, date1, loc],
            &[loc, date1, cc, s302],
            222,
        );
        check(
            &mut dec,
            blocks[1],
            &[s307, cc, date1, loc],
            &[s307, loc, date1, cc],
            222,
        );
        check(
            &mut dec,
            blocks[2],
            &[(":status", "200"), cc, date2, loc, gzip, cookie],
            &[cookie, gzip, date2],
            215,
        );
    }

    #[test]
    fn c5_responses_without_huffman() {
        responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31",
        ]);
    }

    #[test]
    fn c6_responses_with_huffman() {
        responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    // --- tables -------------------------------------------------------------------------------

    #[test]
    fn huffman_codes_match_appendix_b() {
        let c = &CANONICAL.codes;
        assert_eq!((c[0], CODE_LENGTHS[0]), (0x1ff8, 13));
        assert_eq!((c[usize::from(b' ')], CODE_LENGTHS[32]), (0x14, 6));
        assert_eq!((c[usize::from(b'0')], CODE_LENGTHS[48]), (0x0, 5));
        assert_eq!((c[usize::from(b'A')], CODE_LENGTHS[65]), (0x21, 6));
        assert_eq!((c[usize::from(b'a')], CODE_LENGTHS[97]), (0x3, 5));
        assert_eq!((c[usize::from(b'z')], CODE_LENGTHS[122]), (0x7b, 7));
        assert_eq!((c[10], CODE_LENGTHS[10]), (0x3ffffffc, 30));
        assert_eq!((c[255], CODE_LENGTHS[255]), (0x3ffffee, 26));
        assert_eq!((c[256], CODE_LENGTHS[256]), (0x3fffffff, 30));
        // A complete prefix code: Kraft sum exactly 1.
        let kraft: u64 = CODE_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn static_table_names_index_first_occurrence() {
        assert_eq!(STATIC_TABLE.len(), 61);
        assert_eq!(STATIC_TABLE[0], (&b":authority"[..], &b""[..]));
        assert_eq!(
            STATIC_TABLE[15],
            (&b"accept-encoding"[..], &b"gzip, deflate"[..])
        );
        assert_eq!(STATIC_TABLE[60], (&b"www-authenticate"[..], &b""[..]));
        for (i, (name, _)) in STATIC_TABLE.iter().enumerate() {
            let first = STATIC_TABLE.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name_index(name), Some(first), "{i}");
        }
        assert_eq!(static_name_index(b"x-forwarded-for"), None);
    }

    #[test]
    fn huffman_round_trip_all_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = rng.below(64);
            let src = rng.bytes(len);
            let mut out = Vec::new();
            huffman_decode(&huffman_encode(&src), &mut out).unwrap();
            assert_eq!(out, src);
        }
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        huffman_decode(&huffman_encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
    }

    // --- errors -------------------------------------------------------------------------------

    #[test]
    fn index_zero_is_an_error() {
        assert!(is_err(&[0x80]));
    }

    #[test]
    fn index_out_of_range_is_an_error() {
        assert!(is_err(&[0xbe])); // 62 with an empty dynamic table
        assert!(is_err(&[0x7e, 0x00])); // literal with indexed name 62
        assert!(is_err(&[0x0f, 0x2f, 0x00])); // without indexing, name index 62
        let mut dec = Decoder::new(4096);
        decode(
            &mut dec,
            &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
        )
        .unwrap();
        assert!(decode(&mut dec, &[0xbe]).is_ok());
        assert_eq!(decode(&mut dec, &[0xbf]), Err(CompressionError));
    }

    #[test]
    fn truncated_integer_is_an_error() {
        assert!(is_err(&[0xff]));
        assert!(is_err(&[0xff, 0x80]));
        assert!(is_err(&[0x40, 0x7f])); // name length prefix full, continuation missing
        assert!(is_err(&[0x3f])); // size update
    }

    #[test]
    fn integer_overflow_is_an_error() {
        let mut pos = 0;
        assert_eq!(
            decode_int(&[0x1f, 0xff, 0xff, 0xff, 0x7f], &mut pos, 5),
            Ok(31 + (1 << 28) - 1)
        );
        assert_eq!(pos, 5);
        assert_eq!(decode_int(&[0x1f, 0x9a, 0x0a], &mut 0, 5), Ok(1337)); // RFC 7541 C.1.2
        assert_eq!(
            decode_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x01], &mut 0, 5),
            Err(CompressionError)
        );
        assert!(is_err(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ]));
        assert!(is_err(&[0x40, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f]));
    }

    #[test]
    fn string_beyond_block_is_an_error() {
        assert!(is_err(&[0x40, 0x05, b'a', b'b']));
        assert!(is_err(&[0x04, 0x03, b'a', b'b']));
        assert!(is_err(&[0x04, 0x83, 0xff]));
        assert!(is_err(&[0x40, 0x01, b'a'])); // value missing entirely
    }

    #[test]
    fn huffman_bad_padding_is_an_error() {
        // "a" = 00011 padded with 111 is fine.
        assert!(!is_err(&[0x04, 0x81, 0x1f]));
        // Padding not all ones.
        assert!(is_err(&[0x04, 0x81, 0x18]));
        // Padding of 8 or more bits (a whole byte of ones, or 11 bits).
        assert!(is_err(&[0x04, 0x81, 0xff]));
        assert!(is_err(&[0x04, 0x82, 0x1f, 0xff]));
        // A truncated long code (0x00 is 13 bits: 11111111 11000).
        assert!(is_err(&[0x04, 0x81, 0xfe]));
    }

    #[test]
    fn huffman_eos_is_an_error() {
        assert!(is_err(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]));
        // "a" then EOS then padding.
        let mut bits: u64 = 0x3; // 00011
        bits = (bits << 30) | 0x3fff_ffff;
        bits = (bits << 5) | 0x1f; // 40 bits
        let bytes = bits.to_be_bytes();
        let mut block = vec![0x04, 0x85];
        block.extend_from_slice(&bytes[3..]);
        assert!(is_err(&block));
    }

    #[test]
    fn size_update_rules() {
        // Up to the advertised maximum, several in a row, at the start only.
        let mut dec = Decoder::new(4096);
        assert!(decode(&mut dec, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).is_ok());
        assert!(is_err(&[0x3f, 0xe2, 0x1f])); // 4097 > 4096
        assert!(is_err(&[0x82, 0x20])); // after a field
        assert!(is_err(&[0x20, 0x82, 0x3f, 0xe1, 0x1f]));

        // Shrinking evicts; zero empties the table.
        let mut dec = Decoder::new(4096);
        let add = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        decode(&mut dec, &add).unwrap();
        decode(&mut dec, &add).unwrap();
        assert_eq!(dec.size, 110);
        decode(&mut dec, &[0x3f, 0x29]).unwrap(); // 72: one entry stays
        assert_eq!((dec.table.len(), dec.size), (1, 55));
        decode(&mut dec, &[0x20]).unwrap();
        assert_eq!((dec.table.len(), dec.size), (0, 0));
        // With capacity 0 nothing is inserted, but the field is still delivered.
        assert_eq!(
            decode(&mut dec, &add).unwrap(),
            fields(&[("custom-key", "custom-header")])
        );
        assert_eq!(dec.size, 0);
        assert!(decode(&mut dec, &[0xbe]).is_err());
    }

    #[test]
    fn entry_larger_than_table_empties_it() {
        let mut dec = Decoder::new(100);
        let mut block = vec![0x40, 0x01, b'a', 0x01, b'b']; // 34
        block.extend_from_slice(&[0x40, 0x01, b'c', 0x01, b'd']); // 34
        decode(&mut dec, &block).unwrap();
        assert_eq!((dec.table.len(), dec.size), (2, 68));
        let mut big = vec![0x7e, 0x3f]; // name from dynamic index 62 ("c"), value of 63 bytes
        big.extend_from_slice(&[b'x'; 63]); // 1 + 63 + 32 = 96: evicts both, fits
        let got = decode(&mut dec, &big).unwrap();
        assert_eq!(got[0].0, b"c");
        assert_eq!((dec.table.len(), dec.size), (1, 96));
        let mut huge = vec![0x40, 0x01, b'e', 0x44];
        huge.extend_from_slice(&[b'y'; 68]); // 101 > 100
        decode(&mut dec, &huge).unwrap();
        assert_eq!((dec.table.len(), dec.size), (0, 0));
    }

    // --- header list size ---------------------------------------------------------------------

    #[test]
    fn list_size_limit_stops_delivery_but_keeps_table_in_step() {
        let mut dec = Decoder::new(4096);
        let mut block = vec![0x82]; // :method GET = 42
        block.extend_from_slice(&hex(
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        )); // 55
        block.push(0x84); // :path / = 38, would still fit in the rest, but comes after the limit
        block.extend_from_slice(&[0x40, 0x07]);
        block.extend_from_slice(b"x-later");
        block.extend_from_slice(&[0x81, 0x1f]); // Huffman "a"
        let mut got = Vec::new();
        let complete = dec
            .decode(&block, 42 + 40, |n, v| got.push((n.to_vec(), v.to_vec())))
            .unwrap();
        assert!(!complete);
        assert_eq!(got, fields(&[(":method", "GET")]));
        assert_eq!(
            table(&dec),
            fields(&[("x-later", "a"), ("custom-key", "custom-header")])
        );
        // The next block can reference both entries.
        assert_eq!(
            decode(&mut dec, &[0xbe, 0xbf]).unwrap(),
            fields(&[("x-later", "a"), ("custom-key", "custom-header")])
        );
        // Exactly at the limit is still complete.
        assert_eq!(dec.decode(&[0x82], 42, |_, _| {}), Ok(true));
        assert_eq!(dec.decode(&[0x82], 41, |_, _| {}), Ok(false));
        // An error after the limit is still an error.
        assert_eq!(
            dec.decode(&[0x82, 0x80], 0, |_, _| {}),
            Err(CompressionError)
        );
    }

    #[test]
    fn hpack_bomb_is_cut_off() {
        let mut dec = Decoder::new(4096);
        let mut first = vec![0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e]; // value length 127 + 0x21 + (0x1e << 7) = 4000
        first.extend_from_slice(&[b'v'; 4000]);
        decode(&mut dec, &first).unwrap();
        assert_eq!(dec.size, 4033);
        let bomb = vec![0xbe; 10_000];
        let mut delivered = 0;
        let complete = dec
            .decode(&bomb, 16_384, |n, v| delivered += n.len() + v.len() + 32)
            .unwrap();
        assert!(!complete);
        assert!(delivered <= 16_384);
        assert_eq!(delivered, 4 * 4033);
    }

    // --- encoder ------------------------------------------------------------------------------

    #[test]
    fn encoder_representations() {
        let mut dst = Vec::new();
        encode_status(200, &mut dst);
        encode_status(404, &mut dst);
        encode_status(302, &mut dst);
        assert_eq!(dst, [0x88, 0x8d, 0x08, 0x03, b'3', b'0', b'2']);

        let mut dst = Vec::new();
        encode_field(b"content-type", b"text/html", false, &mut dst);
        assert_eq!(dst[..2], [0x0f, 0x10]); // 15 + 16 = index 31
        let mut dst = Vec::new();
        encode_field(b"set-cookie", b"a=b", true, &mut dst);
        assert_eq!(dst, [0x1f, 0x28, 0x03, b'a', b'=', b'b']); // never indexed, index 55
        let mut dst = Vec::new();
        encode_field(b"x-user", b"", true, &mut dst);
        assert_eq!(dst, [0x10, 0x06, b'x', b'-', b'u', b's', b'e', b'r', 0x00]);
    }

    #[test]
    fn round_trip_random_fields() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        const TOKEN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~";
        for _ in 0..500 {
            let mut block = Vec::new();
            let mut expect: Fields = Vec::new();
            let code = if rng.below(2) == 0 {
                [200u16, 204, 206, 304, 400, 404, 500][rng.below(7)]
            } else {
                100 + rng.below(900) as u16
            };
            encode_status(code, &mut block);
            expect.push((b":status".to_vec(), code.to_string().into_bytes()));
            for _ in 0..rng.below(20) {
                let name = if rng.below(3) == 0 {
                    STATIC_TABLE[rng.below(61)].0.to_vec()
                } else {
                    let max = if rng.below(8) == 0 { 300 } else { 20 };
                    let len = 1 + rng.below(max);
                    (0..len).map(|_| TOKEN[rng.below(TOKEN.len())]).collect()
                };
                let max = if rng.below(8) == 0 { 5000 } else { 40 };
                let len = rng.below(max);
                let value: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = rng.below(95 + 128);
                        if b < 95 {
                            0x20 + b as u8
                        } else {
                            0x80 + (b - 95) as u8
                        }
                    })
                    .collect();
                encode_field(&name, &value, rng.below(4) == 0, &mut block);
                expect.push((name, value));
            }
            let mut dec = Decoder::new(4096);
            assert_eq!(decode(&mut dec, &block).unwrap(), expect);
            assert_eq!(dec.size, 0);
        }
        // Every u16 status decodes back.
        for code in [0u16, 7, 99, 1000, 65535] {
            let mut block = Vec::new();
            encode_status(code, &mut block);
            let got = decode(&mut Decoder::new(4096), &block).unwrap();
            assert_eq!(
                got,
                vec![(b":status".to_vec(), code.to_string().into_bytes())]
            );
        }
    }

    // --- robustness ---------------------------------------------------------------------------

    fn valid_blocks() -> Vec<Vec<u8>> {
        let mut blocks: Vec<Vec<u8>> = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "3fe1 1f40 0a63 7573 746f 6d2d 6b65 790d 6375 7374 6f6d 2d68 6561 6465 72be 1008
             7061 7373 776f 7264 0673 6563 7265 74",
        ]
        .iter()
        .map(|s| hex(s))
        .collect();
        let mut b = Vec::new();
        encode_status(302, &mut b);
        encode_field(b"location", b"https://example.com/\xff", false, &mut b);
        encode_field(b"x-custom", &[b'z'; 200], true, &mut b);
        blocks.push(b);
        blocks
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let seeds = valid_blocks();
        let mut dec = Decoder::new(4096);
        for i in 0..20_000 {
            let block = if i % 2 == 0 {
                let max = if rng.below(16) == 0 { 4096 } else { 64 };
                let len = rng.below(max);
                rng.bytes(len)
            } else {
                let mut b = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    match rng.below(4) {
                        0 if !b.is_empty() => {
                            let at = rng.below(b.len());
                            b[at] = rng.next() as u8;
                        }
                        1 if !b.is_empty() => {
                            let at = rng.below(b.len());
                            b[at] ^= 1 << rng.below(8);
                        }
                        2 => {
                            let at = rng.below(b.len() + 1);
                            b.truncate(at);
                        }
                        _ => {
                            let at = rng.below(b.len() + 1);
                            b.insert(at, rng.next() as u8);
                        }
                    }
                }
                b
            };
            let mut total = 0usize;
            let result = dec.decode(&block, 1 << 20, |n, v| total += n.len() + v.len());
            match result {
                Ok(_) => assert!(dec.size <= 4096),
                Err(CompressionError) => dec = Decoder::new(4096),
            }
            // Output is bounded by the input plus what the table can supply per byte.
            assert!(total <= block.len() * 8 + block.len() * 4096);
        }
    }

    #[test]
    fn large_blocks_decode_in_linear_time() {
        // 1 MiB of Huffman literals with incremental indexing plus indexed references.
        let name = huffman_encode(b"x-abcdefghij");
        let mut field = vec![0x40, 0x80 | name.len() as u8];
        field.extend_from_slice(&name);
        let value = huffman_encode(b"some-value-0123456789");
        field.push(0x80 | value.len() as u8);
        field.extend_from_slice(&value);
        field.push(0xbe);
        let mut block = Vec::new();
        while block.len() < 1 << 20 {
            block.extend_from_slice(&field);
        }
        let mut dec = Decoder::new(4096);
        let mut n = 0;
        assert_eq!(dec.decode(&block, usize::MAX, |_, _| n += 1), Ok(true));
        assert!(n > 40_000);
    }
}
