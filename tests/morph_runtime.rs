//! Integration tests: the whole runtime on the MorphCloud backend, end to
//! end against the in-process simulator (`hecate::sim`) on 127.0.0.1:0 —
//! tags, TTLs on both sides, idle eviction, each fault class, timeouts,
//! background jobs, graceful shutdown, `hecate gc` after a crash, and the
//! example batch giving the same results as on the local backend.
//!
//! The simulator's boot timers and TTLs are real time, so these tests use
//! short boot times, 10 ms readiness polls and small retry delays, and wait
//! for the simulator by polling its counters in bounded loops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hecate::batch::{self, ProgressMode};
use hecate::gc::{self, GcOptions};
use hecate::provider::morph::MorphProvider;
use hecate::sim::{ExecMode, FaultConfig, SimConfig, SimServer, SimStats};
use hecate::tool::{self, ToolArgs};
use hecate::{
    ApiKey, BackendKind, Config, ErrorKind, ExecRequest, Placement, RestartReason, RetryPolicy,
    Runtime,
};

use crate::helper::server::{spawn_server, start_sim, unused_port, wait_for};
use crate::helper::{environ_contains, processes_with_cmdline};

const KEY: &str = "test-key";

/// A morph configuration for `base_url` with fast polls and retries.
fn morph_config(base_url: &str) -> Config {
    let mut c = Config::default()
        .with_backend(BackendKind::Morph)
        .with_morph(base_url, ApiKey::new(KEY))
        .with_retry(RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(20),
            factor: 2.0,
            max_delay: Duration::from_secs(2),
            jitter: 0.0,
        });
    c.morph.snapshot_id = "snap_test".to_string();
    c.morph.poll_interval = Duration::from_millis(10);
    c.morph.ready_timeout = Duration::from_secs(20);
    c.morph.request_timeout = Duration::from_secs(10);
    c.morph.kill_grace = Duration::from_secs(1);
    c.command_timeout = Duration::from_secs(30);
    c.workers = 2;
    c
}

fn runtime_over(config: Config, placement: Placement) -> Runtime {
    let provider = Arc::new(MorphProvider::new(&config).expect("valid morph config"));
    Runtime::start_with(config, provider, placement).expect("runtime starts")
}

async fn sim_with(f: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut config = SimConfig {
        api_key: KEY.to_string(),
        boot_time: Duration::from_millis(30),
        ..SimConfig::default()
    };
    f(&mut config);
    start_sim(config).await
}

async fn sim() -> SimServer {
    sim_with(|_| {}).await
}

fn faults(f: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
    let mut config = FaultConfig {
        retry_after_secs: 0,
        ..FaultConfig::default()
    };
    f(&mut config);
    config
}

fn tool_args(task: &str, command: &str) -> ToolArgs {
    ToolArgs {
        task_id: Some(task.to_string()),
        ..ToolArgs::new(command)
    }
}

async fn shutdown_clean(rt: &Runtime, sim: &SimServer) {
    let report = rt.shutdown(Duration::from_secs(5)).await.expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(sim.stats().live_instances, 0, "{:?}", sim.stats());
}

// ---------------------------------------------------------------------------
// Tags, TTLs, idle eviction

#[actix_rt::test]
async fn every_instance_carries_the_task_runtime_and_creator_tags() {
    let sim = sim().await;
    let config = morph_config(&sim.base_url());
    let rt = runtime_over(config.clone(), Placement::Workers);
    for task in ["tag-a", "tag/b ünïcode"] {
        let out = rt.exec(task, ExecRequest::new("true")).await.expect("runs");
        assert_eq!(out.exit_code, 0);
    }
    // `gc` lists by `created_by=hecate` on the server and checks every tag
    // again on the client, so finding both here means all three are set.
    let listed = gc::gc(
        &config.morph,
        GcOptions {
            dry_run: true,
            runtime_id: Some(rt.runtime_id().to_string()),
            ..GcOptions::default()
        },
    )
    .await
    .expect("list");
    let mut tasks: Vec<String> = listed
        .found
        .iter()
        .filter_map(|i| i.task_id.clone())
        .collect();
    tasks.sort();
    assert_eq!(tasks, ["tag-a", "tag/b ünïcode"]);
    assert!(listed
        .found
        .iter()
        .all(|i| i.runtime_id.as_deref() == Some(rt.runtime_id())));
    assert!(listed.stopped.is_empty(), "a dry run stops nothing");
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn server_side_ttl_stop_restarts_transparently_within_the_call() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    let first = rt
        .exec("ttl-srv", ExecRequest::new("echo kept > note.txt"))
        .await
        .expect("runs");
    assert!(sim.expire(&first.instance_id), "the instance existed");

    let result = tool::terminal(
        &rt,
        tool_args("ttl-srv", "cat note.txt 2>/dev/null || echo 'no note'"),
    )
    .await;
    assert!(!result.is_error(), "{result:?}");
    assert_eq!(result.exit_code, 0);
    assert!(result.instance_restarted);
    assert!(result.output.starts_with("no note"), "{}", result.output);
    assert!(
        result.output.contains("environment was reset") && result.output.contains("disappeared"),
        "{}",
        result.output
    );
    let json: serde_json::Value = serde_json::from_str(&result.to_json()).expect("json");
    assert_eq!(json["instance_restarted"], true);
    assert_eq!(json["error"], serde_json::Value::Null);

    // The restart is reported once; the fresh instance then just works.
    let next = rt
        .exec("ttl-srv", ExecRequest::new("echo again"))
        .await
        .expect("runs");
    assert_eq!(next.instance_restarted, None);
    assert_ne!(next.instance_id, first.instance_id);
    let stats = sim.stats();
    assert_eq!((stats.starts, stats.expirations), (2, 1), "{stats:?}");
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn server_side_ttl_stop_reports_vanished_on_the_outcome() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::Workers);
    let first = rt
        .exec("ttl-vanish", ExecRequest::new("true"))
        .await
        .expect("runs");
    sim.expire(&first.instance_id);
    let out = rt
        .exec("ttl-vanish", ExecRequest::new("echo fresh"))
        .await
        .expect("runs on a fresh instance");
    assert_eq!(out.instance_restarted, Some(RestartReason::Vanished));
    assert!(out.instance_started);
    assert_eq!(out.stdout.to_text(), "fresh\n");
    // The 404 was answered by the runtime, not retried endlessly.
    assert_eq!(sim.command_runs_containing("echo fresh"), 1);
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn runtime_ttl_deletes_the_vm_and_the_next_command_gets_a_fresh_one() {
    let sim = sim().await;
    let mut config = morph_config(&sim.base_url());
    config.vm_ttl = Duration::from_millis(300);
    let rt = runtime_over(config, Placement::CurrentThread);
    let first = rt
        .exec("ttl-rt", ExecRequest::new("true"))
        .await
        .expect("runs");
    let stats = wait_for(&sim, "the TTL stop", Duration::from_secs(10), |s| {
        s.stops == 1 && s.live_instances == 0
    })
    .await;
    assert_eq!(
        stats.expirations, 0,
        "the runtime, not the server, stopped it"
    );
    let next = rt
        .exec("ttl-rt", ExecRequest::new("true"))
        .await
        .expect("runs");
    assert_eq!(next.instance_restarted, Some(RestartReason::Ttl));
    assert_ne!(next.instance_id, first.instance_id);
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn idle_eviction_deletes_the_vm_on_the_server() {
    let sim = sim().await;
    let mut config = morph_config(&sim.base_url());
    config.idle_lifetime = Duration::from_millis(200);
    let rt = runtime_over(config, Placement::Workers);
    rt.exec("idle", ExecRequest::new("true"))
        .await
        .expect("runs");
    wait_for(&sim, "the idle stop", Duration::from_secs(10), |s| {
        s.stops == 1 && s.live_instances == 0
    })
    .await;
    assert!(rt.tasks().await.expect("tasks").is_empty());
    let next = rt
        .exec("idle", ExecRequest::new("true"))
        .await
        .expect("runs");
    assert_eq!(next.instance_restarted, Some(RestartReason::Idle));
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

// ---------------------------------------------------------------------------
// Faults

#[actix_rt::test]
async fn rate_limits_and_unavailability_are_retried_honouring_retry_after() {
    for status in [429_u16, 503] {
        let sim = sim().await;
        let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
        rt.exec("busy", ExecRequest::new("true"))
            .await
            .expect("warm");
        sim.set_faults(faults(|f| {
            f.retry_after_secs = 1;
            match status {
                429 => f.error_429 = 1.0,
                _ => f.error_503 = 1.0,
            }
        }));
        let began = Instant::now();
        let call = {
            let rt = rt.clone();
            actix_rt::spawn(async move { rt.exec("busy", ExecRequest::new("echo busy-ok")).await })
        };
        wait_for(&sim, "a rejected attempt", Duration::from_secs(10), |s| {
            s.faults_injected >= 1
        })
        .await;
        sim.set_faults(FaultConfig::none());
        let out = call.await.expect("joined").expect("succeeds after retry");
        assert_eq!(out.stdout.to_text(), "busy-ok\n");
        assert!(out.attempts >= 2, "{out:?}");
        // The policy's own delay is 20 ms; waiting a second means the
        // server's Retry-After was honoured.
        assert!(
            began.elapsed() >= Duration::from_millis(950),
            "HTTP {status}: retried after {:?}",
            began.elapsed()
        );
        assert_eq!(sim.command_runs_containing("echo busy-ok"), 1);
        shutdown_clean(&rt, &sim).await;
        sim.stop().await;
    }
}

#[actix_rt::test]
async fn persistent_unavailability_is_a_transient_error_after_the_retries() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    rt.exec("down", ExecRequest::new("true"))
        .await
        .expect("warm");
    sim.set_faults(faults(|f| f.error_503 = 1.0));
    let err = rt
        .exec("down", ExecRequest::new("echo never"))
        .await
        .expect_err("always 503");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.status(), Some(503), "{err}");
    assert_eq!(sim.stats().faults.error_503, 6, "1 attempt + 5 retries");
    assert_eq!(sim.command_runs_containing("echo never"), 0);
    sim.set_faults(FaultConfig::none());
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn connection_refused_is_a_transient_error_after_the_retries() {
    let port = unused_port();
    let rt = runtime_over(
        morph_config(&format!("http://127.0.0.1:{port}/api")),
        Placement::CurrentThread,
    );
    let err = rt
        .exec("refused", ExecRequest::new("true"))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("could not connect"), "{err}");
    assert!(!err.message().contains(KEY), "{err}");
    let report = rt.shutdown(Duration::from_secs(1)).await.expect("shutdown");
    // Nothing was started; only the sweep could not reach the server.
    assert!(report.stopped.is_empty(), "{report:?}");
}

#[actix_rt::test]
async fn a_server_that_comes_back_on_the_same_port_is_used_again() {
    let first = sim().await;
    let port = first.addr().port();
    let rt = runtime_over(morph_config(&first.base_url()), Placement::CurrentThread);
    rt.exec("back", ExecRequest::new("true"))
        .await
        .expect("runs");
    first.stop().await;
    let err = rt
        .exec("back", ExecRequest::new("true"))
        .await
        .expect_err("server is down");
    // Refused connections are transient. A pooled keep-alive connection
    // that the stopping server closed just as the request went out reads as
    // end-of-file after sending, which the client cannot tell apart from a
    // lost answer: then, and only then, "may have run".
    match err.kind() {
        ErrorKind::Transient => {}
        ErrorKind::Indeterminate => assert!(err.message().contains("may have run"), "{err}"),
        other => panic!("{other}: {err}"),
    }
    let second = sim_with(|c| c.port = port).await;
    let out = rt
        .exec("back", ExecRequest::new("echo back"))
        .await
        .expect("runs on the new server");
    // The old instance is unknown to the new server: a fresh one, said so.
    assert_eq!(out.instance_restarted, Some(RestartReason::Vanished));
    assert_eq!(out.stdout.to_text(), "back\n");
    shutdown_clean(&rt, &second).await;
    second.stop().await;
}

/// Runs `command` once with the exec-only fault `set` switched on after the
/// instance is up; returns the error and how often the command ran.
async fn exec_under_fault(
    set: impl FnOnce(&mut FaultConfig),
    marker: &str,
) -> (hecate::Error, u64, SimStats) {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    rt.exec("lossy", ExecRequest::new("true"))
        .await
        .expect("warm");
    sim.set_faults(faults(set));
    let err = rt
        .exec(
            "lossy",
            ExecRequest::new(format!("echo {marker} >> ran.txt")),
        )
        .await
        .expect_err("the answer is lost");
    sim.set_faults(FaultConfig::none());
    let stats = sim.stats();
    let runs = sim.command_runs_containing(marker);
    // The instance survives: the task still works.
    let count = rt
        .exec("lossy", ExecRequest::new("cat ran.txt 2>/dev/null | wc -l"))
        .await
        .expect("instance still usable");
    assert_eq!(count.stdout.to_text().trim(), runs.to_string());
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
    (err, runs, stats)
}

#[actix_rt::test]
async fn lost_exec_answers_are_indeterminate_and_never_rerun() {
    let (err, runs, stats) = exec_under_fault(|f| f.drop_after = 1.0, "drop-after-marker").await;
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err}");
    assert!(err.message().contains("may have run"), "{err}");
    assert_eq!(runs, 1, "ran exactly once");
    assert_eq!(stats.faults.drop_after, 1);

    for (status, marker) in [
        (500_u16, "five-hundred-marker"),
        (502, "bad-gateway-marker"),
    ] {
        let (err, runs, stats) = exec_under_fault(
            |f| match status {
                500 => f.error_500 = 1.0,
                _ => f.error_502 = 1.0,
            },
            marker,
        )
        .await;
        assert_eq!(err.kind(), ErrorKind::Indeterminate, "{status}: {err}");
        assert!(err.message().contains("may have run"), "{status}: {err}");
        assert!(err.message().contains(&status.to_string()), "{err}");
        // The simulator answers these before running anything; what matters
        // is that the runtime did not try again.
        assert_eq!(runs, 0, "{status}");
        assert_eq!(
            stats.faults.error_500 + stats.faults.error_502,
            1,
            "{stats:?}"
        );
    }
}

#[actix_rt::test]
async fn lost_exec_answers_are_retried_when_opted_in() {
    let sim = sim().await;
    let mut config = morph_config(&sim.base_url());
    config.retry_indeterminate = true;
    config.retry.max_retries = 20;
    let rt = runtime_over(config, Placement::CurrentThread);
    rt.exec("opt-in", ExecRequest::new("true"))
        .await
        .expect("warm");
    sim.set_faults(faults(|f| f.drop_after = 1.0));
    let call = {
        let rt = rt.clone();
        actix_rt::spawn(async move {
            rt.exec("opt-in", ExecRequest::new("echo opt-in-marker"))
                .await
        })
    };
    wait_for(&sim, "a dropped answer", Duration::from_secs(10), |s| {
        s.faults.drop_after >= 1
    })
    .await;
    sim.set_faults(FaultConfig::none());
    let out = call.await.expect("joined").expect("retried to success");
    assert_eq!(out.stdout.to_text(), "opt-in-marker\n");
    let runs = sim.command_runs_containing("opt-in-marker");
    assert!(runs >= 2, "the retry ran it again");
    assert_eq!(u64::from(out.attempts), runs, "{out:?}");
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn boot_errors_are_retried_with_a_fresh_instance() {
    let sim = sim_with(|c| c.faults.boot_error = 1.0).await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    let call = {
        let rt = rt.clone();
        actix_rt::spawn(async move { rt.exec("boot", ExecRequest::new("echo booted")).await })
    };
    wait_for(&sim, "a failed boot", Duration::from_secs(10), |s| {
        s.faults.boot_error >= 1
    })
    .await;
    sim.set_faults(FaultConfig::none());
    let out = call.await.expect("joined").expect("a later start succeeds");
    assert_eq!(out.stdout.to_text(), "booted\n");
    let stats = sim.stats();
    assert!(stats.starts >= 2, "{stats:?}");
    // Every failed instance was deleted: only the good one is live.
    assert_eq!(stats.live_instances, 1, "{stats:?}");
    assert_eq!(stats.stops, stats.faults.boot_error, "{stats:?}");
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn a_start_error_reaches_the_agent_without_internal_ids() {
    let sim = sim_with(|c| c.boot_time = Duration::from_secs(3600)).await;
    let mut config = morph_config(&sim.base_url());
    config.morph.ready_timeout = Duration::from_millis(200);
    let rt = runtime_over(config, Placement::CurrentThread);
    let result = tool::terminal(&rt, tool_args("ids-task", "echo never")).await;
    assert_eq!(result.error_kind, Some(ErrorKind::Timeout), "{result:?}");
    let msg = result.error.as_deref().unwrap_or_default();
    assert!(msg.contains("not ready within"), "{msg}");
    for internal in ["task=", "vm=", "ids-task", "morphvm_"] {
        assert!(!msg.contains(internal), "{internal} in {msg}");
    }
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn slow_boot_is_waited_for() {
    let sim = sim_with(|c| c.boot_time = Duration::from_millis(400)).await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    let out = rt
        .exec("slow-boot", ExecRequest::new("echo up"))
        .await
        .expect("runs once ready");
    assert!(out.instance_started);
    assert!(out.queued >= Duration::from_millis(390), "{:?}", out.queued);
    assert_eq!(out.attempts, 1, "no exec was sent before the VM was ready");
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

/// A loopback server that starts instances fine but answers every exec
/// with a body that is not JSON.
fn garbage_exec_server() -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpResponse};
    let instance = serde_json::json!({
        "id": "morphvm_garbage", "object": "instance", "created": 1, "status": "ready",
        "metadata": {}
    });
    spawn_server(move |cfg| {
        let a = instance.clone();
        let b = instance.clone();
        cfg.route(
            "/api/instance",
            web::post().to(move || {
                let a = a.clone();
                async move { HttpResponse::Ok().json(a) }
            }),
        )
        .route(
            "/api/instance",
            web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"data": []})) }),
        )
        .route(
            "/api/instance/{id}",
            web::get().to(move || {
                let b = b.clone();
                async move { HttpResponse::Ok().json(b) }
            }),
        )
        .route(
            "/api/instance/{id}",
            web::delete().to(|| async { HttpResponse::Ok().json(serde_json::json!({})) }),
        )
        .route(
            "/api/instance/{id}/exec",
            web::post().to(|| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body("{\"exit_code\": 0, \"stdout\": \"trunc")
            }),
        );
    })
}

#[actix_rt::test]
async fn malformed_json_is_a_clear_protocol_error() {
    let (url, server) = garbage_exec_server();
    let rt = runtime_over(morph_config(&url), Placement::CurrentThread);
    let result = tool::terminal(&rt, tool_args("garbage", "echo hi")).await;
    assert_eq!(result.error_kind, Some(ErrorKind::Protocol), "{result:?}");
    let msg = result.error.as_deref().unwrap_or_default();
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert!(msg.contains("the command ran"), "{msg}");
    assert_eq!(result.exit_code, -1);
    let report = rt.shutdown(Duration::from_secs(1)).await.expect("shutdown");
    assert_eq!(report.stopped, ["morphvm_garbage"], "{report:?}");
    server.stop(false).await;
}

// ---------------------------------------------------------------------------
// Timeouts, background jobs

#[actix_rt::test]
async fn exec_timeout_kills_the_vm_side_tree_and_the_instance_survives() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    let args = ToolArgs {
        timeout: Some(Duration::from_millis(800)),
        ..tool_args(
            "slow",
            "echo begun; (sleep 37.31; echo child) & sleep 37.32; echo never",
        )
    };
    let began = Instant::now();
    let result = tool::terminal(&rt, args).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(result.exit_code, 124, "{result:?}");
    assert!(result.timed_out);
    assert!(result.output.starts_with("begun"), "{}", result.output);
    assert!(
        result.output.contains("timed out after 0.8 s"),
        "{}",
        result.output
    );
    assert!(!result.output.contains("never"));
    // The whole tree, the backgrounded subshell included, is gone.
    let until = Instant::now() + Duration::from_secs(5);
    while !processes_with_cmdline("sleep 37.3").is_empty() {
        assert!(
            Instant::now() < until,
            "{:?}",
            processes_with_cmdline("sleep 37.3")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = rt
        .exec("slow", ExecRequest::new("echo still here"))
        .await
        .expect("instance survives");
    assert_eq!(after.instance_restarted, None);
    assert!(!after.instance_started);
    assert_eq!(sim.stats().starts, 1);
    shutdown_clean(&rt, &sim).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn background_job_has_an_id_pid_and_log_that_a_later_exec_reads() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    let started = rt
        .exec(
            "bg",
            ExecRequest::new("echo from-the-job; sleep 0.2; echo job-done").background(),
        )
        .await
        .expect("starts");
    assert_eq!(started.exit_code, 0);
    let job = started.job.clone().expect("a job");
    assert_eq!(job.id, "1");
    assert!(job.pid.is_some_and(|p| p > 1), "{job:?}");
    assert!(job.log_file.ends_with("/job-1/log"), "{job:?}");
    assert!(job.exit_file.ends_with("/job-1/exit"), "{job:?}");
    assert!(job.log_file.contains(&started.instance_id), "{job:?}");
    let read = format!(
        "for i in $(seq 1 100); do test -f {exit} && break; sleep 0.05; done; \
         cat {log}; echo exit=$(cat {exit})",
        exit = job.exit_file,
        log = job.log_file
    );
    let out = rt.exec("bg", ExecRequest::new(read)).await.expect("reads");
    assert_eq!(out.stdout.to_text(), "from-the-job\njob-done\nexit=0\n");
    let second = rt
        .exec("bg", ExecRequest::new("sleep 30").background())
        .await
        .expect("starts");
    assert_eq!(second.job.expect("job").id, "2");
    shutdown_clean(&rt, &sim).await;
    // The job died with its VM (the simulator kills a deleted VM's
    // processes right after answering, so allow it a moment).
    let ours = |pid: &u32| environ_contains(*pid, &started.instance_id);
    let until = Instant::now() + Duration::from_secs(5);
    while processes_with_cmdline("sleep 30").iter().any(ours) {
        assert!(Instant::now() < until, "the job outlived its VM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.stop().await;
}

// ---------------------------------------------------------------------------
// Shutdown

#[actix_rt::test]
async fn graceful_shutdown_leaves_no_instance_even_with_commands_running() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::Workers);
    for i in 0..4 {
        rt.exec(format!("sd-{i}"), ExecRequest::new("true"))
            .await
            .expect("runs");
    }
    let running: Vec<_> = (0..2)
        .map(|i| {
            let rt = rt.clone();
            actix_rt::spawn(async move {
                rt.exec(format!("sd-{i}"), ExecRequest::new("sleep 20; echo late"))
                    .await
            })
        })
        .collect();
    wait_for(&sim, "the long commands", Duration::from_secs(10), |s| {
        s.execs >= 6
    })
    .await;
    // The grace bounds the deletes too: half of it is theirs.
    let report = rt.shutdown(Duration::from_secs(2)).await.expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.stopped.len(), 4, "{report:?}");
    assert_eq!(sim.stats().live_instances, 0);
    for call in running {
        // Cut off by the stop: killed (the simulator answers 137 for a
        // command whose VM went away under it) or an error; never a hang,
        // and never the output of a command that was not allowed to finish.
        match call.await.expect("joined") {
            Ok(out) => {
                assert_eq!(out.exit_code, 137, "{out:?}");
                assert!(!out.stdout.to_text().contains("late"));
            }
            // The VM went away under the command: gone, or (when the
            // backend saw the cut before the runtime did) indeterminate,
            // saying so; either way the command may have partly run.
            Err(err) => assert!(
                matches!(
                    err.kind(),
                    ErrorKind::InstanceGone | ErrorKind::Indeterminate
                ) && (err.message().contains("gone") || err.message().contains("stopped")),
                "{err}"
            ),
        }
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn transient_failures_of_delete_are_retried_at_shutdown() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    rt.exec("del-retry", ExecRequest::new("true"))
        .await
        .expect("runs");
    sim.set_faults(faults(|f| {
        f.error_503 = 0.5;
        f.seed = 7;
    }));
    let report = rt.shutdown(Duration::from_secs(1)).await.expect("shutdown");
    let stats = sim.stats();
    assert!(
        stats.faults.error_503 >= 1,
        "the seed injects at least one: {stats:?}"
    );
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(stats.live_instances, 0, "{stats:?}");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_delete_that_keeps_failing_is_listed_in_the_shutdown_report() {
    let sim = sim().await;
    let rt = runtime_over(morph_config(&sim.base_url()), Placement::CurrentThread);
    let out = rt
        .exec("del-fail", ExecRequest::new("true"))
        .await
        .expect("runs");
    sim.set_faults(faults(|f| f.error_503 = 1.0));
    let report = rt.shutdown(Duration::from_secs(1)).await.expect("shutdown");
    assert!(!report.is_clean());
    let listed = report
        .failed
        .iter()
        .find(|failure| failure.task_id.as_deref() == Some("del-fail"))
        .unwrap_or_else(|| panic!("{report:?}"));
    assert_eq!(
        listed.instance_id.as_deref(),
        Some(out.instance_id.as_str())
    );
    assert!(listed.error.message().contains("503"), "{report:?}");
    // The instance is still there, and still findable by its tags.
    sim.set_faults(FaultConfig::none());
    assert_eq!(sim.stats().live_instances, 1);
    let config = morph_config(&sim.base_url());
    let swept = gc::gc(
        &config.morph,
        GcOptions {
            runtime_id: Some(rt.runtime_id().to_string()),
            ..GcOptions::default()
        },
    )
    .await
    .expect("gc");
    assert_eq!(swept.stopped, [out.instance_id]);
    assert_eq!(sim.stats().live_instances, 0);
    sim.stop().await;
}

// ---------------------------------------------------------------------------
// `hecate gc` after a crash, through the real binary

fn hecate(sim: &SimServer) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hecate"));
    cmd.env_remove("RUST_LOG")
        .env("HECATE_BACKEND", "morph")
        .env("MORPH_BASE_URL", sim.base_url())
        .env("MORPH_API_KEY", KEY)
        .env("HECATE_MORPH_POLL_MS", "10")
        .stdin(std::process::Stdio::null());
    cmd
}

#[actix_rt::test]
async fn gc_finds_and_stops_the_instances_of_a_killed_runtime() {
    let sim = sim().await;
    let mut child = hecate(&sim)
        .args(["exec", "--", "sleep", "60.17"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hecate starts");
    let marker = "sleep 60.17";
    let until = Instant::now() + Duration::from_secs(30);
    while sim.command_runs_containing(marker) == 0 {
        assert!(Instant::now() < until, "the child never ran its command");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(sim.stats().live_instances, 1, "orphaned by the crash");

    let dry = hecate(&sim)
        .args(["gc", "--json"])
        .output()
        .expect("gc runs");
    assert!(dry.status.success(), "{dry:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "would_stop");
    assert_eq!(lines[0]["task_id"], tool::DEFAULT_TASK_ID);
    assert_eq!(sim.stats().live_instances, 1, "a dry run stops nothing");

    // Too young to be collected with --older-than.
    let spared = hecate(&sim)
        .args(["gc", "--yes", "--older-than", "2h"])
        .output()
        .expect("gc runs");
    assert!(spared.status.success(), "{spared:?}");
    assert_eq!(sim.stats().live_instances, 1);

    let real = hecate(&sim)
        .args(["gc", "--yes"])
        .output()
        .expect("gc runs");
    assert!(real.status.success(), "{real:?}");
    let text = String::from_utf8_lossy(&real.stdout);
    assert!(text.contains("1 found, 1 stopped, 0 failed"), "{text}");
    assert_eq!(sim.stats().live_instances, 0);
    // The simulator kills a deleted VM's processes right after answering.
    let until = Instant::now() + Duration::from_secs(5);
    while !processes_with_cmdline(marker).is_empty() {
        assert!(Instant::now() < until, "the VM's processes outlived it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.stop().await;
}

// ---------------------------------------------------------------------------
// The example batch: the same results on morph (simulator) as on local

/// What must match between backends for one command.
#[derive(Debug, PartialEq, Eq)]
struct Comparable {
    exit_code: i32,
    timed_out: bool,
    truncated: bool,
    is_error: bool,
    output: String,
    job_id: Option<String>,
}

/// Runs `examples/tasks.jsonl` on `rt`; returns per task its comparable
/// results, with `normalise` applied to each output.
async fn run_examples(
    rt: &Runtime,
    normalise: impl Fn(&str) -> String,
) -> std::collections::BTreeMap<String, Vec<Comparable>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tasks.jsonl");
    let file = std::fs::File::open(path).expect("examples/tasks.jsonl");
    let tasks = batch::parse_tasks(
        std::io::BufReader::new(file),
        rt.config().max_command_timeout,
    )
    .expect("readable");
    let mut sink = Vec::new();
    let summary = batch::run_tasks(rt, tasks, 8, &mut sink, ProgressMode::Quiet).await;
    assert_eq!(summary.infra_errors, 0, "{summary:?}");
    let mut out = std::collections::BTreeMap::new();
    for line in String::from_utf8(sink).expect("utf-8").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let task = v["task_id"].as_str().expect("task_id").to_string();
        let results = v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                let mut output = r["output"].as_str().unwrap_or_default().to_string();
                if let Some(job) = r.get("job") {
                    for (field, placeholder) in [
                        ("log_file", "<LOG>"),
                        ("exit_file", "<EXIT>"),
                        ("pid", "<PID>"),
                    ] {
                        let value = match &job[field] {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        output = output.replace(&value, placeholder);
                    }
                }
                Comparable {
                    exit_code: r["exit_code"].as_i64().expect("exit_code") as i32,
                    timed_out: r["timed_out"].as_bool().expect("timed_out"),
                    truncated: r["truncated"].as_bool().expect("truncated"),
                    is_error: !r["error"].is_null(),
                    output: normalise(&output),
                    job_id: r
                        .get("job")
                        .and_then(|j| j["id"].as_str())
                        .map(str::to_string),
                }
            })
            .collect();
        out.insert(task, results);
    }
    out
}

/// `text` with `<root>/<instance dir>[/work]` replaced by `WORK`, as the
/// example's own `sed 's|.*/work|WORK|'` does: the local backend runs in
/// `<root>/<instance>/work`, the simulator in `<root>/<instance>`.
fn replace_instance_dirs(text: &str, root: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(root) {
        out.push_str(&rest[..at]);
        let after = &rest[at + root.len()..];
        let after = after.strip_prefix('/').unwrap_or(after);
        let end = after.find(['/', '\n', ' ', '"']).unwrap_or(after.len());
        let after = &after[end..];
        out.push_str("WORK");
        rest = after.strip_prefix("/work").unwrap_or(after);
    }
    out.push_str(rest);
    out
}

/// Masks what differs between any two runs, whatever the backend: file
/// times in `diff -u` headers, test-runner timings, git commit ids.
fn mask_run_specific(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("--- ") || line.starts_with("+++ ") {
                return line.split('\t').next().unwrap_or(line).to_string();
            }
            if let Some(rest) = line.strip_prefix("Ran ") {
                if let Some(at) = rest.find(" in ") {
                    return format!("Ran {} in <TIME>", &rest[..at]);
                }
            }
            let is_commit_id = line.len() > 8
                && line.as_bytes()[7] == b' '
                && line[..7].bytes().all(|b| b.is_ascii_hexdigit());
            if is_commit_id {
                return format!("<COMMIT>{}", &line[7..]);
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[actix_rt::test]
async fn example_batch_gives_the_same_results_on_morph_as_on_local() {
    // Local first, then morph: the examples' servers use fixed ports, so
    // the two runs must not overlap.
    let dir = tempfile::tempdir().expect("tempdir");
    let local_config = crate::helper::local_config(dir.path());
    let local = Runtime::start(local_config).expect("local runtime");
    let local_root = dir.path().display().to_string();
    let on_local = run_examples(&local, |t| {
        mask_run_specific(&replace_instance_dirs(t, &local_root))
    })
    .await;
    let report = local
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");

    let sim = sim_with(|c| c.exec_mode = ExecMode::Bash).await;
    let root = sim.root_dir().display().to_string();
    let morph = runtime_over(morph_config(&sim.base_url()), Placement::Workers);
    let on_morph = run_examples(&morph, |t| {
        mask_run_specific(&replace_instance_dirs(t, &root))
    })
    .await;
    shutdown_clean(&morph, &sim).await;
    sim.stop().await;

    assert_eq!(on_local.len(), 24);
    assert_eq!(
        on_local.keys().collect::<Vec<_>>(),
        on_morph.keys().collect::<Vec<_>>()
    );
    let mut differences = Vec::new();
    for (task, local_results) in &on_local {
        let morph_results = &on_morph[task];
        assert_eq!(local_results.len(), morph_results.len(), "{task}");
        for (i, (l, m)) in local_results.iter().zip(morph_results).enumerate() {
            if l != m {
                differences.push(format!("{task} #{i}:\n  local: {l:?}\n  morph: {m:?}"));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
