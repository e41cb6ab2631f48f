//! File system calls confined to one directory, the *root* of a transfer.
//!
//! Every path is resolved by the kernel from the root's descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: a `..` or a
//! symlink (absolute, or relative and climbing out) that would leave the
//! root fails with `EXDEV`, whatever the path's text, and one resolution
//! is one system call, so a symlink swapped in by a command racing the
//! transfer cannot redirect it. Everything after a resolution works on
//! the descriptor it returned and a single name (`*at` calls with
//! `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`), never on a path string again.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};

use crate::error::{Error, Result};

/// Name prefix of the temporary files of atomic writes.
const TEMP_PREFIX: &str = ".hecate-tmp-";

/// A directory that paths are confined to, and who should own what is
/// created in it.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// Owner (uid, gid) of everything created (a sandbox's outside id).
    owner: Option<(u32, u32)>,
    /// How the root is named in errors.
    shown: String,
}

/// The contents of a file to write.
pub(crate) enum Data<'a> {
    /// Read to its end.
    Read(&'a mut dyn Read),
    /// A file, copied by `copy_file_range` where the kernel can.
    File(&'a mut File),
}

/// A directory opened beneath a [`Root`].
pub(crate) type DirFd = OwnedFd;

impl Root {
    /// Opens `dir` (which must exist) as a root.
    pub fn open(dir: &Path, owner: Option<(u32, u32)>, shown: impl Into<String>) -> Result<Root> {
        let fd = rfs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(&format!("opening {}", dir.display()), e.into()))?;
        Ok(Root {
            fd,
            owner,
            shown: shown.into(),
        })
    }

    /// Opens `rel` beneath the root (following symlinks only where they
    /// stay beneath it).
    pub fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rfs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| self.path_error(rel, e))
    }

    /// Opens the directory `rel`, creating it and its missing parents
    /// (mode 0755, owned by the root's owner) when `create`.
    pub fn dir(&self, rel: &Path, create: bool) -> Result<DirFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        match self.open_beneath(rel, flags) {
            Ok(fd) => return Ok(fd),
            Err(err) if !create => return Err(err),
            Err(_) => {}
        }
        // Component by component: each directory is made in the descriptor
        // of its parent and opened again beneath the root.
        let mut prefix = PathBuf::new();
        let mut current = self.open_beneath(Path::new("."), flags)?;
        for comp in rel.components() {
            prefix.push(comp.as_os_str());
            if let Component::Normal(name) = comp {
                match rfs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {
                        if let Some((uid, gid)) = self.owner {
                            chown_at(&current, name, uid, gid)
                                .map_err(|e| self.path_error(&prefix, e))?;
                        }
                    }
                    Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(self.path_error(&prefix, e)),
                }
            }
            current = self.open_beneath(&prefix, flags)?;
        }
        Ok(current)
    }

    /// The directory holding `rel` (created when `create`) and `rel`'s last
    /// name, which must be a plain name (not `.`, `..` or empty).
    pub fn parent_of(&self, rel: &Path, create: bool) -> Result<(DirFd, OsString)> {
        let name = plain_name(rel).ok_or_else(|| {
            Error::invalid_input(format!(
                "{}: the path must name a file, not end in `.`, `..` or `/`",
                self.show(rel)
            ))
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent, create)?, name.to_os_string()))
    }

    /// `rel` as shown in errors: the root's name and the path, quoted.
    pub fn show(&self, rel: &Path) -> String {
        format!("{:?} in {}", rel, self.shown)
    }

    /// An error for `rel` from the kernel's `errno`.
    pub fn path_error(&self, rel: &Path, e: rustix::io::Errno) -> Error {
        let shown = self.show(rel);
        match e {
            rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => Error::invalid_input(format!(
                "{shown}: the path leads outside (through `..` or a symlink); \
                 paths are confined to the task's directory"
            )),
            rustix::io::Errno::NOENT => {
                Error::invalid_input(format!("{shown}: no such file or directory"))
            }
            rustix::io::Errno::NOTDIR => {
                Error::invalid_input(format!("{shown}: a part of the path is not a directory"))
            }
            rustix::io::Errno::ISDIR => Error::invalid_input(format!("{shown}: is a directory")),
            rustix::io::Errno::NAMETOOLONG => {
                Error::invalid_input(format!("{shown}: a name is too long"))
            }
            other => io_error(&shown, other.into()),
        }
    }

    /// Writes what `data` yields to `name` in `dir` atomically (a temporary
    /// file renamed over it), with `mode` and optionally `mtime`. At most
    /// `limit` bytes are taken; more is an error. Returns the bytes written.
    pub fn write_file(
        &self,
        dir: &DirFd,
        name: &OsStr,
        data: Data<'_>,
        mode: u32,
        mtime: Option<i64>,
        limit: u64,
    ) -> Result<u64> {
        let temp = temp_name();
        let fd = rfs::openat(
            dir,
            temp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.path_error(Path::new(name), e))?;
        let mut file = File::from(fd);
        let written = match data {
            Data::Read(r) => copy_bounded(r, &mut file, limit),
            Data::File(f) => copy_file(f, &mut file, limit),
        };
        let finish = written.and_then(|n| {
            if let Some((uid, gid)) = self.owner {
                rfs::fchown(&file, Some(uid_of(uid)), Some(gid_of(gid)))
                    .map_err(|e| io_error("setting the owner", e.into()))?;
            }
            rfs::fchmod(&file, Mode::from_raw_mode(sanitize_mode(mode)))
                .map_err(|e| io_error("setting the mode", e.into()))?;
            if let Some(t) = mtime {
                set_mtime(&file, t).map_err(|e| io_error("setting the time", e.into()))?;
            }
            rfs::renameat(dir, temp.as_os_str(), dir, name)
                .map_err(|e| self.path_error(Path::new(name), e))?;
            Ok(n)
        });
        if finish.is_err() {
            let _ = rfs::unlinkat(dir, temp.as_os_str(), AtFlags::empty());
        }
        finish
    }

    /// Makes a symlink `name` → `target` in `dir`, replacing what was there
    /// (not a directory) atomically.
    pub fn symlink(&self, dir: &DirFd, name: &OsStr, target: &Path) -> Result<()> {
        let temp = temp_name();
        rfs::symlinkat(target, dir, temp.as_os_str())
            .map_err(|e| self.path_error(Path::new(name), e))?;
        let done = (|| {
            if let Some((uid, gid)) = self.owner {
                chown_at(dir, &temp, uid, gid).map_err(|e| self.path_error(Path::new(name), e))?;
            }
            rfs::renameat(dir, temp.as_os_str(), dir, name)
                .map_err(|e| self.path_error(Path::new(name), e))
        })();
        if done.is_err() {
            let _ = rfs::unlinkat(dir, temp.as_os_str(), AtFlags::empty());
        }
        done
    }
}

/// `rel`'s last component if it is a plain name.
pub(crate) fn plain_name(rel: &Path) -> Option<&OsStr> {
    match rel.components().next_back() {
        Some(Component::Normal(name)) if !rel.as_os_str().as_bytes().ends_with(b"/") => Some(name),
        _ => None,
    }
}

/// Drops set-uid and set-gid; keeps the sticky bit and permissions.
pub(crate) fn sanitize_mode(mode: u32) -> u32 {
    mode & 0o1777
}

fn temp_name() -> OsString {
    OsString::from(format!("{TEMP_PREFIX}{:016x}", fastrand::u64(..)))
}

pub(crate) fn uid_of(uid: u32) -> rfs::Uid {
    rfs::Uid::from_raw(uid)
}

pub(crate) fn gid_of(gid: u32) -> rfs::Gid {
    rfs::Gid::from_raw(gid)
}

/// `chown` of `name` in `dir`, not following a symlink.
pub(crate) fn chown_at(
    dir: &impl AsFd,
    name: &OsStr,
    uid: u32,
    gid: u32,
) -> std::result::Result<(), rustix::io::Errno> {
    rfs::chownat(
        dir,
        name,
        Some(uid_of(uid)),
        Some(gid_of(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// Sets a file's modification (and access) time to `secs`.
pub(crate) fn set_mtime(fd: &impl AsFd, secs: i64) -> std::result::Result<(), rustix::io::Errno> {
    let t = rfs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rfs::futimens(
        fd,
        &rfs::Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
}

/// Copies at most `limit` bytes; more is an error. File to file goes by
/// `copy_file_range` (std's `io::copy` specialisation) when `data` is a
/// `File`.
fn copy_bounded(data: &mut dyn Read, out: &mut File, limit: u64) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("reading the data", e)),
        };
        total += n as u64;
        if total > limit {
            return Err(Error::invalid_input(format!(
                "more than {limit} bytes: over the transfer's size limit (HECATE_FILES_MAX_BYTES)"
            )));
        }
        out.write_all(&buf[..n])
            .map_err(|e| io_error("writing the file", e))?;
    }
}

/// Copies a whole file to another (`copy_file_range` where the kernel
/// can), at most `limit` bytes.
pub(crate) fn copy_file(src: &mut File, out: &mut File, limit: u64) -> Result<u64> {
    let n = io::copy(&mut src.take(limit.saturating_add(1)), out)
        .map_err(|e| io_error("copying the file", e))?;
    if n > limit {
        return Err(Error::invalid_input(format!(
            "more than {limit} bytes: over the transfer's size limit (HECATE_FILES_MAX_BYTES)"
        )));
    }
    Ok(n)
}

/// An I/O failure that is not the caller's input.
pub(crate) fn io_error(what: &str, e: io::Error) -> Error {
    Error::internal(format!("{what}: {e}")).with_source(e)
}
