//! Files in and out of a task (issue 13), against baselines in the same
//! run, min / median / max of 3 runs:
//!
//! - 100 MiB, one file: `Runtime::upload` from a local file and
//!   `Runtime::download` to a local file, against `cp` of the same bytes
//!   (local and sandbox backends);
//! - 1,000 small files as a directory: upload and download as tar streams,
//!   against `tar -C src -cf - . | tar -C dst -xf -`;
//! - over the MorphCloud simulator (bash mode, loopback): MiB/s of a
//!   32 MiB upload and download.
//!
//! Ratios are the baseline's time over Hecate's (≥ 1 is faster than the
//! baseline). `CI=true` shrinks the sizes. Run with
//! `cargo bench --bench files`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hecate::provider::morph::MorphProvider;
use hecate::sim::{SimConfig, SimServer};
use hecate::{
    ApiKey, BackendKind, Config, DownloadSpec, DownloadTarget, ExecRequest, Placement, Runtime,
    UploadSource, UploadSpec,
};

const RUNS: usize = 3;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn config(backend: BackendKind, root: &Path) -> Config {
    let mut config = Config {
        backend,
        ..Config::default()
    };
    config.local.root = root.to_path_buf();
    config.launcher.program = option_env!("CARGO_BIN_EXE_hecate").map(Into::into);
    config
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn sh(script: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("sh");
    assert!(st.success(), "{script}");
}

fn stats(label: &str, xs: &mut [f64]) {
    xs.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{label}: {:.2} / {:.2} / {:.2}",
        xs[0],
        xs[xs.len() / 2],
        xs[xs.len() - 1]
    );
}

async fn local_like(backend: BackendKind, dir: &Path, big: &Path, small: &Path, big_mib: usize) {
    if backend == BackendKind::Sandbox {
        if let Err(why) = hecate::launcher::sandbox::probe() {
            println!("sandbox skipped: {why}");
            return;
        }
    }
    let name = backend.as_str();
    let rt = Runtime::start(config(backend, &dir.join(name))).expect("runtime");
    rt.exec("b", ExecRequest::new("true")).await.expect("warm");
    let (mut up, mut down, mut dir_up, mut dir_down) = (vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        let cp = timed(|| sh(&format!("cp {} {}/cp.bin", big.display(), dir.display())));
        std::fs::remove_file(dir.join("cp.bin")).expect("rm");
        let t = Instant::now();
        rt.upload(
            "b",
            UploadSpec::new("big.bin", UploadSource::File(big.into())),
        )
        .await
        .expect("upload");
        let hup = t.elapsed();
        let t = Instant::now();
        let back = dir.join("back.bin");
        rt.download(
            "b",
            DownloadSpec::new("big.bin", DownloadTarget::File(back.clone())),
        )
        .await
        .expect("download");
        let hdown = t.elapsed();
        std::fs::remove_file(&back).expect("rm");
        println!("{name} run {run}: {big_mib} MiB cp {cp:?}, upload {hup:?}, download {hdown:?}");
        up.push(cp.as_secs_f64() / hup.as_secs_f64());
        down.push(cp.as_secs_f64() / hdown.as_secs_f64());

        let dst = dir.join(format!("tarx{run}"));
        std::fs::create_dir_all(&dst).expect("mkdir");
        let tar = timed(|| {
            sh(&format!(
                "tar -C {} -cf - . | tar -C {} -xf -",
                small.display(),
                dst.display()
            ))
        });
        std::fs::remove_dir_all(&dst).expect("rm");
        let t = Instant::now();
        rt.upload(
            "b",
            UploadSpec::new(format!("small{run}"), UploadSource::Dir(small.into())),
        )
        .await
        .expect("dir upload");
        let hup = t.elapsed();
        let t = Instant::now();
        rt.download(
            "b",
            DownloadSpec::new(format!("small{run}"), DownloadTarget::Dir(dst.clone())),
        )
        .await
        .expect("dir download");
        let hdown = t.elapsed();
        std::fs::remove_dir_all(&dst).expect("rm");
        println!(
            "{name} run {run}: 1000 files tar|tar {tar:?}, upload {hup:?}, download {hdown:?}"
        );
        dir_up.push(tar.as_secs_f64() / hup.as_secs_f64());
        dir_down.push(tar.as_secs_f64() / hdown.as_secs_f64());
    }
    stats(&format!("{name} {big_mib} MiB upload vs cp"), &mut up);
    stats(&format!("{name} {big_mib} MiB download vs cp"), &mut down);
    stats(&format!("{name} 1000 files upload vs tar|tar"), &mut dir_up);
    stats(
        &format!("{name} 1000 files download vs tar|tar"),
        &mut dir_down,
    );
    rt.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

async fn sim(dir: &Path, mib: usize) {
    let sim = SimServer::start(SimConfig {
        boot_time: Duration::from_millis(5),
        root: dir.join("sim"),
        workers: env_usize("HECATE_BENCH_SIM_WORKERS", 2),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let mut config = Config::default()
        .with_backend(BackendKind::Morph)
        .with_morph(sim.base_url(), ApiKey::new(sim.api_key()));
    config.morph.poll_interval = Duration::from_millis(5);
    config.files.parallel = env_usize("HECATE_FILES_PARALLEL", config.files.parallel);
    let provider = std::sync::Arc::new(MorphProvider::new(&config).expect("morph"));
    let rt = Runtime::start_with(config, provider, Placement::Workers).expect("runtime");
    rt.exec("b", ExecRequest::new("true")).await.expect("warm");
    // One chunk: the latency of the three commands of a small upload.
    let t = Instant::now();
    let one = bytes::Bytes::from(vec![7u8; 90 * 1024]);
    rt.upload("b", UploadSpec::new("one.bin", UploadSource::Bytes(one)))
        .await
        .expect("upload");
    println!("sim: one 90 KiB chunk (3 commands) {:?}", t.elapsed());
    let data = bytes::Bytes::from(
        (0..mib * 1024 * 1024)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect::<Vec<u8>>(),
    );
    let (mut up, mut down) = (vec![], vec![]);
    for run in 0..RUNS {
        let t = Instant::now();
        rt.upload(
            "b",
            UploadSpec::new("s.bin", UploadSource::Bytes(data.clone())),
        )
        .await
        .expect("upload");
        let hup = t.elapsed();
        let t = Instant::now();
        let got = rt
            .download("b", DownloadSpec::new("s.bin", DownloadTarget::Bytes))
            .await
            .expect("download");
        let hdown = t.elapsed();
        assert_eq!(got.transferred.bytes as usize, data.len());
        println!("sim run {run}: {mib} MiB upload {hup:?}, download {hdown:?}");
        up.push(mib as f64 / hup.as_secs_f64());
        down.push(mib as f64 / hdown.as_secs_f64());
    }
    stats(&format!("sim {mib} MiB upload MiB/s"), &mut up);
    stats(&format!("sim {mib} MiB download MiB/s"), &mut down);
    rt.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    sim.stop().await;
}

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("HECATE_BENCH_ONLY_SIM").is_ok() {
        let tmp = tempfile::tempdir().expect("tempdir");
        actix_rt::System::new().block_on(sim(tmp.path(), 32));
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let big_mib = if ci() { 8 } else { 100 };
    let sim_mib = if ci() { 4 } else { 32 };
    let big = dir.join("big.bin");
    let mut rng = fastrand::Rng::with_seed(1);
    let data: Vec<u8> = (0..big_mib * 1024 * 1024).map(|_| rng.u8(..)).collect();
    std::fs::write(&big, &data).expect("write");
    let small = dir.join("small");
    for i in 0..1000 {
        let d = small.join(format!("d{}", i / 50));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join(format!("f{i}.txt")),
            format!("file {i}\n").repeat(1 + i % 40),
        )
        .expect("write");
    }
    actix_rt::System::new().block_on(async {
        local_like(BackendKind::Local, dir, &big, &small, big_mib).await;
        local_like(BackendKind::Sandbox, dir, &big, &small, big_mib).await;
        sim(dir, sim_mib).await;
    });
}
