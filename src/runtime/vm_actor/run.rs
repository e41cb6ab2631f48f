//! The backend calls of a [`VmActor`](super::VmActor): starting an instance,
//! running a command on it, stopping it. Each runs under a deadline with
//! panics caught, and retries through [`Backoff`]; none touches the actor's
//! state, so each is an ordinary future the actor spawns and whose result it
//! handles when it ends.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use actix::clock::Instant;

use super::state::{Live, StartReport};
use super::Shared;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::Metrics;
use crate::provider::{tags, ExecOutput, ExecSpec, Instance, StartSlot, StartSpec};
use crate::runtime::backoff::Backoff;
use crate::runtime::guard::{
    guarded, Deadline, Guarded, ShutdownEnd, Source, BACKGROUND_START_LIMIT,
};
use crate::runtime::messages::Exec;
use crate::runtime::ExecOutcome;
use crate::shell;
use crate::spec::{SetupReport, SetupStep, TaskEnv, TaskSpec};

/// What a start is called in its errors.
const DOING_START: &str = "the instance start";

/// Takes an instance slot, then starts an instance, retrying transient
/// failures, all within `Config::start_timeout`.
pub(super) async fn start_instance(
    shared: &Shared,
    task_id: &str,
    task_spec: Option<std::sync::Arc<crate::spec::TaskSpec>>,
) -> Result<(Live, StartReport)> {
    let config = &shared.config;
    let waiting = Instant::now();
    let slot = shared
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::shutting_down())?;
    let slot_wait = waiting.elapsed();
    let began = Instant::now();
    if slot_wait > Duration::from_millis(1) {
        log::info!("task={task_id} waited {slot_wait:?} for an instance slot");
    }
    let mut metadata = BTreeMap::new();
    metadata.insert(tags::TASK_ID.to_string(), task_id.to_string());
    metadata.insert(tags::RUNTIME_ID.to_string(), shared.runtime_id.to_string());
    metadata.insert(
        tags::CREATED_BY.to_string(),
        tags::CREATED_BY_VALUE.to_string(),
    );
    // A backstop the backend enforces even if this process dies: the TTL
    // plus room for a command that began just before it.
    // The task spec's TTL, where it gives one, is the instance's.
    let vm_ttl = task_spec
        .as_ref()
        .and_then(|s| s.ttl)
        .unwrap_or(config.vm_ttl);
    let ttl = Some(vm_ttl + config.command_timeout + Duration::from_secs(60));
    // One deadline for the whole start, retries and their waits included;
    // the wait for an instance slot above is `max_instances` queueing, not
    // the start.
    let timeout = Deadline::new(config.start_timeout, Source::StartTimeout);
    let end = Instant::now() + config.start_timeout;
    let started = Backoff::new(&config.retry)
        .counted(&shared.metrics)
        .until(end)
        .run(&format_args!("task={task_id}"), "start", || async {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Never send a create request that would be abandoned at once.
                return Err(timeout.expired(DOING_START));
            }
            let attempt = async {
                // A start slot per attempt, which the provider frees once its
                // create request is answered: a task waiting out its backoff,
                // or an instance booting, does not hold up other starts.
                let permit = shared
                    .starts
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::shutting_down())?;
                let spec = StartSpec {
                    task_id: task_id.to_string(),
                    ttl,
                    metadata: metadata.clone(),
                    create_slot: StartSlot::new(permit),
                    task_spec: task_spec.clone(),
                };
                shared.provider.start(spec).await
            };
            guarded(left, attempt)
                .await
                .into_result(DOING_START, &timeout)
        })
        .await;
    shared
        .metrics
        .start_done(started.result.is_ok(), began.elapsed());
    let instance = started
        .result
        .map_err(|err| err.context("could not start an instance"))?;
    let live = Live::new(Rc::from(instance), slot, shared.metrics.clone());
    Ok((
        live,
        StartReport {
            slot_wait,
            setup: None,
        },
    ))
}

/// Stops an instance, retrying transient failures, and then frees its slot.
/// Each attempt has `Config::stop_timeout`; during a graceful shutdown
/// nothing goes past the shutdown's `end`.
pub(super) async fn stop_instance(
    config: &Config,
    metrics: &Metrics,
    task_id: &str,
    live: Live,
    end: Option<ShutdownEnd>,
) -> Result<()> {
    let per_attempt = Deadline::new(config.stop_timeout, Source::StopTimeout);
    // Stopping is idempotent (an instance already gone stops fine), so a
    // transient failure is retried like any other; giving up at once would
    // leak the instance.
    let mut backoff = Backoff::new(&config.retry).counted(metrics);
    if let Some(end) = end {
        backoff = backoff.until(end.at);
    }
    let stopped = backoff
        .run(
            &format_args!("task={task_id} vm={}", live.id()),
            "stop",
            || async {
                let deadline = per_attempt.or_shutdown(end, Instant::now());
                guarded(deadline.limit, live.instance.stop())
                    .await
                    .into_result("stopping the instance", &deadline)
            },
        )
        .await;
    // The slot is freed only once the instance is really stopped.
    drop(live);
    stopped.result
}

/// The text to run for `request` on instance `instance_id`, and what to
/// ask of a backend that keeps the shell state itself: the command itself;
/// with the persistent shell on for it, where the backend runs bash, the
/// command wrapped to restore (and in the foreground save) the task's
/// shell state ([`crate::shell`]), or for a backend that keeps the state
/// ([`ShellSupport::Native`]) the command as it is and the mode to ask.
///
/// With a task spec, the spec's persistent-shell setting applies where the
/// request gives none, and the spec's prefix (environment, working
/// directory; [`crate::spec`]) goes in front, on the same line. A backend
/// keeping the state starts a call that restores it in the saved
/// directory and environment, which already hold what the spec set (and
/// what later calls changed): there the prefix runs only in a fresh shell
/// ([`RESTORED_MARKER`](crate::shell::native::RESTORED_MARKER) unset).
pub(super) fn shell_text(
    request: &crate::ExecRequest,
    instance_id: &str,
    config: &Config,
    support: ShellSupport,
    spec: Option<&TaskSpec>,
) -> Result<(String, Option<shell::Mode>)> {
    let persistent = request
        .persistent_shell
        .or(spec.and_then(|s| s.persistent_shell))
        .unwrap_or(config.shell.persistent);
    let mode = (support != ShellSupport::None && persistent).then_some(if request.background {
        shell::Mode::RestoreOnly
    } else {
        shell::Mode::RestoreAndSave
    });
    let (body, native) = match (mode, support) {
        (Some(mode), ShellSupport::Native) => (request.command.clone(), Some(mode)),
        (Some(mode), _) => (
            shell::wrap(&request.command, instance_id, &config.shell, mode)?,
            None,
        ),
        (None, _) => (request.command.clone(), None),
    };
    let mut prelude = spec.map(crate::spec::prelude).unwrap_or_default();
    if prelude.is_empty() {
        return Ok((body, native));
    }
    if native.is_some() {
        prelude = format!(
            "if [[ -z ${{{}-}} ]]; then {prelude}fi; ",
            crate::shell::native::RESTORED_MARKER
        );
    }
    if prelude.len() + body.len() > shell::MAX_WRAPPED_BYTES {
        return Err(Error::invalid_input(format!(
            "command is {} bytes long; with the task spec's environment and working \
             directory ({} bytes) the limit is {} bytes (write a long script to a file \
             and run the file)",
            request.command.len(),
            prelude.len(),
            shell::MAX_WRAPPED_BYTES
                .saturating_sub(prelude.len() + body.len() - request.command.len())
        )));
    }
    Ok((prelude + &body, native))
}

/// How a backend supports the persistent shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShellSupport {
    /// Not at all (it does not run commands with bash).
    None,
    /// The runtime wraps the command text ([`shell::wrap`]).
    Wrap,
    /// The backend keeps the state ([`ExecSpec::shell`](crate::provider::ExecSpec::shell)).
    Native,
}

impl ShellSupport {
    /// What `provider` offers.
    pub(super) fn of(provider: &dyn crate::provider::Provider) -> Self {
        if provider.keeps_shell_state() {
            ShellSupport::Native
        } else if provider.supports_persistent_shell() {
            ShellSupport::Wrap
        } else {
            ShellSupport::None
        }
    }
}

/// Applies a task's spec to its fresh instance: creates the working
/// directory and places the files, then runs the setup commands in order
/// until one fails. Never an error: how it went is the report.
pub(super) async fn apply_spec(
    shared: &Shared,
    task_id: &str,
    live: &Live,
    env: &TaskEnv,
) -> SetupReport {
    let config = &shared.config;
    let spec = &env.spec;
    let began = Instant::now();
    let mut report = SetupReport {
        instance_id: live.id().to_string(),
        reapplied: env.count_application(),
        files_placed: 0,
        steps: Vec::new(),
        ok: true,
        duration: Duration::ZERO,
    };
    let timeout = spec.setup_timeout.unwrap_or(config.command_timeout);
    let placed = if shared.provider.supports_files() {
        place_files(config, &shared.metrics, task_id, live, spec, timeout).await
    } else {
        place_files_as_text(config, &shared.metrics, task_id, live, spec, timeout).await
    };
    if let Err(step) = placed {
        report.steps.push(step);
        report.ok = false;
        report.duration = began.elapsed();
        return report;
    }
    report.files_placed = spec.files.len();
    let support = ShellSupport::of(&*shared.provider);
    for command in &spec.setup {
        let started = Instant::now();
        let request = crate::ExecRequest::new(command.clone());
        let result = match shell_text(&request, live.id(), config, support, Some(spec)) {
            Ok((text, shell)) => {
                run_command(
                    config,
                    &shared.metrics,
                    task_id,
                    live.instance.clone(),
                    ExecSpec {
                        shell,
                        ..setup_exec(config, text, timeout)
                    },
                    None,
                )
                .await
                .result
            }
            Err(err) => Err(err),
        };
        let step = setup_step(command.clone(), result, started.elapsed());
        let ok = step.succeeded();
        report.steps.push(step);
        if !ok {
            report.ok = false;
            break;
        }
    }
    report.duration = began.elapsed();
    report
}

/// What a failed placement step is called in the report.
fn placing(spec: &TaskSpec) -> String {
    format!(
        "(create the working directory and place {} file(s))",
        spec.files.len()
    )
}

/// Creates the working directory (a command) and uploads the files with
/// the backend's confined file transfer ([`Instance::upload`]).
async fn place_files(
    config: &Config,
    metrics: &Metrics,
    task_id: &str,
    live: &Live,
    spec: &TaskSpec,
    timeout: Duration,
) -> std::result::Result<(), SetupStep> {
    let started = Instant::now();
    if let Some(dir) = &spec.workdir {
        let mkdir = format!("mkdir -p -- {}", crate::spec::sh_quote(dir));
        place_step(config, metrics, task_id, live, spec, mkdir, timeout).await?;
    }
    for file in &spec.files {
        let path = match &spec.workdir {
            Some(dir) => format!("{}/{}", dir.trim_end_matches('/'), file.path),
            None => file.path.clone(),
        };
        let mut upload = crate::files::UploadSpec::new(
            path,
            crate::files::UploadSource::Bytes(bytes::Bytes::from(file.content.clone())),
        )
        .limits(config.files.limits);
        if file.executable {
            upload = upload.mode(0o755);
        }
        let uploaded = guarded(timeout, live.instance.upload(upload)).await;
        let err = match uploaded {
            Guarded::Done(Ok(_)) => continue,
            Guarded::Done(Err(err)) => err,
            Guarded::Panicked(msg) => Error::internal(format!("the upload panicked: {msg}")),
            Guarded::TimedOut => Error::new(
                ErrorKind::Timeout,
                format!("placing {} took longer than {timeout:?}", file.path),
            ),
        };
        return Err(setup_step(
            placing(spec),
            Err(err.context(format_args!("placing {}", file.path))),
            started.elapsed(),
        ));
    }
    Ok(())
}

/// Creates the working directory and places the files with shell text
/// (bash builtins, `mkdir`), for backends without file transfers.
async fn place_files_as_text(
    config: &Config,
    metrics: &Metrics,
    task_id: &str,
    live: &Live,
    spec: &TaskSpec,
    timeout: Duration,
) -> std::result::Result<(), SetupStep> {
    for script in crate::spec::prepare_scripts(spec) {
        place_step(config, metrics, task_id, live, spec, script, timeout).await?;
    }
    Ok(())
}

/// Runs one command of placing `spec`'s working directory and files; its
/// step when it failed.
async fn place_step(
    config: &Config,
    metrics: &Metrics,
    task_id: &str,
    live: &Live,
    spec: &TaskSpec,
    command: String,
    timeout: Duration,
) -> std::result::Result<(), SetupStep> {
    let started = Instant::now();
    let ran = run_command(
        config,
        metrics,
        task_id,
        live.instance.clone(),
        setup_exec(config, command, timeout),
        None,
    )
    .await;
    let step = setup_step(placing(spec), ran.result, started.elapsed());
    if step.succeeded() {
        Ok(())
    } else {
        Err(step)
    }
}

/// A foreground setup command.
fn setup_exec(config: &Config, command: String, timeout: Duration) -> ExecSpec {
    ExecSpec {
        command,
        background: false,
        timeout,
        capture_bytes: config.capture_bytes,
        shell: None,
    }
}

/// A setup command's step from how it ran.
fn setup_step(command: String, result: Result<ExecOutput>, duration: Duration) -> SetupStep {
    match result {
        Ok(out) => {
            let mut text = out.stdout.to_text();
            let err = out.stderr.to_text();
            if !text.is_empty() && !err.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&err);
            SetupStep {
                command,
                exit_code: Some(out.exit_code),
                timed_out: out.timed_out,
                output: crate::spec::cut_middle(&text, crate::spec::MAX_STEP_OUTPUT_CHARS),
                error: None,
                duration,
            }
        }
        Err(err) => SetupStep {
            command,
            exit_code: None,
            timed_out: false,
            output: String::new(),
            error: Some(err.to_string()),
            duration,
        },
    }
}

/// A command on its way through the backend: what its answer needs besides
/// the backend's output.
///
/// Its caller is always answered: if the command is dropped unanswered (the
/// actor stopped, at the end of a shutdown's grace, while the backend call
/// was still out), the caller hears that the instance was stopped under it.
pub(super) struct RunningCommand {
    /// `None` only once answered or handed back.
    exec: Option<Exec>,
    pub instance_id: String,
    /// When the command left the queue.
    pub started: Instant,
    /// Time from arrival until `started`.
    pub queued: Duration,
    /// Set when this command started the instance it runs on.
    pub start: Option<StartReport>,
}

impl RunningCommand {
    /// A command that left the queue at `started`.
    pub fn new(
        exec: Exec,
        instance_id: String,
        started: Instant,
        start: Option<StartReport>,
    ) -> Self {
        RunningCommand {
            queued: started.saturating_duration_since(exec.received),
            exec: Some(exec),
            instance_id,
            started,
            start,
        }
    }

    /// How often the request has moved to a fresh instance.
    pub fn vanish_restarts(&self) -> u32 {
        self.exec.as_ref().map_or(0, Exec::vanish_restarts)
    }

    /// The streaming call's sink, if it is one.
    pub fn sink(&self) -> Option<crate::stream::OutputSink> {
        self.exec.as_ref().and_then(|exec| exec.sink.clone())
    }

    /// Hands the request back unanswered, to run elsewhere.
    pub fn into_exec(mut self) -> Option<Exec> {
        self.exec.take()
    }

    /// Answers the caller with the outcome of a command that ran.
    pub fn answer(mut self, task_id: &str, output: ExecOutput, attempts: u32) {
        let Some(exec) = self.exec.take() else {
            return;
        };
        let outcome = ExecOutcome {
            task_id: task_id.to_string(),
            instance_id: std::mem::take(&mut self.instance_id),
            exit_code: output.exit_code,
            stdout: output.stdout,
            stderr: output.stderr,
            timed_out: output.timed_out,
            oom_killed: output.oom_killed,
            job: output.job,
            instance_restarted: exec.restart,
            instance_started: self.start.is_some(),
            queued: self.queued,
            setup: self.start.as_mut().and_then(|s| s.setup.take()),
            slot_wait: self.start.take().map(|s| s.slot_wait).unwrap_or_default(),
            duration: self.started.elapsed(),
            attempts,
        };
        let _ = exec.reply.send(Ok(outcome));
    }

    /// Answers the caller with an error.
    pub fn fail(mut self, err: Error) {
        if let Some(exec) = self.exec.take() {
            let _ = exec.reply.send(Err(err));
        }
    }
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        if let Some(exec) = self.exec.take() {
            let _ = exec.reply.send(Err(Error::new(
                ErrorKind::InstanceGone,
                "the instance was stopped while the command ran (the runtime is shutting \
                 down); the command may have partly run",
            )));
        }
    }
}

/// How running one command went.
pub(super) struct CommandRun {
    pub result: Result<ExecOutput>,
    pub attempts: u32,
    /// Attempts that failed as indeterminate (retried only when the caller
    /// opted in): after one, a later "instance gone" may mean the command
    /// reached the instance.
    pub indeterminate_failures: u32,
    /// The backend panicked: the instance is in an unknown state.
    pub panicked: bool,
}

/// Runs one command, retrying failures that are safe to retry.
pub(super) async fn run_command(
    config: &Config,
    metrics: &Metrics,
    task_id: &str,
    instance: Rc<dyn Instance>,
    spec: ExecSpec,
    sink: Option<crate::stream::OutputSink>,
) -> CommandRun {
    let deadline = if spec.background {
        if config.start_timeout < BACKGROUND_START_LIMIT {
            Deadline::new(config.start_timeout, Source::StartTimeout)
        } else {
            Deadline::new(BACKGROUND_START_LIMIT, Source::BackgroundStart)
        }
    } else {
        Deadline::new(
            spec.timeout + config.exec_grace,
            Source::CommandTimeout {
                timeout: spec.timeout,
                grace: config.exec_grace,
            },
        )
    };
    let indeterminate_failures = Cell::new(0);
    let panicked = Cell::new(false);
    // Retries end where one attempt's deadline would have: a server asking
    // to come back later does not hold the caller longer than the command
    // itself could have.
    let ran = Backoff::new(&config.retry)
        .counted(metrics)
        .retry_indeterminate(config.retry_indeterminate)
        .until(Instant::now() + deadline.limit)
        .run(
            &format_args!("task={task_id} vm={}", instance.id()),
            "exec",
            || async {
                let call = match &sink {
                    Some(sink) => instance.exec_streaming(spec.clone(), sink.clone()),
                    None => instance.exec(spec.clone()),
                };
                match guarded(deadline.limit, call).await {
                    Guarded::Done(Ok(output)) => Ok(output),
                    Guarded::Done(Err(err)) => {
                        if err.kind() == ErrorKind::Indeterminate {
                            indeterminate_failures.set(indeterminate_failures.get() + 1);
                        }
                        Err(err)
                    }
                    Guarded::Panicked(msg) => {
                        panicked.set(true);
                        Err(Error::internal(format!(
                            "the backend panicked while running the command: {msg}"
                        )))
                    }
                    Guarded::TimedOut => Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the backend did not answer within {deadline}; \
                             the command may still be running"
                        ),
                    )),
                }
            },
        )
        .await;
    CommandRun {
        result: ran.result,
        attempts: ran.attempts,
        indeterminate_failures: indeterminate_failures.get(),
        panicked: panicked.get(),
    }
}
