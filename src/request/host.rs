//! Canonical host names: the one spelling of `Host` / `:authority` that routing, policy and the JWT audience use.
//!
//! Lower-case, one trailing dot removed, port split off (RFC 9110 §4.2.3, §7.2). Anything that is
//! then not a plain DNS name, IPv4 address or bracketed IPv6 address is refused: userinfo, `%`,
//! non-ASCII, empty labels (`a..b`), a second port, commas, spaces.

use std::borrow::Cow;

/// A canonical authority: host without port, and the port when one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
}

/// Why a host value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHost(pub &'static str);

/// Canonicalises a `Host` value or URI authority. Borrows when it already is canonical.
pub fn canonical_authority(raw: &str) -> Result<Authority<'_>, BadHost> {
    if let Some(plain) = plain_authority(raw) {
        return Ok(plain);
    }
    full_authority(raw)
}

/// The common spelling read in one pass: an already canonical name (lower-case letters, digits,
/// `-`, `_`, non-empty labels of at most 63 bytes, 253 in all, no trailing dot) or IPv4 address,
/// then at most a valid `:port`. `None` for anything else, which [`full_authority`] reads; both give
/// the same answer for every input this one reads (a unit test compares them).
fn plain_authority(raw: &str) -> Option<Authority<'_>> {
    let b = raw.as_bytes();
    let mut label = 0usize;
    let mut end = b.len();
    for (i, c) in b.iter().enumerate() {
        match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' if label < 63 => label += 1,
            b'.' if label > 0 => label = 0,
            b':' => {
                end = i;
                break;
            }
            _ => return None,
        }
    }
    if label == 0 || end > 253 {
        return None;
    }
    let host = raw.get(..end).unwrap_or_default();
    let port = match raw.get(end + 1..) {
        None => None,
        // A bad port is left to the full reading, which names what is wrong first.
        Some(p) => Some(port_of(p).ok()?),
    };
    Some(Authority {
        host: Cow::Borrowed(host),
        port,
    })
}

/// Every other spelling: upper case, a trailing dot, brackets, and everything refused.
fn full_authority(raw: &str) -> Result<Authority<'_>, BadHost> {
    if raw.is_empty() {
        return Err(BadHost("empty host"));
    }
    // Byte loops, not `str` pattern searches: this runs on every request (hot path).
    if raw.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(BadHost(
            "spaces, control or non-ASCII characters in the host",
        ));
    }
    if raw
        .bytes()
        .any(|b| matches!(b, b'@' | b'%' | b',' | b'/' | b'\\' | b'?' | b'#'))
    {
        return Err(BadHost("userinfo, escapes, lists or paths in the host"));
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(BadHost("unclosed `[`"))?;
        inside
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| BadHost("not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(port_of(
                p.strip_prefix(':').ok_or(BadHost("junk after `]`"))?,
            )?),
        };
        (&raw[..inside.len() + 2], port)
    } else {
        match raw.bytes().position(|b| b == b':') {
            Some(i) => (&raw[..i], Some(port_of(&raw[i + 1..])?)),
            None => (raw, None),
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.starts_with('[') {
        check_name(host)?;
    }
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Ok(Authority { host, port })
}

fn port_of(p: &str) -> Result<u16, BadHost> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadHost("the port is not a number (or there are two)"));
    }
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(BadHost("the port is out of range"))
}

/// A DNS name (letters, digits, `-`, `_`; labels 1–63 bytes, 253 in all) or a dotted IPv4 address.
fn check_name(host: &str) -> Result<(), BadHost> {
    if host.is_empty() || host.len() > 253 {
        return Err(BadHost("empty or over-long host"));
    }
    for label in host.as_bytes().split(|b| *b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err(BadHost("an empty or over-long label in the host"));
        }
        if !label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(BadHost("characters a host name cannot have"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, Option<u16>) {
        let a = canonical_authority(raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        (a.host.into_owned(), a.port)
    }

    #[test]
    fn canonical_hosts() {
        assert_eq!(ok("app.example.com"), ("app.example.com".into(), None));
        assert_eq!(ok("App.Example.COM."), ("app.example.com".into(), None));
        assert_eq!(
            ok("app.example.com.:8443"),
            ("app.example.com".into(), Some(8443))
        );
        assert_eq!(ok("127.0.0.1:80"), ("127.0.0.1".into(), Some(80)));
        assert_eq!(ok("[::1]:8080"), ("[::1]".into(), Some(8080)));
        assert_eq!(ok("localhost"), ("localhost".into(), None));
        assert!(matches!(
            canonical_authority("a.b").map(|a| a.host),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn the_one_pass_reading_agrees_with_the_full_one() {
        // Random strings over the bytes that matter, 100,000 of them: wherever the one-pass
        // reading answers, the full reading answers the same.
        const BYTES: &[u8] = b"az09-_.:AZ[]@%,/\\?# \x7f\xc3";
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x9e37_79b9);
        let mut next = move || rand::Rng::gen::<u64>(&mut rng);
        let mut read = 0;
        for i in 0..100_000 {
            let len = if i % 100 == 0 {
                250 + next() % 10
            } else {
                next() % 12
            };
            let mut raw = Vec::new();
            for _ in 0..len {
                // Mostly name bytes, so that many strings are read by the one-pass reading.
                let pick = next() as usize;
                raw.push(if pick % 4 == 0 {
                    BYTES[pick / 4 % BYTES.len()]
                } else {
                    BYTES[pick / 4 % 6]
                });
            }
            let Ok(raw) = String::from_utf8(raw) else {
                continue;
            };
            if let Some(fast) = plain_authority(&raw) {
                read += 1;
                assert_eq!(Ok(fast), full_authority(&raw), "{raw:?}");
            }
        }
        assert!(
            read > 20_000,
            "only {read} strings were read by the one-pass reading"
        );
        let long = |n: usize| {
            let mut h = vec!["a".repeat(49); 6].join(".");
            h.truncate(n);
            h
        };
        for raw in [
            "a:",
            "a:80:81",
            "a:080",
            "a:65536",
            "a:0",
            &"a".repeat(64),
            &"a".repeat(63),
            &long(253),
            &long(254),
            &format!("{}:80", long(254)),
        ] {
            assert_eq!(
                plain_authority(raw).map_or_else(|| full_authority(raw), Ok),
                full_authority(raw),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn refused_hosts() {
        for raw in [
            "",
            "a@b.com",
            "user:pw@b.com",
            "b.com:80:81",
            "b.com:",
            "b.com:x",
            "b.com:99999",
            "b.com:0",
            "a..b",
            ".b.com",
            "b.com..",
            "a,b",
            "a b",
            "é.com",
            "a%2eb",
            "a/b",
            "[::1",
            "[zz]",
            "[::1]x",
            "a\\b",
        ] {
            assert!(canonical_authority(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
