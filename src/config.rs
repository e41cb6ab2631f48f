//! [`Config`]: every setting of the runtime and its backends, with defaults,
//! reading from the environment, and validation.
//!
//! Precedence: values set in code win over the environment, which wins over
//! the defaults. [`Config::from_env`] reads the process environment;
//! [`Config::from_lookup`] reads any `key -> value` function, which is how
//! tests exercise it. An invalid value is an [`ErrorKind::Config`] error
//! naming the variable. The API key is held in an [`ApiKey`] whose `Debug`
//! and `Display` never show it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

mod env;
#[cfg(test)]
mod tests;

/// The most worker arbiters (threads) a runtime runs (`HECATE_WORKERS`):
/// far above any useful number, far below what makes thread creation fail.
pub const MAX_WORKERS: usize = 256;

/// Which backend runs the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The default when none is named: [`BackendKind::Sandbox`] where a
    /// sandbox can be made on this machine
    /// ([`probe`](crate::launcher::sandbox::probe)), else
    /// [`BackendKind::Local`] with one warning naming the cause and the fix.
    /// Resolved when the provider is made
    /// ([`provider::resolve_backend`](crate::provider::resolve_backend)).
    #[default]
    Auto,
    /// A private directory per task on this machine, commands in the
    /// host's namespaces (needs nothing installed).
    Local,
    /// A private directory per task on this machine, each instance in its
    /// own Linux namespaces (processes, mounts, network) under limits.
    Sandbox,
    /// A MorphCloud VM per task, over the MorphCloud HTTP API.
    Morph,
}

impl BackendKind {
    /// The name used in `HECATE_BACKEND`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Local => "local",
            BackendKind::Sandbox => "sandbox",
            BackendKind::Morph => "morph",
        }
    }

    /// Whether instances live on this machine (`local`, `sandbox`, or
    /// `auto`, which resolves to one of them).
    pub fn is_on_this_machine(self) -> bool {
        !matches!(self, BackendKind::Morph)
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "local" => Ok(BackendKind::Local),
            "sandbox" => Ok(BackendKind::Sandbox),
            "morph" | "morphcloud" => Ok(BackendKind::Morph),
            other => Err(Error::config(format!(
                "HECATE_BACKEND: unknown backend {:?} (expected \"sandbox\", \"local\", \"morph\" or \"auto\")",
                clip_name(other)
            ))),
        }
    }
}

/// At most 40 characters of a name for an error message.
fn clip_name(name: &str) -> String {
    name.chars().take(40).collect()
}

/// A secret API key. `Debug` and `Display` print `[redacted]`; only
/// [`ApiKey::expose`] gives the value, for the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself. Call this only to put it in an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Retry with exponential backoff and jitter, for errors classified
/// transient. The n-th retry (n = 1, 2, …) waits
/// `min(base * factor^(n-1), max_delay)`, scaled by a random factor in
/// `[1 - jitter, 1 + jitter]`, and at least what the server's `Retry-After`
/// asked for, up to `max_delay` (a server asking for a day must not stall a
/// call for a day). The runtime's retry loop (`runtime::backoff`) also cuts
/// the wait to a call's remaining deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// How many retries after the first attempt (`HECATE_RETRIES`).
    pub max_retries: u32,
    /// Delay before the first retry (`HECATE_RETRY_BASE_MS`).
    pub base_delay: Duration,
    /// Growth per retry.
    pub factor: f64,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Relative jitter, 0.0 to 1.0.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(2),
            factor: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based), before jitter.
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        let exp = self.factor.powi(retry.saturating_sub(1).min(63) as i32);
        let secs = (self.base_delay.as_secs_f64() * exp).min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// The delay before retry number `retry` (1-based), with jitter drawn
    /// from `unit` (a number in `[0, 1)`), and at least `retry_after` as far
    /// as `max_delay` allows.
    pub fn delay(&self, retry: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let nominal = self.nominal_delay(retry).as_secs_f64();
        let scale = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let jittered = Duration::from_secs_f64((nominal * scale).max(0.0));
        match retry_after {
            // Jitter may carry our own schedule past `max_delay`; the
            // server's hint never shortens it.
            Some(after) if after > jittered => after.min(self.max_delay).max(jittered),
            _ => jittered,
        }
    }
}

/// Settings of the local backend.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// Directory under which each instance gets a private directory
    /// (`HECATE_LOCAL_ROOT`; default `$TMPDIR/hecate-<uid>`).
    pub root: PathBuf,
    /// Grace between SIGTERM and SIGKILL when a command times out or an
    /// instance stops.
    pub kill_grace: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        LocalConfig {
            root: std::env::temp_dir().join(format!("hecate-{uid}")),
            kill_grace: Duration::from_secs(2),
        }
    }
}

/// Settings of the sandbox backend ([`BackendKind::Sandbox`]); see
/// [`crate::launcher::sandbox`] for what each does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SandboxConfig {
    /// The network of each sandbox (`HECATE_SANDBOX_NETWORK`: `isolated`,
    /// the default, loopback only; `outbound`, loopback plus outbound
    /// connections through slirp4netns; or `host`).
    pub network: crate::launcher::sandbox::NetworkMode,
    /// Memory limit per instance in bytes (`HECATE_SANDBOX_MEMORY_MB`, in
    /// MiB; default none).
    pub memory_limit: Option<u64>,
    /// Limit on processes and threads per instance (`HECATE_SANDBOX_PIDS`;
    /// default none).
    pub pids_limit: Option<u64>,
    /// A root filesystem directory to use instead of the host's `/usr`,
    /// `/bin`, `/lib*` and `/etc` (`HECATE_SANDBOX_ROOTFS`; default none).
    pub rootfs: Option<PathBuf>,
    /// The slirp4netns program of the `outbound` network (default: found
    /// on `PATH` when the sandbox backend starts).
    pub slirp4netns: Option<PathBuf>,
}

/// Settings of the MorphCloud backend.
#[derive(Debug, Clone, PartialEq)]
pub struct MorphConfig {
    /// API base URL including `/api` (`MORPH_BASE_URL`; default
    /// `https://cloud.morph.so/api`). A trailing `/` is ignored.
    pub base_url: String,
    /// The API key (`MORPH_API_KEY`). Required for the morph backend.
    pub api_key: Option<ApiKey>,
    /// Snapshot to start instances from (`HECATE_DEFAULT_SNAPSHOT_ID`).
    pub snapshot_id: String,
    /// The base interval of readiness polls (`HECATE_MORPH_POLL_MS`;
    /// default 100 ms): the first poll comes this long after the create is
    /// answered, and the next ones as often, until the instance has been
    /// pending for ten of them; from then on a poll comes after a tenth of
    /// the time it has been pending (at most every 2 s), so a ready instance
    /// is seen within about a tenth of its boot time.
    pub poll_interval: Duration,
    /// Overall deadline for an instance to become ready
    /// (`HECATE_MORPH_READY_TIMEOUT_SECONDS`; default 300 s).
    pub ready_timeout: Duration,
    /// Deadline of one API request other than exec (default 30 s).
    pub request_timeout: Duration,
    /// Grace given to a timed-out command between TERM and KILL inside the VM.
    pub kill_grace: Duration,
    /// Largest response body accepted (must exceed twice the capture size).
    pub max_body_bytes: usize,
}

impl Default for MorphConfig {
    fn default() -> Self {
        MorphConfig {
            base_url: "https://cloud.morph.so/api".to_string(),
            api_key: None,
            snapshot_id: "snapshot_defv9tjg".to_string(),
            poll_interval: Duration::from_millis(100),
            ready_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Every setting of a Hecate runtime. Fields are public; `Default` gives the
/// documented defaults, [`Config::from_env`] the environment's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Which backend runs instances (`HECATE_BACKEND`: `sandbox`, `local`,
    /// `morph`; unset: [`BackendKind::Auto`]).
    pub backend: BackendKind,
    /// Lifetime of an instance from its start; at this deadline it is
    /// stopped and the task's next command gets a fresh one
    /// (`HECATE_VM_TTL_SECONDS`; default 1200 s).
    pub vm_ttl: Duration,
    /// An instance idle this long (no command running or queued) is stopped
    /// and its actor evicted (`HECATE_VM_LIFETIME_SECONDS`; default 300 s).
    pub idle_lifetime: Duration,
    /// Timeout of a command when the call gives none
    /// (`HECATE_COMMAND_TIMEOUT_SECONDS`; default 120 s).
    pub command_timeout: Duration,
    /// Largest timeout a call may ask for (default 24 h).
    pub max_command_timeout: Duration,
    /// Most instances live at once; further tasks wait in FIFO order for a
    /// slot (`HECATE_MAX_INSTANCES`; default 1024).
    pub max_instances: usize,
    /// Most create requests in flight at once (`HECATE_MAX_CONCURRENT_STARTS`;
    /// default 64): it caps the rate at which the backend's API is asked to
    /// create instances. A start holds its slot only until the backend has
    /// answered its create request, not while the instance boots, so many
    /// more instances than this may be booting at once.
    pub max_concurrent_starts: usize,
    /// Retry of transient backend failures.
    pub retry: RetryPolicy,
    /// Also retry failures after which a command may already have run
    /// (`HECATE_RETRY_INDETERMINATE`; default false: such failures are
    /// reported, never re-run).
    pub retry_indeterminate: bool,
    /// Bytes kept of each of stdout and stderr, head and tail
    /// (default 1 MiB).
    pub capture_bytes: usize,
    /// Characters of `output` the tool returns before cutting the middle
    /// (`HECATE_MAX_OUTPUT_CHARS`; default 50,000).
    pub max_output_chars: usize,
    /// Deadline of a whole instance start, transient-failure retries and
    /// the backend's own readiness wait included; the wait for an instance
    /// slot (`max_instances`) comes before it and is not counted
    /// (`HECATE_START_TIMEOUT_SECONDS`; default 600 s). It also caps how long
    /// a background command may take to start.
    pub start_timeout: Duration,
    /// Deadline of a backend stop (default 60 s).
    pub stop_timeout: Duration,
    /// How far past a command's own timeout the runtime waits for the backend
    /// before giving up on the call (default 30 s).
    pub exec_grace: Duration,
    /// Worker threads (arbiters) task actors are spread over
    /// (`HECATE_WORKERS`; default: the number of cores).
    pub workers: usize,
    /// Local backend settings.
    pub local: LocalConfig,
    /// How the local backend starts its per-instance launcher
    /// (`HECATE_LAUNCHER`: the absolute path of a `hecate` binary;
    /// `HECATE_LAUNCHER_CGROUPS`: `auto`, `v2`, `v1` or `off`). Without a
    /// program the launcher is found as
    /// [`LauncherConfig::resolve_program`](crate::launcher::LauncherConfig::resolve_program)
    /// says: the current executable if its `main` called
    /// [`run_if_requested`](crate::launcher::run_if_requested), else a
    /// `hecate` next to it.
    pub launcher: crate::launcher::LauncherConfig,
    /// Make this process non-dumpable when the local backend is created
    /// ([`harden_runtime_process`](crate::launcher::harden_runtime_process)),
    /// so that commands of the same user cannot read its environment or
    /// memory through `/proc` (`HECATE_HARDEN_RUNTIME`; default true). It
    /// also disables core dumps and same-user debuggers: an embedder that
    /// needs those sets it to false.
    pub harden_runtime: bool,
    /// Sandbox backend settings.
    pub sandbox: SandboxConfig,
    /// MorphCloud backend settings.
    pub morph: MorphConfig,
    /// The persistent shell: whether `cd` and exported variables carry
    /// over between the calls of a task (`HECATE_PERSISTENT_SHELL`; default
    /// true), and which variables are never saved
    /// (`HECATE_SHELL_SECRET_PATTERNS`). See [`crate::shell`].
    pub shell: crate::shell::ShellConfig,
    /// File transfers ([`Runtime::upload`](crate::Runtime::upload)): their
    /// limits, deadline and (MorphCloud) parallel chunks
    /// (`HECATE_FILES_MAX_BYTES`, `HECATE_FILES_MAX_FILES`,
    /// `HECATE_FILES_TIMEOUT_SECONDS`, `HECATE_FILES_PARALLEL`).
    pub files: crate::files::FilesConfig,
    /// Background jobs: their output cap, lifetime, how long ended ones
    /// are remembered, the yield window (`HECATE_JOB_*`; see
    /// [`crate::jobs`]).
    pub jobs: crate::jobs::JobsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::Auto,
            vm_ttl: Duration::from_secs(1200),
            idle_lifetime: Duration::from_secs(300),
            command_timeout: Duration::from_secs(120),
            max_command_timeout: Duration::from_secs(24 * 3600),
            max_instances: 1024,
            max_concurrent_starts: 64,
            retry: RetryPolicy::default(),
            retry_indeterminate: false,
            capture_bytes: 1024 * 1024,
            max_output_chars: 50_000,
            start_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(60),
            exec_grace: Duration::from_secs(30),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            local: LocalConfig::default(),
            launcher: crate::launcher::LauncherConfig::default(),
            harden_runtime: true,
            sandbox: SandboxConfig::default(),
            morph: MorphConfig::default(),
            shell: crate::shell::ShellConfig::default(),
            files: crate::files::FilesConfig::default(),
            jobs: crate::jobs::JobsConfig::default(),
        }
    }
}

impl Config {
    /// Checks that the settings make sense together; the error names the
    /// setting (and its environment variable).
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::new(ErrorKind::Config, msg));
        check_duration("HECATE_VM_TTL_SECONDS", self.vm_ttl, MAX_DURATION)?;
        check_duration(
            "HECATE_VM_LIFETIME_SECONDS",
            self.idle_lifetime,
            MAX_DURATION,
        )?;
        check_duration(
            "max_command_timeout",
            self.max_command_timeout,
            MAX_DURATION,
        )?;
        check_duration(
            "HECATE_COMMAND_TIMEOUT_SECONDS",
            self.command_timeout,
            self.max_command_timeout,
        )?;
        check_duration(
            "HECATE_MORPH_READY_TIMEOUT_SECONDS",
            self.morph.ready_timeout,
            MAX_DURATION,
        )?;
        check_duration(
            "HECATE_START_TIMEOUT_SECONDS",
            self.start_timeout,
            MAX_DURATION,
        )?;
        check_duration("stop_timeout", self.stop_timeout, MAX_DURATION)?;
        self.jobs.validate()?;
        if self.max_instances == 0 {
            return fail("HECATE_MAX_INSTANCES: must be at least 1".into());
        }
        if self.max_concurrent_starts == 0 {
            return fail("HECATE_MAX_CONCURRENT_STARTS: must be at least 1".into());
        }
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return fail(format!(
                "HECATE_WORKERS: must be between 1 and {MAX_WORKERS} (got {})",
                self.workers
            ));
        }
        if self.max_output_chars < 100 {
            return fail("HECATE_MAX_OUTPUT_CHARS: must be at least 100".into());
        }
        if self.capture_bytes < 64 {
            return fail("capture_bytes: must be at least 64".into());
        }
        if !(0.0..=1.0).contains(&self.retry.jitter) || self.retry.factor < 1.0 {
            return fail("retry: jitter must be in 0..=1 and factor at least 1".into());
        }
        if let Some(rootfs) = &self.sandbox.rootfs {
            if !rootfs.is_absolute() {
                return fail(format!(
                    "HECATE_SANDBOX_ROOTFS: {} is not an absolute path",
                    rootfs.display()
                ));
            }
        }
        if self.sandbox.memory_limit == Some(0) || self.sandbox.pids_limit == Some(0) {
            return fail(
                "HECATE_SANDBOX_MEMORY_MB, HECATE_SANDBOX_PIDS: must be at least 1".into(),
            );
        }
        self.shell.validate()?;
        check_duration(
            "HECATE_FILES_TIMEOUT_SECONDS",
            self.files.timeout,
            MAX_DURATION,
        )?;
        if self.files.parallel == 0 {
            return fail("HECATE_FILES_PARALLEL: must be at least 1".to_string());
        }
        if self.backend == BackendKind::Morph {
            let url = self.morph.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.len() <= "https://".len()
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return fail(format!(
                    "MORPH_BASE_URL: {url:?} is not an http:// or https:// URL"
                ));
            }
            if self.morph.api_key.is_none() {
                return fail(
                    "MORPH_API_KEY environment variable not set (needed by the morph backend)"
                        .into(),
                );
            }
            if self.morph.snapshot_id.is_empty() {
                return fail("HECATE_DEFAULT_SNAPSHOT_ID: must not be empty".into());
            }
        }
        Ok(())
    }

    /// Sets the backend.
    #[must_use]
    pub fn with_backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// Sets the instance TTL.
    #[must_use]
    pub fn with_vm_ttl(mut self, ttl: Duration) -> Self {
        self.vm_ttl = ttl;
        self
    }

    /// Sets the idle lifetime.
    #[must_use]
    pub fn with_idle_lifetime(mut self, idle: Duration) -> Self {
        self.idle_lifetime = idle;
        self
    }

    /// Sets the default command timeout.
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets the deadline of an instance start.
    #[must_use]
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Sets the instance cap.
    #[must_use]
    pub fn with_max_instances(mut self, n: usize) -> Self {
        self.max_instances = n;
        self
    }

    /// Sets the cap on create requests in flight (start slots).
    #[must_use]
    pub fn with_max_concurrent_starts(mut self, n: usize) -> Self {
        self.max_concurrent_starts = n;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the number of worker arbiters.
    #[must_use]
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets the local backend's root directory.
    #[must_use]
    pub fn with_local_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.local.root = root.into();
        self
    }

    /// Turns the persistent shell on or off for every task (a call can
    /// still choose with
    /// [`ExecRequest::persistent_shell`](crate::ExecRequest::persistent_shell)).
    #[must_use]
    pub fn with_persistent_shell(mut self, on: bool) -> Self {
        self.shell.persistent = on;
        self
    }

    /// Selects the MorphCloud backend with this base URL and API key.
    #[must_use]
    pub fn with_morph(mut self, base_url: impl Into<String>, api_key: ApiKey) -> Self {
        self.backend = BackendKind::Morph;
        self.morph.base_url = base_url.into();
        self.morph.api_key = Some(api_key);
        self
    }
}

/// The longest duration any setting accepts (30 days).
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// The shortest duration any setting or timeout accepts (1 ms): the
/// runtime's timers work in milliseconds.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The one rule for durations given in seconds, used by every duration
/// setting (environment or code, through [`Config::validate`]) and by the
/// tool's `timeout`: a finite number of seconds (fractions allowed), at least
/// [`MIN_DURATION`] and at most `max` (never more than [`MAX_DURATION`]).
/// The error text names no setting (callers prefix it) and quotes the
/// number in bounded form.
pub(crate) fn duration_from_secs(
    secs: f64,
    max: Duration,
) -> std::result::Result<Duration, String> {
    let max = max.min(MAX_DURATION);
    let shown = show_secs(secs);
    if !secs.is_finite() {
        return Err(format!("must be a finite number of seconds (got {shown})"));
    }
    if secs <= 0.0 {
        return Err(format!("must be greater than 0 seconds (got {shown})"));
    }
    if secs > max.as_secs_f64() {
        return Err(format!(
            "{shown} s exceeds the maximum of {} s",
            show_secs(max.as_secs_f64())
        ));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d >= MIN_DURATION && d <= max => Ok(d),
        _ => Err(format!(
            "must be at least {} seconds (got {shown})",
            show_secs(MIN_DURATION.as_secs_f64())
        )),
    }
}

/// Checks an already-built duration against [`duration_from_secs`]'s rule.
fn check_duration(var: &str, d: Duration, max: Duration) -> Result<()> {
    duration_from_secs(d.as_secs_f64(), max)
        .map(|_| ())
        .map_err(|why| Error::config(format!("{var}: {why}")))
}

/// A number of seconds for an error message, never longer than about 20
/// characters (a 309-digit float is shown in exponent form).
pub(crate) fn show_secs(secs: f64) -> String {
    if secs.is_finite() && secs.abs() < 1e9 && (secs == 0.0 || secs.abs() >= 1e-6) {
        // Up to 6 decimals, without needless zeros.
        let text = format!("{secs:.6}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        text.to_string()
    } else {
        format!("{secs:e}")
    }
}
