//! The sandbox's filesystem view, built by PID 1 in its new mount
//! namespace from an allow-list, the way bubblewrap does it: a tmpfs is
//! mounted on `/tmp` and made the root with the host's root kept at
//! `/oldroot` (so the host's own `/tmp`, where work directories often
//! live, stays reachable as `/oldroot/tmp`); the new root is assembled in
//! a second tmpfs at `/newroot` from binds of `/oldroot/...`; then it is
//! pivoted to and everything else is detached.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::WORKSPACE;

/// The host directories a sandbox without a `rootfs` sees, read-only.
const HOST_ENTRIES: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "lib32", "etc"];

/// Top-level names of a `rootfs` that the sandbox provides itself.
const REPLACED: &[&str] = &["proc", "dev", "sys", "tmp"];

/// Device nodes bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("sandbox: NUL in {}", p.display()))
}

/// mount(2) with an error naming the target.
fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let source = source.map(cpath).transpose()?;
    let target_c = cpath(target)?;
    let fstype = fstype.map(|f| CString::new(f).expect("no NUL in a filesystem type"));
    let data = data.map(|d| CString::new(d).expect("no NUL in mount options"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a valid C string or NULL.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "sandbox: mount on {} failed: {}",
            target.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn tmpfs(target: &Path, flags: libc::c_ulong, data: &str) -> Result<(), String> {
    mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        flags,
        Some(data),
    )
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir(p).map_err(|e| format!("sandbox: mkdir {}: {e}", p.display()))
}

fn chdir(p: &Path) -> Result<(), String> {
    std::env::set_current_dir(p).map_err(|e| format!("sandbox: chdir {}: {e}", p.display()))
}

/// `pivot_root(new, put_old)`.
fn pivot_root(new: &str, put_old: &str) -> Result<(), String> {
    let (n, o) = (
        CString::new(new).expect("no NUL"),
        CString::new(put_old).expect("no NUL"),
    );
    // SAFETY: two valid C strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } != 0 {
        return Err(format!(
            "sandbox: pivot_root failed: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `path` (absolute, on the host) as seen under [`OLD`].
fn old(path: &Path) -> PathBuf {
    Path::new(OLD).join(path.strip_prefix("/").unwrap_or(path))
}

/// Binds `src` on `dst` (recursively), read-only when `read_only`. The
/// read-only remount keeps the flags the source mount has (`nosuid`,
/// `nodev`, `noexec`, atime): inside a user namespace the kernel locks
/// them and refuses a remount that would clear one.
fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<(), String> {
    mount(Some(src), dst, None, libc::MS_BIND | libc::MS_REC, None)?;
    if !read_only {
        return Ok(());
    }
    let c = cpath(dst)?;
    // SAFETY: statvfs is plain data written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a live out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "sandbox: statvfs {}: {}",
            dst.display(),
            io::Error::last_os_error()
        ));
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount(None, dst, None, flags, None)
}

/// Recreates host entry `src` at `dst`: a symlink as the same symlink, a
/// directory or file as a read-only bind. Other kinds are skipped.
fn place(src: &Path, dst: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(src) else {
        return Ok(());
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target =
            std::fs::read_link(src).map_err(|e| format!("sandbox: {}: {e}", src.display()))?;
        std::os::unix::fs::symlink(target, dst)
            .map_err(|e| format!("sandbox: symlink {}: {e}", dst.display()))
    } else if kind.is_dir() {
        mkdir(dst)?;
        bind(src, dst, true)
    } else if kind.is_file() {
        std::fs::File::create(dst).map_err(|e| format!("sandbox: {}: {e}", dst.display()))?;
        bind(src, dst, true)
    } else {
        Ok(())
    }
}

/// The (source, name) pairs of the read-only part of the new root:
/// the host's allow-list, or every entry of the image attached at `image`.
fn entries(image: Option<&Path>) -> Result<Vec<(PathBuf, String)>, String> {
    let Some(dir) = image else {
        return Ok(HOST_ENTRIES
            .iter()
            .map(|n| (old(Path::new("/")).join(n), n.to_string()))
            .collect());
    };
    let workspace = WORKSPACE.trim_start_matches('/');
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("sandbox: {}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("sandbox: {}: {e}", dir.display()))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !REPLACED.contains(&name.as_str()) && name != workspace {
            out.push((e.path(), name));
        }
    }
    Ok(out)
}

/// The minimal `/dev`.
fn build_dev(dev: &Path) -> Result<(), String> {
    mkdir(dev)?;
    tmpfs(dev, libc::MS_NOSUID | libc::MS_NOEXEC, "mode=0755,size=64k")?;
    for name in DEVICES {
        let src = old(Path::new("/dev")).join(name);
        if !src.exists() {
            continue;
        }
        let dst = dev.join(name);
        std::fs::File::create(&dst).map_err(|e| format!("sandbox: {}: {e}", dst.display()))?;
        bind(&src, &dst, false)?;
    }
    let shm = dev.join("shm");
    mkdir(&shm)?;
    tmpfs(&shm, libc::MS_NOSUID | libc::MS_NODEV, "mode=1777")?;
    let pts = dev.join("pts");
    mkdir(&pts)?;
    // A private devpts gives the sandbox its own terminals; an old kernel
    // or a restrictive host may refuse it, and a sandbox works without.
    if mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .is_ok()
    {
        let _ = std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    Ok(())
}

/// `move_mount(2)` flag: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Attaches the detached mount `tree` (from `open_tree`) at `target`.
fn attach(tree: std::os::fd::RawFd, target: &Path) -> Result<(), String> {
    let empty = CString::new("").expect("no NUL");
    let target_c = cpath(target)?;
    // SAFETY: valid C strings and a descriptor the caller owns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(format!(
            "sandbox: attaching a directory on {} failed: {}",
            target.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Covers `target` (the new root's `/etc/resolv.conf`, when it is a plain
/// file: a symlink would point into the host's `/run`) with a read-only
/// file naming only `ip`: the host's resolver is often on its own
/// loopback, out of the sandbox's reach. The file lives on a small tmpfs
/// mounted in the staging root, which the bind keeps alive.
fn point_resolver_at(ip: &str, target: &Path) -> Result<(), String> {
    if !std::fs::symlink_metadata(target).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let dir = Path::new("/resolver");
    mkdir(dir)?;
    tmpfs(dir, libc::MS_NOSUID | libc::MS_NODEV, "mode=0755,size=16k")?;
    let file = dir.join("resolv.conf");
    std::fs::write(&file, format!("nameserver {ip}\n"))
        .map_err(|e| format!("sandbox: {}: {e}", file.display()))?;
    bind(&file, target, true)
}

/// Where a root filesystem image is attached while the new root is
/// built (dropped with the staging root).
const IMAGE: &str = "/image";

/// Builds the view and makes it the root: see the module doc. `work` and
/// `rootfs` are detached mounts of the work directory and of the root
/// filesystem image (cloned before the user namespace was made).
pub(super) fn build(
    work: std::os::fd::RawFd,
    rootfs: Option<std::os::fd::RawFd>,
    resolver: Option<&str>,
) -> Result<(), String> {
    let root = Path::new("/");
    // Nothing mounted here may reach the host's mount table.
    mount(None, root, None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let stage = Path::new("/tmp");
    tmpfs(
        stage,
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755,size=64k",
    )?;
    chdir(stage)?;
    mkdir(Path::new("newroot"))?;
    mkdir(Path::new("oldroot"))?;
    pivot_root(".", "oldroot")?;
    chdir(root)?;
    let new = Path::new(NEW);
    tmpfs(new, libc::MS_NOSUID | libc::MS_NODEV, "mode=0755,size=1m")?;
    let image = match rootfs {
        Some(tree) => {
            let image = Path::new(IMAGE);
            mkdir(image)?;
            attach(tree, image)?;
            Some(image)
        }
        None => None,
    };
    for (src, name) in entries(image)? {
        place(&src, &new.join(name))?;
    }
    if let Some(ip) = resolver {
        point_resolver_at(ip, &new.join("etc/resolv.conf"))?;
    }
    let workspace = new.join(WORKSPACE.trim_start_matches('/'));
    mkdir(&workspace)?;
    attach(work, &workspace)?;
    let tmp = new.join("tmp");
    mkdir(&tmp)?;
    tmpfs(&tmp, libc::MS_NOSUID | libc::MS_NODEV, "mode=1777")?;
    build_dev(&new.join("dev"))?;
    // Mounted while the host's /proc is still attached: the kernel lets a
    // user namespace mount proc only where a full proc is visible.
    let proc = new.join("proc");
    mkdir(&proc)?;
    mount(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching
    // "." then drops it with everything below (the host's whole tree).
    chdir(new)?;
    pivot_root(".", ".")?;
    let dot = CString::new(".").expect("no NUL");
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(format!(
            "sandbox: cannot detach the host's root: {}",
            io::Error::last_os_error()
        ));
    }
    chdir(root)?;
    mount(
        None,
        root,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
}
