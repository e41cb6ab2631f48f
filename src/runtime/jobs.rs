//! The job side of the [`Runtime`] handle: list a task's jobs, read a job's
//! output from an offset (with an optional long poll), wait for a job's
//! end, kill it. Background [`ExecRequest`](super::ExecRequest)s start jobs
//! ([`Runtime::exec`]); see [`crate::jobs`] for the model.
//!
//! Lists, waits and reads of stores on this host are answered from the
//! shared job table without a hop through any actor; reading a store
//! inside an instance, and kills, go through the registry to the task's
//! actor ([`JobCall`]), which owns the instance.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::TaskId;
use super::registry::TaskRegistry;
use super::{validate_task_id, Runtime};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{store, JobOutput, JobRecord, JobTable, TaskJobs};

/// The most output one read returns, in bytes.
pub const MAX_READ_BYTES: usize = 1024 * 1024;

/// The longest a long poll or a wait may last.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// What a [`JobCall`] asks of the task's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobOp {
    /// Read up to `max` bytes from `offset` of the job's store.
    Read { id: u64, offset: u64, max: usize },
    /// Kill the job and everything it started.
    Kill { id: u64 },
}

/// What the actor answers to a [`JobCall`].
#[derive(Debug)]
pub(crate) enum JobAnswer {
    /// A read: first offset stored, where the bytes start, how many bytes
    /// were read, and the bytes as text.
    Read {
        first: u64,
        start: u64,
        count: u64,
        text: String,
    },
    /// The job after a kill.
    Killed(JobRecord),
}

/// Runtime → registry → task actor: a job operation that needs the
/// instance.
pub(crate) struct JobCall {
    pub task_id: TaskId,
    pub op: JobOp,
    pub reply: oneshot::Sender<Result<JobAnswer>>,
}

impl Message for JobCall {
    type Result = ();
}

impl Handler<JobCall> for TaskRegistry {
    type Result = ();

    fn handle(&mut self, call: JobCall, _: &mut Self::Context) {
        match self.actor_of(&call.task_id) {
            Some(addr) => addr.do_send(call),
            None => {
                let _ = call.reply.send(Err(instance_gone()));
            }
        }
    }
}

/// The error of a job operation whose instance has ended.
pub(crate) fn instance_gone() -> Error {
    Error::new(
        ErrorKind::InstanceGone,
        "the job's instance has ended; its processes and output are gone",
    )
}

fn no_such_job(task_id: &str, id: u64) -> Error {
    Error::invalid_input(format!(
        "task {task_id:?} has no job {id} (ended jobs are forgotten after a while; \
         job_list shows the task's jobs)"
    ))
}

impl Runtime {
    /// The shared job table.
    fn job_table(&self) -> &Arc<JobTable> {
        &self.jobs
    }

    fn task_jobs(&self, task_id: &str) -> Result<Arc<TaskJobs>> {
        validate_task_id(task_id)?;
        self.job_table()
            .get(task_id)
            .ok_or_else(|| Error::invalid_input(format!("task {task_id:?} has no jobs")))
    }

    /// A task's jobs (running and recently ended), by id.
    pub fn jobs(&self, task_id: &str) -> Result<Vec<JobRecord>> {
        validate_task_id(task_id)?;
        let Some(jobs) = self.job_table().get(task_id) else {
            return Ok(Vec::new());
        };
        let mut inner = jobs.lock();
        inner.forget_old(self.config.jobs.keep_ended);
        Ok(inner.jobs.values().map(|j| j.record.clone()).collect())
    }

    /// One job of a task.
    pub fn job(&self, task_id: &str, id: u64) -> Result<JobRecord> {
        let jobs = self.task_jobs(task_id)?;
        let inner = jobs.lock();
        inner
            .jobs
            .get(&id)
            .map(|j| j.record.clone())
            .ok_or_else(|| no_such_job(task_id, id))
    }

    /// Waits up to `timeout` for job `id` to end; answers the job as it is
    /// then (still running if the wait ran out).
    pub async fn wait_job(&self, task_id: &str, id: u64, timeout: Duration) -> Result<JobRecord> {
        let jobs = self.task_jobs(task_id)?;
        let mut changed = jobs.subscribe();
        let until = actix::clock::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            let record = {
                let inner = jobs.lock();
                inner
                    .jobs
                    .get(&id)
                    .map(|j| j.record.clone())
                    .ok_or_else(|| no_such_job(task_id, id))?
            };
            if record.state.is_ended() {
                return Ok(record);
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the table went away with the runtime.
                _ => return Ok(record),
            }
        }
    }

    /// Reads up to `max_bytes` of job `id`'s output from byte `offset`
    /// (0: the beginning). With `wait`, a read that would find nothing new
    /// waits up to that long for new output or the job's end (a long poll)
    /// and returns as soon as either comes. Bytes the cap cut before
    /// `offset` could be read are counted in
    /// [`missed_bytes`](JobOutput::missed_bytes); read on from
    /// [`next_offset`](JobOutput::next_offset).
    pub async fn job_output(
        &self,
        task_id: &str,
        id: u64,
        offset: u64,
        max_bytes: usize,
        wait: Option<Duration>,
    ) -> Result<JobOutput> {
        if max_bytes == 0 || max_bytes > MAX_READ_BYTES {
            return Err(Error::invalid_input(format!(
                "max_bytes must be between 1 and {MAX_READ_BYTES}"
            )));
        }
        let jobs = self.task_jobs(task_id)?;
        let mut changed = jobs.subscribe();
        let until = wait.map(|w| actix::clock::Instant::now() + w.min(MAX_WAIT));
        let segment = self.config.jobs.segment();
        loop {
            let entry = {
                let inner = jobs.lock();
                inner
                    .jobs
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| no_such_job(task_id, id))?
            };
            let ended = entry.record.state.is_ended();
            if let Some(dir) = &entry.host_dir {
                if entry.record.state == crate::jobs::JobState::Lost {
                    return Ok(empty_read(entry.record, offset));
                }
                let chunk = store::read_host(dir, segment, offset, max_bytes)?;
                if !chunk.data.is_empty() || ended || until.is_none() {
                    let count = chunk.data.len() as u64;
                    let text = String::from_utf8_lossy(&chunk.data).into_owned();
                    let mut record = entry.record;
                    record.output_bytes = record.output_bytes.max(chunk.start + count);
                    return Ok(answer(
                        record,
                        offset,
                        chunk.first,
                        chunk.start,
                        count,
                        text,
                    ));
                }
            } else {
                let has_new = entry.record.output_bytes > offset;
                if has_new || ended || until.is_none() {
                    if entry.record.state == crate::jobs::JobState::Lost {
                        return Ok(empty_read(entry.record, offset));
                    }
                    return self
                        .read_in_instance(task_id, entry.record, offset, max_bytes)
                        .await;
                }
            }
            let Some(until) = until else {
                unreachable_read()?;
                continue;
            };
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    // The wait ran out: answer with what there is (nothing).
                    let record = self.job(task_id, id)?;
                    return Ok(empty_read(record, offset));
                }
            }
        }
    }

    /// Reads a store inside the instance through the task's actor.
    async fn read_in_instance(
        &self,
        task_id: &str,
        record: JobRecord,
        offset: u64,
        max: usize,
    ) -> Result<JobOutput> {
        let op = JobOp::Read {
            id: record.id,
            offset,
            max,
        };
        match self.job_call(task_id, op).await? {
            JobAnswer::Read {
                first,
                start,
                count,
                text,
            } => Ok(answer(record, offset, first, start, count, text)),
            JobAnswer::Killed(_) => Err(Error::internal("a read was answered as a kill")),
        }
    }

    /// Kills job `id` and everything it started (SIGTERM, the kill grace,
    /// then SIGKILL to the job's whole tree); answers the job as it is
    /// after. Killing an ended job changes nothing.
    pub async fn kill_job(&self, task_id: &str, id: u64) -> Result<JobRecord> {
        let record = self.job(task_id, id)?;
        if record.state.is_ended() {
            return Ok(record);
        }
        match self.job_call(task_id, JobOp::Kill { id }).await {
            Ok(JobAnswer::Killed(record)) => Ok(record),
            Ok(JobAnswer::Read { .. }) => Err(Error::internal("a kill was answered as a read")),
            // The instance ended meanwhile: so did the job.
            Err(err) if err.kind() == ErrorKind::InstanceGone => self.job(task_id, id),
            Err(err) => Err(err),
        }
    }

    async fn job_call(&self, task_id: &str, op: JobOp) -> Result<JobAnswer> {
        let (tx, rx) = oneshot::channel();
        let call = JobCall {
            task_id: task_id.into(),
            op,
            reply: tx,
        };
        if let Err(err) = self.registry.try_send(call) {
            match err {
                SendError::Full(call) => self.registry.do_send(call),
                SendError::Closed(_) => return Err(Error::shutting_down()),
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::actor_died("the job request")))
    }
}

/// A long poll without a deadline never waits: this is not reached.
fn unreachable_read() -> Result<()> {
    Err(Error::internal("job output: a read without wait looped"))
}

fn empty_read(record: JobRecord, offset: u64) -> JobOutput {
    JobOutput {
        offset,
        next_offset: offset,
        missed_bytes: 0,
        text: String::new(),
        more: record.output_bytes > offset && record.state != crate::jobs::JobState::Lost,
        job: record,
    }
}

fn answer(
    record: JobRecord,
    offset: u64,
    first: u64,
    start: u64,
    count: u64,
    text: String,
) -> JobOutput {
    let _ = first;
    let start = start.max(offset);
    let next_offset = start + count;
    JobOutput {
        missed_bytes: start - offset,
        offset: start,
        next_offset,
        more: record.output_bytes > next_offset,
        text,
        job: record,
    }
}
