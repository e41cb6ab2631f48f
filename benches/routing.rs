//! Routing overhead: one exec through registry → supervisor → `VmActor`
//! on a backend that does nothing ([`NoopProvider`]), against a bare actix
//! request/response round trip placed the same way, with 1, 1,000 and
//! 100,000 live tasks (2,000 under `CI=true`).
//!
//! Both placements are measured:
//! - `cross_thread`: the runtime as shipped (`Placement::Workers`: the
//!   registry on the caller's arbiter, task actors on worker arbiters)
//!   against an actor on another arbiter. The routing target's ratio uses
//!   this pair.
//! - `same_thread`: `Placement::CurrentThread` against an actor on the
//!   caller's arbiter.
//!
//! Criterion drives each sample with `iter_custom` inside one actix
//! `SystemRunner::block_on`, so actors keep running between samples.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::StreamExt;
use hecate::bench::NoopProvider;
use hecate::{Config, ExecRequest, Placement, Runtime};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn live_task_counts() -> Vec<usize> {
    if ci() {
        vec![1, 1_000, 2_000]
    } else {
        vec![1, 1_000, 100_000]
    }
}

/// The smallest actor that answers a message.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

struct Ping(u64);

impl Message for Ping {
    type Result = u64;
}

impl Handler<Ping> for Echo {
    type Result = u64;

    fn handle(&mut self, msg: Ping, _: &mut Self::Context) -> u64 {
        msg.0
    }
}

/// A runtime over the no-op backend with `live` tasks, each with an instance.
async fn runtime_with_tasks(placement: Placement, live: usize) -> Runtime {
    let config = Config {
        max_instances: live + 1,
        max_concurrent_starts: 1024,
        ..Config::default()
    };
    let rt = Runtime::start_with(config, Arc::new(NoopProvider::new()), placement)
        .expect("the default configuration is valid");
    futures_util::stream::iter(0..live)
        .for_each_concurrent(1024, |i| {
            let rt = rt.clone();
            async move {
                rt.exec(format!("task-{i}"), ExecRequest::new("true"))
                    .await
                    .expect("a no-op exec succeeds");
            }
        })
        .await;
    rt
}

fn routing(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let mut group = c.benchmark_group("routing");
    if ci() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500));
    } else {
        group
            .sample_size(50)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
    }

    // Baselines: one request/response to an actor.
    let worker = Arbiter::new();
    let (local_echo, remote_echo) = system.block_on(async {
        let local = Echo.start();
        let remote = Echo::start_in_arbiter(&worker.handle(), |_| Echo);
        // One round trip each, so both are running before timing starts.
        local.send(Ping(0)).await.expect("echo answers");
        remote.send(Ping(0)).await.expect("echo answers");
        (local, remote)
    });
    for (name, addr) in [("same_thread", &local_echo), ("cross_thread", &remote_echo)] {
        group.bench_function(BenchmarkId::new("actix_round_trip", name), |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(addr.send(Ping(i)).await.expect("echo answers"));
                    }
                    start.elapsed()
                })
            })
        });
    }

    for live in live_task_counts() {
        for (name, placement) in [
            ("same_thread", Placement::CurrentThread),
            ("cross_thread", Placement::Workers),
        ] {
            let rt = system.block_on(runtime_with_tasks(placement, live));
            group.bench_function(
                BenchmarkId::new(format!("runtime_exec_{name}"), live),
                |b| {
                    b.iter_custom(|iters| {
                        system.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                black_box(
                                    rt.exec("task-0", ExecRequest::new("true"))
                                        .await
                                        .expect("a no-op exec succeeds"),
                                );
                            }
                            start.elapsed()
                        })
                    })
                },
            );
            system.block_on(async {
                let report = rt
                    .shutdown(Duration::from_secs(10))
                    .await
                    .expect("the runtime shuts down");
                assert!(report.is_clean());
            });
        }
    }
    group.finish();
    worker.stop();
}

criterion_group!(benches, routing);
criterion_main!(benches);
