//! Where the master secret comes from: `secrets_file`, a systemd credential, or else `data_dir/secret` (generated once, 0600) with sled and the shared store itself with Redis.

use std::path::{Path, PathBuf};

use crate::crypto::MasterSecret;
use crate::store::{files, Engine, Store};

/// The systemd credential read from `$CREDENTIALS_DIRECTORY` (`LoadCredential=portcullis-secret`).
pub const CREDENTIAL_NAME: &str = "portcullis-secret";
/// The file in `data_dir` used when neither `secrets_file` nor the credential is given.
pub const DATA_DIR_FILE: &str = "secret";

/// Where the master secret was read from (for the start-up log; never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `secrets_file:` in the config.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/portcullis-secret`.
    Credential(PathBuf),
    /// `data_dir/secret`, read or created now.
    DataDir(PathBuf),
    /// Created once in the shared store by the first replica; read by the others.
    Shared,
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "secrets_file {}", p.display()),
            SecretSource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            SecretSource::DataDir(p) => write!(f, "{}", p.display()),
            SecretSource::Shared => write!(f, "the shared store (no secrets_file is set)"),
        }
    }
}

/// Why the master secret could not be had; names the key or file to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

impl From<crate::store::StoreError> for SecretError {
    fn from(e: crate::store::StoreError) -> Self {
        SecretError(format!("database: {e}"))
    }
}

fn read(path: &Path, what: &str) -> Result<MasterSecret, SecretError> {
    let bytes = std::fs::read(path)
        .map_err(|e| SecretError(format!("{what}: cannot read `{}`: {e}", path.display())))?;
    MasterSecret::parse(&bytes)
        .map_err(|e| SecretError(format!("{what}: `{}` {e}", path.display())))
}

/// `$CREDENTIALS_DIRECTORY/portcullis-secret`, when systemd passed it.
fn credential() -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = Path::new(&dir).join(CREDENTIAL_NAME);
    p.is_file().then_some(p)
}

/// Loads the master secret: `secrets_file` if configured, else the systemd credential, else
/// `data_dir/secret` (created on first start, 0600). A database written by an older version
/// holds `server_secret` and JWT seeds in its `meta` tree: the secret moves to
/// `data_dir/secret` once (unless a secret comes from outside) and both are deleted from the
/// database.
pub async fn load(
    secrets_file: Option<&Path>,
    data_dir: &Path,
    store: &Store,
) -> Result<(MasterSecret, SecretSource), SecretError> {
    let in_data_dir = data_dir.join(DATA_DIR_FILE);
    let sled = match store.engine() {
        Engine::Sled(s) => Some(s),
        Engine::Redis(_) => None,
    };
    let (master, source) = if let Some(p) = secrets_file {
        use std::os::unix::fs::PermissionsExt;
        let master = read(p, "secrets_file")?;
        if let Ok(m) = std::fs::metadata(p) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %p.display(), mode = %format!("{mode:04o}"), "secrets_file is readable by other users; chmod 600 it");
            }
        }
        (master, SecretSource::File(p.to_path_buf()))
    } else if let Some(p) = credential() {
        (read(&p, "systemd credential")?, SecretSource::Credential(p))
    } else if sled.is_none() {
        // Replicas share one secret: the first to start creates it in the store.
        let candidate = MasterSecret::generate();
        let stored = store
            .shared_secret(candidate.to_hex().as_bytes())
            .await?
            .ok_or_else(|| SecretError("the store keeps no secret".into()))?;
        let master = MasterSecret::parse(&stored)
            .map_err(|e| SecretError(format!("the secret in the store {e}")))?;
        (master, SecretSource::Shared)
    } else {
        match std::fs::symlink_metadata(&in_data_dir) {
            Ok(_) => (
                read(&in_data_dir, "data_dir secret")?,
                SecretSource::DataDir(in_data_dir.clone()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let legacy = match sled {
                    Some(s) => s.legacy_server_secret()?,
                    None => None,
                };
                let master = match legacy {
                    Some(old) => {
                        tracing::info!(path = %in_data_dir.display(), "moving the server secret out of the database");
                        MasterSecret::from_bytes(old).map_err(|e| {
                            SecretError(format!("the database's old server_secret {e}"))
                        })?
                    }
                    None => MasterSecret::generate(),
                };
                files::write_private(&in_data_dir, format!("{}\n", master.to_hex()).as_bytes())
                    .map_err(|e| SecretError(format!("cannot write the secret: {e}")))?;
                (master, SecretSource::DataDir(in_data_dir.clone()))
            }
            Err(e) => {
                return Err(SecretError(format!(
                    "cannot read `{}`: {e}",
                    in_data_dir.display()
                )))
            }
        }
    };
    if sled.map(|s| s.forget_legacy_secrets()).transpose()? == Some(true) {
        tracing::info!(
            "deleted the server secret and JWT seeds of an older version from the database"
        );
    }
    if !matches!(source, SecretSource::DataDir(_)) && in_data_dir.exists() {
        tracing::warn!(path = %in_data_dir.display(), using = %source, "an unused secret lies in data_dir; delete it");
    }
    Ok((master, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_once_then_read_and_legacy_moved_out() {
        let dir = tempfile::tempdir().unwrap();
        let (m1, s1) = {
            let store = Store::open(&crate::store::StoreOptions::new(dir.path())).unwrap();
            load(None, dir.path(), &store).await.unwrap()
        };
        assert_eq!(s1, SecretSource::DataDir(dir.path().join("secret")));
        let store = Store::open(&crate::store::StoreOptions::new(dir.path())).unwrap();
        let (m2, _) = load(None, dir.path(), &store).await.unwrap();
        assert_eq!(m1, m2, "read back, not regenerated");

        // An old database: the secret and JWT seeds live in `meta`.
        let old = tempfile::tempdir().unwrap();
        let legacy: Vec<u8> = (1u8..=32).collect();
        {
            let store = Store::open(&crate::store::StoreOptions::new(old.path())).unwrap();
            store
                .sled()
                .unwrap()
                .meta_put("server_secret", legacy.clone())
                .unwrap();
            store
                .sled()
                .unwrap()
                .meta_put("jwt_keys", b"[]".to_vec())
                .unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(&crate::store::StoreOptions::new(old.path())).unwrap();
        let (m, _) = load(None, old.path(), &store).await.unwrap();
        assert_eq!(m, MasterSecret::from_bytes(legacy).unwrap(), "migrated");
        assert!(store
            .sled()
            .unwrap()
            .meta_get("server_secret")
            .unwrap()
            .is_none());
        assert!(store
            .sled()
            .unwrap()
            .meta_get("jwt_keys")
            .unwrap()
            .is_none());
        let (again, _) = load(None, old.path(), &store).await.unwrap();
        assert_eq!(m, again);

        // An explicit file wins and nothing is written into data_dir.
        let fresh = tempfile::tempdir().unwrap();
        let f = dir.path().join("master");
        std::fs::write(&f, MasterSecret::generate().to_hex()).unwrap();
        let store = Store::open(&crate::store::StoreOptions::new(fresh.path().join("d"))).unwrap();
        let (m3, s3) = load(Some(&f), &fresh.path().join("d"), &store)
            .await
            .unwrap();
        assert_eq!(s3, SecretSource::File(f.clone()));
        assert_ne!(m3, m1);
        assert!(!fresh.path().join("d/secret").exists());
        std::fs::write(&f, "short").unwrap();
        let err = load(Some(&f), &fresh.path().join("d"), &store)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("secrets_file:"), "{err}");
    }
}
