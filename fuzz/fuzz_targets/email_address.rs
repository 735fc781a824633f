//! `parse_address`: accepted addresses have one clean canonical form, and parsing is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::address::{parse_address, parse_domain};

/// Characters that must never survive into a canonical address (mail header / SMTP injection,
/// display-name and comment syntax, source routes, IP literals). `'` is allowed on purpose (o'brien).
const FORBIDDEN: &[u8] = b"\"',<>()[]\\;:% !|/";

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(addr) = parse_address(input) else {
        return;
    };
    let c = addr.canonical();
    assert_eq!(c.matches('@').count(), 1, "not exactly one @: {c:?} from {input:?}");
    assert!(c.is_ascii(), "non-ASCII canonical {c:?}");
    assert!(c.len() <= 254, "too long: {}", c.len());
    for b in c.bytes() {
        assert!(!b.is_ascii_uppercase(), "upper case in {c:?}");
        assert!(!b.is_ascii_whitespace() && !b.is_ascii_control(), "space/control in {c:?}");
        assert!(
            b == b'\'' || !FORBIDDEN.contains(&b),
            "forbidden byte {:?} in {c:?}",
            b as char
        );
    }
    let (local, domain) = c.split_once('@').expect("one @");
    assert_eq!(addr.local(), local);
    assert_eq!(addr.domain(), domain);
    assert!(!local.is_empty() && local.len() <= 64, "local part {local:?}");
    assert_eq!(addr.to_string(), c);
    // The domain is a valid domain on its own and already canonical.
    assert_eq!(parse_domain(domain).as_deref(), Ok(domain), "domain {domain:?}");
    // Canonicalisation only trims blanks and lower-cases: nothing else is rewritten.
    assert_eq!(c, input.trim_matches([' ', '\t']).to_ascii_lowercase());
    // The mailer can send to it: it re-parses the canonical form with lettre (src/mail/mod.rs).
    let to: lettre::Address = c
        .parse()
        .unwrap_or_else(|e| panic!("lettre refuses canonical {c:?}: {e}"));
    assert_eq!(AsRef::<str>::as_ref(&to), c);
    // Idempotent.
    let again = parse_address(c).unwrap_or_else(|e| panic!("canonical {c:?} refused: {e}"));
    assert_eq!(again.canonical(), c);
    assert_eq!(again, addr);
});
