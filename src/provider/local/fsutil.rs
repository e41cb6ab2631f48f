//! The file-system side of local instances: private (0700) directories, and
//! removing an instance directory whatever its commands did to the
//! permissions inside it; and the lock files that guard half-made ones.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `path` (and missing parents) with mode 0700 if it does not exist,
/// and checks that it is a directory owned by this user.
pub(crate) fn ensure_private_root(path: &Path) -> io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::other("exists but is not a directory"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        // Someone else's directory (a shared /tmp): instances under it
        // could be tampered with.
        return Err(io::Error::other(format!(
            "is owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        )));
    }
    std::fs::canonicalize(path)
}

/// Creates the single directory `path` with mode 0700; fails if it exists.
pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Removes the tree at `path`. A missing tree is fine. If removal fails, the
/// directories inside are made writable (commands may `chmod a-w` them) and
/// removal is tried once more.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => log::debug!(
            "local: removing {} failed ({err}); fixing permissions",
            path.display()
        ),
    }
    make_dirs_writable(path);
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Creates (or opens) the lock file `path` (mode 0600) and takes an
/// exclusive `flock` on it, waiting for it if need be. The lock lasts as
/// long as the returned file is open.
pub(crate) fn create_lock(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    flock(&file, libc::LOCK_EX)?;
    Ok(file)
}

/// Takes an exclusive `flock` on the existing lock file `path` if nobody
/// holds it: `Ok(Some(file))` (locked until dropped), `Ok(None)` if it is
/// held, an error of kind `NotFound` if there is no such file.
pub(crate) fn try_lock(path: &Path) -> io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

fn flock(file: &std::fs::File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor the file owns; no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Gives the owner rwx on every directory under `path` (symlinks are not
/// followed). Iterative, so a very deep tree cannot overflow the stack.
fn make_dirs_writable(path: &Path) {
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o700));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_created_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("a/b");
        let canon = ensure_private_root(&root).expect("created");
        assert!(canon.is_absolute());
        let mode = std::fs::metadata(&root).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "no access for group or others");
        // A second call accepts the existing directory.
        ensure_private_root(&root).expect("exists");
    }

    #[test]
    fn root_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        assert!(ensure_private_root(&file).is_err());
    }

    #[test]
    fn remove_tree_copes_with_read_only_dirs_and_missing_trees() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("inst");
        let deep = top.join("x/y");
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::write(deep.join("f"), b"x").expect("write");
        std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o500)).expect("chmod");
        std::fs::set_permissions(top.join("x"), std::fs::Permissions::from_mode(0o500))
            .expect("chmod");
        remove_tree(&top).expect("removed");
        assert!(!top.exists());
        remove_tree(&top).expect("missing is fine");
    }
}
