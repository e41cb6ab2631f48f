//! Integration tests of the local backend: real shells, real processes, a
//! temporary root per test. Processes are checked through the shared
//! `/proc` helpers (`hecate::unix`).

use std::path::Path;
use std::time::{Duration, Instant};

use hecate::provider::local::LocalProvider;
use hecate::{ErrorKind, ExecSpec, Instance, Provider, StartSlot, StartSpec};
use tempfile::TempDir;

use crate::helper::instances::{bg, fg, run};
use crate::helper::{eventually, pid_alive as is_alive, pid_exists, processes_with_env};

/// A temporary root (inside a parent directory, so that escapes show) and a
/// provider on it.
pub(crate) struct Fixture {
    tmp: TempDir,
    provider: LocalProvider,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = crate::helper::local_config(tmp.path().join("root"));
    config.local.kill_grace = Duration::from_millis(300);
    let provider = LocalProvider::new(&config).expect("provider");
    Fixture { tmp, provider }
}

/// The same on the sandbox backend, or `None` (with a note) where no
/// sandbox can be made.
pub(crate) fn sandbox_fixture() -> Option<Fixture> {
    if let Err(why) = hecate::launcher::sandbox::probe() {
        eprintln!("skipping: {why}");
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = crate::helper::sandbox_config(tmp.path().join("root"));
    config.local.kill_grace = Duration::from_millis(300);
    let provider = LocalProvider::new_sandbox(&config).expect("provider");
    Some(Fixture { tmp, provider })
}

impl Fixture {
    /// Whether this is the sandbox backend.
    fn sandboxed(&self) -> bool {
        hecate::Provider::name(&self.provider) == "sandbox"
    }

    /// The work directory as commands see it.
    fn work_seen(&self, id: &str) -> String {
        if self.sandboxed() {
            hecate::launcher::sandbox::WORKSPACE.to_string()
        } else {
            self.root().join(id).join("work").display().to_string()
        }
    }

    async fn start(&self, task: &str) -> Box<dyn Instance> {
        self.provider
            .start(StartSpec {
                task_id: task.to_string(),
                ttl: None,
                metadata: Default::default(),
                create_slot: StartSlot::detached(),
                task_spec: None,
            })
            .await
            .expect("start")
    }

    fn root(&self) -> &Path {
        self.provider.root()
    }
}

#[actix_rt::test]
async fn files_persist_across_calls_but_env_vars_and_cwd_do_not() {
    files_persist_across_calls_but_env_vars_and_cwd_do_not_on(fixture()).await;
}

/// [`files_persist_across_calls_but_env_vars_and_cwd_do_not`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn files_persist_across_calls_but_env_vars_and_cwd_do_not_on(f: Fixture) {
    let inst = f.start("t").await;
    let out = run(&*inst, "echo hello > note.txt; export FOO=bar; cd /").await;
    assert_eq!(out.exit_code, 0);
    let out = run(&*inst, r#"cat note.txt; echo "FOO=${FOO:-unset}"; pwd"#).await;
    let work = f.work_seen(inst.id());
    assert_eq!(out.stdout.to_text(), format!("hello\nFOO=unset\n{work}\n"));
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn cwd_home_and_tmpdir_are_the_private_dirs() {
    let f = fixture();
    let inst = f.start("t").await;
    let out = run(
        &*inst,
        r#"pwd; echo "$HOME"; echo "$TMPDIR"; echo "$HECATE_INSTANCE_ID""#,
    )
    .await;
    let dir = f.root().join(inst.id());
    let expected = format!(
        "{}\n{}\n{}\n{}\n",
        dir.join("work").display(),
        dir.join("work").display(),
        dir.join("tmp").display(),
        inst.id()
    );
    assert_eq!(out.stdout.to_text(), expected);
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn stderr_is_captured_on_success_and_exit_codes_are_reported() {
    stderr_is_captured_on_success_and_exit_codes_are_reported_on(fixture()).await;
}

/// [`stderr_is_captured_on_success_and_exit_codes_are_reported`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn stderr_is_captured_on_success_and_exit_codes_are_reported_on(f: Fixture) {
    let inst = f.start("t").await;
    let out = run(&*inst, "echo out; echo err >&2").await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.to_text(), "out\n");
    assert_eq!(out.stderr.to_text(), "err\n");
    assert!(!out.timed_out);
    assert!(out.job.is_none());

    let out = run(&*inst, "echo failing >&2; exit 3").await;
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stderr.to_text(), "failing\n");
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn death_by_signal_is_reported_as_128_plus_n() {
    death_by_signal_is_reported_as_128_plus_n_on(fixture()).await;
}

/// [`death_by_signal_is_reported_as_128_plus_n`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn death_by_signal_is_reported_as_128_plus_n_on(f: Fixture) {
    let inst = f.start("t").await;
    assert_eq!(run(&*inst, "kill -TERM $$").await.exit_code, 128 + 15);
    assert_eq!(run(&*inst, "kill -KILL $$").await.exit_code, 128 + 9);
    assert_eq!(run(&*inst, "kill -HUP $$").await.exit_code, 128 + 1);
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn bad_commands_are_invalid_input_and_the_instance_survives() {
    bad_commands_are_invalid_input_and_the_instance_survives_on(fixture()).await;
}

/// [`bad_commands_are_invalid_input_and_the_instance_survives`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn bad_commands_are_invalid_input_and_the_instance_survives_on(f: Fixture) {
    let inst = f.start("t").await;
    let too_long = format!("echo {}", "x".repeat(200_000));
    for command in ["", "   \n\t", "echo a\0b", too_long.as_str()] {
        let err = inst.exec(fg(command)).await.expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{command:.20?}: {err}");
        let err = inst.exec(bg(command)).await.expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{command:.20?}: {err}");
    }
    assert_eq!(run(&*inst, "echo ok").await.stdout.to_text(), "ok\n");
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn timeout_kills_whole_process_tree() {
    timeout_kills_whole_process_tree_on(fixture()).await;
}

/// [`timeout_kills_whole_process_tree`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn timeout_kills_whole_process_tree_on(f: Fixture) {
    let inst = f.start("t").await;
    // A child in the group, a setsid escapee, a double-forked setsid
    // escapee, and a main shell that ignores SIGTERM (so SIGKILL is needed).
    let command = r#"echo "$HECATE_EXEC_ID"; echo partial >&2
        sleep 1000 &
        setsid sleep 1000 &
        (setsid /bin/sh -c 'sleep 1000' &)
        trap '' TERM
        while :; do sleep 1; done"#;
    let started = Instant::now();
    let out = inst
        .exec(ExecSpec {
            timeout: Duration::from_secs(1),
            ..fg(command)
        })
        .await
        .expect("exec");
    let took = started.elapsed();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, 124);
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let exec_id = out.stdout.to_text().trim().to_string();
    assert!(exec_id.starts_with(inst.id()), "{exec_id:?}");
    assert_eq!(out.stderr.to_text(), "partial\n");
    let left = processes_with_env(&format!("HECATE_EXEC_ID={exec_id}"));
    assert!(left.is_empty(), "survivors: {left:?}");

    let out = run(&*inst, "echo still here").await;
    assert_eq!(out.stdout.to_text(), "still here\n");
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn huge_output_stays_bounded_and_the_call_returns() {
    huge_output_stays_bounded_and_the_call_returns_on(fixture()).await;
}

/// [`huge_output_stays_bounded_and_the_call_returns`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn huge_output_stays_bounded_and_the_call_returns_on(f: Fixture) {
    let inst = f.start("t").await;
    let out = inst
        .exec(ExecSpec {
            capture_bytes: 4096,
            ..fg("yes | head -c 200000000; head -c 50000000 /dev/zero >&2")
        })
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
    let kept = out.stdout.head.len() + out.stdout.tail.len();
    assert!(kept <= 4096, "{kept}");
    assert_eq!(kept as u64 + out.stdout.dropped_bytes, 200_000_000);
    assert!(out.stdout.head.starts_with("y\ny\n"));
    let kept = out.stderr.head.len() + out.stderr.tail.len();
    assert!(kept <= 4096, "{kept}");
    assert_eq!(kept as u64 + out.stderr.dropped_bytes, 50_000_000);
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn binary_and_invalid_utf8_output_is_replaced() {
    binary_and_invalid_utf8_output_is_replaced_on(fixture()).await;
}

/// [`binary_and_invalid_utf8_output_is_replaced`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn binary_and_invalid_utf8_output_is_replaced_on(f: Fixture) {
    let inst = f.start("t").await;
    let out = run(&*inst, r"printf 'a\377b\n'; printf 'caf\303\251\n' >&2").await;
    assert_eq!(out.stdout.to_text(), "a\u{fffd}b\n");
    assert_eq!(out.stderr.to_text(), "café\n");
    let out = run(&*inst, "head -c 100000 /dev/urandom").await;
    assert_eq!(out.exit_code, 0);
    assert!(!out.stdout.head.is_empty());
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn background_job_returns_at_once_with_its_own_log_and_exit_file() {
    let f = fixture();
    let inst = f.start("t").await;
    let started = Instant::now();
    let first = inst
        .exec(bg("echo one; echo err-one >&2; exit 3"))
        .await
        .expect("job 1");
    let second = inst.exec(bg("echo two")).await.expect("job 2");
    let slow = inst.exec(bg("sleep 30; echo late")).await.expect("job 3");
    assert!(started.elapsed() < Duration::from_secs(5));

    let jobs_dir = f.root().join(inst.id()).join("jobs");
    for (n, out) in [(1, &first), (2, &second), (3, &slow)] {
        let job = out.job.as_ref().expect("job info");
        assert_eq!(out.exit_code, 0);
        assert_eq!(job.id, n.to_string());
        let pid = job.pid.expect("pid");
        assert_eq!(
            job.log_file,
            jobs_dir.join(format!("{n}.log")).display().to_string()
        );
        assert_eq!(
            job.exit_file,
            jobs_dir.join(format!("{n}.exit")).display().to_string()
        );
        assert_eq!(
            out.stdout.to_text(),
            format!(
                "started background job {n} (pid {pid}); log: {}\n",
                job.log_file
            )
        );
    }

    let job1 = first.job.as_ref().expect("job");
    let job2 = second.job.as_ref().expect("job");
    let finished = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.ends_with('\n'))
            .unwrap_or(false)
    };
    assert!(eventually(Duration::from_secs(20), || finished(&job1.exit_file)).await);
    assert!(eventually(Duration::from_secs(20), || finished(&job2.exit_file)).await);
    assert_eq!(
        std::fs::read_to_string(&job1.exit_file).expect("exit"),
        "3\n"
    );
    assert_eq!(
        std::fs::read_to_string(&job2.exit_file).expect("exit"),
        "0\n"
    );
    assert_eq!(
        std::fs::read_to_string(&job1.log_file).expect("log"),
        "one\nerr-one\n"
    );
    assert_eq!(
        std::fs::read_to_string(&job2.log_file).expect("log"),
        "two\n"
    );
    // A finished job is reaped: not even a zombie is left.
    let pid2 = job2.pid.expect("pid");
    assert!(
        eventually(Duration::from_secs(10), || !pid_exists(pid2)).await,
        "job 2 (pid {pid2}) was not reaped"
    );

    // The slow job is still running, and has written nothing yet.
    let job3 = slow.job.as_ref().expect("job");
    assert!(is_alive(job3.pid.expect("pid")));
    assert!(!Path::new(&job3.exit_file).exists());
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn background_job_keeps_running_after_the_call_until_stop() {
    let f = fixture();
    let inst = f.start("t").await;
    let out = inst.exec(bg("exec sleep 1000")).await.expect("job");
    let pid = out.job.as_ref().and_then(|j| j.pid).expect("pid");
    let marker = format!("HECATE_INSTANCE_ID={}", inst.id());
    // Other calls come and go; the job stays.
    assert_eq!(run(&*inst, "echo busy").await.exit_code, 0);
    assert!(is_alive(pid));
    assert!(!processes_with_env(&marker).is_empty());

    inst.stop().await.expect("stop");
    assert!(eventually(Duration::from_secs(5), || !is_alive(pid)).await);
    assert!(processes_with_env(&marker).is_empty());
    assert!(!f.root().join(inst.id()).exists());
}

#[actix_rt::test]
async fn leftover_child_holding_the_pipes_does_not_hang_the_call() {
    let f = fixture();
    let inst = f.start("t").await;
    let started = Instant::now();
    let out = run(&*inst, "sleep 100 & echo $!").await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.exit_code, 0);
    let holder: u32 = out.stdout.to_text().trim().parse().expect("pid");

    // A server started the usual way keeps running after the command ends.
    let out = run(&*inst, "nohup sleep 1000 > server.log 2>&1 & echo $!").await;
    let server: u32 = out.stdout.to_text().trim().parse().expect("pid");
    assert_eq!(run(&*inst, "echo next").await.stdout.to_text(), "next\n");
    assert!(is_alive(holder));
    assert!(is_alive(server));

    inst.stop().await.expect("stop");
    assert!(
        eventually(Duration::from_secs(5), || !is_alive(holder)
            && !is_alive(server))
        .await
    );
}

#[actix_rt::test]
async fn instances_cannot_see_each_others_files() {
    let f = fixture();
    let a = f.start("task-a").await;
    let b = f.start("task-b").await;
    run(
        &*a,
        r#"echo secret-a > ~/a.txt; echo secret-a > "$TMPDIR/a.tmp"; echo secret-a > a.cwd"#,
    )
    .await;
    let out = run(
        &*b,
        r#"ls -a ~ "$TMPDIR" .; cat ~/a.txt "$TMPDIR/a.tmp" a.cwd 2>/dev/null; pwd"#,
    )
    .await;
    let text = out.stdout.to_text();
    assert!(!text.contains("secret-a"), "{text}");
    assert!(!text.contains("a.txt") && !text.contains("a.tmp") && !text.contains("a.cwd"));
    assert!(text.contains(b.id()), "{text}");
    assert!(!text.contains(a.id()), "{text}");
    // The instance directories are private to this user.
    use std::os::unix::fs::PermissionsExt;
    for inst in [&a, &b] {
        let mode = std::fs::metadata(f.root().join(inst.id()))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

#[actix_rt::test]
async fn weird_task_ids_never_create_anything_outside_the_root() {
    weird_task_ids_never_create_anything_outside_the_root_on(fixture()).await;
}

/// [`weird_task_ids_never_create_anything_outside_the_root`] on either backend's
/// fixture (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn weird_task_ids_never_create_anything_outside_the_root_on(f: Fixture) {
    let long = "x".repeat(10_000);
    let ids = [
        "../../etc",
        "..",
        "/",
        "a/b",
        "nul\0byte",
        long.as_str(),
        "héllo wörld 🦀/../..",
        "",
    ];
    let mut instances = Vec::new();
    for task in ids {
        let inst = f.start(task).await;
        assert!(inst.id().starts_with("local-"), "{}", inst.id());
        let out = run(&*inst, "pwd").await;
        assert_eq!(
            out.stdout.to_text(),
            format!("{}\n", f.work_seen(inst.id()))
        );
        // The task id is kept as file content, for debugging.
        let meta = std::fs::read(f.root().join(inst.id()).join("instance.json")).expect("meta");
        let meta: serde_json::Value = serde_json::from_slice(&meta).expect("json");
        assert_eq!(meta["task_id"], task);
        instances.push(inst);
    }
    // Nothing but the root was made in its parent, and nothing but instance
    // directories in the root.
    let beside: Vec<_> = std::fs::read_dir(f.tmp.path())
        .expect("read")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, ["root"]);
    let inside: Vec<String> = std::fs::read_dir(f.root())
        .expect("read")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(inside.len(), ids.len());
    assert!(inside.iter().all(|n| n.starts_with("local-")), "{inside:?}");
    for inst in instances {
        inst.stop().await.expect("stop");
    }
    assert_eq!(std::fs::read_dir(f.root()).expect("read").count(), 0);
}

/// The parent environment's variables (other than those the backend sets
/// itself) do not reach a command, foreground or background.
#[actix_rt::test]
async fn parent_environment_never_reaches_a_command() {
    parent_environment_never_reaches_a_command_on(fixture()).await;
}

/// [`parent_environment_never_reaches_a_command`] on either backend's
/// fixture (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn parent_environment_never_reaches_a_command_on(f: Fixture) {
    let allowed = [
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "TERM",
        "PAGER",
        "GIT_PAGER",
        "HECATE_INSTANCE_ID",
        "HECATE_EXEC_ID",
        // Set by the shell itself.
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    let inst = f.start("t").await;
    let out = run(&*inst, "env").await;
    let names: Vec<String> = out
        .stdout
        .to_text()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    for name in &names {
        assert!(
            allowed.contains(&name.as_str()),
            "unexpected variable {name}"
        );
    }
    // The test process surely has variables of its own (cargo sets some).
    let parent: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(!parent.is_empty());
    for name in &parent {
        assert!(!names.contains(name), "{name} leaked");
    }
    inst.stop().await.expect("stop");
}

const SECRET_PROBE_VAR: &str = "HECATE_TEST_SECRET_PROBE";
const SECRET_PROBE_PASSED: &str = "secret-probe-passed";

/// Runs [`secret_probe`] in a child process of this test binary whose
/// environment has `MORPH_API_KEY` (setting it here would race with other
/// tests' threads).
#[test]
fn api_key_in_the_runtime_environment_never_reaches_a_command() {
    let secret = format!("sk-hecate-test-{:016x}", fastrand::u64(..));
    let exe = std::env::current_exe().expect("test binary");
    // The test's path inside whichever binary this file was built into
    // (`local_backend::secret_probe` in tests/tests.rs, or `secret_probe`
    // when cargo builds this file as a test target of its own).
    let probe = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::secret_probe"),
        None => "secret_probe".to_string(),
    };
    let out = std::process::Command::new(exe)
        .args([
            probe.as_str(),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MORPH_API_KEY", &secret)
        .env("HECATE_SECRET_PROBE_COPY", &secret)
        .env(SECRET_PROBE_VAR, &secret)
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(SECRET_PROBE_PASSED), "{stdout}");
}

/// Run only by [`api_key_in_the_runtime_environment_never_reaches_a_command`].
#[actix_rt::test]
#[ignore = "run in a child process by api_key_in_the_runtime_environment_never_reaches_a_command"]
async fn secret_probe() {
    let Ok(secret) = std::env::var(SECRET_PROBE_VAR) else {
        return;
    };
    assert_eq!(
        std::env::var("MORPH_API_KEY").as_deref(),
        Ok(secret.as_str())
    );
    let f = fixture();
    let inst = f.start("t").await;
    let probe = "env; cat /proc/self/environ; set";
    let out = run(&*inst, probe).await;
    let text = out.stdout.to_text();
    assert!(text.contains("HECATE_EXEC_ID="), "the probe ran: {text}");
    assert!(!text.contains(&secret), "secret leaked into a command");
    assert!(!text.contains("MORPH_API_KEY"));
    let job = inst.exec(bg(probe)).await.expect("job").job.expect("job");
    assert!(
        eventually(Duration::from_secs(20), || Path::new(&job.exit_file)
            .exists())
        .await,
        "job finished"
    );
    let log = std::fs::read_to_string(&job.log_file).expect("log");
    assert!(log.contains("HECATE_EXEC_ID="));
    assert!(!log.contains(&secret), "secret leaked into a job");
    // Nor through /proc: not the parent's (the launcher's) environment,
    // not the runtime's (this process, made non-dumpable by the provider),
    // as the command's own user or, where we are root, as another.
    let runtime = std::process::id();
    let readers = "cat /proc/$PPID/environ; cat /proc/RUNTIME/environ; \
        tr '\\0' '\\n' < /proc/RUNTIME/environ; cat /proc/RUNTIME/cmdline >/dev/null; true"
        .replace("RUNTIME", &runtime.to_string());
    let mut probes = vec![readers.clone()];
    if unsafe { libc::geteuid() } == 0 && Path::new("/usr/bin/setpriv").exists() {
        probes.push(format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups -- sh -c '{readers}'"
        ));
    }
    for probe in probes {
        let out = run(&*inst, &probe).await;
        let all = format!("{}{}", out.stdout.to_text(), out.stderr.to_text());
        assert!(!all.contains(&secret), "secret read through /proc: {probe}");
    }
    inst.stop().await.expect("stop");
    println!("{SECRET_PROBE_PASSED}");
}

#[actix_rt::test]
async fn stop_removes_the_dir_kills_jobs_and_is_idempotent() {
    stop_removes_the_dir_kills_jobs_and_is_idempotent_on(fixture()).await;
}

/// [`stop_removes_the_dir_kills_jobs_and_is_idempotent`] on either backend's
/// fixture (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn stop_removes_the_dir_kills_jobs_and_is_idempotent_on(f: Fixture) {
    let inst = f.start("t").await;
    let dir = f.root().join(inst.id());
    let job = inst.exec(bg("sleep 1000")).await.expect("job");
    let pid = job.job.and_then(|j| j.pid).expect("pid");
    // Files the command made read-only do not stop the removal.
    run(
        &*inst,
        "mkdir -p ro/sub && touch ro/sub/f && chmod -R a-w ro",
    )
    .await;
    assert!(dir.exists());

    let marker = format!("HECATE_INSTANCE_ID={}", inst.id());
    inst.stop().await.expect("stop");
    assert!(!dir.exists());
    // (A sandboxed job's pid is its PID namespace's: found by its marker.)
    assert!(
        eventually(Duration::from_secs(30), || (f.sandboxed()
            || !is_alive(pid))
            && processes_with_env(&marker).is_empty())
        .await
    );
    inst.stop().await.expect("second stop");
    let err = inst.exec(fg("echo hi")).await.expect_err("stopped");
    assert_eq!(err.kind(), ErrorKind::InstanceGone);
}

#[actix_rt::test]
async fn instance_whose_dir_vanished_is_gone_and_stops_cleanly() {
    instance_whose_dir_vanished_is_gone_and_stops_cleanly_on(fixture()).await;
}

/// [`instance_whose_dir_vanished_is_gone_and_stops_cleanly`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn instance_whose_dir_vanished_is_gone_and_stops_cleanly_on(f: Fixture) {
    let inst = f.start("t").await;
    std::fs::remove_dir_all(f.root().join(inst.id())).expect("rm");
    let err = inst.exec(fg("echo hi")).await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::InstanceGone);
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn dropping_an_instance_kills_its_processes() {
    dropping_an_instance_kills_its_processes_on(fixture()).await;
}

/// [`dropping_an_instance_kills_its_processes`] on either backend's
/// fixture (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn dropping_an_instance_kills_its_processes_on(f: Fixture) {
    let inst = f.start("t").await;
    let marker = format!("HECATE_INSTANCE_ID={}", inst.id());
    let out = inst.exec(bg("sleep 1000")).await.expect("job");
    let pid = out.job.and_then(|j| j.pid).expect("pid");
    run(&*inst, "setsid sleep 1000 > /dev/null 2>&1 &").await;
    assert!(f.sandboxed() || is_alive(pid));
    // Both sleeps run (and show their environment) before the drop.
    assert!(
        eventually(Duration::from_secs(5), || processes_with_env(&marker).len()
            >= 2)
        .await,
        "both processes started"
    );
    drop(inst);
    assert!(
        eventually(Duration::from_secs(5), || processes_with_env(&marker)
            .is_empty())
        .await
    );
    assert!(eventually(Duration::from_secs(30), || f.sandboxed() || !is_alive(pid)).await);
}

#[actix_rt::test]
async fn abandoned_exec_kills_its_process_tree() {
    abandoned_exec_kills_its_process_tree_on(fixture()).await;
}

/// [`abandoned_exec_kills_its_process_tree`] on either backend's fixture
/// (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn abandoned_exec_kills_its_process_tree_on(f: Fixture) {
    let inst = f.start("t").await;
    let id_file = f.root().join(inst.id()).join("work").join("exec-id");
    let exec = inst.exec(fg(
        r#"echo "$HECATE_EXEC_ID" > exec-id; setsid sleep 1000 & sleep 1000"#,
    ));
    let marker = tokio::select! {
        _ = exec => panic!("the command should still be running"),
        marker = async {
            loop {
                if let Ok(id) = std::fs::read_to_string(&id_file) {
                    if id.ends_with('\n') {
                        let marker = format!("HECATE_EXEC_ID={}", id.trim());
                        if processes_with_env(&marker).len() >= 2 {
                            break marker;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => marker,
    };
    // The exec future has been dropped by now: the runtime gave up on it.
    // (A generous bound: a loaded CI machine running the sandbox's fork
    // and memory tests beside this one needed more than 5 s.)
    let gone = eventually(Duration::from_secs(30), || {
        processes_with_env(&marker).is_empty()
    })
    .await;
    if !gone {
        for pid in processes_with_env(&marker) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            eprintln!(
                "survivor {pid}: {}\n{cg}",
                status.lines().take(3).collect::<Vec<_>>().join(" ")
            );
        }
    }
    assert!(gone);
    assert_eq!(run(&*inst, "echo ok").await.stdout.to_text(), "ok\n");
    inst.stop().await.expect("stop");
}

/// Not a check: prints how long `true` takes through the local backend
/// (launcher) and, interleaved, spawned straight from this process the way
/// the backend did before the launcher (tokio `Command`, own process group,
/// cleared environment, piped output). 10 rounds of 20 each; min and
/// median per command. Run with `--ignored --nocapture`;
/// HECATE_LAUNCHER_CGROUPS=off|v1|v2|auto picks the cgroup mode.
#[actix_rt::test]
#[ignore]
async fn measure_exec_of_true() {
    use tokio::io::AsyncReadExt;
    let mut f = fixture();
    if let Some(mode) = std::env::var("HECATE_LAUNCHER_CGROUPS")
        .ok()
        .and_then(|m| hecate::launcher::CgroupMode::parse(&m))
    {
        let mut config = crate::helper::local_config(f.tmp.path().join("root"));
        config.launcher.cgroups = mode;
        f.provider = LocalProvider::new(&config).expect("provider");
    }
    let inst = f.start("t").await;
    let work = f.root().join(inst.id()).join("work");
    let direct = || async {
        let mut child = tokio::process::Command::new("/bin/bash")
            .args(["-c", "true"])
            .current_dir(&work)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &work)
            .env("HECATE_INSTANCE_ID", "x")
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (_, _, status) = tokio::join!(
            out.read_to_end(&mut a),
            err.read_to_end(&mut b),
            child.wait()
        );
        assert!(status.expect("wait").success());
    };
    run(&*inst, "true").await;
    direct().await;
    let (mut via, mut straight) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(run(&*inst, "true").await.exit_code, 0);
            via.push(t.elapsed());
        }
        for _ in 0..20 {
            let t = Instant::now();
            direct().await;
            straight.push(t.elapsed());
        }
    }
    via.sort();
    straight.sort();
    println!(
        "exec of true: launcher min {:?} median {:?}; direct min {:?} median {:?}",
        via[0], via[100], straight[0], straight[100]
    );
    inst.stop().await.expect("stop");
}

/// The three escapes of the launcher's tests, started by one command of a
/// local instance: a daemon that leaves its session and overwrites its
/// title and environment (`title`), a chain that keeps forking and
/// leaving sessions (`hop`), and, where we are root, a daemon of another
/// user that made itself non-dumpable (`nodump`). Each writes its pid to
/// a file in `dir` (world-writable).
fn escapes(dir: &Path) -> (String, Vec<&'static str>) {
    let d = dir.display();
    let mut names = vec!["title", "hop"];
    let mut script = format!(
        r#"export D={d}
perl -e 'use POSIX; exit 0 if fork; POSIX::setsid(); exit 0 if fork;
    $0 = "innocent " . ("x" x 8192);
    open F, ">", "$ENV{{D}}/title.tmp"; print F $$; close F;
    rename "$ENV{{D}}/title.tmp", "$ENV{{D}}/title"; sleep 1 while 1' </dev/null >/dev/null 2>&1
perl -e 'use POSIX;
    for my $g (1..2000) {{
        my $p = fork; next unless defined $p; exit 0 if $p; POSIX::setsid();
        if ($g == 20) {{ open F, ">", "$ENV{{D}}/hop.tmp"; print F $$; close F;
                        rename "$ENV{{D}}/hop.tmp", "$ENV{{D}}/hop"; }}
    }}
    sleep 1 while 1' </dev/null >/dev/null 2>&1 &
"#
    );
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 && Path::new("/usr/bin/setpriv").exists() {
        let nr = if cfg!(target_arch = "aarch64") {
            167
        } else {
            157
        };
        names.push("nodump");
        script.push_str(&format!(
            r#"setpriv --reuid=65534 --regid=65534 --clear-groups -- perl -e 'use POSIX;
    exit 0 if fork; POSIX::setsid(); exit 0 if fork;
    syscall({nr}, 4, 0, 0, 0, 0) == 0 or die "prctl: $!";
    open F, ">", "$ENV{{D}}/nodump.tmp"; print F $$; close F;
    rename "$ENV{{D}}/nodump.tmp", "$ENV{{D}}/nodump"; sleep 1 while 1' </dev/null >/dev/null 2>&1
"#
        ));
    } else {
        eprintln!("not root or no setpriv: the non-dumpable escape is skipped");
    }
    (script, names)
}

/// A world-writable directory for the escapes' pid files.
fn pid_dir() -> TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    tmp
}

/// The pids the escapes wrote (waiting for each, bounded).
async fn escape_pids(dir: &Path, names: &[&str]) -> Vec<(String, u32)> {
    let mut pids = Vec::new();
    for name in names {
        let path = dir.join(name);
        assert!(
            eventually(Duration::from_secs(30), || path.exists()).await,
            "{name} never started"
        );
        let pid = std::fs::read_to_string(&path)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        pids.push((name.to_string(), pid));
    }
    pids
}

/// No escape and no process of the instance survives.
fn assert_no_survivor(pids: &[(String, u32)], instance: &str, when: &str) {
    for (name, pid) in pids {
        assert!(!is_alive(*pid), "{when}: {name} ({pid}) survived");
    }
    let marker = format!("HECATE_INSTANCE_ID={instance}");
    assert_eq!(
        processes_with_env(&marker),
        Vec::<u32>::new(),
        "{when}: processes of the instance survived"
    );
}

#[actix_rt::test]
async fn escapes_leave_no_survivor_after_a_timeout_and_earlier_jobs_run_on() {
    let f = fixture();
    let inst = f.start("t").await;
    let job = inst.exec(bg("sleep 1000")).await.expect("job");
    let job_pid = job.job.and_then(|j| j.pid).expect("job pid");
    let dir = pid_dir();
    let (script, names) = escapes(dir.path());
    let wait: String = names
        .iter()
        .map(|n| {
            format!(
                "until [ -e {}/{n} ]; do sleep 0.05; done\n",
                dir.path().display()
            )
        })
        .collect();
    let out = inst
        .exec(ExecSpec {
            timeout: Duration::from_secs(15),
            ..fg(&format!("{script}{wait}sleep 1000"))
        })
        .await
        .expect("exec");
    assert!(out.timed_out, "{out:?}");
    let pids = escape_pids(dir.path(), &names).await;
    for (name, pid) in &pids {
        assert!(!is_alive(*pid), "{name} ({pid}) survived the timeout");
    }
    // The hopper keeps its marker; nothing of that command is left.
    assert!(is_alive(job_pid), "an earlier call's job was killed");
    inst.stop().await.expect("stop");
    assert!(!is_alive(job_pid));
    assert_no_survivor(&pids, inst.id(), "after stop");
}

#[actix_rt::test]
async fn escapes_leave_no_survivor_after_the_instance_stops() {
    let f = fixture();
    let inst = f.start("t").await;
    let dir = pid_dir();
    let (script, names) = escapes(dir.path());
    assert_eq!(run(&*inst, &script).await.exit_code, 0);
    let pids = escape_pids(dir.path(), &names).await;
    // (The hopper's pid moves on; its marker says it is there.)
    for (name, pid) in pids.iter().filter(|(n, _)| n != "hop") {
        assert!(is_alive(*pid), "{name} should run until the stop");
    }
    let marker = format!("HECATE_INSTANCE_ID={}", inst.id());
    assert!(!processes_with_env(&marker).is_empty());
    inst.stop().await.expect("stop");
    assert_no_survivor(&pids, inst.id(), "after stop");
}

const GC_PROBE_ROOT: &str = "HECATE_TEST_GC_PROBE_ROOT";
const GC_PROBE_PIDS: &str = "HECATE_TEST_GC_PROBE_PIDS";

/// A runtime that dies without cleaning up, its launcher killed with it
/// (so nothing ran their cleanup): `hecate gc` ends leftover launchers,
/// the instance's cgroups and marked processes, and removes the
/// directory, leaving no escape alive. (A launcher merely stopped would
/// not do: its process group is orphaned when the runtime dies, so the
/// kernel sends it SIGHUP and SIGCONT, and it cleans up by itself.)
#[actix_rt::test]
async fn gc_of_a_dead_runtimes_instance_leaves_no_survivor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let dir = pid_dir();
    let exe = std::env::current_exe().expect("test binary");
    let probe = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::gc_probe"),
        None => "gc_probe".to_string(),
    };
    let out = std::process::Command::new(exe)
        .args([
            probe.as_str(),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(GC_PROBE_ROOT, &root)
        .env(GC_PROBE_PIDS, dir.path())
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("gc-probe-ready ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("probe did not get ready: {stdout}"));
    let (id, launcher) = line.split_once(' ').expect("id and launcher pid");
    let launcher: u32 = launcher.parse().expect("launcher pid");
    let names = escapes(dir.path()).1;
    let pids = escape_pids(dir.path(), &names).await;
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(launcher)).await,
        "the launcher was killed"
    );
    let title = pids.iter().find(|(n, _)| n == "title").expect("title").1;
    let cgrouped = std::fs::read_to_string(format!("/proc/{title}/cgroup"))
        .is_ok_and(|c| c.contains(&format!("/hecate/{id}/")));
    if !cgrouped {
        // Without cgroups, a daemon that erased its marker and lost its
        // launcher cannot be found by anyone (see the launcher's docs).
        eprintln!("skipping: the launcher had no cgroups here");
        return;
    }
    for (name, pid) in pids.iter().filter(|(n, _)| n != "hop") {
        assert!(is_alive(*pid), "{name} outlived its runtime");
    }

    // The command line lists it (a dry run) with the task's escape
    // sequence shown, not sent.
    for json in [false, true] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hecate"));
        cmd.args(["gc", "--backend", "local"])
            .env("HECATE_LOCAL_ROOT", &root);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("hecate gc");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(id), "{text}");
        assert!(!text.contains('\u{1b}'), "raw escape printed: {text:?}");
    }

    let config = crate::helper::local_config(&root);
    let dry = hecate::gc::gc_local(
        &config,
        hecate::gc::GcOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("gc dry run");
    assert_eq!(dry.found.len(), 1);
    assert_eq!(dry.found[0].id, id);
    assert!(
        pids.iter()
            .filter(|(n, _)| n != "hop")
            .all(|(_, p)| is_alive(*p)),
        "a dry run kills nothing"
    );

    let report = hecate::gc::gc_local(&config, hecate::gc::GcOptions::default())
        .await
        .expect("gc");
    assert_eq!(report.stopped, vec![id.to_string()], "{report:?}");
    assert_no_survivor(&pids, id, "after gc");
    assert!(!root.join(id).exists());
}

/// Run only by [`gc_of_a_dead_runtimes_instance_leaves_no_survivor`]:
/// starts an instance with the escapes, kills its launcher (so that it
/// cannot clean up) and itself.
#[actix_rt::test]
#[ignore = "run in a child process by gc_of_a_dead_runtimes_instance_leaves_no_survivor"]
async fn gc_probe() {
    let (Ok(root), Ok(pids)) = (std::env::var(GC_PROBE_ROOT), std::env::var(GC_PROBE_PIDS)) else {
        return;
    };
    let provider = LocalProvider::new(&crate::helper::local_config(root)).expect("provider");
    let inst = provider
        .start(StartSpec {
            task_id: "gc\u{1b}[31m".into(),
            ttl: None,
            metadata: Default::default(),
            create_slot: StartSlot::detached(),
            task_spec: None,
        })
        .await
        .expect("start");
    let (script, names) = escapes(Path::new(&pids));
    assert_eq!(run(&*inst, &script).await.exit_code, 0);
    escape_pids(Path::new(&pids), &names).await;
    let launcher = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains(&format!("__launcher\0{}\0", inst.id()))
            })
        })
        .expect("the launcher");
    // SAFETY: signals to our own launcher and to ourselves.
    unsafe { libc::kill(launcher as i32, libc::SIGKILL) };
    println!("gc-probe-ready {} {launcher}", inst.id());
    // SAFETY: as above; the runtime dies here without any cleanup.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// `instance.json` is the tasks' to write: gc must not act on what it
/// claims (another directory, another runtime pid) nor print it raw.
#[actix_rt::test]
async fn gc_trusts_nothing_an_instance_wrote() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("keep")).expect("outside dir");
    let config = crate::helper::local_config(&root);
    let provider = LocalProvider::new(&config).expect("provider");
    let inst = provider
        .start(StartSpec {
            task_id: "t".into(),
            ttl: None,
            metadata: Default::default(),
            create_slot: StartSlot::detached(),
            task_spec: None,
        })
        .await
        .expect("start");
    // A bystander process that the forged file names as the runtime.
    let mut bystander = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("sleep");
    let forged = format!(
        r#"{{"instance_id":"../outside","task_id":"\u001b]0;pwned\u0007\u009b2J","runtime_pid":{},"metadata":{{"hecate_runtime_id":"\u001b[31mred"}}}}"#,
        bystander.id()
    );
    run(
        &*inst,
        &format!("printf '%s' '{forged}' > ../instance.json"),
    )
    .await;
    // A symlink named like an instance, pointing outside the root.
    std::os::unix::fs::symlink(&outside, root.join("local-1-1-deadbeef")).expect("symlink");
    // The runtime (this process) is alive: nothing is abandoned, whatever
    // the file says.
    let report = hecate::gc::gc_local(&config, hecate::gc::GcOptions::default())
        .await
        .expect("gc");
    assert!(report.found.iter().all(|i| i.id != inst.id()), "{report:?}");
    assert!(root.join(inst.id()).exists());
    // The symlink is not an instance directory: never followed, never
    // removed through.
    assert!(outside.join("keep").exists());
    assert!(report.found.is_empty(), "{report:?}");
    assert!(is_alive(bystander.id()), "gc killed the pid the file named");
    let _ = bystander.kill();
    let _ = bystander.wait();
    inst.stop().await.expect("stop");
}

const FD_PROBE_ROOT: &str = "HECATE_TEST_FD_PROBE_ROOT";
const FD_PROBE_PASSED: &str = "fd-probe-passed";

/// Out of descriptors at instance start is transient (the runtime retries
/// it), and the shutdown sweep removes what a failed start could not. The
/// limit is lowered in a child process, never in the test process.
#[test]
fn descriptor_exhaustion_at_start_is_transient_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let probe = match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::fd_limit_probe"),
        None => "fd_limit_probe".to_string(),
    };
    let root = tmp.path().join("root");
    let root_text = root.to_str().expect("utf-8").to_string();
    crate::helper::run_probe(&probe, &[(FD_PROBE_ROOT, &root_text)], FD_PROBE_PASSED);
    let left: Vec<String> = std::fs::read_dir(&root)
        .expect("root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Run only by [`descriptor_exhaustion_at_start_is_transient_and_leaves_nothing`].
#[actix_rt::test]
#[ignore = "run in a child process by descriptor_exhaustion_at_start_is_transient_and_leaves_nothing"]
async fn fd_limit_probe() {
    let Ok(root) = std::env::var(FD_PROBE_ROOT) else {
        return;
    };
    let provider = LocalProvider::new(&crate::helper::local_config(&root)).expect("provider");
    let spec = || StartSpec {
        task_id: "t".into(),
        ttl: None,
        metadata: Default::default(),
        create_slot: StartSlot::detached(),
        task_spec: None,
    };
    // Warm up whatever the runtime opens once.
    provider
        .start(spec())
        .await
        .expect("start")
        .stop()
        .await
        .expect("stop");
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    // With the limit at free[n], exactly n descriptors can still be opened.
    let free: Vec<u64> = (0..).filter(|n| !used.contains(n)).take(12).collect();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this (child) process with valid structs.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let mut failures = 0;
    for (extra, &limit) in free.iter().enumerate().take(10) {
        let low = libc::rlimit {
            rlim_cur: limit,
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
        let started = provider.start(spec()).await;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
        match started {
            Ok(inst) => inst.stop().await.expect("stop"),
            Err(err) => {
                failures += 1;
                assert_eq!(err.kind(), ErrorKind::Transient, "limit +{extra}: {err}");
            }
        }
    }
    assert!(failures > 0, "the low limit never bit");
    // The runtime's shutdown sweep.
    provider
        .sweep_orphans("no-such-runtime")
        .await
        .expect("sweep");
    println!("{FD_PROBE_PASSED} ({failures} starts failed)");
}

#[actix_rt::test]
async fn sweep_orphans_stops_only_instances_of_that_runtime() {
    sweep_orphans_stops_only_instances_of_that_runtime_on(fixture()).await;
}

/// [`sweep_orphans_stops_only_instances_of_that_runtime`] on either backend's
/// fixture (`sandbox_backend` runs it on the sandbox).
pub(crate) async fn sweep_orphans_stops_only_instances_of_that_runtime_on(f: Fixture) {
    let start = |runtime: &str| StartSpec {
        task_id: "t".into(),
        ttl: None,
        metadata: [(
            hecate::provider::tags::RUNTIME_ID.to_string(),
            runtime.to_string(),
        )]
        .into(),
        create_slot: StartSlot::detached(),
        task_spec: None,
    };
    let mine = f.provider.start(start("rt-1")).await.expect("start");
    let other = f.provider.start(start("rt-2")).await.expect("start");
    let swept = f.provider.sweep_orphans("rt-1").await.expect("sweep");
    assert_eq!(swept, vec![mine.id().to_string()]);
    assert!(!f.root().join(mine.id()).exists());
    assert!(f.root().join(other.id()).exists());
    other.stop().await.expect("stop");
}
