//! Writing a tar stream of a file or directory beneath a [`Root`], under a
//! [`Budget`]. The walk goes by directory descriptors (`O_NOFOLLOW` on
//! every step): symlinks are stored as links, never followed; FIFOs,
//! sockets and device nodes are skipped (opening one could block or
//! touch a device).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::confined::{io_error, Root};
use super::Budget;
use crate::error::{Error, Result};

/// Writes a tar stream of `rel` beneath `root` to `out`: a directory's
/// contents, or one entry named after a file. Returns the writer.
pub(crate) fn write<W: Write>(root: &Root, rel: &Path, out: W, budget: &mut Budget) -> Result<W> {
    let fd = root.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let st = rfs::fstat(&fd).map_err(|e| root.path_error(rel, e))?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => walk(&mut builder, fd, &PathBuf::new(), budget)?,
        FileType::RegularFile => {
            let name = rel.file_name().map(Path::new).unwrap_or(Path::new("file"));
            append_file(&mut builder, File::from(fd), &st, name, budget)?;
        }
        _ => {
            return Err(Error::invalid_input(format!(
                "{}: neither a regular file nor a directory",
                root.show(rel)
            )))
        }
    }
    builder
        .into_inner()
        .map_err(|e| io_error("writing the tar stream", e))
}

fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: OwnedFd,
    prefix: &Path,
    budget: &mut Budget,
) -> Result<()> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in rfs::Dir::read_from(&dir).map_err(|e| io_error("reading a directory", e.into()))? {
        let entry = entry.map_err(|e| io_error("reading a directory", e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    for name in names {
        let name = OsStr::from_bytes(&name);
        let path = prefix.join(name);
        let st = match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we walk: nothing to send.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_error("reading a directory entry", e.into())),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let child = match rfs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => continue,
                    // Swapped for something else while we walk.
                    Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => continue,
                    Err(e) => return Err(io_error("opening a directory", e.into())),
                };
                let st = rfs::fstat(&child).map_err(|e| io_error("stat", e.into()))?;
                budget.add_file()?;
                let mut header = tar::Header::new_gnu();
                fill_header(&mut header, &st, tar::EntryType::Directory, 0);
                builder
                    .append_data(&mut header, &path, io::empty())
                    .map_err(|e| io_error("writing the tar stream", e))?;
                walk(builder, child, &path, budget)?;
            }
            FileType::RegularFile => {
                let fd = match rfs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => continue,
                    Err(e) => return Err(io_error("opening a file", e.into())),
                };
                let st = rfs::fstat(&fd).map_err(|e| io_error("stat", e.into()))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    continue;
                }
                append_file(builder, File::from(fd), &st, &path, budget)?;
            }
            FileType::Symlink => {
                let target = match rfs::readlinkat(&dir, name, Vec::new()) {
                    Ok(t) => t,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => continue,
                    Err(e) => return Err(io_error("reading a symlink", e.into())),
                };
                budget.add_file()?;
                let mut header = tar::Header::new_gnu();
                fill_header(&mut header, &st, tar::EntryType::Symlink, 0);
                builder
                    .append_link(
                        &mut header,
                        &path,
                        Path::new(OsStr::from_bytes(target.as_bytes())),
                    )
                    .map_err(|e| io_error("writing the tar stream", e))?;
            }
            _ => log::debug!("not sending {path:?}: not a file, directory or symlink"),
        }
    }
    Ok(())
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    file: File,
    st: &rfs::Stat,
    path: &Path,
    budget: &mut Budget,
) -> Result<()> {
    let size = u64::try_from(st.st_size).unwrap_or(0);
    budget.add_file()?;
    budget.add_bytes(size)?;
    let mut header = tar::Header::new_gnu();
    fill_header(&mut header, st, tar::EntryType::Regular, size);
    let data = Exact {
        inner: file.take(size),
        left: size,
    };
    builder
        .append_data(&mut header, path, data)
        .map_err(|e| io_error(&format!("sending {path:?}"), e))
}

fn fill_header(header: &mut tar::Header, st: &rfs::Stat, kind: tar::EntryType, size: u64) {
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(st.st_mode & 0o7777);
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
}

/// Reads exactly `left` bytes: a file that shrank while it was sent is an
/// error, not a corrupt stream.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was sent",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
