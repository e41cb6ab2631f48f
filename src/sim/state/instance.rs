//! One simulated instance: its phase, its TTL, its Instance JSON, and the
//! [`Cleanup`] (kill its processes, remove its directory) that is left to do
//! outside the state's lock once it is gone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::sim::process;

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
    /// Creation order, for listing.
    pub(super) seq: u64,
    pub(super) created_unix: u64,
    pub(super) snapshot_id: String,
    pub(crate) phase: Phase,
    pub(crate) ttl: Ttl,
    pub(crate) metadata: BTreeMap<String, String>,
    /// The private directory (Bash mode only).
    pub(crate) dir: Option<PathBuf>,
    /// Process groups of the commands it ran that may still have members.
    pub(super) pgids: Vec<i32>,
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

    /// Takes the instance apart into what must be done outside the lock.
    pub(super) fn cleanup(self) -> Cleanup {
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

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
