//! The `sandbox` backend as a hostile agent would try it: through the
//! provider and through the runtime, tasks that read, write, signal,
//! listen, connect, allocate, fork and mount. Also a representative subset
//! of `local_backend`'s tests on the sandbox, and `gc` of a sandbox whose
//! runtime died. Each test skips (with a note) where `sandbox::probe`
//! says namespaces cannot be made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hecate::launcher::sandbox::{self, LimitMode, WORKSPACE};
use hecate::provider::local::LocalProvider;
use hecate::{BackendKind, Config, ExecRequest, ExecSpec, Instance, Provider, Runtime};

use crate::helper::instances::{
    fg, run, sandbox_available as available, sandbox_provider as provider, start_local as start,
};
use crate::helper::{eventually, pid_alive, processes_with_env, sandbox_config};
use crate::local_backend as lb;

/// How long a test waits for an outside condition.
const LIMIT: Duration = Duration::from_secs(30);

/// The instance's cgroup directories on the host, existing or not.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    ["freezer", "memory", "pids", "unified", "cpu"]
        .iter()
        .map(|h| Path::new("/sys/fs/cgroup").join(h).join("hecate").join(id))
        .chain(std::iter::once(Path::new("/sys/fs/cgroup/hecate").join(id)))
        .collect()
}

/// The instance's processes, and its cgroup directories and host mounts
/// (lines of the host's mount table naming it: the sandbox's own mounts
/// live in its namespace and must never show here).
fn leftovers(id: &str) -> (Vec<u32>, Vec<PathBuf>) {
    let procs = processes_with_env(&format!("HECATE_INSTANCE_ID={id}"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dirs = cgroup_dirs(id)
        .into_iter()
        .filter(|d| d.exists())
        .chain(
            mounts
                .lines()
                .filter(|l| l.contains(id))
                .map(|l| PathBuf::from(format!("mount: {l}"))),
        )
        .collect();
    (procs, dirs)
}

// ---------------------------------------------------------------------
// The local backend's tests that apply, on the sandbox. Those that do
// not: tests of host paths and host pids that a sandbox shows differently
// (`cwd_home_and_tmpdir_are_the_private_dirs`, the background-job,
// leftover-child and escape tests, whose pids are the PID namespace's; the
// sandbox has its own versions above and below), of the plain launcher's
// gc and start failures (`gc_ends_the_sandbox_of_a_dead_runtime` is the
// sandbox's), and `instances_cannot_see_each_others_files`, which
// `task_a_cannot_touch_task_bs_files_processes_or_signals` covers.

/// Each `name => body`: a test `name` running `local_backend`'s `body`
/// (the same one its own test `name` runs on the plain backend) on the
/// sandbox's fixture.
macro_rules! on_the_sandbox {
    ($($name:ident => $body:ident),* $(,)?) => {$(
        #[actix_rt::test]
        async fn $name() {
            if let Some(f) = lb::sandbox_fixture() {
                lb::$body(f).await;
            }
        }
    )*};
}

on_the_sandbox! {
    files_persist_across_calls_but_env_vars_and_cwd_do_not =>
        files_persist_across_calls_but_env_vars_and_cwd_do_not_on,
    stderr_is_captured_on_success_and_exit_codes_are_reported =>
        stderr_is_captured_on_success_and_exit_codes_are_reported_on,
    death_by_signal_is_reported_as_128_plus_n => death_by_signal_is_reported_as_128_plus_n_on,
    bad_commands_are_invalid_input_and_the_instance_survives =>
        bad_commands_are_invalid_input_and_the_instance_survives_on,
    timeout_kills_whole_process_tree => timeout_kills_whole_process_tree_on,
    huge_output_stays_bounded_and_the_call_returns =>
        huge_output_stays_bounded_and_the_call_returns_on,
    binary_and_invalid_utf8_output_is_replaced => binary_and_invalid_utf8_output_is_replaced_on,
    instance_whose_dir_vanished_is_gone_and_stops_cleanly =>
        instance_whose_dir_vanished_is_gone_and_stops_cleanly_on,
    abandoned_exec_kills_its_process_tree => abandoned_exec_kills_its_process_tree_on,
    parent_environment_never_reaches_a_command => parent_environment_never_reaches_a_command_on,
    stop_removes_the_dir_kills_jobs_and_is_idempotent =>
        stop_removes_the_dir_kills_jobs_and_is_idempotent_on,
    dropping_an_instance_kills_its_processes => dropping_an_instance_kills_its_processes_on,
    sweep_orphans_stops_only_instances_of_that_runtime =>
        sweep_orphans_stops_only_instances_of_that_runtime_on,
    weird_task_ids_never_create_anything_outside_the_root =>
        weird_task_ids_never_create_anything_outside_the_root_on,
}

// ---------------------------------------------------------------------
// What the sandbox backend adds.

#[actix_rt::test]
async fn commands_run_in_the_workspace_and_background_jobs_log_inside() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    assert_eq!(p.name(), "sandbox");
    let inst = start(&p, "t").await;
    let out = run(&inst, r#"pwd; echo "$HOME"; echo "$TMPDIR"; id -u"#).await;
    assert_eq!(
        out.stdout.to_text(),
        format!("{WORKSPACE}\n{WORKSPACE}\n/tmp\n0\n")
    );
    let job = inst
        .exec(ExecSpec {
            background: true,
            ..fg("echo one; echo err >&2; exit 3")
        })
        .await
        .expect("job");
    let info = job.job.expect("job info");
    assert_eq!(info.log_file, "/tmp/hecate/jobs/1.log");
    assert_eq!(info.exit_file, "/tmp/hecate/jobs/1.exit");
    // The model reads them from inside, as the job text tells it.
    let check = format!(
        "for i in $(seq 200); do test -f {exit} && break; sleep 0.05; done; cat {exit} {log}",
        exit = info.exit_file,
        log = info.log_file
    );
    assert_eq!(run(&inst, &check).await.stdout.to_text(), "3\none\nerr\n");
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn task_a_cannot_touch_task_bs_files_processes_or_signals() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let a = start(&p, "a").await;
    let b = start(&p, "b").await;
    assert_eq!(run(&b, "echo secret-b > secret.txt").await.exit_code, 0);
    let job = b
        .exec(ExecSpec {
            background: true,
            ..fg("exec sleep 1000")
        })
        .await
        .expect("job");
    assert!(job.job.is_some());
    let marker_b = format!("HECATE_INSTANCE_ID={}", b.id());
    // B's long-lived processes: the job's sleep and the shell waiting for
    // it (not the short-lived helpers of its start).
    let sleeps = || -> Vec<u32> {
        processes_with_env(&marker_b)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .collect()
    };
    assert!(
        eventually(LIMIT, || !sleeps().is_empty()).await,
        "b's job runs"
    );
    let b_pids = sleeps();
    let b_secret = b.work_dir().join("secret.txt");
    let b_dir = b.dir().display().to_string();
    let script = format!(
        r#"
        cat {secret} 2>/dev/null && echo READ
        ls {b_dir} 2>/dev/null && echo LISTED
        echo x > {b_dir}/work/planted 2>/dev/null && echo WROTE
        for pid in {pids}; do kill -KILL $pid 2>/dev/null && echo KILLED; done
        ls /proc | grep -c '^[0-9]' ; ps -e -o comm= 2>/dev/null | grep -c sleep
        "#,
        secret = b_secret.display(),
        pids = b_pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let out = run(&a, &script).await;
    let text = out.stdout.to_text();
    for word in ["READ", "LISTED", "WROTE", "KILLED"] {
        assert!(!text.contains(word), "a could do {word}: {text}");
    }
    let mut counts = text
        .lines()
        .map(|l| l.trim().parse::<u32>().expect("count"));
    let procs = counts.next().expect("proc count");
    assert!(procs <= 6, "a sees {procs} processes: {text}");
    assert_eq!(counts.next(), Some(0), "a sees b's sleep: {text}");
    assert!(!b.work_dir().join("planted").exists());
    for pid in &b_pids {
        assert!(pid_alive(*pid), "b's process {pid} died");
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[actix_rt::test]
async fn no_task_reads_the_runtime_environment_or_writes_etc_or_home() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let inst = start(&p, "t").await;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let planted = format!("hecate-sandbox-test-{}", std::process::id());
    let script = format!(
        r#"
        cat /proc/*/environ 2>/dev/null | tr '\0' '\n' | cut -d= -f1 | sort -u
        echo ---
        touch /etc/{planted} 2>/dev/null && echo WROTE-ETC
        mkdir -p {home} 2>/dev/null; touch {home}/{planted} 2>/dev/null && echo WROTE-HOME
        touch /usr/{planted} 2>/dev/null && echo WROTE-USR
        ls /home /root /srv /sys 2>/dev/null && echo SAW-HOST
        true
        "#
    );
    let out = run(&inst, &script).await;
    let text = out.stdout.to_text();
    let (names, rest) = text.split_once("---\n").expect("separator");
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
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    for name in names.lines() {
        assert!(allowed.contains(&name), "{name} visible inside: {names}");
    }
    assert_eq!(rest.trim(), "", "{text}");
    assert!(!Path::new("/etc").join(&planted).exists());
    assert!(!Path::new(&home).join(&planted).exists());
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn no_mount_or_mknod_even_though_the_runtime_is_root() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let inst = start(&p, "t").await;
    let out = run(
        &inst,
        "mkdir -p m; mount -t tmpfs none m 2>/dev/null && echo MOUNTED; \
         mknod dev-null c 1 3 2>/dev/null && echo MKNOD; \
         mount --bind /usr m 2>/dev/null && echo BOUND; \
         unshare -m true 2>/dev/null && echo UNSHARED; echo done",
    )
    .await;
    assert_eq!(out.stdout.to_text(), "done\n", "{out:?}");
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn isolated_cannot_reach_a_server_on_the_hosts_loopback() {
    if !available() {
        return;
    }
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = server.local_addr().expect("addr").port();
    let (_tmp, p) = provider(|_| {});
    let inst = start(&p, "t").await;
    let out = run(
        &inst,
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo refused"),
    )
    .await;
    assert_eq!(out.stdout.to_text(), "refused\n", "{out:?}");
    inst.stop().await.expect("stop");
    // The same through `host` mode connects: the test can tell.
    let (_tmp, p) = provider(|c| c.sandbox.network = sandbox::NetworkMode::Host);
    let inst = start(&p, "t").await;
    let out = run(
        &inst,
        &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"),
    )
    .await;
    assert_eq!(out.stdout.to_text(), "connected\n", "{out:?}");
    inst.stop().await.expect("stop");
}

#[actix_rt::test]
async fn memory_over_the_limit_is_killed_and_reported() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = sandbox_config(tmp.path().join("root"));
    config.sandbox.memory_limit = Some(64 << 20);
    let p = LocalProvider::new_sandbox(&config).expect("provider");
    let inst = start(&p, "t").await;
    let report = inst.sandbox().expect("report").clone();
    if report.limits.memory != LimitMode::Cgroup {
        eprintln!("skipping: no writable memory cgroup ({report:?})");
        inst.stop().await.expect("stop");
        return;
    }
    // 256 MiB kept by `tail`, bounded even if the limit did not hold.
    let hog = "tail -c 268435456 <(head -c 268435456 /dev/zero) >/dev/null";
    let out = run(&inst, hog).await;
    assert_eq!(out.exit_code, 128 + libc::SIGKILL, "{out:?}");
    assert!(out.oom_killed, "{out:?}");
    // A command that dies of SIGKILL for another reason is not an OOM kill.
    let out = run(&inst, "kill -KILL $$").await;
    assert_eq!(out.exit_code, 137);
    assert!(!out.oom_killed);
    inst.stop().await.expect("stop");

    // Through the runtime and the tool: the model is told why.
    let rt = Runtime::start(config).expect("runtime");
    let json = hecate::tool::terminal_json(
        &rt,
        &serde_json::json!({"command": hog, "task_id": "hog"}).to_string(),
    )
    .await;
    let result: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(result["exit_code"], 137, "{json}");
    assert!(
        result["output"]
            .as_str()
            .is_some_and(|o| o.contains("memory limit")),
        "{json}"
    );
    let next = rt
        .exec("hog", ExecRequest::new("echo alive"))
        .await
        .expect("exec");
    assert_eq!(next.stdout.to_text(), "alive\n");
    assert!(!next.oom_killed);
    assert!(rt.shutdown(LIMIT).await.expect("shutdown").is_clean());
}

#[actix_rt::test]
async fn a_fork_loop_is_stopped_by_the_pids_limit_and_the_host_stays_responsive() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|c| c.sandbox.pids_limit = Some(64));
    let inst = start(&p, "t").await;
    assert_eq!(
        inst.sandbox().expect("report").limits.pids,
        LimitMode::Cgroup
    );
    // A classic fork bomb, cut by its timeout; the limit holds it at 64.
    let started = std::time::Instant::now();
    let out = inst
        .exec(ExecSpec {
            timeout: Duration::from_secs(3),
            ..fg("bomb() { bomb | bomb & }; bomb; sleep 100")
        })
        .await
        .expect("exec");
    assert!(out.timed_out || out.exit_code != 0, "{out:?}");
    let marker = format!("HECATE_INSTANCE_ID={}", inst.id());
    assert!(processes_with_env(&marker).len() <= 64);
    // The host spawns processes as usual meanwhile.
    let host = std::process::Command::new("/bin/true")
        .status()
        .expect("host spawn");
    assert!(host.success());
    assert!(started.elapsed() < LIMIT, "{:?}", started.elapsed());
    assert!(
        eventually(LIMIT, || processes_with_env(&marker).len() <= 2).await,
        "the bomb's processes were killed with its command"
    );
    assert_eq!(run(&inst, "echo alive").await.stdout.to_text(), "alive\n");
    inst.stop().await.expect("stop");
}

/// A task's tiny server on 127.0.0.1:8000 that answers with its task id.
const SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8000)); s.listen(8)
name = open("/workspace/name").read().encode()
while True:
    c, _ = s.accept(); c.sendall(name); c.close()
"#;

/// Connects to 127.0.0.1:8000 (retrying while the server starts) and
/// prints what it says.
const CLIENT: &str = r#"
import socket, time
for _ in range(400):
    try:
        c = socket.create_connection(("127.0.0.1", 8000), timeout=5); break
    except OSError:
        time.sleep(0.05)
print(c.recv(64).decode())
"#;

#[actix_rt::test]
async fn sixty_four_tasks_each_serve_on_port_8000_and_reach_only_their_own() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = sandbox_config(tmp.path().join("root"));
    let rt = Runtime::start(config).expect("runtime");
    let task = |i: usize| {
        let rt = rt.clone();
        async move {
            let name = format!("task-{i}");
            let setup = format!(
                "echo -n {name} > name; cat > server.py <<'EOF'\n{SERVER}\nEOF\n\
                 cat > client.py <<'EOF'\n{CLIENT}\nEOF"
            );
            let out = rt
                .exec(&name, ExecRequest::new(setup))
                .await
                .expect("setup");
            assert_eq!(out.exit_code, 0, "{out:?}");
            let out = rt
                .exec(&name, ExecRequest::new("python3 server.py").background())
                .await
                .expect("server");
            assert!(out.job.is_some());
            let out = rt
                .exec(&name, ExecRequest::new("python3 client.py"))
                .await
                .expect("client");
            (name, out.stdout.to_text(), out.instance_id)
        }
    };
    let results = futures_util::future::join_all((0..64).map(task)).await;
    for (name, seen, _) in &results {
        assert_eq!(seen.trim(), name);
    }
    assert!(rt.shutdown(LIMIT).await.expect("shutdown").is_clean());
    for (_, _, id) in &results {
        assert_eq!(leftovers(id), (vec![], vec![]), "{id}");
    }
}

#[actix_rt::test]
async fn after_stop_and_after_shutdown_no_process_or_cgroup_is_left() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = sandbox_config(tmp.path().join("root"));
    config.sandbox.memory_limit = Some(256 << 20);
    config.sandbox.pids_limit = Some(128);
    let rt = Runtime::start(config).expect("runtime");
    let mut ids = Vec::new();
    for task in ["one", "two", "three"] {
        let out = rt
            .exec(
                task,
                ExecRequest::new("setsid sleep 1000 & nohup sleep 1000 >/dev/null 2>&1 & echo ok"),
            )
            .await
            .expect("exec");
        assert_eq!(out.stdout.to_text(), "ok\n");
        rt.exec(task, ExecRequest::new("sleep 1000").background())
            .await
            .expect("job");
        let (procs, dirs) = leftovers(&out.instance_id);
        assert!(procs.len() >= 3, "{procs:?}");
        assert!(!dirs.is_empty(), "the limits make cgroups");
        assert!(
            !dirs.iter().any(|d| d.starts_with("mount:")),
            "a host mount names the instance: {dirs:?}"
        );
        ids.push(out.instance_id);
    }
    // A stop (evict) of one…
    assert!(rt.evict("one").await.expect("evict"));
    assert!(
        eventually(LIMIT, || leftovers(&ids[0]) == (vec![], vec![])).await,
        "after stop: {:?}",
        leftovers(&ids[0])
    );
    // …and the shutdown of the rest.
    assert!(rt.shutdown(LIMIT).await.expect("shutdown").is_clean());
    for id in &ids {
        assert_eq!(leftovers(id), (vec![], vec![]), "after shutdown: {id}");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path().join("root"))
            .expect("root")
            .count(),
        0
    );
}

#[test]
fn the_default_backend_is_the_sandbox_where_it_can_be_made() {
    let config = Config::default();
    assert_eq!(config.backend, BackendKind::Auto);
    let (kind, warning) = hecate::provider::resolve_backend(&config);
    match sandbox::probe() {
        Ok(()) => assert_eq!((kind, warning), (BackendKind::Sandbox, None)),
        Err(why) => {
            assert_eq!(kind, BackendKind::Local);
            let warning = warning.expect("a warning");
            assert!(warning.contains("HECATE_BACKEND=local"), "{warning}");
            assert!(!warning.contains('\n'), "{warning}");
            assert!(warning.contains(
                why.trim_start_matches("sandbox unavailable: ")
                    .trim_end_matches('.')
            ));
        }
    }
    // Named backends are kept.
    for kind in [BackendKind::Local, BackendKind::Sandbox, BackendKind::Morph] {
        let named = Config::default().with_backend(kind);
        assert_eq!(hecate::provider::resolve_backend(&named), (kind, None));
    }
}

const GC_ROOT: &str = "HECATE_TEST_SANDBOX_GC_ROOT";

/// A runtime with a sandboxed instance dies without cleaning up, its
/// launcher killed with it: `gc` finds the instance and leaves no process,
/// cgroup or directory of it.
#[actix_rt::test]
async fn gc_ends_the_sandbox_of_a_dead_runtime() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "sandbox_backend::gc_probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(GC_ROOT, &root)
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{stdout}");
    let id = stdout
        .lines()
        .find_map(|l| l.split_once("gc-probe-ready ").map(|(_, id)| id))
        .unwrap_or_else(|| panic!("probe did not get ready: {stdout}"))
        .trim()
        .to_string();
    assert!(root.join(&id).exists());
    let config = sandbox_config(&root);
    let dry = hecate::gc::gc_local(
        &config,
        hecate::gc::GcOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("dry run");
    assert_eq!(dry.found.len(), 1);
    assert_eq!(dry.found[0].id, id);
    let report = hecate::gc::gc_local(&config, hecate::gc::GcOptions::default())
        .await
        .expect("gc");
    assert_eq!(report.stopped, vec![id.clone()], "{report:?}");
    assert!(
        eventually(LIMIT, || leftovers(&id) == (vec![], vec![])).await,
        "after gc: {:?}",
        leftovers(&id)
    );
    assert!(!root.join(&id).exists());
}

/// Run only by [`gc_ends_the_sandbox_of_a_dead_runtime`]: a sandboxed
/// instance with limits (so cgroups) and background processes; its
/// launcher and then this process are killed.
#[actix_rt::test]
#[ignore = "run in a child process by gc_ends_the_sandbox_of_a_dead_runtime"]
async fn gc_probe() {
    let Ok(root) = std::env::var(GC_ROOT) else {
        return;
    };
    let mut config = sandbox_config(root);
    config.sandbox.memory_limit = Some(256 << 20);
    config.sandbox.pids_limit = Some(128);
    let p = LocalProvider::new_sandbox(&config).expect("provider");
    let inst = start(&p, "gc").await;
    let out = run(&inst, "setsid sleep 1000 & sleep 1000 & echo ok").await;
    assert_eq!(out.stdout.to_text(), "ok\n");
    // SAFETY: signals to our own launcher and to ourselves.
    unsafe { libc::kill(inst.launcher_pid() as i32, libc::SIGKILL) };
    println!("gc-probe-ready {}", inst.id());
    // SAFETY: as above; the runtime dies here without any cleanup.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// With no backend named, a runtime runs on the sandbox where one can be
/// made, and its configuration says so (the tool description reads it).
#[actix_rt::test]
async fn a_runtime_on_the_default_backend_runs_in_the_sandbox_and_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = Config {
        backend: BackendKind::Auto,
        ..sandbox_config(tmp.path().join("root"))
    };
    let rt = Runtime::start(config).expect("runtime");
    let out = rt.exec("t", ExecRequest::new("pwd")).await.expect("exec");
    let opts = hecate::tool::SchemaOptions::for_config(rt.config());
    if available() {
        assert_eq!(rt.config().backend, BackendKind::Sandbox);
        assert_eq!(out.stdout.to_text(), format!("{WORKSPACE}\n"));
        assert!(hecate::tool::description_with(&opts).contains(WORKSPACE));
    } else {
        assert_eq!(rt.config().backend, BackendKind::Local);
        assert!(opts.sandbox.is_none());
    }
    assert!(rt.shutdown(LIMIT).await.expect("shutdown").is_clean());
}
