//! Files in and out of a task through the runtime (`Runtime::upload`,
//! `Runtime::download`): round trips of bytes, files and directories,
//! limits, and hostile paths, tar streams and symlink races, on the local
//! backend, the sandbox (where it can be made) and the MorphCloud
//! simulator in bash mode.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hecate::{
    Config, DownloadSpec, DownloadTarget, ErrorKind, ExecRequest, TransferLimits, UploadSource,
    UploadSpec,
};

pub(crate) use crate::helper::backends::{Backend, Kind};

/// What the file scenarios ask of a backend.
pub(crate) trait Files {
    async fn sh(&self, task: &str, command: &str) -> String;
    async fn put(&self, task: &str, path: &str, source: UploadSource) -> hecate::Result<u64>;
    async fn get(&self, task: &str, path: &str) -> hecate::Result<Bytes>;
    fn scratch(&self, name: &str) -> PathBuf;
}

impl Files for Backend {
    /// Runs `command`, checks it exited 0, returns its stdout.
    async fn sh(&self, task: &str, command: &str) -> String {
        let out = self
            .rt
            .exec(task, ExecRequest::new(command))
            .await
            .expect("exec answered");
        assert_eq!(out.exit_code, 0, "{}: {command:?}: {out:?}", self.name);
        out.stdout.to_text()
    }

    async fn put(&self, task: &str, path: &str, source: UploadSource) -> hecate::Result<u64> {
        self.rt
            .upload(task, UploadSpec::new(path, source))
            .await
            .map(|o| o.transferred.bytes)
    }

    async fn get(&self, task: &str, path: &str) -> hecate::Result<Bytes> {
        self.rt
            .download(task, DownloadSpec::new(path, DownloadTarget::Bytes))
            .await
            .map(|o| o.transferred.data.expect("bytes"))
    }

    /// A scratch path on this machine.
    fn scratch(&self, name: &str) -> PathBuf {
        self.scratch_path(name)
    }
}

/// The backends the scenarios run on.
const KINDS: [Kind; 3] = [Kind::Local, Kind::Sandbox, Kind::Sim];

/// Runs `scenario` on every backend that can run here.
async fn each<F>(tweak: impl Fn(&mut Config), scenario: F)
where
    F: AsyncFn(&Backend),
{
    for kind in KINDS {
        if let Some(b) = Backend::start(kind, &tweak).await {
            scenario(&b).await;
            b.stop().await;
        }
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[actix_rt::test]
async fn bytes_round_trip_binary_empty_and_large() {
    each(
        |_| {},
        async |b: &Backend| {
            let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
            let large = pseudo_random(3 * 1024 * 1024 + 17, 7);
            for (path, data) in [
                ("bin.dat", binary.clone()),
                ("empty", Vec::new()),
                ("deep/er/large.bin", large.clone()),
            ] {
                let n = b
                    .put("t", path, UploadSource::Bytes(Bytes::from(data.clone())))
                    .await
                    .unwrap_or_else(|e| panic!("{}: upload {path}: {e}", b.name));
                assert_eq!(n, data.len() as u64, "{}", b.name);
                let back = b.get("t", path).await.expect("download");
                assert!(back[..] == data[..], "{}: {path} differs", b.name);
                let size = b.sh("t", &format!("wc -c < '{path}'")).await;
                assert_eq!(size.trim(), data.len().to_string(), "{}", b.name);
            }
            // Overwrite replaces, and the mode asked for is set.
            b.rt.upload(
                "t",
                UploadSpec::new(
                    "bin.dat",
                    UploadSource::Bytes(Bytes::from_static(b"#!/bin/sh\necho ran\n")),
                )
                .mode(0o750),
            )
            .await
            .expect("overwrite");
            assert_eq!(
                b.sh("t", "stat -c %a bin.dat; ./bin.dat").await,
                "750\nran\n",
                "{}",
                b.name
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn local_files_round_trip_with_their_mode() {
    each(
        |_| {},
        async |b: &Backend| {
            let src = b.scratch("src.bin");
            let data = pseudo_random(1024 * 1024 + 3, 11);
            std::fs::write(&src, &data).expect("write");
            std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).expect("chmod");
            b.put("t", "copy.bin", UploadSource::File(src))
                .await
                .expect("upload");
            assert_eq!(
                b.sh("t", "stat -c %a copy.bin").await,
                "640\n",
                "{}",
                b.name
            );
            let dst = b.scratch("out/back.bin");
            std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            let out =
                b.rt.download(
                    "t",
                    DownloadSpec::new("copy.bin", DownloadTarget::File(dst.clone())),
                )
                .await
                .expect("download");
            assert_eq!(out.transferred.bytes, data.len() as u64);
            assert!(std::fs::read(&dst).expect("read") == data, "{}", b.name);
            let mode = std::fs::metadata(&dst).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o640, "{}", b.name);
        },
    )
    .await;
}

/// A local tree: nested files with modes, an empty directory, a symlink
/// inside, one pointing outside (kept as a link), a name with a newline.
fn make_tree(root: &Path) -> BTreeMap<String, String> {
    let f = |p: &str, body: &str, mode: u32| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, body).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    f("README", "hello\n", 0o644);
    f("bin/run.sh", "#!/bin/sh\necho run\n", 0o755);
    f("a/b/c/deep.txt", "deep\n", 0o600);
    f("line\nbreak.txt", "nl\n", 0o644);
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).expect("symlink");
    describe(root)
}

/// Every entry under `root`: its kind, mode and content or link target.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under")
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&p).expect("meta");
            let desc = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&p).expect("readlink").display()
                )
            } else if meta.is_dir() {
                walk(root, &p, out);
                format!("dir {:o}", meta.mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {:?}",
                    meta.mode() & 0o7777,
                    std::fs::read_to_string(&p).expect("read")
                )
            };
            out.insert(rel, desc);
        }
    }
    walk(root, root, &mut out);
    out
}

#[actix_rt::test]
async fn directories_round_trip_with_modes_nesting_and_symlinks() {
    each(
        |_| {},
        async |b: &Backend| {
            let src = b.scratch("tree");
            let want = make_tree(&src);
            let up = b
                .rt
                .upload("t", UploadSpec::new("proj", UploadSource::Dir(src)))
                .await
                .unwrap_or_else(|e| panic!("{}: upload: {e}", b.name));
            assert_eq!(up.transferred.files, want.len() as u64, "{}", b.name);
            let seen = b
                .sh("t", "cd proj && stat -c '%a %n' bin/run.sh a/b/c/deep.txt && readlink link abs-link && ./bin/run.sh && cat link")
                .await;
            assert_eq!(
                seen,
                "755 bin/run.sh\n600 a/b/c/deep.txt\na/b/c/deep.txt\n/etc/passwd\nrun\ndeep\n",
                "{}",
                b.name
            );
            let dst = b.scratch("back");
            b.rt
                .download("t", DownloadSpec::new("proj", DownloadTarget::Dir(dst.clone())))
                .await
                .unwrap_or_else(|e| panic!("{}: download: {e}", b.name));
            assert_eq!(describe(&dst), want, "{}", b.name);
            // The same as a tar stream in memory, unpacked by the tar crate.
            let tar = b
                .rt
                .download("t", DownloadSpec::new("proj", DownloadTarget::Tar))
                .await
                .expect("tar");
            let data = tar.transferred.data.expect("data");
            let names: Vec<String> = tar::Archive::new(&data[..])
                .entries()
                .expect("entries")
                .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
                .collect();
            assert!(names.contains(&"line\nbreak.txt".to_string()), "{}: {names:?}", b.name);
            assert_eq!(names.len(), want.len(), "{}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn limits_are_enforced_with_clear_errors() {
    each(
        |c| {
            c.files.limits = TransferLimits {
                max_bytes: 1000,
                max_files: 3,
            }
        },
        async |b: &Backend| {
            let err = b
                .put("t", "big", UploadSource::Bytes(Bytes::from(vec![1u8; 1001])))
                .await
                .expect_err("over the size limit");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}: {err}", b.name);
            assert!(err.to_string().contains("size limit"), "{}: {err}", b.name);
            b.put("t", "ok", UploadSource::Bytes(Bytes::from(vec![1u8; 1000]))).await.expect("at the limit");
            let src = b.scratch("many");
            for i in 0..5 {
                std::fs::create_dir_all(&src).expect("mkdir");
                std::fs::write(src.join(format!("f{i}")), "x").expect("write");
            }
            let err = b
                .put("t", "many", UploadSource::Dir(src))
                .await
                .expect_err("over the file limit");
            assert!(err.to_string().contains("file limit"), "{}: {err}", b.name);
            // Downloads too, and a spec's own limit is tighter still.
            b.sh("t", "mkdir -p five && for i in 1 2 3 4 5; do echo $i > five/$i; done; head -c 5000 /dev/zero > large").await;
            let err = b.get("t", "large").await.expect_err("download over the size limit");
            assert!(err.to_string().contains("size limit"), "{}: {err}", b.name);
            let err = b
                .rt
                .download("t", DownloadSpec::new("five", DownloadTarget::Tar))
                .await
                .expect_err("download over the file limit");
            assert!(err.to_string().contains("file limit"), "{}: {err}", b.name);
            let err = b
                .rt
                .download(
                    "t",
                    DownloadSpec::new("ok", DownloadTarget::Bytes).limits(TransferLimits {
                        max_bytes: 10,
                        max_files: 10,
                    }),
                )
                .await
                .expect_err("the spec's own limit");
            assert!(err.to_string().contains("size limit"), "{}: {err}", b.name);
        },
    )
    .await;
}

#[actix_rt::test]
async fn transfers_queue_in_order_with_the_tasks_commands() {
    each(
        |_| {},
        async |b: &Backend| {
            let write =
                b.rt.exec("q", ExecRequest::new("sleep 0.2; echo first > order"));
            let read =
                b.rt.download("q", DownloadSpec::new("order", DownloadTarget::Bytes));
            let append = b.rt.exec("q", ExecRequest::new("echo second >> order"));
            let (w, r, a) = futures_util::join!(write, read, append);
            assert_eq!(w.expect("write").exit_code, 0);
            assert_eq!(a.expect("append").exit_code, 0);
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert_eq!(
                r.transferred.data.expect("data"),
                Bytes::from_static(b"first\n"),
                "{}",
                b.name
            );
            assert!(r.instance_restarted.is_none());
            // A transfer can be a task's first call: it starts the instance.
            let first =
                b.rt.upload(
                    "fresh",
                    UploadSpec::new("x", UploadSource::Bytes(Bytes::from_static(b"1"))),
                )
                .await
                .expect("upload starts the instance");
            assert!(first.instance_started, "{}", b.name);
        },
    )
    .await;
}

/// The backends that confine paths to the task (not MorphCloud, where the
/// VM is the task's own).
const CONFINED: [Kind; 2] = [Kind::Local, Kind::Sandbox];

async fn each_confined<F>(scenario: F)
where
    F: AsyncFn(&Backend),
{
    for kind in CONFINED {
        if let Some(b) = Backend::start(kind, &|_| {}).await {
            scenario(&b).await;
            b.stop().await;
        }
    }
}

fn assert_escape(b: &Backend, what: &str, result: hecate::Result<impl std::fmt::Debug>) {
    let err = result.expect_err(what);
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "{}: {what}: {err}",
        b.name
    );
    let text = err.to_string();
    assert!(
        text.contains("leads outside") || text.contains("outside the task's directory"),
        "{}: {what}: {text}",
        b.name
    );
}

#[actix_rt::test]
async fn paths_leading_outside_the_task_are_refused() {
    each_confined(async |b: &Backend| {
        let outside = b.scratch("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "secret").expect("write");
        let o = outside.display();
        let work = b.sh("t", &format!("ln -s {o} out; ln -s /etc etc; ln -s .. up; mkdir -p sub; ln -s sub inner; pwd")).await;
        let work = work.trim_end();
        let bytes = || UploadSource::Bytes(Bytes::from_static(b"evil"));
        for path in ["../evil", "sub/../../evil", "up/evil", "out/evil", "etc/evil", "out/secret"] {
            assert_escape(b, &format!("upload {path}"), b.put("t", path, bytes()).await);
        }
        for path in ["../..", "up", "out/secret", "etc/passwd", "sub/../../secret"] {
            assert_escape(b, &format!("download {path}"), b.get("t", path).await);
            assert_escape(
                b,
                &format!("download {path} as tar"),
                b.rt.download("t", DownloadSpec::new(path, DownloadTarget::Tar)).await,
            );
        }
        for path in ["/etc/passwd", "/tmp/evil", "/"] {
            assert_escape(b, &format!("absolute {path}"), b.get("t", path).await);
            assert_escape(b, &format!("absolute {path}"), b.put("t", path, bytes()).await);
        }
        assert_eq!(std::fs::read_to_string(outside.join("secret")).expect("read"), "secret");
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1, "{}", b.name);
        // Inside the task: an absolute path under its directory, a symlink
        // that stays inside, `..` that stays inside, a newline in a name.
        b.put("t", &format!("{work}/abs.txt"), bytes()).await.expect("absolute inside");
        b.put("t", "inner/via-link", bytes()).await.expect("symlink inside");
        b.put("t", "sub/../back", bytes()).await.expect("dotdot inside");
        b.put("t", "new\nline", bytes()).await.expect("newline name");
        assert_eq!(
            b.sh("t", "cat abs.txt sub/via-link back \"$(printf 'new\\nline')\"").await,
            "evilevilevilevil",
            "{}",
            b.name
        );
        assert_eq!(&b.get("t", "new\nline").await.expect("download")[..], b"evil");
    })
    .await;
}

#[actix_rt::test]
async fn a_symlink_swapped_in_during_transfers_never_leads_outside() {
    each_confined(async |b: &Backend| {
        let outside = b.scratch("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), "secret").expect("write");
        // A command flips `d` between a directory and a symlink to the
        // outside directory as fast as it can.
        let flip = format!(
            "while :; do rm -rf d; mkdir d; rm -rf d; ln -s {} d; done",
            outside.display()
        );
        b.rt.exec("t", ExecRequest::new(flip).background())
            .await
            .expect("background");
        let (mut ok, mut refused) = (0, 0);
        for i in 0..200 {
            let up = b
                .put(
                    "t",
                    &format!("d/f{i}"),
                    UploadSource::Bytes(Bytes::from_static(b"x")),
                )
                .await;
            let down = b.get("t", "d/secret").await;
            assert!(
                down.is_err(),
                "{}: read the outside file through the race",
                b.name
            );
            match up {
                Ok(_) => ok += 1,
                Err(e) if e.kind() == ErrorKind::InvalidInput => refused += 1,
                Err(e) => panic!("{}: {e}", b.name),
            }
        }
        eprintln!("{}: {ok} uploads landed inside, {refused} refused", b.name);
        let names: Vec<_> = std::fs::read_dir(&outside)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("secret")],
            "{}",
            b.name
        );
    })
    .await;
}

/// One tar entry with a raw name (no checks), then its data.
fn raw_entry(name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Bytes {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    Bytes::from(out)
}

#[actix_rt::test]
async fn hostile_tar_streams_are_refused() {
    each(
        |_| {},
        async |b: &Backend| {
            let outside = b.scratch("outside");
            std::fs::create_dir_all(&outside).expect("mkdir");
            let abs = outside.join("abs-evil");
            let o = outside.display().to_string();
            use tar::EntryType as T;
            let cases: Vec<(&str, Bytes, &str)> = vec![
                (
                    "dotdot",
                    archive(&[raw_entry(b"../../evil", T::Regular, b"", b"x")]),
                    "`..`",
                ),
                (
                    "absolute",
                    archive(&[raw_entry(
                        abs.to_str().expect("utf8").as_bytes(),
                        T::Regular,
                        b"",
                        b"x",
                    )]),
                    "absolute",
                ),
                (
                    "char device",
                    archive(&[raw_entry(b"null", T::Char, b"", b"")]),
                    "device",
                ),
                (
                    "block device",
                    archive(&[raw_entry(b"sda", T::Block, b"", b"")]),
                    "device",
                ),
                (
                    "fifo",
                    archive(&[raw_entry(b"pipe", T::Fifo, b"", b"")]),
                    "FIFO",
                ),
                (
                    "hard link out",
                    archive(&[raw_entry(b"hl", T::Link, b"../../../etc/passwd", b"")]),
                    "`..`",
                ),
            ];
            for (what, tar, says) in cases {
                let err = b
                    .put("t", "unpacked", UploadSource::Tar(tar))
                    .await
                    .expect_err(what);
                assert_eq!(
                    err.kind(),
                    ErrorKind::InvalidInput,
                    "{}: {what}: {err}",
                    b.name
                );
                assert!(err.to_string().contains(says), "{}: {what}: {err}", b.name);
            }
            // A symlink out, then a file through it: the link is made (links
            // are kept), the file is refused on the backends that confine.
            let through = archive(&[
                raw_entry(b"esc", T::Symlink, o.as_bytes(), b""),
                raw_entry(b"esc/evil", T::Regular, b"", b"x"),
            ]);
            let result = b.put("t", "unpacked2", UploadSource::Tar(through)).await;
            if b.name != "sim" {
                assert_escape(b, "a file through a symlink of the stream", result);
            }
            assert_eq!(
                std::fs::read_dir(&outside).expect("ls").count(),
                0,
                "{}",
                b.name
            );
        },
    )
    .await;
}

#[actix_rt::test]
async fn morph_detects_a_corrupted_chunk_by_its_checksum() {
    let faults = hecate::sim::FaultConfig {
        corrupt: 1.0,
        ..Default::default()
    };
    let b = Backend::start_with(Kind::Sim, |s| s.faults = faults, &|_| {})
        .await
        .expect("simulator");
    let data = Bytes::from(pseudo_random(300 * 1024, 3));
    let err = b
        .put("t", "up.bin", UploadSource::Bytes(data.clone()))
        .await
        .expect_err("every chunk is corrupted");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // Nothing half-written took the file's place.
    assert_eq!(
        b.sh("t", "ls -A | grep -c '^up.bin' || true").await,
        "0\n",
        "{err}"
    );
    // Small chunks pass; a large download's chunks are corrupted on the way
    // back.
    b.sh(
        "t",
        "head -c 3000000 /dev/urandom > big.bin; echo small > small.txt",
    )
    .await;
    assert_eq!(
        &b.get("t", "small.txt").await.expect("small")[..],
        b"small\n"
    );
    let err = b.get("t", "big.bin").await.expect_err("corrupted download");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    b.stop().await;
}

#[actix_rt::test]
async fn morph_chunks_travel_in_parallel() {
    // Every exec is held 300 ms: a transfer's time shows how many of its
    // chunk commands were in flight at once.
    let faults = hecate::sim::FaultConfig {
        slow: 1.0,
        slow_by: Duration::from_millis(300),
        ..Default::default()
    };
    let data = Bytes::from(pseudo_random(
        16 * hecate::provider::morph::UPLOAD_CHUNK_BYTES,
        5,
    )); // 16 chunks
    let mut took = Vec::new();
    for parallel in [1, 8] {
        let b = Backend::start_with(Kind::Sim, |s| s.faults = faults.clone(), &|c| {
            c.files.parallel = parallel
        })
        .await
        .expect("simulator");
        b.sh("t", "true").await;
        let out =
            b.rt.upload(
                "t",
                UploadSpec::new("p.bin", UploadSource::Bytes(data.clone())),
            )
            .await
            .expect("upload");
        assert_eq!(&b.get("t", "p.bin").await.expect("download")[..], &data[..]);
        took.push(out.duration);
        b.stop().await;
    }
    // One at a time: 16 chunks + 2 control commands, each held 300 ms.
    assert!(took[0] >= Duration::from_millis(18 * 300), "{took:?}");
    assert!(
        took[1] * 2 < took[0],
        "8 in flight should take well under half: {took:?}"
    );
}
