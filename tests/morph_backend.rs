//! Integration tests: the MorphCloud backend and `hecate gc`, against the
//! simulator (`hecate::sim`) and, for exact request shapes and malformed
//! answers, a scripted loopback server defined here. Everything binds
//! 127.0.0.1 port 0.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use hecate::gc::{self, GcArgs, GcOptions};
use hecate::provider::morph::MorphProvider;
use hecate::sim::{ExecMode, FaultConfig, SimConfig, SimServer};
use hecate::{ApiKey, Config, ErrorKind, ExecSpec, Instance, Provider, StartSlot, StartSpec};

use crate::helper::server::{spawn_server, start_sim};
use crate::helper::{processes_with_cmdline, processes_with_env};

const KEY: &str = "test-key";

fn config_for(base_url: &str, key: &str) -> Config {
    let mut c = Config::default().with_morph(base_url, ApiKey::new(key));
    c.morph.snapshot_id = "snap_test".to_string();
    c.morph.poll_interval = Duration::from_millis(10);
    c.morph.ready_timeout = Duration::from_secs(10);
    c.morph.request_timeout = Duration::from_secs(5);
    c.morph.kill_grace = Duration::from_secs(1);
    c
}

fn provider_for(base_url: &str) -> MorphProvider {
    MorphProvider::new(&config_for(base_url, KEY)).expect("valid config")
}

fn start_spec(task: &str, runtime: &str) -> StartSpec {
    let metadata = BTreeMap::from([
        ("created_by".to_string(), "hecate".to_string()),
        ("hecate_runtime_id".to_string(), runtime.to_string()),
        ("hecate_task_id".to_string(), task.to_string()),
    ]);
    StartSpec {
        task_id: task.to_string(),
        ttl: Some(Duration::from_millis(60_200)),
        metadata,
        create_slot: StartSlot::detached(),
        task_spec: None,
    }
}

fn exec_spec(command: &str) -> ExecSpec {
    ExecSpec {
        command: command.to_string(),
        background: false,
        timeout: Duration::from_secs(30),
        capture_bytes: 1 << 20,
        shell: None,
    }
}

async fn sim_with(config: SimConfig) -> SimServer {
    start_sim(config).await
}

async fn sim() -> SimServer {
    sim_with(SimConfig::default()).await
}

fn faults(f: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
    let mut config = FaultConfig::default();
    f(&mut config);
    config
}

async fn started(provider: &MorphProvider, task: &str) -> Box<dyn Instance> {
    provider
        .start(start_spec(task, "rt-test"))
        .await
        .expect("instance starts")
}

// ---------------------------------------------------------------------------
// A scripted server: records every request and answers from a queue.

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    body: String,
}

#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

fn instance_json(id: &str, status: &str) -> String {
    serde_json::json!({
        "id": id, "object": "instance", "created": 1_795_796_926, "status": status,
        "spec": {"vcpus": 1, "memory": 1024, "disk_size": 10240},
        "refs": {"snapshot_id": "snap_test", "image_id": "morphvm-minimal"},
        "networking": {"internal_ip": "10.0.0.2", "http_services": []},
        "metadata": {}
    })
    .to_string()
}

struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Scripted {
    async fn start(replies: Vec<Canned>) -> Scripted {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
        let (seen2, queue2) = (Arc::clone(&seen), Arc::clone(&queue));
        let (url, handle) = spawn_server(move |cfg| {
            let (seen, queue) = (Arc::clone(&seen2), Arc::clone(&queue2));
            cfg.default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (seen, queue) = (Arc::clone(&seen), Arc::clone(&queue));
                async move {
                    seen.lock().expect("lock").push(Seen {
                        method: req.method().to_string(),
                        path: req.path().to_string(),
                        query: req.query_string().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.to_str().unwrap_or("<binary>").to_string())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let canned = queue
                        .lock()
                        .expect("lock")
                        .pop_front()
                        .unwrap_or_else(|| reply(500, "unscripted request"));
                    let status =
                        actix_web::http::StatusCode::from_u16(canned.status).expect("valid status");
                    let mut resp = HttpResponse::build(status);
                    for (k, v) in canned.headers {
                        resp.insert_header((k, v));
                    }
                    resp.body(canned.body)
                }
            }));
        });
        Scripted { url, seen, handle }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

// ---------------------------------------------------------------------------
// Request shapes (scripted server).

#[actix_rt::test]
async fn requests_have_the_sdk_wire_shape() {
    let server = Scripted::start(vec![
        reply(200, instance_json("morphvm_abc", "pending")),
        reply(200, instance_json("morphvm_abc", "ready")),
        reply(200, r#"{"exit_code":0,"stdout":"hi\n","stderr":""}"#),
        reply(200, "{}"),
        reply(200, r#"{"object":"list","data":[]}"#),
    ])
    .await;
    let provider = provider_for(&format!("{}/", server.url));
    let vm = started(&provider, "t1").await;
    assert_eq!(vm.id(), "morphvm_abc");
    let out = vm.exec(exec_spec("echo hi")).await.expect("exec");
    assert_eq!((out.exit_code, out.stdout.to_text().as_str()), (0, "hi\n"));
    vm.stop().await.expect("stop");
    let swept = provider.sweep_orphans("r 1").await.expect("sweep");
    assert!(swept.is_empty());

    let seen = server.seen();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    let start = &seen[0];
    assert_eq!(
        (start.method.as_str(), start.path.as_str()),
        ("POST", "/api/instance")
    );
    assert_eq!(start.query, "snapshot_id=snap_test");
    // Every create carries its own start-attempt id besides the caller's tags.
    let mut body: serde_json::Value = serde_json::from_str(&start.body).expect("JSON body");
    let attempt = body["metadata"]
        .as_object_mut()
        .and_then(|m| m.remove("hecate_start_attempt"))
        .expect("a start-attempt tag");
    assert!(attempt.as_str().is_some_and(|a| !a.is_empty()), "{attempt}");
    assert_eq!(
        body.to_string(),
        r#"{"metadata":{"created_by":"hecate","hecate_runtime_id":"rt-test","hecate_task_id":"t1"},"ttl_action":"stop","ttl_seconds":61}"#
    );
    for s in &seen {
        assert_eq!(
            s.headers.get("authorization").map(String::as_str),
            Some("Bearer test-key")
        );
        assert_eq!(
            s.headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{s:?}"
        );
    }
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("GET", "/api/instance/morphvm_abc")
    );
    assert_eq!(seen[2].path, "/api/instance/morphvm_abc/exec");
    // One string: the mark, then the command verbatim in a here-document.
    let body: serde_json::Value = serde_json::from_str(&seen[2].body).expect("json");
    let command = body["command"].as_array().expect("a list");
    assert_eq!(command.len(), 1, "{body}");
    let text = command[0].as_str().expect("a string");
    assert!(text.starts_with("export HECATE_EXEC_ID="), "{text}");
    assert!(text.ends_with("\necho hi\nHECATE_EOF_0\n"), "{text}");
    assert_eq!(
        (seen[3].method.as_str(), seen[3].path.as_str()),
        ("DELETE", "/api/instance/morphvm_abc")
    );
    assert_eq!(
        (seen[4].method.as_str(), seen[4].path.as_str()),
        ("GET", "/api/instance")
    );
    assert_eq!(seen[4].query, "metadata%5Bhecate_runtime_id%5D=r+1");
    server.stop().await;
}

#[actix_rt::test]
async fn malformed_json_is_a_protocol_error() {
    let server = Scripted::start(vec![
        reply(200, "<html>not json"),
        reply(200, r#"{"status":"ready"}"#),
        reply(200, instance_json("morphvm_p", "ready")),
        reply(200, r#"{"stdout":"no exit code"}"#),
        reply(200, r#"{"items":[]}"#),
    ])
    .await;
    let provider = provider_for(&server.url);
    let err = provider
        .start(start_spec("t", "r"))
        .await
        .err()
        .expect("garbage");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.message().contains("not valid JSON"), "{err}");
    assert_eq!(
        err.status(),
        Some(200),
        "the answer's status is kept: {err:?}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the JSON error is the source: {err:?}"
    );
    let err = provider
        .start(start_spec("t", "r"))
        .await
        .err()
        .expect("no id");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.message().contains("\"id\""), "{err}");

    let vm = started(&provider, "t").await;
    let err = vm.exec(exec_spec("true")).await.expect_err("no exit code");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.message().contains("exit_code"), "{err}");
    let err = provider.sweep_orphans("r").await.expect_err("not a list");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    server.stop().await;
}

#[actix_rt::test]
async fn status_codes_map_to_error_kinds() {
    let secret = "sk-hecate-SECRET-4242";
    let long_detail = "x".repeat(2000);
    let server = Scripted::start(vec![
        reply(200, instance_json("morphvm_s", "ready")),
        // exec: 409, 429 with Retry-After, 422 with FastAPI detail, 404
        reply(409, r#"{"detail":"instance not ready"}"#),
        Canned {
            status: 429,
            headers: vec![("Retry-After", "7".to_string())],
            body: r#"{"detail":"slow down"}"#.to_string(),
        },
        reply(
            422,
            r#"{"detail":[{"loc":["body","command"],"msg":"field required","type":"missing"}]}"#,
        ),
        reply(400, format!(r#"{{"detail":"{long_detail}"}}"#)),
        Canned {
            status: 307,
            headers: vec![("Location", "http://127.0.0.1:1/elsewhere".to_string())],
            body: String::new(),
        },
        reply(404, r#"{"detail":"Instance not found"}"#),
        // stop: 404 is fine
        reply(404, r#"{"detail":"Instance not found"}"#),
        // a 401 whose body quotes the key
        reply(401, format!(r#"{{"detail":"Invalid API key {secret}"}}"#)),
    ])
    .await;
    let provider = MorphProvider::new(&config_for(&server.url, secret)).expect("config");
    let vm = provider.start(start_spec("t", "r")).await.expect("start");

    let err = vm.exec(exec_spec("true")).await.expect_err("409");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.status(), Some(409), "{err}");

    let err = vm.exec(exec_spec("true")).await.expect_err("429");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let err = vm.exec(exec_spec("true")).await.expect_err("422");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(err.status(), Some(422), "{err}");
    assert!(err.message().contains("field required"), "{err}");

    let err = vm.exec(exec_spec("true")).await.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.message().len() < 1000,
        "body is truncated: {}",
        err.message().len()
    );

    let err = vm.exec(exec_spec("true")).await.expect_err("307");
    assert_eq!(
        err.kind(),
        ErrorKind::Protocol,
        "redirects are not followed: {err}"
    );

    let err = vm.exec(exec_spec("true")).await.expect_err("404");
    assert_eq!(err.kind(), ErrorKind::InstanceGone, "{err}");
    assert_eq!(err.status(), Some(404), "{err}");

    vm.stop().await.expect("404 on stop is success");

    let err = provider.sweep_orphans("r").await.expect_err("401");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.message().contains("MORPH_API_KEY"), "{err}");
    assert!(!err.message().contains(secret), "key leaked: {err}");
    assert!(
        !format!("{err:?} {provider:?}").contains(secret),
        "key leaked in Debug"
    );
    assert_eq!(
        server.seen().len(),
        9,
        "no request was retried by the client"
    );
    server.stop().await;
}

#[actix_rt::test]
async fn an_answer_over_the_body_limit_is_refused() {
    let server = Scripted::start(vec![
        reply(200, instance_json("morphvm_big", "ready")),
        reply(
            200,
            format!(
                r#"{{"exit_code":0,"stdout":"{}","stderr":""}}"#,
                "a".repeat(5000)
            ),
        ),
    ])
    .await;
    let mut config = config_for(&server.url, KEY);
    config.morph.max_body_bytes = 2000;
    let provider = MorphProvider::new(&config).expect("config");
    let vm = provider.start(start_spec("t", "r")).await.expect("start");
    let err = vm
        .exec(exec_spec("yes | head -c 5000"))
        .await
        .expect_err("too big");
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.message().contains("max_body_bytes"), "{err}");
    server.stop().await;
}

#[actix_rt::test]
async fn missing_key_and_tls_urls_are_config_errors() {
    let mut config = Config::default();
    config.morph.base_url = "http://127.0.0.1:1/api".to_string();
    let err = MorphProvider::new(&config).expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("MORPH_API_KEY"), "{err}");
    let err = gc::gc(&config.morph, GcOptions::default())
        .await
        .expect_err("no key");
    assert_eq!(err.kind(), ErrorKind::Config);
}

// ---------------------------------------------------------------------------
// Against the simulator.

#[actix_rt::test]
async fn start_exec_stop_round_trip_against_the_simulator() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    assert_eq!(provider.name(), "morph");
    let vm = started(&provider, "round-trip").await;
    assert_eq!(sim.instance_status(vm.id()).as_deref(), Some("ready"));

    let out = vm
        .exec(exec_spec("echo hello; echo oops >&2; exit 3"))
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout.to_text(), "hello\n");
    assert_eq!(out.stderr.to_text(), "oops\n");
    assert!(!out.timed_out && out.job.is_none());

    // The simulator saw the tags: a filtered list finds the instance.
    let report = gc::gc(
        &config_for(&sim.base_url(), KEY).morph,
        GcOptions {
            dry_run: true,
            runtime_id: Some("rt-test".to_string()),
            ..GcOptions::default()
        },
    )
    .await
    .expect("gc");
    assert_eq!(report.found.len(), 1);
    assert_eq!(report.found[0].task_id.as_deref(), Some("round-trip"));

    vm.stop().await.expect("stop");
    vm.stop().await.expect("second stop is fine");
    let stats = sim.stats();
    assert_eq!((stats.starts, stats.stops, stats.live_instances), (1, 1, 0));
    sim.stop().await;
}

#[actix_rt::test]
async fn start_polls_until_the_instance_has_booted() {
    let sim = sim_with(SimConfig {
        boot_time: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let provider = provider_for(&sim.base_url());
    let t0 = Instant::now();
    let vm = started(&provider, "boot").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(sim.instance_status(vm.id()).as_deref(), Some("ready"));
    assert_eq!(vm.exec(exec_spec("true")).await.expect("exec").exit_code, 0);
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_start_that_never_gets_ready_times_out_and_deletes_the_instance() {
    let sim = sim_with(SimConfig {
        boot_time: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let mut config = config_for(&sim.base_url(), KEY);
    config.morph.ready_timeout = Duration::from_millis(300);
    let provider = MorphProvider::new(&config).expect("config");
    let err = provider
        .start(start_spec("slow", "r"))
        .await
        .err()
        .expect("timeout");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(!err.message().contains("task="), "{err}");
    let stats = sim.stats();
    assert_eq!((stats.starts, stats.live_instances), (1, 0));
    sim.stop().await;
}

#[actix_rt::test]
async fn boot_error_fails_the_start_and_deletes_the_instance() {
    let sim = sim_with(SimConfig {
        faults: faults(|f| f.boot_error = 1.0),
        ..SimConfig::default()
    })
    .await;
    let provider = provider_for(&sim.base_url());
    let err = provider
        .start(start_spec("doomed", "r"))
        .await
        .err()
        .expect("boot error");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("boot"), "{err}");
    assert!(
        !err.message().contains("task=") && !err.message().contains("vm="),
        "ids of the log lines stay out of the message: {err}"
    );
    let stats = sim.stats();
    assert_eq!((stats.starts, stats.stops, stats.live_instances), (1, 1, 0));
    sim.stop().await;
}

#[actix_rt::test]
async fn a_wrong_api_key_is_rejected_without_leaking_it() {
    let sim = sim().await;
    let secret = "sk-hecate-WRONG-KEY-9876";
    let provider = MorphProvider::new(&config_for(&sim.base_url(), secret)).expect("config");
    let err = provider
        .start(start_spec("t", "r"))
        .await
        .err()
        .expect("401");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.message().contains("MORPH_API_KEY"), "{err}");
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
    assert_eq!(sim.stats().starts, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn exec_after_the_ttl_stopped_the_instance_is_instance_gone() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "ttl").await;
    assert!(sim.expire(vm.id()));
    let err = vm.exec(exec_spec("echo after")).await.expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::InstanceGone, "{err}");
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(!err.message().contains(vm.id()), "no instance id: {err}");
    assert_eq!(sim.command_runs_containing("echo after"), 0);
    vm.stop().await.expect("stopping a gone instance succeeds");
    sim.stop().await;
}

#[actix_rt::test]
async fn rate_limits_and_unavailability_are_transient_with_retry_after() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "limits").await;
    for set in [
        (|f: &mut FaultConfig| f.error_429 = 1.0) as fn(&mut FaultConfig),
        |f| f.error_503 = 1.0,
    ] {
        sim.set_faults(faults(|f| {
            set(f);
            f.retry_after_secs = 3;
        }));
        let err = vm.exec(exec_spec("echo limited")).await.expect_err("fault");
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)), "{err}");
        let err = provider
            .start(start_spec("t", "r"))
            .await
            .err()
            .expect("fault");
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    }
    assert_eq!(sim.command_runs_containing("echo limited"), 0);
    sim.set_faults(FaultConfig::none());
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn lost_exec_answers_are_indeterminate_and_never_resent() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "lost").await;
    // (fault, how often the simulator ran the command): 500/502 are
    // injected before anything runs and drop_before drops before running,
    // but the client cannot tell any of them from a failure after running.
    type Case = (&'static str, fn(&mut FaultConfig), u64);
    let cases: [Case; 4] = [
        ("500", |f| f.error_500 = 1.0, 0),
        ("502", |f| f.error_502 = 1.0, 0),
        ("drop_before", |f| f.drop_before = 1.0, 0),
        ("drop_after", |f| f.drop_after = 1.0, 1),
    ];
    for (name, set, runs) in cases {
        sim.set_faults(faults(set));
        let marker = format!("echo lost-{name}");
        let err = vm.exec(exec_spec(&marker)).await.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::Indeterminate, "{name}: {err}");
        assert!(err.message().contains("may have run"), "{name}: {err}");
        assert_eq!(sim.command_runs_containing(&marker), runs, "{name}");
    }
    // The same failures on idempotent calls are transient.
    sim.set_faults(faults(|f| f.error_500 = 1.0));
    let err = vm.stop().await.expect_err("500 on stop");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let err = provider
        .sweep_orphans("rt-test")
        .await
        .expect_err("500 on list");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    sim.set_faults(FaultConfig::none());
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn an_exec_past_the_client_deadline_is_indeterminate() {
    let sim = sim().await;
    let mut config = config_for(&sim.base_url(), KEY);
    config.morph.kill_grace = Duration::from_millis(100);
    config.morph.request_timeout = Duration::from_millis(300);
    let provider = MorphProvider::new(&config).expect("config");
    let vm = provider
        .start(start_spec("deadline", "r"))
        .await
        .expect("start");
    sim.set_faults(faults(|f| {
        f.slow = 1.0;
        f.slow_by = Duration::from_secs(3);
    }));
    let spec = ExecSpec {
        timeout: Duration::from_millis(200),
        ..exec_spec("echo late")
    };
    let err = vm.exec(spec).await.expect_err("deadline");
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err}");
    // The simulator holds the request 3 s before it runs the command, so a
    // client that gave up at its own deadline returned before that.
    assert_eq!(
        sim.command_runs_containing("echo late"),
        0,
        "the client gave up at its deadline, before the slowed exec ran"
    );
    sim.set_faults(FaultConfig::none());
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_refused_connection_is_transient() {
    let sim = sim().await;
    let url = sim.base_url();
    let provider = provider_for(&url);
    let vm = started(&provider, "refused").await;
    sim.stop().await;
    let err = provider
        .start(start_spec("t", "r"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let err = vm.exec(exec_spec("true")).await.expect_err("refused");
    assert_eq!(
        err.kind(),
        ErrorKind::Transient,
        "a request never sent ran nothing: {err}"
    );
    assert_eq!(err.status(), None, "no answer, no status: {err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the transport failure is the source: {err:?}"
    );
    let err = vm.stop().await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
}

#[actix_rt::test]
async fn exec_timeout_kills_the_whole_process_tree_in_the_vm() {
    let sim = sim_with(SimConfig {
        exec_mode: ExecMode::Bash,
        ..SimConfig::default()
    })
    .await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "timeout").await;
    // An earlier call's background job must survive a later timeout.
    let out = vm
        .exec(exec_spec("nohup sleep 1000 >/dev/null 2>&1 & echo $!"))
        .await
        .expect("earlier job");
    let earlier: u32 = out.stdout.to_text().trim().parse().expect("a pid");
    let spec = ExecSpec {
        timeout: Duration::from_secs(1),
        ..exec_spec("echo started; setsid sleep 1001 & sleep 1000 & sleep 1002")
    };
    let t0 = Instant::now();
    let out = vm.exec(spec).await.expect("a timeout is a result");
    let took = t0.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 124);
    assert_eq!(out.stdout.to_text(), "started\n");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // Nothing of the timed-out command is left, its `setsid` child
    // included; wait (bounded) for the killed ones to be reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mine = processes_with_env(&format!("SIM_INSTANCE_ID={}", vm.id()));
    let left = || {
        ["sleep 1000", "sleep 1001", "sleep 1002"]
            .iter()
            .flat_map(|c| processes_with_cmdline(c))
            .filter(|pid| *pid != earlier && mine.contains(pid))
            .collect::<Vec<u32>>()
    };
    while !left().is_empty() && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left(), Vec::<u32>::new());
    assert!(
        processes_with_cmdline("sleep 1000").contains(&earlier),
        "the earlier job survives"
    );

    let out = vm
        .exec(exec_spec("echo alive"))
        .await
        .expect("instance survives");
    assert_eq!(
        (out.exit_code, out.stdout.to_text().as_str()),
        (0, "alive\n")
    );
    // A command that exits 124 on its own did not time out.
    let out = vm.exec(exec_spec("exit 124")).await.expect("exec");
    assert!(!out.timed_out);
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn background_jobs_get_their_own_log_and_exit_file() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "bg").await;
    // The jobs wait for a gate file that only appears once both execs have
    // returned: an exec that waited for its job would never return.
    let gate_dir = tempfile::tempdir().expect("tempdir");
    let gate = gate_dir.path().join("go");
    let spec = ExecSpec {
        background: true,
        ..exec_spec(&format!(
            "echo \"out $((6*7))\"; echo err >&2; \
             until [ -e '{}' ]; do sleep 0.01; done; exit 3",
            gate.display()
        ))
    };
    let out = vm.exec(spec.clone()).await.expect("background exec");
    assert_eq!(out.exit_code, 0);
    let job = out.job.expect("a job");
    assert!(
        !std::path::Path::new(&job.exit_file).exists(),
        "the exec returned while its job still ran"
    );
    assert_eq!(job.id, "1");
    assert!(job.pid.is_some_and(|p| p > 1), "{job:?}");
    let dir = format!("/tmp/hecate/jobs/{}", vm.id());
    assert_eq!(job.log_file, format!("{dir}/1.log"));
    assert_eq!(job.exit_file, format!("{dir}/1.exit"));
    let second = vm.exec(spec).await.expect("second job").job.expect("job");
    assert_eq!(second.id, "2");
    std::fs::write(&gate, "").expect("open the gate");

    // Wait (bounded) for the job's exit file, reading it through the VM.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        let out = vm
            .exec(exec_spec(&format!("cat {} 2>/dev/null", job.exit_file)))
            .await
            .expect("exec");
        if out.exit_code == 0 || Instant::now() > deadline {
            break out.stdout.to_text();
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.trim(), "3");
    let log = vm
        .exec(exec_spec(&format!("cat {}", job.log_file)))
        .await
        .expect("exec")
        .stdout
        .to_text();
    assert!(log.contains("out 42") && log.contains("err"), "{log:?}");
    vm.stop().await.expect("stop");
    // The simulator's instances share this host's /tmp.
    let _ = std::fs::remove_dir_all(&dir);
    sim.stop().await;
}

#[actix_rt::test]
async fn nasty_commands_run_verbatim() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "quoting").await;
    let nasty = [
        r#"echo "it's" 'a "b"' \"c\""#,
        "echo '$(echo not run)' \"$(echo run)\" `echo tick`",
        "echo line1\necho line2 # comment\n",
        r"printf '%s\n' 'back\slash' 'a\\b' \\n",
        "echo 'ünïcødé ✓ 日本' ; echo $'tab\\there'",
        "x=1; [ \"$x\" = 1 ] && echo ok || echo no; exit 5",
        "echo ';' '&&' '|' '>' '<' '*' '?' '~' '!' '{' '}' '#'",
    ];
    for command in nasty {
        let want = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(command)
            .env_clear()
            .env("LANG", "C.UTF-8")
            .output()
            .expect("local bash");
        let out = vm.exec(exec_spec(command)).await.expect("exec");
        assert_eq!(
            out.stdout.to_text(),
            String::from_utf8_lossy(&want.stdout),
            "{command:?}"
        );
        assert_eq!(Some(out.exit_code), want.status.code(), "{command:?}");
    }
    let execs = sim.stats().execs;
    let err = vm.exec(exec_spec("echo a\0b")).await.expect_err("NUL");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(sim.stats().execs, execs, "nothing was sent");
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn sweep_orphans_stops_only_this_runtimes_instances() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let mine_a = provider.start(start_spec("a", "rt-mine")).await.expect("a");
    let mine_b = provider.start(start_spec("b", "rt-mine")).await.expect("b");
    let other = provider
        .start(start_spec("c", "rt-other"))
        .await
        .expect("c");
    let mut swept = provider.sweep_orphans("rt-mine").await.expect("sweep");
    swept.sort();
    let mut want = vec![mine_a.id().to_string(), mine_b.id().to_string()];
    want.sort();
    assert_eq!(swept, want);
    assert_eq!(sim.stats().live_instances, 1);
    assert!(sim.instance_status(other.id()).is_some());
    assert!(provider
        .sweep_orphans("rt-mine")
        .await
        .expect("again")
        .is_empty());
    other.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn gc_lists_in_a_dry_run_and_stops_orphans_with_yes() {
    let sim = sim().await;
    let config = config_for(&sim.base_url(), KEY);
    // A "crashed" runtime: its instances are never stopped.
    let crashed = MorphProvider::new(&config).expect("config");
    let orphan_1 = crashed
        .start(start_spec("o1", "rt-crashed"))
        .await
        .expect("o1");
    let orphan_2 = crashed
        .start(start_spec("o2", "rt-crashed"))
        .await
        .expect("o2");
    let other = crashed.start(start_spec("x", "rt-alive")).await.expect("x");
    // Not Hecate's: no created_by tag.
    let foreign = crashed
        .start(StartSpec {
            task_id: "foreign".to_string(),
            ttl: None,
            metadata: BTreeMap::from([("owner".to_string(), "someone".to_string())]),
            create_slot: StartSlot::detached(),
            task_spec: None,
        })
        .await
        .expect("foreign");

    let dry = gc::gc(
        &config.morph,
        GcOptions {
            dry_run: true,
            ..GcOptions::default()
        },
    )
    .await
    .expect("dry run");
    let mut ids: Vec<&str> = dry.found.iter().map(|i| i.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![orphan_1.id(), orphan_2.id(), other.id()];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert!(dry.stopped.is_empty() && dry.failed.is_empty());
    assert!(dry
        .found
        .iter()
        .all(|i| i.created > 0 && i.status == "ready"));
    assert_eq!(sim.stats().live_instances, 4);

    // Young instances are spared.
    let young = gc::run_cli(
        GcArgs {
            yes: true,
            older_than: Some(Duration::from_secs(3600)),
            runtime_id: None,
            json: true,
        },
        &config,
    )
    .await
    .expect("gc");
    assert!(young.found.is_empty() && young.stopped.is_empty());
    assert_eq!(sim.stats().live_instances, 4);

    let report = gc::run_cli(
        GcArgs {
            yes: true,
            older_than: None,
            runtime_id: Some("rt-crashed".to_string()),
            json: false,
        },
        &config,
    )
    .await
    .expect("gc --yes");
    let mut stopped = report.stopped.clone();
    stopped.sort();
    let mut want = vec![orphan_1.id().to_string(), orphan_2.id().to_string()];
    want.sort();
    assert_eq!(stopped, want);
    assert!(report.failed.is_empty());
    assert_eq!(sim.stats().live_instances, 2);
    assert!(sim.instance_status(other.id()).is_some());
    assert!(sim.instance_status(foreign.id()).is_some());
    sim.stop().await;
}

#[actix_rt::test]
async fn commands_up_to_the_morph_limit_run_and_longer_are_invalid_input() {
    let sim = sim_with(SimConfig {
        exec_mode: ExecMode::Bash,
        ..SimConfig::default()
    })
    .await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "long").await;
    // The documented morph limit: MAX_COMMAND_BYTES less 2048 bytes.
    let limit = hecate::provider::MAX_COMMAND_BYTES - 2048;
    // Single quotes were the worst case of quoting (4 bytes each); carried
    // in a here-document they cost nothing extra.
    let fits = format!("echo ran # {}", "'".repeat(limit - 11));
    assert_eq!(fits.len(), limit);
    let out = vm.exec(exec_spec(&fits)).await.expect("within the limit");
    assert_eq!((out.exit_code, out.stdout.to_text().as_str()), (0, "ran\n"));
    let bg = ExecSpec {
        background: true,
        ..exec_spec(&fits)
    };
    vm.exec(bg)
        .await
        .expect("a background job within the limit");
    let over = format!("{fits}'");
    let err = vm.exec(exec_spec(&over)).await.expect_err("over");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_command_longer_than_the_ttl_extends_it_first() {
    let sim = sim_with(SimConfig {
        exec_mode: ExecMode::Bash,
        ..SimConfig::default()
    })
    .await;
    let provider = provider_for(&sim.base_url());
    let spec = StartSpec {
        ttl: Some(Duration::from_secs(1)),
        ..start_spec("ttl", "r")
    };
    let vm = provider.start(spec).await.expect("start");
    let out = vm
        .exec(ExecSpec {
            timeout: Duration::from_secs(20),
            ..exec_spec("sleep 2; echo done")
        })
        .await
        .expect("not stopped by the TTL backstop");
    assert_eq!(
        (out.exit_code, out.stdout.to_text().as_str()),
        (0, "done\n")
    );
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_trickled_answer_is_cut_off_at_the_request_deadline() {
    let sim = sim().await;
    let mut config = config_for(&sim.base_url(), KEY);
    config.morph.request_timeout = Duration::from_millis(500);
    let provider = MorphProvider::new(&config).expect("valid config");
    let vm = started(&provider, "trickle").await;
    // Every answer is at least ~40 bytes: 4 s or more at 100 ms a byte.
    sim.set_faults(faults(|f| f.trickle = Some(Duration::from_millis(100))));
    let err = provider
        .sweep_orphans("rt-test")
        .await
        .expect_err("the body never completes within the deadline");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.message().contains("did not arrive within"), "{err}");
    let spec = ExecSpec {
        timeout: Duration::from_millis(100),
        ..exec_spec("echo hi")
    };
    let err = vm.exec(spec).await.expect_err("cut off");
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err}");
    sim.set_faults(FaultConfig::default());
    vm.stop().await.expect("stop");
    sim.stop().await;
}

#[actix_rt::test]
async fn a_huge_retry_after_is_kept_for_the_capped_retry_policy() {
    let sim = sim().await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "retry-after").await;
    sim.set_faults(faults(|f| {
        f.error_503 = 1.0;
        f.retry_after_secs = 1_000_000_000;
    }));
    let err = vm.exec(exec_spec("true")).await.expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let after = err.retry_after().expect("the server's Retry-After");
    assert_eq!(after, Duration::from_secs(1_000_000_000));
    // The runtime waits what its policy allows, never the server's value.
    let policy = hecate::config::RetryPolicy::default();
    assert!(policy.delay(1, 0.5, Some(after)) <= policy.max_delay);
    sim.set_faults(FaultConfig::default());
    vm.stop().await.expect("stop");
    sim.stop().await;
}

/// A key long enough that any 8-character piece of it is unmistakable.
const SECRET_KEY: &str = "sk-hecate-SECRET-0123456789abcdefghij";

/// Drives every kind of answer that can quote the request's headers, with
/// logging at trace level; run by [`the_api_key_is_never_quoted`].
#[actix_rt::test]
#[ignore = "a probe run in a child process with RUST_LOG=trace"]
async fn secrets_probe() {
    let _ = env_logger::builder().is_test(false).try_init();
    use hecate::sim::EchoHeaders::*;
    let sim = sim_with(SimConfig {
        api_key: SECRET_KEY.to_string(),
        ..SimConfig::default()
    })
    .await;
    let provider =
        MorphProvider::new(&config_for(&sim.base_url(), SECRET_KEY)).expect("valid config");
    for mode in [ErrorBody, NonJson, MalformedId, ExecOutput] {
        let vm = provider
            .start(start_spec("secret", "rt-secret"))
            .await
            .expect("starts");
        sim.set_faults(faults(|f| f.echo_headers = Some(mode)));
        let start = provider.start(start_spec("secret2", "rt-secret")).await;
        println!(
            "{mode:?} start: {:?}",
            start.as_ref().map(|i| i.id().to_string())
        );
        if let Ok(other) = start {
            println!("{mode:?} stop: {:?}", other.stop().await);
        }
        // The output as the agent sees it (`Captured`'s `Debug` shows sizes).
        let shown = |r: hecate::Result<hecate::ExecOutput>| {
            r.map(|o| (o.exit_code, o.stdout.to_text(), o.stderr.to_text()))
        };
        println!(
            "{mode:?} exec: {:?}",
            shown(vm.exec(exec_spec("echo hi")).await)
        );
        let bg = ExecSpec {
            background: true,
            ..exec_spec("sleep 1")
        };
        println!("{mode:?} background: {:?}", shown(vm.exec(bg).await));
        println!(
            "{mode:?} sweep: {:?}",
            provider.sweep_orphans("rt-secret").await
        );
        println!("{mode:?} stop: {:?}", vm.stop().await);
        sim.set_faults(FaultConfig::default());
    }
    let left = provider.sweep_orphans("rt-secret").await;
    println!("cleanup: {left:?}");
    sim.stop().await;
    println!("secrets-probe-done");
}

#[test]
fn the_api_key_is_never_quoted() {
    let text = crate::helper::run_probe(
        "morph_backend::secrets_probe",
        &[("RUST_LOG", "trace")],
        "secrets-probe-done",
    );
    assert!(
        text.contains("[redacted]"),
        "the echoes reached the client:\n{text}"
    );
    let key = SECRET_KEY.as_bytes();
    for piece in key.windows(8) {
        let piece = std::str::from_utf8(piece).expect("ascii");
        assert!(!text.contains(piece), "{piece:?} leaked:\n{text}");
    }
}

#[actix_rt::test]
async fn a_vm_stopped_under_a_command_is_reported_as_gone_not_as_an_exit() {
    let sim = sim_with(SimConfig {
        exec_mode: ExecMode::Bash,
        ..SimConfig::default()
    })
    .await;
    let provider = provider_for(&sim.base_url());
    let vm = started(&provider, "vanish").await;
    let id = vm.id().to_string();
    let running = vm.exec(exec_spec("sleep 30; echo never"));
    let expire = async {
        let marker = format!("SIM_INSTANCE_ID={id}");
        let started = crate::helper::eventually(Duration::from_secs(10), || {
            let mine = processes_with_env(&marker);
            processes_with_cmdline("sleep 30")
                .iter()
                .any(|p| mine.contains(p))
        })
        .await;
        assert!(started, "the command started");
        assert!(sim.expire(&id));
    };
    let (answer, ()) = futures_util::join!(running, expire);
    let err = answer.expect_err("the VM's end is not the command's exit");
    assert_eq!(err.kind(), ErrorKind::Indeterminate, "{err}");
    assert!(err.message().contains("instance is gone"), "{err}");
    sim.stop().await;
}
