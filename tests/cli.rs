//! The `hecate` binary on the local backend: the batch runner on the
//! shipped examples, one-shot exec, the schema, and configuration errors.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::helper::processes_with_env;

fn hecate(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hecate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HECATE_LOCAL_ROOT", root)
        .env("RUST_LOG", "warn");
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn batch_runs_the_example_tasks() {
    let root = tempfile::tempdir().expect("tempdir");
    let out_file = root.path().join("results.jsonl");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tasks.jsonl");
    let out = hecate(root.path())
        .args(["batch", "--no-progress", "--concurrency", "8", "--out"])
        .arg(&out_file)
        .arg(&examples)
        .output()
        .expect("run hecate");
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines = json_lines(&std::fs::read_to_string(&out_file).expect("results"));
    let input_tasks = std::fs::read_to_string(&examples)
        .expect("examples")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    assert!(input_tasks >= 20);
    assert_eq!(lines.len(), input_tasks, "one line per task");
    let mut commands = 0;
    let mut timeouts = 0;
    for line in &lines {
        assert_eq!(line["ok"], true, "no infrastructure error: {line}");
        for r in line["results"].as_array().expect("results") {
            commands += 1;
            assert!(r["error"].is_null(), "{r}");
            if r["timed_out"] == true {
                timeouts += 1;
                assert_eq!(r["exit_code"], 124);
            }
        }
    }
    assert!(commands >= 60);
    assert!(timeouts >= 1, "the examples include a timed-out command");
    assert!(
        stderr.contains("tasks") && stderr.contains("p99"),
        "summary: {stderr}"
    );
    // Every instance was stopped and removed.
    let left: Vec<_> = std::fs::read_dir(root.path())
        .expect("root")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("local-"))
        .collect();
    assert!(left.is_empty(), "instance dirs left: {left:?}");
}

#[test]
fn batch_names_malformed_lines_and_runs_the_rest() {
    let root = tempfile::tempdir().expect("tempdir");
    let input = root.path().join("tasks.jsonl");
    std::fs::write(
        &input,
        "{\"task_id\": \"good\", \"commands\": [\"echo fine\"]}\n{not json\n{\"task_id\": \"x\"}\n",
    )
    .expect("write");
    let out = hecate(root.path())
        .args(["batch", "--no-progress"])
        .arg(&input)
        .output()
        .expect("run");
    let (stdout, _) = text(&out);
    assert!(!out.status.success(), "bad lines make the run unclean");
    let lines = json_lines(&stdout);
    let good = lines
        .iter()
        .find(|l| l["task_id"] == "good")
        .expect("good task ran");
    assert_eq!(good["results"][0]["output"], "fine");
    let bad: Vec<_> = lines.iter().filter(|l| l.get("line").is_some()).collect();
    assert_eq!(bad.len(), 2);
    assert!(bad.iter().any(|l| l["line"] == 2));
    assert!(bad
        .iter()
        .any(|l| l["line"] == 3 && l["error"].as_str().unwrap_or("").contains("commands")));
}

#[test]
fn exec_prints_the_tool_json_with_stderr_on_success() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = hecate(root.path())
        .args(["exec", "--", "echo out; echo err >&2"])
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(v["exit_code"], 0);
    assert!(v["error"].is_null());
    assert_eq!(v["output"], "out\nerr");
}

#[test]
fn exec_timeout_returns_124_with_a_note() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = hecate(root.path())
        .args(["exec", "--timeout", "1", "--", "echo started; sleep 30"])
        .output()
        .expect("run");
    let v: Value = serde_json::from_str(text(&out).0.trim()).expect("json");
    assert_eq!(v["exit_code"], 124);
    assert_eq!(v["timed_out"], true);
    let output = v["output"].as_str().expect("output");
    assert!(output.starts_with("started"), "{output}");
    assert!(output.contains("timed out"), "{output}");
}

#[test]
fn tool_schema_comes_in_both_shapes() {
    let root = tempfile::tempdir().expect("tempdir");
    for (format, key) in [("openai", "function"), ("anthropic", "input_schema")] {
        let out = hecate(root.path())
            .args(["tool-schema", "--format", format])
            .output()
            .expect("run");
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert!(v.get(key).is_some(), "{format}: {v}");
    }
}

#[test]
fn configuration_errors_name_the_variable() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = hecate(root.path())
        .env("HECATE_VM_TTL_SECONDS", "soon")
        .args(["exec", "--", "true"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let v: Value = serde_json::from_str(text(&out).0.trim()).expect("json result");
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("HECATE_VM_TTL_SECONDS"));
    assert_eq!(v["status"], "disabled");

    let out = hecate(root.path())
        .env("HECATE_BACKEND", "morph")
        .args(["exec", "--", "true"])
        .output()
        .expect("run");
    let v: Value = serde_json::from_str(text(&out).0.trim()).expect("json result");
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("MORPH_API_KEY"));
    assert_eq!(v["exit_code"], -1);
}

#[test]
fn gc_cleans_up_after_a_killed_runtime_on_the_local_backend() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut child = hecate(root.path())
        .args(["exec", "--timeout", "600", "--", "sleep 600"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Wait (bounded) until the command runs in its instance.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let instance = loop {
        let dirs: Vec<String> = std::fs::read_dir(root.path())
            .expect("root")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("local-"))
            .collect();
        if let Some(id) = dirs.first() {
            if !processes_with_env(&format!("HECATE_INSTANCE_ID={id}")).is_empty() {
                break id.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        // A poll interval for a real child process, not a synchronisation.
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let marker = format!("HECATE_INSTANCE_ID={instance}");
    // The instance's launcher notices its runtime's death and kills the
    // command; only the directory is left for gc.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !processes_with_env(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the launcher did not end the orphan"
        );
        // A poll interval for outside processes, not a synchronisation.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let dry = hecate(root.path())
        .args(["gc", "--json"])
        .output()
        .expect("gc");
    assert!(dry.status.success());
    let listed = json_lines(&text(&dry).0);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], instance.as_str());
    assert_eq!(listed[0]["action"], "would_stop");
    assert!(
        root.path().join(&instance).exists(),
        "a dry run changes nothing"
    );

    let real = hecate(root.path())
        .args(["gc", "--yes", "--json"])
        .output()
        .expect("gc");
    assert!(real.status.success());
    assert_eq!(json_lines(&text(&real).0)[0]["action"], "stopped");
    assert!(
        processes_with_env(&marker).is_empty(),
        "gc killed the orphan"
    );
    assert!(
        !root.path().join(&instance).exists(),
        "gc removed the directory"
    );
}
