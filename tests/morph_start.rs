//! Integration tests: the morph backend's start path against the simulator's
//! hostile creates — a create whose answer is lost, a create that lands
//! after its client gave up — and the names of the deadlines in start errors.
//!
//! The simulator runs on real time, so waits for it are bounded polls of its
//! counters; nothing here asserts how long anything took.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use hecate::provider::morph::MorphProvider;
use hecate::sim::{FaultConfig, SimConfig, SimServer};
use hecate::{
    ApiKey, BackendKind, Config, ErrorKind, ExecRequest, Placement, Provider, RetryPolicy, Runtime,
    StartSpec,
};

use crate::helper::server::{start_sim, wait_for};

const KEY: &str = "test-key";

fn morph_config(base_url: &str, request_timeout: Duration) -> Config {
    let mut c = Config::default()
        .with_backend(BackendKind::Morph)
        .with_morph(base_url, ApiKey::new(KEY))
        .with_retry(RetryPolicy {
            max_retries: 12,
            base_delay: Duration::from_millis(20),
            factor: 2.0,
            max_delay: Duration::from_millis(200),
            jitter: 0.0,
        });
    c.morph.snapshot_id = "snap_test".to_string();
    c.morph.poll_interval = Duration::from_millis(10);
    c.morph.ready_timeout = Duration::from_secs(20);
    c.morph.request_timeout = request_timeout;
    c.workers = 2;
    c
}

async fn sim_with_faults(faults: FaultConfig) -> SimServer {
    start_sim(SimConfig {
        api_key: KEY.to_string(),
        boot_time: Duration::from_millis(30),
        faults,
        workers: 2,
        ..SimConfig::default()
    })
    .await
}

fn start_spec(task: &str) -> StartSpec {
    StartSpec {
        task_id: task.to_string(),
        ttl: Some(Duration::from_secs(600)),
        metadata: BTreeMap::from([
            ("hecate_task_id".to_string(), task.to_string()),
            ("hecate_runtime_id".to_string(), "rt-start".to_string()),
        ]),
        create_slot: hecate::StartSlot::detached(),
        task_spec: None,
    }
}

/// The live instances per `hecate_task_id` tag, as `GET /instance` lists
/// them.
async fn live_per_task(sim: &SimServer) -> HashMap<String, Vec<String>> {
    let mut resp = awc::Client::new()
        .get(format!("{}/instance", sim.base_url()))
        .insert_header(("Authorization", format!("Bearer {KEY}")))
        .send()
        .await
        .expect("list request");
    let body: serde_json::Value = resp.json().limit(64 << 20).await.expect("list body");
    let mut per_task: HashMap<String, Vec<String>> = HashMap::new();
    for inst in body["data"].as_array().expect("data array") {
        let task = inst["metadata"]["hecate_task_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = inst["id"].as_str().expect("id").to_string();
        per_task.entry(task).or_default().push(id);
    }
    per_task
}

#[actix_rt::test]
async fn a_lost_create_answer_adopts_the_instance_instead_of_creating_another() {
    let sim = sim_with_faults(FaultConfig {
        create_lost: 1.0,
        ..FaultConfig::default()
    })
    .await;
    let config = morph_config(&sim.base_url(), Duration::from_secs(5));
    let provider = MorphProvider::new(&config).expect("config");
    let vm = provider.start(start_spec("lost")).await.expect("adopted");
    let stats = sim.stats();
    assert_eq!(stats.faults.create_lost, 1, "{stats:?}");
    assert_eq!((stats.starts, stats.live_instances), (1, 1), "{stats:?}");
    assert_eq!(sim.instance_status(vm.id()).as_deref(), Some("ready"));
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_create_that_lands_after_its_deadline_is_stopped_and_the_error_names_the_deadline() {
    let sim = sim_with_faults(FaultConfig {
        create_late: 1.0,
        create_late_by: Duration::from_millis(400),
        ..FaultConfig::default()
    })
    .await;
    let config = morph_config(&sim.base_url(), Duration::from_millis(150));
    let provider = MorphProvider::new(&config).expect("config");
    let err = provider
        .start(start_spec("late"))
        .await
        .err()
        .expect("the create's answer comes too late");
    // Retrying is safe: the attempt is looked for again and stopped.
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("request timeout"), "{err}");
    assert!(!err.message().contains("morphvm_"), "{err}");
    assert!(!err.message().contains("task="), "{err}");
    // The create lands later, and is stopped once it is seen.
    wait_for(&sim, "the late create", Duration::from_secs(10), |s| {
        s.starts == 1
    })
    .await;
    let stats = wait_for(
        &sim,
        "the late instance to be stopped",
        Duration::from_secs(10),
        |s| s.live_instances == 0,
    )
    .await;
    assert_eq!((stats.starts, stats.stops), (1, 1), "{stats:?}");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_ready_timeout_names_its_setting() {
    let sim = start_sim(SimConfig {
        api_key: KEY.to_string(),
        boot_time: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let mut config = morph_config(&sim.base_url(), Duration::from_secs(5));
    config.morph.ready_timeout = Duration::from_millis(200);
    let provider = MorphProvider::new(&config).expect("config");
    let err = provider
        .start(start_spec("slow"))
        .await
        .err()
        .expect("never ready");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        err.message().contains("HECATE_MORPH_READY_TIMEOUT_SECONDS"),
        "{err}"
    );
    assert!(!err.message().contains("morphvm_"), "{err}");
    sim.stop().await;
}

/// Runs one command on each of `tasks` tasks at once; returns each task's
/// instance id.
async fn one_command_each(rt: &Runtime, tasks: usize) -> HashMap<String, String> {
    let runs = (0..tasks).map(|i| async move {
        let task = format!("t{i}");
        let out = rt
            .exec(&task, ExecRequest::new("echo hi"))
            .await
            .expect("the command runs");
        assert_eq!(out.exit_code, 0);
        (task, out.instance_id)
    });
    join_all(runs).await.into_iter().collect()
}

#[actix_rt::test]
async fn lost_create_answers_create_exactly_one_instance_per_task() {
    let sim = sim_with_faults(FaultConfig {
        create_lost: 0.5,
        seed: 9,
        ..FaultConfig::default()
    })
    .await;
    let config = morph_config(&sim.base_url(), Duration::from_secs(5));
    let provider = Arc::new(MorphProvider::new(&config).expect("config"));
    let rt = Runtime::start_with(config, provider, Placement::Workers).expect("runtime");
    let tasks = 24;
    let used = one_command_each(&rt, tasks).await;
    let stats = sim.stats();
    assert!(stats.faults.create_lost > 0, "{stats:?}");
    assert_eq!(stats.starts, tasks as u64, "one create per task: {stats:?}");
    assert_eq!(stats.live_instances, tasks, "{stats:?}");
    let live = live_per_task(&sim).await;
    for (task, id) in &used {
        assert_eq!(live.get(task), Some(&vec![id.clone()]), "{task}");
    }
    let report = rt
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(sim.stats().live_instances, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn late_and_lost_creates_settle_to_one_live_instance_per_task() {
    let late_by = Duration::from_millis(400);
    let sim = sim_with_faults(FaultConfig {
        create_lost: 0.25,
        create_late: 0.25,
        create_late_by: late_by,
        seed: 7,
        ..FaultConfig::default()
    })
    .await;
    let request_timeout = Duration::from_millis(200);
    let config = morph_config(&sim.base_url(), request_timeout);
    let provider = Arc::new(MorphProvider::new(&config).expect("config"));
    let rt = Runtime::start_with(config, provider, Placement::Workers).expect("runtime");
    let tasks = 24;
    let used = one_command_each(&rt, tasks).await;
    let during = sim.stats();
    assert!(
        during.faults.create_lost > 0 && during.faults.create_late > 0,
        "both faults hit: {during:?}"
    );
    // Settled: every late create (counted when its hold began) has landed
    // and every instance not in use was stopped again. On a loaded machine
    // an ordinary create can also outlast the short request timeout and
    // land late; it is stopped the same way.
    let settled = wait_for(&sim, "the starts to settle", Duration::from_secs(20), |s| {
        s.starts >= tasks as u64 + s.faults.create_late
            && s.starts == tasks as u64 + s.stops
            && s.live_instances == tasks
    })
    .await;
    assert_eq!(settled.expirations, 0, "{settled:?}");
    let live = live_per_task(&sim).await;
    assert_eq!(live.len(), tasks, "{live:?}");
    for (task, id) in &used {
        assert_eq!(live.get(task), Some(&vec![id.clone()]), "{task}: {live:?}");
    }
    // The instances in use were left alone: the next command of each task
    // runs where the first did.
    let again = one_command_each(&rt, tasks).await;
    assert_eq!(again, used);
    let report = rt
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(sim.stats().live_instances, 0);
    sim.stop().await;
}
