//! The one guard every backend call runs under: a deadline, and panics
//! caught ([`guarded`]). A missed deadline becomes an
//! [`ErrorKind::Timeout`] error that names the deadline that expired and
//! the setting it comes from ([`Deadline`]), so whoever reads it knows what
//! to raise.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use actix::clock::Instant;
use futures_util::FutureExt;

use crate::error::{Error, ErrorKind, Result};

/// A deadline a backend call runs under and where it comes from. Displays
/// as `600 s (HECATE_START_TIMEOUT_SECONDS)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    /// How long the call may take.
    pub limit: Duration,
    /// The deadline's source, as a user would set it.
    pub source: Source,
}

/// Where a [`Deadline`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `Config::start_timeout`.
    StartTimeout,
    /// `Config::stop_timeout`.
    StopTimeout,
    /// A command's timeout plus `Config::exec_grace`.
    CommandTimeout {
        /// The command's own timeout.
        timeout: Duration,
        /// `Config::exec_grace`.
        grace: Duration,
    },
    /// The fixed cap on starting a background command.
    BackgroundStart,
    /// What was left of a graceful shutdown's grace.
    ShutdownGrace {
        /// The whole grace, as the caller gave it.
        grace: Duration,
    },
}

/// Longest a background command may take to start, whatever the start
/// timeout.
pub(crate) const BACKGROUND_START_LIMIT: Duration = Duration::from_secs(120);

impl Deadline {
    /// `limit` from `source`.
    pub fn new(limit: Duration, source: Source) -> Self {
        Deadline { limit, source }
    }

    /// The timeout error for a call that was `doing` something ("the
    /// instance start") when this deadline expired.
    pub fn expired(&self, doing: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!("{doing} did not finish within {self}"),
        )
    }

    /// The tighter of this deadline and what is left at `now` of a
    /// graceful shutdown that must end at `end`.
    pub fn or_shutdown(self, end: Option<ShutdownEnd>, now: Instant) -> Self {
        match end {
            Some(end) if end.at.saturating_duration_since(now) < self.limit => Deadline {
                limit: end.at.saturating_duration_since(now),
                source: Source::ShutdownGrace { grace: end.grace },
            },
            _ => self,
        }
    }
}

/// When a graceful shutdown must be over, and the grace that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShutdownEnd {
    /// The shutdown's start plus its grace.
    pub at: Instant,
    /// The grace the caller gave.
    pub grace: Duration,
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = secs(self.limit);
        match self.source {
            Source::StartTimeout => write!(f, "{limit} (HECATE_START_TIMEOUT_SECONDS)"),
            Source::StopTimeout => write!(f, "{limit} (stop_timeout)"),
            Source::CommandTimeout { timeout, grace } => write!(
                f,
                "{limit} (the command's timeout of {} plus exec_grace of {})",
                secs(timeout),
                secs(grace)
            ),
            Source::BackgroundStart => write!(
                f,
                "{limit} (the limit on starting a background command: \
                 HECATE_START_TIMEOUT_SECONDS, at most {})",
                secs(BACKGROUND_START_LIMIT)
            ),
            Source::ShutdownGrace { grace } => {
                write!(f, "the shutdown's grace of {}", secs(grace))
            }
        }
    }
}

/// `600 s`, `1.5 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A backend call's end: done, panicked, or past its deadline.
pub(crate) enum Guarded<T> {
    /// The call answered.
    Done(T),
    /// The call panicked, with the panic's message.
    Panicked(String),
    /// The deadline passed first.
    TimedOut,
}

impl<T> Guarded<Result<T>> {
    /// The call's result, a panic or a missed deadline as an error; `doing`
    /// names the call ("the instance start").
    pub fn into_result(self, doing: &str, deadline: &Deadline) -> Result<T> {
        match self {
            Guarded::Done(result) => result,
            Guarded::Panicked(msg) => Err(Error::internal(format!(
                "the backend panicked during {doing}: {msg}"
            ))),
            Guarded::TimedOut => Err(deadline.expired(doing)),
        }
    }
}

/// Runs a backend future under `deadline`, catching panics.
pub(crate) async fn guarded<T>(deadline: Duration, fut: impl Future<Output = T>) -> Guarded<T> {
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
