//! The sandbox backend against the plain local backend, measured in the
//! same run (issue 11's targets):
//!
//! - `instance_start/{local,sandbox}`: one instance started and stopped
//!   through the provider (directory, launcher, namespaces, the mount
//!   view; the stop is counted too, since a benchmark must not leak).
//! - `exec_true/{local,sandbox}`: `true` through the runtime on one warm
//!   task of each backend.
//!
//! Skipped with a note where no sandbox can be made. Sizes shrink under
//! `CI=true`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hecate::provider::local::LocalProvider;
use hecate::{BackendKind, Config, ExecRequest, Provider, Runtime, StartSlot, StartSpec};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    if ci() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500));
    } else {
        group
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
    }
}

/// A config for `backend` under `root`, with the `hecate` binary as the
/// launcher (the bench binary cannot be one).
fn config(backend: BackendKind, root: PathBuf) -> Config {
    let mut config = Config {
        backend,
        ..Config::default()
    };
    config.local.root = root;
    config.launcher.program = option_env!("CARGO_BIN_EXE_hecate").map(Into::into);
    config
}

fn spec() -> StartSpec {
    StartSpec {
        task_id: "bench".into(),
        ttl: None,
        metadata: Default::default(),
        create_slot: StartSlot::detached(),
        task_spec: None,
    }
}

fn sandbox(c: &mut Criterion) {
    if let Err(why) = hecate::launcher::sandbox::probe() {
        eprintln!("sandbox benches skipped: {why}");
        return;
    }
    let system = actix_rt::System::new();
    let root = std::env::temp_dir().join(format!("hecate-bench-sandbox-{}", std::process::id()));
    let backends = [
        ("local", BackendKind::Local),
        ("sandbox", BackendKind::Sandbox),
    ];

    let mut group = c.benchmark_group("instance_start");
    configure(&mut group);
    for (name, kind) in backends {
        let cfg = config(kind, root.join(format!("start-{name}")));
        let provider = match kind {
            BackendKind::Sandbox => LocalProvider::new_sandbox(&cfg),
            _ => LocalProvider::new(&cfg),
        }
        .expect("provider");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let inst = provider.start(spec()).await.expect("start");
                        spent += t.elapsed();
                        black_box(inst.id());
                        inst.stop().await.expect("stop");
                    }
                    spent
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("exec_true");
    configure(&mut group);
    for (name, kind) in backends {
        let cfg = config(kind, root.join(format!("exec-{name}")));
        let rt = system.block_on(async {
            let rt = Runtime::start(cfg).expect("runtime");
            rt.exec("bench", ExecRequest::new("true"))
                .await
                .expect("first exec");
            rt
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let out = rt
                            .exec("bench", ExecRequest::new("true"))
                            .await
                            .expect("exec");
                        black_box(out.exit_code);
                    }
                    start.elapsed()
                })
            })
        });
        system.block_on(async {
            let report = rt
                .shutdown(Duration::from_secs(10))
                .await
                .expect("shutdown");
            assert!(report.is_clean());
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, sandbox);
criterion_main!(benches);
