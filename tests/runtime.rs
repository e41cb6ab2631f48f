//! The runtime's actors on a scripted backend and a paused tokio clock:
//! queueing, timers, retries, caps, races, failure isolation, shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use hecate::{Config, ErrorKind, ExecRequest, RestartReason, RetryPolicy, TaskState};
use tokio::time::{sleep, Instant};

use crate::helper::{scripted_runtime, settle, test_config};

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
async fn exec_starts_once_and_reuses_the_instance() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let first = rt.exec("t1", req("echo:hi")).await.expect("first");
    assert_eq!(first.stdout.head, "hi");
    assert!(first.instance_started);
    assert_eq!(first.instance_restarted, None);
    let second = rt.exec("t1", req("exit:3")).await.expect("second");
    assert_eq!(second.exit_code, 3, "a non-zero exit is data, not an error");
    assert!(!second.instance_started);
    assert_eq!(first.instance_id, second.instance_id);
    assert_eq!(journal.starts(), 1);
    let meta = journal.metadata.lock().unwrap()[0].clone();
    assert_eq!(meta["hecate_task_id"], "t1");
    assert_eq!(meta["created_by"], "hecate");
    assert_eq!(meta["hecate_runtime_id"], rt.runtime_id());
}

#[actix_rt::test]
async fn exec_is_fifo_per_task() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    // Later commands are shorter, so any overlap would reorder them.
    let calls = (0..100u64).map(|i| rt.exec("t1", req(&format!("sleep:{}", 1000 - i * 10))));
    let results = join_all(calls).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let order: Vec<String> = journal.ran().into_iter().map(|(_, c)| c).collect();
    let expected: Vec<String> = (0..100u64)
        .map(|i| format!("sleep:{}", 1000 - i * 10))
        .collect();
    assert_eq!(order, expected);
}

#[actix_rt::test]
async fn tasks_run_concurrently() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let t0 = Instant::now();
    let calls = (0..20).map(|i| rt.exec(format!("t{i}"), req("sleep:10000")));
    let results = join_all(calls).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_between(t0.elapsed(), secs(10), Duration::from_millis(10_100));
    assert_eq!(journal.starts(), 20);
}

#[actix_rt::test]
async fn idle_vm_is_stopped_after_lifetime() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("t1", req("echo:x")).await.expect("exec");
    sleep(secs(299)).await;
    settle(&rt).await;
    assert_eq!(journal.stops(), 0);
    assert_eq!(rt.tasks().await.expect("tasks").len(), 1);
    let t0 = Instant::now();
    sleep(Duration::from_millis(1_001)).await;
    settle(&rt).await;
    assert_eq!(journal.stops(), 1, "stopped by the idle timer");
    assert!(t0.elapsed() <= Duration::from_millis(1_005));
    assert!(rt.tasks().await.expect("tasks").is_empty(), "evicted");
    let next = rt.exec("t1", req("echo:y")).await.expect("exec");
    assert_eq!(next.instance_restarted, Some(RestartReason::Idle));
    assert_eq!(journal.starts(), 2);
}

#[actix_rt::test]
async fn idle_timer_never_fires_while_busy() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let long = req("sleep:600000").timeout(secs(1000));
    let out = rt.exec("t1", long).await.expect("exec");
    assert_eq!(out.exit_code, 0);
    assert_eq!(journal.stops(), 0, "no idle stop during a 600 s command");
    sleep(secs(299)).await;
    settle(&rt).await;
    assert_eq!(
        journal.stops(),
        0,
        "idle time counts from the command's end"
    );
    sleep(secs(2)).await;
    settle(&rt).await;
    assert_eq!(journal.stops(), 1);
}

#[actix_rt::test]
async fn ttl_stops_the_instance_and_the_next_exec_gets_a_fresh_one() {
    tokio::time::pause();
    let config = Config {
        vm_ttl: secs(100),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    let first = rt.exec("t1", req("echo:a")).await.expect("exec");
    sleep(secs(50)).await;
    rt.exec("t1", req("echo:b"))
        .await
        .expect("activity does not extend the TTL");
    sleep(Duration::from_millis(50_500)).await;
    settle(&rt).await;
    assert_eq!(journal.stops(), 1, "stopped at the TTL");
    let next = rt.exec("t1", req("echo:c")).await.expect("exec");
    assert_eq!(next.instance_restarted, Some(RestartReason::Ttl));
    assert_ne!(next.instance_id, first.instance_id);
}

#[actix_rt::test]
async fn ttl_during_a_command_lets_it_finish_and_moves_the_queue_to_a_fresh_instance() {
    tokio::time::pause();
    let config = Config {
        vm_ttl: secs(10),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    let (a, b) = futures_util::join!(
        rt.exec("t1", req("sleep:20000")),
        rt.exec("t1", req("echo:after"))
    );
    let a = a.expect("running command finishes");
    assert_eq!(a.stdout.head, "slept");
    let b = b.expect("queued command runs");
    assert_eq!(b.instance_restarted, Some(RestartReason::Ttl));
    assert_ne!(a.instance_id, b.instance_id);
    assert_eq!(journal.starts(), 2);
    assert_eq!(journal.stops(), 1);
}

#[actix_rt::test]
async fn transient_start_failures_retry_on_the_backoff_schedule() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    *journal.start_failures.lock().unwrap() = (0..3)
        .map(|_| hecate::Error::transient("503 try later"))
        .collect();
    let t0 = Instant::now();
    let out = rt
        .exec("t1", req("echo:ok"))
        .await
        .expect("succeeds on the 4th try");
    // 2 s, 4 s, 8 s, each with ±20 % jitter.
    assert_between(
        t0.elapsed(),
        Duration::from_millis(11_200),
        Duration::from_millis(16_810),
    );
    assert!(out.queued >= Duration::from_millis(11_200));
    assert_eq!(journal.starts(), 1);
}

#[actix_rt::test]
async fn retry_after_is_honoured() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    *journal.start_failures.lock().unwrap() =
        vec![hecate::Error::transient("429").with_retry_after(Some(secs(30)))];
    let t0 = Instant::now();
    rt.exec("t1", req("echo:ok")).await.expect("exec");
    assert_between(t0.elapsed(), secs(30), Duration::from_millis(30_010));
}

#[actix_rt::test]
async fn rejected_start_is_not_retried_and_every_queued_call_is_answered() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    *journal.start_failures.lock().unwrap() = vec![hecate::Error::new(
        ErrorKind::Rejected,
        "401: check MORPH_API_KEY",
    )];
    let results = join_all((0..5).map(|_| rt.exec("t1", req("echo:x")))).await;
    for r in &results {
        assert_eq!(
            r.as_ref().expect_err("rejected").kind(),
            ErrorKind::Rejected
        );
    }
    let ok = rt
        .exec("t1", req("echo:x"))
        .await
        .expect("a later call starts afresh");
    assert_eq!(ok.stdout.head, "x");
}

#[actix_rt::test]
async fn transient_exec_failures_are_retried() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let out = rt
        .exec("t1", req("fail:transient:2:k"))
        .await
        .expect("third attempt");
    assert_eq!(out.attempts, 3);
    assert_eq!(journal.runs_of("fail:transient:2:k"), 1);
}

#[actix_rt::test]
async fn indeterminate_failures_are_not_rerun() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let err = rt
        .exec("t1", req("fail:indeterminate:1:k"))
        .await
        .expect_err("not retried");
    assert_eq!(err.kind(), ErrorKind::Indeterminate);
    assert_eq!(
        journal.runs_of("fail:indeterminate:1:k"),
        1,
        "ran once, never again"
    );
}

#[actix_rt::test]
async fn indeterminate_failures_are_retried_when_the_caller_opted_in() {
    tokio::time::pause();
    let config = Config {
        retry_indeterminate: true,
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    let out = rt
        .exec("t1", req("fail:indeterminate:1:k"))
        .await
        .expect("retried");
    assert_eq!(out.attempts, 2);
    assert_eq!(journal.runs_of("fail:indeterminate:1:k"), 2);
}

#[actix_rt::test]
async fn a_vanished_instance_is_replaced_within_the_same_call() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let first = rt.exec("t1", req("echo:a")).await.expect("exec");
    let out = rt
        .exec("t1", req("fail:gone:1:k"))
        .await
        .expect("rerun on a fresh instance");
    assert_eq!(out.instance_restarted, Some(RestartReason::Vanished));
    assert_ne!(out.instance_id, first.instance_id);
    assert_eq!(journal.starts(), 2);
    assert_eq!(journal.runs_of("fail:gone:1:k"), 1);
}

#[actix_rt::test]
async fn a_panicking_backend_fails_one_call_and_no_other_task() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    rt.exec("other", req("echo:alive"))
        .await
        .expect("other task");
    let err = rt
        .exec("t1", req("panic"))
        .await
        .expect_err("panic is an error");
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.message().contains("panicked"));
    let other = rt
        .exec("other", req("echo:still"))
        .await
        .expect("other task unaffected");
    assert_eq!(other.stdout.head, "still");
    let again = rt.exec("t1", req("echo:fresh")).await.expect("fresh actor");
    assert_eq!(again.instance_restarted, Some(RestartReason::Failed));
}

#[actix_rt::test]
async fn a_hanging_backend_call_ends_at_its_deadline() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    let t0 = Instant::now();
    let (hung, other) = futures_util::join!(
        rt.exec("t1", req("hang").timeout(secs(10))),
        rt.exec("t2", req("sleep:1000"))
    );
    assert!(other.is_ok());
    let err = hung.expect_err("deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.message()
            .contains("40 s (the command's timeout of 10 s plus exec_grace of 30 s)"),
        "{err}"
    );
    // The command's timeout plus the 30 s grace.
    assert_between(t0.elapsed(), secs(40), Duration::from_millis(40_010));
}

#[actix_rt::test]
async fn a_hanging_start_ends_at_its_deadline() {
    tokio::time::pause();
    let config = Config {
        start_timeout: secs(60),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    *journal.start_hangs.lock().unwrap() = true;
    let err = rt
        .exec("t1", req("echo:x"))
        .await
        .expect_err("start deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[actix_rt::test]
async fn max_instances_makes_further_tasks_wait_in_fifo_order() {
    tokio::time::pause();
    let config = Config {
        max_instances: 2,
        idle_lifetime: secs(5),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    let calls = (0..4).map(|i| rt.exec(format!("t{i}"), req("sleep:10000")));
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("ok"))
        .collect();
    assert_eq!(results[0].slot_wait, Duration::ZERO);
    assert_eq!(results[1].slot_wait, Duration::ZERO);
    // Slots free when the first two idle out: 10 s of work + 5 s idle.
    for r in &results[2..] {
        assert_between(r.slot_wait, secs(15), Duration::from_millis(15_010));
    }
    assert!(journal.live() <= 2);
}

#[actix_rt::test]
async fn max_concurrent_starts_limits_create_requests_in_flight() {
    tokio::time::pause();
    let config = Config {
        max_concurrent_starts: 1,
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    *journal.create_delay.lock().unwrap() = secs(5);
    let t0 = Instant::now();
    let results = join_all((0..3).map(|i| rt.exec(format!("t{i}"), req("echo:x")))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_between(t0.elapsed(), secs(15), Duration::from_millis(15_010));
}

#[actix_rt::test]
async fn a_start_holds_its_start_slot_only_for_the_create_request() {
    tokio::time::pause();
    let config = Config {
        max_concurrent_starts: 1,
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    *journal.create_delay.lock().unwrap() = secs(1);
    *journal.start_delay.lock().unwrap() = secs(10);
    let t0 = Instant::now();
    let results = join_all((0..5).map(|i| rt.exec(format!("t{i}"), req("echo:x")))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    // Creates one after another (1 s each), boots side by side: the last
    // create ends at 5 s and its instance is ready 10 s later. Holding the
    // slot through the boot would take 5 × 11 s.
    assert_between(t0.elapsed(), secs(15), Duration::from_millis(15_010));
    assert_eq!(journal.max_booting.load(Ordering::SeqCst), 5);
}

#[actix_rt::test]
async fn a_start_past_its_deadline_names_the_setting() {
    tokio::time::pause();
    let config = Config {
        start_timeout: secs(60),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    *journal.start_hangs.lock().unwrap() = true;
    let t0 = Instant::now();
    let err = rt
        .exec("t1", req("echo:x"))
        .await
        .expect_err("start deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.message()
            .contains("did not finish within 60 s (HECATE_START_TIMEOUT_SECONDS)"),
        "{err}"
    );
    assert_between(t0.elapsed(), secs(60), Duration::from_millis(60_010));
}

#[actix_rt::test]
async fn the_start_deadline_bounds_its_retries_too() {
    tokio::time::pause();
    let mut config = Config {
        start_timeout: secs(5),
        ..test_config()
    };
    // Without jitter, so the waits are exactly 2 s then 4 s (with it, 1.6 s
    // + 3.2 s would leave room for a third attempt).
    config.retry.jitter = 0.0;
    let (rt, journal) = scripted_runtime(config);
    *journal.start_failures.lock().unwrap() = (0..10)
        .map(|_| hecate::Error::transient("503 try later"))
        .collect();
    let t0 = Instant::now();
    let err = rt
        .exec("t1", req("echo:x"))
        .await
        .expect_err("retries run out of time");
    // Backoff of 2 s then 4 s would reach past 5 s: the second wait
    // is cut to the deadline, and no attempt is made after it.
    assert_between(t0.elapsed(), secs(5), Duration::from_millis(5_010));
    assert_eq!(journal.metadata.lock().unwrap().len(), 2, "two attempts");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.message()
            .contains("did not finish within 5 s (HECATE_START_TIMEOUT_SECONDS)"),
        "{err}"
    );
}

#[actix_rt::test]
async fn exec_racing_idle_eviction_is_answered_on_a_fresh_instance() {
    tokio::time::pause();
    let config = Config {
        idle_lifetime: secs(10),
        ..test_config()
    };
    let (rt, journal) = scripted_runtime(config);
    rt.exec("t1", req("echo:a")).await.expect("exec");
    // Land the next request exactly when the idle timer fires.
    let (_, late) = futures_util::join!(sleep(secs(10)), rt.exec("t1", req("echo:b")));
    let late = late.expect("answered");
    assert_eq!(late.stdout.head, "b");
    // Either it beat the timer or it went to a fresh instance; never lost.
    assert!(journal.starts() <= 2);
    let results = join_all((0..20).map(|i| {
        let rt = rt.clone();
        async move {
            sleep(Duration::from_millis(9_990 + i)).await;
            rt.exec("t1", req("echo:c")).await
        }
    }))
    .await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "every racing request answered"
    );
}

#[actix_rt::test]
async fn evict_while_running_answers_every_request() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("t1", req("echo:warm")).await.expect("exec");
    let rt2 = rt.clone();
    let (running, queued, evicted) = futures_util::join!(
        rt.exec("t1", req("sleep:5000")),
        rt.exec("t1", req("echo:queued")),
        async move {
            sleep(secs(1)).await;
            rt2.evict("t1").await
        }
    );
    assert!(evicted.expect("evict"));
    // The interrupted command gets an answer (its killed output or an error).
    match running {
        Ok(out) => assert_ne!(out.stdout.head, "slept"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::InstanceGone),
    }
    let queued = queued.expect("queued command runs on a fresh instance");
    assert_eq!(queued.instance_restarted, Some(RestartReason::Evicted));
    assert_eq!(journal.starts(), 2);
    assert!(!rt.evict("nope").await.expect("evict"), "unknown task");
}

#[actix_rt::test]
async fn an_instance_that_finishes_starting_after_its_eviction_is_stopped_at_once() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    *journal.start_delay.lock().unwrap() = secs(5);
    let rt2 = rt.clone();
    let (out, evicted) = futures_util::join!(rt.exec("t1", req("echo:x")), async move {
        sleep(secs(1)).await;
        rt2.evict("t1").await
    });
    assert!(evicted.expect("evict"));
    let out = out.expect("the request runs on a fresh instance");
    assert_eq!(out.stdout.head, "x");
    settle(&rt).await;
    assert_eq!(journal.starts(), 2);
    assert_eq!(
        journal.stops(),
        1,
        "the late instance is not left to idle out"
    );
    assert_eq!(journal.live(), 1);
}

#[actix_rt::test]
async fn one_task_hammered_by_100_callers_keeps_fifo() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let rt = rt.clone();
            async move { rt.exec("hot", req(&format!("echo:{i}"))).await }
        })
        .collect();
    let results = join_all(calls).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().expect("ok").stdout.head, i.to_string());
    }
    assert_eq!(journal.ran().len(), 100);
}

#[actix_rt::test]
async fn shutdown_lets_running_commands_finish_and_stops_every_instance() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    for i in 0..3 {
        rt.exec(format!("idle{i}"), req("echo:x"))
            .await
            .expect("exec");
    }
    let rt2 = rt.clone();
    let (running, queued, report) = futures_util::join!(
        rt.exec("busy", req("sleep:5000")),
        rt.exec("busy", req("echo:never")),
        async move {
            sleep(secs(1)).await;
            rt2.shutdown(secs(30)).await
        }
    );
    assert_eq!(
        running.expect("finishes within the grace").stdout.head,
        "slept"
    );
    assert_eq!(
        queued.expect_err("not started").kind(),
        ErrorKind::ShuttingDown
    );
    let report = report.expect("report");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.stopped.len(), 4);
    assert_eq!(journal.live(), 0, "no instance left");
    let after = rt.exec("t9", req("echo:x")).await.expect_err("no new work");
    assert_eq!(after.kind(), ErrorKind::ShuttingDown);
    assert_eq!(journal.runs_of("echo:never"), 0);
}

#[actix_rt::test]
async fn shutdown_stops_instances_under_commands_that_outlast_the_grace() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    rt.exec("warm", req("echo:x")).await.expect("exec");
    let rt2 = rt.clone();
    let t0 = Instant::now();
    let (running, report) = futures_util::join!(
        rt.exec("slow", req("sleep:100000").timeout(secs(200))),
        async move {
            sleep(secs(1)).await;
            rt2.shutdown(secs(2)).await
        }
    );
    let report = report.expect("report");
    assert!(report.is_clean());
    assert!(
        t0.elapsed() < secs(10),
        "did not wait for the 100 s command"
    );
    let running = running.expect("answered with the killed command's result");
    assert_eq!(running.exit_code, 137);
    assert_eq!(journal.live(), 0);
}

#[actix_rt::test]
async fn tasks_reports_live_tasks() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    rt.exec("a", req("echo:x")).await.expect("exec");
    sleep(secs(7)).await;
    let tasks = rt.tasks().await.expect("tasks");
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t.task_id, "a");
    assert_eq!(t.state, TaskState::Ready);
    assert!(t
        .instance_id
        .as_deref()
        .is_some_and(|id| id.starts_with("scripted-")));
    assert!(t.idle_for.expect("idle") >= secs(7));
    assert_eq!(t.queued, 0);
}

#[actix_rt::test]
async fn bad_requests_get_clear_errors() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let long_id = "x".repeat(10_000);
    let cases: Vec<(&str, ExecRequest, &str)> = vec![
        ("t", req(""), "empty"),
        ("t", req("   \n"), "empty"),
        ("t", req(&"a".repeat(10 * 1024 * 1024)), "limit"),
        ("t", req("echo \0 x"), "NUL"),
        ("t", req("echo").timeout(Duration::ZERO), "timeout"),
        ("t", req("echo").timeout(secs(10_000_000)), "timeout"),
        ("", req("echo"), "task_id"),
        (&long_id, req("echo"), "task_id"),
        ("a\0b", req("echo"), "task_id"),
    ];
    for (task, request, needle) in cases {
        let err = rt.exec(task, request).await.expect_err(needle);
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains(needle), "{err}");
    }
    assert_eq!(journal.starts(), 0);
    let odd = rt
        .exec("../../etc/ü/x", req("echo:ok"))
        .await
        .expect("odd ids are fine");
    assert_eq!(odd.task_id, "../../etc/ü/x");
}

#[actix_rt::test]
async fn actix_orchestrators_can_use_messages() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    let registry = rt.registry();
    let out = registry
        .send(hecate::runtime::RunCommand {
            task_id: "t1".into(),
            request: req("echo:via-actix"),
        })
        .await
        .expect("mailbox")
        .expect("exec");
    assert_eq!(out.stdout.head, "via-actix");
    let tasks = registry
        .send(hecate::runtime::ListTasks)
        .await
        .expect("mailbox");
    assert_eq!(tasks.len(), 1);
}

#[actix_rt::test]
async fn retry_policy_is_configurable() {
    tokio::time::pause();
    let config = Config {
        retry: RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(100),
            jitter: 0.0,
            ..RetryPolicy::default()
        },
        ..test_config()
    };
    let (rt, _journal) = scripted_runtime(config);
    let t0 = Instant::now();
    let err = rt
        .exec("t1", req("fail:transient:5:k"))
        .await
        .expect_err("gives up");
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_between(
        t0.elapsed(),
        Duration::from_millis(100),
        Duration::from_millis(105),
    );
}

#[test]
fn starting_outside_an_actix_system_is_an_error_not_a_panic() {
    let (provider, _journal) = crate::helper::Scripted::new();
    let err = hecate::Runtime::start_with(test_config(), provider, hecate::Placement::Workers)
        .expect_err("no System");
    assert!(err.message().contains("actix System"), "{err}");
}
