//! Task environments ([`hecate::spec`]) through the runtime, on the plain
//! local backend, the sandbox (where namespaces can be made here) and the
//! MorphCloud simulator running real bash: environment, working directory,
//! files, setup (ok, failing, sticky), re-application on a replacement
//! instance, conflicting specs, images, lifetimes.

use std::path::Path;
use std::time::Duration;

use hecate::{Config, ErrorKind, ExecRequest, RestartReason, Runtime, TaskSpec};

use crate::helper::backends::{each_backend, Backend};

fn spec() -> TaskSpec {
    TaskSpec::new()
}

#[actix_rt::test]
async fn env_and_workdir_apply_to_every_command_and_the_shell_state_wins_after() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let s = spec()
                .env("GREETING", "it's a 'test' $HOME")
                .env("MULTI", "one\ntwo")
                .workdir("proj/src");
            let out = b
                .run(
                    "t",
                    ExecRequest::new("pwd; echo \"$GREETING|$MULTI\"; echo line $LINENO")
                        .with_spec(s.clone()),
                )
                .await;
            let text = out.stdout.to_text();
            let mut lines = text.lines();
            let pwd = lines.next().unwrap_or_default().to_string();
            assert!(pwd.ends_with("/proj/src"), "{}: {text}", b.name);
            let lines: Vec<&str> = lines.collect();
            assert_eq!(lines[..2], ["it's a 'test' $HOME|one", "two"], "{}", b.name);
            // Line numbers are the command's own, as without a spec (on
            // MorphCloud `$LINENO` counts the VM-side wrapper's lines too,
            // spec or not).
            if b.sim.is_none() {
                let plain = b.out("plain", "echo line $LINENO").await;
                assert_eq!(lines[2], plain.trim_end(), "{}", b.name);
            }
            // The same spec again is fine; none is fine.
            assert_eq!(
                b.run("t", ExecRequest::new("echo $GREETING").with_spec(s))
                    .await
                    .stdout
                    .to_text(),
                "it's a 'test' $HOME\n"
            );
            // The persistent shell's state wins over the spec after a call
            // changed it.
            b.out("t", "cd .. && export GREETING=changed").await;
            let after = b.out("t", "pwd; echo $GREETING").await;
            assert!(after.ends_with("/proj\nchanged\n"), "{}: {after}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn with_the_spec_s_persistent_shell_off_every_call_starts_at_the_workdir() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let s = spec().workdir("w").persistent_shell(false);
            b.run("t", ExecRequest::new("cd / && export X=1").with_spec(s))
                .await;
            let out = b.out("t", "pwd; echo ${X-unset}").await;
            assert!(out.ends_with("/w\nunset\n"), "{}: {out}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn files_are_placed_before_setup_byte_for_byte() {
    let binary: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let text = "line 'one' with \\ and %s and é\n\tlast";
    each_backend(
        |_| {},
        async |b: &Backend| {
            let mut s = spec()
                .workdir("repo")
                .file("src/a.txt", text)
                .file("bin.dat", binary.clone())
                .file("empty", Vec::new())
                .setup("cp src/a.txt seen.txt");
            s.files.push(hecate::spec::SpecFile {
                path: "run.sh".into(),
                content: b"#!/bin/sh\necho ran\n".to_vec(),
                executable: true,
            });
            let opened = b.rt.open_task("t", s).await.expect("opened");
            let setup = opened.setup.expect("a setup report");
            assert!(setup.ok, "{}: {setup:?}", b.name);
            assert_eq!(setup.files_placed, 4);
            assert!(!setup.reapplied);
            assert_eq!(b.out("t", "cat seen.txt").await, text);
            assert_eq!(b.out("t", "wc -c < bin.dat").await.trim(), "512");
            let od = b.out("t", "od -An -v -tu1 bin.dat").await;
            let got: Vec<u8> = od
                .split_whitespace()
                .map(|n| n.parse().expect("a byte"))
                .collect();
            assert_eq!(got, binary, "{}", b.name);
            assert_eq!(b.out("t", "wc -c < empty").await.trim(), "0");
            assert_eq!(b.out("t", "./run.sh").await, "ran\n");
        },
    )
    .await;
}

#[actix_rt::test]
async fn setup_runs_once_per_instance_and_is_reported_apart() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let s = spec()
                .env("V", "v1")
                .setup("echo setup-output-$V; echo x >> setup.log")
                .setup("cd sub 2>/dev/null || { mkdir sub; cd sub; }");
            // With the first exec.
            let first = b
                .run("a", ExecRequest::new("echo agent").with_spec(s.clone()))
                .await;
            assert_eq!(first.stdout.to_text(), "agent\n", "{}", b.name);
            let setup = first
                .setup
                .clone()
                .expect("reported with the first command");
            assert!(setup.ok, "{}: {setup:?}", b.name);
            assert_eq!(setup.steps.len(), 2);
            assert_eq!(setup.steps[0].output, "setup-output-v1\n");
            assert_eq!(setup.steps[0].exit_code, Some(0));
            // The setup's cd carried over (persistent shell on), and it ran once.
            let second = b
                .run("a", ExecRequest::new("basename $PWD; cat ../setup.log"))
                .await;
            assert_eq!(second.stdout.to_text(), "sub\nx\n", "{}", b.name);
            assert!(second.setup.is_none());
            // open_task: the setup, no command.
            let opened = b.rt.open_task("b", s.clone()).await.expect("opened");
            assert!(opened.instance_started);
            assert_eq!(opened.setup.expect("report").steps.len(), 2);
            // Opening it again with the same spec answers at once.
            let again = b.rt.open_task("b", s).await.expect("open again");
            assert!(!again.instance_started);
            assert!(again.setup.is_none());
            assert_eq!(b.out("b", "cat ../setup.log").await, "x\n");
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_failed_setup_fails_every_command_until_the_task_is_evicted() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let s = spec()
                .setup("echo fine")
                .setup("echo boom-out; echo boom-err >&2; exit 3")
                .setup("echo never > never.txt");
            let err =
                b.rt.exec("t", ExecRequest::new("echo agent").with_spec(s.clone()))
                    .await
                    .expect_err("setup failed");
            assert_eq!(err.kind(), ErrorKind::SetupFailed, "{}: {err}", b.name);
            let msg = err.to_string();
            assert!(msg.contains("exited with 3"), "{msg}");
            assert!(
                msg.contains("boom-out") && msg.contains("boom-err"),
                "{msg}"
            );
            assert!(msg.contains("evicted"), "{msg}");
            // Sticky: later commands, with or without the spec, get it too.
            for req in [
                ExecRequest::new("echo again"),
                ExecRequest::new("echo again").with_spec(s.clone()),
            ] {
                let again = b.rt.exec("t", req).await.expect_err("still failed");
                assert_eq!(again.kind(), ErrorKind::SetupFailed);
                assert!(again.to_string().contains("boom-out"));
            }
            let opened =
                b.rt.open_task("t", s.clone())
                    .await
                    .expect_err("still failed");
            assert_eq!(opened.kind(), ErrorKind::SetupFailed);
            // The tool result says so as an error.
            let json =
                hecate::tool::terminal_json(&b.rt, r#"{"command":"ls","task_id":"t"}"#).await;
            assert!(json.contains("\"error_kind\":\"setup_failed\""), "{json}");
            // Eviction forgets the spec and the failure.
            b.rt.evict("t").await.expect("evict");
            assert_eq!(
                b.out("t", "test -e never.txt || echo clean").await,
                "clean\n"
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_different_spec_on_a_later_exec_is_refused() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            let a = spec().env("A", "1");
            b.run("t", ExecRequest::new("true").with_spec(a.clone()))
                .await;
            let err =
                b.rt.exec(
                    "t",
                    ExecRequest::new("true").with_spec(spec().env("A", "2")),
                )
                .await
                .expect_err("a different spec");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("different spec"), "{err}");
            let err =
                b.rt.open_task("t", spec().env("A", "2"))
                    .await
                    .expect_err("a different spec");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert_eq!(b.out("t", "echo $A").await, "1\n");
            // A task that runs without a spec cannot get one.
            b.out("plain", "true").await;
            let err =
                b.rt.exec("plain", ExecRequest::new("true").with_spec(a))
                    .await
                    .expect_err("running without a spec");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("without a spec"), "{err}");
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_replacement_instance_gets_the_spec_again_and_the_result_says_so() {
    each_backend(
        |_| {},
        async |b: &Backend| {
            // The spec's own TTL (per-task lifetime) ends the first instance.
            let s = spec()
                .ttl(Duration::from_millis(1500))
                .workdir("w")
                .file("f.txt", "placed\n")
                .setup("echo x >> setup.log");
            let first = b
                .run("t", ExecRequest::new("echo hi > mine.txt").with_spec(s))
                .await;
            assert!(!first.setup.as_ref().expect("setup").reapplied);
            b.wait_gone("t").await;
            let out = b
                .run(
                    "t",
                    ExecRequest::new("cat setup.log f.txt; ls mine.txt 2>&1 || true"),
                )
                .await;
            assert_ne!(out.instance_id, first.instance_id, "{}", b.name);
            assert_eq!(
                out.instance_restarted,
                Some(RestartReason::Ttl),
                "{}",
                b.name
            );
            let setup = out.setup.clone().expect("applied again");
            assert!(setup.reapplied && setup.ok, "{}: {setup:?}", b.name);
            assert!(
                out.stdout.to_text().starts_with("x\nplaced\n"),
                "{}: {out:?}",
                b.name
            );
            let tool = hecate::tool::render(Ok(out), 50_000);
            assert!(tool.output.contains("applied again"), "{}", tool.output);
        },
    )
    .await;
}

#[actix_rt::test]
async fn a_vanished_vm_is_replaced_and_the_spec_applied_again() {
    let b = Backend::sim(&|_| {}).await;
    let s = spec().setup("echo x >> setup.log");
    let first = b
        .run("t", ExecRequest::new("cat setup.log").with_spec(s))
        .await;
    assert_eq!(first.stdout.to_text(), "x\n");
    let sim = b.sim.as_ref().expect("sim");
    assert!(sim.expire(&first.instance_id));
    let out = b.run("t", ExecRequest::new("cat setup.log")).await;
    assert_eq!(out.instance_restarted, Some(RestartReason::Vanished));
    assert!(
        out.setup.as_ref().is_some_and(|s| s.reapplied && s.ok),
        "{out:?}"
    );
    assert_eq!(out.stdout.to_text(), "x\n");
    b.stop().await;
}

#[actix_rt::test]
async fn images_go_to_the_backend_and_the_plain_local_backend_refuses_one() {
    // The simulator records the snapshot each instance came from.
    let b = Backend::sim(&|_| {}).await;
    let out = b
        .run(
            "t",
            ExecRequest::new("true").with_spec(spec().image("snapshot_task_image")),
        )
        .await;
    let sim = b.sim.as_ref().expect("sim");
    assert_eq!(
        sim.instance_snapshot(&out.instance_id).as_deref(),
        Some("snapshot_task_image")
    );
    let plain = b.run("u", ExecRequest::new("true")).await;
    assert_eq!(
        sim.instance_snapshot(&plain.instance_id).as_deref(),
        Some(Config::default().morph.snapshot_id.as_str())
    );
    b.stop().await;

    let b = Backend::local(&|_| {}).await;
    let err =
        b.rt.exec(
            "t",
            ExecRequest::new("true").with_spec(spec().image("/srv/rootfs")),
        )
        .await
        .expect_err("no images on plain local");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("no images"), "{err}");
    let err =
        b.rt.exec(
            "u",
            ExecRequest::new("true").with_spec(spec().workdir("/etc")),
        )
        .await
        .expect_err("an absolute workdir on plain local");
    assert!(err.to_string().contains("relative"), "{err}");
    b.stop().await;
}

/// A root filesystem with bash only (and the libraries it links), built by
/// copying from the host, plus a marker file in its `/etc`.
fn build_rootfs(root: &Path) {
    for dir in ["usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "etc"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    for link in ["bin", "lib", "lib64", "sbin"] {
        std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link)).expect("symlink");
    }
    let bash = std::fs::canonicalize("/bin/bash").expect("host bash");
    let ldd = std::process::Command::new("ldd")
        .arg(&bash)
        .output()
        .expect("ldd");
    let mut files = vec![bash.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.into());
        }
    }
    for file in files {
        let inside = root.join(file.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&file, &inside).expect("copy");
    }
    std::fs::copy(&bash, root.join("usr/bin/bash")).expect("copy bash");
    std::fs::write(root.join("etc/hecate-image"), "the test image\n").expect("marker");
}

#[actix_rt::test]
async fn a_sandbox_task_runs_in_the_root_filesystem_its_spec_names() {
    let Some(b) = Backend::sandbox(&|_| {}).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs");
    build_rootfs(&rootfs);
    let s = spec()
        .image(rootfs.to_str().expect("utf-8"))
        .setup("read -r line < /etc/hecate-image; echo \"$line\" > seen");
    let out = b
        .run(
            "t",
            ExecRequest::new("read -r x < seen; echo \"$x\"; [ -e /usr/bin/python3 ] || echo no-python; echo $PWD")
                .with_spec(s)
                .persistent_shell(false),
        )
        .await;
    assert_eq!(
        out.stdout.to_text(),
        "the test image\nno-python\n/workspace\n",
        "{out:?}"
    );
    // Other tasks keep the runtime's (the host's) system directories.
    assert_eq!(
        b.out("u", "[ -e /etc/hecate-image ] || echo host").await,
        "host\n"
    );
    let err =
        b.rt.exec(
            "v",
            ExecRequest::new("true").with_spec(spec().image("relative/dir")),
        )
        .await
        .expect_err("a relative image");
    assert!(err.to_string().contains("absolute"), "{err}");
    b.stop().await;
}

#[actix_rt::test]
async fn a_sandbox_spec_sets_its_own_pids_limit() {
    let Some(b) = Backend::sandbox(&|_| {}).await else {
        return;
    };
    let mut s = spec();
    s.pids = Some(20);
    // Forks until the limit refuses one (python, so no shell retries
    // a refused fork for seconds).
    let fork = "import os, time\nn = 0\nfor i in range(60):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\nprint(n)\n";
    let out = b
        .run(
            "t",
            ExecRequest::new(format!("python3 -c '{fork}'")).with_spec(s),
        )
        .await;
    let started: u32 = out.stdout.to_text().trim().parse().unwrap_or(99);
    assert!(started < 20, "pids limit not applied: {out:?}");
    let mut s = spec();
    s.memory_mb = Some(64);
    let local = Backend::local(&|_| {}).await;
    let err = local
        .rt
        .exec("t", ExecRequest::new("true").with_spec(s))
        .await
        .expect_err("limits need the sandbox");
    assert!(err.to_string().contains("sandbox"), "{err}");
    local.stop().await;
    b.stop().await;
}

#[actix_rt::test]
async fn bad_specs_get_clear_errors() {
    let b = Backend::local(&|_| {}).await;
    let cases: Vec<(TaskSpec, &str)> = vec![
        (spec().env("1A", "x"), "not a valid variable name"),
        (spec().env("A-B", "x"), "not a valid variable name"),
        (spec().env("HECATE_EXEC_ID", "x"), "reserved"),
        (spec().env("A", "x\0y"), "NUL"),
        (spec().file("../escape", "x"), "`..`"),
        (spec().file("/etc/passwd", "x"), "relative"),
        (spec().file("a//b", "x"), "empty"),
        (spec().workdir("a/../../b"), "`..`"),
        (spec().setup(""), "setup[0]"),
        (spec().ttl(Duration::ZERO), "ttl"),
    ];
    for (s, needle) in cases {
        let err =
            b.rt.exec("t", ExecRequest::new("true").with_spec(s.clone()))
                .await
                .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{s:?}: {err}");
        assert!(err.to_string().contains(needle), "{s:?}: {err}");
        let err = b.rt.open_task("t", s).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    // Nothing was recorded for the task: a plain command runs.
    assert_eq!(b.out("t", "echo ok").await, "ok\n");
    // Debug never shows the environment's values.
    let shown = format!("{:?}", spec().env("API_TOKEN", "s3cr3t-value"));
    assert!(
        shown.contains("API_TOKEN") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    b.stop().await;
}

/// The example evaluation run (`examples/eval/tasks.jsonl`) on the default
/// backend: each task's failing test fails, the fix makes it pass, and the
/// diff lands in the output directory.
#[cfg(feature = "cli")]
#[actix_rt::test]
async fn the_example_evaluation_run_fixes_every_task_and_downloads_each_diff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        launcher: crate::helper::launcher_config(),
        ..Config::default()
    }
    .with_local_root(dir.path().join("root"));
    config.local.kill_grace = Duration::from_millis(300);
    let rt = Runtime::start(config).expect("runtime on the default backend");
    run_the_example(&rt, dir.path()).await;
    let report = rt
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
    // The same run on the MorphCloud simulator.
    let b = Backend::sim(&|_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    run_the_example(&b.rt, dir.path()).await;
    b.stop().await;
}

/// Runs `examples/eval/tasks.jsonl` on `rt` with results and downloads
/// under `dir`, and checks every task's outcome and diff.
#[cfg(feature = "cli")]
async fn run_the_example(rt: &Runtime, dir: &Path) {
    let out_dir = dir.join("out");
    let results = dir.join("results.jsonl");
    let args = hecate::batch::BatchArgs {
        file: "examples/eval/tasks.jsonl".into(),
        concurrency: 3,
        out: Some(results.clone()),
        no_progress: true,
        shutdown_grace_secs: 5,
        out_dir: Some(out_dir.clone()),
    };
    let summary = hecate::batch::run(&args, rt).await.expect("batch runs");
    assert_eq!(summary.tasks, 3, "{summary:?}");
    assert!(summary.is_clean(), "{summary:?}");
    let text = std::fs::read_to_string(&results).expect("results");
    let expected = [
        ("eval-calc", "-    return a - b", "+    return a + b"),
        (
            "eval-words",
            "-    return \" \".join(text.split())",
            "+    return \" \".join(reversed(text.split()))",
        ),
        (
            "eval-stats",
            "-    return sum(values) / (len(values) - 1)",
            "+    return sum(values) / len(values)",
        ),
    ];
    for (task, minus, plus) in expected {
        let line: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .find(|v: &serde_json::Value| v["task_id"] == task)
            .expect("a result line per task");
        assert_eq!(line["ok"], true, "{line}");
        let setup = &line["setup"][0];
        assert_eq!(setup["ok"], true, "{line}");
        assert_eq!(setup["files_placed"], 2, "{line}");
        let results = line["results"].as_array().expect("results");
        assert_ne!(results[0]["exit_code"], 0, "the test fails first: {line}");
        assert_eq!(results[3]["exit_code"], 0, "then passes: {line}");
        let download = &line["downloads"][0];
        let written = download["written_to"].as_str().expect("written");
        assert!(
            Path::new(written).starts_with(out_dir.join(task)),
            "{written}"
        );
        let diff = std::fs::read_to_string(written).expect("the diff");
        assert!(
            diff.contains(minus) && diff.contains(plus),
            "{task}: {diff}"
        );
        assert_eq!(download["bytes"], diff.len(), "{line}");
    }
}

/// Batch lines take the spec's fields, checked strictly.
#[cfg(feature = "cli")]
#[test]
fn batch_lines_take_the_spec_and_refuse_bad_fields() {
    let max = Duration::from_secs(3600);
    let parse = |line: &str| hecate::batch::parse_line(1, line, max).expect("an entry");
    let task = parse(
        r#"{"task_id":"t","commands":["ls"],"image":"snap_1","env":{"A":"b"},"workdir":"w",
            "setup":["make"],"setup_timeout":30,"ttl":60.5,"idle_lifetime":10,
            "persistent_shell":false,"files":[{"path":"a.txt","content":"hi","executable":true}],
            "download":["out/patch.diff","/testbed/x"]}"#,
    )
    .expect("valid");
    let spec = task.env_spec.expect("a spec");
    assert_eq!(spec.image.as_deref(), Some("snap_1"));
    assert_eq!(spec.env.get("A").map(String::as_str), Some("b"));
    assert_eq!(spec.setup, ["make"]);
    assert_eq!(spec.ttl, Some(Duration::from_millis(60_500)));
    assert_eq!(spec.persistent_shell, Some(false));
    assert!(spec.files[0].executable && spec.files[0].content == b"hi");
    assert_eq!(task.download, ["out/patch.diff", "/testbed/x"]);
    assert!(parse(r#"{"task_id":"t","commands":["ls"]}"#)
        .expect("valid")
        .env_spec
        .is_none());
    for (line, needle) in [
        (r#"{"task_id":"t","commands":["ls"],"imgae":"x"}"#, "imgae"),
        (
            r#"{"task_id":"t","commands":["ls"],"env":["A"]}"#,
            "env must be an object",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"env":{"A":1}}"#,
            "env.A must be a string",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"env":{"9":"x"}}"#,
            "variable name",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"setup":[1]}"#,
            "setup[0]",
        ),
        (r#"{"task_id":"t","commands":["ls"],"ttl":-1}"#, "ttl"),
        (
            r#"{"task_id":"t","commands":["ls"],"persistent_shell":"yes"}"#,
            "persistent_shell",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"files":[{"path":"../x","content":""}]}"#,
            "`..`",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"files":[{"path":"x"}]}"#,
            "content or source",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"files":[{"path":"x","content":"","mode":1}]}"#,
            "mode",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"files":[{"path":"x","source":"/nonexistent/dir"}]}"#,
            "nonexistent",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"download":["../etc/passwd"]}"#,
            "`..`",
        ),
        (
            r#"{"task_id":"t","commands":["ls"],"download":"x"}"#,
            "download must be a list",
        ),
    ] {
        let err = parse(line).expect_err(line);
        assert!(err.error.contains(needle), "{line}: {}", err.error);
    }
}
