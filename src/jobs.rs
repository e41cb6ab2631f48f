//! Background jobs, first-class: a job started by a background
//! [`ExecRequest`](crate::ExecRequest) has an id unique within its task
//! (ids go on across instance restarts), a [`JobState`], an exit code once
//! it ended, start and end times, and its output in a bounded store
//! addressed by byte offset (`jobs/store.rs`): a reader resumes where it stopped
//! and is told how many bytes it missed when the cap cut them.
//!
//! Jobs end with their instance (reported [`JobState::Lost`]), at their
//! lifetime ([`JobsConfig::max_lifetime`], or the request's
//! [`job_lifetime`](crate::ExecRequest::job_lifetime)), or when killed. A
//! running job keeps its instance from being stopped as idle. An ended
//! job's record is kept for [`JobsConfig::keep_ended`].
//!
//! The runtime's side is in `runtime/jobs.rs` (the [`Runtime`](crate::Runtime)
//! methods) and the task actor's (`runtime/vm_actor/jobs.rs`); this module
//! holds the types and the per-task table the runtime's handles read.

pub(crate) mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use actix::clock::Instant;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::provider::JobInfo;

/// Settings of background jobs (`HECATE_JOB_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// Bytes of a job's output kept (the newest ones), at least 2
    /// (`HECATE_JOB_OUTPUT_CAP_BYTES`, default 1 MiB).
    pub output_cap: u64,
    /// The longest a job may run, and the lifetime of a job whose request
    /// names none (`HECATE_JOB_MAX_LIFETIME_SECONDS`, default 3600).
    pub max_lifetime: Duration,
    /// How long an ended job's record (state, exit code) is kept
    /// (`HECATE_JOB_KEEP_ENDED_SECONDS`, default 600).
    pub keep_ended: Duration,
    /// How often the runtime looks at a task's running jobs (new output,
    /// their end, their lifetime) (`HECATE_JOB_POLL_MS`); `None`: 50 ms
    /// where the job's files are on this host, 1 s otherwise.
    pub poll_interval: Option<Duration>,
    /// A foreground command still running after this long becomes a job
    /// (`HECATE_YIELD_WINDOW_SECONDS`); `None` (the default): never.
    pub yield_window: Option<Duration>,
    /// How long a killed job's processes get after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            output_cap: 1024 * 1024,
            max_lifetime: Duration::from_secs(3600),
            keep_ended: Duration::from_secs(600),
            poll_interval: None,
            yield_window: None,
            kill_grace: Duration::from_secs(2),
        }
    }
}

impl JobsConfig {
    /// Reads the `HECATE_JOB_*` variables through `get` (unset or empty
    /// values keep the defaults).
    pub(crate) fn read(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        let num = |var: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::config(format!("{var}: expected a whole number, got {v:?}")))
        };
        if let Some(v) = get("HECATE_JOB_OUTPUT_CAP_BYTES") {
            self.output_cap = num("HECATE_JOB_OUTPUT_CAP_BYTES", &v)?;
        }
        if let Some(v) = get("HECATE_JOB_MAX_LIFETIME_SECONDS") {
            self.max_lifetime = Duration::from_secs(num("HECATE_JOB_MAX_LIFETIME_SECONDS", &v)?);
        }
        if let Some(v) = get("HECATE_JOB_KEEP_ENDED_SECONDS") {
            self.keep_ended = Duration::from_secs(num("HECATE_JOB_KEEP_ENDED_SECONDS", &v)?);
        }
        if let Some(v) = get("HECATE_JOB_POLL_MS") {
            self.poll_interval = Some(Duration::from_millis(num("HECATE_JOB_POLL_MS", &v)?));
        }
        if let Some(v) = get("HECATE_YIELD_WINDOW_SECONDS") {
            self.yield_window = Some(Duration::from_secs(num("HECATE_YIELD_WINDOW_SECONDS", &v)?));
        }
        Ok(())
    }

    /// Checks the settings, naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.output_cap < 2 {
            return Err(Error::config(
                "HECATE_JOB_OUTPUT_CAP_BYTES: must be at least 2",
            ));
        }
        if self.max_lifetime.is_zero() || self.max_lifetime > crate::config::MAX_DURATION {
            return Err(Error::config(
                "HECATE_JOB_MAX_LIFETIME_SECONDS: must be between 1 s and 30 days",
            ));
        }
        if self.keep_ended > crate::config::MAX_DURATION {
            return Err(Error::config(
                "HECATE_JOB_KEEP_ENDED_SECONDS: must be at most 30 days",
            ));
        }
        if self.poll_interval.is_some_and(|p| p.is_zero()) {
            return Err(Error::config("HECATE_JOB_POLL_MS: must be at least 1"));
        }
        if self.yield_window.is_some_and(|p| p.is_zero()) {
            return Err(Error::config(
                "HECATE_YIELD_WINDOW_SECONDS: must be at least 1",
            ));
        }
        Ok(())
    }

    /// The size of one segment of the output store.
    pub(crate) fn segment(&self) -> u64 {
        (self.output_cap / 2).max(1)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// It runs.
    Running,
    /// It ended on its own; its exit code is known.
    Exited,
    /// It was killed: by a caller, or at its lifetime.
    Killed,
    /// Its instance ended while it ran (idle, TTL, eviction, vanished,
    /// shutdown): its processes and output are gone.
    Lost,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_ended(self) -> bool {
        self != JobState::Running
    }
}

/// A job as [`Runtime::jobs`](crate::Runtime::jobs) reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// The job's id within its task (`1`, `2`, … across instances).
    pub id: u64,
    /// The command as the caller gave it.
    pub command: String,
    /// Its state.
    pub state: JobState,
    /// Its exit code, once it exited (128+N when a signal N ended it).
    pub exit_code: Option<i32>,
    /// Why it ended, when it did not exit on its own (`killed`, `lifetime`,
    /// the instance's end).
    pub end_reason: Option<String>,
    /// The instance it runs (ran) on.
    pub instance_id: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub ended_at_ms: Option<u64>,
    /// Bytes of output it wrote so far (kept or not).
    pub output_bytes: u64,
    /// The file holding its newest output (inside the instance).
    pub log_file: String,
    /// The file its exit code is written to when it ends (inside the
    /// instance).
    pub exit_file: String,
}

/// A piece of a job's output, from [`Runtime::job_output`](crate::Runtime::job_output).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JobOutput {
    /// The job, as of this read.
    pub job: JobRecord,
    /// The offset `text` starts at.
    pub offset: u64,
    /// The offset to read from next.
    pub next_offset: u64,
    /// Bytes between the offset asked for and `offset` that the cap cut
    /// (no longer stored).
    pub missed_bytes: u64,
    /// The bytes read, as text (invalid UTF-8 replaced); `next_offset -
    /// offset` bytes of output.
    pub text: String,
    /// More output is stored past `next_offset`.
    pub more: bool,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A job as the runtime keeps it.
#[derive(Debug, Clone)]
pub(crate) struct JobEntry {
    pub record: JobRecord,
    /// The store's directory inside the instance.
    pub dir: String,
    /// The store's directory on this host, where the runtime reads it
    /// directly.
    pub host_dir: Option<PathBuf>,
    /// The backend's job (the wrapper): its pid, its exit file.
    pub backend: JobInfo,
    /// When the job is killed at its lifetime.
    pub deadline: Instant,
    /// When it ended (for forgetting it after `keep_ended`).
    pub ended: Option<Instant>,
    /// The actor generation that runs it.
    pub generation: u64,
    /// Its count in the running-jobs gauge, while it runs (shared by the
    /// entry's clones; the count goes when the last is dropped).
    pub counted: Option<Arc<RunningCount>>,
}

/// One running job in [`Metrics`]' running-jobs gauge: counted when made,
/// uncounted when dropped, so a job leaves the gauge however it ends (or
/// if its entry is dropped while it runs).
#[derive(Debug)]
pub(crate) struct RunningCount(Arc<Metrics>);

impl RunningCount {
    /// Counts one more running job.
    pub fn new(metrics: Arc<Metrics>) -> Arc<RunningCount> {
        metrics.add_running_jobs(1);
        Arc::new(RunningCount(metrics))
    }
}

impl Drop for RunningCount {
    fn drop(&mut self) {
        self.0.add_running_jobs(-1);
    }
}

impl JobEntry {
    /// Marks the job ended.
    pub fn end(&mut self, state: JobState, exit_code: Option<i32>, reason: Option<String>) {
        if self.record.state.is_ended() {
            return;
        }
        self.record.state = state;
        self.record.exit_code = exit_code;
        self.record.end_reason = reason;
        self.record.ended_at_ms = Some(now_ms());
        self.ended = Some(Instant::now());
        self.counted = None;
    }
}

/// One task's jobs.
#[derive(Debug)]
pub(crate) struct TaskJobs {
    inner: Mutex<TaskJobsInner>,
    /// Bumped on every change (output, end), for long polls.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct TaskJobsInner {
    pub next_id: u64,
    pub jobs: BTreeMap<u64, JobEntry>,
}

impl TaskJobs {
    fn new() -> Self {
        TaskJobs {
            inner: Mutex::new(TaskJobsInner {
                next_id: 1,
                jobs: BTreeMap::new(),
            }),
            changed: watch::channel(0).0,
        }
    }

    /// The task's jobs, locked.
    pub fn lock(&self) -> MutexGuard<'_, TaskJobsInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes every long poll of this task.
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on the next change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl TaskJobsInner {
    /// Forgets ended jobs older than `keep`.
    pub fn forget_old(&mut self, keep: Duration) {
        let now = Instant::now();
        self.jobs
            .retain(|_, job| job.ended.is_none_or(|at| now.duration_since(at) < keep));
    }

    /// Whether a job of actor `generation` still runs.
    pub fn running_of(&self, generation: u64) -> impl Iterator<Item = &JobEntry> {
        self.jobs
            .values()
            .filter(move |j| j.generation == generation && !j.record.state.is_ended())
    }
}

/// Every task's jobs, shared by the runtime's handles and task actors.
#[derive(Debug, Default)]
pub(crate) struct JobTable {
    tasks: Mutex<HashMap<Arc<str>, Arc<TaskJobs>>>,
}

impl JobTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<TaskJobs>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A task's jobs, if it has had any.
    pub fn get(&self, task_id: &str) -> Option<Arc<TaskJobs>> {
        self.lock().get(task_id).cloned()
    }

    /// A task's jobs, made on first use.
    pub fn get_or_create(&self, task_id: &Arc<str>) -> Arc<TaskJobs> {
        self.lock()
            .entry(task_id.clone())
            .or_insert_with(|| Arc::new(TaskJobs::new()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_settings_come_from_the_environment_and_bad_ones_are_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| (*v).to_string())
            }
        };
        let c = crate::Config::from_lookup(env(&[
            ("HECATE_JOB_OUTPUT_CAP_BYTES", "4096"),
            ("HECATE_JOB_MAX_LIFETIME_SECONDS", "60"),
            ("HECATE_JOB_KEEP_ENDED_SECONDS", "5"),
            ("HECATE_JOB_POLL_MS", "10"),
            ("HECATE_YIELD_WINDOW_SECONDS", "3"),
        ]))
        .expect("valid");
        assert_eq!(c.jobs.output_cap, 4096);
        assert_eq!(c.jobs.segment(), 2048);
        assert_eq!(c.jobs.max_lifetime, Duration::from_secs(60));
        assert_eq!(c.jobs.keep_ended, Duration::from_secs(5));
        assert_eq!(c.jobs.poll_interval, Some(Duration::from_millis(10)));
        assert_eq!(c.jobs.yield_window, Some(Duration::from_secs(3)));
        let err = crate::Config::from_lookup(env(&[("HECATE_JOB_POLL_MS", "soon")]))
            .expect_err("not a number");
        assert!(err.to_string().contains("HECATE_JOB_POLL_MS"), "{err}");
        let mut bad = JobsConfig {
            output_cap: 1,
            ..JobsConfig::default()
        };
        assert!(bad.validate().is_err());
        bad.output_cap = 2;
        bad.max_lifetime = Duration::ZERO;
        let err = bad.validate().expect_err("zero lifetime");
        assert!(err.to_string().contains("HECATE_JOB_MAX_LIFETIME_SECONDS"));
    }

    #[test]
    fn ended_jobs_are_forgotten_after_keep_ended_and_running_ones_never() {
        let table = JobTable::default();
        let task: Arc<str> = "t".into();
        let jobs = table.get_or_create(&task);
        let metrics = Arc::new(Metrics::new());
        let entry = |id: u64| JobEntry {
            record: JobRecord {
                id,
                command: "true".into(),
                state: JobState::Running,
                exit_code: None,
                end_reason: None,
                instance_id: "i".into(),
                started_at_ms: 0,
                ended_at_ms: None,
                output_bytes: 0,
                log_file: String::new(),
                exit_file: String::new(),
            },
            dir: String::new(),
            host_dir: None,
            backend: JobInfo {
                id: id.to_string(),
                pid: None,
                log_file: String::new(),
                exit_file: String::new(),
            },
            deadline: Instant::now(),
            ended: None,
            generation: 1,
            counted: Some(RunningCount::new(metrics.clone())),
        };
        let mut inner = jobs.lock();
        inner.jobs.insert(1, entry(1));
        inner.jobs.insert(2, entry(2));
        assert_eq!(metrics.running_jobs(), 2);
        if let Some(job) = inner.jobs.get_mut(&1) {
            job.end(JobState::Exited, Some(0), None);
            // Ending twice keeps the first end.
            job.end(JobState::Killed, None, Some("late".into()));
            assert_eq!(job.record.state, JobState::Exited);
        }
        assert_eq!(metrics.running_jobs(), 1, "counted out once");
        // A passing copy of a running entry (the poll's) changes nothing.
        drop(inner.running_of(1).cloned().collect::<Vec<_>>());
        assert_eq!(metrics.running_jobs(), 1);
        assert_eq!(inner.running_of(1).count(), 1);
        assert_eq!(inner.running_of(2).count(), 0);
        inner.forget_old(Duration::ZERO);
        assert_eq!(inner.jobs.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(metrics.running_jobs(), 1);
        // A running entry dropped with its table is counted out too.
        drop(inner);
        drop(jobs);
        drop(table);
        assert_eq!(metrics.running_jobs(), 0);
    }
}
