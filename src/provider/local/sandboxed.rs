//! What the sandbox mode of the local provider checks when it starts: the
//! shell of a root filesystem image, the slirp4netns program of the
//! outbound network.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The slirp4netns program of the `outbound` network: `given`, or the
/// first on `PATH` (then `/usr/bin`); a configuration error naming the
/// package when there is none.
pub(super) fn find_slirp4netns(given: Option<&Path>) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.is_absolute()
            && std::fs::metadata(p)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = given {
        return if runnable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(Error::config(format!(
                "HECATE_SANDBOX_NETWORK=outbound: {} is not an executable file",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("slirp4netns"))
        .find(|p| runnable(p))
        .ok_or_else(|| {
            Error::config(
                "HECATE_SANDBOX_NETWORK=outbound needs slirp4netns, which is not installed \
                 (Debian/Ubuntu: apt-get install slirp4netns); or use isolated or host",
            )
        })
}

/// The shell of sandboxed commands: `/bin/bash` if the sandbox's root
/// (the host's, or `rootfs`) has one, else `/bin/sh`.
pub(super) fn sandbox_shell(rootfs: Option<&Path>) -> Result<String> {
    let base = rootfs.unwrap_or(Path::new("/"));
    for shell in ["bin/bash", "bin/sh"] {
        if std::fs::symlink_metadata(base.join(shell)).is_ok() {
            return Ok(format!("/{shell}"));
        }
    }
    Err(Error::config(format!(
        "HECATE_SANDBOX_ROOTFS: {} has neither /bin/bash nor /bin/sh",
        base.display()
    )))
}
