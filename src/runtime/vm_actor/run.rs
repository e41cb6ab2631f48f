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
use crate::provider::{tags, ExecOutput, ExecSpec, Instance, StartSlot, StartSpec};
use crate::runtime::backoff::Backoff;
use crate::runtime::guard::{
    guarded, Deadline, Guarded, ShutdownEnd, Source, BACKGROUND_START_LIMIT,
};
use crate::runtime::messages::Exec;
use crate::runtime::ExecOutcome;
use crate::shell;

/// What a start is called in its errors.
const DOING_START: &str = "the instance start";

/// Takes an instance slot, then starts an instance, retrying transient
/// failures, all within `Config::start_timeout`.
pub(super) async fn start_instance(shared: &Shared, task_id: &str) -> Result<(Live, StartReport)> {
    let config = &shared.config;
    let waiting = Instant::now();
    let slot = shared
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::shutting_down())?;
    let slot_wait = waiting.elapsed();
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
    let ttl = Some(config.vm_ttl + config.command_timeout + Duration::from_secs(60));
    // One deadline for the whole start, retries and their waits included;
    // the wait for an instance slot above is `max_instances` queueing, not
    // the start.
    let timeout = Deadline::new(config.start_timeout, Source::StartTimeout);
    let end = Instant::now() + config.start_timeout;
    let started = Backoff::new(&config.retry)
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
                };
                shared.provider.start(spec).await
            };
            guarded(left, attempt)
                .await
                .into_result(DOING_START, &timeout)
        })
        .await;
    let instance = started
        .result
        .map_err(|err| err.context("could not start an instance"))?;
    let live = Live {
        instance: Rc::from(instance),
        _slot: slot,
    };
    Ok((live, StartReport { slot_wait }))
}

/// Stops an instance, retrying transient failures, and then frees its slot.
/// Each attempt has `Config::stop_timeout`; during a graceful shutdown
/// nothing goes past the shutdown's `end`.
pub(super) async fn stop_instance(
    config: &Config,
    task_id: &str,
    live: Live,
    end: Option<ShutdownEnd>,
) -> Result<()> {
    let per_attempt = Deadline::new(config.stop_timeout, Source::StopTimeout);
    // Stopping is idempotent (an instance already gone stops fine), so a
    // transient failure is retried like any other; giving up at once would
    // leak the instance.
    let mut backoff = Backoff::new(&config.retry);
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

/// The text to run for `request` on instance `instance_id`: the command
/// itself, or, with the persistent shell on for it, the command wrapped to
/// restore (and in the foreground save) the task's shell state
/// ([`crate::shell`]), where the backend runs bash (`bash`).
pub(super) fn shell_text(
    request: &crate::ExecRequest,
    instance_id: &str,
    config: &Config,
    bash: bool,
) -> Result<String> {
    if !bash || !request.uses_persistent_shell(config) {
        return Ok(request.command.clone());
    }
    let mode = if request.background {
        shell::Mode::RestoreOnly
    } else {
        shell::Mode::RestoreAndSave
    };
    shell::wrap(&request.command, instance_id, &config.shell, mode)
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
