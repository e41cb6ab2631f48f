//! The fallback from the sandbox to the plain local backend, end to end and
//! for a real cause: the `hecate` binary runs inside a user namespace of
//! its own whose `user.max_user_namespaces` is 0, as root there without any
//! capability (`unshare` and `setpriv` of util-linux), so no sandbox can be
//! made. With no backend named it runs every task on the plain local
//! backend and says so in exactly one warning line; named, the sandbox is
//! a configuration error giving the cause.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `hecate args…` with no sandbox possible: a new user namespace
/// (root mapped to root) where user namespaces are disabled, every
/// capability dropped. `None`, with the reason printed, where this
/// machine cannot make that user namespace.
fn hecate_without_user_namespaces(
    root: &Path,
    backend: Option<&str>,
    args: &[&str],
) -> Option<Output> {
    for tool in ["/usr/bin/unshare", "/usr/bin/setpriv"] {
        if !Path::new(tool).exists() {
            eprintln!("skipping: no {tool} (util-linux)");
            return None;
        }
    }
    let check = Command::new("/usr/bin/unshare")
        .args(["--user", "--map-root-user", "true"])
        .output()
        .expect("run unshare");
    if !check.status.success() {
        eprintln!(
            "skipping: cannot make a user namespace here: {}",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        return None;
    }
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HECATE_LOCAL_ROOT", root)
        .env("RUST_LOG", "warn");
    if let Some(name) = backend {
        cmd.env("HECATE_BACKEND", name);
    }
    cmd.args([
        "--user",
        "--map-root-user",
        "/bin/sh",
        "-c",
        "echo 0 > /proc/sys/user/max_user_namespaces && \
         exec /usr/bin/setpriv --bounding-set=-all --inh-caps=-all \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_hecate"),
    ])
    .args(args);
    Some(cmd.output().expect("run hecate"))
}

#[test]
fn without_user_namespaces_tasks_run_on_local_after_one_warning_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tasks = tmp.path().join("tasks.jsonl");
    let mut lines = String::new();
    for task in ["a", "b", "c", "d"] {
        lines.push_str(&format!(
            "{{\"task_id\":\"{task}\",\"commands\":[\"pwd\",\"echo $HOME\"]}}\n"
        ));
    }
    std::fs::write(&tasks, lines).expect("tasks");
    let root = tmp.path().join("root");
    let tasks = tasks.to_str().expect("UTF-8 path");
    let Some(out) = hecate_without_user_namespaces(&root, None, &["batch", "--no-progress", tasks])
    else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One warning for the whole run (the probe runs once), naming the
    // cause and both fixes.
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    let warning = warnings[0];
    assert!(warning.starts_with("hecate: warning: sandbox backend unavailable"));
    assert!(warning.contains("max_user_namespaces = 0"), "{warning}");
    assert!(warning.contains("sysctl -w user.max_user_namespaces="));
    assert!(warning.contains("HECATE_BACKEND=local"), "{warning}");
    // Every task ran, on the plain local backend: its work directory is
    // under the local root, not /workspace.
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(results.len(), 4, "{stdout}");
    let root_text = root.to_str().expect("UTF-8 path");
    for line in &results {
        assert_eq!(line["ok"], true, "{line}");
        for r in line["results"].as_array().expect("results") {
            assert_eq!(r["exit_code"], 0, "{r}");
            let output = r["output"].as_str().expect("output");
            assert!(output.starts_with(root_text), "{output}");
            assert!(output.ends_with("/work"), "{output}");
        }
    }
}

#[test]
fn without_user_namespaces_a_named_sandbox_is_a_configuration_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(out) = hecate_without_user_namespaces(
        &tmp.path().join("root"),
        Some("sandbox"),
        &["exec", "--", "echo should-not-run"],
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(!stdout.contains("should-not-run\n"), "{stdout}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("HECATE_BACKEND=sandbox"), "{all}");
    assert!(all.contains("max_user_namespaces = 0"), "{all}");
}

#[test]
fn without_user_namespaces_local_by_name_runs_without_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(out) = hecate_without_user_namespaces(
        &tmp.path().join("root"),
        Some("local"),
        &["exec", "--", "echo ran"],
    ) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("tool JSON");
    assert_eq!(result["output"], "ran");
    assert!(!stderr.contains("warning"), "{stderr}");
}
