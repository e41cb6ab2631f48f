//! `hecate cp`: copies files and directories between this machine and a
//! task of a running `hecate serve`, in the style of `docker cp`:
//!
//! - `hecate cp TASK:PATH LOCAL` downloads. A file is written to `LOCAL`
//!   (or into it, under the file's name, when `LOCAL` is a directory); a
//!   directory travels as a tar stream and is unpacked into `LOCAL` (or
//!   into `LOCAL/NAME` when `LOCAL` is an existing directory), under the
//!   library's unpacking rules (no entry lands outside it).
//! - `hecate cp LOCAL TASK:PATH` uploads. A file becomes `PATH` (or
//!   `PATH/NAME` when `PATH` ends with `/`), keeping its mode bits; a
//!   directory's contents are unpacked into `PATH` (or `PATH/NAME` when
//!   `PATH` ends with `/`), streamed as a tar as it is read.
//!
//! An argument is a task's path when it has a `:` and what comes before it
//! is a task id; a local path that has a `:` can be written `./a:b`. The
//! server is `--url`, else `HECATE_API_URL`, else
//! `http://127.0.0.1:8787`; the token is `HECATE_API_TOKEN` (never
//! printed).

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::ApiToken;
use crate::error::{Error, Result};
use crate::files::{Budget, TransferLimits};

/// The server `hecate cp` talks to when neither `--url` nor
/// `HECATE_API_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";

/// Most bytes of a download `hecate cp` accepts (file bytes or tar).
const MAX_DOWNLOAD_BYTES: u64 = 16 << 30;

/// `hecate cp SRC DEST`.
#[derive(Debug, Clone, clap::Args)]
pub struct CpArgs {
    /// What to copy: `TASK:PATH` or a local path.
    pub src: String,
    /// Where to: a local path, or `TASK:PATH` (exactly one of the two is a
    /// task's).
    pub dest: String,
    /// The server (default HECATE_API_URL, else http://127.0.0.1:8787).
    #[arg(long)]
    pub url: Option<String>,
    /// Deadline of the whole transfer, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path in a task.
    Task {
        /// The task.
        task_id: String,
        /// The path in it.
        path: String,
    },
    /// A path on this machine.
    Local(PathBuf),
}

impl Endpoint {
    /// Reads an argument: `TASK:PATH` when it has a `:` after a valid task
    /// id (and does not start with `/` or `.`), else a local path.
    pub fn parse(arg: &str) -> Endpoint {
        if !arg.starts_with('/') && !arg.starts_with('.') {
            if let Some((task, path)) = arg.split_once(':') {
                if crate::runtime::validate_task_id(task).is_ok() && !task.contains('/') {
                    return Endpoint::Task {
                        task_id: task.to_string(),
                        path: if path.is_empty() { "." } else { path }.to_string(),
                    };
                }
            }
        }
        Endpoint::Local(PathBuf::from(arg))
    }
}

/// What a copy moved, for the summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Bytes received or sent (a tar stream's, for a directory).
    pub bytes: u64,
    /// Whether a directory was copied.
    pub directory: bool,
    /// Where it went.
    pub to: String,
}

/// Runs `hecate cp`: the copy, then a summary line on stderr.
pub async fn run_cp(args: CpArgs) -> Result<()> {
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var("HECATE_API_URL").ok())
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let token = match std::env::var("HECATE_API_TOKEN") {
        Ok(t) => ApiToken::new(t)?,
        Err(_) => {
            return Err(Error::config(
                "HECATE_API_TOKEN is not set: give the token `hecate serve` uses",
            ))
        }
    };
    let copied = copy(
        &url,
        &token,
        &args.src,
        &args.dest,
        Duration::from_secs(args.timeout_secs),
    )
    .await?;
    eprintln!(
        "hecate cp: copied {} ({} bytes) to {}",
        if copied.directory {
            "a directory"
        } else {
            "a file"
        },
        copied.bytes,
        copied.to
    );
    Ok(())
}

/// Copies `src` to `dest` (see the [module docs](self)) through the server
/// at `url`.
pub async fn copy(
    url: &str,
    token: &ApiToken,
    src: &str,
    dest: &str,
    timeout: Duration,
) -> Result<Copied> {
    let client = awc::Client::builder()
        .timeout(timeout)
        .disable_redirects()
        .finish();
    let base = url.trim_end_matches('/');
    match (Endpoint::parse(src), Endpoint::parse(dest)) {
        (Endpoint::Task { task_id, path }, Endpoint::Local(local)) => {
            download(&client, base, token, &task_id, &path, &local).await
        }
        (Endpoint::Local(local), Endpoint::Task { task_id, path }) => {
            upload(&client, base, token, &local, &task_id, &path).await
        }
        (Endpoint::Task { .. }, Endpoint::Task { .. }) => Err(Error::invalid_input(
            "both sides are a task's (TASK:PATH): one must be a local path",
        )),
        (Endpoint::Local(_), Endpoint::Local(_)) => Err(Error::invalid_input(
            "neither side is a task's: write one as TASK:PATH",
        )),
    }
}

fn files_url(base: &str, task_id: &str, path: &str, mode: Option<u32>) -> Result<String> {
    let mut query = vec![("path", path.to_string())];
    if let Some(mode) = mode {
        query.push(("mode", format!("{mode:o}")));
    }
    let query = serde_urlencoded::to_string(&query)
        .map_err(|e| Error::invalid_input(format!("the path cannot be sent: {e}")))?;
    Ok(format!(
        "{base}/v1/tasks/{}/files?{query}",
        path_segment(task_id)
    ))
}

/// `text` percent-encoded for one path segment (all but the unreserved
/// characters).
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn send_error(e: impl std::fmt::Display) -> Error {
    Error::transient(format!("the server could not be reached: {e}"))
}

/// The server's error answer as an error.
async fn answer_error<S>(resp: &mut awc::ClientResponse<S>) -> Error
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = resp.status().as_u16();
    let body = resp.body().limit(64 << 10).await.unwrap_or_default();
    let (message, kind) = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => (
            v["error"].as_str().unwrap_or("").to_string(),
            v["error_kind"].as_str().unwrap_or("").to_string(),
        ),
        Err(_) => (
            String::from_utf8_lossy(&body).chars().take(300).collect(),
            String::new(),
        ),
    };
    let text = format!("the server answered {status}: {message} ({kind})");
    match status {
        400 | 404 | 409 | 413 | 422 => Error::invalid_input(text),
        401 => Error::config(text),
        _ => Error::new(crate::ErrorKind::Rejected, text).with_status(status),
    }
}

/// The last normal component of a path (`None` for `.`, `/`, `..`).
fn last_name(path: &str) -> Option<String> {
    match Path::new(path).components().next_back() {
        Some(Component::Normal(name)) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    }
}

async fn download(
    client: &awc::Client,
    base: &str,
    token: &ApiToken,
    task_id: &str,
    path: &str,
    local: &Path,
) -> Result<Copied> {
    let mut resp = client
        .get(files_url(base, task_id, path, None)?)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(send_error)?;
    if !resp.status().is_success() {
        return Err(answer_error(&mut resp).await);
    }
    let directory = resp
        .headers()
        .get(awc::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(super::files_api::TAR));
    let into = local.is_dir();
    let target = match (into, last_name(path)) {
        (true, Some(name)) => local.join(name),
        (true, None) if !directory => {
            return Err(Error::invalid_input(format!(
                "{path:?} names no file to write into {}",
                local.display()
            )))
        }
        _ => local.to_path_buf(),
    };
    // The body goes to a temporary file beside the target (a file) or in
    // the temporary directory (a tar stream, unpacked from there).
    let temp_dir = if directory {
        std::env::temp_dir()
    } else {
        match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let temp = temp_dir.join(format!(
        ".hecate-cp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = receive(&mut resp, &temp, directory, &target).await;
    let _ = std::fs::remove_file(&temp);
    let bytes = result?;
    Ok(Copied {
        bytes,
        directory,
        to: target.display().to_string(),
    })
}

/// Writes the body to `temp`, then renames it to `target` (a file) or
/// unpacks it into `target` (a directory). Answers the bytes received.
async fn receive<S>(
    resp: &mut awc::ClientResponse<S>,
    temp: &Path,
    directory: bool,
    target: &Path,
) -> Result<u64>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let io_err = |what: &str, e: io::Error| Error::internal(format!("{what}: {e}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| io_err(&format!("creating {}", temp.display()), e))?;
    let mut total = 0u64;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| {
            Error::new(
                crate::ErrorKind::Indeterminate,
                format!("the download broke off: {e}"),
            )
        })?;
        total += chunk.len() as u64;
        if total > MAX_DOWNLOAD_BYTES {
            return Err(Error::invalid_input(format!(
                "the download is over {MAX_DOWNLOAD_BYTES} bytes"
            )));
        }
        file.write_all(&chunk)
            .map_err(|e| io_err(&format!("writing {}", temp.display()), e))?;
    }
    drop(file);
    if directory {
        let root = crate::files::ops::local_dir_root(target)?;
        let reader = std::fs::File::open(temp)
            .map_err(|e| io_err(&format!("reading {}", temp.display()), e))?;
        let mut budget = Budget::new(TransferLimits::UNLIMITED);
        crate::files::tar_in::extract(&root, Path::new(""), reader, &mut budget)?;
    } else {
        std::fs::rename(temp, target)
            .map_err(|e| io_err(&format!("writing {}", target.display()), e))?;
    }
    Ok(total)
}

/// A writer that sends what it is given, in chunks, to the request body.
struct BodyWriter(tokio::sync::mpsc::Sender<io::Result<Bytes>>);

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn upload(
    client: &awc::Client,
    base: &str,
    token: &ApiToken,
    local: &Path,
    task_id: &str,
    path: &str,
) -> Result<Copied> {
    let meta = std::fs::metadata(local)
        .map_err(|e| Error::invalid_input(format!("{}: {e}", local.display())))?;
    let directory = meta.is_dir();
    if !directory && !meta.is_file() {
        return Err(Error::invalid_input(format!(
            "{}: not a regular file or directory",
            local.display()
        )));
    }
    let target = if path.ends_with('/') {
        let name = local
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                Error::invalid_input(format!("{}: has no name to copy under", local.display()))
            })?;
        format!("{path}{name}")
    } else {
        path.to_string()
    };
    let mode = (!directory).then_some(meta.permissions().mode() & 0o7777);
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let source = local.to_path_buf();
    // The body is produced on a thread of its own: a file's bytes, or a
    // tar stream of the directory read through confined calls.
    let producer = std::thread::spawn(move || -> Result<u64> {
        let err_tx = tx.clone();
        let mut out = io::BufWriter::with_capacity(256 << 10, BodyWriter(tx));
        let produced = if directory {
            let root =
                crate::files::confined::Root::open(&source, None, source.display().to_string());
            root.and_then(|root| {
                let mut budget = Budget::new(TransferLimits::UNLIMITED);
                crate::files::tar_out::write(&root, Path::new(""), &mut out, &mut budget)
                    .map(|_| budget.bytes)
            })
        } else {
            std::fs::File::open(&source)
                .and_then(|mut f| io::copy(&mut f, &mut out))
                .map_err(|e| Error::invalid_input(format!("reading {}: {e}", source.display())))
        };
        let flushed = out
            .flush()
            .map_err(|e| Error::internal(format!("sending the upload: {e}")));
        let produced = produced.and_then(|n| flushed.map(|()| n));
        if let Err(err) = &produced {
            // Break the request off so the server keeps nothing of it.
            let _ = err_tx.blocking_send(Err(io::Error::other(err.message().to_string())));
        }
        produced
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let content_type = if directory {
        super::files_api::TAR
    } else {
        "application/octet-stream"
    };
    let sent = client
        .put(files_url(base, task_id, &target, mode)?)
        .bearer_auth(token.expose())
        .content_type(content_type)
        .send_stream(body)
        .await;
    let produced = producer
        .join()
        .unwrap_or_else(|_| Err(Error::internal("the upload's reader panicked")));
    // A refusal (413, a bad path) stops the server reading, which breaks
    // the producer off: the server's answer says why.
    let mut resp = match (sent, produced) {
        (Ok(mut resp), _) if !resp.status().is_success() => {
            return Err(answer_error(&mut resp).await)
        }
        (_, Err(err)) => return Err(err),
        (Err(e), Ok(_)) => return Err(send_error(e)),
        (Ok(resp), Ok(_)) => resp,
    };
    let answer = resp
        .json::<serde_json::Value>()
        .limit(64 << 10)
        .await
        .map_err(|e| Error::protocol(format!("the server's answer: {e}")))?;
    Ok(Copied {
        bytes: answer["bytes"].as_u64().unwrap_or(0),
        directory,
        to: format!("{task_id}:{target}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_a_tasks_path_only_after_a_task_id_and_a_colon() {
        let task = |t: &str, p: &str| Endpoint::Task {
            task_id: t.into(),
            path: p.into(),
        };
        assert_eq!(Endpoint::parse("t1:work/a"), task("t1", "work/a"));
        assert_eq!(Endpoint::parse("t1:"), task("t1", "."));
        assert_eq!(Endpoint::parse("my task:/x"), task("my task", "/x"));
        for local in ["./t1:a", "/abs/t1:a", "plain", "dir/t1:a"] {
            assert_eq!(
                Endpoint::parse(local),
                Endpoint::Local(local.into()),
                "{local}"
            );
        }
        assert_eq!(path_segment("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(last_name("a/b/"), Some("b".into()));
        assert_eq!(last_name("."), None);
    }
}
