//! Backend-level fixtures: a provider's instances driven directly (no
//! runtime), as the local, sandbox, network and image tests do.

use std::time::Duration;

use hecate::launcher::sandbox;
use hecate::provider::local::{LocalInstance, LocalProvider};
use hecate::{Config, ExecOutput, ExecSpec, Instance, StartSlot, StartSpec};
use tempfile::TempDir;

/// Whether sandboxes can be made here; prints why not.
pub fn sandbox_available() -> bool {
    match sandbox::probe() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// A temporary root and a sandbox provider on it (300 ms kill grace),
/// configured by `tweak`.
pub fn sandbox_provider(tweak: impl FnOnce(&mut Config)) -> (TempDir, LocalProvider) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = super::sandbox_config(tmp.path().join("root"));
    config.local.kill_grace = Duration::from_millis(300);
    tweak(&mut config);
    let provider = LocalProvider::new_sandbox(&config).expect("sandbox provider");
    (tmp, provider)
}

/// What starting an instance for `task` asks for: no TTL, no spec, no
/// start slot.
pub fn start_spec(task: &str) -> StartSpec {
    StartSpec {
        task_id: task.to_string(),
        ttl: None,
        metadata: Default::default(),
        create_slot: StartSlot::detached(),
        task_spec: None,
    }
}

/// Starts an instance and keeps its concrete type (for its sandbox report
/// and host paths).
pub async fn start_local(p: &LocalProvider, task: &str) -> LocalInstance {
    p.start_local(start_spec(task)).await.expect("start")
}

/// A foreground command: 60 s, 1 MiB of output kept, no persistent shell.
pub fn fg(command: &str) -> ExecSpec {
    ExecSpec {
        command: command.to_string(),
        background: false,
        timeout: Duration::from_secs(60),
        capture_bytes: 1024 * 1024,
        shell: None,
    }
}

/// [`fg`], in the background.
pub fn bg(command: &str) -> ExecSpec {
    ExecSpec {
        background: true,
        ..fg(command)
    }
}

/// Runs `command` in the foreground; its output.
pub async fn run(instance: &dyn Instance, command: &str) -> ExecOutput {
    instance.exec(fg(command)).await.expect("exec")
}

/// Runs `command` in the foreground; (exit code, stdout).
pub async fn run_text(instance: &dyn Instance, command: &str) -> (i32, String) {
    let out = run(instance, command).await;
    (out.exit_code, out.stdout.to_text())
}
