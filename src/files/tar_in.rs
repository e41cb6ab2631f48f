//! Unpacking a tar stream beneath a [`Root`], under a [`Budget`]: the
//! rules of the [module docs](super) (no absolute or `..` names, no device
//! nodes or FIFOs, hard links only within the stream's root, symlinks kept
//! and never followed, set-uid/set-gid dropped, atomic files).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use super::confined::{io_error, sanitize_mode, set_mtime, Data, Root};
use super::Budget;
use crate::error::{Error, Result};

/// Unpacks `reader` into the directory `base` beneath `root` (created if
/// needed), counting against `budget`.
pub(crate) fn extract(
    root: &Root,
    base: &Path,
    reader: impl Read,
    budget: &mut Budget,
) -> Result<()> {
    root.dir(base, true)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid_input(format!("not a tar stream: {e}")))?;
    // Directory modes are applied last, deepest first, so that a read-only
    // directory can still receive its entries.
    let mut dir_modes: Vec<(PathBuf, u32, Option<i64>)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::invalid_input(format!("bad tar stream: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| Error::invalid_input(format!("bad tar entry name: {e}")))?
            .into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let name = entry_path(&raw)?;
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().ok().and_then(|t| i64::try_from(t).ok());
        let rel = base.join(&name);
        if name.as_os_str().is_empty() {
            // The stream's root itself (`./`).
            if kind.is_dir() {
                dir_modes.push((base.to_path_buf(), mode, mtime));
            }
            continue;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            budget.add_file()?;
            let size = entry.size();
            budget.add_bytes(size)?;
            let (dir, file) = root.parent_of(&rel, true)?;
            root.write_file(&dir, &file, Data::Read(&mut entry), mode, mtime, size)?;
        } else if kind.is_dir() {
            budget.add_file()?;
            root.dir(&rel, true)?;
            dir_modes.push((rel, mode, mtime));
        } else if kind.is_symlink() {
            budget.add_file()?;
            let target = entry
                .link_name()
                .map_err(|e| Error::invalid_input(format!("bad symlink target: {e}")))?
                .ok_or_else(|| Error::invalid_input(format!("symlink {raw:?} has no target")))?
                .into_owned();
            let (dir, file) = root.parent_of(&rel, true)?;
            root.symlink(&dir, &file, &target)?;
        } else if kind.is_hard_link() {
            budget.add_file()?;
            let target = entry
                .link_name()
                .map_err(|e| Error::invalid_input(format!("bad hard link target: {e}")))?
                .ok_or_else(|| Error::invalid_input(format!("hard link {raw:?} has no target")))?
                .into_owned();
            let target = base.join(
                entry_path(&target)
                    .map_err(|e| e.context(format_args!("hard link {raw:?}: its target")))?,
            );
            let (tdir, tname) = root.parent_of(&target, false)?;
            let (dir, file) = root.parent_of(&rel, true)?;
            let _ = rfs::unlinkat(&dir, file.as_os_str(), AtFlags::empty());
            rfs::linkat(
                &tdir,
                tname.as_os_str(),
                &dir,
                file.as_os_str(),
                AtFlags::empty(),
            )
            .map_err(|e| root.path_error(&rel, e))?;
        } else if kind.is_character_special() || kind.is_block_special() {
            return Err(Error::invalid_input(format!(
                "tar entry {raw:?} is a device node; device nodes are refused"
            )));
        } else if kind.is_fifo() {
            return Err(Error::invalid_input(format!(
                "tar entry {raw:?} is a FIFO; FIFOs are refused"
            )));
        } else if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            continue;
        } else {
            return Err(Error::invalid_input(format!(
                "tar entry {raw:?} has a type this runtime does not unpack ({:?})",
                kind
            )));
        }
    }
    for (rel, mode, mtime) in dir_modes.into_iter().rev() {
        let fd = root.open_beneath(&rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)?;
        rfs::fchmod(&fd, Mode::from_raw_mode(sanitize_mode(mode)))
            .map_err(|e| io_error("setting a directory's mode", e.into()))?;
        if let Some(t) = mtime {
            set_mtime(&fd, t).map_err(|e| io_error("setting a directory's time", e.into()))?;
        }
    }
    Ok(())
}

/// A tar entry's name as a relative path without `.` components; absolute
/// names and `..` components are refused.
pub(crate) fn entry_path(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::invalid_input(format!(
                    "tar entry {raw:?} has a `..` component; entries must stay within \
                     the directory they are unpacked into"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::invalid_input(format!(
                    "tar entry {raw:?} has an absolute name; entries must be relative"
                )))
            }
        }
    }
    Ok(out)
}
