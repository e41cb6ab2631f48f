//! `hecate serve`, attacked from outside: a real server on 127.0.0.1:0,
//! driven by awc and by a raw TCP client. Auth on every route but
//! `/healthz`, refused bodies, idempotent retries, concurrent clients,
//! clients that go away, and a graceful SIGTERM of the binary.

use std::sync::Arc;
use std::time::Duration;

use bytes as web_bytes;
use hecate::server::{ApiServer, ApiToken, ServerConfig};
use hecate::{Config, Placement, Runtime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helper::{eventually, Journal, Scripted};

const TOKEN: &str = "test-token-0123456789abcdef";

/// A server over the scripted backend (and the journal of what it ran).
async fn scripted_server(config: ServerConfig) -> (ApiServer, Arc<Journal>) {
    let (provider, journal) = Scripted::new();
    let rt = Runtime::start_with(
        Config::default().with_workers(2),
        provider,
        Placement::Workers,
    )
    .expect("runtime");
    (serve(rt, config).await, journal)
}

async fn serve(rt: Runtime, mut config: ServerConfig) -> ApiServer {
    config.bind = "127.0.0.1:0".parse().expect("addr");
    config.workers = 2;
    config.token = Some(ApiToken::new(TOKEN).expect("token"));
    ApiServer::start(rt, config).await.expect("serve")
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
}

/// An answer: status, selected headers, JSON body.
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn call(
    server: &ApiServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Answer {
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, format!("{}{path}", server.url()));
    if let Some(token) = token {
        req = req.insert_header(("Authorization", format!("Bearer {token}")));
    }
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = match body {
        Some(body) => req
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .expect("send"),
        None => req.send().await.expect("send"),
    };
    let bytes = resp.body().limit(16 << 20).await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    Answer {
        status: resp.status().as_u16(),
        replayed: resp.headers().contains_key("idempotency-replayed"),
        body,
    }
}

async fn exec(server: &ApiServer, task: &str, args: Value, headers: &[(&str, &str)]) -> Answer {
    call(
        server,
        "POST",
        &format!("/v1/tasks/{task}/exec"),
        Some(TOKEN),
        headers,
        Some(args.to_string()),
    )
    .await
}

/// Every error answer has the one shape: `error` text and `error_kind`.
fn assert_error(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error_kind"], kind, "{}", answer.body);
    assert!(
        answer.body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        answer.body
    );
}

/// Sends raw bytes on a fresh connection and reads until the server closes.
async fn raw(server: &ApiServer, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_rt::test]
async fn no_or_wrong_token_is_401_everywhere_but_healthz() {
    let (server, journal) = scripted_server(ServerConfig::default()).await;
    let routes = [
        ("POST", "/v1/tasks/t/exec"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/t"),
        ("DELETE", "/v1/tasks/t"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/no/such/route"),
        ("PUT", "/v1/tasks/t/exec"),
    ];
    let wrong = format!("{TOKEN}x");
    let bad_tokens = [
        None,
        Some(""),
        Some("nope"),
        Some(&TOKEN[..TOKEN.len() - 1]),
        Some(wrong.as_str()),
    ];
    for (method, path) in routes {
        for token in bad_tokens {
            let body = (method == "POST").then(|| json!({"command": "echo:hi"}).to_string());
            let a = call(&server, method, path, token, &[], body).await;
            assert_error(&a, 401, "unauthorized");
        }
    }
    // Another scheme with the right token is still refused.
    let a = call(
        &server,
        "GET",
        "/v1/tasks",
        None,
        &[("Authorization", &format!("Basic {TOKEN}"))],
        None,
    )
    .await;
    assert_error(&a, 401, "unauthorized");
    assert!(journal.ran().is_empty(), "nothing ran without the token");
    // Health needs none; with the token, the rest answer.
    let a = call(&server, "GET", "/healthz", None, &[], None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("ok")));
    let a = call(&server, "GET", "/v1/tasks", Some(TOKEN), &[], None).await;
    assert_eq!(a.status, 200);
    let a = call(&server, "GET", "/no/such/route", Some(TOKEN), &[], None).await;
    assert_error(&a, 404, "not_found");
    let a = call(&server, "PUT", "/v1/tasks/t/exec", Some(TOKEN), &[], None).await;
    assert_error(&a, 405, "method_not_allowed");
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn a_body_task_id_other_than_the_paths_is_refused_and_nothing_runs() {
    let (server, journal) = scripted_server(ServerConfig::default()).await;
    let a = exec(
        &server,
        "a",
        json!({"command": "echo:x", "task_id": "b"}),
        &[],
    )
    .await;
    assert_error(&a, 400, "invalid_input");
    assert!(
        a.body["error"].as_str().unwrap().contains("differs"),
        "{}",
        a.body
    );
    assert!(journal.ran().is_empty());
    // Naming its own task is fine; no task_id means the path's.
    let a = exec(
        &server,
        "a",
        json!({"command": "echo:same", "task_id": "a"}),
        &[],
    )
    .await;
    assert_eq!((a.status, a.body["output"].as_str()), (200, Some("same")));
    let a = exec(&server, "a%2Fb", json!({"command": "echo:slash"}), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let ran = journal.ran();
    assert_eq!(ran[0], ("a".to_string(), "echo:same".to_string()));
    assert_eq!(ran[1], ("a/b".to_string(), "echo:slash".to_string()));
    // A bad task id in the path is refused too.
    let a = exec(&server, "%0A", json!({"command": "echo:x"}), &[]).await;
    assert_error(&a, 400, "invalid_input");
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn oversized_and_malformed_bodies_get_clear_errors() {
    let config = ServerConfig {
        max_body_bytes: 4096,
        ..ServerConfig::default()
    };
    let (server, journal) = scripted_server(config).await;
    let big = json!({"command": format!("echo:{}", "x".repeat(5000))}).to_string();
    let a = exec(&server, "t", serde_json::from_str(&big).unwrap(), &[]).await;
    assert_error(&a, 413, "payload_too_large");
    // Chunked, with no length announced: cut off at the limit all the same.
    let chunk = "y".repeat(3000);
    let request = format!(
        "POST /v1/tasks/t/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let text = raw(&server, request.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    for body in [
        "{\"command\": \"echo:x\"",
        "not json",
        "[]",
        "{\"command\": \"echo:a\", \"command\": \"echo:b\"}",
        "{\"command\": \"echo:x\", \"sudo\": true}",
        "{\"command\": \"\"}",
        "{\"command\": \"echo:x\", \"timeout\": -1}",
        "",
    ] {
        let a = call(
            &server,
            "POST",
            "/v1/tasks/t/exec",
            Some(TOKEN),
            &[],
            Some(body.into()),
        )
        .await;
        assert_error(&a, 400, "invalid_input");
    }
    let mut request = format!(
        "POST /v1/tasks/t/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 4\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&[0xff, 0xfe, b'{', b'}']);
    let text = raw(&server, &request).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(journal.ran().is_empty(), "{:?}", journal.ran());
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn an_idempotent_retry_while_running_and_after_runs_the_command_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let count = tmp.path().join("count");
    let go = tmp.path().join("go");
    let rt = Runtime::start(crate::helper::local_config(tmp.path().join("root")).with_workers(2))
        .expect("runtime");
    let server = Arc::new(serve(rt, ServerConfig::default()).await);
    let command = format!(
        "echo run >> {count}; while [ ! -e {go} ]; do sleep 0.01; done; echo finished",
        count = count.display(),
        go = go.display()
    );
    let args = json!({"command": command});
    let key = [("Idempotency-Key", "retry-1")];
    let first = {
        let (server, args) = (server.clone(), args.clone());
        actix_rt::spawn(async move { exec(&server, "t", args, &key).await })
    };
    assert!(eventually(Duration::from_secs(20), || count.exists()).await);
    let retry = {
        let (server, args) = (server.clone(), args.clone());
        actix_rt::spawn(async move { exec(&server, "t", args, &key).await })
    };
    // The retry is waiting (the key is taken, nothing new runs) until the
    // command is let go.
    assert_eq!(server.idempotency_keys(), 1);
    std::fs::write(&go, "").expect("go");
    let first = first.await.expect("first");
    let retry = retry.await.expect("retry");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["output"], "finished");
    assert!(!first.replayed && retry.replayed);
    assert_eq!(retry.body, first.body);
    // After the answer: the same answer, still one run.
    let later = exec(&server, "t", args.clone(), &key).await;
    assert!(later.replayed);
    assert_eq!(later.body, first.body);
    assert_eq!(std::fs::read_to_string(&count).expect("count"), "run\n");
    // A new key runs again.
    let fresh = exec(&server, "t", args, &[("Idempotency-Key", "retry-2")]).await;
    assert!(!fresh.replayed);
    assert_eq!(
        std::fs::read_to_string(&count).expect("count"),
        "run\nrun\n"
    );
    let server = Arc::into_inner(server).expect("last handle");
    let report = server
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
}

#[actix_rt::test]
async fn the_same_key_with_another_body_is_refused() {
    let (server, journal) = scripted_server(ServerConfig::default()).await;
    let key = [("Idempotency-Key", "k")];
    let a = exec(&server, "t", json!({"command": "echo:one"}), &key).await;
    assert_eq!(a.status, 200);
    for other in [
        json!({"command": "echo:two"}),
        json!({"command": "echo:one", "timeout": 5}),
        json!({"command": "echo:one", "background": true}),
    ] {
        let b = exec(&server, "t", other, &key).await;
        assert_error(&b, 422, "idempotency_conflict");
    }
    // The same key on another task is another key.
    let c = exec(&server, "u", json!({"command": "echo:two"}), &key).await;
    assert_eq!((c.status, c.replayed), (200, false));
    // A key that is not a header-safe token is refused before anything runs.
    let d = exec(
        &server,
        "t",
        json!({"command": "echo:x"}),
        &[("Idempotency-Key", "a b")],
    )
    .await;
    assert_error(&d, 400, "invalid_input");
    assert_eq!(journal.runs_of("echo:one"), 1);
    assert_eq!(journal.runs_of("echo:two"), 1);
    assert_eq!(journal.runs_of("echo:x"), 0);
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn concurrent_clients_each_get_their_own_answers_in_task_order() {
    let (server, journal) = scripted_server(ServerConfig::default()).await;
    let server = Arc::new(server);
    let clients = (0..64).map(|c| {
        let server = server.clone();
        async move {
            for n in 0..10 {
                let text = format!("c{c}-n{n}");
                let a = exec(
                    &server,
                    &format!("t{}", c % 8),
                    json!({"command": format!("echo:{text}")}),
                    &[],
                )
                .await;
                assert_eq!(
                    (a.status, a.body["output"].as_str()),
                    (200, Some(text.as_str()))
                );
            }
        }
    });
    futures_util::future::join_all(clients).await;
    let ran = journal.ran();
    assert_eq!(ran.len(), 640);
    // Each client's commands ran in its order, in its task.
    for c in 0..64 {
        let mine: Vec<_> = ran
            .iter()
            .filter(|(_, cmd)| cmd.starts_with(&format!("echo:c{c}-")))
            .collect();
        assert_eq!(mine.len(), 10);
        for (n, (task, cmd)) in mine.iter().enumerate() {
            assert_eq!(task, &format!("t{}", c % 8));
            assert_eq!(cmd, &format!("echo:c{c}-n{n}"));
        }
    }
    let list = call(&server, "GET", "/v1/tasks", Some(TOKEN), &[], None).await;
    assert_eq!(list.body["tasks"].as_array().map(Vec::len), Some(8));
    let server = Arc::into_inner(server).expect("last handle");
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(journal.live(), 0);
}

#[actix_rt::test]
async fn a_client_going_away_mid_exec_does_not_kill_the_tasks_queue() {
    let (server, journal) = scripted_server(ServerConfig::default()).await;
    let body = json!({"command": "sleep:300"}).to_string();
    let request = format!(
        "POST /v1/tasks/t/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Idempotency-Key: gone\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    assert!(
        eventually(Duration::from_secs(10), || journal.runs_of("sleep:300")
            == 1)
        .await
    );
    drop(stream);
    // The task goes on: the next command runs, after the first one.
    let a = exec(&server, "t", json!({"command": "echo:next"}), &[]).await;
    assert_eq!((a.status, a.body["output"].as_str()), (200, Some("next")));
    // The abandoned command ran to its end, and its answer was kept.
    let retry = exec(
        &server,
        "t",
        json!({"command": "sleep:300"}),
        &[("Idempotency-Key", "gone")],
    )
    .await;
    assert!(retry.replayed);
    assert_eq!(retry.body["output"], "slept");
    assert_eq!(journal.runs_of("sleep:300"), 1);
    let ran: Vec<String> = journal.ran().into_iter().map(|(_, c)| c).collect();
    assert_eq!(ran, ["sleep:300", "echo:next"]);
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn tasks_are_listed_got_and_evicted() {
    let (server, journal) = scripted_server(ServerConfig::default()).await;
    let a = exec(&server, "t1", json!({"command": "echo:hi"}), &[]).await;
    assert_eq!(a.status, 200);
    let list = call(&server, "GET", "/v1/tasks", Some(TOKEN), &[], None).await;
    assert_eq!(list.body["tasks"][0]["task_id"], "t1");
    let one = call(&server, "GET", "/v1/tasks/t1", Some(TOKEN), &[], None).await;
    assert_eq!(
        (one.status, one.body["state"].as_str()),
        (200, Some("ready"))
    );
    let del = call(&server, "DELETE", "/v1/tasks/t1", Some(TOKEN), &[], None).await;
    assert_eq!(
        (del.status, del.body["evicted"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(journal.live(), 0);
    for method in ["GET", "DELETE"] {
        let gone = call(&server, method, "/v1/tasks/t1", Some(TOKEN), &[], None).await;
        assert_error(&gone, 404, "not_found");
    }
    // The next command gets a fresh instance and says so.
    let a = exec(&server, "t1", json!({"command": "echo:again"}), &[]).await;
    assert_eq!(a.body["instance_restarted"], true, "{}", a.body);
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn the_openapi_document_is_generated_from_the_types() {
    let (server, _journal) = scripted_server(ServerConfig::default()).await;
    let doc = call(&server, "GET", "/v1/openapi.json", Some(TOKEN), &[], None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.body;
    for path in [
        "/v1/tasks/{task_id}/exec",
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/healthz",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The exec body is the tool's arguments, field for field, and the answer
    // the tool's result.
    let args = &doc["components"]["schemas"]["ToolArgs"]["properties"];
    let tool = hecate::tool::parameters_schema();
    let mut ours: Vec<&String> = args.as_object().expect("ToolArgs").keys().collect();
    let mut theirs: Vec<&String> = tool["properties"]
        .as_object()
        .expect("tool")
        .keys()
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert_eq!(
        doc["components"]["schemas"]["ToolArgs"]["required"],
        json!(["command"])
    );
    let result = &doc["components"]["schemas"]["ToolResult"]["properties"];
    let sample = serde_json::to_value(hecate::tool::error_result(&hecate::Error::internal("x")))
        .expect("json");
    for key in sample.as_object().expect("object").keys() {
        assert!(result[key].is_object(), "ToolResult.{key} undocumented");
    }
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn sigterm_to_hecate_serve_answers_in_flight_requests_and_leaves_no_instance() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hecate"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HECATE_BACKEND", "local")
        .env("HECATE_LOCAL_ROOT", &root)
        .env("HECATE_API_TOKEN", TOKEN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--shutdown-grace-secs",
            "20",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hecate serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).expect("a line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let post = |command: &str| {
        let (url, command) = (url.clone(), command.to_string());
        actix_rt::spawn(async move {
            let mut resp = client()
                .post(format!("{url}/v1/tasks/t/exec"))
                .insert_header(("Authorization", format!("Bearer {TOKEN}")))
                .send_body(json!({"command": command}).to_string())
                .await
                .expect("answered");
            let body = resp.body().await.expect("body");
            (
                resp.status().as_u16(),
                serde_json::from_slice::<Value>(&body).expect("json"),
            )
        })
    };
    let began = tmp.path().join("began");
    let in_flight = post(&format!(
        "touch {}; sleep 1; echo finished",
        began.display()
    ));
    assert!(eventually(Duration::from_secs(20), || began.exists()).await);
    let pid = i32::try_from(child.id()).expect("pid");
    assert!(hecate::unix::signal_pid(pid, libc::SIGTERM));
    let (status, body) = in_flight.await.expect("join");
    assert_eq!(
        (status, body["output"].as_str()),
        (200, Some("finished")),
        "{body}"
    );
    let began = std::time::Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "hecate serve did not stop"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    // Its stderr, to the end (the reader ends when the pipe closes).
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    assert_eq!(exit.code(), Some(0), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("stopped 1 instance")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(TOKEN)),
        "the token was printed: {lines:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "instances left: {left:?}");
}

/// One server-sent event: its name, id and data.
#[derive(Debug)]
struct Event {
    name: String,
    id: Option<u64>,
    data: Value,
}

/// Parses the events complete in `buf`, leaving a partial one there.
fn take_events(buf: &mut String) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let (mut name, mut id, mut data) = (String::new(), None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().expect("numeric id"));
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        out.push(Event {
            name,
            id,
            data: serde_json::from_str(&data).expect("JSON data"),
        });
    }
    out
}

/// Starts a streaming exec; returns the response to read events from.
async fn exec_events(
    server: &ApiServer,
    task: &str,
    args: Value,
    key: Option<&str>,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<web_bytes::Bytes, awc::error::PayloadError>>,
> {
    let mut req = client()
        .post(format!("{}/v1/tasks/{task}/exec", server.url()))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .insert_header(("Accept", "text/event-stream"));
    if let Some(key) = key {
        req = req.insert_header(("Idempotency-Key", key));
    }
    let resp = req.send_body(args.to_string()).await.expect("answered");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    resp
}

/// Reads events until one named `until` (inclusive).
async fn events_until<S>(
    resp: &mut awc::ClientResponse<S>,
    buf: &mut String,
    until: &str,
) -> Vec<Event>
where
    S: futures_util::Stream<Item = Result<web_bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    use futures_util::StreamExt as _;
    let mut got = Vec::new();
    loop {
        got.extend(take_events(buf));
        if got.iter().any(|e| e.name == until) {
            return got;
        }
        let bytes = resp.next().await.expect("more events").expect("bytes");
        buf.push_str(std::str::from_utf8(&bytes).expect("UTF-8 events"));
    }
}

#[actix_rt::test]
async fn sse_streams_chunks_in_order_with_offsets_while_the_command_runs_then_the_result() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let go = tmp.path().join("go");
    let rt = Runtime::start(crate::helper::local_config(tmp.path().join("root")).with_workers(2))
        .expect("runtime");
    let server = serve(rt, ServerConfig::default()).await;
    let command = format!(
        "echo first; while [ ! -e {go} ]; do sleep 0.01; done; echo oops >&2; printf 'é\\n'; echo last",
        go = go.display()
    );
    let args = json!({"command": command});
    let mut resp = exec_events(&server, "t", args.clone(), Some("sse-1")).await;
    let mut buf = String::new();
    // The first chunk arrives while the command still waits.
    let first = events_until(&mut resp, &mut buf, "stdout").await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (first[0].id, first[0].data["text"].as_str()),
        (Some(0), Some("first\n"))
    );
    assert!(!go.exists());
    std::fs::write(&go, "").expect("go");
    let rest = events_until(&mut resp, &mut buf, "result").await;
    let mut all = first;
    all.extend(rest);
    let result = all.pop().expect("result");
    assert_eq!(result.name, "result");
    assert_eq!(result.id, None);
    // Per stream: ids are the byte offsets, in order, without gaps.
    for stream in ["stdout", "stderr"] {
        let mut at = 0u64;
        let mut text = String::new();
        for e in all.iter().filter(|e| e.name == stream) {
            assert_eq!(e.id, Some(at), "{all:?}");
            assert_eq!(e.data["offset"], at);
            assert_eq!(e.data["missed"], 0);
            let piece = e.data["text"].as_str().expect("text");
            text.push_str(piece);
            at += piece.len() as u64;
        }
        let want = if stream == "stdout" {
            "first\né\nlast\n"
        } else {
            "oops\n"
        };
        assert_eq!(text, want);
    }
    assert!(all.iter().all(|e| e.name == "stdout" || e.name == "stderr"));
    // The result is the tool's, as without streaming.
    assert_eq!(result.data["exit_code"], 0);
    assert_eq!(result.data["output"], "first\né\nlast\noops");
    // A retry of the key gets the result only, and nothing runs again.
    let mut again = exec_events(&server, "t", args, Some("sse-1")).await;
    assert!(again.headers().contains_key("idempotency-replayed"));
    let mut buf = String::new();
    let replayed = events_until(&mut again, &mut buf, "result").await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].data, result.data);
    server
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

#[actix_rt::test]
async fn metrics_are_served_with_the_token_and_name_no_task() {
    let (server, _journal) = scripted_server(ServerConfig::default()).await;
    let a = exec(
        &server,
        "secret-task-name",
        json!({"command": "echo:x"}),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut resp = client()
        .get(format!("{}/metrics", server.url()))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = String::from_utf8(resp.body().await.expect("body").to_vec()).expect("utf8");
    assert!(text.contains("hecate_execs_total"), "{text}");
    assert!(
        !text.contains("secret-task-name"),
        "a task id leaked: {text}"
    );
    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
