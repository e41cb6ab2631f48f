//! Uploads and downloads of a MorphCloud VM over its exec API, the only
//! way in: the data travels base64-encoded in bounded chunks, several
//! chunk commands in flight at once, and every transfer is verified by
//! size and SHA-256 (`sha256sum` in the VM, the `sha2` crate here).
//!
//! - **Upload**: a first command makes the parent directory and an empty
//!   staging directory next to the destination
//!   (`<path>.hecate-tmp-<random>`, so the rename stays on one file system);
//!   each chunk command (at most [`script::UP_CHUNK`] bytes; its base64 in a
//!   here-document, the whole text under the 128 KiB a single exec argument
//!   may carry) is bash handing over to one `base64 -d` that writes the
//!   chunk's own piece file; a last command joins the pieces in order into
//!   one file while hashing them (one pass), checks size and checksum and
//!   only then sets the mode and renames the file over the destination, or
//!   for a directory unpacks the tar stream into it (`tar -x`, after this
//!   side checked every entry by the rules of [`crate::files`]). Every end
//!   removes the staging directory. While the pieces are joined the VM
//!   holds the data twice.
//! - **Download**: a first command reports the kind, size, checksum and
//!   mode of the file, or packs a directory (`tar -c`) into a temporary
//!   file and reports that; chunk commands (`dd skip= count=1 | base64`,
//!   [`script::DOWN_CHUNK`] bytes each, answers have no 128 KiB bound) fetch
//!   it in parallel, each decoded straight into its place; the bytes must
//!   match size and checksum.
//!
//! Why these commands (where a chunk's time goes) is in [`script`].
//!
//! A checksum or size mismatch (a corrupted chunk) retries the whole
//! transfer, twice at most, then fails naming the mismatch. Chunk commands
//! are idempotent (the same bytes to the same piece file, or read only), so a chunk whose
//! request failed transiently or lost its answer is sent again.
//!
//! Paths: the VM is the task's own, so absolute paths are allowed; relative
//! ones start where commands start.

mod script;

pub(super) use script::{DOWN_CHUNK, UP_CHUNK};

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::shell::quote;
use super::InstanceInner;
use crate::error::{Error, ErrorKind, Result};
use crate::files::confined::{Data, Root};
use crate::files::{
    check_path, ops, tar_in, tar_out, Budget, DownloadSpec, DownloadTarget, TransferLimits,
    Transferred, UploadSource, UploadSpec,
};

/// How often a transfer whose checksum did not match is tried again.
const MISMATCH_RETRIES: u32 = 2;
/// How often one chunk command is sent again after a transient failure or
/// a lost answer.
const CHUNK_RETRIES: u32 = 3;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl InstanceInner {
    pub(super) async fn upload(&self, spec: UploadSpec) -> Result<Transferred> {
        check_path(&spec.path)?;
        let is_dir = spec.source.is_dir();
        let (payload, budget) = upload_payload(spec.source, spec.limits).await?;
        let mode = match spec.mode {
            Some(m) => m,
            None => payload.mode,
        };
        let mut attempt = 0;
        loop {
            match self
                .upload_once(&spec.path, &payload.data, is_dir, mode)
                .await
            {
                Err(err) if is_mismatch(&err) && attempt < MISMATCH_RETRIES => {
                    attempt += 1;
                    log::warn!("task={} vm={} upload: {err}; again", self.task_id, self.id);
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(budget.done(None)),
            }
        }
    }

    async fn upload_once(&self, path: &str, data: &[u8], is_dir: bool, mode: u32) -> Result<()> {
        let p = quote(path)?;
        let dir = quote(&format!(
            "{}.hecate-tmp-{:016x}",
            path.trim_end_matches('/'),
            fastrand::u64(..)
        ))?;
        let piece = script::piece_len(&dir)?;
        let pieces = data.len().div_ceil(piece);
        script::check_piece_count(pieces)?;
        let parent = if is_dir {
            p.clone()
        } else {
            format!("\"$(dirname -- {p})\"")
        };
        self.run_checked(
            &format!("mkdir -p -- {parent} && mkdir -- {dir}"),
            "preparing the upload",
        )
        .await?;
        let parallel = self.shared.transfer_parallel.max(1);
        let dir_ref = &dir;
        stream::iter(data.chunks(piece).enumerate())
            .map(|(i, chunk)| async move {
                let cmd = script::piece_command(dir_ref, i, &B64.encode(chunk));
                let reply = self.run_chunk(&cmd).await?;
                if reply.exit_code != 0 {
                    return Err(Error::internal(format!(
                        "upload of {path:?}: chunk {i} failed (exit {}): {}",
                        reply.exit_code,
                        reply.stderr.trim()
                    )));
                }
                Ok(())
            })
            .buffer_unordered(parallel)
            .try_collect::<Vec<()>>()
            .await
            .inspect_err(|_| self.cleanup(dir_ref))?;
        let sha = hex(&Sha256::digest(data));
        let place = if is_dir {
            format!("tar -xf {dir}/all -C {p} --no-same-owner --no-same-permissions 2>&1; r=$?; rm -rf -- {dir}; exit $r")
        } else {
            format!(
                "chmod {:o} {dir}/all && mv -f -- {dir}/all {p}; r=$?; rm -rf -- {dir}; exit $r",
                mode & 0o1777
            )
        };
        let check = script::finish_command(&dir, pieces, data.len(), &sha, &place);
        let reply = self.run_chunk(&check).await?;
        match reply.exit_code {
            0 => Ok(()),
            3 => Err(mismatch(format!(
                "upload of {path:?}: the VM has other bytes than were sent ({}; sent {} bytes, \
                 sha256 {sha})",
                reply.stdout.trim(),
                data.len()
            ))),
            code => Err(Error::new(
                ErrorKind::Internal,
                format!(
                    "upload of {path:?}: placing it failed (exit {code}): {}{}",
                    reply.stdout.trim(),
                    reply.stderr.trim()
                ),
            )),
        }
    }

    pub(super) async fn download(&self, spec: DownloadSpec) -> Result<Transferred> {
        check_path(&spec.path)?;
        let tar = spec.target.is_tar();
        let mut attempt = 0;
        let (data, mode) = loop {
            match self.download_once(&spec.path, tar, spec.limits).await {
                Err(err) if is_mismatch(&err) && attempt < MISMATCH_RETRIES => {
                    attempt += 1;
                    log::warn!(
                        "task={} vm={} download: {err}; again",
                        self.task_id,
                        self.id
                    );
                }
                other => break other?,
            }
        };
        deliver(data, mode, spec.target, spec.limits).await
    }

    async fn download_once(
        &self,
        path: &str,
        tar: bool,
        limits: TransferLimits,
    ) -> Result<(Vec<u8>, u32)> {
        let p = quote(path)?;
        let tmp = format!("/tmp/hecate-down-{:016x}.tar", fastrand::u64(..));
        let pack = if tar {
            format!(
                "if [ -d {p} ]; then tar -cf {tmp} -C {p} . || exit 1; \
                 else tar -cf {tmp} -C \"$(dirname -- {p})\" -- \"$(basename -- {p})\" || exit 1; fi; f={tmp}"
            )
        } else {
            format!("[ -d {p} ] && {{ echo 'is a directory (download it as a tar stream or into a directory)'; exit 4; }}; f={p}")
        };
        let head = format!(
            "[ -e {p} ] || {{ echo 'no such file or directory'; exit 4; }}; {pack}; \
             [ -f \"$f\" ] || {{ echo 'not a regular file'; exit 4; }}; \
             s=$(stat -L -c '%s %a' \"$f\") && h=$(sha256sum < \"$f\") || exit 1; echo \"$s ${{h%% *}}\""
        );
        let reply = self.run_chunk(&head).await?;
        if reply.exit_code == 4 {
            return Err(Error::invalid_input(format!(
                "{path:?}: {}",
                reply.stdout.trim()
            )));
        }
        if reply.exit_code != 0 {
            return Err(Error::internal(format!(
                "download of {path:?}: reading it failed (exit {}): {}",
                reply.exit_code,
                reply.stderr.trim()
            )));
        }
        let fields: Vec<&str> = reply.stdout.split_whitespace().collect();
        let (size, mode, sha) = match fields.as_slice() {
            [s, m, h] => (
                s.parse::<u64>()
                    .map_err(|_| Error::protocol("the VM reported no size"))?,
                u32::from_str_radix(m, 8).unwrap_or(0o644),
                h.to_string(),
            ),
            _ => {
                return Err(Error::protocol(format!(
                    "unexpected answer: {:?}",
                    reply.stdout
                )))
            }
        };
        let src = if tar { quote(&tmp)? } else { p };
        let result = self.fetch(&src, size, &sha, path, limits, tar).await;
        if tar {
            self.cleanup(&src);
        }
        result.map(|data| (data, mode))
    }

    async fn fetch(
        &self,
        src: &str,
        size: u64,
        sha: &str,
        path: &str,
        limits: TransferLimits,
        tar: bool,
    ) -> Result<Vec<u8>> {
        // A tar stream carries headers too: its file data is counted when
        // it is unpacked or checked.
        let bound = if tar {
            limits
                .max_bytes
                .saturating_add(limits.max_files.saturating_mul(1024))
                .saturating_add(1 << 20)
        } else {
            limits.max_bytes
        };
        if size > bound {
            return Err(Error::invalid_input(format!(
                "more than {} bytes: over the transfer's size limit (HECATE_FILES_MAX_BYTES)",
                limits.max_bytes
            )));
        }
        let mut data = vec![0u8; usize::try_from(size).map_err(|_| too_big())?];
        let parallel = self.shared.transfer_parallel.max(1);
        // Each chunk decodes straight into its own slice of the result: no
        // reordering and no second copy.
        stream::iter(data.chunks_mut(script::DOWN_CHUNK).enumerate())
            .map(|(i, slot)| async move {
                let cmd = script::fetch_command(src, i as u64);
                let reply = self.run_chunk(&cmd).await?;
                if reply.exit_code != 0 {
                    return Err(Error::internal(format!(
                        "download of {path:?}: chunk {i} failed (exit {}): {}",
                        reply.exit_code,
                        reply.stderr.trim()
                    )));
                }
                decode_into(reply.stdout.trim_end(), slot)
                    .map_err(|why| mismatch(format!("download of {path:?}: chunk {i} {why}")))
            })
            .buffer_unordered(parallel)
            .try_collect::<Vec<()>>()
            .await?;
        let got = hex(&Sha256::digest(&data));
        if data.len() as u64 != size || got != sha {
            return Err(mismatch(format!(
                "download of {path:?}: received {} bytes with sha256 {got}; the VM has {size} \
                 bytes with sha256 {sha}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// Runs a transfer command; a transient failure or a lost answer is
    /// tried again (transfer commands are idempotent).
    async fn run_chunk(&self, command: &str) -> Result<super::wire::ExecReply> {
        let timeout = self
            .shared
            .api
            .request_timeout()
            .max(Duration::from_secs(60));
        let mut tries = 0;
        loop {
            match self.shared.api.exec(&self.id, command, timeout).await {
                Err(err)
                    if matches!(err.kind(), ErrorKind::Transient | ErrorKind::Indeterminate)
                        && tries < CHUNK_RETRIES =>
                {
                    tries += 1;
                    let wait = err
                        .retry_after()
                        .unwrap_or(Duration::from_millis(50 << tries));
                    actix_rt::time::sleep(wait.min(Duration::from_secs(5))).await;
                }
                other => return other,
            }
        }
    }

    async fn run_checked(&self, command: &str, doing: &str) -> Result<()> {
        let reply = self.run_chunk(command).await?;
        if reply.exit_code != 0 {
            return Err(Error::invalid_input(format!(
                "{doing} failed (exit {}): {}",
                reply.exit_code,
                reply.stderr.trim()
            )));
        }
        Ok(())
    }

    /// Removes a temporary file or staging directory in the VM, in the
    /// background.
    fn cleanup(&self, quoted: &str) {
        let shared = std::sync::Arc::clone(&self.shared);
        let id = self.id.clone();
        let cmd = format!("rm -rf -- {quoted}");
        actix_rt::spawn(async move {
            let _ = shared.api.exec(&id, &cmd, Duration::from_secs(30)).await;
        });
    }
}

/// The bytes to send, their default mode, and the budget they used.
struct Payload {
    data: Vec<u8>,
    mode: u32,
}

async fn upload_payload(source: UploadSource, limits: TransferLimits) -> Result<(Payload, Budget)> {
    tokio::task::spawn_blocking(move || {
        let mut budget = Budget::new(limits);
        let (data, file_mode) = match source {
            UploadSource::Bytes(b) => {
                budget.add_file()?;
                budget.add_bytes(b.len() as u64)?;
                (b.to_vec(), 0o644)
            }
            UploadSource::File(path) => {
                use std::io::Read;
                use std::os::unix::fs::PermissionsExt;
                let file = ops::open_local_file(&path)?;
                let m = file
                    .metadata()
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0o644);
                let mut data = Vec::new();
                file.take(limits.max_bytes.saturating_add(1))
                    .read_to_end(&mut data)
                    .map_err(|e| {
                        Error::invalid_input(format!("reading {}: {e}", path.display()))
                    })?;
                budget.add_file()?;
                budget.add_bytes(data.len() as u64)?;
                (data, m)
            }
            UploadSource::Tar(b) => {
                tar_in::check(&b[..], &mut budget)?;
                (b.to_vec(), 0o755)
            }
            UploadSource::TarFrom(mut r) => {
                let mut data = Vec::new();
                std::io::copy(&mut r, &mut data)
                    .map_err(|e| Error::invalid_input(format!("reading the tar stream: {e}")))?;
                tar_in::check(&data[..], &mut budget)?;
                (data, 0o755)
            }
            UploadSource::Dir(path) => {
                let root = Root::open(&path, None, path.display().to_string())?;
                let data = tar_out::write(&root, Path::new(""), Vec::new(), &mut budget)?;
                (data, 0o755)
            }
        };
        Ok((
            Payload {
                data,
                mode: file_mode,
            },
            budget,
        ))
    })
    .await
    .map_err(|e| Error::internal(format!("the file transfer thread failed: {e}")))?
}

/// Hands downloaded bytes (a file, or a tar stream) to the target.
async fn deliver(
    data: Vec<u8>,
    mode: u32,
    target: DownloadTarget,
    limits: TransferLimits,
) -> Result<Transferred> {
    tokio::task::spawn_blocking(move || {
        let mut budget = Budget::new(limits);
        match target {
            DownloadTarget::Bytes => {
                budget.add_file()?;
                budget.add_bytes(data.len() as u64)?;
                Ok(budget.done(Some(Bytes::from(data))))
            }
            DownloadTarget::File(path) => {
                budget.add_file()?;
                budget.add_bytes(data.len() as u64)?;
                ops::write_local_file(&path, Data::Read(&mut &data[..]), mode, limits.max_bytes)?;
                Ok(budget.done(None))
            }
            DownloadTarget::Tar => {
                let data = tar_in::normalize(&data[..], &mut budget)?;
                Ok(budget.done(Some(Bytes::from(data))))
            }
            DownloadTarget::TarTo(mut w) => {
                let data = tar_in::normalize(&data[..], &mut budget)?;
                w.write_all(&data)
                    .map_err(|e| Error::internal(format!("writing the tar stream: {e}")))?;
                Ok(budget.done(None))
            }
            DownloadTarget::Dir(path) => {
                let root = ops::local_dir_root(&path)?;
                tar_in::extract(&root, Path::new(""), &data[..], &mut budget)?;
                Ok(budget.done(None))
            }
        }
    })
    .await
    .map_err(|e| Error::internal(format!("the file transfer thread failed: {e}")))?
}

/// Decodes one chunk's base64 `text` into `slot`, which it must fill
/// exactly.
fn decode_into(text: &str, slot: &mut [u8]) -> std::result::Result<(), String> {
    let n = match B64.decode_slice(text.as_bytes(), slot) {
        Ok(n) => n,
        // A server that wraps long lines: decode without the whitespace.
        Err(_) if text.bytes().any(|b| b.is_ascii_whitespace()) => {
            let packed: String = text.split_whitespace().collect();
            return decode_into(&packed, slot);
        }
        Err(e) => return Err(format!("is not base64 of {} bytes: {e}", slot.len())),
    };
    if n != slot.len() {
        return Err(format!("has {n} bytes, not {}", slot.len()));
    }
    Ok(())
}

fn too_big() -> Error {
    Error::invalid_input("the file is too large for this machine's memory")
}

/// A checksum or size mismatch: the transfer is tried again.
fn mismatch(message: String) -> Error {
    Error::new(
        ErrorKind::Transient,
        format!("checksum mismatch: {message}"),
    )
}

fn is_mismatch(err: &Error) -> bool {
    err.kind() == ErrorKind::Transient && err.message().starts_with("checksum mismatch")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
