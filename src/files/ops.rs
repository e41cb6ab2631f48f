//! Whole transfers on this machine, blocking (run them off the arbiter
//! thread): an upload into a [`Root`] and a download out of one, for every
//! [`UploadSource`] and [`DownloadTarget`]; and the pieces of those that
//! touch only this machine's side (a local file, a local directory), which
//! the MorphCloud backend uses too.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rustix::fs::{self as rfs, FileType, OFlags};

use super::confined::{io_error, Data, Root};
use super::{
    tar_in, tar_out, Budget, DownloadSpec, DownloadTarget, Transferred, UploadSource, UploadSpec,
};
use crate::error::{Error, Result};

/// Default mode of a file uploaded from bytes.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// `path` of a task as a path relative to its working directory, which
/// commands see as `seen_work`: relative paths as they are, absolute ones
/// only inside `seen_work`.
pub(crate) fn task_relative(path: &str, seen_work: &str) -> Result<PathBuf> {
    super::check_path(path)?;
    let p = Path::new(path);
    if !p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    match p.strip_prefix(seen_work) {
        Ok(rest) => Ok(rest.to_path_buf()),
        Err(_) => Err(Error::invalid_input(format!(
            "{path:?} is outside the task's directory {seen_work}; give a path relative \
             to it or under it"
        ))),
    }
}

/// Uploads `spec` to `rel` beneath `root`.
pub(crate) fn upload(root: &Root, rel: &Path, spec: UploadSpec) -> Result<Transferred> {
    let mut budget = Budget::new(spec.limits);
    match spec.source {
        UploadSource::Bytes(bytes) => {
            budget.add_file()?;
            budget.add_bytes(bytes.len() as u64)?;
            let (dir, name) = root.parent_of(rel, true)?;
            let mode = spec.mode.unwrap_or(DEFAULT_FILE_MODE);
            root.write_file(
                &dir,
                &name,
                Data::Read(&mut &bytes[..]),
                mode,
                None,
                bytes.len() as u64,
            )?;
        }
        UploadSource::File(local) => {
            let mut file = open_local_file(&local)?;
            let meta = file
                .metadata()
                .map_err(|e| io_error(&format!("reading {}", local.display()), e))?;
            budget.add_file()?;
            budget.add_bytes(meta.len())?;
            let (dir, name) = root.parent_of(rel, true)?;
            let mode = spec.mode.unwrap_or(meta.permissions().mode());
            // The copy is bounded too: the file may grow while it is read.
            let n = root.write_file(
                &dir,
                &name,
                Data::File(&mut file),
                mode,
                None,
                spec.limits.max_bytes,
            )?;
            budget.bytes = n;
        }
        UploadSource::Tar(bytes) => tar_in::extract(root, rel, &bytes[..], &mut budget)?,
        UploadSource::TarFrom(reader) => tar_in::extract(root, rel, reader, &mut budget)?,
        UploadSource::Dir(local) => {
            let source = Root::open(&local, None, local.display().to_string())?;
            piped(
                |w| {
                    tar_out::write(&source, Path::new(""), w, &mut Budget::new(spec.limits))
                        .map(drop)
                },
                |r| tar_in::extract(root, rel, r, &mut budget),
            )?;
        }
    }
    Ok(budget.done(None))
}

/// Downloads `rel` beneath `root` as `spec` asks.
pub(crate) fn download(root: &Root, rel: &Path, spec: DownloadSpec) -> Result<Transferred> {
    let mut budget = Budget::new(spec.limits);
    match spec.target {
        DownloadTarget::Bytes => {
            let (mut file, len) = open_file_beneath(root, rel)?;
            budget.add_file()?;
            budget.add_bytes(len)?;
            let mut data = Vec::with_capacity(len as usize);
            let n = (&mut file)
                .take(spec.limits.max_bytes.saturating_add(1))
                .read_to_end(&mut data)
                .map_err(|e| io_error("reading the file", e))? as u64;
            budget.bytes = 0;
            budget.add_bytes(n)?;
            return Ok(budget.done(Some(Bytes::from(data))));
        }
        DownloadTarget::File(local) => {
            let (mut file, len) = open_file_beneath(root, rel)?;
            budget.add_file()?;
            budget.add_bytes(len)?;
            let mode = rfs::fstat(&file)
                .map(|st| st.st_mode & 0o7777)
                .unwrap_or(0o644);
            let n = write_local_file(&local, Data::File(&mut file), mode, spec.limits.max_bytes)?;
            budget.bytes = n;
        }
        DownloadTarget::Tar => {
            let data = tar_out::write(root, rel, Vec::new(), &mut budget)?;
            return Ok(budget.done(Some(Bytes::from(data))));
        }
        DownloadTarget::TarTo(writer) => {
            tar_out::write(root, rel, writer, &mut budget)?;
        }
        DownloadTarget::Dir(local) => {
            let dest = local_dir_root(&local)?;
            piped(
                |w| tar_out::write(root, rel, w, &mut budget).map(drop),
                |r| tar_in::extract(&dest, Path::new(""), r, &mut Budget::new(spec.limits)),
            )?;
        }
    }
    Ok(budget.done(None))
}

/// Opens a regular file beneath `root` (a FIFO or device is refused
/// without blocking); returns it and its size.
fn open_file_beneath(root: &Root, rel: &Path) -> Result<(File, u64)> {
    let fd = root.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
    let st = rfs::fstat(&fd).map_err(|e| root.path_error(rel, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0))),
        FileType::Directory => Err(Error::invalid_input(format!(
            "{}: is a directory (download it as a tar stream or into a directory)",
            root.show(rel)
        ))),
        _ => Err(Error::invalid_input(format!(
            "{}: not a regular file",
            root.show(rel)
        ))),
    }
}

/// Opens a regular file on this machine for reading.
pub(crate) fn open_local_file(path: &Path) -> Result<File> {
    let file = File::open(path)
        .map_err(|e| Error::invalid_input(format!("cannot open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| io_error(&format!("reading {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::invalid_input(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// Writes a file on this machine atomically (temporary name, rename).
pub(crate) fn write_local_file(path: &Path, data: Data<'_>, mode: u32, limit: u64) -> Result<u64> {
    let name = super::confined::plain_name(path)
        .ok_or_else(|| Error::invalid_input(format!("{}: not a file name", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let root = Root::open(parent, None, parent.display().to_string())?;
    let dir = root.open_beneath(Path::new("."), OFlags::RDONLY | OFlags::DIRECTORY)?;
    root.write_file(&dir, name, data, mode, None, limit)
}

/// A directory on this machine (created if needed) as a root to unpack
/// into.
pub(crate) fn local_dir_root(path: &Path) -> Result<Root> {
    std::fs::create_dir_all(path)
        .map_err(|e| io_error(&format!("creating {}", path.display()), e))?;
    Root::open(path, None, path.display().to_string())
}

/// Runs `produce` (writing a stream) and `consume` (reading it) on two
/// threads joined by a pipe, as `tar c | tar x` would. The first error
/// wins; the other side sees a broken pipe or an early end.
pub(crate) fn piped(
    produce: impl FnOnce(File) -> Result<()> + Send,
    consume: impl FnOnce(File) -> Result<()>,
) -> Result<()> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_error("making a pipe", e.into()))?;
    let (r, w) = (File::from(r), File::from(w));
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(w));
        let mut drain = r.try_clone();
        let consumed = consume(r);
        if consumed.is_err() {
            // Read the producer to its end rather than break its pipe (a
            // write to a broken pipe raises SIGPIPE where it is not ignored).
            if let Ok(rest) = drain.as_mut() {
                let _ = std::io::copy(rest, &mut std::io::sink());
            }
        }
        drop(drain);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the tar writer panicked")));
        match (produced, consumed) {
            // A consumer that stopped early breaks the producer's pipe: its
            // own error is the cause.
            (Err(_), Err(c)) | (Ok(()), Err(c)) => Err(c),
            (Err(p), Ok(())) => Err(p),
            (Ok(()), Ok(())) => Ok(()),
        }
    })
}
