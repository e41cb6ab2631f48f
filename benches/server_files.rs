//! File transfers through `hecate serve` against the in-process calls, on
//! the local backend (real files in a temporary directory):
//!
//! - a directory of 16 files × 4 MiB as a tar stream: `Runtime::upload`
//!   with `UploadSource::Tar` vs `PUT /v1/tasks/t/files` with
//!   `Content-Type: application/x-tar` (streamed into the unpacking);
//!   `Runtime::download` with `DownloadTarget::Tar` vs `GET` of the
//!   directory;
//! - one 64 MiB file: `UploadSource::Bytes` vs a raw `PUT`, and
//!   `DownloadTarget::Bytes` vs a raw `GET`.
//!
//! Each pair is measured 3 times, interleaved; the output gives MB/s as
//! min / median / max and the ratio of the medians (HTTP / in process).
//! `CI=true` shrinks the data (the build is what CI checks).

use std::time::{Duration, Instant};

use bytes::Bytes;
use hecate::files::{DownloadSpec, DownloadTarget, UploadSource, UploadSpec};
use hecate::server::{ApiServer, ApiToken, ServerConfig};
use hecate::{Config, Runtime};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn report(label: &str, mib: f64, inproc: &[f64], http: &[f64]) {
    let rate = |secs: &[f64]| sorted(&secs.iter().map(|s| mib / s).collect::<Vec<_>>());
    let (i, h) = (rate(inproc), rate(http));
    println!(
        "{label}: in process {:.0} / {:.0} / {:.0} MiB/s; http {:.0} / {:.0} / {:.0} MiB/s; \
         http/in-process (medians) {:.2}",
        i[0],
        i[1],
        i[2],
        h[0],
        h[1],
        h[2],
        h[1] / i[1]
    );
}

fn tar_of(files: usize, size: usize) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut rng = fastrand::Rng::with_seed(7);
    for n in 0..files {
        let data: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        let mut header = tar::Header::new_gnu();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, format!("f{n:02}.bin"), &data[..])
            .expect("append");
    }
    Bytes::from(builder.into_inner().expect("tar"))
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(300))
        .finish()
}

async fn http_put(url: &str, content_type: &str, body: Bytes) {
    let mut resp = client()
        .put(url)
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .content_type(content_type)
        .send_body(body)
        .await
        .expect("answered");
    let answer = resp.body().await.expect("body");
    assert!(resp.status().is_success(), "{answer:?}");
}

async fn http_get(url: &str) -> usize {
    let mut resp = client()
        .get(url)
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .expect("answered");
    let body = resp.body().limit(1 << 30).await.expect("body");
    assert!(resp.status().is_success());
    body.len()
}

fn main() {
    let (files, size) = if ci() { (2, 1 << 20) } else { (16, 4 << 20) };
    let root = std::env::temp_dir().join(format!("hecate-bench-files-{}", std::process::id()));
    actix_rt::System::new().block_on(async move {
        let mut config = Config::default()
            .with_backend(hecate::BackendKind::Local)
            .with_local_root(&root);
        // The bench binary cannot be a launcher; the `hecate` binary can.
        config.launcher.program = option_env!("CARGO_BIN_EXE_hecate").map(Into::into);
        let rt = Runtime::start(config).expect("local runtime");
        let server = ApiServer::start(
            rt.clone(),
            ServerConfig {
                bind: "127.0.0.1:0".parse().expect("addr"),
                token: Some(ApiToken::new(TOKEN).expect("token")),
                max_upload_bytes: 1 << 30,
                ..ServerConfig::default()
            },
        )
        .await
        .expect("serve");
        let base = format!("{}/v1/tasks/t/files", server.url());
        let tar = tar_of(files, size);
        let mib = (files * size) as f64 / f64::from(1 << 20);
        let one: Bytes = tar_of(1, files * size).slice(512..512 + files * size);
        println!(
            "local backend; a directory of {files} × {} MiB, one file of {mib:.0} MiB",
            size >> 20
        );
        let (mut up_i, mut up_h, mut down_i, mut down_h) = (vec![], vec![], vec![], vec![]);
        let (mut fu_i, mut fu_h, mut fd_i, mut fd_h) = (vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let t = Instant::now();
            rt.upload("t", UploadSpec::new("dir", UploadSource::Tar(tar.clone())))
                .await
                .expect("upload");
            up_i.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            http_put(
                &format!("{base}?path=dir"),
                "application/x-tar",
                tar.clone(),
            )
            .await;
            up_h.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let got = rt
                .download("t", DownloadSpec::new("dir", DownloadTarget::Tar))
                .await
                .expect("download");
            down_i.push(t.elapsed().as_secs_f64());
            std::hint::black_box(got);
            let t = Instant::now();
            std::hint::black_box(http_get(&format!("{base}?path=dir")).await);
            down_h.push(t.elapsed().as_secs_f64());

            let t = Instant::now();
            rt.upload(
                "t",
                UploadSpec::new("one.bin", UploadSource::Bytes(one.clone())),
            )
            .await
            .expect("upload");
            fu_i.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            http_put(
                &format!("{base}?path=one.bin"),
                "application/octet-stream",
                one.clone(),
            )
            .await;
            fu_h.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let got = rt
                .download("t", DownloadSpec::new("one.bin", DownloadTarget::Bytes))
                .await
                .expect("download");
            fd_i.push(t.elapsed().as_secs_f64());
            std::hint::black_box(got);
            let t = Instant::now();
            assert_eq!(
                http_get(&format!("{base}?path=one.bin")).await,
                files * size
            );
            fd_h.push(t.elapsed().as_secs_f64());
        }
        report("directory upload (tar)", mib, &up_i, &up_h);
        report("directory download (tar)", mib, &down_i, &down_h);
        report("file upload (raw)", mib, &fu_i, &fu_h);
        report("file download (raw)", mib, &fd_i, &fd_h);
        let report = server
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        assert!(report.is_clean(), "{report:?}");
    });
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("hecate-bench-files-{}", std::process::id())),
    );
}
