//! Signed identity for upstreams: short-lived EdDSA (Ed25519) JWTs whose keys are derived from the
//! master secret per rotation period (nothing stored), rotated with overlap, published as a JWKS.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use crate::crypto::MasterSecret;

/// Length of one rotation period: the signing key changes at every multiple of this (Unix time).
pub const ROTATE_AFTER: u64 = 7 * 24 * 3600;
/// Retired keys stay in the JWKS this much longer (one period: the previous key is published).
pub const KEEP_RETIRED: u64 = ROTATE_AFTER;

/// The current signing key and the published key set.
pub struct Keys {
    kid: String,
    signing: SigningKey,
    /// `{"keys": [...]}`, newest first.
    pub jwks: String,
    /// Start of the current period.
    pub created_at: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The public JWK of a key and its `kid`: the RFC 7638 thumbprint (base64url SHA-256 of the
/// canonical `{"crv","kty","x"}`), so every replica names the same key the same way.
fn public_jwk(key: &SigningKey) -> (String, serde_json::Value) {
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(crate::crypto::sha256(canonical.as_bytes()));
    let jwk = serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": kid,
        "x": x,
    });
    (kid, jwk)
}

/// The keys in force at `now`: this period's signing key (HKDF of the master, see
/// [`MasterSecret::jwt_seed`]), and a JWKS with it and the previous period's key, so verifiers
/// that cached the set keep working across a rotation. Deterministic: replicas sharing the
/// master agree without talking to each other.
pub fn keys_at(master: &MasterSecret, now: u64) -> Arc<Keys> {
    let period = now / ROTATE_AFTER;
    let signing = SigningKey::from_bytes(&master.jwt_seed(period));
    let (kid, current) = public_jwk(&signing);
    let mut published = vec![current];
    if let Some(previous) = period.checked_sub(1) {
        published.push(public_jwk(&SigningKey::from_bytes(&master.jwt_seed(previous))).1);
    }
    Arc::new(Keys {
        kid,
        signing,
        jwks: serde_json::json!({ "keys": published }).to_string(),
        created_at: period * ROTATE_AFTER,
    })
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    email: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

impl Keys {
    /// A compact JWS (`header.payload.signature`) asserting `email` to the app at `audience`.
    pub fn assertion(
        &self,
        issuer: &str,
        email: &str,
        audience: &str,
        now: u64,
        ttl: u64,
    ) -> String {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": self.kid});
        let claims = Claims {
            iss: issuer,
            sub: email,
            email,
            aud: audience,
            iat: now,
            nbf: now.saturating_sub(30),
            exp: now + ttl,
        };
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default()));
        let sig = self.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(k: &Keys) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&k.jwks).unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn keys_rotate_with_overlap_and_are_derived() {
        let master = MasterSecret::generate();
        let t0 = 3000 * ROTATE_AFTER + 5;
        let k1 = keys_at(&master, t0);
        let same = keys_at(&master, t0 + 1000);
        assert_eq!(k1.kid, same.kid);
        assert_eq!(k1.jwks, same.jwks);
        assert_eq!(k1.created_at, 3000 * ROTATE_AFTER);
        assert_eq!(kids(&k1).len(), 2, "current and previous");
        assert_eq!(kids(&k1)[0], k1.kid, "current first");
        let k2 = keys_at(&master, t0 + ROTATE_AFTER);
        assert_ne!(k1.kid, k2.kid);
        assert_eq!(
            kids(&k2),
            vec![k2.kid.clone(), k1.kid.clone()],
            "retired key still published"
        );
        let k3 = keys_at(&master, t0 + ROTATE_AFTER + KEEP_RETIRED);
        assert!(!kids(&k3).contains(&k1.kid), "old key pruned");
        // Another replica with the same master: the same keys; another master: others.
        let replica = MasterSecret::parse(master.to_hex().as_bytes()).unwrap();
        assert_eq!(keys_at(&replica, t0).jwks, k1.jwks);
        assert_ne!(keys_at(&MasterSecret::generate(), t0).kid, k1.kid);
        let t = k3.assertion(
            "https://auth.example.com",
            "a@example.com",
            "app.example.com",
            10,
            60,
        );
        assert_eq!(t.split('.').count(), 3);
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its Ed25519 example key.
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let (kid, jwk) = public_jwk(&SigningKey::from_bytes(&seed));
        assert_eq!(jwk["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert_eq!(kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
