//! The launcher's sandbox, for real: the `hecate` binary started as a
//! sandboxed launcher, and commands that look around, write, listen,
//! connect, allocate and fork inside it. Each test skips (with a note)
//! where `sandbox::probe` says namespaces cannot be made.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hecate::launcher::sandbox::{self, Isolation, LimitMode, NetworkMode, SandboxSpec};
use hecate::launcher::{CgroupMode, CommandSpec, Launcher, LauncherConfig};

use crate::helper::instances::sandbox_available as available;
use crate::helper::{eventually, pid_alive, processes_with_env};

/// How long a test waits for a command or an outside condition.
const LIMIT: Duration = Duration::from_secs(30);

const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn config(spec: Option<SandboxSpec>) -> LauncherConfig {
    LauncherConfig {
        program: Some(env!("CARGO_BIN_EXE_hecate").into()),
        cgroups: CgroupMode::Auto,
        reply_timeout: Duration::from_secs(30),
        sandbox: spec,
    }
}

fn instance(name: &str) -> String {
    format!("sb-{name}-{}", std::process::id())
}

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

/// Runs `program args` with PATH only; returns (exit code, stdout+stderr).
async fn run_argv(l: &Launcher, program: &str, args: &[&str]) -> (Option<i32>, String) {
    let (mut out, w) = pipe();
    let err = w.try_clone().expect("dup");
    let mut spec = CommandSpec::new(program)
        .env("PATH", PATH)
        .stdout(w)
        .stderr(err);
    for a in args {
        spec = spec.arg(*a);
    }
    let cmd = l.spawn(spec).await.expect("spawn");
    let status = tokio::time::timeout(LIMIT, cmd.exit)
        .await
        .expect("exit in time")
        .expect("exit");
    // Background processes of the command may hold the pipe: kill them.
    l.kill(cmd.id).await.expect("kill");
    let text = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).expect("read output");
        s
    })
    .await
    .expect("reader");
    (status.code().or(status_signal(&status)), text)
}

/// 128 + signal for a killed process, the shell's convention.
fn status_signal(status: &std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(status).map(|s| 128 + s)
}

async fn sh(l: &Launcher, script: &str) -> (Option<i32>, String) {
    run_argv(l, "/bin/bash", &["-c", script]).await
}

async fn python(l: &Launcher, code: &str) -> (Option<i32>, String) {
    run_argv(l, "/usr/bin/python3", &["-c", code]).await
}

fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The pids of every process below `root` on the host.
fn host_descendants(root: u32) -> Vec<u32> {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if let Some(ppid) = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    parent
        .keys()
        .copied()
        .filter(|pid| {
            let mut p = *pid;
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(pp) if *pp == root => return true,
                    Some(pp) => p = *pp,
                    None => return false,
                }
            }
            false
        })
        .collect()
}

fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .count()
}

#[actix_rt::test]
async fn probe_answers_and_a_sandbox_reports_what_it_applied() {
    if !available() {
        return;
    }
    let wd = workdir();
    let l = Launcher::start(
        &config(Some(SandboxSpec::new(wd.path()))),
        &instance("report"),
    )
    .await
    .expect("start");
    let report = l.sandbox().expect("a sandbox report").clone();
    assert!(
        matches!(report.isolation, Isolation::UserNamespace { uid, .. } if uid >= sandbox::SANDBOX_ID_BASE),
        "{report:?}"
    );
    assert_eq!(report.network, NetworkMode::Isolated);
    assert_eq!(report.limits.memory, LimitMode::Unlimited);
    let (code, out) = sh(&l, "id -u; pwd; hostname").await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, format!("0\n{}\nsandbox\n", sandbox::WORKSPACE));
    l.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_command_sees_only_its_processes_and_the_allowed_files() {
    if !available() {
        return;
    }
    let wd = workdir();
    let other = workdir();
    std::fs::write(other.path().join("secret"), "other").expect("write");
    std::fs::write(wd.path().join("seed"), "seeded").expect("write");
    let l = Launcher::start(
        &config(Some(SandboxSpec::new(wd.path()))),
        &instance("view"),
    )
    .await
    .expect("start");
    let other_dir = other.path().display().to_string();
    let script = format!(
        r#"
        echo "self=$$"
        echo "procs=$(ls /proc | grep -c '^[0-9]')"
        echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline | cut -d' ' -f2)"
        for p in /root /home {other_dir} /sys /run /work; do test -e "$p" && echo "visible $p"; done
        touch /etc/x 2>/dev/null && echo "wrote /etc"
        touch /usr/x 2>/dev/null && echo "wrote /usr"
        touch /x 2>/dev/null && echo "wrote /"
        echo made > /workspace/made && echo ws-ok
        echo t > /tmp/t && echo tmp-ok
        cat /workspace/seed; echo
        mount -t tmpfs none /tmp 2>/dev/null && echo "mounted"
        mknod /tmp/null c 1 3 2>/dev/null && echo "mknod"
        unshare -m true 2>/dev/null && echo "unshared"
        ls /dev | tr '\n' ' '
        "#
    );
    let (code, out) = sh(&l, &script).await;
    assert_eq!(code, Some(0), "{out}");
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_string()
    };
    // PID 1 is the launcher; bash, ls and grep are the only others.
    assert_eq!(line("pid1="), "__launcher", "{out}");
    let procs: u32 = line("procs=").parse().expect("count");
    assert!(procs <= 6, "{procs} processes visible:\n{out}");
    let me: u32 = line("self=").parse().expect("pid");
    assert!(me < 10, "the command's pid in the namespace: {me}");
    for bad in ["visible", "wrote", "mounted", "mknod", "unshared"] {
        assert!(!out.contains(bad), "{bad}:\n{out}");
    }
    assert!(out.contains("ws-ok") && out.contains("tmp-ok"), "{out}");
    assert!(out.contains("seeded"), "{out}");
    assert!(out.contains("null") && out.contains("urandom"), "{out}");
    assert_eq!(
        std::fs::read_to_string(wd.path().join("made")).expect("in the host work dir"),
        "made\n"
    );
    l.stop().await.expect("stop");
}

/// A python program that listens on 127.0.0.1:8000, says so in
/// /workspace/bound, waits for /workspace/go, then connects to that port
/// and prints what its own server sent (`name`).
fn listener(name: &str) -> String {
    format!(
        r#"
import os, socket, time
s = socket.socket(); s.bind(("127.0.0.1", 8000)); s.listen(1)
open("/workspace/bound", "w").write("1")
for _ in range(600):
    if os.path.exists("/workspace/go"): break
    time.sleep(0.05)
c = socket.create_connection(("127.0.0.1", 8000), timeout=10)
a, _ = s.accept(); a.sendall(b"{name}"); a.close()
print("got", c.recv(16).decode())
"#
    )
}

#[actix_rt::test]
async fn two_sandboxes_bind_the_same_port_and_reach_only_their_own() {
    if !available() {
        return;
    }
    let (wa, wb) = (workdir(), workdir());
    let a = Launcher::start(
        &config(Some(SandboxSpec::new(wa.path()))),
        &instance("neta"),
    )
    .await
    .expect("start a");
    let b = Launcher::start(
        &config(Some(SandboxSpec::new(wb.path()))),
        &instance("netb"),
    )
    .await
    .expect("start b");
    let (la, lb) = (listener("alpha"), listener("beta"));
    let run_a = python(&a, &la);
    let run_b = python(&b, &lb);
    let go = async {
        // Both hold 127.0.0.1:8000 at once before either connects.
        assert!(
            eventually(LIMIT, || wa.path().join("bound").exists()
                && wb.path().join("bound").exists())
            .await,
            "both should bind"
        );
        std::fs::write(wa.path().join("go"), "").expect("go");
        std::fs::write(wb.path().join("go"), "").expect("go");
    };
    let ((ca, oa), (cb, ob), ()) = tokio::join!(run_a, run_b, go);
    assert_eq!((ca, oa.as_str()), (Some(0), "got alpha\n"));
    assert_eq!((cb, ob.as_str()), (Some(0), "got beta\n"));
    a.stop().await.expect("stop");
    b.stop().await.expect("stop");
}

#[actix_rt::test]
async fn isolated_network_cannot_reach_the_hosts_loopback_but_host_mode_can() {
    if !available() {
        return;
    }
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = server.local_addr().expect("addr").port();
    let probe = format!(
        r#"
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5); print("connected")
except ConnectionRefusedError: print("refused")
"#
    );
    let wd = workdir();
    let iso = Launcher::start(&config(Some(SandboxSpec::new(wd.path()))), &instance("iso"))
        .await
        .expect("start");
    assert_eq!(python(&iso, &probe).await, (Some(0), "refused\n".into()));
    iso.stop().await.expect("stop");
    let mut spec = SandboxSpec::new(wd.path());
    spec.network = NetworkMode::Host;
    let host = Launcher::start(&config(Some(spec)), &instance("hostnet"))
        .await
        .expect("start");
    assert_eq!(host.sandbox().expect("report").network, NetworkMode::Host);
    assert_eq!(python(&host, &probe).await, (Some(0), "connected\n".into()));
    host.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_memory_hog_is_killed_by_the_limit_and_reported() {
    if !available() {
        return;
    }
    let wd = workdir();
    let mut spec = SandboxSpec::new(wd.path());
    spec.memory_limit = Some(64 << 20);
    let l = Launcher::start(&config(Some(spec)), &instance("oom"))
        .await
        .expect("start");
    let report = l.sandbox().expect("report").clone();
    if report.limits.memory != LimitMode::Cgroup {
        eprintln!("skipping the OOM part: no writable memory cgroup ({report:?})");
        l.stop().await.expect("stop");
        return;
    }
    assert_eq!(sandbox::oom_kills(&report), Some(0));
    // `tail` keeps the whole newline-free input: 256 MiB, bounded even if
    // the limit did not hold.
    let (code, out) = sh(
        &l,
        "exec tail -c 268435456 <(head -c 268435456 /dev/zero) >/dev/null",
    )
    .await;
    assert_eq!(code, Some(128 + libc::SIGKILL), "{out}");
    let kills = sandbox::oom_kills(&report).expect("count");
    assert!(kills >= 1, "oom kills: {kills}");
    // The instance lives on after the kill.
    assert_eq!(sh(&l, "echo alive").await, (Some(0), "alive\n".into()));
    l.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_fork_loop_is_stopped_by_the_pids_limit() {
    if !available() {
        return;
    }
    let wd = workdir();
    let mut spec = SandboxSpec::new(wd.path());
    spec.pids_limit = Some(64);
    let l = Launcher::start(&config(Some(spec)), &instance("pids"))
        .await
        .expect("start");
    assert_eq!(
        l.sandbox().expect("report").limits.pids,
        LimitMode::Cgroup,
        "a pids cgroup is writable on this machine (root): {:?}",
        l.cgroups()
    );
    // Python rather than a bash loop: bash retries a failed fork for
    // seconds before giving up.
    let code = r#"
import errno, os, time
n = 0
for i in range(1000):
    try:
        pid = os.fork()
    except OSError as e:
        print("EAGAIN" if e.errno == errno.EAGAIN else e); break
    if pid == 0:
        time.sleep(5); os._exit(0)
    n += 1
print(n)
"#;
    let (status, out) = python(&l, code).await;
    assert_eq!(status, Some(0), "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("EAGAIN"), "{out}");
    let forked: u32 = lines.next().expect("count").parse().expect("number");
    assert!(forked < 64, "{forked} forks under a limit of 64");
    l.stop().await.expect("stop");
}

#[actix_rt::test]
async fn stop_leaves_no_process_mount_or_cgroup() {
    if !available() {
        return;
    }
    let wd = workdir();
    let mut spec = SandboxSpec::new(wd.path());
    spec.memory_limit = Some(256 << 20);
    spec.pids_limit = Some(128);
    let mounts_before = mount_count();
    let id = instance("stop");
    let l = Launcher::start(&config(Some(spec)), &id)
        .await
        .expect("start");
    let report = l.sandbox().expect("report").clone();
    // A daemon that leaves its session, and a plain background sleep.
    let (code, _) = sh(&l, "setsid sleep 1000 & sleep 1000 & echo started").await;
    assert_eq!(code, Some(0));
    let cmd = l
        .spawn(CommandSpec::shell("sleep 1000").env("PATH", PATH))
        .await
        .expect("spawn");
    let launcher = l.pid();
    let inside = host_descendants(launcher);
    assert!(
        inside.len() >= 3,
        "launcher, PID 1 and the sleeps: {inside:?}"
    );
    let mut dirs: Vec<PathBuf> = l
        .cgroups()
        .iter()
        .filter_map(|c| c.split_once(':').map(|(_, d)| PathBuf::from(d)))
        .collect();
    if let Some(events) = &report.limits.oom_events {
        dirs.push(events.parent().expect("cgroup dir").to_path_buf());
    }
    assert!(dirs.iter().all(|d| d.exists()), "{dirs:?}");
    assert_eq!(l.stop().await.expect("stop"), 0);
    let _ = tokio::time::timeout(LIMIT, cmd.exit).await;
    assert!(!pid_alive(launcher), "launcher gone");
    for pid in inside {
        assert!(!pid_alive(pid), "{pid} survived the stop");
    }
    assert!(processes_with_env(&format!("HECATE_INSTANCE_ID={id}")).is_empty());
    assert_eq!(mount_count(), mounts_before, "no mount reached the host");
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[actix_rt::test]
async fn without_a_user_namespace_commands_have_no_capability() {
    if !available() || unsafe { libc::geteuid() } != 0 {
        return;
    }
    let wd = workdir();
    let mut spec = SandboxSpec::new(wd.path());
    spec.user_namespace = false;
    let l = Launcher::start(&config(Some(spec)), &instance("capdrop"))
        .await
        .expect("start");
    assert!(matches!(
        l.sandbox().expect("report").isolation,
        Isolation::CapabilityDrop { .. }
    ));
    let (code, out) = sh(
        &l,
        "grep -E '^Cap(Bnd|Prm|Eff|Inh):' /proc/self/status | tr -s '\\t' ' '; \
         grep NoNewPrivs /proc/self/status | tr -s '\\t' ' '; \
         mount -t tmpfs none /tmp 2>/dev/null && echo mounted; \
         touch /etc/x 2>/dev/null && echo wrote; echo /proc: $(ls /proc | grep -c '^[0-9]')",
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    for set in ["CapBnd", "CapPrm", "CapEff", "CapInh"] {
        assert!(
            out.contains(&format!("{set}: 0000000000000000")),
            "{set}:\n{out}"
        );
    }
    assert!(out.contains("NoNewPrivs: 1"), "{out}");
    assert!(!out.contains("mounted") && !out.contains("wrote"), "{out}");
    l.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_rootfs_replaces_the_host_allow_list() {
    if !available() {
        return;
    }
    // The host's own root as a "rootfs": everything at its top level but
    // proc, dev, sys and tmp appears read-only, /srv included (which the
    // default allow-list hides).
    let wd = workdir();
    let mut spec = SandboxSpec::new(wd.path());
    spec.rootfs = Some("/".into());
    let l = Launcher::start(&config(Some(spec)), &instance("rootfs"))
        .await
        .expect("start");
    let (code, out) = sh(
        &l,
        "test -d /srv && echo srv; touch /srv/x 2>/dev/null && echo wrote; ls /tmp | wc -l",
    )
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "srv\n0\n"));
    l.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_missing_work_directory_fails_the_start_with_the_reason() {
    if !available() {
        return;
    }
    let err = Launcher::start(
        &config(Some(SandboxSpec::new("/nonexistent/hecate-workdir"))),
        &instance("nowd"),
    )
    .await
    .expect_err("no work dir");
    assert_eq!(err.kind(), hecate::ErrorKind::Config);
    assert!(err.to_string().contains("work directory"), "{err}");
}

/// Median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Start and exec costs, sandbox versus plain launcher (20 runs each,
/// medians). Not an assertion: run with
/// `cargo test --test tests sandbox::measure -- --ignored --nocapture`.
#[actix_rt::test]
#[ignore]
async fn measure() {
    if !available() {
        return;
    }
    let wd = workdir();
    for (label, spec) in [
        ("plain", None),
        ("sandbox", Some(SandboxSpec::new(wd.path()))),
    ] {
        let (mut starts, mut execs) = (Vec::new(), Vec::new());
        for i in 0..20 {
            let t = Instant::now();
            let l = Launcher::start(&config(spec.clone()), &instance(&format!("m{label}{i}")))
                .await
                .expect("start");
            starts.push(t.elapsed());
            // Spawn to exit only: the kill that follows differs by design
            // (cgroups outside, descent inside).
            let t = Instant::now();
            let cmd = l.spawn(CommandSpec::new("/bin/true")).await.expect("spawn");
            let status = cmd.exit.await.expect("exit");
            execs.push(t.elapsed());
            assert!(status.success());
            l.stop().await.expect("stop");
        }
        println!(
            "{label}: start median {:?}, exec of true median {:?}",
            median(starts),
            median(execs)
        );
    }
}
