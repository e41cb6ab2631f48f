//! File transfers through a task's actor: [`Runtime::upload`] and
//! [`Runtime::download`] travel as an [`Exec`] carrying a [`Transfer`]
//! instead of a command, so they queue in order with the task's commands,
//! start its instance if it has none, and are answered exactly once, like
//! a command.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::Exec;
use super::{validate_task_id, ExecRequest, RestartReason, Runtime};
use crate::error::{Error, ErrorKind, Result};
use crate::files::{check_path, DownloadSpec, Transferred, UploadSpec};
use crate::provider::{BoxFuture, Instance};

/// What a transfer did, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutcome {
    /// The task it was for.
    pub task_id: String,
    /// The instance it went to or came from.
    pub instance_id: String,
    /// What moved.
    pub transferred: Transferred,
    /// Set when it ran on a fresh instance because the task's previous
    /// one ended.
    pub instance_restarted: Option<RestartReason>,
    /// This transfer started the instance.
    pub instance_started: bool,
    /// How long the transfer itself took.
    pub duration: Duration,
}

/// The backend call of a transfer on an instance.
pub(crate) type TransferOp =
    Box<dyn FnOnce(&dyn Instance) -> BoxFuture<Result<Transferred>> + Send>;

/// A transfer riding on an [`Exec`] in place of its command.
pub(crate) struct Transfer {
    pub op: TransferOp,
    pub reply: oneshot::Sender<Result<TransferOutcome>>,
    pub timeout: Duration,
}

impl Runtime {
    /// Puts a file or a directory into a task's environment (see
    /// [`crate::files`] for paths, limits and streams), starting its
    /// instance if needed. Queued in order with the task's commands. The
    /// runtime's limits (`HECATE_FILES_MAX_BYTES`, `HECATE_FILES_MAX_FILES`)
    /// apply on top of the spec's.
    pub async fn upload(
        &self,
        task_id: impl Into<String>,
        mut spec: UploadSpec,
    ) -> Result<TransferOutcome> {
        check_path(&spec.path)?;
        spec.limits = spec.limits.min(self.config.files.limits);
        self.transfer(
            task_id.into(),
            Box::new(move |instance| instance.upload(spec)),
        )
        .await
    }

    /// Takes a file or a directory out of a task's environment (see
    /// [`crate::files`]), starting its instance if needed. Queued in order
    /// with the task's commands; the runtime's limits apply.
    pub async fn download(
        &self,
        task_id: impl Into<String>,
        mut spec: DownloadSpec,
    ) -> Result<TransferOutcome> {
        check_path(&spec.path)?;
        spec.limits = spec.limits.min(self.config.files.limits);
        self.transfer(
            task_id.into(),
            Box::new(move |instance| instance.download(spec)),
        )
        .await
    }

    async fn transfer(&self, task_id: String, op: TransferOp) -> Result<TransferOutcome> {
        validate_task_id(&task_id)?;
        let (tx, rx) = oneshot::channel();
        // The command channel stays open while the caller waits, so the
        // actor sees a caller that is still there.
        let (exec_tx, _exec_rx) = oneshot::channel();
        let mut msg = Exec::new(
            task_id,
            ExecRequest::new(": file transfer").persistent_shell(false),
            exec_tx,
        );
        msg.transfer = Some(Transfer {
            op,
            reply: tx,
            timeout: self.config.files.timeout,
        });
        if let Err(err) = self.registry.try_send(msg) {
            match err {
                SendError::Full(msg) => self.registry.do_send(msg),
                SendError::Closed(_) => return Err(Error::shutting_down()),
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::InstanceGone,
                "the task's instance was stopped during the file transfer",
            ))
        })
    }
}
