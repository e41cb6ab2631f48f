//! [`Runtime::exec_stream`]: an exec whose output the caller gets as it is
//! produced ([`crate::stream`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{validate_task_id, Exec, ExecOutcome, ExecRequest, Runtime};
use crate::error::{Error, Result};
use crate::stream::{self, OutputStream, StreamOptions};

impl Runtime {
    /// Runs a command like [`Runtime::exec`] and streams its output: the
    /// returned [`OutputStream`] yields the command's stdout and stderr
    /// chunks as they are produced, each with its byte offset, and ends
    /// when the command has ended; the [`ExecResult`] then gives the same
    /// [`ExecOutcome`] as [`Runtime::exec`] would (bounded head and tail
    /// included). The request is sent at once, so the two may be awaited
    /// in any order or together; a request refused before it runs ends the
    /// stream empty and the result with the error.
    ///
    /// A reader slower than the command costs no memory beyond
    /// `options.buffer_bytes` and never slows the command: it gets larger
    /// chunks, and past the buffer the oldest unread bytes are dropped and
    /// counted ([`Chunk::missed`](crate::Chunk::missed); see
    /// [`crate::stream`]). Dropping the stream ends the streaming only; the
    /// command runs on and the task's queue moves on.
    pub fn exec_stream(
        &self,
        task_id: impl Into<String>,
        request: ExecRequest,
        options: StreamOptions,
    ) -> (OutputStream, ExecResult) {
        let (sink, output) = stream::channel(options);
        let task_id: String = task_id.into();
        let (tx, rx) = oneshot::channel();
        let checked = validate_task_id(&task_id).and_then(|()| request.validate(&self.config));
        let result = match checked {
            Err(err) => Err(err),
            Ok(()) => {
                let msg = Exec::new(task_id, request, tx).with_sink(sink);
                match self.registry.try_send(msg) {
                    Ok(()) => Ok(rx),
                    Err(SendError::Full(msg)) => {
                        self.registry.do_send(msg);
                        Ok(rx)
                    }
                    Err(SendError::Closed(_)) => Err(Error::shutting_down()),
                }
            }
        };
        (
            output,
            ExecResult {
                state: Some(result),
            },
        )
    }
}

/// The outcome of a [`Runtime::exec_stream`] call: a future of the same
/// result [`Runtime::exec`] gives.
#[must_use = "the outcome of the command arrives here"]
pub struct ExecResult {
    /// The receiver of the actor's answer, or the error the call was
    /// refused with; `None` once it has been given.
    state: Option<Result<oneshot::Receiver<Result<ExecOutcome>>>>,
}

impl std::fmt::Debug for ExecResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecResult").finish_non_exhaustive()
    }
}

impl Future for ExecResult {
    type Output = Result<ExecOutcome>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.state.as_mut() {
            None => Poll::Ready(Err(Error::internal(
                "the result of a streaming exec was polled after it was given",
            ))),
            Some(Err(_)) => match this.state.take() {
                Some(Err(err)) => Poll::Ready(Err(err)),
                _ => Poll::Ready(Err(Error::internal("streaming exec state"))),
            },
            Some(Ok(rx)) => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(answer) => {
                    this.state = None;
                    Poll::Ready(answer.unwrap_or_else(|_| Err(Error::actor_died("the command"))))
                }
            },
        }
    }
}
