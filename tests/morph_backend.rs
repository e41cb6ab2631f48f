//! Integration tests: the MorphCloud backend and `hecate gc`, against the
//! simulator (`hecate::sim`) and, for exact request shapes and malformed
//! answers, a scripted loopback server defined here. Everything binds
//! 127.0.0.1 port 0.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hecate::gc::{self, GcOptions};
use hecate::provider::morph::MorphProvider;
use hecate::{ApiKey, Config, ErrorKind, ExecSpec, Instance, Provider, StartSpec};

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
    }
}

fn exec_spec(command: &str) -> ExecSpec {
    ExecSpec {
        command: command.to_string(),
        background: false,
        timeout: Duration::from_secs(30),
        capture_bytes: 1 << 20,
    }
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
        let server = HttpServer::new(move || {
            let (seen, queue) = (Arc::clone(&seen2), Arc::clone(&queue2));
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
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
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind loopback");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Scripted {
            url: format!("http://{addr}/api"),
            seen,
            handle,
        }
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
    assert_eq!(
        start.body,
        r#"{"metadata":{"created_by":"hecate","hecate_runtime_id":"rt-test","hecate_task_id":"t1"},"ttl_seconds":61,"ttl_action":"stop"}"#
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
    assert_eq!(
        seen[2].body,
        r#"{"command":["timeout -k 1.000s 30.000s bash -c 'echo hi'"]}"#
    );
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
    assert!(err.message().contains("409"), "{err}");

    let err = vm.exec(exec_spec("true")).await.expect_err("429");
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let err = vm.exec(exec_spec("true")).await.expect_err("422");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(
        err.message().contains("422") && err.message().contains("field required"),
        "{err}"
    );

    let err = vm.exec(exec_spec("true")).await.expect_err("400");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(err.message().contains("400"), "{err}");
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
    assert!(err.message().contains("404"), "{err}");

    vm.stop().await.expect("404 on stop is success");

    let err = provider.sweep_orphans("r").await.expect_err("401");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert!(
        err.message().contains("MORPH_API_KEY") && err.message().contains("401"),
        "{err}"
    );
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
