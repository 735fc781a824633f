//! Secrets: random tokens and codes from the OS CSPRNG, SHA-256 / HMAC hashing, constant-time
//! comparison, and the one master secret every key is derived from (HKDF-SHA256).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
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

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().into()
        }
        // HMAC accepts keys of any length: unreachable, but never a panic.
        Err(_) => sha256(msg),
    }
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether a presented token has the shape of one of ours (43 base64url characters); cheap pre-filter.
pub fn looks_like_token(s: &str) -> bool {
    // A table and no early exit: one load per byte (this runs on every request).
    s.len() == 43 && s.bytes().fold(true, |ok, b| ok & BASE64URL[usize::from(b)])
}

/// The base64url alphabet as a byte table.
const BASE64URL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        i += 1;
    }
    t
};

/// Shortest master secret accepted, in bytes.
pub const MASTER_MIN_BYTES: usize = 32;
/// Longest master secret file read, in bytes.
const MASTER_MAX_FILE: usize = 4096;

/// The one long-term secret. Every key is derived from it with HKDF-SHA256 (no salt):
/// the code HMAC key (`info = "portcullis code"`) and the Ed25519 JWT signing key of each
/// rotation period (`info = "portcullis jwt <period>"`). Only this value is ever stored, so
/// replicas that share it derive the same keys. Never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecret(Vec<u8>);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

impl MasterSecret {
    /// A fresh secret of 32 random bytes.
    pub fn generate() -> MasterSecret {
        MasterSecret(random_bytes(MASTER_MIN_BYTES))
    }

    /// Raw bytes (at least [`MASTER_MIN_BYTES`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<MasterSecret, String> {
        if bytes.len() < MASTER_MIN_BYTES {
            return Err(format!(
                "holds {} bytes; at least {MASTER_MIN_BYTES} are needed",
                bytes.len()
            ));
        }
        if bytes.iter().all(|b| *b == bytes[0]) {
            return Err("is one byte repeated, not a random secret".into());
        }
        Ok(MasterSecret(bytes))
    }

    /// Reads the text of a secret file: hex or base64 (standard or URL-safe, padded or not) of
    /// at least 32 bytes, surrounding whitespace ignored. E.g. `openssl rand -hex 32`.
    pub fn parse(text: &[u8]) -> Result<MasterSecret, String> {
        const HOWTO: &str = "write 32 random bytes as hex or base64, e.g. `openssl rand -hex 32`";
        if text.len() > MASTER_MAX_FILE {
            return Err(format!("is larger than {MASTER_MAX_FILE} bytes; {HOWTO}"));
        }
        let Ok(s) = std::str::from_utf8(text) else {
            return Err(format!("is not text; {HOWTO}"));
        };
        let s = s.trim();
        if s.is_empty() {
            return Err(format!("is empty; {HOWTO}"));
        }
        let bytes = if s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            decode_hex(s)
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|e| e.decode(s).ok())
        };
        let Some(bytes) = bytes else {
            return Err(format!("is neither hex nor base64; {HOWTO}"));
        };
        Self::from_bytes(bytes).map_err(|e| format!("{e}; {HOWTO}"))
    }

    /// The form written to `data_dir/secret`: lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `HKDF-SHA256(ikm = master, salt = none, info)`, 32 bytes.
    pub fn derive(&self, info: &str) -> [u8; 32] {
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit (255 * 32), so expand cannot fail; the
        // fallback (an HMAC under the same key) is never taken but keeps this total.
        if Hkdf::<Sha256>::new(None, &self.0)
            .expand(info.as_bytes(), &mut okm)
            .is_err()
        {
            okm = code_mac(&self.0, info, "");
        }
        okm
    }

    /// The HMAC key for one-time codes.
    pub fn code_key(&self) -> [u8; 32] {
        self.derive("portcullis code")
    }

    /// The Ed25519 seed of rotation period `period` (Unix time / rotation length).
    pub fn jwt_seed(&self, period: u64) -> [u8; 32] {
        self.derive(&format!("portcullis jwt {period}"))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_shape_is_43_base64url_characters_whatever_the_other_characters_are() {
        let base = "A".repeat(43);
        assert!(looks_like_token(&base));
        assert!(!looks_like_token(&base[1..]));
        assert!(!looks_like_token(&format!("{base}A")));
        let others = (0u8..=0x7f).map(char::from).chain(['é', '\u{ff}', '€']);
        for c in others {
            let want = c.is_ascii_alphanumeric() || c == '-' || c == '_';
            for at in [0, 21, 42] {
                let mut t: Vec<char> = base.chars().collect();
                t[at] = c;
                let t: String = t.into_iter().collect();
                // A wider character makes the string longer than 43 bytes: never a token.
                assert_eq!(looks_like_token(&t), want && t.len() == 43, "{c:?} at {at}");
            }
        }
    }

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

    #[test]
    fn hkdf_derivation_is_deterministic_and_separated() {
        let m = MasterSecret::from_bytes((0u8..32).collect()).unwrap();
        let again = MasterSecret::parse(m.to_hex().as_bytes()).unwrap();
        assert_eq!(m, again);
        // Known answers, computed independently (Python hmac/hashlib, RFC 5869 with no salt):
        // a change of info string or KDF would silently re-key every replica.
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(m.code_key()),
            "7d83cd057ac54a9e17a332f03c55286421768ab50a28409d16b216bc1f11bac2"
        );
        assert_eq!(
            hex(m.jwt_seed(2900)),
            "c043b9328ab969fdc6f72d09625928f3c1b792dc91ad4cdb7296e3df3026461f"
        );
        assert_eq!(m.jwt_seed(7), again.jwt_seed(7), "same master, same keys");
        assert_ne!(m.jwt_seed(7), m.jwt_seed(8), "each period its own key");
        assert_ne!(m.code_key(), m.jwt_seed(0));
        let other = MasterSecret::generate();
        assert_ne!(other.code_key(), m.code_key());
        assert_ne!(other.jwt_seed(7), m.jwt_seed(7));
    }

    #[test]
    fn master_secret_formats() {
        let raw: Vec<u8> = (100u8..140).collect();
        let m = MasterSecret::from_bytes(raw.clone()).unwrap();
        for text in [
            format!("{}\n", m.to_hex()),
            m.to_hex().to_uppercase(),
            STANDARD.encode(&raw),
            format!("  {}  ", URL_SAFE_NO_PAD.encode(&raw)),
        ] {
            assert_eq!(MasterSecret::parse(text.as_bytes()).unwrap(), m, "{text}");
        }
        for bad in [
            "".to_string(),
            "00".repeat(31),
            "ab".repeat(32),
            "not a secret at all, just some words!".into(),
        ] {
            assert!(MasterSecret::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(
            MasterSecret::parse(&[0xff; 40]).is_err(),
            "binary is refused"
        );
        assert_eq!(format!("{m:?}"), "MasterSecret(..)");
    }
}
