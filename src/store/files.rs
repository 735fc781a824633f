//! The data folder is private: `data_dir` and every folder in it 0700, every file 0600, whatever the umask.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of `data_dir` and every folder under it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under `data_dir` (at most: a file the owner made read-only stays so).
pub const FILE_MODE: u32 = 0o600;

/// What Portcullis keeps in `data_dir`: the sled database folder, the master secret (and its
/// temporary name while written) and the control socket. Only these are tightened; anything
/// else an operator put there is reported, not changed (a `data_dir` pointed at a shared folder
/// must not have its neighbours chmod-ed).
const OWNED: &[&str] = &["db", "secret", ".secret.tmp", "control.sock"];

fn with_path(path: &Path, what: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what} `{}`: {err}", path.display()))
}

/// Creates `dir` (and missing parents) as 0700, or tightens an existing one that is wider.
/// Fails with a message naming the folder when it cannot be made private.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::other(format!(
                "`{}` exists and is not a folder",
                dir.display()
            )))
        }
        Ok(m) => {
            if m.permissions().mode() & 0o077 != 0 {
                if m.permissions().mode() & 0o1000 != 0 {
                    return Err(io::Error::other(format!(
                        "`{}` is a shared folder (sticky bit); give data_dir a folder of its own",
                        dir.display()
                    )));
                }
                let me = rustix::process::geteuid().as_raw();
                if m.uid() != me {
                    return Err(io::Error::other(format!(
                        "`{}` is mode {:04o} and belongs to uid {}, not to this process (uid {me}); \
                         make it 0700 and owned by the user Portcullis runs as",
                        dir.display(),
                        m.permissions().mode() & 0o7777,
                        m.uid()
                    )));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| with_path(dir, "cannot create", e))?;
        }
        Err(e) => return Err(with_path(dir, "cannot read", e)),
    }
    tighten_one(dir, true)
}

/// Removes group/other access from one entry: folders become 0700, files at most 0600.
fn tighten_one(path: &Path, is_dir: bool) -> io::Result<()> {
    let mode = fs::metadata(path)
        .map_err(|e| with_path(path, "cannot read", e))?
        .permissions()
        .mode()
        & 0o7777;
    let want = if is_dir { DIR_MODE } else { mode & FILE_MODE };
    if mode == want {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(want)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "`{}` is mode {mode:04o} and cannot be made private ({want:04o}): {e}; \
                 fix its owner or mode, or point data_dir elsewhere",
                path.display()
            ),
        )
    })?;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), from = %format!("{mode:04o}"), to = %format!("{want:04o}"), "tightened permissions in data_dir");
    }
    Ok(())
}

/// Tightens `data_dir` and what Portcullis keeps in it (see [`OWNED`]; the database folder
/// recursively; symbolic links are neither followed nor changed). Returns the other entries
/// that group or others may access, for the caller to report. sled creates some files lazily
/// (`snap.*`, `blobs/*`), so this runs after opening the database and now and then afterwards;
/// a process-wide umask of 077 (set by `main`) makes files private from birth as well.
pub fn tighten_data_dir(dir: &Path) -> io::Result<Vec<String>> {
    tighten_one(dir, true)?;
    let mut foreign = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| with_path(dir, "cannot list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| with_path(dir, "cannot list", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !OWNED.contains(&name.as_str()) {
            if fs::symlink_metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                foreign.push(name);
            }
            continue;
        }
        let result = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => Ok(()),
            Ok(m) if m.is_dir() => tighten_tree(&path),
            Ok(_) => tighten_one(&path, false),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(foreign)
}

/// Tightens `dir` and everything below it (symbolic links are neither followed nor changed).
fn tighten_tree(dir: &Path) -> io::Result<()> {
    tighten_one(dir, true)?;
    let entries = fs::read_dir(dir).map_err(|e| with_path(dir, "cannot list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| with_path(dir, "cannot list", e))?;
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(k) => k,
            // Deleted meanwhile (sled removes `*.generating` snapshots): nothing to tighten.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(with_path(&path, "cannot read", e)),
        };
        let result = if kind.is_symlink() {
            Ok(())
        } else if kind.is_dir() {
            tighten_tree(&path)
        } else {
            tighten_one(&path, false)
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` as a new 0600 file, atomically (temporary file, fsync, rename,
/// fsync of the folder), so a crash leaves either no file or the whole one.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("`{}` has no folder", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(|e| with_path(&tmp, "cannot create", e))?;
    // The umask can only remove bits, but make sure anyway.
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| with_path(path, "cannot write", e))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_tightens_wider_trees() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/data");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(dir.join("blobs")).unwrap();
        fs::set_permissions(dir.join("blobs"), fs::Permissions::from_mode(0o775)).unwrap();
        for (name, m) in [
            ("db", 0o644),
            ("blobs/1", 0o666),
            ("ro", 0o444),
            ("x", 0o755),
        ] {
            fs::write(dir.join(name), b"x").unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(m)).unwrap();
        }
        let outside = root.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        tighten_tree(&dir).unwrap();
        assert_eq!(mode(&dir.join("blobs")), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o600);
        assert_eq!(mode(&dir.join("blobs/1")), 0o600);
        assert_eq!(mode(&dir.join("ro")), 0o400, "never widened");
        assert_eq!(mode(&dir.join("x")), 0o600);
        assert_eq!(mode(&outside), 0o644, "links not followed");
        let f = dir.join("file");
        fs::write(&f, b"x").unwrap();
        assert!(ensure_private_dir(&f).is_err(), "a file is not a data_dir");
    }

    #[test]
    fn only_what_portcullis_keeps_is_changed_and_shared_folders_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir_all(dir.join("db/blobs")).unwrap();
        for (name, m) in [
            ("db/conf", 0o644),
            ("db/blobs/7", 0o644),
            ("secret", 0o644),
            ("notes.txt", 0o644),
            ("run.sh", 0o755),
        ] {
            fs::write(dir.join(name), b"x").unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(m)).unwrap();
        }
        fs::set_permissions(dir.join("db/blobs"), fs::Permissions::from_mode(0o755)).unwrap();
        let mut foreign = tighten_data_dir(&dir).unwrap();
        foreign.sort();
        assert_eq!(foreign, ["notes.txt", "run.sh"], "reported, not changed");
        assert_eq!(mode(&dir.join("run.sh")), 0o755);
        assert_eq!(mode(&dir.join("notes.txt")), 0o644);
        assert_eq!(mode(&dir.join("db/conf")), 0o600);
        assert_eq!(mode(&dir.join("db/blobs")), 0o700);
        assert_eq!(mode(&dir.join("db/blobs/7")), 0o600);
        assert_eq!(mode(&dir.join("secret")), 0o600);

        let shared = root.path().join("tmp");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = ensure_private_dir(&shared).unwrap_err();
        assert!(err.to_string().contains("sticky"), "{err}");
        assert_eq!(mode(&shared), 0o1777, "left alone");
    }

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("secret");
        write_private(&p, b"one").unwrap();
        assert_eq!(mode(&p), 0o600);
        write_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
