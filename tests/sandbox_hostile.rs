//! A hostile pass over the sandbox backend: what an agent would try next
//! once files, processes and the network are closed — descriptors the
//! runtime left open, PID 1's memory and environment, ptrace, `setns` via
//! `/proc/<pid>/ns`, nested user namespaces, `/proc` and `/sys` writes,
//! `kill -9 -1`, host paths in `/proc/self/mountinfo`, and abstract unix
//! sockets (private in `isolated` mode, the host's in `host` mode, as the
//! README says). Each test skips, saying why, where no sandbox can be made.

use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use hecate::launcher::sandbox::{NetworkMode, WORKSPACE};
use hecate::provider::local::{LocalInstance, LocalProvider};
use hecate::{ExecSpec, Instance};

use crate::helper::instances::{
    fg, run_text as run, sandbox_available as available, sandbox_provider as provider,
    start_local as start,
};
use crate::helper::{eventually, local_config, pid_alive};

/// A descriptor of the host's `/` opened WITHOUT close-on-exec, as an
/// embedder (or a careless library) might leave one: closed when dropped.
fn leaked_root_descriptor() -> OwnedFd {
    // SAFETY: a valid C string; the descriptor is owned by the result.
    let fd = unsafe { libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open /: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor, ours alone.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Neither backend passes on a descriptor the runtime's process holds
/// without close-on-exec: the command's shell has 0, 1 and 2 only, so a
/// directory descriptor of the host cannot take a sandboxed command out
/// of its root (`fchdir`), nor a socket reach the runtime's peers.
#[actix_rt::test]
async fn no_descriptor_of_the_runtime_reaches_a_command() {
    let leaked = leaked_root_descriptor();
    let n = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    let script = format!("ls /proc/$$/fd; ls /proc/$$/fd/{n}/ 2>/dev/null && echo ESCAPED; true");
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = LocalProvider::new(&local_config(tmp.path().join("root"))).expect("local");
    let mut providers = vec![plain];
    if available() {
        providers.push(provider(|_| {}).1);
    }
    for p in &providers {
        let inst = start(p, "fds").await;
        let (code, text) = run(&inst, &script).await;
        assert_eq!(
            (code, text.as_str()),
            (0, "0\n1\n2\n"),
            "{}",
            hecate::Provider::name(p)
        );
        inst.stop().await.expect("stop");
    }
    drop(leaked);
}

#[actix_rt::test]
async fn pid_1_cannot_be_read_traced_or_entered() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let inst = start(&p, "t").await;
    let script = r#"
        cat /proc/1/environ >/dev/null 2>&1 && echo ENVIRON
        head -c 1 /proc/1/mem >/dev/null 2>&1 && echo MEM
        ls /proc/1/fd >/dev/null 2>&1 && echo FDS
        ls /proc/1/ns >/dev/null 2>&1 && echo NS
        nsenter -t 1 -m -p -n true >/dev/null 2>&1 && echo NSENTER
        python3 - <<'EOF'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
# PTRACE_ATTACH = 16, PTRACE_SEIZE = 0x4206
for req in (16, 0x4206):
    if libc.ptrace(req, 1, 0, 0) == 0:
        print("PTRACE", req)
for ns in ("mnt", "pid", "net", "user"):
    try:
        fd = os.open("/proc/1/ns/" + ns, os.O_RDONLY)
    except OSError:
        continue
    if libc.setns(fd, 0) == 0:
        print("SETNS", ns)
EOF
        echo done
    "#;
    let (code, text) = run(&inst, script).await;
    assert_eq!((code, text.as_str()), (0, "done\n"));
    inst.stop().await.expect("stop");
}

/// No nested user namespace hands a command capabilities back (to mount,
/// or to reach kernel code only root of some namespace may call), and the
/// limit that forbids them cannot be raised from inside.
#[actix_rt::test]
async fn no_nested_user_namespace_and_no_writable_kernel_setting() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let inst = start(&p, "t").await;
    let script = r#"
        unshare -U true 2>/dev/null && echo USERNS
        unshare -Urm sh -c 'mount -t tmpfs x /tmp && echo MOUNTED' 2>/dev/null
        for f in /proc/sys/user/max_user_namespaces /proc/sys/kernel/core_pattern \
                 /proc/sys/vm/drop_caches /proc/sys/kernel/hostname /proc/sysrq-trigger; do
            (echo 1 > $f) 2>/dev/null && echo "WROTE $f"
        done
        test -e /sys && echo SYS
        mkdir -p s; mount -t sysfs sysfs s 2>/dev/null && echo SYSFS
        mount -t proc proc s 2>/dev/null && echo PROC
        cat /proc/sys/user/max_user_namespaces
    "#;
    let (code, text) = run(&inst, script).await;
    assert_eq!((code, text.as_str()), (0, "0\n"));
    inst.stop().await.expect("stop");
}

/// `kill -9 -1` inside reaches only the task's own processes: PID 1 (the
/// launcher) survives it and serves the next command; another task's job
/// and the runtime are untouched.
#[actix_rt::test]
async fn kill_minus_one_ends_only_the_tasks_own_processes() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let a = start(&p, "a").await;
    let b = start(&p, "b").await;
    for inst in [&a, &b] {
        let job = inst
            .exec(ExecSpec {
                background: true,
                ..fg("exec sleep 1000")
            })
            .await
            .expect("job");
        assert!(job.job.is_some());
    }
    assert!(
        eventually(Duration::from_secs(30), || sleeps(&a).len() == 1
            && sleeps(&b).len() == 1)
        .await
    );
    let b_sleep = sleeps(&b);
    // bash's `kill` spares the shell itself (and the kernel spares PID 1).
    assert_eq!(
        run(&a, "kill -9 -1; echo survived").await,
        (0, "survived\n".to_string())
    );
    // A's own job went with it; its launcher (PID 1) did not.
    assert!(eventually(Duration::from_secs(30), || sleeps(&a).is_empty()).await);
    assert!(pid_alive(a.launcher_pid()));
    assert_eq!(run(&a, "echo alive").await, (0, "alive\n".to_string()));
    // B's job and the runtime are untouched.
    assert_eq!(sleeps(&b), b_sleep);
    assert_eq!(run(&b, "echo ok").await, (0, "ok\n".to_string()));
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

/// The host pids of `inst`'s `sleep` processes.
fn sleeps(inst: &LocalInstance) -> Vec<u32> {
    crate::helper::processes_with_env(&format!("HECATE_INSTANCE_ID={}", inst.id()))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
        .collect()
}

/// `/proc/self/mountinfo` lists only the allow-list's mounts. Its root
/// field shows the host path of the task's OWN work directory (the kernel
/// reports a bind mount's source path; the README says so), never another
/// task's, nor the host's other directories.
#[actix_rt::test]
async fn mountinfo_shows_the_allow_list_and_no_other_tasks_path() {
    if !available() {
        return;
    }
    let (_tmp, p) = provider(|_| {});
    let a = start(&p, "a").await;
    let b = start(&p, "b").await;
    let (code, text) = run(&a, "cat /proc/self/mountinfo").await;
    assert_eq!(code, 0);
    let mut points = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, point) = (fields[3], fields[4]);
        points.insert(point.to_string());
        assert!(!line.contains(b.id()), "b's path in a's mountinfo: {line}");
        if point == WORKSPACE {
            assert_eq!(Path::new(root), a.work_dir(), "{line}");
        }
    }
    let mut allowed: BTreeSet<String> = [
        "/",
        "/workspace",
        "/tmp",
        "/proc",
        "/dev",
        "/dev/shm",
        "/dev/pts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
        allowed.insert(format!("/dev/{dev}"));
    }
    for dir in ["usr", "bin", "sbin", "lib", "lib64", "lib32", "etc"] {
        allowed.insert(format!("/{dir}"));
    }
    let extra: Vec<_> = points.difference(&allowed).collect();
    // Mounts the host has below an allowed directory (rare) come along
    // with the recursive bind; nothing else may appear.
    for point in &extra {
        assert!(
            ["/usr/", "/etc/", "/lib/", "/lib64/"]
                .iter()
                .any(|d| point.starts_with(d)),
            "unexpected mount {point}: {text}"
        );
    }
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

/// Abstract unix sockets belong to a network namespace: an `isolated`
/// sandbox cannot reach one the host listens on; in `host` mode it can (the
/// README lists this under what `host` shares).
#[actix_rt::test]
async fn abstract_unix_sockets_are_private_when_isolated_and_shared_in_host_mode() {
    if !available() {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let name = format!("hecate-test-abstract-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract");
    let connect = format!(
        r#"python3 -c '
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\0{name}")
    print("CONNECTED")
except OSError:
    print("refused")
'"#
    );
    for (mode, expected) in [
        (NetworkMode::Isolated, "refused\n"),
        (NetworkMode::Host, "CONNECTED\n"),
    ] {
        let (_tmp, p) = provider(|c| c.sandbox.network = mode);
        let inst = start(&p, "t").await;
        assert_eq!(
            run(&inst, &connect).await,
            (0, expected.to_string()),
            "{mode:?}"
        );
        inst.stop().await.expect("stop");
    }
    drop(listener);
}
