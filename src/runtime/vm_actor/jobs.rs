//! The jobs of a [`VmActor`]'s instance: a background request becomes a
//! job whose command runs under the output store's wrapper
//! ([`crate::jobs::store`]); the actor records it in the shared job table,
//! watches its running jobs (new output, their end, their lifetime) every
//! poll interval while any runs, kills them on request or at their
//! lifetime, reads stores that are only reachable inside the instance, and
//! marks its jobs lost when its instance ends. A running job keeps the
//! instance from idling out (`VmActor::is_idle`).

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::clock::Instant;
use actix::prelude::*;

use super::run::CommandRun;
use super::state::VmState;
use super::{Shared, VmActor};
use crate::error::{Error, Result};
use crate::jobs::{now_ms, store, JobEntry, JobRecord, JobState, RunningCount, TaskJobs};
use crate::provider::{Captured, ExecSpec, Instance, JobInfo};
use crate::runtime::jobs::{instance_gone, JobAnswer, JobCall, JobOp};
use crate::runtime::ExecRequest;

mod window;

pub(super) use window::Yielded;

/// How often stores on this host are looked at, unless configured.
const HOST_POLL: Duration = Duration::from_millis(50);
/// How often stores inside an instance are looked at, unless configured.
const REMOTE_POLL: Duration = Duration::from_secs(1);
/// The time a read or status command in the instance may take.
const STORE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What an actor keeps about the jobs it started.
pub(super) struct ActorJobs {
    table: Arc<TaskJobs>,
    /// The next look at the running jobs.
    timer: Option<SpawnHandle>,
    /// A status command is out.
    polling: bool,
    /// Jobs being killed.
    killing: HashSet<u64>,
}

/// A background request on its way to becoming a job.
pub(super) struct PendingJob {
    id: u64,
    command: String,
    dir: String,
    host_dir: Option<std::path::PathBuf>,
    lifetime: Duration,
    /// A foreground call that becomes a job if it runs this long.
    yield_after: Option<Duration>,
}

/// Turns a background request into a job where the instance has a jobs
/// directory: the command to send (the store's wrapper around `command`)
/// and what [`VmActor::job_started`] needs.
pub(super) fn prepare(
    shared: &Shared,
    task_id: &Arc<str>,
    instance: &dyn Instance,
    request: &ExecRequest,
    command: String,
) -> Result<(String, Option<PendingJob>)> {
    let yield_after = request.yield_window(&shared.config);
    if !request.background && yield_after.is_none() {
        return Ok((command, None));
    }
    let Some(dirs) = instance.jobs_dir() else {
        return Ok((command, None));
    };
    let config = &shared.config.jobs;
    let table = shared.jobs.get_or_create(task_id);
    let id = {
        let mut inner = table.lock();
        inner.forget_old(config.keep_ended);
        let id = inner.next_id;
        inner.next_id += 1;
        id
    };
    let name = format!("job-{id}");
    let dir = format!("{}/{name}", dirs.in_instance.trim_end_matches('/'));
    let wrapped = store::wrapper(&dir, &command, config.segment())?;
    crate::provider::check_command(&wrapped)?;
    Ok((
        wrapped,
        Some(PendingJob {
            id,
            command: request.command.clone(),
            dir,
            host_dir: dirs.on_host.map(|h| h.join(name)),
            lifetime: request.job_lifetime.unwrap_or(config.max_lifetime),
            yield_after,
        }),
    ))
}

impl VmActor {
    /// The job `pending` was started (or failed to start) by `ran`: records
    /// it, and tells the caller its task-wide id and store.
    pub(super) fn job_started(
        &mut self,
        pending: PendingJob,
        instance_id: &str,
        ran: &mut CommandRun,
        yielded: Option<Result<Yielded>>,
        ctx: &mut Context<Self>,
    ) {
        let Ok(output) = &mut ran.result else {
            return;
        };
        let Some(backend) = output.job.take() else {
            return;
        };
        let yielded = match yielded {
            None => None,
            Some(Ok(yielded)) => Some(yielded),
            Some(Err(err)) => {
                // The job runs, but its window could not be watched: the
                // caller gets the job to follow.
                log::warn!(
                    "task={} job={}: yield window: {err}",
                    self.task_id,
                    pending.id
                );
                None
            }
        };
        if let Some(done) = yielded.as_ref().filter(|y| y.status.exit.is_some()) {
            // Ended within its window: an ordinary foreground result, and
            // no job.
            output.exit_code = done.status.exit.unwrap_or(-1);
            output.stdout = done.output.clone();
            return;
        }
        let log_file = format!("{}/log", pending.dir);
        let exit_file = format!("{}/exit", pending.dir);
        let table = self.shared.jobs.get_or_create(&self.task_id);
        let record = JobRecord {
            id: pending.id,
            command: pending.command,
            state: JobState::Running,
            exit_code: None,
            end_reason: None,
            instance_id: instance_id.to_string(),
            started_at_ms: now_ms(),
            ended_at_ms: None,
            output_bytes: 0,
            log_file: log_file.clone(),
            exit_file: exit_file.clone(),
        };
        let pid = backend.pid;
        table.lock().jobs.insert(
            pending.id,
            JobEntry {
                record,
                dir: pending.dir,
                host_dir: pending.host_dir,
                backend,
                deadline: Instant::now() + pending.lifetime,
                ended: None,
                generation: self.generation,
                counted: Some(RunningCount::new(self.shared.metrics.clone())),
            },
        );
        table.notify();
        let pid_text = pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
        output.stdout = Captured::from_text(
            &format!(
                "started background job {} ({pid_text}); log: {log_file}\n",
                pending.id
            ),
            self.shared.config.capture_bytes,
        );
        if let Some(yielded) = yielded {
            let mut text = yielded.output;
            let notice = format!(
                "\n[still running after {} s: it goes on as background job {} (lifetime {} s); \
                 follow it with job_output (job_id {}, offset {}) and stop it with job_kill]\n",
                pending.yield_after.unwrap_or_default().as_secs_f64(),
                pending.id,
                pending.lifetime.as_secs(),
                pending.id,
                yielded.next_offset
            );
            if text.dropped_bytes > 0 {
                text.tail.push_str(&notice);
            } else {
                text.head.push_str(&notice);
            }
            output.stdout = text;
            output.exit_code = 0;
        }
        output.job = Some(JobInfo {
            id: pending.id.to_string(),
            pid,
            log_file,
            exit_file,
        });
        log::info!(
            "task={} vm={instance_id} job={} started",
            self.task_id,
            pending.id
        );
        self.jobs.get_or_insert_with(|| {
            Box::new(ActorJobs {
                table,
                timer: None,
                polling: false,
                killing: HashSet::new(),
            })
        });
        self.schedule_job_poll(ctx);
    }

    /// Whether a job this actor started still runs.
    pub(super) fn has_running_jobs(&self) -> bool {
        self.jobs.as_ref().is_some_and(|jobs| {
            jobs.table
                .lock()
                .running_of(self.generation)
                .next()
                .is_some()
        })
    }

    /// Marks every running job of this actor lost: its instance ended.
    pub(super) fn jobs_instance_ended(&mut self, why: &str) {
        let Some(jobs) = &mut self.jobs else {
            return;
        };
        let mut lost = 0;
        {
            let mut inner = jobs.table.lock();
            for job in inner.jobs.values_mut() {
                if job.generation == self.generation && !job.record.state.is_ended() {
                    job.end(JobState::Lost, None, Some(why.to_string()));
                    lost += 1;
                }
            }
        }
        if lost > 0 {
            log::info!("task={} {lost} running job(s) lost: {why}", self.task_id);
            jobs.table.notify();
        }
    }

    fn poll_interval(&self) -> Duration {
        self.shared.config.jobs.poll_interval.unwrap_or_else(|| {
            let on_host = self.jobs.as_ref().is_some_and(|jobs| {
                jobs.table
                    .lock()
                    .running_of(self.generation)
                    .all(|j| j.host_dir.is_some())
            });
            if on_host {
                HOST_POLL
            } else {
                REMOTE_POLL
            }
        })
    }

    /// Arms the next look at the running jobs, if any runs.
    fn schedule_job_poll(&mut self, ctx: &mut Context<Self>) {
        if !self.has_running_jobs() {
            return;
        }
        let interval = self.poll_interval();
        let Some(jobs) = &mut self.jobs else {
            return;
        };
        if jobs.timer.is_some() {
            return;
        }
        jobs.timer = Some(ctx.run_later(interval, |act, ctx| {
            if let Some(jobs) = &mut act.jobs {
                jobs.timer = None;
            }
            act.poll_jobs(ctx);
        }));
    }

    /// Looks at the running jobs: kills those past their lifetime, reads
    /// the others' status.
    fn poll_jobs(&mut self, ctx: &mut Context<Self>) {
        let VmState::Ready(ready) = &self.state else {
            return;
        };
        let instance = Rc::clone(&ready.live.instance);
        let Some(jobs) = &self.jobs else {
            return;
        };
        let now = Instant::now();
        let running: Vec<JobEntry> = jobs
            .table
            .lock()
            .running_of(self.generation)
            .cloned()
            .collect();
        let segment = self.shared.config.jobs.segment();
        let mut remote = Vec::new();
        let mut statuses = Vec::new();
        let mut expired = Vec::new();
        for job in running {
            if jobs.killing.contains(&job.record.id) {
                continue;
            }
            if now >= job.deadline {
                expired.push(job.record.id);
                continue;
            }
            match &job.host_dir {
                Some(dir) => {
                    let backend_exit = std::path::Path::new(&job.backend.exit_file);
                    match store::status_host(dir, segment, backend_exit) {
                        Ok(status) => statuses.push((job.record.id, status)),
                        Err(err) => log::debug!("task={} job status: {err}", self.task_id),
                    }
                }
                None => remote.push((job.record.id, job.dir, job.backend.exit_file)),
            }
        }
        for id in expired {
            log::info!(
                "task={} job={id} reached its lifetime; killing it",
                self.task_id
            );
            self.kill_job(id, "it reached its lifetime", None, ctx);
        }
        self.apply_statuses(statuses, ctx);
        let polling = self.jobs.as_ref().is_some_and(|jobs| jobs.polling);
        if !remote.is_empty() && !polling {
            match store::status_script(&remote, segment) {
                Ok(script) => {
                    if let Some(jobs) = &mut self.jobs {
                        jobs.polling = true;
                    }
                    let spec = store_command(script, 64 * 1024);
                    ctx.spawn(
                        async move { instance.exec(spec).await }
                            .into_actor(self)
                            .map(|ran, act, ctx| {
                                if let Some(jobs) = &mut act.jobs {
                                    jobs.polling = false;
                                }
                                match ran {
                                    Ok(out) => {
                                        let statuses = store::parse_status(&out.stdout.to_text());
                                        act.apply_statuses(statuses, ctx);
                                    }
                                    Err(err) => {
                                        log::debug!("task={} job status: {err}", act.task_id);
                                    }
                                }
                                act.schedule_job_poll(ctx);
                            }),
                    );
                }
                Err(err) => log::warn!("task={} job status: {err}", self.task_id),
            }
        }
        self.schedule_job_poll(ctx);
    }

    /// Records what a look at the stores found.
    fn apply_statuses(&mut self, statuses: Vec<(u64, store::Status)>, ctx: &mut Context<Self>) {
        let Some(jobs) = &self.jobs else {
            return;
        };
        let mut changed = false;
        {
            let mut inner = jobs.table.lock();
            for (id, status) in statuses {
                let Some(job) = inner.jobs.get_mut(&id) else {
                    continue;
                };
                if job.record.state.is_ended() || jobs.killing.contains(&id) {
                    continue;
                }
                if status.total != job.record.output_bytes {
                    job.record.output_bytes = status.total;
                    changed = true;
                }
                if let Some(code) = status.exit {
                    job.end(JobState::Exited, Some(code), None);
                    changed = true;
                } else if status.wrapper_ended {
                    job.end(
                        JobState::Killed,
                        None,
                        Some("its processes were killed (not by the runtime)".to_string()),
                    );
                    changed = true;
                }
            }
        }
        if changed {
            jobs.table.notify();
            self.after_jobs_changed(ctx);
        }
    }

    /// Once no job runs, the instance may idle out from now on.
    fn after_jobs_changed(&mut self, ctx: &mut Context<Self>) {
        if !self.has_running_jobs() {
            self.idle_since = Instant::now();
            self.ensure_timer(ctx);
        }
    }

    /// Kills job `id` (SIGTERM, grace, SIGKILL to its tree), marks it
    /// killed with `why`, and answers `reply` if there is one.
    fn kill_job(
        &mut self,
        id: u64,
        why: &str,
        reply: Option<tokio::sync::oneshot::Sender<Result<JobAnswer>>>,
        ctx: &mut Context<Self>,
    ) {
        let answer = |reply: Option<tokio::sync::oneshot::Sender<Result<JobAnswer>>>,
                      result: Result<JobAnswer>| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        let (VmState::Ready(ready), Some(jobs)) = (&self.state, &mut self.jobs) else {
            return answer(reply, Err(instance_gone()));
        };
        let entry = jobs.table.lock().jobs.get(&id).cloned();
        let Some(entry) = entry.filter(|e| e.generation == self.generation) else {
            return answer(reply, Err(instance_gone()));
        };
        if entry.record.state.is_ended() || !jobs.killing.insert(id) {
            return answer(reply, Ok(JobAnswer::Killed(entry.record)));
        }
        let instance = Rc::clone(&ready.live.instance);
        let grace = self.shared.config.jobs.kill_grace;
        let why = why.to_string();
        let backend = entry.backend;
        ctx.spawn(
            async move { instance.kill_job(&backend, grace).await }
                .into_actor(self)
                .map(move |killed, act, ctx| {
                    let Some(jobs) = &mut act.jobs else {
                        return answer(reply, Err(instance_gone()));
                    };
                    jobs.killing.remove(&id);
                    let record = {
                        let mut inner = jobs.table.lock();
                        let job = inner.jobs.get_mut(&id);
                        if let (Ok(()), Some(job)) = (&killed, job) {
                            job.end(JobState::Killed, None, Some(why));
                        }
                        inner.jobs.get(&id).map(|j| j.record.clone())
                    };
                    jobs.table.notify();
                    act.after_jobs_changed(ctx);
                    let result = match (killed, record) {
                        (Ok(()), Some(record)) => Ok(JobAnswer::Killed(record)),
                        (Ok(()), None) => Err(Error::internal("the killed job was forgotten")),
                        (Err(err), _) => Err(err.context(format_args!("killing job {id}"))),
                    };
                    answer(reply, result);
                }),
        );
    }

    /// Reads a store inside the instance.
    fn read_job(
        &mut self,
        id: u64,
        offset: u64,
        max: usize,
        reply: tokio::sync::oneshot::Sender<Result<JobAnswer>>,
        ctx: &mut Context<Self>,
    ) {
        let (VmState::Ready(ready), Some(jobs)) = (&self.state, &self.jobs) else {
            let _ = reply.send(Err(instance_gone()));
            return;
        };
        let entry = jobs.table.lock().jobs.get(&id).cloned();
        let Some(entry) = entry.filter(|e| e.generation == self.generation) else {
            let _ = reply.send(Err(instance_gone()));
            return;
        };
        let script =
            match store::read_script(&entry.dir, self.shared.config.jobs.segment(), offset, max) {
                Ok(script) => script,
                Err(err) => {
                    let _ = reply.send(Err(err));
                    return;
                }
            };
        let instance = Rc::clone(&ready.live.instance);
        let spec = store_command(script, max + 4096);
        ctx.spawn(
            async move {
                let out = instance.exec(spec).await?;
                let (first, start, count, text) = store::parse_read(&out.stdout.to_text())?;
                Ok(JobAnswer::Read {
                    first,
                    start,
                    count,
                    text,
                })
            }
            .into_actor(self)
            .map(move |read, _, _| {
                let _ = reply.send(read);
            }),
        );
    }
}

/// A command that reads the job stores.
fn store_command(command: String, capture_bytes: usize) -> ExecSpec {
    ExecSpec {
        command,
        background: false,
        timeout: STORE_COMMAND_TIMEOUT,
        capture_bytes,
        shell: None,
    }
}

impl Handler<JobCall> for VmActor {
    type Result = ();

    fn handle(&mut self, call: JobCall, ctx: &mut Self::Context) {
        match call.op {
            JobOp::Read { id, offset, max } => self.read_job(id, offset, max, call.reply, ctx),
            JobOp::Kill { id } => self.kill_job(id, "killed on request", Some(call.reply), ctx),
        }
    }
}
