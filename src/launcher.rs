//! The local backend's process launcher: a small per-instance process that
//! starts every command of one local instance and can later find and kill
//! every process a command started, wherever it went. It owns the launcher
//! process (`hecate __launcher`), its control protocol, and the runtime's
//! handle on it ([`Launcher`]).
//!
//! # Why a separate process
//!
//! Spawning commands straight from the runtime leaves three holes: a
//! command can read the runtime's environment (API keys) through
//! `/proc/$PPID/environ`; orphans of a command are re-parented outside the
//! runtime's reach; and finding a command's processes by marker variables
//! fails for daemons that rewrite their environment, processes that are not
//! dumpable, or chains that keep forking ("pid hopping"). The launcher
//! closes them:
//!
//! - It is spawned on std's fast path (absolute program, empty
//!   environment, its own process group): it holds **no secret**, so
//!   `/proc/$PPID/environ` of a command shows nothing of the runtime's.
//! - It is a **child subreaper** (`PR_SET_CHILD_SUBREAPER`): every orphan
//!   of a command comes back to it, never to the runtime or init, and it
//!   reaps everything. So every process a command started is a descendant
//!   of the launcher until it dies.
//! - Each command gets its **own session** (`setsid`) and, where the
//!   machine lets us create one, its **own cgroup**
//!   (`<mount>/hecate/<instance id>/<command id>`): cgroup v2 where a
//!   writable unified hierarchy with `cgroup.kill` exists (Linux ≥ 5.14),
//!   else the v1 `freezer` (and `pids`) hierarchies. A cgroup cannot be
//!   left by forking, `setsid`, rewriting `argv`/`environ`, or becoming
//!   non-dumpable.
//! - **Kill order** for a command: its cgroup (v2: `cgroup.kill`; v1:
//!   freeze, SIGKILL every pid, thaw, until empty), then its tree among
//!   the launcher's descendants (the main process's descendants and its
//!   session), then the marker sweep (`HECATE_EXEC_ID=<instance>.<id>`) as
//!   the last resort. Stopping the instance kills every command cgroup,
//!   then **every descendant** of the launcher, then the instance marker,
//!   and removes the instance cgroups.
//! - Each command loses the capabilities a root runtime would otherwise
//!   pass on ([`DROPPED_CAPABILITIES`]: `CAP_SYS_PTRACE`, `CAP_SYS_ADMIN`,
//!   `CAP_SYS_MODULE`, `CAP_SYS_RAWIO`, `CAP_DAC_READ_SEARCH`,
//!   `CAP_SYS_BOOT`, `CAP_MKNOD`, ...) from all five sets and runs with
//!   `PR_SET_NO_NEW_PRIVS` (no setuid escalation). With
//!   [`harden_runtime_process`] the runtime is not dumpable, so a command
//!   without `CAP_SYS_PTRACE` cannot read `/proc/<runtime>/environ` or
//!   ptrace it; the launcher makes itself non-dumpable the same way.
//!   (A root runtime is out of its commands' reach even without it: the
//!   kernel lets a process read another's environment or memory only if
//!   it holds all of the other's capabilities, and commands lack some.
//!   Hardening is what protects a runtime and commands of one ordinary
//!   user.)
//! - Its lifetime is the runtime's and its control socket's: when the
//!   runtime dies (`PR_SET_PDEATHSIG`, checked against the `getppid` race
//!   and against the spawning *thread* ending) or the socket reaches end
//!   of stream (the [`Launcher`] was dropped), it kills everything and
//!   exits. Each command's main process also dies with the launcher.
//!
//! # What needs what
//!
//! - Cgroups need write access to a hierarchy: root for `<mount>/hecate/`,
//!   or a delegated v2 subtree (then the cgroups go under the process's
//!   own cgroup, where `hecate gc` does not look). Without any, commands
//!   are tracked by descent and markers: a command's orphan that started
//!   a new session can then be attributed to that command only by its
//!   marker, so a daemon that both left the session and overwrote its
//!   environment survives a per-command kill; stopping the instance (or
//!   [`Launcher::kill_all`]) still kills it, as it kills every descendant.
//! - Dropping bounding-set capabilities needs `CAP_SETPCAP` (root); an
//!   unprivileged runtime has none to pass on.
//! - A root command that deliberately moves itself to another cgroup
//!   (it owns the cgroup files) or kills its launcher is not contained;
//!   the launcher protects against accidental escapes and secret leaks,
//!   not against a hostile root. Leftovers of a dead launcher are removed
//!   by [`remove_leftover_cgroups`].
//!
//! # Using it
//!
//! The `hecate` binary calls [`run_if_requested`] first thing in `main`;
//! an embedder does the same in its own `main`, or points
//! [`LauncherConfig::program`] (or `HECATE_LAUNCHER`) at a `hecate` binary.
//! Then, per instance:
//!
//! ```no_run
//! # async fn demo() -> hecate::Result<()> {
//! use hecate::launcher::{CommandSpec, Launcher, LauncherConfig};
//! let launcher = Launcher::start(&LauncherConfig::default(), "inst-1").await?;
//! let cmd = launcher
//!     .spawn(CommandSpec::shell("sleep 100 & echo started").env("PATH", "/usr/bin:/bin"))
//!     .await?;
//! let status = cmd.exit.await?;
//! launcher.kill(cmd.id).await?; // the background sleep too
//! launcher.stop().await?;
//! # let _ = status; Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`proto`]: messages and framing.
//! - [`sandbox`]: namespaces and limits around the launcher
//!   ([`LauncherConfig::sandbox`]).
//! - `client`: [`Launcher`], the runtime's async handle.
//! - `server`: the launcher's poll loop; `spawn`: fork and exec;
//!   `cgroup`: the cgroup tree; `procs`: `/proc` scans; `sys`: libc calls.

mod cgroup;
mod client;
mod command;
mod procs;
pub mod proto;
pub mod sandbox;
mod server;
mod spawn;
mod sys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use cgroup::{remove_leftover_cgroups, LeftoverReport};
pub(crate) use client::errno_kind;
pub use client::Launcher;
pub use command::{CommandSpec, Exit, Spawned};
pub use sys::DROPPED_CAPABILITIES;

use crate::{Error, Result};

/// The hidden first argument that turns the `hecate` binary into a
/// launcher.
pub const LAUNCHER_ARG: &str = "__launcher";
/// The environment variable naming a launcher-capable binary.
pub const LAUNCHER_ENV: &str = "HECATE_LAUNCHER";
/// The marker variable every command of an instance carries
/// (`HECATE_INSTANCE_ID=<instance id>`).
pub const INSTANCE_MARKER: &str = "HECATE_INSTANCE_ID";
/// The marker variable naming one command
/// (`HECATE_EXEC_ID=<instance id>.<command id>`).
pub const EXEC_MARKER: &str = "HECATE_EXEC_ID";

/// Set once this process called [`run_if_requested`]: its own executable
/// can then serve as the launcher.
static LAUNCHER_CAPABLE: AtomicBool = AtomicBool::new(false);

/// If this process was started as a launcher (`<exe> __launcher ...`),
/// runs the launcher and exits the process; otherwise returns at once,
/// remembering that the current executable can be a launcher.
///
/// Call it first thing in `main`, before any thread starts (the launcher
/// must be single-threaded) and before logging is set up.
pub fn run_if_requested() {
    LAUNCHER_CAPABLE.store(true, Ordering::SeqCst);
    let mut args = std::env::args_os();
    let _exe = args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new(LAUNCHER_ARG)) {
        return;
    }
    let code = server::main(args.collect());
    std::process::exit(code);
}

/// Makes the runtime process non-dumpable (`PR_SET_DUMPABLE` 0), so that a
/// command running as the same user but without `CAP_SYS_PTRACE` (the
/// launcher drops it) cannot read `/proc/<runtime pid>/environ` or
/// `/proc/<runtime pid>/mem`, or ptrace the runtime. Call it once when the
/// local backend starts (a config switch may opt out).
///
/// Side effects: no core dumps; same-user debuggers cannot attach; the
/// runtime's `/proc/<pid>` files become owned by root. It lasts until the
/// process execs.
pub fn harden_runtime_process() -> Result<()> {
    sys::prctl(libc::PR_SET_DUMPABLE, 0)
        .map_err(|e| Error::internal("cannot make the runtime non-dumpable").with_source(e))
}

/// The value of [`EXEC_MARKER`] for command `id` of `instance`.
pub fn exec_marker_value(instance: &str, id: u64) -> String {
    format!("{instance}.{id}")
}

/// Which cgroup hierarchies the launcher may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// cgroup v2 if usable, else v1 freezer/pids, else none.
    #[default]
    Auto,
    /// cgroup v2 only.
    V2,
    /// cgroup v1 (freezer, pids) only.
    V1,
    /// No cgroups: descent and markers only.
    Off,
}

impl CgroupMode {
    /// The argument form.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::Auto => "auto",
            CgroupMode::V2 => "v2",
            CgroupMode::V1 => "v1",
            CgroupMode::Off => "off",
        }
    }

    /// Parses [`CgroupMode::as_str`]'s form.
    pub fn parse(s: &str) -> Option<CgroupMode> {
        Some(match s {
            "auto" => CgroupMode::Auto,
            "v2" => CgroupMode::V2,
            "v1" => CgroupMode::V1,
            "off" => CgroupMode::Off,
            _ => return None,
        })
    }
}

/// How the runtime starts launchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LauncherConfig {
    /// A launcher-capable binary (one whose `main` calls
    /// [`run_if_requested`] first). See [`LauncherConfig::resolve_program`].
    pub program: Option<PathBuf>,
    /// Which cgroups to use.
    pub cgroups: CgroupMode,
    /// The deadline for every answer from the launcher (ready, spawned,
    /// killed, stopped).
    pub reply_timeout: Duration,
    /// Put the launcher, and so every command, in a sandbox (namespaces
    /// and limits, see [`sandbox`]); `None` runs commands in the host's
    /// namespaces.
    pub sandbox: Option<sandbox::SandboxSpec>,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            program: None,
            cgroups: CgroupMode::Auto,
            reply_timeout: Duration::from_secs(30),
            sandbox: None,
        }
    }
}

impl LauncherConfig {
    /// The launcher binary, in this order: [`LauncherConfig::program`];
    /// the `HECATE_LAUNCHER` environment variable; the current executable
    /// if this process called [`run_if_requested`]; a `hecate` file next
    /// to the current executable. Each must be an absolute path (std's
    /// fast spawn path needs one).
    pub fn resolve_program(&self) -> Result<PathBuf> {
        self.resolve_program_with(|k| std::env::var(k).ok())
    }

    /// [`LauncherConfig::resolve_program`] with the environment read
    /// through `lookup`.
    pub fn resolve_program_with(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<PathBuf> {
        let absolute = |p: PathBuf, from: &str| {
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(Error::config(format!(
                    "the launcher path from {from} must be absolute: {}",
                    p.display()
                )))
            }
        };
        if let Some(p) = &self.program {
            return absolute(p.clone(), "the configuration");
        }
        if let Some(p) = lookup(LAUNCHER_ENV).filter(|p| !p.is_empty()) {
            return absolute(PathBuf::from(p), LAUNCHER_ENV);
        }
        let exe = std::env::current_exe().ok();
        if LAUNCHER_CAPABLE.load(Ordering::SeqCst) {
            if let Some(exe) = exe {
                return Ok(exe);
            }
        } else if let Some(sibling) = exe
            .as_deref()
            .and_then(|e| e.parent())
            .map(|dir| dir.join("hecate"))
            .filter(|p| p.is_file())
        {
            return Ok(sibling);
        }
        Err(Error::config(format!(
            "no launcher binary for the local backend: set {LAUNCHER_ENV} (or \
             Config.launcher.program) to the absolute path of a `hecate` binary, put one \
             next to this executable, or call hecate::launcher::run_if_requested() first in main"
        )))
    }
}

/// Whether `id` can name a cgroup directory and travel as one argument.
pub(crate) fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id != cgroup::LAUNCHER_DIR
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_program_wins_and_must_be_absolute() {
        let cfg = LauncherConfig {
            program: Some("/opt/hecate".into()),
            ..LauncherConfig::default()
        };
        let got = cfg.resolve_program_with(|_| Some("/env/hecate".into()));
        assert_eq!(got.expect("explicit"), PathBuf::from("/opt/hecate"));
        let rel = LauncherConfig {
            program: Some("hecate".into()),
            ..LauncherConfig::default()
        };
        assert!(rel.resolve_program_with(|_| None).is_err());
    }

    #[test]
    fn environment_comes_second() {
        let cfg = LauncherConfig::default();
        let got = cfg.resolve_program_with(|k| (k == LAUNCHER_ENV).then(|| "/env/hecate".into()));
        assert_eq!(got.expect("env"), PathBuf::from("/env/hecate"));
    }

    #[test]
    fn instance_ids_are_plain_names() {
        assert!(valid_instance_id("local-1a2b.3_c"));
        for bad in ["", ".", "..", "a/b", "a b", "launcher", &"x".repeat(65)] {
            assert!(!valid_instance_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn cgroup_modes_round_trip() {
        for m in [
            CgroupMode::Auto,
            CgroupMode::V2,
            CgroupMode::V1,
            CgroupMode::Off,
        ] {
            assert_eq!(CgroupMode::parse(m.as_str()), Some(m));
        }
    }
}
