//! The runtime's Prometheus metrics (`hecate::metrics`): the counters move
//! as calls, timeouts, retries, evictions and idle stops happen, the gauges
//! come back to zero after a shutdown, and no task id reaches the text.

use std::time::Duration;

use futures_util::future::join_all;
use hecate::metrics::{EndReason, ExecClass};
use hecate::ExecRequest;

use crate::helper::{advance, scripted_runtime, settle, test_config};

/// The value of one series (`name{labels}`) in Prometheus text, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

const SECRET_TASK: &str = "task-id-that-must-not-leak-7f3a";

#[actix_rt::test]
async fn counters_follow_execs_timeouts_errors_and_retries() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let before = rt.metrics_text();
    assert_eq!(must(&before, "hecate_execs_total{outcome=\"ok\"}"), 0.0);
    assert_eq!(must(&before, "hecate_tasks_live"), 0.0);

    rt.exec(SECRET_TASK, ExecRequest::new("echo:hi"))
        .await
        .expect("echo");
    rt.exec(SECRET_TASK, ExecRequest::new("exit:3"))
        .await
        .expect("exit 3");
    let timed_out = rt
        .exec(
            SECRET_TASK,
            ExecRequest::new("sleep:5000").timeout(Duration::from_secs(1)),
        )
        .await
        .expect("timeout");
    assert!(timed_out.timed_out);
    rt.exec(SECRET_TASK, ExecRequest::new("fail:transient:1:k"))
        .await
        .expect("retried once, then ran");
    let bad = rt.exec(SECRET_TASK, ExecRequest::new("")).await;
    assert!(bad.is_err());
    let rejected = rt
        .exec(SECRET_TASK, ExecRequest::new("fail:rejected:1:r"))
        .await;
    assert!(rejected.is_err());
    assert_eq!(journal.starts(), 1);

    let m = rt.metrics();
    assert_eq!(m.execs(ExecClass::Ok), 2);
    assert_eq!(m.execs(ExecClass::Nonzero), 1);
    assert_eq!(m.execs(ExecClass::TimedOut), 1);
    assert_eq!(m.execs(ExecClass::Error), 2);
    let text = rt.metrics_text();
    assert_eq!(must(&text, "hecate_execs_total{outcome=\"ok\"}"), 2.0);
    assert_eq!(must(&text, "hecate_execs_total{outcome=\"nonzero\"}"), 1.0);
    assert_eq!(
        must(&text, "hecate_execs_total{outcome=\"timed_out\"}"),
        1.0
    );
    assert_eq!(must(&text, "hecate_execs_total{outcome=\"error\"}"), 2.0);
    assert_eq!(
        must(&text, "hecate_exec_errors_total{kind=\"invalid_input\"}"),
        1.0
    );
    assert_eq!(
        must(&text, "hecate_exec_errors_total{kind=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "hecate_retries_total{op=\"exec\",class=\"transient\"}"
        ),
        1.0
    );
    assert_eq!(
        must(&text, "hecate_instance_starts_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(must(&text, "hecate_instance_start_seconds_count"), 1.0);
    // The timed-out call took its 1 s timeout (and a timer tick) on the
    // paused clock.
    assert_eq!(
        must(
            &text,
            "hecate_exec_duration_seconds_bucket{outcome=\"timed_out\",le=\"0.5\"}"
        ),
        0.0
    );
    assert_eq!(
        must(
            &text,
            "hecate_exec_duration_seconds_bucket{outcome=\"timed_out\",le=\"2.5\"}"
        ),
        1.0
    );
    assert_eq!(must(&text, "hecate_tasks_live"), 1.0);
    assert_eq!(must(&text, "hecate_instances_live"), 1.0);
    assert!(
        !text.contains(SECRET_TASK),
        "a task id in the metrics:\n{text}"
    );
    assert!(!text.contains("task_id"), "{text}");
    let om = rt.metrics().openmetrics_text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(!om.contains(SECRET_TASK));
    rt.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn instance_ends_are_counted_by_reason_and_gauges_return_to_zero() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    let m = rt.metrics().clone();
    rt.exec("task-a1", ExecRequest::new("echo:x"))
        .await
        .expect("exec");
    assert!(rt.evict("task-a1").await.expect("evict"));
    assert_eq!(m.instance_ends(EndReason::Evicted), 1);

    rt.exec("task-b2", ExecRequest::new("echo:x"))
        .await
        .expect("exec");
    advance(&rt, Duration::from_secs(301)).await;
    assert_eq!(m.instance_ends(EndReason::Idle), 1);

    rt.exec("task-c3", ExecRequest::new("echo:x"))
        .await
        .expect("exec");
    let moved = rt
        .exec("task-c3", ExecRequest::new("fail:gone:1:v"))
        .await
        .expect("ran on a fresh instance");
    assert!(moved.instance_restarted.is_some());
    assert_eq!(m.instance_ends(EndReason::Vanished), 1);

    rt.exec("task-d4", ExecRequest::new("echo:x"))
        .await
        .expect("exec");
    settle(&rt).await;
    // Three commands on one task: one runs, two wait in its queue.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let rt = rt.clone();
            actix_rt::spawn(async move { rt.exec("task-d4", ExecRequest::new("sleep:1000")).await })
        })
        .collect();
    let mut depth = 0;
    for _ in 0..20 {
        settle(&rt).await;
        depth = m.queue_depth();
        if depth == 2 {
            break;
        }
    }
    assert_eq!(depth, 2, "{}", rt.metrics_text());
    for done in join_all(calls).await {
        done.expect("join").expect("sleep");
    }
    assert_eq!(m.queue_depth(), 0);

    let text = rt.metrics_text();
    assert_eq!(must(&text, "hecate_tasks_live"), 2.0, "{text}");
    rt.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert_eq!(m.instance_ends(EndReason::Shutdown), 2);
    let text = m.text();
    assert_eq!(must(&text, "hecate_tasks_live"), 0.0, "{text}");
    assert_eq!(must(&text, "hecate_instances_live"), 0.0, "{text}");
    assert_eq!(must(&text, "hecate_queue_depth"), 0.0, "{text}");
    for task in ["task-a1", "task-b2", "task-c3", "task-d4"] {
        assert!(!text.contains(&format!("\"{task}\"")), "{text}");
    }
}

/// `hecate_jobs_running` on the local backend (real processes): a job is
/// counted while it runs and counted out however it ends — it exits, it is
/// killed, it reaches its lifetime, its instance is evicted (lost), the
/// runtime stops.
#[actix_rt::test]
async fn the_running_jobs_gauge_follows_every_way_a_job_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = crate::helper::local_config(dir.path().join("root")).with_workers(2);
    config.local.kill_grace = Duration::from_millis(300);
    config.jobs.kill_grace = Duration::from_millis(300);
    config.jobs.poll_interval = Some(Duration::from_millis(20));
    let rt = hecate::Runtime::start(config).expect("runtime");
    let m = rt.metrics().clone();
    let start = |task: &'static str, req: ExecRequest| {
        let rt = rt.clone();
        async move {
            let out = rt.exec(task, req.background()).await.expect("started");
            let job = out.job.expect("a job");
            job.id.parse::<u64>().expect("numeric id")
        }
    };
    let gauge = || must(&rt.metrics_text(), "hecate_jobs_running");
    let wait = Duration::from_secs(30);
    assert_eq!(gauge(), 0.0);

    // Exits on its own.
    let id = start(SECRET_TASK, ExecRequest::new("sleep 0.2")).await;
    assert_eq!(m.running_jobs(), 1);
    let job = rt.wait_job(SECRET_TASK, id, wait).await.expect("wait");
    assert_eq!(job.state, hecate::JobState::Exited, "{job:?}");
    assert_eq!(gauge(), 0.0);

    // Killed.
    let id = start(SECRET_TASK, ExecRequest::new("sleep 1000")).await;
    assert_eq!(gauge(), 1.0);
    let job = rt.kill_job(SECRET_TASK, id).await.expect("kill");
    assert_eq!(job.state, hecate::JobState::Killed);
    assert_eq!(gauge(), 0.0);

    // Killed at its lifetime.
    let req = ExecRequest::new("sleep 1000").job_lifetime(Duration::from_secs(1));
    let id = start(SECRET_TASK, req).await;
    assert_eq!(gauge(), 1.0);
    let job = rt.wait_job(SECRET_TASK, id, wait).await.expect("wait");
    assert_eq!(job.end_reason.as_deref(), Some("it reached its lifetime"));
    assert_eq!(gauge(), 0.0);

    // Lost with its evicted instance.
    let id = start(SECRET_TASK, ExecRequest::new("sleep 1000")).await;
    assert_eq!(gauge(), 1.0);
    assert!(rt.evict(SECRET_TASK).await.expect("evict"));
    let jobs = rt.jobs(SECRET_TASK).expect("jobs");
    let lost = jobs.iter().find(|j| j.id == id).expect("listed");
    assert_eq!(lost.state, hecate::JobState::Lost, "{lost:?}");
    assert_eq!(gauge(), 0.0);

    // Two tasks' jobs, stopped with the runtime.
    start(SECRET_TASK, ExecRequest::new("sleep 1000")).await;
    start("task-b2", ExecRequest::new("sleep 1000")).await;
    let text = rt.metrics_text();
    assert_eq!(must(&text, "hecate_jobs_running"), 2.0, "{text}");
    assert!(!text.contains(SECRET_TASK), "{text}");
    let report = rt
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(must(&m.text(), "hecate_jobs_running"), 0.0);
}
