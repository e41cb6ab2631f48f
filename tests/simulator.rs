//! Integration tests: the MorphCloud simulator, spoken to over loopback HTTP
//! with awc (and a raw `TcpStream` where a dropped connection must be seen).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use hecate::sim::{ExecMode, FaultConfig, SimConfig, SimServer};
use serde_json::{json, Value};

use crate::helper::processes_with_env;
use crate::helper::server::start_sim;

/// A small client for the simulator's API.
struct Api {
    client: awc::Client,
    base: String,
    key: String,
}

impl Api {
    fn new(server: &SimServer) -> Api {
        Api::with_key(server, "test-key")
    }

    fn with_key(server: &SimServer, key: &str) -> Api {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .disable_redirects()
            .finish();
        Api {
            client,
            base: server.base_url(),
            key: key.to_owned(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> (StatusCode, Value) {
        let (status, _, value) = self.send_full(method, path, body).await;
        (status, value)
    }

    /// Like `send`, also returning the `Retry-After` header.
    async fn send_full(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (StatusCode, Option<String>, Value) {
        let url = format!("{}{path}", self.base);
        let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self
            .client
            .request(method, url)
            .insert_header(("Authorization", format!("Bearer {}", self.key)))
            .insert_header(("Content-Type", "application/json"));
        let mut resp = match body {
            Some(body) => req.send_body(body.to_vec()).await,
            None => req.send().await,
        }
        .expect("request");
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.body().limit(64 << 20).await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, retry_after, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(body).expect("json");
        self.send("POST", path, Some(&body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send("DELETE", path, None).await
    }

    /// Starts an instance the way the SDK does and returns its id.
    async fn start(&self, metadata: Value, ttl: Option<u64>, action: Option<&str>) -> String {
        let (status, inst) = self
            .post(
                "/instance?snapshot_id=snapshot_test",
                &json!({"metadata": metadata, "ttl_seconds": ttl, "ttl_action": action}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{inst}");
        inst["id"].as_str().expect("id").to_owned()
    }

    /// Starts an instance and waits (bounded) until it is ready.
    async fn start_ready(&self) -> String {
        let id = self.start(Value::Null, None, None).await;
        self.wait_status(&id, "ready").await;
        id
    }

    async fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, inst) = self.get(&format!("/instance/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{inst}");
            if inst["status"] == want {
                return inst;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never became {want}: {inst}"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn exec(&self, id: &str, command: Value) -> (StatusCode, Value) {
        self.post(
            &format!("/instance/{id}/exec"),
            &json!({ "command": command }),
        )
        .await
    }
}

async fn server(config: SimConfig) -> SimServer {
    start_sim(config).await
}

fn faults(f: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
    let mut faults = FaultConfig::default();
    f(&mut faults);
    faults
}

/// Pids of live processes carrying the simulator's marker for `id`.
fn marked_pids(id: &str) -> Vec<u32> {
    processes_with_env(&format!("SIM_INSTANCE_ID={id}"))
}

/// Waits (bounded) until no process of instance `id` is left.
async fn assert_no_processes_left(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = marked_pids(id);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of {id} still alive: {left:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one raw HTTP/1.1 request and reads until the server closes the
/// connection: returns what it sent back (empty if it answered nothing).
fn raw_request(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let request = format!(
        "POST /api{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer test-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => answer,
        // A reset counts as "no answer" as long as nothing came before it.
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => answer,
        Err(err) => panic!("read: {err}"),
    }
}

#[actix_rt::test]
async fn start_get_exec_list_delete_round_trip() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);

    let (status, inst) = api
        .post(
            "/instance?snapshot_id=snapshot_defv9tjg",
            &json!({"metadata": {"task_id": "t1"}, "ttl_seconds": 1200, "ttl_action": "stop"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inst["status"], "pending");
    assert_eq!(inst["object"], "instance");
    assert_eq!(inst["refs"]["snapshot_id"], "snapshot_defv9tjg");
    assert_eq!(inst["ttl"]["ttl_seconds"], 1200);
    assert_eq!(inst["ttl"]["ttl_action"], "stop");
    assert!(inst["ttl"]["ttl_expire_at"].as_u64().expect("expire_at") > 1_600_000_000);
    assert!(inst["created"].is_u64());
    assert_eq!(inst["metadata"]["task_id"], "t1");
    let id = inst["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("morphvm_"), "{id}");

    // Boot time 0: the first GET sees it ready.
    let (status, inst) = api.get(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inst["status"], "ready");

    let (status, out) = api
        .exec(&id, json!(["echo hello; echo oops >&2; exit 3"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        out,
        json!({"exit_code": 3, "stdout": "hello\n", "stderr": "oops\n"})
    );

    let (status, list) = api.get("/instance").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());

    let (status, body) = api.delete(&format!("/instance/{id}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = api.delete(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "Instance not found"}));
    let (status, _) = api.exec(&id, json!(["true"])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let stats = sim.stats();
    assert_eq!(
        (stats.starts, stats.stops, stats.execs, stats.live_instances),
        (1, 1, 1, 0)
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn wrong_or_missing_api_key_is_401() {
    let sim = server(SimConfig::default()).await;
    let api = Api::with_key(&sim, "wrong");
    let (status, body) = api.get("/instance/morphvm_whatever").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"detail": "Invalid API key"}));

    let client = awc::Client::default();
    let resp = client
        .get(format!("{}/instance", sim.base_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.stats().starts, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn unknown_instance_is_404_on_every_instance_route() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = "morphvm_nothere";
    let not_found = json!({"detail": "Instance not found"});
    assert_eq!(
        api.get(&format!("/instance/{id}")).await,
        (StatusCode::NOT_FOUND, not_found.clone())
    );
    assert_eq!(
        api.delete(&format!("/instance/{id}")).await,
        (StatusCode::NOT_FOUND, not_found.clone())
    );
    for (route, body) in [
        ("exec", json!({"command": ["true"]})),
        ("exec/sse", json!({"command": ["true"]})),
        ("ttl", json!({"ttl_seconds": 5})),
        ("metadata", json!({"k": "v"})),
        ("pause", json!(null)),
        ("resume", json!(null)),
    ] {
        let got = api.post(&format!("/instance/{id}/{route}"), &body).await;
        assert_eq!(got, (StatusCode::NOT_FOUND, not_found.clone()), "{route}");
    }
    let (status, body) = api.get("/nowhere").await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn instance_is_pending_for_boot_time_and_exec_then_gets_409() {
    // Still booting, whatever the machine's speed: the boot takes an hour.
    let booting = server(SimConfig {
        boot_time: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&booting);
    let id = api.start(Value::Null, None, None).await;
    let (status, inst) = api.get(&format!("/instance/{id}")).await;
    assert_eq!(
        (status, inst["status"].clone()),
        (StatusCode::OK, json!("pending"))
    );
    let (status, body) = api.exec(&id, json!(["echo early"])).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["detail"].as_str().expect("detail").contains("pending"));
    assert_eq!(booting.command_runs("echo early"), 0);
    booting.stop().await;

    // Ready once the boot time has passed, and never before.
    let sim = server(SimConfig {
        boot_time: Duration::from_millis(400),
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&sim);
    let started = Instant::now();
    let id = api.start(Value::Null, None, None).await;
    api.wait_status(&id, "ready").await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    let (status, out) = api.exec(&id, json!(["echo late"])).await;
    assert_eq!(
        (status, out["stdout"].clone()),
        (StatusCode::OK, json!("late\n"))
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn malformed_or_ill_typed_bodies_are_422_in_fastapi_shape() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let cases: Vec<(String, Vec<u8>)> = vec![
        (format!("/instance/{id}/exec"), b"{not json".to_vec()),
        (
            format!("/instance/{id}/exec"),
            br#"{"command": "ls"}"#.to_vec(),
        ),
        (
            format!("/instance/{id}/exec"),
            br#"{"command": []}"#.to_vec(),
        ),
        (format!("/instance/{id}/exec/sse"), b"[".to_vec()),
        (
            format!("/instance/{id}/ttl"),
            br#"{"ttl_seconds": "soon"}"#.to_vec(),
        ),
        (
            format!("/instance/{id}/ttl"),
            br#"{"ttl_seconds": 5, "ttl_action": "explode"}"#.to_vec(),
        ),
        (format!("/instance/{id}/metadata"), br#"{"k": 1}"#.to_vec()),
        ("/instance?snapshot_id=s".to_owned(), b"{".to_vec()),
        (
            "/instance".to_owned(),
            br#"{"metadata":null,"ttl_seconds":null,"ttl_action":null}"#.to_vec(),
        ),
        (
            "/instance?snapshot_id=s".to_owned(),
            br#"{"ttl_seconds": -1}"#.to_vec(),
        ),
    ];
    for (path, body) in cases {
        let (status, answer) = api.send("POST", &path, Some(&body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
        let detail = &answer["detail"][0];
        assert!(
            detail["msg"].is_string() && detail["loc"].is_array(),
            "{answer}"
        );
    }
    let (status, _) = api.get("/instance/list?page=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(sim.stats().execs, 0);
    assert_eq!(sim.stats().starts, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn ttl_stop_removes_the_instance_and_kills_its_processes() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start(Value::Null, Some(1), Some("stop")).await;
    api.wait_status(&id, "ready").await;
    let (status, _) = api.exec(&id, json!(["sleep 60 >/dev/null 2>&1 &"])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!marked_pids(&id).is_empty(), "the background sleep runs");
    let dir = sim.instance_dir(&id).expect("dir");
    // The server's own clock expires it; poll (bounded) from outside.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.instance_status(&id).is_some() {
        assert!(Instant::now() < deadline, "ttl never fired");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_no_processes_left(&id).await;
    // The sweeper removes the directory after it has killed the processes,
    // outside the state's lock: the instance is gone from the table first.
    assert!(
        crate::helper::eventually(Duration::from_secs(10), || !dir.exists()).await,
        "{} outlived its instance",
        dir.display()
    );
    let (status, _) = api.get(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stats = sim.stats();
    assert_eq!(
        (stats.expirations, stats.stops, stats.live_instances),
        (1, 0, 0)
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn ttl_pause_pauses_and_resume_makes_it_ready_again() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start(Value::Null, Some(1), Some("pause")).await;
    let inst = api.wait_status(&id, "paused").await;
    assert_eq!(inst["ttl"]["ttl_action"], "pause");
    let (status, _) = api.exec(&id, json!(["true"])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, inst) = api
        .post(&format!("/instance/{id}/resume"), &json!(null))
        .await;
    assert_eq!(
        (status, inst["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
    let (status, _) = api.exec(&id, json!(["true"])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, inst) = api
        .post(&format!("/instance/{id}/pause"), &json!(null))
        .await;
    assert_eq!(
        (status, inst["status"].clone()),
        (StatusCode::OK, json!("paused"))
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn ttl_and_metadata_routes_update_the_instance() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start(json!({"a": "1"}), None, None).await;
    let (status, inst) = api
        .post(
            &format!("/instance/{id}/ttl"),
            &json!({"ttl_seconds": 600, "ttl_action": "pause"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inst["ttl"]["ttl_seconds"], 600);
    assert_eq!(inst["ttl"]["ttl_action"], "pause");
    assert!(inst["ttl"]["ttl_expire_at"].is_u64());
    let (_, inst) = api
        .post(
            &format!("/instance/{id}/ttl"),
            &json!({"ttl_seconds": null}),
        )
        .await;
    assert_eq!(inst["ttl"]["ttl_seconds"], Value::Null);
    assert_eq!(inst["ttl"]["ttl_expire_at"], Value::Null);
    let (status, inst) = api
        .post(
            &format!("/instance/{id}/metadata"),
            &json!({"task_id": "t1", "owner": "me"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        inst["metadata"],
        json!({"a": "1", "task_id": "t1", "owner": "me"})
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn list_filters_on_metadata_and_paginates() {
    let sim = server(SimConfig {
        exec_mode: ExecMode::Echo,
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&sim);
    let a = api
        .start(json!({"task_id": "t1", "owner": "x"}), None, None)
        .await;
    let b = api
        .start(json!({"task_id": "t2", "owner": "x"}), None, None)
        .await;
    let c = api
        .start(json!({"task_id": "t1", "owner": "y"}), None, None)
        .await;
    let ids = |list: &Value, key: &str| -> Vec<String> {
        list[key]
            .as_array()
            .expect("array")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_owned())
            .collect()
    };
    // Brackets percent-encoded, as httpx and serde_urlencoded send them.
    let (_, list) = api.get("/instance?metadata%5Btask_id%5D=t1").await;
    assert_eq!(ids(&list, "data"), vec![a.clone(), c.clone()]);
    let (_, list) = api
        .get("/instance?metadata%5Btask_id%5D=t1&metadata%5Bowner%5D=y")
        .await;
    assert_eq!(ids(&list, "data"), vec![c.clone()]);
    let (_, list) = api.get("/instance?metadata%5Btask_id%5D=nope").await;
    assert_eq!(list, json!({"object": "list", "data": []}));
    let (_, list) = api.get("/instance").await;
    assert_eq!(ids(&list, "data"), vec![a.clone(), b.clone(), c.clone()]);

    let (status, page) = api.get("/instance/list?page=2&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page, "instances"), vec![c.clone()]);
    assert_eq!(
        (
            &page["total"],
            &page["page"],
            &page["size"],
            &page["total_pages"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!(2))
    );
    assert_eq!(
        (&page["has_next"], &page["has_prev"]),
        (&json!(false), &json!(true))
    );
    let (_, page) = api
        .get("/instance/list?page=1&limit=10&metadata%5Bowner%5D=x")
        .await;
    assert_eq!(ids(&page, "instances"), vec![a, b]);
    sim.stop().await;
}

#[actix_rt::test]
async fn duplicate_slashes_and_plural_routes_are_accepted() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let (status, _) = api.get(&format!("//instance/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, out) = api.exec(&format!("/{id}"), json!(["echo x"])).await;
    assert_eq!(
        (status, out["stdout"].clone()),
        (StatusCode::OK, json!("x\n"))
    );
    let (status, inst) = api.get(&format!("/instances/{id}")).await;
    assert_eq!((status, inst["id"].clone()), (StatusCode::OK, json!(id)));
    sim.stop().await;
}

#[actix_rt::test]
async fn multi_element_command_is_joined_with_spaces() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let (status, out) = api.exec(&id, json!(["echo", "a  b", "c"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        out,
        json!({"exit_code": 0, "stdout": "a b c\n", "stderr": ""})
    );
    assert_eq!(sim.command_runs("echo a  b c"), 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn command_runs_in_private_dir_with_a_clean_environment() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let one = api.start_ready().await;
    let two = api.start_ready().await;
    let (_, out) = api
        .exec(&one, json!(["pwd; echo $HOME; echo hi > f.txt; env"]))
        .await;
    let dir = sim.instance_dir(&one).expect("dir");
    let stdout = out["stdout"].as_str().expect("stdout");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(dir.to_str().expect("utf-8 dir")));
    assert_eq!(lines.next(), Some(dir.to_str().expect("utf-8 dir")));
    assert!(stdout.contains(&format!("SIM_INSTANCE_ID={one}")));
    // The test process has CARGO_* variables; none may leak into commands.
    assert!(!stdout.contains("CARGO"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(dir.join("f.txt")).expect("file"),
        "hi\n"
    );
    let (_, out) = api.exec(&two, json!(["cat f.txt"])).await;
    assert_ne!(out["exit_code"], 0, "instances do not share a directory");
    assert!(dir.starts_with(sim.root_dir()));
    sim.stop().await;
}

#[actix_rt::test]
async fn background_process_holding_the_pipes_does_not_hang_exec() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let started = Instant::now();
    let (status, out) = api
        .exec(&id, json!(["echo before; sleep 30 & echo after"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out["stdout"], "before\nafter\n");
    assert!(!marked_pids(&id).is_empty());
    let (status, _) = api.delete(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_no_processes_left(&id).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn delete_kills_processes_that_left_the_group_and_removes_the_dir() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    // setsid leaves the process group; the /proc sweep must still find it.
    let (status, _) = api
        .exec(
            &id,
            json!(["setsid sleep 60 >/dev/null 2>&1 < /dev/null & sleep 60 >/dev/null 2>&1 &"]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dir = sim.instance_dir(&id).expect("dir");
    let deadline = Instant::now() + Duration::from_secs(10);
    while marked_pids(&id).len() < 2 {
        assert!(Instant::now() < deadline, "background sleeps never started");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = api.delete(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_no_processes_left(&id).await;
    assert!(!dir.exists());
    sim.stop().await;
}

#[actix_rt::test]
async fn sse_exec_streams_json_data_lines_then_done() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let body =
        serde_json::to_vec(&json!({"command": ["printf 'l1\\nl2\\n'; echo e1 >&2; exit 5"]}))
            .expect("json");
    let mut resp = api
        .client
        .post(format!("{}/instance/{id}/exec/sse", api.base))
        .insert_header(("Authorization", "Bearer test-key"))
        .insert_header(("Accept", "text/event-stream"))
        .send_body(body)
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers().get("content-type").expect("content type");
    assert!(content_type
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    let text = String::from_utf8(resp.body().await.expect("body").to_vec()).expect("utf-8");
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut exit = None;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    for line in &data[..data.len() - 1] {
        let event: Value = serde_json::from_str(line).expect("json event");
        match event["type"].as_str().expect("type") {
            "stdout" => stdout.push_str(event["content"].as_str().expect("str")),
            "stderr" => stderr.push_str(event["content"].as_str().expect("str")),
            "exit_code" => exit = event["content"].as_i64(),
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(
        (stdout.as_str(), stderr.as_str(), exit),
        ("l1\nl2\n", "e1\n", Some(5))
    );
    assert_eq!(sim.stats().execs, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn echo_mode_runs_nothing_and_echoes_the_command() {
    let sim = server(SimConfig {
        exec_mode: ExecMode::Echo,
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let (status, out) = api
        .exec(&id, json!(["echo hi > created.txt; exit 7"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        out,
        json!({"exit_code": 0, "stdout": "echo hi > created.txt; exit 7\n", "stderr": ""})
    );
    assert_eq!(sim.instance_dir(&id), None);
    assert_eq!(sim.command_runs("echo hi > created.txt; exit 7"), 1);
    assert_eq!(sim.stats().execs, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn http_error_faults_answer_their_status_with_retry_after() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    type Case = (fn(&mut FaultConfig), StatusCode, bool);
    let cases: [Case; 4] = [
        (
            |f| f.error_500 = 1.0,
            StatusCode::INTERNAL_SERVER_ERROR,
            false,
        ),
        (|f| f.error_502 = 1.0, StatusCode::BAD_GATEWAY, false),
        (|f| f.error_503 = 1.0, StatusCode::SERVICE_UNAVAILABLE, true),
        (|f| f.error_429 = 1.0, StatusCode::TOO_MANY_REQUESTS, true),
    ];
    for (set, want, has_retry_after) in cases {
        sim.set_faults(faults(|f| {
            set(f);
            f.retry_after_secs = 7;
        }));
        let body = serde_json::to_vec(&json!({"command": ["echo never"]})).expect("json");
        let (status, retry_after, answer) = api
            .send_full("POST", &format!("/instance/{id}/exec"), Some(&body))
            .await;
        assert_eq!(status, want, "{answer}");
        assert!(answer["detail"].is_string());
        assert_eq!(retry_after.as_deref(), has_retry_after.then_some("7"));
        let (status, _) = api.get(&format!("/instance/{id}")).await;
        assert_eq!(status, want, "error faults apply to every route");
    }
    sim.set_faults(FaultConfig::none());
    assert_eq!(sim.command_runs("echo never"), 0);
    let stats = sim.stats();
    assert_eq!(stats.faults.error_500, 2);
    assert_eq!(stats.faults.error_502, 2);
    assert_eq!(stats.faults.error_503, 2);
    assert_eq!(stats.faults.error_429, 2);
    assert_eq!(stats.faults_injected, 8);
    assert_eq!(stats.execs, 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn drop_before_closes_the_connection_without_running_the_command() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    sim.set_faults(faults(|f| f.drop_before = 1.0));
    let answer = raw_request(
        sim.addr(),
        &format!("/instance/{id}/exec"),
        r#"{"command":["touch ran.txt"]}"#,
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // awc sees a failed request too, not an HTTP answer.
    let got = api
        .client
        .post(format!("{}/instance/{id}/exec", api.base))
        .insert_header(("Authorization", "Bearer test-key"))
        .send_body(r#"{"command":["touch ran.txt"]}"#)
        .await;
    assert!(
        got.is_err(),
        "expected a connection error, got {:?}",
        got.map(|r| r.status())
    );
    let dir = sim.instance_dir(&id).expect("dir");
    assert!(!dir.join("ran.txt").exists());
    assert_eq!(sim.command_runs("touch ran.txt"), 0);
    let stats = sim.stats();
    assert_eq!((stats.faults.drop_before, stats.execs), (2, 0));
    sim.stop().await;
}

#[actix_rt::test]
async fn drop_after_runs_the_command_exactly_once_then_closes_the_connection() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    sim.set_faults(faults(|f| f.drop_after = 1.0));
    let answer = raw_request(
        sim.addr(),
        &format!("/instance/{id}/exec"),
        r#"{"command":["echo run >> ran.txt"]}"#,
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let dir = sim.instance_dir(&id).expect("dir");
    assert_eq!(
        std::fs::read_to_string(dir.join("ran.txt")).expect("ran"),
        "run\n"
    );
    assert_eq!(sim.command_runs("echo run >> ran.txt"), 1);
    // The SSE route drops after running too.
    let answer = raw_request(
        sim.addr(),
        &format!("/instance/{id}/exec/sse"),
        r#"{"command":["echo sse >> ran.txt"]}"#,
    );
    assert!(answer.is_empty());
    assert_eq!(sim.command_runs_containing(">> ran.txt"), 2);
    let stats = sim.stats();
    assert_eq!((stats.faults.drop_after, stats.execs), (2, 2));
    sim.stop().await;
}

#[actix_rt::test]
async fn slow_fault_delays_the_answer() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    sim.set_faults(faults(|f| {
        f.slow = 1.0;
        f.slow_by = Duration::from_millis(300);
    }));
    let started = Instant::now();
    let (status, out) = api.exec(&id, json!(["echo slow"])).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (status, out["stdout"].clone()),
        (StatusCode::OK, json!("slow\n"))
    );
    assert_eq!(sim.stats().faults.slow, 1);
    // Only exec is slowed: while an exec is held for an hour, a GET is
    // answered.
    sim.set_faults(faults(|f| {
        f.slow = 1.0;
        f.slow_by = Duration::from_secs(3600);
    }));
    let held = Box::pin(api.exec(&id, json!(["echo held"])));
    let path = format!("/instance/{id}");
    let get = Box::pin(api.get(&path));
    match futures_util::future::select(held, get).await {
        futures_util::future::Either::Right(((status, _), held)) => {
            assert_eq!(status, StatusCode::OK);
            drop(held);
        }
        futures_util::future::Either::Left(((status, body), _)) => {
            panic!("the held exec answered before the GET: {status} {body}")
        }
    }
    assert_eq!(sim.command_runs("echo held"), 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn boot_error_fault_sends_the_instance_to_error() {
    let sim = server(SimConfig {
        faults: faults(|f| f.boot_error = 1.0),
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&sim);
    let id = api.start(Value::Null, None, None).await;
    api.wait_status(&id, "error").await;
    let (status, _) = api.exec(&id, json!(["true"])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api.delete(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.stats().faults.boot_error, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn vanish_fault_removes_the_instance_before_exec() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    sim.set_faults(faults(|f| f.vanish = 1.0));
    let (status, body) = api.exec(&id, json!(["echo gone"])).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"detail": "Instance not found"})
        )
    );
    sim.set_faults(FaultConfig::none());
    let (status, _) = api.get(&format!("/instance/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stats = sim.stats();
    assert_eq!(
        (stats.faults.vanish, stats.expirations, stats.execs),
        (1, 1, 0)
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn seeded_faults_repeat_across_servers() {
    let config = || SimConfig {
        exec_mode: ExecMode::Echo,
        faults: faults(|f| {
            f.error_503 = 0.5;
            f.retry_after_secs = 0;
            f.seed = 7;
        }),
        ..SimConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = server(config()).await;
        let api = Api::new(&sim);
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(api.get("/instance").await.0.as_u16());
        }
        runs.push(statuses);
        sim.stop().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&503) && runs[0].contains(&200),
        "{:?}",
        runs[0]
    );
}

#[actix_rt::test]
async fn command_run_counters_count_exact_text_and_substrings() {
    let sim = server(SimConfig {
        exec_mode: ExecMode::Echo,
        ..SimConfig::default()
    })
    .await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    for command in [
        "timeout 5 make test",
        "timeout 9 make test",
        "timeout 5 make test",
        "ls",
    ] {
        let (status, _) = api.exec(&id, json!([command])).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(sim.command_runs("timeout 5 make test"), 2);
    assert_eq!(sim.command_runs("make test"), 0);
    assert_eq!(sim.command_runs_containing("make test"), 3);
    assert_eq!(sim.stats().execs, 4);
    sim.stop().await;
}

#[actix_rt::test]
async fn expire_hook_makes_the_instance_disappear() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    assert!(sim.expire(&id));
    assert!(!sim.expire(&id));
    let (status, _) = api.exec(&id, json!(["true"])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(sim.stats().expirations, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn stop_kills_instance_processes_and_removes_dirs() {
    let sim = server(SimConfig::default()).await;
    let api = Api::new(&sim);
    let id = api.start_ready().await;
    let (status, _) = api.exec(&id, json!(["sleep 60 >/dev/null 2>&1 &"])).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    while marked_pids(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background sleep never showed up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let root = sim.root_dir();
    assert!(root.exists());
    sim.stop().await;
    assert_no_processes_left(&id).await;
    assert!(!root.exists());
}

/// The official Python SDK (`morphcloud==0.1.116`) accepts the simulator.
/// Runs only where a Python with `morphcloud` is found (`HECATE_SDK_PYTHON`,
/// else `python3` on PATH); otherwise it says so and passes.
#[actix_rt::test]
async fn python_sdk_accepts_the_simulator() {
    let python = std::env::var("HECATE_SDK_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import morphcloud"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    if !has_sdk {
        eprintln!("skipped: no Python with morphcloud ({python}); set HECATE_SDK_PYTHON");
        return;
    }
    let sim = server(SimConfig::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_driver.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("MORPH_BASE_URL", sim.base_url())
        .env("MORPH_API_KEY", "test-key")
        .env("MORPH_CONFIG_PATH", "/nonexistent")
        .env("MORPH_HTTP_TRANSPORT_SHARDS", "1")
        .env_remove("MORPH_API_HOST")
        .env_remove("MORPH_ENV")
        .env_remove("MORPH_PROFILE")
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("SDK OK"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let stats = sim.stats();
    assert_eq!((stats.starts, stats.stops, stats.live_instances), (2, 2, 0));
    sim.stop().await;
}
