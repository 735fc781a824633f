//! Signed identity for upstreams: short-lived EdDSA (Ed25519) JWTs, keys kept in the store and rotated with overlap, JWKS.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// A new signing key is made after this long.
pub const ROTATE_AFTER: u64 = 7 * 24 * 3600;
/// Retired keys stay in the JWKS this much longer, so verifiers that cache it keep working.
pub const KEEP_RETIRED: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// Ed25519 seed, base64.
    seed: String,
    created_at: u64,
}

/// The current signing key and the published key set.
pub struct Keys {
    kid: String,
    signing: SigningKey,
    /// `{"keys": [...]}`, newest first.
    pub jwks: String,
    pub created_at: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn signing_key(k: &StoredKey) -> Option<SigningKey> {
    let seed: [u8; 32] = STANDARD.decode(&k.seed).ok()?.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// Loads the keys, creating or rotating them as their age requires, and prunes retired ones.
pub fn load_or_rotate(store: &Store, now: u64) -> Result<Arc<Keys>, StoreError> {
    let mut keys: Vec<StoredKey> = match store.meta_get("jwt_keys")? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
            tree: "meta",
            err: format!("jwt_keys: {e}"),
        })?,
        None => Vec::new(),
    };
    keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
    let mut changed = false;
    if keys
        .first()
        .is_none_or(|k| k.created_at + ROTATE_AFTER <= now)
    {
        let seed = crate::crypto::random_bytes(32);
        keys.insert(
            0,
            StoredKey {
                kid: crate::crypto::random_id(),
                seed: STANDARD.encode(seed),
                created_at: now,
            },
        );
        changed = true;
    }
    // Keep the current key and any retired less than KEEP_RETIRED ago.
    let newest = keys[0].created_at;
    let before = keys.len();
    let mut retired_at = newest;
    keys.retain(|k| {
        let keep = k.created_at == newest || retired_at + KEEP_RETIRED > now;
        retired_at = k.created_at;
        keep
    });
    changed |= keys.len() != before;
    if changed {
        store.meta_put("jwt_keys", serde_json::to_vec(&keys).unwrap_or_default())?;
        store.flush_blocking()?;
    }
    let jwk: Vec<serde_json::Value> = keys
        .iter()
        .filter_map(|k| {
            let sk = signing_key(k)?;
            Some(serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": k.kid,
                "x": URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes()),
            }))
        })
        .collect();
    let current = &keys[0];
    let signing = signing_key(current).ok_or_else(|| StoreError::Corrupt {
        tree: "meta",
        err: "jwt_keys: bad seed".into(),
    })?;
    Ok(Arc::new(Keys {
        kid: current.kid.clone(),
        signing,
        jwks: serde_json::json!({ "keys": jwk }).to_string(),
        created_at: current.created_at,
    }))
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

    #[test]
    fn keys_rotate_with_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let k1 = load_or_rotate(&store, 1_000).unwrap();
        let same = load_or_rotate(&store, 2_000).unwrap();
        assert_eq!(k1.kid, same.kid);
        let k2 = load_or_rotate(&store, 1_000 + ROTATE_AFTER).unwrap();
        assert_ne!(k1.kid, k2.kid);
        assert!(k2.jwks.contains(&k1.kid), "retired key still published");
        let k3 = load_or_rotate(&store, 1_000 + ROTATE_AFTER + KEEP_RETIRED + 1).unwrap();
        assert!(!k3.jwks.contains(&k1.kid), "old key pruned");
        let t = k3.assertion(
            "https://auth.example.com",
            "a@example.com",
            "app.example.com",
            10,
            60,
        );
        assert_eq!(t.split('.').count(), 3);
    }
}
