//! A MorphCloud simulator: a loopback HTTP server speaking the MorphCloud
//! instance API (the wire contract in `shared/reference/morphcloud-api.md`),
//! for tests, benchmarks and dry runs without paying for VMs.
//!
//! This module owns the simulator's public face: its configuration
//! ([`SimConfig`], [`FaultConfig`]), the running server ([`SimServer`]) with
//! its test hooks and counters ([`SimStats`]), and the `hecate sim` command
//! ([`SimArgs`], [`run_cli`]). An "instance" is a private directory under
//! [`SimConfig::root`] in which commands run with `/bin/bash -c`
//! ([`ExecMode::Bash`]), or nothing at all ([`ExecMode::Echo`]).
//!
//! # Layout
//!
//! - `sim/state.rs`: the shared state (instances, timers, counters, fault
//!   draws) behind one mutex that is never held across an await.
//! - `sim/routes.rs`: the actix-web routes, auth and HTTP-level faults.
//! - `sim/process.rs`: running a command, reading its output, and killing
//!   every process of an instance.
//! - `sim/cli.rs`: `hecate sim`.
//!
//! # Semantics worth knowing
//!
//! - The server runs on its own thread with its own actix system, so it works
//!   from any runtime and on a real clock (boot time and TTLs are real time).
//! - `POST /instance` always answers `pending`; the instance is `ready` once
//!   [`SimConfig::boot_time`] has passed, so with a boot time of zero the
//!   first `GET` (or an `exec` right away) sees it ready.
//! - HTTP error faults (500/502/503/429) apply to every authenticated request
//!   and happen before the request has any effect. `drop_before`,
//!   `drop_after`, `slow` and `vanish` apply to exec (plain and SSE) only;
//!   `slow` delays before the command runs. `boot_error` is drawn at start.
//! - `create_lost` and `create_late` apply to `POST /instance` only, drawn
//!   from their own seeded sequence: the instance is created, but the answer
//!   is dropped, or comes after `create_late_by` (the instance is created
//!   then, whether or not the client still waits).
//! - A dropped connection is a `shutdown(2)` of the request's socket: the
//!   client sees end-of-file without any response.
//! - Pausing leaves the instance's processes running; stopping (DELETE, TTL
//!   `stop`, [`SimServer::expire`], [`SimServer::stop`]) kills them and
//!   removes the instance's directory.

#[cfg(feature = "cli")]
mod cli;
mod process;
mod routes;
mod state;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tokio::sync::oneshot;

#[cfg(feature = "cli")]
pub use cli::{run_cli, SimArgs};

use state::Shared;

/// How a simulated instance runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecMode {
    /// Run it with `/bin/bash -c` in the instance's private directory.
    #[default]
    Bash,
    /// Run nothing: exit code 0, stdout is the command text and a newline.
    Echo,
}

/// Which of the two event-stream forms of
/// `shared/reference/morphcloud-api.md` §4.2 `POST /instance/{id}/exec/sse`
/// answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SseFormat {
    /// What the official SDK reads: `data: {"type": "stdout", "content":
    /// "…"}` events, then `data: {"type": "exit_code", …}` and
    /// `data: [DONE]`.
    #[default]
    Json,
    /// The documented named events with plain-text data: `event: stdout`
    /// (a `data:` line per line of output), `event: stderr`, and
    /// `event: exit` with the exit code. A carriage return in the output
    /// ends an SSE line, so clients see it as a newline.
    Documented,
}

/// Fault injection rates. Each rate is a probability in `0.0..=1.0`, drawn
/// independently per request from a generator seeded with [`seed`](Self::seed).
/// The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Answer `500 Internal Server Error` (any route).
    pub error_500: f64,
    /// Answer `502 Bad Gateway` (any route).
    pub error_502: f64,
    /// Answer `503 Service Unavailable` with `Retry-After` (any route).
    pub error_503: f64,
    /// Answer `429 Too Many Requests` with `Retry-After` (any route).
    pub error_429: f64,
    /// The `Retry-After` value, in seconds, sent with 429 and 503.
    pub retry_after_secs: u64,
    /// Exec: close the connection without an answer, before running the
    /// command (so the request has no effect).
    pub drop_before: f64,
    /// Exec: run the command, then close the connection without an answer.
    pub drop_after: f64,
    /// Exec: wait [`slow_by`](Self::slow_by) before running the command.
    pub slow: f64,
    /// How long a `slow` fault delays.
    pub slow_by: Duration,
    /// Start: the instance goes from `pending` to `error` instead of `ready`.
    pub boot_error: f64,
    /// Exec: the instance disappears first (as if its TTL stopped it), and
    /// the exec gets a 404.
    pub vanish: f64,
    /// Start: the instance is created, then the connection is closed
    /// without an answer (a lost create answer).
    pub create_lost: f64,
    /// Start: the request is held for [`create_late_by`](Self::create_late_by)
    /// before the instance is created and answered, as when a request waits
    /// in a full listen queue past its client's deadline.
    pub create_late: f64,
    /// How long a `create_late` fault holds the request.
    pub create_late_by: Duration,
    /// Seed of the fault generator, so runs are repeatable.
    pub seed: u64,
    /// A hostile server or proxy: every answer of one kind quotes the
    /// request's headers (the API key included). Not drawn: always on.
    pub echo_headers: Option<EchoHeaders>,
    /// Every answer's body is sent one byte per this interval. Not drawn:
    /// always on.
    pub trickle: Option<Duration>,
}

/// Where [`FaultConfig::echo_headers`] puts the request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoHeaders {
    /// Every request gets `400` with the headers in `detail`.
    ErrorBody,
    /// Every request gets `200` with the headers as plain (non-JSON) text.
    NonJson,
    /// Every request gets `200` with an instance whose `id` is an object
    /// holding the headers.
    MalformedId,
    /// Execs run nothing and answer `200` with the headers as stdout and
    /// stderr; other routes answer as usual.
    ExecOutput,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_500: 0.0,
            error_502: 0.0,
            error_503: 0.0,
            error_429: 0.0,
            retry_after_secs: 1,
            drop_before: 0.0,
            drop_after: 0.0,
            slow: 0.0,
            slow_by: Duration::from_secs(2),
            boot_error: 0.0,
            vanish: 0.0,
            create_lost: 0.0,
            create_late: 0.0,
            create_late_by: Duration::from_secs(2),
            seed: 0,
            echo_headers: None,
            trickle: None,
        }
    }
}

impl FaultConfig {
    /// The number of fault kinds that [`spread`](Self::spread) shares a rate
    /// between. The create faults (`create_lost`, `create_late`) are not
    /// among them: they are set on their own, so that a spread keeps the
    /// fault mix (and the seeded sequence) it always had.
    pub const KINDS: usize = 9;

    /// No faults at all (the same as `Default`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Spreads one overall `rate` evenly over all [`KINDS`](Self::KINDS)
    /// fault kinds (each gets `rate / KINDS`), keeping the other settings of
    /// `self`.
    #[must_use]
    pub fn spread(mut self, rate: f64) -> Self {
        let each = rate.clamp(0.0, 1.0) / Self::KINDS as f64;
        self.error_500 = each;
        self.error_502 = each;
        self.error_503 = each;
        self.error_429 = each;
        self.drop_before = each;
        self.drop_after = each;
        self.slow = each;
        self.boot_error = each;
        self.vanish = each;
        self
    }

    /// Checks that every rate is a probability.
    pub fn validate(&self) -> crate::Result<()> {
        let rates = [
            ("error_500", self.error_500),
            ("error_502", self.error_502),
            ("error_503", self.error_503),
            ("error_429", self.error_429),
            ("drop_before", self.drop_before),
            ("drop_after", self.drop_after),
            ("slow", self.slow),
            ("boot_error", self.boot_error),
            ("vanish", self.vanish),
            ("create_lost", self.create_lost),
            ("create_late", self.create_late),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(crate::Error::config(format!(
                    "fault rate {name} = {rate} is not within 0.0..=1.0"
                )));
            }
        }
        Ok(())
    }
}

/// A fresh random API key (`sim-` and 32 hex digits from the kernel's
/// random source), what `hecate sim` uses unless given one.
pub fn random_api_key() -> crate::error::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| crate::error::Error::internal(format!("cannot read /dev/urandom: {e}")))?;
    let mut key = String::with_capacity(4 + 32);
    key.push_str("sim-");
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    Ok(key)
}

/// How to run a [`SimServer`].
#[derive(Clone)]
pub struct SimConfig {
    /// The API key clients must send as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// How long an instance stays `pending` before it is `ready`.
    pub boot_time: Duration,
    /// Whether commands really run.
    pub exec_mode: ExecMode,
    /// Where the server makes its directory (one private directory per
    /// instance inside it). The server's own directory is removed on stop.
    pub root: PathBuf,
    /// Fault injection; change it later with [`SimServer::set_faults`].
    pub faults: FaultConfig,
    /// The port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// actix-web worker threads.
    pub workers: usize,
    /// The form of the streaming exec's events.
    pub sse_format: SseFormat,
}

impl Default for SimConfig {
    /// The well-known key `test-key`, for in-process tests whose server
    /// lives only as long as the test. A simulator other local users can
    /// reach for longer (`hecate sim`) uses [`random_api_key`].
    fn default() -> Self {
        SimConfig {
            api_key: "test-key".to_owned(),
            boot_time: Duration::ZERO,
            exec_mode: ExecMode::Bash,
            root: std::env::temp_dir(),
            faults: FaultConfig::default(),
            port: 0,
            workers: 1,
            sse_format: SseFormat::Json,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &"[redacted]")
            .field("boot_time", &self.boot_time)
            .field("exec_mode", &self.exec_mode)
            .field("root", &self.root)
            .field("faults", &self.faults)
            .field("port", &self.port)
            .field("workers", &self.workers)
            .field("sse_format", &self.sse_format)
            .finish()
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    /// 500 answers.
    pub error_500: u64,
    /// 502 answers.
    pub error_502: u64,
    /// 503 answers.
    pub error_503: u64,
    /// 429 answers.
    pub error_429: u64,
    /// Connections dropped before running the command.
    pub drop_before: u64,
    /// Connections dropped after running the command.
    pub drop_after: u64,
    /// Delayed execs.
    pub slow: u64,
    /// Instances that failed to boot.
    pub boot_error: u64,
    /// Instances that vanished before an exec.
    pub vanish: u64,
    /// Creates whose answer was dropped.
    pub create_lost: u64,
    /// Creates held before being done (counted when the hold begins, so a
    /// test knows how many creates are still to land).
    pub create_late: u64,
}

impl FaultCounts {
    /// The sum over all kinds.
    pub fn total(&self) -> u64 {
        self.error_500
            + self.error_502
            + self.error_503
            + self.error_429
            + self.drop_before
            + self.drop_after
            + self.slow
            + self.boot_error
            + self.vanish
            + self.create_lost
            + self.create_late
    }
}

/// A snapshot of the simulator's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimStats {
    /// Instances that exist now (any status).
    pub live_instances: usize,
    /// Instances created by `POST /instance`.
    pub starts: u64,
    /// Instances removed by `DELETE /instance/{id}`.
    pub stops: u64,
    /// Instances removed by their TTL (action `stop`), by a `vanish` fault
    /// or by [`SimServer::expire`].
    pub expirations: u64,
    /// Commands run (including those whose answer was then dropped).
    pub execs: u64,
    /// All faults injected, of every kind.
    pub faults_injected: u64,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
}

/// A running simulator on 127.0.0.1.
///
/// Dropping it without [`stop`](Self::stop) still stops the server and
/// kills the instances' processes, best effort.
pub struct SimServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    handle: ServerHandle,
    finished: Option<oneshot::Receiver<()>>,
    stopped: bool,
}

impl fmt::Debug for SimServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SimServer {
    /// Starts a simulator on its own thread and returns once it listens on
    /// 127.0.0.1 ([`SimConfig::port`], 0 for any free port). Works from any
    /// async runtime.
    pub async fn start(config: SimConfig) -> std::io::Result<SimServer> {
        config
            .faults
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let shared = Arc::new(Shared::new(config)?);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (finished_tx, finished_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("hecate-sim".to_owned())
            .spawn(move || {
                routes::serve(thread_shared, ready_tx);
                let _ = finished_tx.send(());
            })?;
        let (addr, handle) = match ready_rx.await {
            Ok(Ok(bound)) => bound,
            Ok(Err(err)) => {
                shared.shutdown();
                return Err(err);
            }
            Err(_) => {
                shared.shutdown();
                return Err(std::io::Error::other(
                    "simulator thread ended before binding",
                ));
            }
        };
        log::info!("sim listening on http://{addr}/api");
        Ok(SimServer {
            shared,
            addr,
            handle,
            finished: Some(finished_rx),
            stopped: false,
        })
    }

    /// The base URL a client uses: `http://127.0.0.1:PORT/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key clients must send.
    pub fn api_key(&self) -> &str {
        &self.shared.config.api_key
    }

    /// A snapshot of the counters (after applying any due boot or TTL
    /// transitions).
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// How many times a command with exactly this text ran. The text is what
    /// the client sent (a multi-element command joined with spaces).
    pub fn command_runs(&self, command: &str) -> u64 {
        self.shared.command_runs(|text| text == command)
    }

    /// How many times commands whose text contains `needle` ran, summed.
    pub fn command_runs_containing(&self, needle: &str) -> u64 {
        self.shared.command_runs(|text| text.contains(needle))
    }

    /// Every command text that ran, with how many times it ran: one pass
    /// for a caller that counts many commands (a load test), where calling
    /// [`command_runs_containing`](Self::command_runs_containing) for each
    /// would scan every text each time.
    pub fn command_run_counts(&self) -> Vec<(String, u64)> {
        self.shared.command_run_counts()
    }

    /// Forgets the record of command texts (the counts above), for a caller
    /// that measures its own memory with the simulator in-process.
    pub fn forget_command_runs(&self) {
        self.shared.forget_command_runs();
    }

    /// The status the server would report for an instance now (`pending`,
    /// `ready`, `paused`, `error`), or `None` if it does not exist.
    pub fn instance_status(&self, instance_id: &str) -> Option<String> {
        self.shared.instance_status(instance_id)
    }

    /// The private directory of an instance (Bash mode), if it exists.
    pub fn instance_dir(&self, instance_id: &str) -> Option<PathBuf> {
        self.shared.instance_dir(instance_id)
    }

    /// The directory the server keeps its instances in (removed on stop).
    pub fn root_dir(&self) -> PathBuf {
        self.shared.dir.clone()
    }

    /// Test hook: stops the instance now as if its TTL ran out (it
    /// disappears, its processes are killed). Returns whether it existed.
    pub fn expire(&self, instance_id: &str) -> bool {
        self.shared.expire(instance_id)
    }

    /// Replaces the fault rates (and reseeds the generator) for the requests
    /// that follow. Rates outside `0.0..=1.0` are clamped.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.shared.set_faults(faults);
    }

    /// Stops the server, kills every instance's processes and removes the
    /// server's directory.
    pub async fn stop(mut self) {
        self.stopped = true;
        self.handle.stop(false).await;
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
        self.shared.shutdown();
        log::info!("sim stopped http://{}/api", self.addr);
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // The stop command is sent when `stop` is called; the returned future
        // only waits for it, so dropping it is fine here.
        drop(self.handle.stop(false));
        self.shared.shutdown();
    }
}
