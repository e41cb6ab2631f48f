//! Integration tests: the MorphCloud simulator, spoken to over loopback HTTP
//! with awc (and a raw `TcpStream` where a dropped connection must be seen).

use std::time::{Duration, Instant};

use awc::http::StatusCode;
use hecate::sim::{SimConfig, SimServer};
use serde_json::{json, Value};

/// A small client for the simulator's API.
#[allow(dead_code)] // helpers used by tests still to come
struct Api {
    client: awc::Client,
    base: String,
    key: String,
}

#[allow(dead_code)]
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
        let bytes = resp.body().limit(64 << 20).await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
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
    SimServer::start(config).await.expect("simulator starts")
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
