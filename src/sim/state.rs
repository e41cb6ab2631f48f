//! The simulator's shared state: its instances with their boot and TTL
//! timers, the counters, and the seeded fault generator.
//!
//! One mutex guards it all; every lock scope is short and synchronous.
//! Timers are evaluated lazily against the real clock (every access first
//! applies due transitions) and also by a periodic sweep, so an expired
//! instance's processes are killed even when no request comes. Killing
//! processes and removing directories happens outside the lock, through
//! [`Cleanup`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::process;
use super::{ExecMode, FaultConfig, FaultCounts, SimConfig, SimStats};

/// What the TTL does when it runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TtlAction {
    Stop,
    Pause,
}

impl TtlAction {
    pub(crate) fn parse(s: &str) -> Option<TtlAction> {
        match s {
            "stop" => Some(TtlAction::Stop),
            "pause" => Some(TtlAction::Pause),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            TtlAction::Stop => "stop",
            TtlAction::Pause => "pause",
        }
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Booting until `ready_at`; then `Error` if `fails`, else `Ready`.
    Booting {
        ready_at: Instant,
        fails: bool,
    },
    Ready,
    Paused,
    Error,
}

impl Phase {
    pub(crate) fn status(self) -> &'static str {
        match self {
            Phase::Booting { .. } => "pending",
            Phase::Ready => "ready",
            Phase::Paused => "paused",
            Phase::Error => "error",
        }
    }
}

/// An instance's TTL setting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl {
    pub(crate) seconds: Option<u64>,
    pub(crate) action: TtlAction,
    /// When it runs out; `None` once it fired or when `seconds` is `None`.
    pub(crate) expire_at: Option<(Instant, u64)>,
}

impl Ttl {
    pub(crate) fn new(seconds: Option<u64>, action: TtlAction) -> Ttl {
        let expire_at = seconds.map(|s| {
            (
                Instant::now() + Duration::from_secs(s),
                unix_now().saturating_add(s),
            )
        });
        Ttl {
            seconds,
            action,
            expire_at,
        }
    }
}

/// One simulated instance.
#[derive(Debug)]
pub(crate) struct SimInstance {
    pub(crate) id: String,
    seq: u64,
    created_unix: u64,
    snapshot_id: String,
    pub(crate) phase: Phase,
    pub(crate) ttl: Ttl,
    pub(crate) metadata: BTreeMap<String, String>,
    /// The private directory (Bash mode only).
    pub(crate) dir: Option<PathBuf>,
    /// Process groups of the commands it ran that may still have members.
    pgids: Vec<i32>,
}

impl SimInstance {
    /// The Instance object of the wire contract (§3).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "instance",
            "created": self.created_unix,
            "status": self.phase.status(),
            "spec": {"vcpus": 1, "memory": 1024, "disk_size": 10240},
            "refs": {"snapshot_id": self.snapshot_id, "image_id": "morphvm-minimal"},
            "networking": {
                "internal_ip": format!("10.0.{}.{}", (self.seq / 250) % 250, self.seq % 250 + 2),
                "http_services": [],
            },
            "ttl": {
                "ttl_seconds": self.ttl.seconds,
                "ttl_expire_at": self.ttl.expire_at.map(|(_, unix)| unix),
                "ttl_action": self.ttl.action.as_str(),
            },
            "wake_on": {"wake_on_ssh": false, "wake_on_http": false},
            "metadata": self.metadata,
        })
    }

    fn cleanup(self) -> Cleanup {
        Cleanup {
            id: self.id,
            dir: self.dir,
            pgids: self.pgids,
        }
    }
}

/// What is left to do, outside the lock, for an instance that is gone:
/// kill its processes and remove its directory.
#[derive(Debug)]
#[must_use = "an instance's processes stay alive until the cleanup runs"]
pub(crate) struct Cleanup {
    id: String,
    dir: Option<PathBuf>,
    pgids: Vec<i32>,
}

impl Cleanup {
    pub(crate) fn run(self) {
        let killed = process::kill_instance(&self.id, &self.pgids);
        if killed > 0 {
            log::debug!("sim vm={} killed {killed} processes", self.id);
        }
        if let Some(dir) = self.dir {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    log::warn!(
                        "sim vm={} could not remove {}: {err}",
                        self.id,
                        dir.display()
                    );
                }
            }
        }
    }
}

/// The faults drawn for one request. Every class is drawn every time, so the
/// sequence of draws does not depend on which faults hit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpFault {
    pub(crate) status: Option<u16>,
    pub(crate) retry_after_secs: u64,
}

/// The exec-level faults drawn for one exec request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExecFaults {
    pub(crate) vanish: bool,
    pub(crate) drop_before: bool,
    pub(crate) slow: Option<Duration>,
    pub(crate) drop_after: bool,
}

/// What an exec may do, decided under the lock.
#[derive(Debug)]
pub(crate) enum ExecAdmission {
    /// Run it; the instance's directory (Bash mode).
    Run {
        dir: Option<PathBuf>,
    },
    NotFound,
    /// The instance exists but is not ready; its status.
    NotReady(&'static str),
    /// A `vanish` fault removed the instance.
    Vanished(Cleanup),
}

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    instances: HashMap<String, SimInstance>,
    next_seq: u64,
    faults: FaultConfig,
    rng: fastrand::Rng,
    ids: fastrand::Rng,
    starts: u64,
    stops: u64,
    expirations: u64,
    execs: u64,
    fault_counts: FaultCounts,
    command_runs: HashMap<String, u64>,
    /// Boot and TTL deadlines, earliest first, so a request looks only at
    /// the instances that are due (a scan of every instance made 10,000
    /// booting instances quadratic). Entries may be stale: what is due is
    /// checked against the instance itself.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
}

impl State {
    fn new(faults: FaultConfig) -> State {
        State {
            instances: HashMap::new(),
            next_seq: 0,
            rng: fastrand::Rng::with_seed(faults.seed),
            faults,
            // Ids are not seeded: two simulators in one process must not
            // hand out the same id (it is the processes' kill marker).
            ids: fastrand::Rng::new(),
            starts: 0,
            stops: 0,
            expirations: 0,
            execs: 0,
            fault_counts: FaultCounts::default(),
            command_runs: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// Applies due boot and TTL transitions; returns the instances that are
    /// gone.
    fn tick(&mut self, now: Instant) -> Vec<Cleanup> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.deadlines.pop() {
                due.push(id);
            }
        }
        let mut expired = Vec::new();
        for id in due {
            let Some(inst) = self.instances.get_mut(&id) else {
                continue;
            };
            if let Phase::Booting { ready_at, fails } = inst.phase {
                if now >= ready_at {
                    inst.phase = if fails { Phase::Error } else { Phase::Ready };
                    log::debug!("sim vm={} is {}", inst.id, inst.phase.status());
                }
            }
            if let Some((at, _)) = inst.ttl.expire_at {
                if now >= at {
                    inst.ttl.expire_at = None;
                    match inst.ttl.action {
                        TtlAction::Stop => expired.push(inst.id.clone()),
                        TtlAction::Pause => {
                            log::info!("sim vm={} ttl ran out: paused", inst.id);
                            inst.phase = Phase::Paused;
                        }
                    }
                }
            }
        }
        expired
            .into_iter()
            .filter_map(|id| {
                log::info!("sim vm={id} ttl ran out: stopped");
                self.remove_expired(&id)
            })
            .collect()
    }

    /// Remembers a deadline at which `id` may change state.
    pub(crate) fn schedule(&mut self, at: Option<Instant>, id: &str) {
        if let Some(at) = at {
            self.deadlines.push(Reverse((at, id.to_string())));
        }
    }

    fn remove_expired(&mut self, id: &str) -> Option<Cleanup> {
        let inst = self.instances.remove(id)?;
        self.expirations += 1;
        Some(inst.cleanup())
    }

    /// Draws the HTTP-level faults of one request.
    pub(crate) fn draw_http_fault(&mut self) -> HttpFault {
        let f = self.faults.clone();
        let hit_429 = self.draw(f.error_429);
        let hit_503 = self.draw(f.error_503);
        let hit_502 = self.draw(f.error_502);
        let hit_500 = self.draw(f.error_500);
        let status = if hit_429 {
            self.fault_counts.error_429 += 1;
            Some(429)
        } else if hit_503 {
            self.fault_counts.error_503 += 1;
            Some(503)
        } else if hit_502 {
            self.fault_counts.error_502 += 1;
            Some(502)
        } else if hit_500 {
            self.fault_counts.error_500 += 1;
            Some(500)
        } else {
            None
        };
        HttpFault {
            status,
            retry_after_secs: f.retry_after_secs,
        }
    }

    /// Draws the exec-level faults of one exec request. They are counted
    /// when they take effect, see the `count_*` methods.
    pub(crate) fn draw_exec_faults(&mut self) -> ExecFaults {
        let f = self.faults.clone();
        ExecFaults {
            vanish: self.draw(f.vanish),
            drop_before: self.draw(f.drop_before),
            slow: self.draw(f.slow).then_some(f.slow_by),
            drop_after: self.draw(f.drop_after),
        }
    }

    fn draw(&mut self, rate: f64) -> bool {
        // Always consume one number so the sequence is stable.
        let x = self.rng.f64();
        rate > 0.0 && x < rate
    }

    pub(crate) fn count_drop_before(&mut self) {
        self.fault_counts.drop_before += 1;
    }

    pub(crate) fn count_drop_after(&mut self) {
        self.fault_counts.drop_after += 1;
    }

    pub(crate) fn count_slow(&mut self) {
        self.fault_counts.slow += 1;
    }

    /// Creates an instance.
    pub(crate) fn create(
        &mut self,
        snapshot_id: String,
        metadata: BTreeMap<String, String>,
        ttl: Ttl,
        boot_time: Duration,
        dir_root: Option<&std::path::Path>,
    ) -> std::io::Result<&SimInstance> {
        let fails = self.draw(self.faults.boot_error);
        if fails {
            self.fault_counts.boot_error += 1;
        }
        let id = loop {
            let suffix: String = (0..8)
                .map(|_| {
                    let n = self.ids.u8(0..36);
                    char::from_digit(u32::from(n), 36).unwrap_or('x')
                })
                .collect();
            let id = format!("morphvm_{suffix}");
            if !self.instances.contains_key(&id) {
                break id;
            }
        };
        let dir = match dir_root {
            Some(root) => {
                let dir = root.join(&id);
                std::fs::create_dir_all(&dir)?;
                Some(dir)
            }
            None => None,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.starts += 1;
        let ready_at = Instant::now() + boot_time;
        self.schedule(Some(ready_at), &id);
        self.schedule(ttl.expire_at.map(|(at, _)| at), &id);
        let inst = SimInstance {
            id: id.clone(),
            seq,
            created_unix: unix_now(),
            snapshot_id,
            phase: Phase::Booting { ready_at, fails },
            ttl,
            metadata,
            dir,
            pgids: Vec::new(),
        };
        Ok(self.instances.entry(id).or_insert(inst))
    }

    pub(crate) fn get(&self, id: &str) -> Option<&SimInstance> {
        self.instances.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut SimInstance> {
        self.instances.get_mut(id)
    }

    /// Instances in creation order whose metadata has every `(key, value)`.
    pub(crate) fn list(&self, filters: &[(String, String)]) -> Vec<&SimInstance> {
        let mut found: Vec<&SimInstance> = self
            .instances
            .values()
            .filter(|inst| {
                filters
                    .iter()
                    .all(|(k, v)| inst.metadata.get(k).is_some_and(|have| have == v))
            })
            .collect();
        found.sort_by_key(|inst| inst.seq);
        found
    }

    /// Removes an instance on request (DELETE).
    pub(crate) fn delete(&mut self, id: &str) -> Option<Cleanup> {
        let inst = self.instances.remove(id)?;
        self.stops += 1;
        Some(inst.cleanup())
    }

    /// Removes an instance as if its TTL stopped it.
    pub(crate) fn expire(&mut self, id: &str) -> Option<Cleanup> {
        self.remove_expired(id)
    }

    /// Decides whether an exec may run, applying a `vanish` fault.
    pub(crate) fn admit_exec(&mut self, id: &str, vanish: bool) -> ExecAdmission {
        let Some(inst) = self.instances.get(id) else {
            return ExecAdmission::NotFound;
        };
        if vanish {
            self.fault_counts.vanish += 1;
            log::info!("sim vm={id} vanished (fault)");
            return match self.remove_expired(id) {
                Some(cleanup) => ExecAdmission::Vanished(cleanup),
                None => ExecAdmission::NotFound,
            };
        }
        match inst.phase {
            Phase::Ready => ExecAdmission::Run {
                dir: inst.dir.clone(),
            },
            other => ExecAdmission::NotReady(other.status()),
        }
    }

    /// Records that a command ran.
    pub(crate) fn record_run(&mut self, text: &str) {
        self.execs += 1;
        *self.command_runs.entry(text.to_owned()).or_insert(0) += 1;
    }

    /// Remembers a command's process group so that stopping the instance
    /// kills it. Returns `false` if the instance is gone (the caller kills
    /// the group itself).
    pub(crate) fn add_pgid(&mut self, id: &str, pgid: i32) -> bool {
        match self.instances.get_mut(id) {
            Some(inst) => {
                // Forget groups with no members left, so that a recycled
                // pid is never killed by mistake.
                inst.pgids.retain(|pg| process::group_alive(*pg));
                inst.pgids.push(pgid);
                true
            }
            None => false,
        }
    }

    fn prune_pgids(&mut self) {
        for inst in self.instances.values_mut() {
            inst.pgids.retain(|pg| process::group_alive(*pg));
        }
    }

    fn drain_all(&mut self) -> Vec<Cleanup> {
        self.instances
            .drain()
            .map(|(_, inst)| inst.cleanup())
            .collect()
    }

    fn stats(&self) -> SimStats {
        SimStats {
            live_instances: self.instances.len(),
            starts: self.starts,
            stops: self.stops,
            expirations: self.expirations,
            execs: self.execs,
            faults_injected: self.fault_counts.total(),
            faults: self.fault_counts,
        }
    }
}

/// The state shared by the server's workers and the [`SimServer`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    /// The server's own directory; instance directories live inside.
    pub(crate) dir: PathBuf,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> std::io::Result<Shared> {
        let dir = config.root.join(format!(
            "hecate-sim-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        let state = Mutex::new(State::new(config.faults.clone()));
        Ok(Shared { config, dir, state })
    }

    /// Where new instances get their directory, if commands really run.
    pub(crate) fn instance_root(&self) -> Option<&std::path::Path> {
        match self.config.exec_mode {
            ExecMode::Bash => Some(&self.dir),
            ExecMode::Echo => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock cannot leave the state half-updated in a
        // way that matters to a simulator; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state after applying due transitions, then cleans up
    /// what expired, outside the lock.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, expired) = {
            let mut state = self.lock();
            let expired = state.tick(Instant::now());
            (f(&mut state), expired)
        };
        for cleanup in expired {
            cleanup.run();
        }
        result
    }

    /// The periodic sweep: transitions, expiry, forgetting empty groups.
    pub(crate) fn sweep(&self) {
        self.with(|state| state.prune_pgids());
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.with(|state| state.stats())
    }

    pub(crate) fn command_runs(&self, matches: impl Fn(&str) -> bool) -> u64 {
        self.with(|state| {
            state
                .command_runs
                .iter()
                .filter(|(text, _)| matches(text))
                .map(|(_, n)| *n)
                .sum()
        })
    }

    pub(crate) fn instance_status(&self, id: &str) -> Option<String> {
        self.with(|state| state.get(id).map(|inst| inst.phase.status().to_owned()))
    }

    pub(crate) fn instance_dir(&self, id: &str) -> Option<PathBuf> {
        self.with(|state| state.get(id).and_then(|inst| inst.dir.clone()))
    }

    pub(crate) fn expire(&self, id: &str) -> bool {
        match self.with(|state| state.expire(id)) {
            Some(cleanup) => {
                log::info!("sim vm={id} expired (test hook)");
                cleanup.run();
                true
            }
            None => false,
        }
    }

    pub(crate) fn set_faults(&self, mut faults: FaultConfig) {
        for rate in [
            &mut faults.error_500,
            &mut faults.error_502,
            &mut faults.error_503,
            &mut faults.error_429,
            &mut faults.drop_before,
            &mut faults.drop_after,
            &mut faults.slow,
            &mut faults.boot_error,
            &mut faults.vanish,
        ] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        self.with(|state| {
            state.rng = fastrand::Rng::with_seed(faults.seed);
            state.faults = faults;
        });
    }

    /// Kills every instance's processes and removes the server's directory.
    /// Safe to call more than once.
    pub(crate) fn shutdown(&self) {
        let all = self.lock().drain_all();
        for cleanup in all {
            cleanup.run();
        }
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                log::warn!("sim could not remove {}: {err}", self.dir.display());
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(FaultConfig::default())
    }

    #[test]
    fn server_handle_and_config_cross_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::sim::SimServer>();
        assert_send_sync::<crate::sim::SimConfig>();
        assert_send_sync::<Shared>();
    }

    #[test]
    fn instance_is_pending_until_boot_time_then_ready() {
        let mut st = state();
        let id = st
            .create(
                "snap".into(),
                BTreeMap::new(),
                Ttl::new(None, TtlAction::Stop),
                Duration::from_secs(5),
                None,
            )
            .expect("create")
            .id
            .clone();
        let now = Instant::now();
        assert!(st.tick(now).is_empty());
        assert_eq!(st.get(&id).map(|i| i.phase.status()), Some("pending"));
        assert!(st.tick(now + Duration::from_secs(6)).is_empty());
        assert_eq!(st.get(&id).map(|i| i.phase.status()), Some("ready"));
    }

    #[test]
    fn ttl_stop_removes_and_ttl_pause_pauses() {
        let mut st = state();
        let stop = st
            .create(
                "snap".into(),
                BTreeMap::new(),
                Ttl::new(Some(10), TtlAction::Stop),
                Duration::ZERO,
                None,
            )
            .expect("create")
            .id
            .clone();
        let pause = st
            .create(
                "snap".into(),
                BTreeMap::new(),
                Ttl::new(Some(10), TtlAction::Pause),
                Duration::ZERO,
                None,
            )
            .expect("create")
            .id
            .clone();
        let gone = st.tick(Instant::now() + Duration::from_secs(11));
        assert_eq!(gone.len(), 1);
        assert!(st.get(&stop).is_none());
        assert_eq!(st.get(&pause).map(|i| i.phase.status()), Some("paused"));
        assert_eq!(st.stats().expirations, 1);
    }

    #[test]
    fn fault_draws_repeat_with_the_same_seed() {
        let faults = FaultConfig {
            error_500: 0.5,
            seed: 42,
            ..FaultConfig::default()
        };
        let draw = |n| {
            let mut st = State::new(faults.clone());
            (0..n)
                .map(|_| st.draw_http_fault().status)
                .collect::<Vec<_>>()
        };
        let a = draw(64);
        assert_eq!(a, draw(64));
        assert!(a.contains(&Some(500)) && a.contains(&None));
    }

    #[test]
    fn list_filters_on_every_metadata_pair() {
        let mut st = state();
        for (task, owner) in [("t1", "a"), ("t2", "a"), ("t1", "b")] {
            let md = BTreeMap::from([
                ("task_id".to_owned(), task.to_owned()),
                ("owner".to_owned(), owner.to_owned()),
            ]);
            let _ = st
                .create(
                    "snap".into(),
                    md,
                    Ttl::new(None, TtlAction::Stop),
                    Duration::ZERO,
                    None,
                )
                .expect("create");
        }
        let f = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(st.list(&[]).len(), 3);
        assert_eq!(st.list(&f(&[("task_id", "t1")])).len(), 2);
        assert_eq!(st.list(&f(&[("task_id", "t1"), ("owner", "b")])).len(), 1);
        assert_eq!(st.list(&f(&[("task_id", "nope")])).len(), 0);
    }
}
