//! Canonical request paths: the readings of a raw path that decisions are made on, and what makes a path ambiguous.
//!
//! Servers read the same raw path differently: Werkzeug decodes `%2F`, Tomcat and Jetty strip `;`
//! parameters (so `..;` climbs), IIS and some Java stacks turn `\` into `/`. The gateway judges
//! every plausible reading and takes the strictest (see [`crate::routing::decide`]); spellings whose
//! meaning differs between common servers are [`Ambiguity`]s, refused by default.

use std::borrow::Cow;

/// Why a path reads differently on different servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// `%2F` or `%5C`: a separator some upstreams decode and others do not.
    EncodedSeparator,
    /// A raw `\`, which Windows and some Java stacks treat as `/`.
    Backslash,
    /// NUL or another control character, raw or escaped.
    Control,
    /// `%` not followed by two hex digits (this includes IIS-style `%u002f`).
    BadEscape,
    /// `%25` followed by hex: decoded twice by some stacks (`%252f`).
    DoubleEncoding,
    /// Escapes of bytes that do not form valid (shortest-form) UTF-8, such as `%c0%af`.
    InvalidUtf8,
    /// Not a path at all (`*`, or not starting with `/`).
    NotAPath,
}

impl Ambiguity {
    /// A short phrase for logs and error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguity::EncodedSeparator => "an encoded `/` or `\\`",
            Ambiguity::Backslash => "a `\\`",
            Ambiguity::Control => "a control character",
            Ambiguity::BadEscape => "a malformed %-escape",
            Ambiguity::DoubleEncoding => "a double %-encoding",
            Ambiguity::InvalidUtf8 => "escapes that are not valid UTF-8",
            Ambiguity::NotAPath => "no leading `/`",
        }
    }
}

/// The readings of one raw path. `primary` is what routing and public paths use; `alternates`
/// are other ways an upstream may read it (each is judged too, and the strictest wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    /// Unreserved escapes decoded, other escapes upper-cased, non-ASCII bytes escaped, `//` merged,
    /// `;` parameters of each segment removed, dot segments resolved. Borrowed when the raw path
    /// already is canonical (the common case: no allocation).
    pub primary: Cow<'a, str>,
    /// At most two more readings: with `;` kept as part of the segment (Werkzeug, Go), and, for an
    /// ambiguous path, with encoded separators, `\` and double encodings decoded (the most
    /// generous decoder's view).
    pub alternates: Vec<String>,
    /// Set when the path is ambiguous (see [`Ambiguity`]); the first reason found.
    pub ambiguity: Option<Ambiguity>,
}

impl CanonicalPath<'_> {
    /// The same readings, owning the primary one.
    pub fn into_owned(self) -> CanonicalPath<'static> {
        CanonicalPath {
            primary: Cow::Owned(self.primary.into_owned()),
            alternates: self.alternates,
            ambiguity: self.ambiguity,
        }
    }

    /// Every reading, primary first.
    pub fn readings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.primary.as_ref()).chain(self.alternates.iter().map(String::as_str))
    }
}

/// Whether `raw` is already canonical: plain path bytes, no escapes, params, dots or doubled slashes.
fn is_plain(raw: &str) -> bool {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut prev = 0u8;
    for &c in b {
        let ok = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            )
            || (c == b'/' && prev != b'/')
            || (c == b'.' && prev != b'/' && prev != b'.');
        if !ok {
            return false;
        }
        prev = c;
    }
    // A trailing `/.` or `/..` is caught above (a dot right after a slash).
    true
}

/// How an escape sequence is treated by one decoding pass.
#[derive(Clone, Copy)]
struct Mode {
    /// Strip `;params` from each segment (Tomcat, Jetty, Spring).
    strip_params: bool,
    /// Decode `%2F`, `%5C`, `\` to `/` and `%25XX` to `%XX` first (the most generous reader).
    generous: bool,
}

/// Canonicalises a raw request path (without query). Never fails: ambiguity is reported, and the
/// caller decides whether to refuse it (the default) or judge it by its strictest reading.
pub fn canonicalize(raw: &str) -> CanonicalPath<'_> {
    if is_plain(raw) {
        return CanonicalPath {
            primary: Cow::Borrowed(raw),
            alternates: Vec::new(),
            ambiguity: None,
        };
    }
    let (primary, ambiguity) = read(
        raw,
        Mode {
            strip_params: true,
            generous: false,
        },
    );
    let mut alternates = Vec::new();
    let push = |s: String, primary: &str, alternates: &mut Vec<String>| {
        if s != primary && !alternates.contains(&s) {
            alternates.push(s);
        }
    };
    if raw.contains(';') {
        let (literal, _) = read(
            raw,
            Mode {
                strip_params: false,
                generous: false,
            },
        );
        push(literal, &primary, &mut alternates);
    }
    if ambiguity.is_some() {
        let (generous, _) = read(
            raw,
            Mode {
                strip_params: true,
                generous: true,
            },
        );
        push(generous, &primary, &mut alternates);
        let (generous_literal, _) = read(
            raw,
            Mode {
                strip_params: false,
                generous: true,
            },
        );
        push(generous_literal, &primary, &mut alternates);
    }
    CanonicalPath {
        primary: Cow::Owned(primary),
        alternates,
        ambiguity,
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unreserved(v: u8) -> bool {
    v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut Vec<u8>, v: u8) {
    out.extend_from_slice(&[b'%', HEX[(v >> 4) as usize], HEX[(v & 15) as usize]]);
}

/// One decoding pass: returns the canonical reading and the first ambiguity seen.
fn read(raw: &str, mode: Mode) -> (String, Option<Ambiguity>) {
    let mut amb: Option<Ambiguity> = None;
    let flag = |a: Ambiguity, amb: &mut Option<Ambiguity>| {
        amb.get_or_insert(a);
    };
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        flag(Ambiguity::NotAPath, &mut amb);
    }
    // Pass 1: decode into bytes. Escaped non-unreserved bytes stay escaped (upper-case hex);
    // runs of escaped high bytes are checked for valid UTF-8.
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 1);
    let mut high: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (h, l) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            );
            let (Some(h), Some(l)) = (h, l) else {
                flag(Ambiguity::BadEscape, &mut amb);
                out.extend_from_slice(b"%25");
                i += 1;
                continue;
            };
            let mut v = (h << 4) | l;
            i += 3;
            if v == b'%' {
                let (h2, l2) = (
                    b.get(i).copied().and_then(hex),
                    b.get(i + 1).copied().and_then(hex),
                );
                if let (Some(h2), Some(l2)) = (h2, l2) {
                    flag(Ambiguity::DoubleEncoding, &mut amb);
                    if mode.generous {
                        v = (h2 << 4) | l2;
                        i += 2;
                    }
                }
            }
            if v >= 0x80 {
                high.push(v);
                push_escaped(&mut out, v);
                continue;
            }
            check_high(&mut high, &mut amb);
            if v < 0x20 || v == 0x7f {
                flag(Ambiguity::Control, &mut amb);
                push_escaped(&mut out, v);
            } else if v == b'/' || v == b'\\' {
                flag(Ambiguity::EncodedSeparator, &mut amb);
                if mode.generous {
                    out.push(b'/');
                } else {
                    push_escaped(&mut out, v);
                }
            } else if unreserved(v) {
                out.push(v);
            } else {
                push_escaped(&mut out, v);
            }
            continue;
        }
        check_high(&mut high, &mut amb);
        i += 1;
        if c == b'\\' {
            flag(Ambiguity::Backslash, &mut amb);
            if mode.generous {
                out.push(b'/');
            } else {
                push_escaped(&mut out, c);
            }
        } else if c < 0x20 || c == 0x7f {
            flag(Ambiguity::Control, &mut amb);
            push_escaped(&mut out, c);
        } else if c >= 0x80
            || c == b' '
            || c == b'"'
            || c == b'<'
            || c == b'>'
            || c == b'`'
            || c == b'{'
            || c == b'}'
            || c == b'|'
            || c == b'^'
        {
            // Raw bytes a client should have escaped: the escaped spelling is the canonical one.
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    check_high(&mut high, &mut amb);
    // Pass 2: segments. Everything left is ASCII.
    let text = String::from_utf8_lossy(&out);
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in text.split('/') {
        let seg = if mode.strip_params {
            seg.split(';').next().unwrap_or("")
        } else {
            seg
        };
        trailing = false;
        match seg {
            "" | "." => trailing = true,
            ".." => {
                segs.pop();
                trailing = true;
            }
            s => segs.push(s),
        }
    }
    let mut n = String::with_capacity(text.len());
    for s in &segs {
        n.push('/');
        n.push_str(s);
    }
    if n.is_empty() || (trailing && !segs.is_empty()) {
        n.push('/');
    }
    (n, amb)
}

/// Validates a finished run of escaped bytes >= 0x80: it must be valid, shortest-form UTF-8
/// (Rust's decoder refuses overlong forms and surrogates).
fn check_high(high: &mut Vec<u8>, amb: &mut Option<Ambiguity>) {
    if !high.is_empty() {
        if std::str::from_utf8(high).is_err() {
            amb.get_or_insert(Ambiguity::InvalidUtf8);
        }
        high.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> (String, Option<Ambiguity>) {
        let c = canonicalize(raw);
        (c.primary.into_owned(), c.ambiguity)
    }

    #[test]
    fn canonical_forms() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b/./c/../d", "/a/b/d"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/%41dmin", "/Admin"),
            ("/../../etc", "/etc"),
            ("/x/", "/x/"),
            ("/x/.", "/x/"),
            ("/x/y/..", "/x/"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/admin;x/secret", "/admin/secret"),
            ("/public/..;/admin/secret", "/admin/secret"),
            ("/public/;/../admin/secret", "/admin/secret"),
            ("/é", "/%C3%A9"),
            ("/%c3%a9", "/%C3%A9"),
            ("/healthz;jsessionid=1", "/healthz"),
        ];
        for (raw, want) in cases {
            assert_eq!(p(raw), (want.to_string(), None), "{raw}");
        }
    }

    #[test]
    fn ambiguous_spellings() {
        use Ambiguity::*;
        let cases: &[(&str, Ambiguity)] = &[
            ("/admin%2fsecret", EncodedSeparator),
            ("/admin%2Fsecret", EncodedSeparator),
            ("/admin%5csecret", EncodedSeparator),
            ("/admin\\secret", Backslash),
            ("/a%00b", Control),
            ("/a%0ab", Control),
            ("/%zz", BadEscape),
            ("/%4", BadEscape),
            ("/%u002fadmin", BadEscape),
            ("/%252fadmin", DoubleEncoding),
            ("/%252e%252e/admin", DoubleEncoding),
            ("/%c0%af", InvalidUtf8),
            ("/%ff", InvalidUtf8),
            ("/%ed%a0%80", InvalidUtf8),
            ("*", NotAPath),
        ];
        for (raw, want) in cases {
            assert_eq!(p(raw).1, Some(*want), "{raw}");
        }
    }

    #[test]
    fn alternates_cover_other_readers() {
        let c = canonicalize("/admin;x/secret");
        assert!(c.readings().any(|r| r == "/admin;x/secret"));
        let c = canonicalize("/public%2f..%2fadmin");
        assert!(c.readings().any(|r| r == "/admin"), "{c:?}");
        let c = canonicalize("/admin%5csecret");
        assert!(c.readings().any(|r| r == "/admin/secret"), "{c:?}");
        let c = canonicalize("/%252e%252e/admin");
        assert!(c.readings().any(|r| r == "/admin"), "{c:?}");
    }

    #[test]
    fn canonical_is_a_fixed_point() {
        for raw in ["/a/./b/../c;p/d%2e/", "/é/🍕", "/x%20y/%7e", "/%41/..;/b"] {
            let once = canonicalize(raw).primary.into_owned();
            let twice = canonicalize(&once).primary.into_owned();
            assert_eq!(once, twice, "{raw}");
        }
    }

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            canonicalize("/api/v1/items").primary,
            Cow::Borrowed(_)
        ));
        assert!(matches!(canonicalize("/a/b.c").primary, Cow::Borrowed(_)));
        assert!(matches!(canonicalize("/a/./b").primary, Cow::Owned(_)));
    }
}
