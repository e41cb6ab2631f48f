//! [`Backoff`]: the runtime's one retry loop. Every backend call the runtime
//! retries (an instance start, an instance stop, the orphan sweep, a
//! command) goes through it, so which failures are retried and how long to
//! wait between attempts is decided here and in [`RetryPolicy::delay`], and
//! nowhere else.
//!
//! Only errors that say a retry is safe are retried: [`Error::is_transient`],
//! plus [`ErrorKind::Indeterminate`] for a caller that opted in. A server's
//! `Retry-After` is honoured up to the policy's `max_delay` and, when the
//! caller gives one, up to the call's remaining deadline.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use actix::clock::Instant;

use crate::config::RetryPolicy;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::Metrics;

/// How one backend call is retried: the policy, and optionally a deadline
/// for the whole call and the opt-in retry of indeterminate failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff<'p> {
    policy: &'p RetryPolicy,
    /// No wait reaches past this, and no attempt starts after it.
    deadline: Option<Instant>,
    /// Also retry failures after which the request may have taken effect.
    retry_indeterminate: bool,
    /// Where retries are counted.
    metrics: Option<&'p Metrics>,
}

/// What a retried call came to.
#[derive(Debug)]
pub(crate) struct Attempted<T> {
    /// The last attempt's result.
    pub result: Result<T>,
    /// Attempts made, 1 without retries.
    pub attempts: u32,
}

impl<'p> Backoff<'p> {
    /// Retries transient failures as `policy` says, with no overall deadline.
    pub fn new(policy: &'p RetryPolicy) -> Self {
        Backoff {
            policy,
            deadline: None,
            retry_indeterminate: false,
            metrics: None,
        }
    }

    /// Counts each retry in `metrics` (`hecate_retries_total`), by the
    /// operation's name and the error's kind.
    #[must_use]
    pub fn counted(mut self, metrics: &'p Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Gives the whole call a deadline: waits are cut to it, and once it has
    /// passed the last failure is the answer.
    #[must_use]
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Also retries [`ErrorKind::Indeterminate`] failures (the caller accepts
    /// that the request may take effect twice).
    #[must_use]
    pub fn retry_indeterminate(mut self, yes: bool) -> Self {
        self.retry_indeterminate = yes;
        self
    }

    /// Whether `err` is worth another attempt at all.
    fn retryable(&self, err: &Error) -> bool {
        err.is_transient() || (self.retry_indeterminate && err.kind() == ErrorKind::Indeterminate)
    }

    /// How long to wait at `now` before retry number `retry` (1-based) after
    /// `err`, with jitter drawn from `unit` (in `[0, 1)`); `None` to give up.
    pub fn delay_before(
        &self,
        retry: u32,
        err: &Error,
        unit: f64,
        now: Instant,
    ) -> Option<Duration> {
        if !self.retryable(err) || retry > self.policy.max_retries {
            return None;
        }
        let delay = self.policy.delay(retry, unit, err.retry_after());
        match self.deadline {
            None => Some(delay),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(now);
                (!left.is_zero()).then(|| delay.min(left))
            }
        }
    }

    /// Runs `attempt` until it succeeds, fails in a way not worth retrying,
    /// or the retries or the deadline run out. Each retry is logged as
    /// `{label} {what} failed (…); retry n in …`, so `label` carries the
    /// caller's stable `task=… vm=…` prefix.
    pub async fn run<T, Fut>(
        &self,
        label: &dyn fmt::Display,
        what: &str,
        mut attempt: impl FnMut() -> Fut,
    ) -> Attempted<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match attempt().await {
                Ok(value) => {
                    return Attempted {
                        result: Ok(value),
                        attempts,
                    }
                }
                Err(err) => err,
            };
            let Some(delay) = self.delay_before(attempts, &err, fastrand::f64(), Instant::now())
            else {
                return Attempted {
                    result: Err(err),
                    attempts,
                };
            };
            log::warn!("{label} {what} failed ({err}); retry {attempts} in {delay:?}");
            if let Some(metrics) = self.metrics {
                metrics.retried(what, err.kind());
            }
            actix::clock::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    fn unavailable_for_a_day() -> Error {
        Error::transient("503 Service Unavailable").with_retry_after(Some(DAY))
    }

    #[test]
    fn retry_after_is_capped_by_the_policy_maximum() {
        let p = policy();
        let now = Instant::now();
        let delay = Backoff::new(&p).delay_before(1, &unavailable_for_a_day(), 0.5, now);
        assert_eq!(delay, Some(p.max_delay));
    }

    #[test]
    fn retry_after_is_capped_by_the_remaining_deadline() {
        let p = policy();
        let now = Instant::now();
        let backoff = Backoff::new(&p).until(now + Duration::from_secs(5));
        let err = unavailable_for_a_day();
        assert_eq!(
            backoff.delay_before(1, &err, 0.5, now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            backoff.delay_before(1, &err, 0.5, now + Duration::from_secs(5)),
            None,
            "no retry once the deadline has passed"
        );
    }

    #[test]
    fn only_retryable_failures_within_the_budget_are_retried() {
        let p = policy();
        let now = Instant::now();
        let backoff = Backoff::new(&p);
        let transient = Error::transient("busy");
        let indeterminate = Error::new(ErrorKind::Indeterminate, "reset mid-request");
        assert_eq!(
            backoff.delay_before(1, &transient, 0.5, now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            backoff.delay_before(p.max_retries + 1, &transient, 0.5, now),
            None
        );
        assert_eq!(backoff.delay_before(1, &indeterminate, 0.5, now), None);
        assert!(backoff
            .retry_indeterminate(true)
            .delay_before(1, &indeterminate, 0.5, now)
            .is_some());
        let rejected = Error::new(ErrorKind::Rejected, "401");
        assert_eq!(backoff.delay_before(1, &rejected, 0.5, now), None);
    }

    #[actix_rt::test]
    async fn a_day_long_retry_after_does_not_stall_a_call_past_its_deadline() {
        tokio::time::pause();
        let p = policy();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(10);
        let done = Backoff::new(&p)
            .until(deadline)
            .run(&"task=t vm=v", "exec", || async {
                Err::<(), _>(unavailable_for_a_day())
            })
            .await;
        assert_eq!(done.attempts, 2, "one retry, at the deadline");
        assert!(done.result.is_err());
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_010),
            "{waited:?}"
        );
    }
}
