//! The backend calls of a [`VmActor`](super::VmActor): starting an instance,
//! running a command on it, stopping it. Each runs under a deadline with
//! panics caught, and retries through [`Backoff`]; none touches the actor's
//! state, so each is an ordinary future the actor spawns and whose result it
//! handles when it ends.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use actix::clock::Instant;
use futures_util::FutureExt;

use super::state::{Live, StartReport};
use super::Shared;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{tags, ExecOutput, ExecSpec, Instance, StartSpec};
use crate::runtime::backoff::Backoff;
use crate::runtime::messages::Exec;
use crate::runtime::ExecOutcome;

/// Takes an instance slot, then starts an instance, retrying transient
/// failures.
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
    let spec = StartSpec {
        task_id: task_id.to_string(),
        // A backstop the backend enforces even if this process dies: the
        // TTL plus room for a command that began just before it.
        ttl: Some(config.vm_ttl + config.command_timeout + Duration::from_secs(60)),
        metadata,
    };
    let started = Backoff::new(&config.retry)
        .run(&format_args!("task={task_id}"), "start", || async {
            // A start permit per attempt: a task waiting out its backoff
            // does not hold up other tasks' starts.
            let _permit = shared
                .starts
                .acquire()
                .await
                .map_err(|_| Error::shutting_down())?;
            let start = shared.provider.start(spec.clone());
            guarded(config.start_timeout, start)
                .await
                .into_result("starting an instance", config.start_timeout)
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
pub(super) async fn stop_instance(config: &Config, task_id: &str, live: Live) -> Result<()> {
    let deadline = config.stop_timeout;
    // Stopping is idempotent (an instance already gone stops fine), so a
    // transient failure is retried like any other; giving up at once would
    // leak the instance.
    let stopped = Backoff::new(&config.retry)
        .run(
            &format_args!("task={task_id} vm={}", live.id()),
            "stop",
            || async {
                guarded(deadline, live.instance.stop())
                    .await
                    .into_result("stopping the instance", deadline)
            },
        )
        .await;
    // The slot is freed only once the instance is really stopped.
    drop(live);
    stopped.result
}

/// A command on its way through the backend: what its answer needs besides
/// the backend's output.
pub(super) struct RunningCommand {
    pub exec: Exec,
    pub instance_id: String,
    /// When the command left the queue.
    pub started: Instant,
    /// Time from arrival until `started`.
    pub queued: Duration,
    /// Set when this command started the instance it runs on.
    pub start: Option<StartReport>,
}

impl RunningCommand {
    /// Answers the caller with the outcome of a command that ran.
    pub fn answer(self, task_id: &str, output: ExecOutput, attempts: u32) {
        let outcome = ExecOutcome {
            task_id: task_id.to_string(),
            instance_id: self.instance_id,
            exit_code: output.exit_code,
            stdout: output.stdout,
            stderr: output.stderr,
            timed_out: output.timed_out,
            job: output.job,
            instance_restarted: self.exec.restart,
            instance_started: self.start.is_some(),
            queued: self.queued,
            slot_wait: self.start.map(|s| s.slot_wait).unwrap_or_default(),
            duration: self.started.elapsed(),
            attempts,
        };
        let _ = self.exec.reply.send(Ok(outcome));
    }

    /// Answers the caller with an error.
    pub fn fail(self, err: Error) {
        let _ = self.exec.reply.send(Err(err));
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
) -> CommandRun {
    let deadline = if spec.background {
        config.start_timeout.min(Duration::from_secs(120))
    } else {
        spec.timeout + config.exec_grace
    };
    let indeterminate_failures = Cell::new(0);
    let panicked = Cell::new(false);
    // Retries end where one attempt's deadline would have: a server asking
    // to come back later does not hold the caller longer than the command
    // itself could have.
    let ran = Backoff::new(&config.retry)
        .retry_indeterminate(config.retry_indeterminate)
        .until(Instant::now() + deadline)
        .run(
            &format_args!("task={task_id} vm={}", instance.id()),
            "exec",
            || async {
                match guarded(deadline, instance.exec(spec.clone())).await {
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
                            "the backend did not answer within {deadline:?}; \
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

/// A backend call's end: done, panicked, or past its deadline.
enum Guarded<T> {
    Done(T),
    Panicked(String),
    TimedOut,
}

impl<T> Guarded<Result<T>> {
    /// The call's result, a panic or a missed deadline as an error;
    /// `doing` names the call ("starting an instance").
    fn into_result(self, doing: &str, deadline: Duration) -> Result<T> {
        match self {
            Guarded::Done(result) => result,
            Guarded::Panicked(msg) => Err(Error::internal(format!(
                "the backend panicked while {doing}: {msg}"
            ))),
            Guarded::TimedOut => Err(Error::new(
                ErrorKind::Timeout,
                format!("{doing} did not finish within {deadline:?}"),
            )),
        }
    }
}

/// Runs a backend future under a deadline, catching panics.
async fn guarded<T>(deadline: Duration, fut: impl std::future::Future<Output = T>) -> Guarded<T> {
    match actix::clock::timeout(deadline, AssertUnwindSafe(fut).catch_unwind()).await {
        Ok(Ok(value)) => Guarded::Done(value),
        Ok(Err(payload)) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Guarded::Panicked(msg)
        }
        Err(_) => Guarded::TimedOut,
    }
}
