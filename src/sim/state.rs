//! The simulator's shared state: the instance table with its deadline heap
//! of boot and TTL timers, the counters, and the fault generator
//! ([`faults`]); one instance and its cleanup are in [`instance`].
//!
//! One mutex guards it all; every lock scope is short and synchronous.
//! Timers are evaluated lazily against the real clock (every access first
//! applies due transitions) and also by a periodic sweep, so an expired
//! instance's processes are killed even when no request comes. Killing
//! processes and removing directories happens outside the lock, through
//! [`Cleanup`].

mod faults;
mod instance;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use self::faults::FaultDice;
pub(crate) use self::instance::{unix_now, Cleanup, Phase, SimInstance, Ttl, TtlAction};
use super::process;
use super::{ExecMode, FaultConfig, SimConfig, SimStats};

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
    /// The injected faults: what hits each request, and the counts.
    pub(crate) faults: FaultDice,
    ids: fastrand::Rng,
    starts: u64,
    stops: u64,
    expirations: u64,
    execs: u64,
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
            faults: FaultDice::new(faults),
            // Ids are not seeded: two simulators in one process must not
            // hand out the same id (it is the processes' kill marker).
            ids: fastrand::Rng::new(),
            starts: 0,
            stops: 0,
            expirations: 0,
            execs: 0,
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

    /// Creates an instance.
    pub(crate) fn create(
        &mut self,
        snapshot_id: String,
        metadata: BTreeMap<String, String>,
        ttl: Ttl,
        boot_time: Duration,
        dir_root: Option<&std::path::Path>,
    ) -> std::io::Result<&SimInstance> {
        let fails = self.faults.draw_boot_error();
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
            self.faults.count_vanish();
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
            faults_injected: self.faults.counts().total(),
            faults: self.faults.counts(),
        }
    }
}

/// The state shared by the server's workers and the
/// [`SimServer`](crate::sim::SimServer) handle.
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

    pub(crate) fn command_run_counts(&self) -> Vec<(String, u64)> {
        self.with(|state| {
            state
                .command_runs
                .iter()
                .map(|(text, n)| (text.clone(), *n))
                .collect()
        })
    }

    pub(crate) fn forget_command_runs(&self) {
        self.with(|state| state.command_runs = HashMap::new());
    }

    pub(crate) fn instance_status(&self, id: &str) -> Option<String> {
        self.with(|state| state.get(id).map(|inst| inst.phase.status().to_owned()))
    }

    pub(crate) fn instance_snapshot(&self, id: &str) -> Option<String> {
        self.with(|state| state.get(id).map(|inst| inst.snapshot_id.clone()))
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

    pub(crate) fn set_faults(&self, faults: FaultConfig) {
        self.with(|state| state.faults.set(faults));
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
