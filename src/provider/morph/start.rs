//! The start path of the morph backend: creating an instance under a unique
//! start-attempt tag, adopting it when the create's answer was lost, polling
//! it until it is ready, stopping instances whose create landed after their
//! client had given up, and the orphan sweep.
//!
//! A `POST /instance` whose answer is lost (deadline, reset, 5xx) may or may
//! not have created an instance, and on a loaded server it may even create
//! one after the client gave up. So every create carries its own
//! [`tags::START_ATTEMPT`]: after a lost answer the attempt is looked up and
//! adopted if it exists; if it does not (yet), the start fails as transient
//! (the runtime retries it under a new attempt id) and the attempt is left to
//! an [`Unsettled`] check that looks for it again later and stops whatever
//! carries it. Only attempt ids this process issued and did not use are ever
//! stopped, so an instance another actor of the same task still uses (one
//! that is retiring) is never touched.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_rt::time::{sleep, Instant};

use super::wire::{InstanceInfo, InstanceStatus};
use super::Shared;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{tags, StartSpec};

/// A readiness poll comes at the latest after this fraction of the time the
/// instance has been pending: a ready instance is seen within about a tenth
/// of its boot time (and never later than the base interval).
const POLL_FRACTION: u32 = 10;

/// Polls of an instance that stays pending slow down to this, at most
/// (unless the configured base interval is longer).
const MAX_POLL: Duration = Duration::from_secs(2);

/// The shortest poll interval, whatever is configured: a zero would spin.
const MIN_POLL: Duration = Duration::from_millis(1);

/// How many times an unsettled attempt is looked for after its start ended:
/// after one request timeout, then after waits twice as long each time (1,
/// 3 and 7 request timeouts after the end). A create that the server takes
/// up after its client gave up lands within a request timeout or two on any
/// sane server; whatever lands later still carries the runtime's tags (the
/// shutdown sweep, `hecate gc`) and a TTL.
const SETTLE_CHECKS: u32 = 3;

/// Makes every start attempt's id unique within this process; the random
/// part makes it unique across processes.
static NEXT_ATTEMPT: AtomicU64 = AtomicU64::new(0);

fn new_attempt_id() -> String {
    let n = NEXT_ATTEMPT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}{n:x}", fastrand::u32(..))
}

/// The wait before the next readiness poll of an instance that has been
/// pending for `pending_for`: the base interval while it is young, then a
/// tenth of its age, capped at [`MAX_POLL`].
pub(super) fn poll_delay(base: Duration, pending_for: Duration) -> Duration {
    let base = base.max(MIN_POLL);
    (pending_for / POLL_FRACTION).clamp(base, MAX_POLL.max(base))
}

/// Creates an instance for `spec` and waits until it is ready; returns it.
/// A failure after the instance exists deletes it (best effort).
pub(super) async fn start(shared: &Arc<Shared>, spec: StartSpec) -> Result<InstanceInfo> {
    let task = spec.task_id.as_str();
    let ttl_seconds = spec
        .ttl
        .map(|ttl| ttl.as_nanos().div_ceil(1_000_000_000).max(1))
        .map(|s| u64::try_from(s).unwrap_or(u64::MAX));
    let attempt = new_attempt_id();
    let mut metadata = spec.metadata.clone();
    metadata.insert(tags::START_ATTEMPT.to_string(), attempt.clone());
    // From here until the start succeeds, an instance of this attempt may
    // exist that nobody will use: whatever way this future ends (an error,
    // or the runtime dropping it at its start deadline), the guard leaves a
    // check behind that stops it, unless it was disarmed.
    let mut unsettled = Unsettled::new(shared, task, &attempt, &metadata);
    // The task's own image (its spec), else the runtime's snapshot.
    let snapshot_id = spec
        .task_spec
        .as_ref()
        .and_then(|s| s.image.clone())
        .unwrap_or_else(|| shared.snapshot_id.clone());
    let created = shared
        .api
        .create_instance(&snapshot_id, &metadata, ttl_seconds)
        .await;
    // The start slot guards the API's create rate, not the boot: the
    // readiness wait below runs without it.
    spec.create_slot.release();
    let info = match created {
        Ok(info) => info,
        Err(err) if err.kind() == ErrorKind::Indeterminate => {
            adopt(shared, task, &attempt, &metadata, err).await?
        }
        Err(err) => {
            // Every other failure says the request had no effect.
            unsettled.disarm();
            log::warn!("task={task} could not create an instance: {err}");
            return Err(err.context("starting a MorphCloud instance"));
        }
    };
    log::info!(
        "task={task} vm={} created from {} (status {}, attempt {attempt})",
        info.id,
        snapshot_id,
        info.status
    );
    let created_at = Instant::now();
    if let Err(err) = wait_ready(shared, task, &info, created_at).await {
        log::warn!("task={task} vm={} did not become ready: {err}", info.id);
        // Like the official SDK: a start that fails after the instance
        // exists deletes it. If that fails too, the guard's later check
        // tries again; the runtime's tags (shutdown sweep, `hecate gc`) and
        // the TTL are the backstops.
        match shared.api.delete_instance(&info.id).await {
            Ok(_) => {
                unsettled.disarm();
                log::info!("task={task} vm={} deleted after a failed start", info.id);
            }
            Err(del) => log::warn!(
                "task={task} vm={} could not be deleted after a failed start: {del}",
                info.id
            ),
        }
        return Err(err);
    }
    unsettled.disarm();
    log::info!("task={task} vm={} ready", info.id);
    Ok(info)
}

/// After a create whose answer was lost: the instance the attempt made, if
/// the server has it. If it has none, the start is worth retrying (a new
/// attempt); the caller's [`Unsettled`] guard looks for this one again later.
async fn adopt(
    shared: &Shared,
    task: &str,
    attempt: &str,
    metadata: &BTreeMap<String, String>,
    lost: Error,
) -> Result<InstanceInfo> {
    log::info!("task={task} create answer lost ({lost}); looking for attempt {attempt}");
    let found = match find_attempt(shared, metadata).await {
        Ok(found) => found,
        Err(err) => {
            log::warn!("task={task} could not look for attempt {attempt}: {err}");
            let retry = Error::transient(format!(
                "{}; looking for the instance it may have created failed too: {err}",
                lost.message()
            ));
            return Err(retry
                .with_source(lost)
                .context("starting a MorphCloud instance"));
        }
    };
    let mut found = found.into_iter();
    let Some(info) = found.next() else {
        log::info!("task={task} attempt {attempt} made no instance (yet); retrying the start");
        let retry = Error::transient(format!(
            "{}; no instance of this start attempt exists, so the start is retried",
            lost.message()
        ));
        let retry = match lost.status() {
            Some(status) => retry.with_status(status),
            None => retry,
        };
        return Err(retry
            .with_source(lost)
            .context("starting a MorphCloud instance"));
    };
    // One create makes one instance; anything else carrying the attempt id
    // is not this start's to keep.
    let extra: Vec<String> = found.map(|i| i.id).collect();
    if !extra.is_empty() {
        let (stopped, _) = stop_all(&shared.api, &extra).await;
        log::warn!("task={task} attempt {attempt} had extra instances: stopped {stopped:?}");
    }
    log::info!("task={task} vm={} adopted (attempt {attempt})", info.id);
    Ok(info)
}

/// The instances carrying all of `metadata` (so exactly one attempt's).
async fn find_attempt(
    shared: &Shared,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<InstanceInfo>> {
    let filter: Vec<(&str, &str)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    shared.api.list_tagged(&filter).await
}

/// A start attempt that may have made an instance nobody will use. Unless
/// disarmed, dropping it spawns [`settle`] on the current arbiter.
struct Unsettled {
    /// `None` once disarmed.
    armed: Option<Attempt>,
}

/// What [`settle`] needs to find an attempt's instances.
struct Attempt {
    shared: Arc<Shared>,
    task: String,
    id: String,
    /// The create's whole metadata, attempt id included: the lookup filter.
    metadata: BTreeMap<String, String>,
}

impl Unsettled {
    fn new(
        shared: &Arc<Shared>,
        task: &str,
        attempt: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Self {
        Unsettled {
            armed: Some(Attempt {
                shared: Arc::clone(shared),
                task: task.to_string(),
                id: attempt.to_string(),
                metadata: metadata.clone(),
            }),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let Some(attempt) = self.armed.take() else {
            return;
        };
        // Futures here are not `Send`, so the check runs on this thread's
        // arbiter; outside one (the system is gone) there is nobody to run
        // it, and the shutdown sweep and the TTL remain.
        match actix_rt::Arbiter::try_current() {
            Some(arbiter) => {
                let queued = arbiter.spawn_fn(move || {
                    actix_rt::spawn(settle(attempt));
                });
                if !queued {
                    log::debug!("start attempt left unsettled: the arbiter is stopping");
                }
            }
            None => log::debug!("start attempt left unsettled: no arbiter"),
        }
    }
}

/// Looks for an unsettled attempt's instances [`SETTLE_CHECKS`] times, and
/// stops every one it sees.
async fn settle(attempt: Attempt) {
    let Attempt {
        shared,
        task,
        id: attempt,
        metadata,
    } = attempt;
    let mut wait = shared.api.request_timeout();
    for _ in 0..SETTLE_CHECKS {
        sleep(wait).await;
        wait = wait.saturating_mul(2);
        let found = match find_attempt(&shared, &metadata).await {
            Ok(found) => found,
            Err(err) => {
                log::warn!("task={task} could not look for unsettled attempt {attempt}: {err}");
                continue;
            }
        };
        if found.is_empty() {
            continue;
        }
        let ids: Vec<String> = found.into_iter().map(|i| i.id).collect();
        let (stopped, failed) = stop_all(&shared.api, &ids).await;
        for id in &stopped {
            log::info!("task={task} vm={id} of unused attempt {attempt} stopped");
        }
        if failed.is_empty() {
            // A create makes one instance; this one has been dealt with.
            return;
        }
    }
}

/// Polls the instance until it is ready, within `ready_timeout`. Transient
/// failures of a poll are ridden out until the deadline.
async fn wait_ready(
    shared: &Shared,
    task: &str,
    created: &InstanceInfo,
    created_at: Instant,
) -> Result<()> {
    let id = created.id.as_str();
    let deadline = created_at + shared.ready_timeout;
    let mut status = created.status.clone();
    let mut last_error: Option<Error> = None;
    loop {
        match status {
            InstanceStatus::Ready => return Ok(()),
            // Boot failures are usually the cloud's, not the request's, and
            // the instance is deleted before this is returned, so another
            // attempt is safe.
            InstanceStatus::Error => {
                return Err(Error::transient(
                    "the new instance failed to boot (status \"error\")",
                ))
            }
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            let why = last_error.map_or(String::new(), |e| format!("; last poll: {e}"));
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the new instance was not ready within the ready timeout of {:?} \
                     (HECATE_MORPH_READY_TIMEOUT_SECONDS; status \"{status}\"{why})",
                    shared.ready_timeout
                ),
            ));
        }
        let wait = poll_delay(shared.poll_interval, now - created_at);
        sleep(wait.min(deadline - now)).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = shared
            .api
            .request_timeout()
            .min(remaining)
            .max(Duration::from_millis(100));
        match shared.api.get_instance(id, timeout).await {
            Ok(info) => {
                if info.status != status {
                    log::debug!("task={task} vm={id} status {}", info.status);
                }
                status = info.status;
            }
            Err(err) if err.is_transient() => {
                log::debug!("task={task} vm={id} readiness poll failed, will retry: {err}");
                last_error = Some(err);
            }
            // Vanished while booting: a fresh start may well succeed.
            Err(err) if err.kind() == ErrorKind::InstanceGone => {
                let gone =
                    Error::transient(format!("the new instance disappeared while booting: {err}"));
                let gone = match err.status() {
                    Some(status) => gone.with_status(status),
                    None => gone,
                };
                return Err(gone.with_source(err));
            }
            Err(err) => return Err(err.context("polling the new instance for readiness")),
        }
    }
}

/// The orphan sweep: stops every instance tagged with `runtime_id`.
pub(super) async fn sweep_orphans(shared: &Shared, runtime_id: &str) -> Result<Vec<String>> {
    let found = shared
        .api
        .list_tagged(&[(tags::RUNTIME_ID, runtime_id)])
        .await?;
    let ids: Vec<String> = found.into_iter().map(|i| i.id).collect();
    let (stopped, failed) = stop_all(&shared.api, &ids).await;
    for id in &stopped {
        log::info!("runtime={runtime_id} vm={id} orphan stopped");
    }
    if let Some(err) = summarise_failures(&failed, &stopped) {
        return Err(err);
    }
    Ok(stopped)
}

/// Deletes each instance in turn; returns the stopped ids and the failures.
/// An instance that was already gone counts as stopped.
pub(super) async fn stop_all(
    api: &super::api::Api,
    ids: &[String],
) -> (Vec<String>, Vec<(String, Error)>) {
    let mut stopped = Vec::new();
    let mut failed = Vec::new();
    for id in ids {
        match api.delete_instance(id).await {
            Ok(_) => stopped.push(id.clone()),
            Err(err) => {
                log::warn!("vm={id} could not be stopped: {err}");
                failed.push((id.clone(), err));
            }
        }
    }
    (stopped, failed)
}

/// One error for a sweep that could not stop everything: transient only if
/// every failure was.
fn summarise_failures(failed: &[(String, Error)], stopped: &[String]) -> Option<Error> {
    let (_, first) = failed.first()?;
    let kind = if failed.iter().all(|(_, e)| e.is_transient()) {
        ErrorKind::Transient
    } else {
        first.kind()
    };
    let ids: Vec<&str> = failed.iter().map(|(id, _)| id.as_str()).collect();
    Some(Error::new(
        kind,
        format!(
            "stopped {} orphaned instance(s) but could not stop {}: {first}",
            stopped.len(),
            ids.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_start_at_the_base_interval_and_stay_within_a_tenth_of_the_age() {
        let base = Duration::from_millis(100);
        assert_eq!(poll_delay(base, Duration::ZERO), base);
        assert_eq!(poll_delay(base, Duration::from_millis(900)), base);
        assert_eq!(
            poll_delay(base, Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(poll_delay(base, Duration::from_secs(600)), MAX_POLL);
        // A base above the cap wins; a zero base does not spin.
        let slow = Duration::from_secs(5);
        assert_eq!(poll_delay(slow, Duration::from_secs(600)), slow);
        assert_eq!(poll_delay(Duration::ZERO, Duration::ZERO), MIN_POLL);
    }

    #[test]
    fn attempt_ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_attempt_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
