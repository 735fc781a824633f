//! Secrets: random tokens and codes from the OS CSPRNG, SHA-256 / HMAC hashing, constant-time comparison.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A 256-bit random token, base64url without padding (43 characters).
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A 128-bit random public identifier (challenge ids), base64url (22 characters).
pub fn random_id() -> String {
    let mut buf = [0u8; 16];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `n` random bytes (server secret).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    OsRng.fill_bytes(&mut buf);
    buf
}

/// A decimal code of `digits` digits, uniform over all 10^digits values (leading zeros kept).
pub fn random_code(digits: u32) -> String {
    let digits = digits.clamp(1, 18);
    let bound = 10u64.pow(digits);
    let n = OsRng.gen_range(0..bound);
    format!("{n:0width$}", width = digits as usize)
}

/// SHA-256 of a bearer secret (link and session tokens are stored only as this).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 of a code bound to its challenge: `HMAC(secret, challenge_id || 0 || code)`.
pub fn code_mac(secret: &[u8], challenge_id: &str, code: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an unkeyed hash defensively.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(challenge_id.as_bytes());
            mac.update(&[0]);
            mac.update(code.as_bytes());
            mac.finalize().into_bytes().into()
        }
        Err(_) => sha256(format!("{challenge_id}\0{code}").as_bytes()),
    }
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether a presented token has the shape of one of ours (43 base64url characters); cheap pre-filter.
pub fn looks_like_token(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert!(looks_like_token(&a));
        assert_eq!(random_id().len(), 22);
    }

    #[test]
    fn codes_have_fixed_width_and_cover_digits() {
        let mut seen = [false; 10];
        for _ in 0..2000 {
            let c = random_code(6);
            assert_eq!(c.len(), 6);
            for b in c.bytes() {
                seen[(b - b'0') as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        // First digit is zero about 10% of the time: uniform, not 100000..999999.
        let zeros = (0..5000)
            .filter(|_| random_code(6).starts_with('0'))
            .count();
        assert!(zeros > 300 && zeros < 700, "{zeros}");
    }

    #[test]
    fn code_mac_binds_challenge() {
        let k = b"secret";
        assert_ne!(code_mac(k, "c1", "123456"), code_mac(k, "c2", "123456"));
        assert!(ct_eq(&code_mac(k, "c1", "1"), &code_mac(k, "c1", "1")));
        assert!(!ct_eq(b"a", b"ab"));
    }
}
