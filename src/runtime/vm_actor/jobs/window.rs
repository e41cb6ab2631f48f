//! The yield window of a foreground call that may become a job: the call
//! runs as a job from its start; this watches it until it ends or the
//! window passes, and reads its output so far.

use std::rc::Rc;
use std::time::Duration;

use actix::clock::Instant;

use super::{store_command, PendingJob, HOST_POLL, REMOTE_POLL};
use crate::error::{Error, Result};
use crate::jobs::store;
use crate::provider::{Captured, Instance};

impl PendingJob {
    /// The yield window to watch, for a foreground call that may yield.
    pub fn window(&self, config: &crate::Config) -> Option<Window> {
        Some(Window {
            length: self.yield_after?,
            dir: self.dir.clone(),
            host_dir: self.host_dir.clone(),
            poll: config
                .jobs
                .poll_interval
                .unwrap_or(if self.host_dir.is_some() {
                    HOST_POLL
                } else {
                    REMOTE_POLL
                }),
            segment: config.jobs.segment(),
            capture: config.capture_bytes,
        })
    }
}

/// The yield window of a foreground call running as a job.
pub(in crate::runtime::vm_actor) struct Window {
    length: Duration,
    dir: String,
    host_dir: Option<std::path::PathBuf>,
    poll: Duration,
    segment: u64,
    capture: usize,
}

/// How a call's yield window ended.
pub(in crate::runtime::vm_actor) struct Yielded {
    /// The store's status at the end of the window.
    pub(in crate::runtime::vm_actor) status: store::Status,
    /// The output so far.
    pub(in crate::runtime::vm_actor) output: Captured,
    /// The offset after it.
    pub(in crate::runtime::vm_actor) next_offset: u64,
}

impl Window {
    /// Waits until the job ends or the window passes, then reads its
    /// output so far.
    pub async fn watch(
        self,
        instance: Rc<dyn Instance>,
        started: &crate::provider::ExecOutput,
    ) -> Result<Yielded> {
        let backend = started
            .job
            .as_ref()
            .ok_or_else(|| Error::internal("the call's job did not start"))?;
        let until = Instant::now() + self.length;
        let status = loop {
            let status = self.status(&*instance, &backend.exit_file).await?;
            let now = Instant::now();
            if status.exit.is_some() || status.wrapper_ended || now >= until {
                break status;
            }
            tokio::time::sleep(self.poll.min(until - now)).await;
        };
        let mut capture = crate::provider::OutputCapture::new(self.capture);
        let (mut offset, mut missed) = (0u64, 0u64);
        // The store holds at most two segments: a few reads get it all.
        for _ in 0..8 {
            let (start, count, text) = self.read(&*instance, offset).await?;
            missed += start.saturating_sub(offset);
            capture.push(text.as_bytes());
            offset = start + count;
            if count == 0 || offset >= status.total {
                break;
            }
        }
        let mut output = capture.finish();
        output.dropped_bytes += missed;
        Ok(Yielded {
            status,
            output,
            next_offset: offset,
        })
    }

    async fn status(&self, instance: &dyn Instance, backend_exit: &str) -> Result<store::Status> {
        if let Some(dir) = &self.host_dir {
            return store::status_host(dir, self.segment, std::path::Path::new(backend_exit));
        }
        let script = store::status_script(
            &[(0, self.dir.clone(), backend_exit.to_string())],
            self.segment,
        )?;
        let out = instance.exec(store_command(script, 4096)).await?;
        store::parse_status(&out.stdout.to_text())
            .into_iter()
            .next()
            .map(|(_, status)| status)
            .ok_or_else(|| Error::internal("no status of the call's job"))
    }

    async fn read(&self, instance: &dyn Instance, offset: u64) -> Result<(u64, u64, String)> {
        let max = 256 * 1024;
        if let Some(dir) = &self.host_dir {
            let chunk = store::read_host(dir, self.segment, offset, max)?;
            let count = chunk.data.len() as u64;
            return Ok((
                chunk.start,
                count,
                String::from_utf8_lossy(&chunk.data).into_owned(),
            ));
        }
        let script = store::read_script(&self.dir, self.segment, offset, max)?;
        let out = instance.exec(store_command(script, max + 4096)).await?;
        let (_, start, count, text) = store::parse_read(&out.stdout.to_text())?;
        Ok((start, count, text))
    }
}
