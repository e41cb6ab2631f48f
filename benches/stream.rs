//! Streaming latency (issue 12, `shared/TARGETS.md`): how long after a
//! command writes a line the library's reader has it, through
//! `Runtime::exec_stream`, on the local backend, the sandbox (where it can
//! be made) and the MorphCloud simulator in both event forms, against a
//! bare baseline in the same run: `/bin/bash -c` spawned directly with a
//! pipe this process reads (the floor any runner pays).
//!
//! The command prints bash's `$EPOCHREALTIME` (taken by the shell just
//! before the builtin `echo` writes it) every 10 ms; the reader subtracts
//! it from the wall clock when the chunk arrives. Each run's figure is the
//! median over its lines; three runs give min / median / max. Not a
//! criterion bench (the quantity is an arrival latency, not a call's
//! duration). `CI=true` shrinks it.
//!
//! `cargo bench --bench stream`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hecate::provider::morph::MorphProvider;
use hecate::sim::{SimConfig, SimServer, SseFormat};
use hecate::{ApiKey, BackendKind, Config, ExecRequest, Placement, Runtime, StreamOptions};
use tokio::io::AsyncReadExt;

const RUNS: usize = 3;

fn lines() -> usize {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        20
    } else {
        100
    }
}

fn command() -> String {
    format!(
        "for i in $(seq 1 {}); do echo $EPOCHREALTIME; sleep 0.01; done",
        lines()
    )
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Latencies (seconds) of the lines in `data`, read at `at`, given the
/// bytes left over from the previous chunk.
fn latencies(carry: &mut Vec<u8>, data: &[u8], at: f64, into: &mut Vec<f64>) {
    carry.extend_from_slice(data);
    while let Some(nl) = carry.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = carry.drain(..=nl).collect();
        if let Some(written) = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.trim().parse::<f64>().ok())
        {
            into.push(at - written);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get((v.len() * 99) / 100).copied().unwrap_or(f64::NAN)
}

/// One run of the bare baseline: bash with a pipe read here.
async fn bare_run() -> Vec<f64> {
    let mut child = tokio::process::Command::new("/bin/bash")
        .arg("-c")
        .arg(command())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bash");
    let mut out = child.stdout.take().expect("stdout");
    let mut buf = vec![0u8; 64 * 1024];
    let (mut carry, mut lat) = (Vec::new(), Vec::new());
    loop {
        let n = out.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        latencies(&mut carry, &buf[..n], now_secs(), &mut lat);
    }
    child.wait().await.expect("wait");
    lat
}

/// One run through the runtime.
async fn runtime_run(rt: &Runtime) -> Vec<f64> {
    let (mut stream, result) = rt.exec_stream(
        "bench",
        ExecRequest::new(command()),
        StreamOptions::default(),
    );
    let (mut carry, mut lat) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        latencies(&mut carry, &chunk.data, now_secs(), &mut lat);
    }
    let outcome = result.await.expect("ran");
    assert_eq!(outcome.exit_code, 0);
    lat
}

fn local_config(kind: BackendKind, root: PathBuf) -> Config {
    let mut config = Config {
        backend: kind,
        ..Config::default()
    };
    config.local.root = root;
    config.launcher.program = option_env!("CARGO_BIN_EXE_hecate").map(Into::into);
    config
}

fn report(name: &str, runs: &[Vec<f64>], baseline: Option<f64>) -> f64 {
    let medians: Vec<f64> = runs.iter().map(|r| median(r.clone())).collect();
    let mut sorted = medians.clone();
    sorted.sort_by(f64::total_cmp);
    let worst_p99 = runs.iter().map(|r| p99(r.clone())).fold(f64::NAN, f64::max);
    let ms = |s: f64| s * 1e3;
    let ratio = baseline.map_or(String::from("-"), |b| format!("{:.2}×", sorted[1] / b));
    println!(
        "{name:<16} median latency min/median/max {:.3} / {:.3} / {:.3} ms   p99 (worst run) {:.3} ms   vs bare {ratio}",
        ms(sorted[0]),
        ms(sorted[1]),
        ms(sorted[2]),
        ms(worst_p99),
    );
    sorted[1]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let system = actix_rt::System::new();
    let root = std::env::temp_dir().join(format!("hecate-bench-stream-{}", std::process::id()));
    println!("streaming latency, {} lines a run, {RUNS} runs", lines());
    system.block_on(async {
        let bare: Vec<Vec<f64>> = {
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(bare_run().await);
            }
            runs
        };
        let base = report("bare pipe", &bare, None);

        let mut backends = vec![("local", BackendKind::Local)];
        match hecate::launcher::sandbox::probe() {
            Ok(()) => backends.push(("sandbox", BackendKind::Sandbox)),
            Err(why) => println!("sandbox skipped: {why}"),
        }
        for (name, kind) in backends {
            let rt = Runtime::start(local_config(kind, root.join(name))).expect("runtime");
            rt.exec("bench", ExecRequest::new("true"))
                .await
                .expect("warm");
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(runtime_run(&rt).await);
            }
            report(name, &runs, Some(base));
            rt.shutdown(Duration::from_secs(10))
                .await
                .expect("shutdown");
        }

        for (name, format) in [
            ("sim (json)", SseFormat::Json),
            ("sim (named)", SseFormat::Documented),
        ] {
            let sim = SimServer::start(SimConfig {
                root: root.clone(),
                sse_format: format,
                ..SimConfig::default()
            })
            .await
            .expect("sim");
            let mut config = Config::default()
                .with_backend(BackendKind::Morph)
                .with_morph(sim.base_url(), ApiKey::new(sim.api_key()));
            config.morph.poll_interval = Duration::from_millis(5);
            let provider = Arc::new(MorphProvider::new(&config).expect("provider"));
            let rt = Runtime::start_with(config, provider, Placement::Workers).expect("runtime");
            rt.exec("bench", ExecRequest::new("true"))
                .await
                .expect("warm");
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(runtime_run(&rt).await);
            }
            report(name, &runs, Some(base));
            rt.shutdown(Duration::from_secs(10))
                .await
                .expect("shutdown");
            sim.stop().await;
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}
