//! The sandbox backend on a root filesystem image (`HECATE_SANDBOX_ROOTFS`)
//! that the test builds itself from Debian's static busybox: commands see
//! the image's `/bin` and nothing of the host's system directories,
//! `/workspace` is writable, and the image itself is never written (its
//! entries are bound read-only). Skips, saying why, where no sandbox can be
//! made or no static busybox is installed (`.ci/run` installs
//! `busybox-static`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hecate::launcher::sandbox;
use hecate::provider::local::LocalProvider;
use hecate::{ExecRequest, ExecSpec, Instance, Provider, Runtime, StartSlot, StartSpec};

use crate::helper::instances::fg;
use crate::helper::sandbox_config;

/// Where Debian installs busybox.
const BUSYBOX: &[&str] = &["/usr/bin/busybox", "/bin/busybox"];

/// What the image's `/etc/hecate-image` says, so a command can tell it
/// runs on the image.
const MARK: &str = "busybox image for hecate tests";

/// Whether the ELF file `bytes` names a program interpreter (is
/// dynamically linked): it then needs the host's libraries, which an image
/// does not have.
fn is_dynamic(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // ELF64 little-endian: e_phoff at 0x20, e_phentsize at 0x36, e_phnum
    // at 0x38; p_type PT_INTERP = 3.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return true;
    }
    let (Some(off), Some(size), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..usize::from(num)).any(|i| u32_at(off as usize + i * usize::from(size)) == Some(3))
}

/// A static busybox on this machine, or `None` with the reason printed.
fn static_busybox() -> Option<PathBuf> {
    let Some(path) = BUSYBOX.iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("skipping: no busybox (apt-get install busybox-static)");
        return None;
    };
    let bytes = std::fs::read(path).expect("read busybox");
    if is_dynamic(&bytes) {
        eprintln!(
            "skipping: {} is not statically linked (apt-get install busybox-static)",
            path.display()
        );
        return None;
    }
    Some(path.to_path_buf())
}

/// Builds a tiny root filesystem in `dir`: `bin/busybox` with a symlink
/// per applet (no bash), and `etc/hecate-image`.
fn build_image(dir: &Path, busybox: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::create_dir_all(dir.join("etc")).expect("mkdir etc");
    std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    let list = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let applets = String::from_utf8(list.stdout).expect("applet names");
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet == "bash" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    std::fs::write(dir.join("etc/hecate-image"), format!("{MARK}\n")).expect("mark");
}

/// Every path under `dir` with its size and mode (symlinks not followed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let meta = std::fs::symlink_metadata(e.path()).expect("metadata");
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (meta.len(), meta.mode()));
        }
    }
    out
}

/// A temporary directory holding `image/` (built) and `root/` (the
/// instances), or `None` where this cannot run.
fn setup() -> Option<(tempfile::TempDir, PathBuf)> {
    if let Err(why) = sandbox::probe() {
        eprintln!("skipping: {why}");
        return None;
    }
    let busybox = static_busybox()?;
    // A private (0700) temporary directory: the sandbox must reach the
    // image all the same.
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("image");
    build_image(&image, &busybox);
    Some((tmp, image))
}

async fn run(inst: &dyn Instance, command: &str) -> (i32, String) {
    let out = inst.exec(fg(command)).await.expect("exec");
    let text = format!("{}{}", out.stdout.to_text(), out.stderr.to_text());
    (out.exit_code, text)
}

#[actix_rt::test]
async fn commands_see_the_images_bin_and_cannot_write_the_image() {
    let Some((tmp, image)) = setup() else {
        return;
    };
    let before = snapshot(&image);
    let mut config = sandbox_config(tmp.path().join("root"));
    config.sandbox.rootfs = Some(image.clone());
    let p = LocalProvider::new_sandbox(&config).expect("provider");
    // No bash in the image: commands run with its /bin/sh, unwrapped.
    assert!(!p.supports_persistent_shell());
    let inst = p
        .start_local(StartSpec {
            task_id: "img".into(),
            ttl: None,
            metadata: Default::default(),
            create_slot: StartSlot::detached(),
            task_spec: None,
        })
        .await
        .expect("start");

    // The image's files, its /bin, and nothing of the host's.
    assert_eq!(
        run(&inst, "cat /etc/hecate-image; readlink /bin/sh").await,
        (0, format!("{MARK}\nbusybox\n"))
    );
    assert_eq!(
        run(&inst, "ls / | tr '\\n' ' '").await,
        (0, "bin dev etc proc tmp workspace ".to_string())
    );
    for host_path in ["/usr", "/bin/bash", "/lib", "/etc/passwd", "/etc/hostname"] {
        let (code, text) = run(&inst, &format!("test -e {host_path}")).await;
        assert_eq!(code, 1, "{host_path} is visible: {text}");
    }

    // /workspace is the writable work directory, shared with the host's
    // instance directory.
    assert_eq!(
        run(&inst, "pwd; echo data > f; cat /workspace/f").await,
        (0, "/workspace\ndata\n".to_string())
    );
    assert_eq!(
        std::fs::read_to_string(inst.work_dir().join("f")).expect("work file"),
        "data\n"
    );

    // The image is read-only, from every angle a command might try.
    for attempt in [
        "touch /bin/x",
        "echo x > /etc/hecate-image",
        "rm /bin/busybox",
        "ln -sf /workspace/f /bin/ls",
        "mkdir /new",
        "chmod 777 /bin/busybox",
        "mount -o remount,rw /bin",
    ] {
        let (code, text) = run(&inst, attempt).await;
        assert_ne!(code, 0, "`{attempt}` succeeded: {text}");
    }
    // A background job runs with the image's shell too.
    let job = inst
        .exec(ExecSpec {
            background: true,
            ..fg("echo from-job")
        })
        .await
        .expect("job")
        .job
        .expect("job info");
    let wait = format!(
        "for i in $(seq 200); do test -f {exit} && break; sleep 0.05; done; cat {exit} {log}",
        exit = job.exit_file,
        log = job.log_file
    );
    assert_eq!(run(&inst, &wait).await, (0, "0\nfrom-job\n".to_string()));
    inst.stop().await.expect("stop");
    assert_eq!(snapshot(&image), before, "the image changed");
    assert_eq!(
        std::fs::read_to_string(image.join("etc/hecate-image")).expect("mark"),
        format!("{MARK}\n")
    );
}

/// Through the runtime, with the persistent shell on (the default): an
/// image without bash runs commands unwrapped, and says nothing odd.
#[actix_rt::test]
async fn a_runtime_on_an_image_without_bash_runs_commands_unwrapped() {
    let Some((tmp, image)) = setup() else {
        return;
    };
    let mut config = sandbox_config(tmp.path().join("root"));
    config.sandbox.rootfs = Some(image);
    assert!(config.shell.persistent);
    let rt = Runtime::start(config).expect("runtime");
    let out = rt
        .exec(
            "t",
            ExecRequest::new("cd /tmp && pwd; cat /etc/hecate-image"),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.to_text(), format!("/tmp\n{MARK}\n"));
    assert_eq!(out.stderr.to_text(), "");
    // Without the wrapper the directory does not carry over.
    let out = rt.exec("t", ExecRequest::new("pwd")).await.expect("exec");
    assert_eq!(out.stdout.to_text(), "/workspace\n");
    assert!(rt
        .shutdown(Duration::from_secs(30))
        .await
        .expect("shutdown")
        .is_clean());
}

#[test]
fn a_dynamic_elf_is_told_from_a_static_one() {
    // The host's bash is dynamically linked on every distribution we run.
    let bash = std::fs::read("/bin/bash").expect("bash");
    assert!(is_dynamic(&bash));
    assert!(is_dynamic(b"#!/bin/sh\n"));
    if let Some(busybox) = BUSYBOX.iter().find(|p| Path::new(p).exists()) {
        let bytes = std::fs::read(busybox).expect("busybox");
        // Debian's busybox-static, or its dynamic sibling: either answer
        // must agree with the program interpreter the file names.
        let names_interp = bytes.windows(10).any(|w| w == b"/lib64/ld-");
        assert_eq!(is_dynamic(&bytes), names_interp);
    }
}
