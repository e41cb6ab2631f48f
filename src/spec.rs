//! Task environments: a [`TaskSpec`] says what a task's instance starts
//! from and with — an image, environment variables, a working directory,
//! files placed before setup, setup commands run once per instance, its
//! lifetimes and sandbox limits, and whether the persistent shell is on.
//!
//! A task gets its spec from [`Runtime::open_task`](crate::Runtime::open_task)
//! or with its first command ([`ExecRequest::spec`](crate::ExecRequest::spec));
//! a different spec later is refused, and a task used without one behaves
//! as before. The runtime applies the spec to every instance the task gets:
//! the first, and each one that replaces it (TTL, a vanished VM, an idle
//! stop), reporting each application as a [`SetupReport`]
//! (`reapplied: true` on a replacement).
//!
//! How each part is applied (the same on every backend, as shell text, so
//! it needs nothing installed but bash and `mkdir`):
//!
//! - `image` goes to the backend with the start ([`StartSpec::task_spec`]):
//!   a MorphCloud snapshot id, a sandbox root filesystem directory; the
//!   plain local backend refuses it.
//! - `env` and `workdir` become a one-line prefix of every command of the
//!   task (setup included): `export NAME='value'; … cd -- 'DIR' || exit 1;`,
//!   on the command's first line, so line numbers stay the command's. With
//!   the persistent shell the saved state is restored after it, so `cd`
//!   and `export` of earlier calls win over the spec.
//! - `files` are written by one or more commands before setup, with bash
//!   builtins (`printf`), under the working directory; paths are relative
//!   and have no `..` (the instance is fresh, so nothing in it can lead
//!   elsewhere).
//! - `setup` commands run in order once the files are placed; the first
//!   that fails (non-zero exit, timeout, backend error) ends the setup, and
//!   the task's queued and later commands get a
//!   [`SetupFailed`](crate::ErrorKind::SetupFailed) error carrying its
//!   output until the task is evicted.
//!
//! [`StartSpec::task_spec`]: crate::provider::StartSpec::task_spec

mod json;
mod script;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

pub use json::{parse_spec_fields, SPEC_FIELDS};
pub(crate) use script::{prelude, prepare_scripts, sh_quote};

/// Most environment variables a spec may set.
pub const MAX_ENV_VARS: usize = 256;
/// Most bytes of names and values of a spec's environment, together.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
/// Longest working directory, in bytes.
pub const MAX_WORKDIR_BYTES: usize = 4096;
/// Most setup commands.
pub const MAX_SETUP_COMMANDS: usize = 64;
/// Most files a spec may place.
pub const MAX_FILES: usize = 1000;
/// Most bytes of all the files of a spec, together.
pub const MAX_FILES_BYTES: usize = 8 * 1024 * 1024;
/// Most characters of a setup command's output kept in its [`SetupStep`].
pub const MAX_STEP_OUTPUT_CHARS: usize = 8000;

/// Variables a spec may not set: Hecate's markers (`HECATE_*`, which the
/// backends' kill sweeps rely on) and bash's read-only ones.
const RESERVED_NAMES: [&str; 6] = [
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "UID",
];

/// What a task's instances start from and with. Build it with
/// [`TaskSpec::new`] and the setters, or from JSON with
/// [`parse_spec_fields`]; [`validate`](TaskSpec::validate) checks it (the
/// runtime does too). `Debug` never shows the environment's values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TaskSpec {
    /// A MorphCloud snapshot id (morph), or the absolute path of a root
    /// filesystem directory (sandbox). The plain local backend refuses it.
    pub image: Option<String>,
    /// Environment variables of every command of the task.
    pub env: BTreeMap<String, String>,
    /// The working directory of every command: relative to the backend's
    /// task directory (no `..`), or absolute (morph, sandbox). Created if
    /// missing. `None`: the task directory (`/workspace` on the sandbox).
    pub workdir: Option<String>,
    /// Files placed (under the working directory) before setup.
    pub files: Vec<SpecFile>,
    /// Commands run once on each new instance, in order, after the files.
    pub setup: Vec<String>,
    /// Timeout of each setup command; `None`: the runtime's command timeout.
    pub setup_timeout: Option<Duration>,
    /// The idle time after which the task's instance is stopped; `None`:
    /// the runtime's (`HECATE_VM_LIFETIME_SECONDS`).
    pub idle_lifetime: Option<Duration>,
    /// The instance's lifetime from its start; `None`: the runtime's
    /// (`HECATE_VM_TTL_SECONDS`).
    pub ttl: Option<Duration>,
    /// Sandbox backend: memory limit of the instance in MiB.
    pub memory_mb: Option<u64>,
    /// Sandbox backend: limit on the instance's processes and threads.
    pub pids: Option<u64>,
    /// The persistent shell for this task's calls; `None`: the runtime's
    /// setting. A call's own
    /// [`ExecRequest::persistent_shell`](crate::ExecRequest::persistent_shell)
    /// still wins.
    pub persistent_shell: Option<bool>,
}

/// One file a spec places.
#[derive(Clone, PartialEq, Eq)]
pub struct SpecFile {
    /// Where, relative to the working directory (no `..`, no leading `/`).
    pub path: String,
    /// Its bytes.
    pub content: Vec<u8>,
    /// Make it executable.
    pub executable: bool,
}

impl fmt::Debug for SpecFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpecFile")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("executable", &self.executable)
            .finish()
    }
}

impl SpecFile {
    /// A file at `path` with `content`.
    pub fn new(path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        SpecFile {
            path: path.into(),
            content: content.into(),
            executable: false,
        }
    }
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be credentials the task needs: names only.
        let env: Vec<&str> = self.env.keys().map(String::as_str).collect();
        f.debug_struct("TaskSpec")
            .field("image", &self.image)
            .field("env_names", &env)
            .field("workdir", &self.workdir)
            .field("files", &self.files)
            .field("setup", &self.setup.len())
            .field("setup_timeout", &self.setup_timeout)
            .field("idle_lifetime", &self.idle_lifetime)
            .field("ttl", &self.ttl)
            .field("memory_mb", &self.memory_mb)
            .field("pids", &self.pids)
            .field("persistent_shell", &self.persistent_shell)
            .finish()
    }
}

impl TaskSpec {
    /// An empty spec (applies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the image.
    #[must_use]
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Sets one environment variable.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the working directory.
    #[must_use]
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Adds a file to place before setup.
    #[must_use]
    pub fn file(mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        self.files.push(SpecFile::new(path, content));
        self
    }

    /// Adds a setup command.
    #[must_use]
    pub fn setup(mut self, command: impl Into<String>) -> Self {
        self.setup.push(command.into());
        self
    }

    /// Turns the persistent shell on or off for the task.
    #[must_use]
    pub fn persistent_shell(mut self, on: bool) -> Self {
        self.persistent_shell = Some(on);
        self
    }

    /// Sets the instance's TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the idle lifetime.
    #[must_use]
    pub fn idle_lifetime(mut self, idle: Duration) -> Self {
        self.idle_lifetime = Some(idle);
        self
    }

    /// Whether applying it costs nothing at a start: no files, no setup, no
    /// working directory to create.
    pub fn is_free_to_apply(&self) -> bool {
        self.files.is_empty() && self.setup.is_empty() && self.workdir.is_none()
    }

    /// Checks every field, naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        if let Some(image) = &self.image {
            if image.trim().is_empty() || image.contains('\0') || image.len() > 4096 {
                return Err(Error::invalid_input(
                    "spec image must be a non-empty snapshot id or directory path without NUL, \
                     at most 4096 bytes",
                ));
            }
        }
        check_env(&self.env)?;
        if let Some(dir) = &self.workdir {
            check_workdir(dir)?;
        }
        check_files(&self.files)?;
        if self.setup.len() > MAX_SETUP_COMMANDS {
            return Err(Error::invalid_input(format!(
                "spec setup has {} commands; the limit is {MAX_SETUP_COMMANDS}",
                self.setup.len()
            )));
        }
        for (i, command) in self.setup.iter().enumerate() {
            crate::provider::check_command(command)
                .map_err(|e| Error::invalid_input(format!("spec setup[{i}]: {}", e.message())))?;
        }
        for (name, value) in [
            ("setup_timeout", self.setup_timeout),
            ("idle_lifetime", self.idle_lifetime),
            ("ttl", self.ttl),
        ] {
            if let Some(d) = value {
                crate::config::duration_from_secs(d.as_secs_f64(), crate::config::MAX_DURATION)
                    .map_err(|why| Error::invalid_input(format!("spec {name}: {why}")))?;
            }
        }
        if self.memory_mb == Some(0) {
            return Err(Error::invalid_input("spec memory_mb must be at least 1"));
        }
        if self.pids == Some(0) {
            return Err(Error::invalid_input("spec pids must be at least 1"));
        }
        Ok(())
    }
}

/// The advice every spec conflict ends with; [`is_conflict`] knows a
/// conflict by it.
const CONFLICT_ADVICE: &str = "; evict the task to start it with another spec";

/// The error of a request whose spec conflicts with its task's (opened
/// with a different spec, or running without one): `invalid_input`, its
/// message `what` and the advice to evict.
pub(crate) fn conflict(what: String) -> Error {
    Error::invalid_input(format!("{what}{CONFLICT_ADVICE}"))
}

/// Whether `err` is a spec conflict ([`Runtime::open_task`] with a spec
/// other than the task's), which the HTTP API answers with 409.
///
/// [`Runtime::open_task`]: crate::Runtime::open_task
pub fn is_conflict(err: &Error) -> bool {
    err.kind() == crate::ErrorKind::InvalidInput && err.message().ends_with(CONFLICT_ADVICE)
}

/// `text`, cut to at most `max` characters (with `…` when cut), for
/// error messages.
pub(crate) fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `text` with its middle cut when longer than `max` characters: the
/// first quarter and the last three quarters kept, with a marker.
pub(crate) fn cut_middle(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_string();
    }
    let head = max / 4;
    let tail = max - head;
    let head_end = text.char_indices().nth(head).map_or(text.len(), |(i, _)| i);
    let tail_start = text
        .char_indices()
        .nth(total - tail)
        .map_or(text.len(), |(i, _)| i);
    format!(
        "{}\n[... {} characters cut ...]\n{}",
        &text[..head_end],
        total - head - tail,
        &text[tail_start..]
    )
}

fn check_env(env: &BTreeMap<String, String>) -> Result<()> {
    if env.len() > MAX_ENV_VARS {
        return Err(Error::invalid_input(format!(
            "spec env has {} variables; the limit is {MAX_ENV_VARS}",
            env.len()
        )));
    }
    let mut bytes = 0usize;
    for (name, value) in env {
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(Error::invalid_input(format!(
                "spec env: {:?} is not a valid variable name (letters, digits and _, not \
                 starting with a digit)",
                short(name, 80)
            )));
        }
        if name.starts_with("HECATE_") || RESERVED_NAMES.contains(&name.as_str()) {
            return Err(Error::invalid_input(format!(
                "spec env: {name} is reserved (HECATE_* are the runtime's markers; the others \
                 are read-only in bash)"
            )));
        }
        if value.contains('\0') {
            return Err(Error::invalid_input(format!(
                "spec env: the value of {name} contains a NUL byte"
            )));
        }
        bytes += name.len() + value.len();
    }
    if bytes > MAX_ENV_BYTES {
        return Err(Error::invalid_input(format!(
            "spec env is {bytes} bytes long; the limit is {MAX_ENV_BYTES}"
        )));
    }
    Ok(())
}

fn check_workdir(dir: &str) -> Result<()> {
    if dir.is_empty() || dir.len() > MAX_WORKDIR_BYTES {
        return Err(Error::invalid_input(format!(
            "spec workdir must be 1 to {MAX_WORKDIR_BYTES} bytes long"
        )));
    }
    if dir.chars().any(char::is_control) {
        return Err(Error::invalid_input(
            "spec workdir contains a control character (NUL, newline, ...)",
        ));
    }
    if dir.split('/').any(|c| c == "..") {
        return Err(Error::invalid_input(
            "spec workdir must not contain `..` components",
        ));
    }
    Ok(())
}

/// Checks a file's path: relative, no `.`/`..`/empty components, no control
/// characters.
pub(crate) fn check_file_path(path: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid_input(format!("spec file {:?}: {why}", short(path, 120)));
    if path.is_empty() || path.len() > MAX_WORKDIR_BYTES {
        return Err(bad("a path must be 1 to 4096 bytes long"));
    }
    if path.starts_with('/') {
        return Err(bad("the path must be relative to the working directory"));
    }
    if path.chars().any(char::is_control) {
        return Err(bad("the path contains a control character"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("the path must not have empty, `.` or `..` components"));
    }
    Ok(())
}

fn check_files(files: &[SpecFile]) -> Result<()> {
    if files.len() > MAX_FILES {
        return Err(Error::invalid_input(format!(
            "spec has {} files; the limit is {MAX_FILES}",
            files.len()
        )));
    }
    let mut total = 0usize;
    for file in files {
        check_file_path(&file.path)?;
        total += file.content.len();
    }
    if total > MAX_FILES_BYTES {
        return Err(Error::invalid_input(format!(
            "spec files are {total} bytes together; the limit is {MAX_FILES_BYTES}"
        )));
    }
    Ok(())
}

/// How applying a task's spec to one of its instances went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    /// The instance it was applied to.
    pub instance_id: String,
    /// Applied again on an instance that replaced an earlier one of the task
    /// (TTL, idle stop, a vanished VM): files and setup are new there too.
    pub reapplied: bool,
    /// Files placed.
    pub files_placed: usize,
    /// The setup commands that ran, in order (the first failure is last).
    pub steps: Vec<SetupStep>,
    /// Every part succeeded.
    pub ok: bool,
    /// Time spent applying it (files and setup).
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
}

/// One setup command's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupStep {
    /// The command (as given).
    pub command: String,
    /// Its exit code; `None` when the backend failed to run it.
    pub exit_code: Option<i32>,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// stdout then stderr, at most [`MAX_STEP_OUTPUT_CHARS`] (middle cut).
    pub output: String,
    /// The backend's error, when it failed to run the command.
    pub error: Option<String>,
    /// Its run time.
    #[serde(rename = "duration_ms", serialize_with = "ser_ms")]
    pub duration: Duration,
}

impl SetupStep {
    /// Whether the command ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.error.is_none()
    }
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SetupReport {
    /// The error every command of the task gets after this failed setup.
    pub fn failure(&self, task_id: &str) -> Error {
        let what = match self.steps.last() {
            Some(step) if !step.succeeded() => {
                let how = match (&step.error, step.timed_out, step.exit_code) {
                    (Some(err), _, _) => format!("could not run: {err}"),
                    (None, true, _) => "timed out".to_string(),
                    (None, false, Some(code)) => format!("exited with {code}"),
                    (None, false, None) => "failed".to_string(),
                };
                format!(
                    "setup command {} of {} `{}` {how}; its output:\n{}",
                    self.steps.len(),
                    self.steps.len(),
                    short(&step.command, 200),
                    step.output
                )
            }
            _ => "placing the spec's files or creating its working directory failed".to_string(),
        };
        Error::new(
            crate::ErrorKind::SetupFailed,
            format!(
                "the environment of task {} could not be set up on instance {}: {what}\n\
                 [every command of this task fails until the task is evicted]",
                short(task_id, 200),
                self.instance_id
            ),
        )
    }
}

/// A task's spec as the runtime keeps it, from its first use until it is
/// evicted: shared by the registry and the task's successive actors.
#[derive(Debug)]
pub(crate) struct TaskEnv {
    pub spec: Arc<TaskSpec>,
    /// The error of a failed setup: every later command gets it.
    failure: Mutex<Option<Error>>,
    /// How many instances the spec was applied to.
    applied: AtomicU32,
}

impl TaskEnv {
    pub fn new(spec: Arc<TaskSpec>) -> Self {
        TaskEnv {
            spec,
            failure: Mutex::new(None),
            applied: AtomicU32::new(0),
        }
    }

    /// The failed setup's error, if the setup failed.
    pub fn failure(&self) -> Option<Error> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub fn set_failure(&self, err: Error) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(err);
        }
    }

    /// Counts one application; whether it is a re-application.
    pub fn count_application(&self) -> bool {
        self.applied.fetch_add(1, Ordering::Relaxed) > 0
    }
}

#[cfg(test)]
mod tests;
