//! The sandbox: Linux namespaces around one instance's launcher, so that
//! its commands see their own processes, their own filesystem view and
//! (by default) their own network, under memory and process limits. It
//! owns the [`SandboxSpec`] a caller asks for, the [`SandboxReport`] of
//! what was applied, [`probe`] (can it be made here?) and the steps that
//! enter the namespaces inside the launcher process.
//!
//! # What it isolates
//!
//! With [`LauncherConfig::sandbox`](super::LauncherConfig::sandbox) set,
//! the launcher puts itself in new namespaces before it serves a single
//! command; every command is a descendant and inherits them:
//!
//! - **User namespace**: commands are root *inside*, an unprivileged uid
//!   *outside* (a root runtime maps uid/gid 0 to
//!   [`SANDBOX_ID_BASE`]` + hash(instance id) % `[`SANDBOX_ID_SPAN`]; an
//!   unprivileged runtime maps 0 to its own uid). Only that one id is
//!   mapped: host files of other owners (everything under `/usr`, `/etc`)
//!   appear as `nobody` and are only as readable as they are to others.
//!   The work directory is `chown`ed (recursively, without following
//!   symlinks) to the outside id so the command can write it.
//! - **PID namespace**: the launcher loop is PID 1; a command sees only the
//!   instance's processes in `/proc`. When the launcher exits the kernel
//!   kills every process of the namespace: stopping the instance is
//!   stopping the launcher.
//! - **Mount namespace** built from an allow-list, then `pivot_root` and
//!   the old root detached: a fresh read-only tmpfs as `/`; read-only
//!   binds of `/usr`, `/bin`, `/sbin`, `/lib`, `/lib64`, `/lib32` (those
//!   that exist; a symlink such as `/bin -> usr/bin` stays a symlink) and
//!   `/etc`, or instead every top-level entry of a caller-named
//!   [`SandboxSpec::rootfs`] (read-only); the work directory read-write at
//!   [`WORKSPACE`] (`/workspace`, also the default working directory); a
//!   private tmpfs `/tmp`; a fresh `/proc` of the PID namespace; a minimal
//!   `/dev` (`null`, `zero`, `full`, `random`, `urandom`, `tty` bound from
//!   the host, a private `devpts` and `ptmx` where the kernel allows it, a
//!   tmpfs `/dev/shm`). Nothing else of the host is visible: not the
//!   instance root, `/root`, `/home`, `/sys`, `/run`, nor the runtime's
//!   files. Mounts live in the namespace and vanish with it: the host's
//!   mount table never changes.
//! - **Network namespace** ([`NetworkMode::Isolated`], the default) with
//!   only a loopback interface, brought up: two sandboxes can both listen
//!   on `127.0.0.1:8000`, and neither reaches the host's loopback or any
//!   network. [`NetworkMode::Host`] keeps the host's network.
//!   [`NetworkMode::Outbound`] adds outbound connections through
//!   slirp4netns (`tap0`, `10.0.2.100/24`, resolver `10.0.2.3`, the host's
//!   loopback out of reach; `/etc/resolv.conf` names that resolver).
//! - UTS (hostname `sandbox`) and IPC namespaces.
//! - **Limits** ([`SandboxSpec::memory_limit`], [`SandboxSpec::pids_limit`])
//!   on the instance's cgroup, covering the launcher and every command:
//!   cgroup v1 `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes`
//!   when swap accounting exists) and `pids.max`, or v2 `memory.max`
//!   (`memory.swap.max` 0) and `pids.max`. Without a writable cgroup the
//!   launcher falls back to `RLIMIT_AS` per process and `RLIMIT_NPROC` per
//!   (outside) uid; [`SandboxReport::limits`] says which applied. A command
//!   killed by the memory limit is told apart by [`oom_kills`]: the
//!   cgroup's OOM-kill count grows (read it before and after).
//!
//! Commands still lose [`DROPPED_CAPABILITIES`](super::DROPPED_CAPABILITIES)
//! (so `mount`, `mknod`, `unshare` of a new namespace with mounts fail
//! inside even though the command is root there) and run with
//! `no_new_privs`. In a user namespace they also lose `CAP_SYS_RESOURCE`,
//! and the sandbox's `user.max_user_namespaces` is 0: no nested user
//! namespace (`unshare -Ur`) gives a command capabilities back. No
//! descriptor of the runtime reaches a command: the launcher marks every
//! inherited one close-on-exec.
//!
//! # Fallbacks
//!
//! Where a user namespace cannot be made (disabled by sysctl, AppArmor,
//! seccomp, or [`SandboxSpec::user_namespace`] off) but the runtime is
//! root, the other namespaces are still made and the launcher empties its
//! capability bounding and inheritable sets and sets `no_new_privs` before
//! serving, so commands run as root *without any capability*
//! ([`Isolation::CapabilityDrop`]). Without root and without user
//! namespaces the sandbox cannot be made: [`Launcher::start`] fails with
//! the reason, and [`probe`] says so in advance with the fix.
//!
//! # What it does not isolate
//!
//! One kernel, not a VM: a kernel bug reachable by system calls is
//! reachable from the sandbox (there is no seccomp filter yet); `/proc`
//! and `/sys`-like kernel state that is not namespaced (`/proc/meminfo`,
//! `/proc/cpuinfo`, the kernel's version, time) is the host's; CPU time is
//! not limited; the read-only binds are not recursive-read-only for mounts
//! *below* `/usr` or `/etc` on the host (rare); the host's `/etc` (users,
//! resolver configuration) is visible read-only unless a `rootfs` is
//! given; file ownership inside shows only the mapped id.
//!
//! [`Launcher::start`]: super::Launcher::start

mod fs;
mod limits;
mod net;
mod ns;
mod probe;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) use ns::{enter, reject};

/// Where the instance's work directory appears inside the sandbox,
/// read-write; also the default working directory of its commands.
pub const WORKSPACE: &str = "/workspace";

/// The lowest outside uid/gid a root runtime maps a sandbox's root to.
pub const SANDBOX_ID_BASE: u32 = 200_000;

/// How many outside ids the per-instance hash spreads over.
pub const SANDBOX_ID_SPAN: u32 = 100_000;

/// The network a sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Its own network namespace with only loopback (up).
    #[default]
    Isolated,
    /// The host's network (no network namespace).
    Host,
    /// Its own network namespace with its own loopback (up) and outbound
    /// connections through a user-mode network stack (slirp4netns):
    /// the task reaches what the host reaches, except the host's
    /// loopback, and nothing outside reaches the task.
    Outbound,
}

/// What sandbox to put a launcher (and so every command of the instance)
/// in. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The instance's work directory on the host (absolute), bound
    /// read-write at [`WORKSPACE`].
    pub workdir: PathBuf,
    /// A root filesystem directory on the host whose top-level entries are
    /// bound read-only instead of the host's `/usr`, `/bin`, `/lib*`,
    /// `/etc` (its `proc`, `dev`, `sys`, `tmp` are replaced).
    pub rootfs: Option<PathBuf>,
    /// The network.
    pub network: NetworkMode,
    /// Memory limit for the whole instance, in bytes.
    pub memory_limit: Option<u64>,
    /// Limit on the number of processes (and threads) of the instance,
    /// the launcher's own included.
    pub pids_limit: Option<u64>,
    /// Whether to use a user namespace (true by default). False forces the
    /// capability-drop fallback (root runtimes only).
    pub user_namespace: bool,
    /// The slirp4netns program (absolute path) that
    /// [`NetworkMode::Outbound`] needs.
    #[serde(default)]
    pub slirp4netns: Option<PathBuf>,
}

impl SandboxSpec {
    /// A sandbox around `workdir` with the defaults: host `/usr` & co.,
    /// isolated network, no limits, a user namespace.
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        SandboxSpec {
            workdir: workdir.into(),
            rootfs: None,
            network: NetworkMode::Isolated,
            memory_limit: None,
            pids_limit: None,
            user_namespace: true,
            slirp4netns: None,
        }
    }

    /// The launcher's argument form (JSON).
    pub(crate) fn to_arg(&self) -> String {
        serde_json::to_string(self).expect("a SandboxSpec always serialises")
    }

    /// Parses [`SandboxSpec::to_arg`]'s form.
    pub(crate) fn from_arg(arg: &str) -> Option<SandboxSpec> {
        serde_json::from_str(arg).ok()
    }
}

/// How the sandbox keeps commands from the host's privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A user namespace: root inside is `uid`/`gid` outside.
    UserNamespace {
        /// The outside uid of the sandbox's root.
        uid: u32,
        /// The outside gid of the sandbox's root.
        gid: u32,
    },
    /// No user namespace (it could not be made: `reason`); commands are
    /// host root with empty capability sets and `no_new_privs`.
    CapabilityDrop {
        /// Why there is no user namespace (the OS error).
        reason: String,
    },
}

/// How one limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// No limit was asked for.
    Unlimited,
    /// The instance's cgroup (covers the launcher and every command).
    Cgroup,
    /// A per-process (`RLIMIT_AS`) or per-uid (`RLIMIT_NPROC`) rlimit: no
    /// writable cgroup was found.
    Rlimit,
}

/// Which limits applied, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsReport {
    /// The memory limit.
    pub memory: LimitMode,
    /// The process-count limit.
    pub pids: LimitMode,
    /// The host file whose `oom_kill <n>` line counts the instance's OOM
    /// kills (v1 `memory.oom_control`, v2 `memory.events`), while the
    /// instance lives. See [`oom_kills`].
    pub oom_events: Option<PathBuf>,
}

/// What the launcher applied, sent in its `Ready` event and kept by
/// [`Launcher::sandbox`](super::Launcher::sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// User namespace or the capability-drop fallback.
    pub isolation: Isolation,
    /// The network the commands have.
    pub network: NetworkMode,
    /// The limits.
    pub limits: LimitsReport,
}

/// How many processes of the sandbox the kernel's OOM killer has killed
/// for its memory limit so far; `None` without a memory cgroup (no limit,
/// rlimit fallback, or the instance is gone). A command whose main process
/// died of `SIGKILL` while this count grew was killed by the memory limit
/// (with several commands running at once, one of them was).
pub fn oom_kills(report: &SandboxReport) -> Option<u64> {
    limits::read_oom_kills(report.limits.oom_events.as_deref()?)
}

/// Whether a sandbox can be made on this machine, and if not why and how to
/// fix it. It forks a short-lived child that tries to create the
/// namespaces (about a millisecond): call it once at provider start, not
/// per command. A root runtime without user namespaces gets `Ok` (the
/// capability-drop fallback applies).
pub fn probe() -> Result<(), String> {
    probe::probe()
}
