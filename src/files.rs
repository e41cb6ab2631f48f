//! Files in and out of a task: what an upload or a download asks for
//! ([`UploadSpec`], [`DownloadSpec`]), what it moved ([`Transferred`]), its
//! limits ([`TransferLimits`], [`FilesConfig`]), and the pieces every
//! backend shares: tar streams that are read and written through
//! confined file system calls (`confined`, `tar_in`, `tar_out`).
//!
//! # Paths
//!
//! - **local and sandbox**: a relative path starts at the task's working
//!   directory (the instance's `work/` directory, `/workspace` inside a
//!   sandbox). An absolute path is accepted only when it lies in that
//!   directory as commands see it (`/workspace/…` on the sandbox, the
//!   instance's `…/work/…` on the plain local backend) and is mapped to the
//!   same file; any other absolute path is refused. Every path is resolved
//!   by the kernel with the working directory as its boundary (`openat2`
//!   with `RESOLVE_BENEATH`): a `..` or a symlink that leads out of it
//!   fails, also when the symlink is swapped in while the transfer runs,
//!   since every later step works on directory descriptors already
//!   resolved, never on path strings.
//! - **morph**: the VM is the task's own, so absolute paths (`/testbed`)
//!   are allowed, and relative ones start at the directory commands run in.
//!
//! # Streams
//!
//! A directory travels as a tar stream (`tar` crate, never a `tar`
//! process on this machine): its entries are the directory's contents,
//! relative to it. A download of a single file as a tar stream holds one
//! entry named after the file. Unpacking refuses entries with absolute
//! names or `..` components, hard links to names outside the stream's
//! root, and device nodes and FIFOs; symlinks are kept as links (never
//! followed while unpacking). Set-uid and set-gid bits are dropped; other
//! mode bits and modification times are kept. Each file is written to a
//! temporary name next to its place and renamed over it, so nobody sees a
//! half-written file; a failed directory upload may leave the entries
//! unpacked before the failure.

pub(crate) mod confined;
pub(crate) mod ops;
pub(crate) mod tar_in;
pub(crate) mod tar_out;

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Limits of one transfer. Uploads and downloads over them stop with an
/// [`InvalidInput`](crate::ErrorKind::InvalidInput) error naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Most bytes of file data (the sum of the files' sizes).
    pub max_bytes: u64,
    /// Most entries (files, directories, links) of a directory.
    pub max_files: u64,
}

impl TransferLimits {
    /// No limit at all (the runtime still applies its configured ones).
    pub const UNLIMITED: TransferLimits = TransferLimits {
        max_bytes: u64::MAX,
        max_files: u64::MAX,
    };

    /// The tighter of two limits, field by field.
    #[must_use]
    pub fn min(self, other: TransferLimits) -> TransferLimits {
        TransferLimits {
            max_bytes: self.max_bytes.min(other.max_bytes),
            max_files: self.max_files.min(other.max_files),
        }
    }
}

impl Default for TransferLimits {
    /// 1 GiB of data, 100,000 entries.
    fn default() -> Self {
        TransferLimits {
            max_bytes: 1 << 30,
            max_files: 100_000,
        }
    }
}

/// File transfer settings of a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesConfig {
    /// The limits every transfer gets, whatever it asks for
    /// (`HECATE_FILES_MAX_BYTES`, default 1 GiB;
    /// `HECATE_FILES_MAX_FILES`, default 100,000).
    pub limits: TransferLimits,
    /// Deadline of one transfer (`HECATE_FILES_TIMEOUT_SECONDS`, default
    /// 600 s).
    pub timeout: Duration,
    /// MorphCloud: how many chunk commands are in flight at once
    /// (`HECATE_FILES_PARALLEL`, default 8).
    pub parallel: usize,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            limits: TransferLimits::default(),
            timeout: Duration::from_secs(600),
            parallel: 8,
        }
    }
}

/// What to upload.
pub enum UploadSource {
    /// The bytes of one file.
    Bytes(Bytes),
    /// A file on this machine (its mode bits are kept unless
    /// [`UploadSpec::mode`] says otherwise).
    File(PathBuf),
    /// A directory as a tar stream, in memory.
    Tar(Bytes),
    /// A directory as a tar stream read from `reader`.
    TarFrom(Box<dyn Read + Send>),
    /// A directory on this machine, sent as a tar stream of its contents.
    Dir(PathBuf),
}

impl fmt::Debug for UploadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            UploadSource::File(p) => f.debug_tuple("File").field(p).finish(),
            UploadSource::Tar(b) => write!(f, "Tar({} bytes)", b.len()),
            UploadSource::TarFrom(_) => f.write_str("TarFrom(..)"),
            UploadSource::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
        }
    }
}

impl UploadSource {
    /// Whether the source is a directory (a tar stream) rather than a file.
    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            UploadSource::Tar(_) | UploadSource::TarFrom(_) | UploadSource::Dir(_)
        )
    }
}

/// An upload into a task: `source` is written at `path` (see the
/// [module docs](self) for how paths are read). A file replaces what was
/// there atomically; a directory is created if needed and the stream's
/// entries are unpacked into it. Missing parent directories are created.
#[derive(Debug)]
pub struct UploadSpec {
    /// Where in the task.
    pub path: String,
    /// What.
    pub source: UploadSource,
    /// Mode bits of an uploaded file (default: the source file's, or
    /// `0o644` for bytes). Ignored for directories (their entries carry
    /// their own).
    pub mode: Option<u32>,
    /// Limits, on top of the runtime's.
    pub limits: TransferLimits,
}

impl UploadSpec {
    /// An upload of `source` to `path` with no limits of its own.
    pub fn new(path: impl Into<String>, source: UploadSource) -> Self {
        UploadSpec {
            path: path.into(),
            source,
            mode: None,
            limits: TransferLimits::UNLIMITED,
        }
    }

    /// Sets the uploaded file's mode bits.
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets limits of its own.
    #[must_use]
    pub fn limits(mut self, limits: TransferLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// Where a download goes.
pub enum DownloadTarget {
    /// Into [`Transferred::data`]: the file's bytes (a directory is an
    /// error: ask for [`Tar`](Self::Tar)).
    Bytes,
    /// A file on this machine, written atomically (a directory is an error).
    File(PathBuf),
    /// Into [`Transferred::data`]: a tar stream of the file or directory.
    Tar,
    /// A tar stream of the file or directory written to `writer`.
    TarTo(Box<dyn Write + Send>),
    /// A directory on this machine (created if needed) into which the tar
    /// stream is unpacked, under the same rules as an upload.
    Dir(PathBuf),
}

impl fmt::Debug for DownloadTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadTarget::Bytes => f.write_str("Bytes"),
            DownloadTarget::File(p) => f.debug_tuple("File").field(p).finish(),
            DownloadTarget::Tar => f.write_str("Tar"),
            DownloadTarget::TarTo(_) => f.write_str("TarTo(..)"),
            DownloadTarget::Dir(p) => f.debug_tuple("Dir").field(p).finish(),
        }
    }
}

impl DownloadTarget {
    /// Whether the target takes a tar stream rather than one file's bytes.
    pub fn is_tar(&self) -> bool {
        matches!(
            self,
            DownloadTarget::Tar | DownloadTarget::TarTo(_) | DownloadTarget::Dir(_)
        )
    }
}

/// A download out of a task: the file or directory at `path`.
#[derive(Debug)]
pub struct DownloadSpec {
    /// Where in the task.
    pub path: String,
    /// Where to.
    pub target: DownloadTarget,
    /// Limits, on top of the runtime's.
    pub limits: TransferLimits,
}

impl DownloadSpec {
    /// A download of `path` to `target` with no limits of its own.
    pub fn new(path: impl Into<String>, target: DownloadTarget) -> Self {
        DownloadSpec {
            path: path.into(),
            target,
            limits: TransferLimits::UNLIMITED,
        }
    }

    /// Sets limits of its own.
    #[must_use]
    pub fn limits(mut self, limits: TransferLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// What a transfer moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes of file data.
    pub bytes: u64,
    /// Entries: 1 for a file, the number of files, directories and links of
    /// a directory.
    pub files: u64,
    /// The downloaded bytes or tar stream, for [`DownloadTarget::Bytes`]
    /// and [`DownloadTarget::Tar`].
    pub data: Option<Bytes>,
}

/// Counts a transfer against its limits.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: TransferLimits,
    pub bytes: u64,
    pub files: u64,
}

impl Budget {
    pub fn new(limits: TransferLimits) -> Self {
        Budget {
            limits,
            bytes: 0,
            files: 0,
        }
    }

    /// One more entry.
    pub fn add_file(&mut self) -> Result<()> {
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(Error::invalid_input(format!(
                "more than {} files: over the transfer's file limit \
                 (HECATE_FILES_MAX_FILES)",
                self.limits.max_files
            )));
        }
        Ok(())
    }

    /// `n` more bytes of file data.
    pub fn add_bytes(&mut self, n: u64) -> Result<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_bytes {
            return Err(Error::invalid_input(format!(
                "more than {} bytes: over the transfer's size limit \
                 (HECATE_FILES_MAX_BYTES)",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    /// What was counted.
    pub fn done(&self, data: Option<Bytes>) -> Transferred {
        Transferred {
            bytes: self.bytes,
            files: self.files,
            data,
        }
    }
}

/// Checks the text of a transfer's path: not empty, no NUL byte.
pub(crate) fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::invalid_input("path is empty"));
    }
    if path.contains('\0') {
        return Err(Error::invalid_input("path contains a NUL byte"));
    }
    if path.len() > 4096 {
        return Err(Error::invalid_input(format!(
            "path is {} bytes long; the limit is 4096",
            path.len()
        )));
    }
    Ok(())
}
