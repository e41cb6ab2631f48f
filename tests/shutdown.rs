//! Graceful shutdown on the scripted backend and a paused clock: one report
//! for every caller, the grace as a bound on everything it waits for
//! (stalled stops, starts and sweeps included), and nothing left running
//! afterwards.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hecate::{Config, ErrorKind, ExecRequest, Placement, Runtime};
use tokio::time::{sleep, Instant};

use crate::helper::{run_probe, scripted_runtime, test_config, Scripted};

fn req(cmd: &str) -> ExecRequest {
    ExecRequest::new(cmd)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn assert_between(d: Duration, lo: Duration, hi: Duration) {
    assert!(d >= lo && d <= hi, "{d:?} not in {lo:?}..={hi:?}");
}

#[actix_rt::test]
async fn a_second_shutdown_waits_for_the_first_and_gets_the_same_report() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    rt.exec("idle", req("echo:x")).await.expect("exec");
    let (rt1, rt2) = (rt.clone(), rt.clone());
    let t0 = Instant::now();
    let (running, first, second) = futures_util::join!(
        rt.exec("busy", req("sleep:5000")),
        async move {
            sleep(secs(1)).await;
            rt1.shutdown(secs(30)).await
        },
        async move {
            sleep(secs(2)).await;
            let report = rt2.shutdown(secs(1)).await;
            (report, t0.elapsed())
        }
    );
    assert_eq!(running.expect("finishes within the grace").exit_code, 0);
    let first = first.expect("report");
    let (second, second_at) = second;
    let second = second.expect("report");
    assert_eq!(first.stopped.len(), 2, "{first:?}");
    assert_eq!(second, first, "the same report");
    assert!(
        second_at >= secs(5),
        "waited for the command: {second_at:?}"
    );
    // After the shutdown the same report is still the answer.
    assert_eq!(rt.shutdown(secs(30)).await.expect("report"), first);
}

#[actix_rt::test]
async fn after_a_shutdown_the_registry_has_stopped() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    rt.exec("t1", req("echo:x")).await.expect("exec");
    assert!(rt.registry().connected());
    let report = rt.shutdown(secs(10)).await.expect("report");
    assert!(report.is_clean(), "{report:?}");
    assert!(!rt.registry().connected(), "the registry stopped");
    let err = rt.tasks().await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    let err = rt.exec("t1", req("echo:x")).await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
}

#[actix_rt::test]
async fn a_stalled_stop_cannot_hold_a_shutdown_past_its_grace() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    for task in ["a", "b"] {
        rt.exec(task, req("echo:x")).await.expect("exec");
    }
    *journal.stop_hangs.lock().unwrap() = true;
    let t0 = Instant::now();
    let report = rt.shutdown(secs(20)).await.expect("report");
    assert_between(t0.elapsed(), secs(20), Duration::from_millis(20_010));
    let mut failed: Vec<_> = report
        .failed
        .iter()
        .filter(|f| f.task_id.is_some())
        .collect();
    failed.sort_by(|x, y| x.task_id.cmp(&y.task_id));
    assert_eq!(failed.len(), 2, "{report:?}");
    for (failure, task) in failed.iter().zip(["a", "b"]) {
        assert_eq!(failure.task_id.as_deref(), Some(task));
        assert!(failure.instance_id.is_some(), "{failure:?}");
        assert_eq!(failure.error.kind(), ErrorKind::Timeout);
        assert!(
            failure
                .error
                .message()
                .contains("within the shutdown's grace of 20 s"),
            "{failure:?}"
        );
    }
    assert!(!rt.registry().connected());
}

#[actix_rt::test]
async fn a_command_still_out_when_the_grace_ends_is_answered_as_cut_off() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("stuck", req("echo:x")).await.expect("exec");
    *journal.stop_hangs.lock().unwrap() = true;
    let rt1 = rt.clone();
    let (call, report) = futures_util::join!(rt.exec("stuck", req("hang")), async move {
        sleep(secs(1)).await;
        rt1.shutdown(secs(4)).await
    });
    // The actor stopped at the end of the grace with the backend call still
    // out: its caller hears the instance was stopped under the command, not
    // that an answer was lost.
    let err = call.expect_err("cut off");
    assert_eq!(err.kind(), ErrorKind::InstanceGone, "{err}");
    assert!(
        err.message().contains("stopped while the command ran"),
        "{err}"
    );
    assert_eq!(report.expect("report").failed.len(), 1);
}

#[actix_rt::test]
async fn a_stalled_stop_attempt_ends_at_stop_timeout_within_the_grace() {
    tokio::time::pause();
    let config = Config {
        stop_timeout: secs(4),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    rt.exec("a", req("echo:x")).await.expect("exec");
    *journal.stop_hangs.lock().unwrap() = true;
    let t0 = Instant::now();
    let report = rt.shutdown(secs(60)).await.expect("report");
    assert_between(t0.elapsed(), secs(4), Duration::from_millis(4_010));
    let failure = report
        .failed
        .iter()
        .find(|f| f.task_id.as_deref() == Some("a"))
        .expect("listed");
    assert_eq!(failure.error.kind(), ErrorKind::Timeout);
    assert!(
        failure.error.message().contains("4 s (stop_timeout)"),
        "{failure:?}"
    );
}

#[actix_rt::test]
async fn transient_stop_failures_are_retried_only_within_the_grace() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("a", req("echo:x")).await.expect("exec");
    // Retries 2 s, 4 s, 8 s apart would take 14 s.
    *journal.stop_fails_transient.lock().unwrap() = true;
    let t0 = Instant::now();
    let report = rt.shutdown(secs(6)).await.expect("report");
    assert_between(t0.elapsed(), secs(3), Duration::from_millis(6_010));
    let failure = report
        .failed
        .iter()
        .find(|f| f.task_id.as_deref() == Some("a"))
        .expect("listed");
    assert_eq!(failure.instance_id.as_deref(), Some("scripted-1"));
}

#[actix_rt::test]
async fn a_start_still_in_flight_at_the_grace_is_listed() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    *journal.start_hangs.lock().unwrap() = true;
    let rt2 = rt.clone();
    let t0 = Instant::now();
    let (pending, report) = futures_util::join!(rt.exec("t1", req("echo:x")), async move {
        sleep(secs(1)).await;
        rt2.shutdown(secs(10)).await
    });
    assert!(pending.is_err());
    let report = report.expect("report");
    assert_between(t0.elapsed(), secs(11), Duration::from_millis(11_010));
    let failure = report
        .failed
        .iter()
        .find(|f| f.task_id.as_deref() == Some("t1"))
        .expect("listed");
    assert_eq!(failure.error.kind(), ErrorKind::Timeout);
    assert!(
        failure.error.message().contains("the instance start"),
        "{failure:?}"
    );
}

#[actix_rt::test]
async fn a_hanging_sweep_ends_at_the_grace() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("a", req("echo:x")).await.expect("exec");
    *journal.sweep_hangs.lock().unwrap() = true;
    let t0 = Instant::now();
    let report = rt.shutdown(secs(10)).await.expect("report");
    assert_between(t0.elapsed(), secs(10), Duration::from_millis(10_010));
    assert_eq!(report.stopped.len(), 1);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let failure = &report.failed[0];
    assert_eq!(failure.task_id, None);
    assert_eq!(failure.error.kind(), ErrorKind::Timeout);
    assert!(
        failure.error.message().contains("shutdown's grace of 10 s"),
        "{failure:?}"
    );
}

#[actix_rt::test]
async fn a_panicking_sweep_is_reported_not_lost() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("a", req("echo:x")).await.expect("exec");
    *journal.sweep_panics.lock().unwrap() = true;
    let report = rt.shutdown(secs(10)).await.expect("report");
    assert_eq!(journal.sweeps.load(Ordering::SeqCst), 1);
    assert!(!report.is_clean(), "{report:?}");
    let failure = &report.failed[0];
    assert_eq!(failure.task_id, None);
    assert_eq!(failure.error.kind(), ErrorKind::Internal);
    assert!(
        failure.error.message().contains("scripted sweep panic"),
        "{failure:?}"
    );
}

/// Threads of this process whose name marks them as actix worker arbiters
/// (`actix-rt|system:N|arbiter:M`, cut to 15 bytes by the kernel).
fn arbiter_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("actix-rt|"))
        .count()
}

#[test]
fn shutdown_stops_and_joins_the_worker_threads() {
    // In a process of its own: other tests start arbiters too.
    run_probe(
        "shutdown::worker_threads_probe",
        &[],
        "worker threads probe passed",
    );
}

#[test]
#[ignore = "run by shutdown_stops_and_joins_the_worker_threads in a child process"]
fn worker_threads_probe() {
    actix_rt::System::new().block_on(async {
        assert_eq!(arbiter_threads(), 0, "no worker before the runtime");
        let (provider, journal) = Scripted::new();
        let config = test_config().with_workers(3);
        let rt = Runtime::start_with(config, provider, Placement::Workers).expect("start");
        assert_eq!(arbiter_threads(), 3);
        for i in 0..6 {
            rt.exec(format!("t{i}"), req("echo:x")).await.expect("exec");
        }
        let report = rt.shutdown(secs(10)).await.expect("report");
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(journal.live(), 0);
        assert!(!rt.registry().connected(), "the registry stopped");
        // Joined, not just told to stop: no waiting needed.
        assert_eq!(arbiter_threads(), 0, "every worker thread ended");
    });
    println!("worker threads probe passed");
}
