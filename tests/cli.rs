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
        .env("HECATE_BACKEND", "local")
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

/// The example batch on `backend`: per task id, its `ok` and exit codes.
fn example_results(backend: &str) -> std::collections::BTreeMap<String, (bool, Vec<i64>)> {
    let root = tempfile::tempdir().expect("tempdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tasks.jsonl");
    let out = hecate(root.path())
        .env("HECATE_BACKEND", backend)
        .args(["batch", "--no-progress", "--concurrency", "8"])
        .arg(&examples)
        .output()
        .expect("run hecate");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{backend}: {stderr}");
    json_lines(&stdout)
        .iter()
        .map(|l| {
            let codes = l["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|r| r["exit_code"].as_i64().expect("exit code"))
                .collect();
            (
                l["task_id"].as_str().expect("task id").to_string(),
                (l["ok"] == true, codes),
            )
        })
        .collect()
}

/// Issue 11: the shipped example batch gives the same results (every
/// task's `ok` and exit codes) on the sandbox as on the plain backend.
#[test]
fn the_example_batch_gives_the_same_results_on_the_sandbox() {
    if let Err(why) = hecate::launcher::sandbox::probe() {
        eprintln!("skipping: {why}");
        return;
    }
    let local = example_results("local");
    assert!(local.len() >= 20);
    assert_eq!(example_results("sandbox"), local);
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

/// Waits (bounded) for `path` to exist: the child's command has started.
fn wait_for_file(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{path:?} never appeared"
        );
        // A poll interval for a real child process, not a synchronisation.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits (bounded) for a child to exit.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the child did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill has no memory effects; the pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
}

/// Reads lines of a child's pipe on a thread, so that a test can wait for
/// the next one with a bound.
fn line_reader(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no {what}: {e}"))
}

#[test]
fn exec_refuses_non_finite_timeouts_naming_the_flag() {
    let root = tempfile::tempdir().expect("tempdir");
    let ran = root.path().join("ran");
    for bad in ["NaN", "inf", "-inf", "0", "-3", "1e308"] {
        let out = hecate(root.path())
            .args(["exec", "--timeout", bad, "--"])
            .arg(format!("touch {}", ran.display()))
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let v: Value = serde_json::from_str(text(&out).0.trim()).expect("json result");
        let error = v["error"].as_str().expect("an error");
        assert!(error.starts_with("--timeout: timeout"), "{bad}: {error}");
        assert!(error.len() < 120, "{bad}: {error}");
        assert_eq!(v["error_kind"], "invalid_input");
    }
    assert!(!ran.exists(), "nothing ran");
}

#[test]
fn too_many_workers_is_a_config_error_not_a_panic() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = hecate(root.path())
        .env("HECATE_WORKERS", "100000")
        .args(["exec", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
    let v: Value = serde_json::from_str(text(&out).0.trim()).expect("json result");
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("HECATE_WORKERS"));
    assert_eq!(v["status"], "disabled");
}

#[test]
fn tool_schema_pinned_has_no_task_id_and_the_configured_timeout() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = hecate(root.path())
        .env("HECATE_COMMAND_TIMEOUT_SECONDS", "45")
        .args(["tool-schema", "--pinned"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out).1);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let props = &v["function"]["parameters"]["properties"];
    assert!(props.get("task_id").is_none(), "{v:#}");
    assert_eq!(props["timeout"]["type"], "number");
    let desc = props["timeout"]["description"].as_str().expect("text");
    assert!(desc.contains("default 45"), "{desc}");

    let out = hecate(root.path())
        .args(["tool-schema"])
        .output()
        .expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["function"]["parameters"]["properties"]["task_id"].is_object(),
        "the default keeps task_id"
    );
}

#[test]
fn batch_from_a_pipe_starts_tasks_as_their_lines_arrive() {
    use std::io::Write;
    let root = tempfile::tempdir().expect("tempdir");
    let mut child = hecate(root.path())
        .args(["batch", "--no-progress", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let out = line_reader(child.stdout.take().expect("stdout"));
    writeln!(stdin, r#"{{"task_id": "a", "commands": ["echo first"]}}"#).expect("write");
    stdin.flush().expect("flush");
    // The pipe stays open: the first result must come before any EOF.
    let first: Value = serde_json::from_str(&next_line(&out, "first result")).expect("json");
    assert_eq!(first["task_id"], "a");
    assert_eq!(first["results"][0]["output"], "first");
    writeln!(stdin, r#"{{"task_id": "b", "commands": ["echo second"]}}"#).expect("write");
    drop(stdin);
    let second: Value = serde_json::from_str(&next_line(&out, "second result")).expect("json");
    assert_eq!(second["task_id"], "b");
    assert_eq!(second["results"][0]["output"], "second");
    assert!(wait_exit(&mut child).success());
}

#[test]
fn batch_refuses_an_overlong_line_and_goes_on() {
    let root = tempfile::tempdir().expect("tempdir");
    let input = root.path().join("tasks.jsonl");
    let mut data = vec![b'x'; hecate::batch::MAX_LINE_BYTES + 1];
    data.extend_from_slice(b"\n{\"task_id\": \"after\", \"commands\": [\"echo ok\"]}\n");
    std::fs::write(&input, data).expect("write");
    let out = hecate(root.path())
        .args(["batch", "--no-progress"])
        .arg(&input)
        .output()
        .expect("run");
    let lines = json_lines(&text(&out).0);
    let bad = lines.iter().find(|l| l["line"] == 1).expect("line 1 named");
    assert!(
        bad["error"]
            .as_str()
            .expect("error")
            .contains("longer than the limit"),
        "{bad}"
    );
    let after = lines
        .iter()
        .find(|l| l["task_id"] == "after")
        .expect("the next line ran");
    assert_eq!(after["results"][0]["output"], "ok");
}

#[test]
fn interrupted_exec_still_prints_one_result() {
    let root = tempfile::tempdir().expect("tempdir");
    let started = root.path().join("started");
    let mut child = hecate(root.path())
        .args(["exec", "--timeout", "600", "--"])
        .arg(format!("touch {} && sleep 600", started.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_file(&started);
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child);
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = text(&out);
    assert_eq!(status.code(), Some(130), "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let error = lines[0]["error"].as_str().expect("an error");
    assert!(error.contains("interrupted by SIGINT"), "{error}");
    assert_eq!(lines[0]["exit_code"], -1);
    // The first signal stopped the instance.
    let left: Vec<_> = std::fs::read_dir(root.path())
        .expect("root")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("local-"))
        .collect();
    assert!(left.is_empty(), "instance dirs left: {left:?}");
}

#[test]
fn second_signal_exits_at_once_saying_what_was_not_stopped() {
    use std::io::Write;
    let root = tempfile::tempdir().expect("tempdir");
    let started = root.path().join("started");
    let input = root.path().join("tasks.jsonl");
    let mut f = std::fs::File::create(&input).expect("create");
    let task = serde_json::json!({
        "task_id": "long",
        "commands": [{"command": format!("touch {} && sleep 600", started.display()),
                      "timeout": 600}],
    });
    writeln!(f, "{task}").expect("write");
    drop(f);
    // A long grace: after the first signal the run would wait for the
    // command, so only the second signal can end it.
    let mut child = hecate(root.path())
        .args(["batch", "--no-progress", "--shutdown-grace-secs", "600"])
        .arg(&input)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let err = line_reader(child.stderr.take().expect("stderr"));
    wait_for_file(&started);
    signal(&child, libc::SIGTERM);
    loop {
        let line = next_line(&err, "the interrupt notice");
        if line.contains("interrupted; stopping") {
            break;
        }
    }
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(130));
    let said: Vec<String> = err.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("second signal (SIGINT)") && l.contains("may still be running")),
        "{said:?}"
    );
    // What was left is what gc finds; clean it up.
    let real = hecate(root.path())
        .args(["gc", "--yes", "--json"])
        .output()
        .expect("gc");
    let stopped = json_lines(&text(&real).0);
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0]["task_id"], "long");
}

#[test]
fn the_binary_raises_its_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let root = tempfile::tempdir().expect("tempdir");
    let mut cmd = hecate(root.path());
    cmd.args(["exec", "--", "echo $(ulimit -Sn) $(ulimit -Hn)"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_max > 256 {
                lim.rlim_cur = 256;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run");
    let v: Value = serde_json::from_str(text(&out).0.trim()).expect("json");
    let output = v["output"].as_str().expect("output");
    let (soft, hard) = output.split_once(' ').expect("two numbers");
    assert_eq!(soft, hard, "the soft limit was raised to the hard one");
}

#[test]
fn sim_makes_a_random_key_unless_given_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let key_of = |fixed: Option<&str>| {
        let mut cmd = hecate(root.path());
        cmd.args(["sim", "--root"]).arg(root.path());
        if let Some(key) = fixed {
            cmd.env("HECATE_SIM_API_KEY", key);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let out = line_reader(child.stdout.take().expect("stdout"));
        let err = line_reader(child.stderr.take().expect("stderr"));
        let url = next_line(&out, "the URL");
        assert!(url.starts_with("MORPH_BASE_URL=http://127.0.0.1:"), "{url}");
        let key = next_line(&out, "the key");
        let how = next_line(&err, "how to use it");
        assert!(how.contains("key"), "{how}");
        signal(&child, libc::SIGTERM);
        assert!(wait_exit(&mut child).success());
        key.strip_prefix("MORPH_API_KEY=")
            .expect("a key line")
            .to_string()
    };
    let a = key_of(None);
    let b = key_of(None);
    assert_ne!(a, "test-key");
    assert!(a.starts_with("sim-") && a.len() >= 36, "{a}");
    assert_ne!(a, b, "a fresh key per run");
    assert_eq!(key_of(Some("fixed-key")), "fixed-key");
}

#[test]
fn batch_of_endless_input_without_newlines_stays_bounded_and_stops_on_interrupt() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut child = hecate(root.path())
        .args(["batch", "--no-progress", "/dev/zero"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let out = line_reader(child.stdout.take().expect("stdout"));
    // The overlong line is named as soon as it passes the limit.
    let first: Value = serde_json::from_str(&next_line(&out, "the line error")).expect("json");
    assert_eq!(first["line"], 1);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(
        rss_kb < 3 * hecate::batch::MAX_LINE_BYTES as u64 / 1024 + 64 * 1024,
        "peak RSS {rss_kb} kB"
    );
    signal(&child, libc::SIGINT);
    assert_eq!(wait_exit(&mut child).code(), Some(130));
}

#[test]
fn a_reader_that_went_away_is_not_a_panic() {
    let root = tempfile::tempdir().expect("tempdir");
    for args in [&["tool-schema"][..], &["exec", "--", "echo hi"][..]] {
        // The read end is closed before the child starts: every write it
        // makes to stdout fails with EPIPE.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = hecate(root.path())
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}
