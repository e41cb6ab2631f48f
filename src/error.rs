//! The one error type of Hecate, classified by [`ErrorKind`].
//!
//! Three failure layers stay apart: a command's non-zero exit is *data* (an
//! [`ExecOutcome`](crate::ExecOutcome)); a backend or runtime failure is an
//! [`Error`] whose kind tells the runtime what to do (retry, restart, give up);
//! a task actor that died before answering is its own kind,
//! [`ErrorKind::ActorDied`]. Decisions are made on the kind, never on the text.
//!
//! An error message never contains a secret: code that builds one from a
//! backend answer must leave credentials out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What kind of failure an [`Error`] is, and so what the runtime does about it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The backend could not do it now, and the request did not take effect
    /// (connection refused, 429, 503, instance not ready yet). Safe to retry.
    Transient,
    /// The instance no longer exists (stopped by its TTL, deleted elsewhere).
    /// The task's actor is evicted and the next attempt starts afresh.
    InstanceGone,
    /// The backend refused the request (bad credentials, quota, bad request).
    /// Not retried.
    Rejected,
    /// A backend call did not finish before its deadline.
    Timeout,
    /// The request may have reached the instance and run, but its result was
    /// lost (connection reset mid-request, 5xx after sending). Not retried
    /// unless the caller opted in, because the command may have run.
    Indeterminate,
    /// The caller's input is invalid (empty command, bad task id, ...).
    InvalidInput,
    /// The configuration is invalid.
    Config,
    /// The runtime is shutting down and takes no new work.
    ShuttingDown,
    /// The task's actor stopped before it answered (for example a panic in
    /// backend code). Other tasks are unaffected; the next call for the task
    /// gets a fresh actor.
    ActorDied,
    /// The backend answered something that does not fit its contract
    /// (malformed JSON, wrong types).
    Protocol,
    /// Any other failure (I/O on the local machine, ...).
    Internal,
    /// The task's environment (its [`TaskSpec`](crate::spec::TaskSpec):
    /// files, setup commands) could not be set up; every command of the
    /// task gets this error, with the setup's output, until the task is
    /// evicted.
    SetupFailed,
}

impl ErrorKind {
    /// A stable snake_case name, as used in JSON results.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::InstanceGone => "instance_gone",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Indeterminate => "indeterminate",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Config => "config",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::ActorDied => "actor_died",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
            ErrorKind::SetupFailed => "setup_failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of Hecate or of a backend, with a [`kind`](Error::kind) that
/// classifies it, a message for humans (and LLMs), and where there is one the
/// backend's HTTP status and the underlying error ([`source`]).
///
/// Two errors are equal when their kind, message, status and retry hint are;
/// the source is context, not identity.
///
/// [`source`]: std::error::Error::source
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message. The message must not contain secrets.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::Transient`].
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for [`ErrorKind::Protocol`].
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    /// The runtime is shutting down (or has shut down) and takes no new work.
    /// One wording for every place that refuses work for this reason.
    pub fn shutting_down() -> Self {
        Self::new(ErrorKind::ShuttingDown, "the runtime is shutting down")
    }

    /// The task's actor stopped before it answered. `what` says what was
    /// lost, for example "the command" or "the stop request".
    pub fn actor_died(what: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::ActorDied,
            format!(
                "the task's actor stopped before answering {what}; the next call starts afresh"
            ),
        )
    }

    /// The server asked to wait this long before trying again (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// The HTTP status the backend answered with.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The underlying error, reported by [`std::error::Error::source`].
    /// Its text must not contain secrets either.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message (no secrets).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status of the backend's answer, where there was one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// How long the server asked to wait before a retry, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether a retry is safe and may help: only [`ErrorKind::Transient`].
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The same error with `context: ` put in front of its message.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.message == other.message
            && self.status == other.status
            && self.retry_after == other.retry_after
    }
}

impl Eq for Error {}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(status) = self.status {
            d.field("status", &status);
        }
        if let Some(after) = self.retry_after {
            d.field("retry_after", &after);
        }
        if let Some(source) = &self.source {
            d.field("source", &format_args!("{source}"));
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::internal(err.to_string()).with_source(err)
    }
}

/// Shorthand for results with Hecate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
