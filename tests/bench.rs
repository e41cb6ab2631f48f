//! Smoke tests of the load generator (`hecate::bench`): a tiny run of each
//! scenario, checking the report's invariants rather than its speed.

use hecate::bench::{run, BenchArgs, BenchReport, Scenario};
use hecate::BackendKind;

fn args(scenario: Scenario, tasks: usize, commands: usize) -> BenchArgs {
    let mut args = BenchArgs::new(scenario);
    args.tasks = Some(tasks);
    args.commands = Some(commands);
    // The test binary cannot be a launcher; the `hecate` binary is one.
    args.launcher = crate::helper::launcher_config().program;
    args
}

/// Every command answered, nothing live at the end, percentiles ordered.
fn assert_invariants(report: &BenchReport, tasks: usize, commands: usize) {
    let expected = (tasks * commands) as u64;
    assert_eq!(report.answers.requests, expected, "{report}");
    assert_eq!(report.answers.answered(), expected, "{report}");
    assert_eq!(report.live_at_end, 0, "{report}");
    assert!(report.problems().is_empty(), "{:?}", report.problems());
    for p in [
        &report.latency,
        &report.latency_warm,
        &report.eviction_lateness,
    ]
    .into_iter()
    .flatten()
    {
        assert!(p.is_ordered(), "{p:?}");
        assert!(p.p50_ms >= 0.0 && p.max_ms.is_finite(), "{p:?}");
    }
    assert!(report.peak_rss_bytes > 0);
}

#[actix_rt::test]
async fn exec_scenario_on_local_backend_answers_every_command() {
    let report = run(&args(Scenario::Exec, 4, 3)).await.expect("run");
    assert_invariants(&report, 4, 3);
    assert_eq!(report.backend, "local");
    assert_eq!(report.answers.ok, 12);
    assert_eq!(report.instance_starts, 4);
    assert_eq!(report.tasks_ready, 4);
    assert!(report.latency.is_some_and(|p| p.count == 12));
    assert!(report.all_ready_secs.is_some_and(|s| s <= report.wall_secs));
    assert!(report.shutdown_clean);
}

#[actix_rt::test]
async fn exec_scenario_on_simulator_answers_every_command() {
    let mut a = args(Scenario::Exec, 5, 4);
    a.backend = BackendKind::Morph;
    let report = run(&a).await.expect("run");
    assert_invariants(&report, 5, 4);
    assert_eq!(report.backend, "morph-sim");
    assert_eq!(report.answers.ok, 20);
    assert_eq!(report.instance_starts, 5);
}

#[actix_rt::test]
async fn idle_actors_scenario_reports_memory_per_actor() {
    let report = run(&args(Scenario::IdleActors, 2000, 1))
        .await
        .expect("run");
    assert_invariants(&report, 2000, 1);
    let idle = report.idle.clone().expect("idle figures");
    assert_eq!(report.instance_starts, 2000);
    assert!(idle.rss_after_bytes >= idle.rss_before_bytes);
    assert!(idle.bytes_per_actor > 0.0 && idle.bytes_per_actor < 1e6);
    assert!(idle.spawn_secs > 0.0);
}

#[actix_rt::test]
async fn boot_scenario_compares_all_ready_with_one_boot() {
    let mut a = args(Scenario::Boot, 20, 1);
    a.boot_ms = Some(100);
    a.poll_ms = Some(20);
    let report = run(&a).await.expect("run");
    assert_invariants(&report, 20, 1);
    let one = report.single_boot_secs.expect("one boot measured");
    assert!(one >= 0.1, "a boot takes at least the boot time: {one}");
    let all = report.all_ready_secs.expect("all ready");
    assert!(all >= 0.1, "{all}");
    assert!(report
        .ready_ratio
        .is_some_and(|r| (r - all / one).abs() < 1e-9));
}

#[actix_rt::test]
async fn faults_scenario_runs_nothing_twice_and_answers_everything() {
    let mut a = args(Scenario::Faults, 20, 4);
    a.fault_rate = Some(0.3);
    a.retry_after_secs = 0;
    a.calm_teardown = true;
    let report = run(&a).await.expect("run");
    assert_invariants(&report, 20, 4);
    let faults = report.faults.clone().expect("fault figures");
    assert!(faults.injected.values().sum::<u64>() > 0, "{report}");
    assert_eq!(faults.ran_twice, 0);
    assert_eq!(faults.ok_but_not_run, 0);
    // Every command that was answered as run ran exactly once; the others
    // ran at most once.
    assert!(faults.sim_execs >= report.answers.ok);
}

#[actix_rt::test]
async fn eviction_scenario_records_lateness_of_every_eviction() {
    let mut a = args(Scenario::Eviction, 50, 1);
    a.idle_ms = 30;
    let report = run(&a).await.expect("run");
    assert_invariants(&report, 50, 1);
    let late = report.eviction_lateness.expect("lateness recorded");
    assert_eq!(late.count, 50);
    // Generous: the figure itself is what BENCHMARKS.md reports.
    assert!(late.max_ms < 2000.0, "{late:?}");
}
