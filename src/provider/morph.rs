//! The MorphCloud backend: one MorphCloud VM per task, over the MorphCloud
//! instance HTTP API (awc).
//!
//! This module owns the instance lifecycle on MorphCloud: [`MorphProvider`]
//! creates a VM from a snapshot with the runtime's tags and a server-side TTL,
//! polls it until ready (deleting it again if it never gets there), and
//! finds and stops tagged instances (the shutdown sweep, `hecate gc`): that
//! start path is `start`, which also makes a retried start create one VM,
//! not two. [`MorphInstance`] runs commands in the VM and deletes it. The wire contract is `shared/reference/morphcloud-api.md`. The
//! API's exec has no timeout or background mode, so commands are wrapped in
//! shell text that the VM runs (`shell`); HTTP and failure classification
//! live in `api`, JSON parsing in `wire`.
//!
//! Error messages reach the agent, so they say what failed without the
//! `task=… vm=…` prefix of the log lines; the logs keep the ids.
//!
//! Futures are not `Send` and run on the arbiter that owns the instance; the
//! provider itself is `Send + Sync` and shared.

mod api;
mod files;
mod shell;
mod sse;
mod start;
mod wire;

#[cfg(feature = "sim")]
pub(crate) use self::shell::RUNTIME_DIR_VAR;

/// Bytes of file data one upload command carries to a MorphCloud VM (for
/// destination paths up to ~1,300 bytes; longer ones get smaller chunks).
pub const UPLOAD_CHUNK_BYTES: usize = files::UP_CHUNK;
/// Bytes of file data one download command fetches from a MorphCloud VM.
pub const DOWNLOAD_CHUNK_BYTES: usize = files::DOWN_CHUNK;

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::time::Instant;

use self::api::Api;
use self::wire::InstanceInfo;
use crate::config::{Config, MorphConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{BoxFuture, Captured, ExecOutput, ExecSpec, Instance, Provider, StartSpec};

/// At most this long, on top of a command's timeout and kill grace, is
/// allowed for the exec round trip itself (capped by `request_timeout`).
const EXEC_MARGIN: Duration = Duration::from_secs(5);

/// Starts MorphCloud VMs from a snapshot; see the [module docs](self).
#[derive(Debug)]
pub struct MorphProvider {
    shared: Arc<Shared>,
}

/// What the provider and its instances share.
#[derive(Debug)]
struct Shared {
    api: Api,
    snapshot_id: String,
    poll_interval: Duration,
    ready_timeout: Duration,
    kill_grace: Duration,
    /// Chunk commands of a file transfer in flight at once
    /// (`HECATE_FILES_PARALLEL`).
    transfer_parallel: usize,
}

impl MorphProvider {
    /// A provider using `config.morph`: base URL (a trailing `/` is ignored;
    /// plain `http://` is allowed), API key (required: a
    /// [`Config`](crate::ErrorKind::Config) error naming `MORPH_API_KEY` if absent),
    /// snapshot, poll interval, ready timeout, request timeout, kill grace
    /// and body limit. Sends no request.
    pub fn new(config: &Config) -> Result<Self> {
        let mut provider = Self::from_morph_config(&config.morph)?;
        if let Some(shared) = Arc::get_mut(&mut provider.shared) {
            shared.transfer_parallel = config.files.parallel;
        }
        Ok(provider)
    }

    /// Like [`MorphProvider::new`], from the morph settings alone.
    pub fn from_morph_config(config: &MorphConfig) -> Result<Self> {
        if config.snapshot_id.trim().is_empty() {
            return Err(Error::config(
                "HECATE_DEFAULT_SNAPSHOT_ID: must not be empty",
            ));
        }
        Self::without_snapshot_check(config)
    }

    /// A provider for finding and stopping tagged instances (`hecate gc`),
    /// which never starts one and so does not need a snapshot id: an empty
    /// one is not an error here. Sends no request.
    pub(crate) fn for_cleanup(config: &MorphConfig) -> Result<Self> {
        Self::without_snapshot_check(config)
    }

    fn without_snapshot_check(config: &MorphConfig) -> Result<Self> {
        Ok(MorphProvider {
            shared: Arc::new(Shared {
                api: Api::new(config)?,
                snapshot_id: config.snapshot_id.clone(),
                poll_interval: config.poll_interval,
                ready_timeout: config.ready_timeout,
                kill_grace: config.kill_grace,
                transfer_parallel: crate::files::FilesConfig::default().parallel,
            }),
        })
    }
}

impl MorphProvider {
    /// The instances carrying all of `tags` (`GET /instance` with metadata
    /// filters). The filter is applied here too, so a server that ignored it
    /// can never make a caller stop instances that are not its own.
    pub(crate) async fn list_tagged(&self, tags: &[(&str, &str)]) -> Result<Vec<InstanceInfo>> {
        self.shared.api.list_tagged(tags).await
    }

    /// Deletes each instance in turn; returns the stopped ids and the
    /// failures. An instance that was already gone counts as stopped.
    pub(crate) async fn stop_instances(
        &self,
        ids: &[String],
    ) -> (Vec<String>, Vec<(String, Error)>) {
        start::stop_all(&self.shared.api, ids).await
    }
}

impl Provider for MorphProvider {
    fn supports_persistent_shell(&self) -> bool {
        true
    }

    /// Transfers go over exec in checked chunks ([`crate::files`]).
    fn supports_files(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "morph"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<Result<Box<dyn Instance>>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let task_id = spec.task_id.clone();
            // Taken before any create request, so the server's expiry is no
            // earlier.
            let ttl_until = spec.ttl.map(|ttl| Instant::now() + ttl);
            let info = start::start(&shared, spec).await?;
            Ok(Box::new(MorphInstance {
                inner: Rc::new(InstanceInner {
                    shared,
                    id: info.id,
                    task_id,
                    ttl_until: Cell::new(ttl_until),
                    watchdog_installed: Cell::new(false),
                }),
                next_job: Cell::new(1),
            }) as Box<dyn Instance>)
        })
    }

    fn sweep_orphans(&self, runtime_id: &str) -> BoxFuture<Result<Vec<String>>> {
        let shared = Arc::clone(&self.shared);
        let runtime_id = runtime_id.to_string();
        Box::pin(async move { start::sweep_orphans(&shared, &runtime_id).await })
    }
}

/// A running MorphCloud VM; see the [module docs](self).
pub struct MorphInstance {
    inner: Rc<InstanceInner>,
    /// The id of the next background job in this VM.
    next_job: Cell<u64>,
}

struct InstanceInner {
    shared: Arc<Shared>,
    id: String,
    task_id: String,
    /// When the server-side TTL stops the VM, at the earliest (`None`: no
    /// TTL). Kept ahead of every running command; see
    /// [`InstanceInner::keep_ttl_ahead`].
    ttl_until: Cell<Option<Instant>>,
    /// Whether the watchdog's script is in the VM (see `shell`).
    watchdog_installed: Cell<bool>,
}

/// Slack kept between a command's last possible moment and the TTL.
const TTL_SLACK: Duration = Duration::from_secs(10);

impl fmt::Debug for MorphInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MorphInstance")
            .field("id", &self.inner.id)
            .field("task_id", &self.inner.task_id)
            .finish()
    }
}

impl Instance for MorphInstance {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn exec(&self, spec: ExecSpec) -> BoxFuture<Result<ExecOutput>> {
        let inner = Rc::clone(&self.inner);
        if spec.background {
            let job_id = self.next_job.get();
            self.next_job.set(job_id + 1);
            return Box::pin(async move { inner.exec_background(spec, job_id).await });
        }
        Box::pin(async move { inner.exec_foreground(spec, None).await })
    }

    fn exec_streaming(
        &self,
        spec: ExecSpec,
        sink: crate::stream::OutputSink,
    ) -> BoxFuture<Result<ExecOutput>> {
        if spec.background {
            let run = self.exec(spec);
            return Box::pin(async move {
                let output = run.await?;
                sink.push_captured(crate::stream::StreamKind::Stdout, &output.stdout);
                sink.push_captured(crate::stream::StreamKind::Stderr, &output.stderr);
                Ok(output)
            });
        }
        let inner = Rc::clone(&self.inner);
        Box::pin(async move { inner.exec_foreground(spec, Some(sink)).await })
    }

    fn upload(
        &self,
        spec: crate::files::UploadSpec,
    ) -> BoxFuture<Result<crate::files::Transferred>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move { inner.upload(spec).await })
    }

    fn download(
        &self,
        spec: crate::files::DownloadSpec,
    ) -> BoxFuture<Result<crate::files::Transferred>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move { inner.download(spec).await })
    }

    /// Job stores live in the instance's own job directory, which only
    /// its owner may enter (made `0700` by the first background job); the
    /// VM's disk goes with the VM.
    fn jobs_dir(&self) -> Option<crate::provider::JobsDir> {
        Some(crate::provider::JobsDir {
            in_instance: shell::job_dir(&self.inner.id),
            on_host: None,
        })
    }

    fn stop(&self) -> BoxFuture<Result<()>> {
        let inner = Rc::clone(&self.inner);
        Box::pin(async move {
            let existed = inner.shared.api.delete_instance(&inner.id).await?;
            log::info!(
                "task={} vm={} {}",
                inner.task_id,
                inner.id,
                if existed {
                    "stopped"
                } else {
                    "was already gone"
                }
            );
            Ok(())
        })
    }
}

impl InstanceInner {
    /// Runs a foreground command; with `sink`, over the streaming exec
    /// (`POST /instance/{id}/exec/sse`), its output pushed there as it
    /// arrives.
    async fn exec_foreground(
        &self,
        spec: ExecSpec,
        sink: Option<crate::stream::OutputSink>,
    ) -> Result<ExecOutput> {
        let kill_grace = self.shared.kill_grace;
        let wrapped = shell::foreground(
            &spec.command,
            &self.id,
            spec.timeout,
            kill_grace,
            !self.watchdog_installed.get(),
        )?;
        // The VM enforces the timeout; the client waits for that plus the
        // grace plus a round trip, and only then gives up on the answer.
        let deadline =
            spec.timeout + kill_grace + EXEC_MARGIN.min(self.shared.api.request_timeout());
        self.keep_ttl_ahead(deadline).await?;
        log::debug!(
            "task={} vm={} exec ({} bytes, timeout {:?})",
            self.task_id,
            self.id,
            spec.command.len(),
            spec.timeout
        );
        let started = Instant::now();
        let api = &self.shared.api;
        let sent = match &sink {
            None => api
                .exec(&self.id, &wrapped, deadline)
                .await
                .map(|reply| api::StreamedReply {
                    exit_code: reply.exit_code,
                    stdout: Captured::from_text(&reply.stdout, spec.capture_bytes),
                    stderr: Captured::from_text(&reply.stderr, spec.capture_bytes),
                }),
            Some(sink) => {
                api.exec_sse(&self.id, &wrapped, deadline, sink, spec.capture_bytes)
                    .await
            }
        };
        let reply = match sent {
            Ok(reply) => reply,
            // A lost answer without a status may be a VM that went away
            // under the command; a 5xx is the server's own word, and it
            // would have said 404.
            Err(err) if err.kind() == ErrorKind::Indeterminate && err.status().is_none() => {
                return Err(self.probe_gone().await.unwrap_or(err))
            }
            Err(err) => return Err(err),
        };
        // An answer means the text ran, and with it the install.
        self.watchdog_installed.set(true);
        let elapsed = started.elapsed();
        // The watchdog sends TERM (143), then KILL (137); a command that
        // exits so on its own before the deadline did not time out.
        let killed = matches!(reply.exit_code, 124 | 137 | 143);
        let timed_out = killed && elapsed >= spec.timeout;
        if timed_out {
            log::info!(
                "task={} vm={} command timed out after {:?}",
                self.task_id,
                self.id,
                spec.timeout
            );
        } else if killed || reply.exit_code == 129 {
            // Killed by a signal before its deadline: the VM may have been
            // stopped under it, which must not pass for the command's exit.
            if let Some(gone) = self.probe_gone().await {
                return Err(gone);
            }
        }
        Ok(ExecOutput {
            exit_code: if timed_out { 124 } else { reply.exit_code },
            stdout: reply.stdout,
            stderr: reply.stderr,
            timed_out,
            oom_killed: false,
            job: None,
        })
    }

    /// If the instance no longer exists, an error saying the command's
    /// outcome is the VM's end, not the command's own exit. Its kind is
    /// [`Indeterminate`](ErrorKind::Indeterminate), not
    /// [`InstanceGone`](ErrorKind::InstanceGone): the latter tells the
    /// runtime that the command never reached the VM and may run again on a
    /// fresh one, and this one may have partly run.
    async fn probe_gone(&self) -> Option<Error> {
        let timeout = self.shared.api.request_timeout().min(EXEC_MARGIN);
        match self.shared.api.get_instance(&self.id, timeout).await {
            Err(gone) if gone.kind() == ErrorKind::InstanceGone => {
                log::warn!(
                    "task={} vm={} vanished while a command ran",
                    self.task_id,
                    self.id
                );
                Some(
                    Error::new(
                        ErrorKind::Indeterminate,
                        "the instance is gone: it was stopped (its TTL, or deleted elsewhere) \
                         while the command ran; the command may have partly run, and no exit \
                         code of its own is known",
                    )
                    .with_source(gone),
                )
            }
            _ => None,
        }
    }

    /// Extends the server-side TTL (`POST /instance/{id}/ttl`) when a
    /// command that may run for `deadline` would outlive it, so that the
    /// backstop never kills a command that is within its own timeout.
    async fn keep_ttl_ahead(&self, deadline: Duration) -> Result<()> {
        let Some(until) = self.ttl_until.get() else {
            return Ok(());
        };
        let now = Instant::now();
        let need = now + deadline + TTL_SLACK;
        if need <= until {
            return Ok(());
        }
        let secs = (deadline + TTL_SLACK).as_secs() + 1;
        self.shared
            .api
            .set_ttl(&self.id, secs)
            .await
            .map_err(|e| e.context("extending the instance's TTL for a long command"))?;
        log::info!(
            "task={} vm={} ttl extended to {secs} s for a long command",
            self.task_id,
            self.id
        );
        self.ttl_until.set(Some(now + Duration::from_secs(secs)));
        Ok(())
    }

    async fn exec_background(&self, spec: ExecSpec, job_id: u64) -> Result<ExecOutput> {
        let bg = shell::background(&spec.command, &self.id, job_id)?;
        let reply = self
            .shared
            .api
            .exec(&self.id, &bg.script, self.shared.api.request_timeout())
            .await?;
        let mut job = bg.job;
        job.pid = shell::parse_pid(&reply.stdout);
        if reply.exit_code == 0 && job.pid.is_none() {
            log::warn!(
                "task={} vm={} job {} started but printed no pid",
                self.task_id,
                self.id,
                job.id
            );
        }
        // A launcher that failed (say, `mkdir` could not create the job
        // directory) started no job: that is the command's result, not a
        // backend failure.
        let job = (reply.exit_code == 0).then_some(job);
        if let Some(job) = &job {
            log::info!(
                "task={} vm={} job {} started (pid {:?})",
                self.task_id,
                self.id,
                job.id,
                job.pid
            );
        }
        Ok(ExecOutput {
            exit_code: reply.exit_code,
            stdout: Captured::from_text(&reply.stdout, spec.capture_bytes),
            stderr: Captured::from_text(&reply.stderr, spec.capture_bytes),
            timed_out: false,
            oom_killed: false,
            job,
        })
    }
}
