//! The backend boundary: the [`Provider`] trait, the [`Instance`] it starts,
//! and the types that cross between them and the runtime.
//!
//! A provider starts instances; an instance runs commands and stops. The
//! runtime owns each instance through exactly one task actor, so per-instance
//! state lives in the instance object and needs no shared maps. Futures are
//! not `Send`: an instance and its futures stay on the arbiter thread of the
//! actor that owns it (awc's client is not `Send` either). A provider itself
//! is shared by all arbiters and must be `Send + Sync`.
//!
//! Every failure is an [`Error`] with a kind that tells the
//! runtime what to do: [`Transient`](crate::ErrorKind::Transient) is retried,
//! [`InstanceGone`](crate::ErrorKind::InstanceGone) makes the runtime start a
//! fresh instance, [`Indeterminate`](crate::ErrorKind::Indeterminate) is
//! reported and never re-run blindly, everything else is reported.

pub mod local;
pub mod morph;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::future::{FutureExt, LocalBoxFuture};

use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};

/// The tags Hecate attaches to every instance (MorphCloud metadata, the local
/// backend's `instance.json`). One spelling for every writer and reader.
pub mod tags {
    /// The task the instance serves.
    pub const TASK_ID: &str = "hecate_task_id";
    /// The runtime that started the instance (`Runtime::runtime_id`).
    pub const RUNTIME_ID: &str = "hecate_runtime_id";
    /// Marks an instance as Hecate's; its value is [`CREATED_BY_VALUE`].
    pub const CREATED_BY: &str = "created_by";
    /// The value of [`CREATED_BY`].
    pub const CREATED_BY_VALUE: &str = "hecate";
    /// A unique id per create request of a start, so that an instance whose
    /// create answer was lost can be found (and adopted or stopped) by it.
    pub const START_ATTEMPT: &str = "hecate_start_attempt";
}

/// Longest command text accepted, in bytes. Linux refuses a single
/// argument longer than 128 KiB (`MAX_ARG_STRLEN`, counting its NUL);
/// longer scripts belong in a file. A backend whose transport carries
/// less checks its own limit on top of [`check_command`].
pub const MAX_COMMAND_BYTES: usize = 128 * 1024 - 1;

/// The one check of a command's text, used by the tool contract, the
/// runtime and every backend: not blank, no NUL byte, at most
/// [`MAX_COMMAND_BYTES`].
pub fn check_command(command: &str) -> Result<()> {
    if command.trim().is_empty() {
        return Err(Error::invalid_input("command is empty"));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(Error::invalid_input(format!(
            "command is {} bytes long; the limit is {MAX_COMMAND_BYTES} bytes \
             (write a long script to a file and run the file)",
            command.len()
        )));
    }
    if command.contains('\0') {
        return Err(Error::invalid_input("command contains a NUL byte"));
    }
    Ok(())
}

/// The provider the configuration names; [`BackendKind::Auto`] is
/// resolved by [`resolve_backend`], and its fallback warning logged once
/// (`log::warn`).
pub fn from_config(config: &Config) -> Result<std::sync::Arc<dyn Provider>> {
    let (kind, warning) = resolve_backend(config);
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
    match kind {
        BackendKind::Auto | BackendKind::Local => {
            Ok(std::sync::Arc::new(local::LocalProvider::new(config)?))
        }
        BackendKind::Sandbox => Ok(std::sync::Arc::new(local::LocalProvider::new_sandbox(
            config,
        )?)),
        BackendKind::Morph => Ok(std::sync::Arc::new(morph::MorphProvider::new(config)?)),
    }
}

/// The backend `config` runs on: the one it names, or for
/// [`BackendKind::Auto`] `sandbox` where
/// [`sandbox::probe`](crate::launcher::sandbox::probe) succeeds, else
/// `local` together with the one-line warning to show (the cause and the
/// fix). Probing forks a short-lived child: call it once per runtime.
pub fn resolve_backend(config: &Config) -> (BackendKind, Option<String>) {
    match config.backend {
        BackendKind::Auto => match crate::launcher::sandbox::probe() {
            Ok(()) => (BackendKind::Sandbox, None),
            Err(why) => (BackendKind::Local, Some(fallback_warning(&why))),
        },
        named => (named, None),
    }
}

/// The warning of a fallback from the sandbox to the plain local backend.
fn fallback_warning(why: &str) -> String {
    let why = why
        .trim_start_matches("sandbox unavailable: ")
        .trim_end_matches('.');
    format!(
        "sandbox backend unavailable, falling back to the plain local backend (tasks are \
         NOT isolated from each other or the machine): {why}. Fix that to get the sandbox, \
         or set HECATE_BACKEND=local to choose the plain backend and silence this warning"
    )
}

/// A boxed future that need not be `Send`.
pub type BoxFuture<T> = LocalBoxFuture<'static, T>;

/// A backend that can start instances.
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and results (`local`, `morph`).
    fn name(&self) -> &'static str;

    /// Starts an instance for a task and waits until it is ready to run
    /// commands. A start that fails after the backend created something must
    /// clean it up before returning the error.
    ///
    /// `spec.create_slot` is one of the runtime's start slots
    /// (`HECATE_MAX_CONCURRENT_STARTS`), which cap the rate of create
    /// requests to the backend. Release it ([`StartSlot::release`]) as soon
    /// as the create request has been answered, before waiting for the
    /// instance to become ready; dropping `spec` releases it too.
    fn start(&self, spec: StartSpec) -> BoxFuture<Result<Box<dyn Instance>>>;

    /// Whether [`ExecSpec::command`] is run as a bash script (bash 4.4 or
    /// later), so that the runtime may wrap it to restore and save the
    /// task's shell state ([`crate::shell`]). The default is `false`: a
    /// backend that runs commands otherwise (`sh`, a test double) gets
    /// them as given, and its tasks keep no shell state.
    fn supports_persistent_shell(&self) -> bool {
        false
    }

    /// Whether the backend restores and saves the persistent shell state
    /// itself when [`ExecSpec::shell`] asks (the local and sandbox
    /// backends, through their launcher: [`crate::shell::native`]), so the
    /// runtime passes the command unwrapped. Implies
    /// [`supports_persistent_shell`](Provider::supports_persistent_shell).
    fn keeps_shell_state(&self) -> bool {
        false
    }

    /// Whether its instances implement [`Instance::upload`] (and
    /// [`Instance::download`]). A task spec's files go through them where
    /// they do, and as shell text otherwise. The default is `false`.
    fn supports_files(&self) -> bool {
        false
    }

    /// Stops every instance this backend can find that carries the tag
    /// `hecate_runtime_id = runtime_id` and returns their ids. The runtime
    /// calls it at the end of a graceful shutdown, to catch instances whose
    /// start failed half-way. Backends without tags find nothing.
    fn sweep_orphans(&self, runtime_id: &str) -> BoxFuture<Result<Vec<String>>> {
        let _ = runtime_id;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// One running execution environment (a VM, a local sandbox directory).
///
/// Owned by exactly one task actor; its methods are never called
/// concurrently with [`stop`](Instance::stop).
pub trait Instance: 'static {
    /// The backend's id of this instance (`morphvm_…`, `local-…`).
    fn id(&self) -> &str;

    /// Runs one command. A command's non-zero exit, or its timeout, is a
    /// successful [`ExecOutput`]; an `Err` means the backend failed.
    ///
    /// With [`ExecSpec::background`] the call returns as soon as the command
    /// has started, with [`ExecOutput::job`] set.
    fn exec(&self, spec: ExecSpec) -> BoxFuture<Result<ExecOutput>>;

    /// Runs one command like [`exec`](Instance::exec) and pushes its output
    /// to `sink` as it is produced ([`crate::stream`]); the sink is dropped
    /// when the command has ended. The returned output is the same bounded
    /// capture as [`exec`](Instance::exec)'s. The default runs
    /// [`exec`](Instance::exec) and pushes its capture at the end, for
    /// backends that cannot stream.
    fn exec_streaming(
        &self,
        spec: ExecSpec,
        sink: crate::stream::OutputSink,
    ) -> BoxFuture<Result<ExecOutput>> {
        let run = self.exec(spec);
        Box::pin(async move {
            let output = run.await?;
            sink.push_captured(crate::stream::StreamKind::Stdout, &output.stdout);
            sink.push_captured(crate::stream::StreamKind::Stderr, &output.stderr);
            Ok(output)
        })
    }

    /// Stops the instance and everything it started. Stopping an instance
    /// that is already gone succeeds.
    fn stop(&self) -> BoxFuture<Result<()>>;

    /// Puts a file or a directory (a tar stream) into the instance
    /// ([`crate::files`] says how paths are read and what a stream may
    /// hold). The default refuses: the backend moves no files.
    fn upload(
        &self,
        spec: crate::files::UploadSpec,
    ) -> BoxFuture<Result<crate::files::Transferred>> {
        let _ = spec;
        Box::pin(async { Err(Error::invalid_input("this backend cannot upload files")) })
    }

    /// Takes a file or a directory (a tar stream) out of the instance. The
    /// default refuses: the backend moves no files.
    fn download(
        &self,
        spec: crate::files::DownloadSpec,
    ) -> BoxFuture<Result<crate::files::Transferred>> {
        let _ = spec;
        Box::pin(async { Err(Error::invalid_input("this backend cannot download files")) })
    }

    /// Where the runtime keeps its jobs' output stores ([`crate::jobs`]) in
    /// this instance: a private directory removed with the instance.
    /// `None` (the default): the backend has no jobs beyond plain
    /// background commands.
    fn jobs_dir(&self) -> Option<JobsDir> {
        None
    }

    /// Ends a background job this instance started (`job`, as its
    /// [`ExecOutput::job`] said) and everything it started: SIGTERM, up to
    /// `grace` for it to go, then SIGKILL. The default signals the job's
    /// process group and its descendants with a command run in the
    /// instance.
    fn kill_job(&self, job: &JobInfo, grace: Duration) -> BoxFuture<Result<()>> {
        let Some(pid) = job.pid.filter(|pid| *pid > 1) else {
            return Box::pin(async { Err(Error::invalid_input("the job's pid is not known")) });
        };
        let secs = grace.as_secs_f64();
        let script = format!(
            "tree() {{ for c in $(cat /proc/$1/task/*/children 2>/dev/null); do tree $c; done; \
             echo $1; }}\n\
             sig() {{ kill -$1 -- -{pid} 2>/dev/null; for p in $(tree {pid}); do kill -$1 $p \
             2>/dev/null; done; }}\n\
             sig TERM; i=0; while kill -0 -- -{pid} 2>/dev/null && [ $i -lt {tenths} ]; do \
             sleep 0.1; i=$((i+1)); done\n\
             sig KILL; true\n",
            tenths = (secs * 10.0).ceil() as u64
        );
        self.exec(ExecSpec {
            command: script,
            background: false,
            timeout: grace + Duration::from_secs(30),
            capture_bytes: 4096,
            shell: None,
        })
        .map(|ran| ran.map(|_| ()))
        .boxed_local()
    }
}

/// Where an instance keeps its jobs' output stores ([`Instance::jobs_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsDir {
    /// The directory as commands in the instance see it.
    pub in_instance: String,
    /// The same directory on this host, when the runtime may read it
    /// directly (the plain local backend).
    pub on_host: Option<std::path::PathBuf>,
}

/// What the runtime asks of [`Provider::start`].
#[derive(Debug)]
pub struct StartSpec {
    /// The task the instance is for (any string the runtime accepted; a
    /// backend must never use it as a path component unescaped).
    pub task_id: String,
    /// A backstop lifetime the backend itself should enforce (a VM's server
    /// side TTL), so that an instance outlives a crashed runtime by at most
    /// this long. `None`: no backstop.
    pub ttl: Option<Duration>,
    /// Tags to attach to the instance where the backend supports them.
    pub metadata: BTreeMap<String, String>,
    /// The start slot this start holds; the provider releases it once its
    /// create request has been answered (see [`Provider::start`]).
    pub create_slot: StartSlot,
    /// The task's spec, when it has one: the backend uses its `image`
    /// (a MorphCloud snapshot, a sandbox root filesystem; a backend
    /// without images refuses one as invalid input), its sandbox limits,
    /// and may refuse a working directory it cannot confine. The runtime
    /// applies the rest (environment, files, setup) itself.
    pub task_spec: Option<std::sync::Arc<crate::spec::TaskSpec>>,
}

/// One of the runtime's start slots (`HECATE_MAX_CONCURRENT_STARTS`), held
/// by a start while its create request is in flight. Released by
/// [`release`](StartSlot::release) or when dropped.
pub struct StartSlot(Option<tokio::sync::OwnedSemaphorePermit>);

impl StartSlot {
    /// A slot holding `permit` of the runtime's start semaphore.
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        StartSlot(Some(permit))
    }

    /// A slot that limits nothing, for calling a provider directly (tests,
    /// tools) without a runtime.
    pub fn detached() -> Self {
        StartSlot(None)
    }

    /// Frees the slot for the next start: the create request has been
    /// answered.
    pub fn release(self) {
        drop(self);
    }
}

impl fmt::Debug for StartSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "StartSlot(held)"
        } else {
            "StartSlot(detached)"
        })
    }
}

/// What the runtime asks of [`Instance::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Shell command text, run with `bash -c` (or `sh -c`).
    pub command: String,
    /// Run in the background: return once started, output to a job log.
    pub background: bool,
    /// Kill the command (its whole process tree) after this long and report
    /// exit code 124. Ignored for background commands.
    pub timeout: Duration,
    /// Keep at most this many bytes of each of stdout and stderr (half from
    /// the head, half from the tail); count what was dropped.
    pub capture_bytes: usize,
    /// The persistent shell, for a backend that keeps the state itself
    /// ([`Provider::keeps_shell_state`]): restore the task's state into
    /// the command and, with [`Mode::RestoreAndSave`](crate::shell::Mode),
    /// save what it leaves. `None` for every other backend (the runtime
    /// wraps the command text instead) and when the call does not use it.
    pub shell: Option<crate::shell::Mode>,
}

/// The result of a command that ran (whatever its exit code).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// The command's exit code; 124 when it timed out; 128+N when killed by
    /// signal N.
    pub exit_code: i32,
    /// What the command wrote to stdout (bounded).
    pub stdout: Captured,
    /// What the command wrote to stderr (bounded).
    pub stderr: Captured,
    /// The command ran into its timeout and was killed.
    pub timed_out: bool,
    /// The command was killed by its instance's memory limit (the sandbox
    /// backend's `HECATE_SANDBOX_MEMORY_MB`).
    pub oom_killed: bool,
    /// For background commands: the job that was started.
    pub job: Option<JobInfo>,
}

/// A background job started by a command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JobInfo {
    /// The job's id within its instance (`1`, `2`, …).
    pub id: String,
    /// The pid of the job's process (also its process group id), if known.
    pub pid: Option<u32>,
    /// Path of the job's own log file (stdout and stderr) inside the instance.
    pub log_file: String,
    /// Path of a file the job's exit code is written to when it ends.
    pub exit_file: String,
}

/// A bounded capture of one output stream: the head and the tail, and how
/// many bytes were dropped between them. Text is valid UTF-8 (invalid bytes
/// replaced), and the cut never splits a character.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Captured {
    /// The first bytes of the stream (all of it when nothing was dropped).
    pub head: String,
    /// The last bytes of the stream, when some were dropped before them.
    pub tail: String,
    /// How many bytes of the stream were dropped between head and tail.
    pub dropped_bytes: u64,
}

impl fmt::Debug for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Captured")
            .field("head_len", &self.head.len())
            .field("tail_len", &self.tail.len())
            .field("dropped_bytes", &self.dropped_bytes)
            .finish()
    }
}

impl Captured {
    /// A capture of a whole string, cut to `capture_bytes` like
    /// [`OutputCapture`] would.
    pub fn from_text(text: &str, capture_bytes: usize) -> Self {
        let mut cap = OutputCapture::new(capture_bytes);
        cap.push(text.as_bytes());
        cap.finish()
    }

    /// Whether anything was dropped.
    pub fn is_truncated(&self) -> bool {
        self.dropped_bytes > 0
    }

    /// Whether the stream was empty.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty() && self.dropped_bytes == 0
    }

    /// The kept text, with a one-line marker ([`gap_marker`](Self::gap_marker))
    /// where bytes were dropped.
    pub fn to_text(&self) -> String {
        if self.dropped_bytes == 0 {
            return format!("{}{}", self.head, self.tail);
        }
        format!(
            "{}{}{}",
            self.head,
            Self::gap_marker(self.dropped_bytes),
            self.tail
        )
    }

    /// The marker [`to_text`](Self::to_text) puts between head and tail
    /// when `dropped` bytes were dropped. The tool counts these bytes into
    /// its own truncation notice when it cuts a marker away.
    pub fn gap_marker(dropped: u64) -> String {
        format!("\n... [{dropped} bytes dropped] ...\n")
    }
}

/// A streaming, memory-bounded capture of one output stream: keeps the
/// first `limit / 2` bytes and the last `limit - limit / 2` bytes.
#[derive(Debug)]
pub struct OutputCapture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    head_limit: usize,
    tail_limit: usize,
    dropped: u64,
}

impl OutputCapture {
    /// A capture keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        let head_limit = limit / 2;
        OutputCapture {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            head_limit,
            tail_limit: limit - head_limit,
            dropped: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.head.len() < self.head_limit {
            let take = (self.head_limit - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.tail_limit {
            self.dropped += (self.tail.len() + bytes.len() - self.tail_limit) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_limit..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..overflow);
        self.dropped += overflow as u64;
        self.tail.extend(bytes);
    }

    /// Total bytes seen so far.
    pub fn total_bytes(&self) -> u64 {
        (self.head.len() + self.tail.len()) as u64 + self.dropped
    }

    /// The capture as text. Bytes of a character cut at the head's end or the
    /// tail's start count as dropped, so no character is split; other
    /// invalid UTF-8 is replaced with U+FFFD.
    pub fn finish(self) -> Captured {
        let mut dropped = self.dropped;
        let mut head = self.head;
        let mut tail: Vec<u8> = self.tail.into();
        if dropped == 0 {
            head.extend_from_slice(&tail);
            return Captured {
                head: String::from_utf8_lossy(&head).into_owned(),
                tail: String::new(),
                dropped_bytes: 0,
            };
        }
        // Trim a character cut at the end of the head ...
        let keep = utf8_prefix_len(&head);
        dropped += (head.len() - keep) as u64;
        head.truncate(keep);
        // ... and continuation bytes at the start of the tail.
        let skip = tail
            .iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count();
        dropped += skip as u64;
        tail.drain(..skip);
        Captured {
            head: String::from_utf8_lossy(&head).into_owned(),
            tail: String::from_utf8_lossy(&tail).into_owned(),
            dropped_bytes: dropped,
        }
    }
}

/// Length of `bytes` without an incomplete UTF-8 sequence at its end.
fn utf8_prefix_len(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=3.min(n) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte, look further back
        }
        let need = if b >= 0xF0 {
            4
        } else if b >= 0xE0 {
            3
        } else if b >= 0xC0 {
            2
        } else {
            1
        };
        return if need > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_warning_is_one_line_naming_the_cause_and_the_fixes() {
        let w = fallback_warning(
            "sandbox unavailable: user namespaces are disabled (user.max_user_namespaces = 0); \
             fix: sysctl -w user.max_user_namespaces=15000",
        );
        assert!(!w.contains('\n'), "{w}");
        assert!(
            w.starts_with("sandbox backend unavailable, falling back"),
            "{w}"
        );
        assert!(w.contains("user.max_user_namespaces = 0"), "{w}");
        assert!(
            w.contains("sysctl -w user.max_user_namespaces=15000"),
            "{w}"
        );
        assert!(w.contains("HECATE_BACKEND=local"), "{w}");
        assert!(!w.contains("unavailable: sandbox unavailable"), "{w}");
    }

    #[test]
    fn capture_keeps_everything_under_the_limit() {
        let mut c = OutputCapture::new(10);
        c.push(b"hello");
        let out = c.finish();
        assert_eq!(out.head, "hello");
        assert!(!out.is_truncated());
    }

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = OutputCapture::new(6);
        for chunk in [&b"abc"[..], b"defgh", b"ij", b"klmnop"] {
            c.push(chunk);
        }
        assert_eq!(c.total_bytes(), 16);
        let out = c.finish();
        assert_eq!(out.head, "abc");
        assert_eq!(out.tail, "nop");
        assert_eq!(out.dropped_bytes, 10);
    }

    #[test]
    fn capture_never_splits_a_character() {
        let text = "é".repeat(10); // 20 bytes
        let out = Captured::from_text(&text, 7);
        assert!(out.head.chars().all(|c| c == 'é'));
        assert!(out.tail.chars().all(|c| c == 'é'));
        assert_eq!(
            out.head.len() + out.tail.len() + out.dropped_bytes as usize,
            20
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut c = OutputCapture::new(100);
        c.push(&[b'a', 0xff, b'b']);
        assert_eq!(c.finish().head, "a\u{fffd}b");
    }
}
