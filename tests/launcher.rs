//! The local backend's launcher, for real: the `hecate` binary started as a
//! launcher, real commands, real escapes (daemons that rewrite their title
//! and environment, pid hopping, non-dumpable processes of another user),
//! and what a command can read of the runtime.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use hecate::launcher::{self, CgroupMode, CommandSpec, Launcher, LauncherConfig};
use hecate::ErrorKind;

use crate::helper::{
    eventually, pid_alive, processes_with_env, run_probe, same_process_alive, start_time,
};

/// How long a test waits for an outside condition (a pid file, /proc).
const LIMIT: Duration = Duration::from_secs(20);

fn config(mode: CgroupMode) -> LauncherConfig {
    LauncherConfig {
        program: Some(env!("CARGO_BIN_EXE_hecate").into()),
        cgroups: mode,
        reply_timeout: Duration::from_secs(30),
        sandbox: None,
    }
}

/// A unique instance id per test (tests run in parallel, and cgroup
/// directories are named after it).
fn instance(name: &str) -> String {
    format!("t-{name}-{}", std::process::id())
}

/// A pipe: (read end as a File, write end for the command).
fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: out-array of two ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    // SAFETY: fresh descriptors we own.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// Runs `script` under bash with `env` plus PATH, waits for its main
/// process, and returns (exit code, stdout).
async fn run(l: &Launcher, script: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (mut out, w) = pipe();
    let mut spec = CommandSpec::shell(script)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdout(w);
    for (k, v) in env {
        spec = spec.env(*k, *v);
    }
    let cmd = l.spawn(spec).await.expect("spawn");
    let status = tokio::time::timeout(LIMIT, cmd.exit)
        .await
        .expect("exit in time")
        .expect("exit");
    let text = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).expect("read stdout");
        s
    })
    .await
    .expect("reader");
    (status.code(), text)
}

/// Waits for a file with a pid in it (written by a command).
async fn pid_file(path: &Path) -> u32 {
    assert!(
        eventually(LIMIT, || std::fs::read_to_string(path)
            .is_ok_and(|s| s.trim().parse::<u32>().is_ok()))
        .await,
        "{} never appeared",
        path.display()
    );
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    stat[close + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// Whether the machine gave the launcher the cgroups `mode` asks for.
fn has_cgroups(l: &Launcher, mode: CgroupMode) -> bool {
    let ok = !l.cgroups().is_empty();
    if !ok && mode != CgroupMode::Off {
        eprintln!("skipping the cgroup part: no writable {mode:?} hierarchy here");
    }
    ok
}

fn cgroup_dirs(l: &Launcher) -> Vec<String> {
    l.cgroups()
        .iter()
        .filter_map(|c| c.split_once(':').map(|(_, d)| d.to_string()))
        .collect()
}

#[actix_rt::test]
async fn commands_get_only_their_environment_stdio_and_exit_code() {
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("basic"))
        .await
        .expect("start");
    let (code, out) = run(&l, "echo hi; env | sort; exit 3", &[("A", "1")]).await;
    assert_eq!(code, Some(3));
    let id = instance("basic");
    let mut lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.remove(0), "hi");
    // bash adds PWD, SHLVL and _; nothing of the test process arrives.
    let own: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    assert_eq!(
        own,
        vec![
            "A=1".to_string(),
            format!("HECATE_EXEC_ID={}", launcher::exec_marker_value(&id, 1)),
            format!("HECATE_INSTANCE_ID={id}"),
            "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        ]
    );
    let missing = l.spawn(CommandSpec::new("/no/such/program")).await;
    assert_eq!(
        missing.expect_err("missing").kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(l.stop().await.expect("stop"), 0);
    assert!(!pid_alive(l.pid()));
}

#[actix_rt::test]
async fn commands_lose_dangerous_capabilities_and_gain_no_new_privileges() {
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("caps"))
        .await
        .expect("start");
    let (_, out) = run(
        &l,
        "grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status",
        &[],
    )
    .await;
    let field = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} missing in {out}"))
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    for set in ["CapBnd:", "CapEff:"] {
        let mask = u64::from_str_radix(&field(set), 16).expect("hex");
        for (name, bit) in launcher::DROPPED_CAPABILITIES {
            assert_eq!(mask & (1 << bit), 0, "{name} still in {set}");
        }
    }
    l.stop().await.expect("stop");
}

/// (a) A daemon: double fork, setsid, then `$0` rewritten over argv and
/// environ (the marker variables are gone), in each cgroup mode.
async fn daemon_with_rewritten_title_dies(mode: CgroupMode, by_stop: bool) {
    let name = format!("daemon-{}-{by_stop}", mode.as_str());
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(mode), &instance(&name))
        .await
        .expect("start");
    let script = r#"perl -e 'use POSIX; exit 0 if fork; POSIX::setsid(); exit 0 if fork;
        $0 = "innocent " . ("x" x 8192);
        open F, ">", "$ENV{D}/pid.tmp"; print F $$; close F;
        rename "$ENV{D}/pid.tmp", "$ENV{D}/pid"; sleep 1 while 1' </dev/null >/dev/null 2>&1"#;
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    let (_, _) = run(&l, script, &[("D", &dir)]).await;
    let pid = pid_file(&tmp.path().join("pid")).await;
    assert!(pid_alive(pid));
    let started = start_time(pid).expect("start time");
    // The escape is real: the marker is no longer in its environment, and
    // it is in its own session, orphaned.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&environ).contains("HECATE_EXEC_ID="));
    // Its first parent exits right after forking it: the reparenting may
    // land a moment after the pid file.
    assert!(
        eventually(Duration::from_secs(10), || ppid_of(pid) == Some(l.pid())).await,
        "orphan went to the launcher: parent {:?}",
        ppid_of(pid)
    );
    if by_stop {
        assert_eq!(l.stop().await.expect("stop"), 0);
        assert!(!pid_alive(l.pid()));
    } else {
        assert_eq!(l.kill(1).await.expect("kill"), 0);
    }
    assert!(!same_process_alive(pid, started), "daemon survived");
    if !by_stop {
        l.stop().await.expect("stop");
    }
    for dir in cgroup_dirs(&l) {
        assert!(!Path::new(&dir).exists(), "{dir} left behind");
    }
}

#[actix_rt::test]
async fn daemon_that_rewrites_its_title_dies_on_kill() {
    daemon_with_rewritten_title_dies(CgroupMode::Auto, false).await;
    daemon_with_rewritten_title_dies(CgroupMode::V1, false).await;
    // Without cgroups a daemon that left the command's session and erased
    // its marker cannot be told apart from other commands' processes: only
    // stopping the instance (every descendant) reaches it (see below).
}

#[actix_rt::test]
async fn daemon_that_rewrites_its_title_dies_on_stop() {
    daemon_with_rewritten_title_dies(CgroupMode::Auto, true).await;
    daemon_with_rewritten_title_dies(CgroupMode::Off, true).await;
}

/// (b) Pid hopping: 2,000 generations of fork, parent exits, child
/// setsid, killed while it hops.
async fn pid_hopping_leaves_no_survivor(mode: CgroupMode) {
    let name = format!("hop-{}", mode.as_str());
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(mode), &instance(&name))
        .await
        .expect("start");
    let script = r#"perl -e 'use POSIX;
        for my $g (1..2000) {
            my $p = fork; next unless defined $p; exit 0 if $p; POSIX::setsid();
            if ($g == 20) { open F, ">", "$ENV{D}/hop.tmp"; print F $$; close F;
                            rename "$ENV{D}/hop.tmp", "$ENV{D}/hop"; }
        }
        sleep 1 while 1' </dev/null >/dev/null 2>&1 &"#;
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    run(&l, script, &[("D", &dir)]).await;
    pid_file(&tmp.path().join("hop")).await;
    let remaining = l.kill(1).await.expect("kill");
    assert_eq!(remaining, 0, "{mode:?}");
    let marker = format!(
        "HECATE_EXEC_ID={}",
        launcher::exec_marker_value(&instance(&name), 1)
    );
    assert_eq!(processes_with_env(&marker), Vec::<u32>::new(), "{mode:?}");
    if has_cgroups(&l, mode) {
        assert!(cgroup_dirs(&l)
            .iter()
            .all(|d| !Path::new(d).join("1").exists()));
    }
    assert_eq!(l.stop().await.expect("stop"), 0);
}

#[actix_rt::test]
async fn pid_hopping_leaves_no_survivor_after_kill() {
    pid_hopping_leaves_no_survivor(CgroupMode::Auto).await;
    pid_hopping_leaves_no_survivor(CgroupMode::V1).await;
    pid_hopping_leaves_no_survivor(CgroupMode::Off).await;
}

/// (c) A process of another user (nobody) that made itself non-dumpable
/// (its environment cannot be read) and daemonised.
#[actix_rt::test]
async fn non_dumpable_process_of_another_user_is_killed() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: needs root and setpriv to switch users");
        return;
    }
    for mode in [CgroupMode::Auto, CgroupMode::Off] {
        let name = format!("nodump-{}", mode.as_str());
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let l = Launcher::start(&config(mode), &instance(&name))
            .await
            .expect("start");
        // prctl(PR_SET_DUMPABLE = 4, 0) is syscall 157 on x86_64, 167 on aarch64.
        let nr = if cfg!(target_arch = "aarch64") {
            167
        } else {
            157
        };
        let script = format!(
            r#"setpriv --reuid=65534 --regid=65534 --clear-groups -- perl -e 'use POSIX;
            exit 0 if fork; POSIX::setsid(); exit 0 if fork;
            syscall({nr}, 4, 0, 0, 0, 0) == 0 or die "prctl: $!";
            open F, ">", "$ENV{{D}}/pid.tmp"; print F $$; close F;
            rename "$ENV{{D}}/pid.tmp", "$ENV{{D}}/pid"; sleep 1 while 1' </dev/null >/dev/null 2>&1"#
        );
        let dir = tmp.path().to_str().expect("utf-8").to_string();
        run(&l, &script, &[("D", &dir)]).await;
        let pid = pid_file(&tmp.path().join("pid")).await;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        assert!(status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")));
        assert!(pid_alive(pid));
        let started = start_time(pid).expect("start time");
        assert_eq!(l.kill(1).await.expect("kill"), 0, "{mode:?}");
        assert!(
            !same_process_alive(pid, started),
            "{mode:?}: non-dumpable process survived"
        );
        l.stop().await.expect("stop");
    }
}

/// A kill answers only once the processes it signalled are dead: a process
/// that SIGKILL already reached is still running its exit (freeing a large
/// memory, here) after its environment (the marker) and its cgroup
/// membership are gone. (This made the non-dumpable test above flaky under
/// load: the kill answered while the daemon was still exiting.)
#[actix_rt::test]
async fn kill_answers_only_when_the_processes_are_dead() {
    for mode in [CgroupMode::Off, CgroupMode::Auto] {
        let name = format!("dying-{}", mode.as_str());
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = Launcher::start(&config(mode), &instance(&name))
            .await
            .expect("start");
        // 768 MiB touched: freeing it takes the exiting process a while.
        let script = r#"perl -e 'use POSIX; exit 0 if fork; POSIX::setsid();
            my $big = "a" x (768 * 1024 * 1024);
            open F, ">", "$ENV{D}/pid.tmp"; print F $$; close F;
            rename "$ENV{D}/pid.tmp", "$ENV{D}/pid"; sleep 1 while 1' </dev/null >/dev/null 2>&1"#;
        let dir = tmp.path().to_str().expect("utf-8").to_string();
        run(&l, script, &[("D", &dir)]).await;
        let pid = pid_file(&tmp.path().join("pid")).await;
        assert_eq!(l.kill(1).await.expect("kill"), 0, "{mode:?}");
        assert!(!pid_alive(pid), "{mode:?}: kill answered before {pid} died");
        l.stop().await.expect("stop");
    }
}

/// (d) The launcher holds no secret: a command reading its parent's
/// environment gets nothing of the runtime's.
#[actix_rt::test]
async fn command_cannot_read_the_runtime_environment_through_its_parent() {
    let own = std::fs::read(format!("/proc/{}/environ", std::process::id())).expect("own env");
    assert!(
        !own.is_empty(),
        "the test process has an environment to leak"
    );
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("ppid-env"))
        .await
        .expect("start");
    let (code, out) = run(
        &l,
        "test $PPID = $LAUNCHER && tr '\\0' '\\n' < /proc/$PPID/environ; echo end",
        &[("LAUNCHER", &l.pid().to_string())],
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(out, "end\n", "the launcher's environment is not empty");
    l.stop().await.expect("stop");
}

/// (d, second half) Once the runtime is hardened, a command of the same
/// user cannot read the runtime's own environ. The probe runs in a child
/// process (hardening is process-wide) and, when started as root, first
/// becomes `nobody`: a root runtime is already out of reach of its
/// commands, which lack some of its capabilities (the kernel lets a process
/// read another's memory and environment only if it holds all of the
/// other's capabilities), so the case that hardening closes is a runtime
/// and commands of one unprivileged user.
#[actix_rt::test]
async fn hardened_runtime_environment_is_unreadable_to_commands() {
    let out = run_probe(
        "launcher::harden_probe",
        &[("HECATE_LAUNCHER_PROBE_SECRET", "s3cret-value")],
        "harden probe done",
    );
    assert!(!out.contains("s3cret-value"), "{out}");
}

/// Run only by [`hardened_runtime_environment_is_unreadable_to_commands`].
#[actix_rt::test]
#[ignore = "run in a child process by hardened_runtime_environment_is_unreadable_to_commands"]
async fn harden_probe() {
    let Ok(secret) = std::env::var("HECATE_LAUNCHER_PROBE_SECRET") else {
        return;
    };
    // SAFETY: process-wide credential calls in a probe process of its own;
    // glibc applies them to every thread.
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
            assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
            // Changing credentials made the process non-dumpable; the
            // control below needs the ordinary state back.
            assert_eq!(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), 0);
        }
    }
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("harden"))
        .await
        .expect("start");
    let me = std::process::id().to_string();
    let script = "tr '\\0' '\\n' < /proc/$RUNTIME/environ | grep -c HECATE_LAUNCHER_PROBE_SECRET";
    // Before: the same command reads it (so the check below means something).
    let (_, before) = run(&l, script, &[("RUNTIME", &me)]).await;
    assert_eq!(before.trim(), "1", "control: the environ was readable");
    launcher::harden_runtime_process().expect("harden");
    let (code, after) = run(&l, script, &[("RUNTIME", &me)]).await;
    assert_ne!(code, Some(0));
    assert!(!after.contains(&secret));
    assert_eq!(after.trim(), "0", "read after hardening: {after}");
    l.stop().await.expect("stop");
    println!("harden probe done");
}

/// (e) Orphans go to the launcher (subreaper), which reaps them: the test
/// process never sees them.
#[actix_rt::test]
async fn orphans_are_reaped_by_the_launcher() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("orphan"))
        .await
        .expect("start");
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    run(
        &l,
        "( sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \"$D/pid\" )",
        &[("D", &dir)],
    )
    .await;
    let pid = pid_file(&tmp.path().join("pid")).await;
    assert_eq!(ppid_of(pid), Some(l.pid()));
    assert_ne!(ppid_of(pid), Some(std::process::id()));
    // SAFETY: kill(2) on a pid this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // Reaped (gone from /proc), not a zombie waiting for anyone.
    assert!(
        eventually(LIMIT, || !Path::new(&format!("/proc/{pid}")).exists()).await,
        "orphan was not reaped"
    );
    l.stop().await.expect("stop");
}

/// (f) Killing one command leaves the background processes of the others.
#[actix_rt::test]
async fn killing_a_command_spares_other_commands_background_processes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("siblings"))
        .await
        .expect("start");
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    let bg = "sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \"$D/$N\"";
    run(&l, bg, &[("D", &dir), ("N", "a")]).await;
    run(&l, bg, &[("D", &dir), ("N", "b")]).await;
    let a = pid_file(&tmp.path().join("a")).await;
    let b = pid_file(&tmp.path().join("b")).await;
    assert_eq!(l.kill(1).await.expect("kill"), 0);
    assert!(!pid_alive(a));
    assert!(pid_alive(b), "another command's background process died");
    assert_eq!(l.stop().await.expect("stop"), 0);
    assert!(!pid_alive(b));
}

/// A spawn future dropped after the launcher started its command but
/// before the future took the answer (its caller gave up at that moment)
/// leaves nothing running: only that future knew the command.
#[actix_rt::test]
async fn a_spawn_dropped_before_its_answer_is_taken_kills_its_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("unclaimed"))
        .await
        .expect("start");
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    let spec = CommandSpec::shell(
        "sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \"$D/pid.new\"; \
         mv \"$D/pid.new\" \"$D/pid\"; exec sleep 1000",
    )
    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
    .env("D", &dir);
    let mut spawn = Box::pin(l.spawn(spec));
    // One poll sends the request; the answer cannot be there yet (the
    // connection task runs on this thread, after this poll).
    assert!(futures_util::FutureExt::now_or_never(spawn.as_mut()).is_none());
    // The command runs (and the launcher's answer is on its way or waiting
    // in the future), and the future is never polled again.
    let child = pid_file(&tmp.path().join("pid")).await;
    drop(spawn);
    assert!(
        eventually(LIMIT, || !pid_alive(child)).await,
        "the abandoned command's process {child} survived"
    );
    // The launcher goes on serving.
    assert_eq!(run(&l, "echo ok", &[]).await, (Some(0), "ok\n".to_string()));
    assert_eq!(l.stop().await.expect("stop"), 0);
}

#[actix_rt::test]
async fn dropping_the_handle_kills_everything_and_the_launcher() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("drop"))
        .await
        .expect("start");
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    run(
        &l,
        "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \"$D/pid\"",
        &[("D", &dir)],
    )
    .await;
    let pid = pid_file(&tmp.path().join("pid")).await;
    let launcher_pid = l.pid();
    drop(l);
    assert!(eventually(LIMIT, || !pid_alive(pid) && !pid_alive(launcher_pid)).await);
}

#[actix_rt::test]
async fn leftover_cgroups_of_a_dead_launcher_are_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = Launcher::start(&config(CgroupMode::Auto), &instance("leftover"))
        .await
        .expect("start");
    if !has_cgroups(&l, CgroupMode::Auto) {
        return;
    }
    let dir = tmp.path().to_str().expect("utf-8").to_string();
    run(
        &l,
        "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \"$D/pid\"",
        &[("D", &dir)],
    )
    .await;
    let pid = pid_file(&tmp.path().join("pid")).await;
    let dirs = cgroup_dirs(&l);
    // SAFETY: kill(2) on the launcher this test started.
    unsafe { libc::kill(l.pid() as i32, libc::SIGKILL) };
    assert!(eventually(LIMIT, || !pid_alive(l.pid())).await);
    assert!(pid_alive(pid), "the command outlived its launcher");
    let report = launcher::remove_leftover_cgroups(false);
    for d in &dirs {
        assert!(
            report.removed.iter().any(|r| r == Path::new(d)),
            "{d} not in {report:?}"
        );
        assert!(!Path::new(d).exists());
    }
    assert!(eventually(LIMIT, || !pid_alive(pid)).await);
}

/// Not a check: where the time of one command goes (spawn answered, exit
/// reported), for the launcher alone. `--ignored --nocapture`.
#[actix_rt::test]
#[ignore]
async fn measure_launcher_round_trips() {
    let l = Launcher::start(&config(CgroupMode::Off), &instance("measure"))
        .await
        .expect("start");
    let _strace = std::env::var("MEASURE_PERF").ok().map(|out| {
        let c = std::process::Command::new("perf")
            .args(["record", "-o", &out, "-p", &l.pid().to_string()])
            .spawn()
            .expect("strace");
        std::thread::sleep(Duration::from_millis(500));
        c
    });
    let (mut spawn_t, mut exit_t) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let (_r, w) = pipe();
        let t = std::time::Instant::now();
        let cmd = l
            .spawn(CommandSpec::new("/bin/true").stdout(w))
            .await
            .expect("spawn");
        spawn_t.push(t.elapsed());
        let t = std::time::Instant::now();
        cmd.exit.await.expect("exit");
        exit_t.push(t.elapsed());
    }
    spawn_t.sort();
    exit_t.sort();
    // utime + stime of the launcher itself (clock ticks, usually 100/s).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", l.pid())).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..].split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    println!(
        "spawn min {:?} median {:?}; exit min {:?} median {:?}; launcher cpu {} ms for 200",
        spawn_t[0],
        spawn_t[100],
        exit_t[0],
        exit_t[100],
        ticks * 10
    );
    l.stop().await.expect("stop");
}
