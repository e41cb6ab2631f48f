//! Files in and out of a task over HTTP ([`Runtime::upload`],
//! [`Runtime::download`]):
//!
//! - `PUT /v1/tasks/{task_id}/files?path=P`: the body is the file's bytes,
//!   or with `Content-Type: application/x-tar` a directory's tar stream,
//!   unpacked into `P`;
//! - `GET /v1/tasks/{task_id}/files?path=P`: a file's bytes
//!   (`application/octet-stream`), or a directory as a tar stream
//!   (`application/x-tar`); with `Accept: application/x-tar` a file comes
//!   as a tar stream of one entry too.
//!
//! Paths and limits are the library's ([`crate::files`]): `..` and
//! symlinks that lead out of the task's directory are refused (400,
//! `invalid_input`), and so is a transfer over the runtime's file limits.
//! An upload body over the server's limit
//! ([`ServerConfig::max_upload_bytes`](super::ServerConfig::max_upload_bytes))
//! gets 413. A tar body is streamed into the unpacking as it arrives (on
//! the local and sandbox backends, which unpack on a thread of their own);
//! a file's bytes are read into memory once.
//!
//! [`Runtime::upload`]: crate::Runtime::upload
//! [`Runtime::download`]: crate::Runtime::download

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use actix_web::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::routes::{path_task, AppState};
use crate::config::BackendKind;
use crate::error::ErrorKind;
use crate::files::{DownloadSpec, DownloadTarget, UploadSource, UploadSpec};

/// The media type of a directory's tar stream.
pub const TAR: &str = "application/x-tar";

/// Chunks of a streamed body in flight between the connection and the
/// unpacking thread.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Where a transfer goes or comes from.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The path in the task: relative to its working directory (or an
    /// absolute path inside it; any path on the morph backend).
    pub path: String,
    /// Upload of a file: its mode bits, in octal (`755`; default `644`).
    pub mode: Option<String>,
}

/// What an upload did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Uploaded {
    /// The task.
    pub task_id: String,
    /// The path in the task.
    pub path: String,
    /// `file` or `directory`.
    pub kind: &'static str,
    /// The instance it went to.
    pub instance_id: String,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Entries written: 1 for a file, the files, directories and links of a
    /// directory.
    pub files: u64,
    /// How long the transfer took, in milliseconds.
    pub duration_ms: u64,
}

fn is_tar(value: Option<&actix_web::http::header::HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with(TAR)))
}

fn parse_mode(mode: Option<&str>) -> Result<Option<u32>, ApiError> {
    let Some(text) = mode else {
        return Ok(None);
    };
    match u32::from_str_radix(text.trim(), 8) {
        Ok(m) if m <= 0o7777 => Ok(Some(m)),
        _ => Err(ApiError::invalid_input(
            "mode must be octal permission bits from 0 to 7777, like 644 or 755",
        )),
    }
}

/// Uploads a file (the body's bytes) or a directory (`Content-Type:
/// application/x-tar`: the body is a tar stream unpacked into `path`).
/// Missing parent directories are created; a file replaces what was there
/// atomically.
#[utoipa::path(
    put,
    path = "/v1/tasks/{task_id}/files",
    tag = "files",
    params(("task_id" = String, Path, description = "The task"), FileQuery),
    request_body(description = "A file's bytes, or a directory's tar stream",
        content((Vec<u8> = "application/octet-stream"), (Vec<u8> = "application/x-tar"))),
    responses(
        (status = 200, description = "Uploaded", body = Uploaded),
        (status = 400, description = "A bad path (`..` or a symlink out of the task's directory), \
            a bad tar stream, or over the runtime's file limits", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 413, description = "Body over HECATE_API_MAX_UPLOAD_BYTES", body = ApiError),
        (status = 502, description = "The backend failed", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<FileQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    path_task(&task_id)?;
    let query = query.into_inner();
    let mode = parse_mode(query.mode.as_deref())?;
    let limit = state.max_upload_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(upload_too_large(limit));
    }
    let dir = is_tar(req.headers().get(CONTENT_TYPE));
    let over = Arc::new(AtomicBool::new(false));
    let source = if dir && state.rt.config().backend != BackendKind::Morph {
        UploadSource::TarFrom(Box::new(BodyReader::pump(payload, limit, over.clone())))
    } else {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let body = super::routes::read_body(req.headers(), payload, limit)
            .await
            .map_err(|e| {
                if e.status == 413 {
                    upload_too_large(limit as u64)
                } else {
                    e
                }
            })?;
        if dir {
            UploadSource::Tar(body)
        } else {
            UploadSource::Bytes(body)
        }
    };
    let mut spec = UploadSpec::new(query.path.clone(), source);
    spec.mode = mode;
    // A body cut off at the limit fails the unpacking; the answer says why.
    let done = match state.rt.upload(task_id.as_str(), spec).await {
        Err(_) if over.load(Ordering::SeqCst) => return Err(upload_too_large(limit)),
        result => result?,
    };
    Ok(HttpResponse::Ok().json(Uploaded {
        task_id,
        path: query.path,
        kind: if dir { "directory" } else { "file" },
        instance_id: done.instance_id,
        bytes: done.transferred.bytes,
        files: done.transferred.files,
        duration_ms: u64::try_from(done.duration.as_millis()).unwrap_or(u64::MAX),
    }))
}

fn upload_too_large(limit: u64) -> ApiError {
    ApiError::new(
        413,
        "payload_too_large",
        format!("the upload is over the limit of {limit} bytes (HECATE_API_MAX_UPLOAD_BYTES)"),
    )
}

/// Downloads a file (its bytes, `application/octet-stream`) or a
/// directory (a tar stream of its contents, `application/x-tar`). With
/// `Accept: application/x-tar`, a file comes as a tar stream of one entry
/// named after it.
#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/files",
    tag = "files",
    params(("task_id" = String, Path, description = "The task"), FileQuery),
    responses(
        (status = 200, description = "A file's bytes, or a tar stream (a directory, or asked for)",
            content((Vec<u8> = "application/octet-stream"), (Vec<u8> = "application/x-tar"))),
        (status = 400, description = "A bad path (`..` or a symlink out of the task's directory, \
            no such file), or over the runtime's file limits", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 502, description = "The backend failed", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<FileQuery>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    path_task(&task_id)?;
    let query = query.into_inner();
    if query.mode.is_some() {
        return Err(ApiError::invalid_input("mode is for uploads"));
    }
    let mut tar = is_tar(req.headers().get(ACCEPT));
    if !tar {
        let spec = DownloadSpec::new(query.path.clone(), DownloadTarget::Bytes);
        match state.rt.download(task_id.as_str(), spec).await {
            Ok(done) => {
                return Ok(HttpResponse::Ok()
                    .content_type("application/octet-stream")
                    .body(done.transferred.data.unwrap_or_default()))
            }
            // Every backend words it so: a directory comes as a tar stream.
            Err(err)
                if err.kind() == ErrorKind::InvalidInput
                    && err.message().contains("is a directory") =>
            {
                tar = true
            }
            Err(err) => return Err(err.into()),
        }
    }
    debug_assert!(tar);
    let spec = DownloadSpec::new(query.path, DownloadTarget::Tar);
    let done = state.rt.download(task_id.as_str(), spec).await?;
    Ok(HttpResponse::Ok()
        .content_type(TAR)
        .body(done.transferred.data.unwrap_or_default()))
}

/// A request body as a blocking [`Read`], fed by a task on the
/// connection's thread: the unpacking reads it on a thread of its own
/// while the body arrives. At most [`CHUNKS_IN_FLIGHT`] chunks wait in
/// between.
struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    permits: Arc<Semaphore>,
    current: Bytes,
}

impl BodyReader {
    /// Starts feeding `payload` to the reader it returns, stopping with an
    /// error (and `over` set) past `limit` bytes.
    fn pump(mut payload: web::Payload, limit: u64, over: Arc<AtomicBool>) -> BodyReader {
        let (tx, rx) = mpsc::channel();
        let permits = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT));
        let gate = permits.clone();
        actix_rt::spawn(async move {
            let mut total = 0u64;
            while let Some(chunk) = payload.next().await {
                let item = match chunk {
                    Ok(chunk) => {
                        total = total.saturating_add(chunk.len() as u64);
                        if total > limit {
                            over.store(true, Ordering::SeqCst);
                            let _ = tx.send(Err(io::Error::other(format!(
                                "the upload is over the limit of {limit} bytes"
                            ))));
                            return;
                        }
                        Ok(chunk)
                    }
                    Err(e) => Err(io::Error::other(format!(
                        "the request body could not be read: {e}"
                    ))),
                };
                let failed = item.is_err();
                // Closed when the reader is dropped: stop reading.
                match gate.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
                if tx.send(item).is_err() || failed {
                    return;
                }
            }
        });
        BodyReader {
            rx,
            permits,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.permits.add_permits(1);
                    self.current = chunk;
                }
                Ok(Err(e)) => return Err(e),
                // The feeder ended: the body is complete.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        self.permits.close();
    }
}
