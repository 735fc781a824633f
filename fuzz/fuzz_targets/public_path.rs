//! `normalize_path`: an accepted path is clean (no empty, `.` or `..` segments, no hidden
//! separators) and normalising is idempotent.
//!
//! (Found by this target: non-ASCII characters used to be re-encoded byte by byte; fixed.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::routing::{normalize_path, PublicPath};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Some(n) = normalize_path(input) else {
        return;
    };
    assert!(n.starts_with('/'), "{n:?} from {input:?}");
    assert!(!n.contains("//"), "{n:?} from {input:?}");
    assert!(!n.contains('\\'), "{n:?} from {input:?}");
    assert!(!n.bytes().any(|b| b < 0x20), "control byte in {n:?} from {input:?}");
    for seg in n.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "dot segment in {n:?} from {input:?}");
    }
    let lower = n.to_ascii_lowercase();
    for hidden in ["%2f", "%5c", "%00", "%2e"] {
        assert!(!lower.contains(hidden), "{hidden} in {n:?} from {input:?}");
    }
    // Every `%` left starts a valid escape.
    for (i, _) in n.match_indices('%') {
        let hex = n.get(i + 1..i + 3).unwrap_or("");
        assert!(
            hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "bad escape at {i} in {n:?} from {input:?}"
        );
    }
    // No C0/C1 controls. DEL passes through like any other byte (hyper refuses it in request
    // targets before routing), so it is not checked.
    assert!(
        !n.chars().any(|c| c.is_control() && c != '\u{7f}'),
        "control character in {n:?} from {input:?}"
    );
    // Idempotent, and acceptable as a configured public path.
    let again = normalize_path(&n);
    assert_eq!(again.as_deref(), Some(n.as_str()), "not idempotent for {input:?}");
    assert!(PublicPath::parse(&n).is_ok(), "{n:?} from {input:?} is not a valid public path");
});
