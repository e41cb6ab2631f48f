//! The rest of the HTTP API, from outside: opening a task with a spec,
//! background jobs, file upload and download, and `hecate cp` through the
//! binary. A real server on 127.0.0.1:0 over the local backend, driven by
//! awc.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hecate::server::{ApiServer, ApiToken, ServerConfig};
use hecate::Runtime;
use serde_json::{json, Value};

const TOKEN: &str = "api-test-token-0123456789abcdef";

/// A server over a fresh local-backend runtime rooted in `root`.
async fn local_server(root: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> ApiServer {
    let rt = Runtime::start(crate::helper::local_config(root).with_workers(2)).expect("runtime");
    let mut config = ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        token: Some(ApiToken::new(TOKEN).expect("token")),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    ApiServer::start(rt, config).await.expect("serve")
}

async fn stop(server: ApiServer) {
    let report = server
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.is_clean(), "{report:?}");
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
}

/// An answer: status, content type, body bytes.
struct Answer {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The answer is an error of the API's one shape.
    fn assert_error(&self, status: u16, kind: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error_kind"], kind, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
}

async fn call(
    server: &ApiServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Answer {
    call_as(server, Some(TOKEN), method, path, headers, body).await
}

async fn call_as(
    server: &ApiServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
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
        Some(body) => req.send_body(body).await.expect("send"),
        None => req.send().await.expect("send"),
    };
    let body = resp.body().limit(64 << 20).await.expect("body");
    Answer {
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body,
    }
}

fn json_body(v: Value) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

async fn exec(server: &ApiServer, task: &str, args: Value) -> Value {
    let a = call(
        server,
        "POST",
        &format!("/v1/tasks/{task}/exec"),
        &[("content-type", "application/json")],
        json_body(args),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json());
    a.json()
}

#[actix_rt::test]
async fn opening_a_task_with_a_spec_answers_its_setup_and_another_spec_is_409() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = local_server(&tmp.path().join("root"), |_| {}).await;
    let spec = json!({
        "env": {"GREETING": "hello"},
        "files": [{"path": "notes/a.txt", "content": "from the spec"}],
        "setup": ["echo setting up $GREETING", "cat notes/a.txt > copied.txt"],
    });
    let first = call(
        &server,
        "PUT",
        "/v1/tasks/spec-task",
        &[],
        json_body(spec.clone()),
    )
    .await;
    let body = first.json();
    assert_eq!(first.status, 200, "{body}");
    assert_eq!(body["task_id"], "spec-task");
    assert_eq!(body["instance_started"], true, "{body}");
    assert_eq!(body["setup"]["ok"], true, "{body}");
    assert_eq!(body["setup"]["files_placed"], 1, "{body}");
    assert_eq!(
        body["setup"]["steps"][0]["output"]
            .as_str()
            .map(str::trim_end),
        Some("setting up hello"),
        "{body}"
    );
    let instance = body["instance_id"].as_str().expect("instance").to_string();
    // The same spec again: the task is open; nothing runs again.
    let again = call(&server, "PUT", "/v1/tasks/spec-task", &[], json_body(spec)).await;
    let body = again.json();
    assert_eq!(again.status, 200, "{body}");
    assert_eq!(body["instance_started"], false, "{body}");
    assert_eq!(body["instance_id"], instance.as_str());
    assert!(body["setup"].is_null(), "{body}");
    // A different spec is a conflict.
    call(
        &server,
        "PUT",
        "/v1/tasks/spec-task",
        &[],
        json_body(json!({"setup": "true"})),
    )
    .await
    .assert_error(409, "spec_conflict");
    // Commands see the spec's environment and files.
    let out = exec(
        &server,
        "spec-task",
        json!({"command": "echo $GREETING; cat copied.txt"}),
    )
    .await;
    assert_eq!(out["output"], "hello\nfrom the spec", "{out}");
    // A task that already runs without a spec cannot get one.
    exec(&server, "plain", json!({"command": "true"})).await;
    call(
        &server,
        "PUT",
        "/v1/tasks/plain",
        &[],
        json_body(json!({"setup": "true"})),
    )
    .await
    .assert_error(409, "spec_conflict");
    // Bad specs name the field; a host `source` is never read.
    for (bad, field) in [
        (
            json!({"files": [{"path": "p", "source": "/etc/hostname"}]}),
            "source",
        ),
        (json!({"setup": 7}), "setup"),
        (json!({"colour": "blue"}), "colour"),
        (json!(["setup"]), "object"),
    ] {
        let a = call(&server, "PUT", "/v1/tasks/bad-spec", &[], json_body(bad)).await;
        a.assert_error(400, "invalid_input");
        assert!(a.json()["error"].as_str().expect("text").contains(field));
    }
    // A failed setup is 422 with its output.
    let failed = call(
        &server,
        "PUT",
        "/v1/tasks/failing",
        &[],
        json_body(json!({"setup": ["echo broken-step; exit 3"]})),
    )
    .await;
    failed.assert_error(422, "setup_failed");
    assert!(
        failed.json()["error"]
            .as_str()
            .expect("text")
            .contains("broken-step"),
        "{}",
        failed.json()
    );
    stop(server).await;
}

/// Polls the output of a job until it holds `expected` (bounded); answers
/// the last read.
async fn read_until(server: &ApiServer, task: &str, id: u64, expected: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..20 {
        let a = call(
            server,
            "GET",
            &format!("/v1/tasks/{task}/jobs/{id}/output?offset=0&wait=5"),
            &[],
            None,
        )
        .await;
        last = a.json();
        assert_eq!(a.status, 200, "{last}");
        if last["text"].as_str().is_some_and(|t| t.contains(expected)) {
            return last;
        }
    }
    panic!("the job's output never held {expected:?}: {last}");
}

fn job_id(result: &Value) -> u64 {
    result["job"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no job in {result}"))
}

#[actix_rt::test]
async fn jobs_are_listed_read_from_offsets_with_a_long_poll_and_killed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = local_server(&tmp.path().join("root"), |c| {
        c.max_wait = Duration::from_secs(30);
    })
    .await;
    let gate = tmp.path().join("go");
    let started = exec(
        &server,
        "jobs",
        json!({
            "command": format!(
                "printf one; while [ ! -e {0} ]; do sleep 0.02; done; printf two; sleep 600",
                gate.display()
            ),
            "background": true,
        }),
    )
    .await;
    let id = job_id(&started);
    let first = read_until(&server, "jobs", id, "one").await;
    assert_eq!(first["text"], "one", "{first}");
    assert_eq!(first["offset"], 0);
    assert_eq!(first["missed_bytes"], 0);
    assert_eq!(first["job"]["state"], "running");
    let next = first["next_offset"].as_u64().expect("next_offset");
    assert_eq!(next, 3);
    // A long poll from the end waits for the next output.
    let url = format!(
        "{}/v1/tasks/jobs/jobs/{id}/output?offset={next}&wait=25",
        server.url()
    );
    let poll = actix_rt::spawn(async move {
        let mut resp = client()
            .get(url)
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .expect("poll");
        let body = resp.body().await.expect("body");
        (
            resp.status().as_u16(),
            serde_json::from_slice::<Value>(&body).expect("json"),
        )
    });
    std::fs::write(&gate, b"").expect("open the gate");
    let (status, polled) = poll.await.expect("join");
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["text"], "two", "{polled}");
    assert_eq!(polled["offset"], 3);
    assert_eq!(polled["next_offset"], 6);
    // A second job; the list has both, by id.
    let second = job_id(
        &exec(
            &server,
            "jobs",
            json!({"command": "echo quick", "background": true}),
        )
        .await,
    );
    let list = call(&server, "GET", "/v1/tasks/jobs/jobs", &[], None).await;
    let body = list.json();
    assert_eq!(list.status, 200, "{body}");
    let ids: Vec<u64> = body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![id, second], "{body}");
    let got = call(
        &server,
        "GET",
        &format!("/v1/tasks/jobs/jobs/{id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json()["command"]
            .as_str()
            .map(|c| c.starts_with("printf one")),
        Some(true)
    );
    // Kill: the job ends killed.
    let killed = call(
        &server,
        "POST",
        &format!("/v1/tasks/jobs/jobs/{id}/kill"),
        &[],
        None,
    )
    .await;
    let body = killed.json();
    assert_eq!(killed.status, 200, "{body}");
    assert_eq!(body["state"], "killed", "{body}");
    // Unknown jobs, another task's job ids, bad ids and waits.
    call(&server, "GET", "/v1/tasks/jobs/jobs/99", &[], None)
        .await
        .assert_error(404, "not_found");
    exec(
        &server,
        "other",
        json!({"command": "echo mine", "background": true}),
    )
    .await;
    for path in [
        format!("/v1/tasks/other/jobs/{second}"),
        format!("/v1/tasks/other/jobs/{second}/output"),
        format!("/v1/tasks/nobody/jobs/{id}"),
    ] {
        call(&server, "GET", &path, &[], None)
            .await
            .assert_error(404, "not_found");
    }
    call(
        &server,
        "POST",
        &format!("/v1/tasks/other/jobs/{second}/kill"),
        &[],
        None,
    )
    .await
    .assert_error(404, "not_found");
    for path in [
        "/v1/tasks/jobs/jobs/abc".to_string(),
        format!("/v1/tasks/jobs/jobs/{id}/output?wait=31"),
        format!("/v1/tasks/jobs/jobs/{id}/output?offset=-1"),
        format!("/v1/tasks/jobs/jobs/{id}/output?max_bytes=0"),
    ] {
        call(&server, "GET", &path, &[], None)
            .await
            .assert_error(400, "invalid_input");
    }
    stop(server).await;
}

/// A tar stream of `entries` (path, bytes, mode).
fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *data)
            .expect("append");
    }
    builder.into_inner().expect("tar")
}

/// The regular files of a tar stream: path → (bytes, mode).
fn untar(data: &[u8]) -> std::collections::BTreeMap<String, (Vec<u8>, u32)> {
    let mut out = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().expect("path").display().to_string();
        let mode = entry.header().mode().expect("mode") & 0o777;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        out.insert(path, (bytes, mode));
    }
    out
}

fn every_byte(times: usize) -> Vec<u8> {
    (0..times).flat_map(|_| 0u8..=255).collect()
}

#[actix_rt::test]
async fn files_and_directories_round_trip_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = local_server(&tmp.path().join("root"), |_| {}).await;
    let data = every_byte(300);
    let up = call(
        &server,
        "PUT",
        "/v1/tasks/files/files?path=bin/all.bytes&mode=750",
        &[("content-type", "application/octet-stream")],
        Some(Bytes::from(data.clone())),
    )
    .await;
    let body = up.json();
    assert_eq!(up.status, 200, "{body}");
    assert_eq!(body["kind"], "file");
    assert_eq!(body["bytes"], data.len());
    let out = exec(
        &server,
        "files",
        json!({"command": "stat -c %a bin/all.bytes; od -An -tx1 bin/all.bytes | head -1"}),
    )
    .await;
    assert_eq!(
        out["output"], "750\n 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
        "{out}"
    );
    let down = call(
        &server,
        "GET",
        "/v1/tasks/files/files?path=bin/all.bytes",
        &[],
        None,
    )
    .await;
    assert_eq!(down.status, 200);
    assert_eq!(down.content_type, "application/octet-stream");
    assert!(down.body[..] == data[..], "the bytes differ");
    // A directory as a tar stream, and back.
    let small = every_byte(1);
    let tree = tar_of(&[
        ("top.txt", b"top\n", 0o644),
        ("sub/deeper/all.bin", &small, 0o600),
        ("sub/run.sh", b"#!/bin/sh\necho ran\n", 0o755),
    ]);
    let up = call(
        &server,
        "PUT",
        "/v1/tasks/files/files?path=tree",
        &[("content-type", "application/x-tar")],
        Some(Bytes::from(tree)),
    )
    .await;
    let body = up.json();
    assert_eq!(up.status, 200, "{body}");
    assert_eq!(body["kind"], "directory");
    let out = exec(&server, "files", json!({"command": "tree/sub/run.sh"})).await;
    assert_eq!(out["output"], "ran", "{out}");
    let down = call(&server, "GET", "/v1/tasks/files/files?path=tree", &[], None).await;
    assert_eq!(down.status, 200);
    assert_eq!(down.content_type, "application/x-tar");
    let files = untar(&down.body);
    let expected: std::collections::BTreeMap<String, (Vec<u8>, u32)> = [
        ("sub/deeper/all.bin", small.clone(), 0o600),
        ("sub/run.sh", b"#!/bin/sh\necho ran\n".to_vec(), 0o755),
        ("top.txt", b"top\n".to_vec(), 0o644),
    ]
    .into_iter()
    .map(|(p, b, m)| (p.to_string(), (b, m)))
    .collect();
    assert_eq!(files, expected);
    // A file asked for as a tar: one entry named after it.
    let one = call(
        &server,
        "GET",
        "/v1/tasks/files/files?path=tree/top.txt",
        &[("accept", "application/x-tar")],
        None,
    )
    .await;
    assert_eq!(one.content_type, "application/x-tar");
    assert_eq!(
        untar(&one.body).into_keys().collect::<Vec<_>>(),
        vec!["top.txt".to_string()]
    );
    // Missing files and a missing path are clear 400s.
    call(&server, "GET", "/v1/tasks/files/files?path=nope", &[], None)
        .await
        .assert_error(400, "invalid_input");
    call(&server, "GET", "/v1/tasks/files/files", &[], None)
        .await
        .assert_error(400, "invalid_input");
    stop(server).await;
}

/// A tar stream with one entry whose name is written raw (the tar crate's
/// builder refuses `..`).
fn tar_with_raw_name(name: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"evil"[..]).expect("append");
    builder.into_inner().expect("tar")
}

#[actix_rt::test]
async fn escapes_out_of_the_task_are_refused_as_400() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let server = local_server(&root, |_| {}).await;
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"secret").expect("write");
    exec(
        &server,
        "esc",
        json!({"command": format!("ln -s {} out", outside.display())}),
    )
    .await;
    let put = |path: &'static str, tar: bool, body: Vec<u8>| {
        let server = &server;
        async move {
            let ct = if tar {
                "application/x-tar"
            } else {
                "application/octet-stream"
            };
            call(
                server,
                "PUT",
                &format!("/v1/tasks/esc/files?path={path}"),
                &[("content-type", ct)],
                Some(Bytes::from(body)),
            )
            .await
        }
    };
    put("../../escaped", false, b"x".to_vec())
        .await
        .assert_error(400, "invalid_input");
    put("out/planted", false, b"x".to_vec())
        .await
        .assert_error(400, "invalid_input");
    put("unpacked", true, tar_with_raw_name(b"../escaped-by-tar"))
        .await
        .assert_error(400, "invalid_input");
    put("unpacked", true, tar_with_raw_name(b"/abs-by-tar"))
        .await
        .assert_error(400, "invalid_input");
    put("out", true, tar_of(&[("planted", b"x", 0o644)]))
        .await
        .assert_error(400, "invalid_input");
    for path in ["out/secret", "../../outside/secret", "out", "/etc/hostname"] {
        call(
            &server,
            "GET",
            &format!("/v1/tasks/esc/files?path={path}"),
            &[],
            None,
        )
        .await
        .assert_error(400, "invalid_input");
    }
    assert_eq!(
        std::fs::read_dir(&outside).expect("ls").count(),
        1,
        "nothing was written outside"
    );
    assert!(!tmp.path().join("escaped").exists());
    assert!(!tmp.path().join("escaped-by-tar").exists());
    stop(server).await;
}

#[actix_rt::test]
async fn uploads_over_the_servers_limit_are_413() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = local_server(&tmp.path().join("root"), |c| c.max_upload_bytes = 4096).await;
    let big = every_byte(20);
    for ct in ["application/octet-stream", "application/x-tar"] {
        call(
            &server,
            "PUT",
            "/v1/tasks/lim/files?path=big",
            &[("content-type", ct)],
            Some(Bytes::from(big.clone())),
        )
        .await
        .assert_error(413, "payload_too_large");
    }
    // Streamed without a length: stopped while it arrives.
    let tree = tar_of(&[("big.bin", &big, 0o644)]);
    let chunks: Vec<Result<Bytes, std::io::Error>> = tree
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut resp = client()
        .put(format!("{}/v1/tasks/lim/files?path=streamed", server.url()))
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .content_type("application/x-tar")
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .expect("send");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(resp.status().as_u16(), 413, "{body}");
    assert_eq!(body["error_kind"], "payload_too_large");
    // Under the limit it goes through.
    let ok = call(
        &server,
        "PUT",
        "/v1/tasks/lim/files?path=small",
        &[],
        Some(Bytes::from(every_byte(2))),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.json());
    stop(server).await;
}

/// Every route this module adds, with a method and a body.
const NEW_ROUTES: [(&str, &str); 7] = [
    ("PUT", "/v1/tasks/t"),
    ("GET", "/v1/tasks/t/jobs"),
    ("GET", "/v1/tasks/t/jobs/1"),
    ("GET", "/v1/tasks/t/jobs/1/output"),
    ("POST", "/v1/tasks/t/jobs/1/kill"),
    ("PUT", "/v1/tasks/t/files?path=a"),
    ("GET", "/v1/tasks/t/files?path=a"),
];

#[actix_rt::test]
async fn every_new_route_needs_the_token_and_is_in_the_openapi_document() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = local_server(&tmp.path().join("root"), |_| {}).await;
    for (method, path) in NEW_ROUTES {
        for token in [None, Some("wrong-token-0123456789abcdef")] {
            let a = call_as(&server, token, method, path, &[], json_body(json!({}))).await;
            a.assert_error(401, "unauthorized");
        }
    }
    assert!(server.runtime().tasks().await.expect("tasks").is_empty());
    let doc = call(&server, "GET", "/v1/openapi.json", &[], None)
        .await
        .json();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/tasks/{task_id}", "put"),
        ("/v1/tasks/{task_id}/jobs", "get"),
        ("/v1/tasks/{task_id}/jobs/{job_id}", "get"),
        ("/v1/tasks/{task_id}/jobs/{job_id}/output", "get"),
        ("/v1/tasks/{task_id}/jobs/{job_id}/kill", "post"),
        ("/v1/tasks/{task_id}/files", "put"),
        ("/v1/tasks/{task_id}/files", "get"),
    ] {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the document"))[method];
        assert!(op.is_object(), "{method} {path}");
        assert_eq!(op["security"][0]["bearer"], json!([]), "{method} {path}");
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "OpenedTask",
        "JobList",
        "JobRecord",
        "JobOutput",
        "Uploaded",
    ] {
        assert!(schemas.contains_key(name), "{name} is not in the document");
    }
    stop(server).await;
}

async fn hecate_cp(server: &ApiServer, src: &str, dest: &str) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hecate"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HECATE_API_TOKEN", TOKEN)
        .args(["cp", "--url", &server.url(), src, dest])
        .output()
        .await
        .expect("run hecate cp");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains(TOKEN), "the token was printed: {stderr}");
    (out.status.success(), stderr)
}

#[actix_rt::test]
async fn hecate_cp_copies_files_and_directories_both_ways() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = local_server(&tmp.path().join("root"), |_| {}).await;
    let local = tmp.path().join("local");
    std::fs::create_dir_all(local.join("proj/src")).expect("mkdir");
    let data = every_byte(50);
    std::fs::write(local.join("proj/src/all.bin"), &data).expect("write");
    std::fs::write(local.join("proj/run.sh"), b"#!/bin/sh\necho cp-ran\n").expect("write");
    std::fs::set_permissions(
        local.join("proj/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let s = |p: &Path| p.display().to_string();
    // A directory up, into `dest/` under its own name (the trailing `/`).
    let (ok, err) = hecate_cp(&server, &s(&local.join("proj")), "cp-task:dest/").await;
    assert!(ok, "{err}");
    // A file up, under a new name; its mode goes with it.
    let (ok, err) = hecate_cp(&server, &s(&local.join("proj/run.sh")), "cp-task:go.sh").await;
    assert!(ok, "{err}");
    let out = exec(
        &server,
        "cp-task",
        json!({"command": "dest/proj/run.sh && ./go.sh && stat -c %a go.sh && \
               od -An -tx1 dest/proj/src/all.bin | head -1"}),
    )
    .await;
    let text = out["output"].as_str().expect("output");
    assert!(text.starts_with("cp-ran\ncp-ran\n755\n"), "{out}");
    assert!(
        text.ends_with(" 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"),
        "{out}"
    );
    // The directory down, into a new local directory.
    let back = tmp.path().join("back");
    let (ok, err) = hecate_cp(&server, "cp-task:dest/proj", &s(&back)).await;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(back.join("src/all.bin")).expect("read"), data);
    let mode = std::fs::metadata(back.join("run.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Into an existing directory it lands under its own name.
    let (ok, err) = hecate_cp(&server, "cp-task:dest/proj", &s(&back)).await;
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(back.join("proj/src/all.bin")).expect("read"),
        data
    );
    // A file down: to a name, and into a directory.
    let (ok, err) = hecate_cp(
        &server,
        "cp-task:dest/proj/src/all.bin",
        &s(&tmp.path().join("one.bin")),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("one.bin")).expect("read"),
        data
    );
    let (ok, err) = hecate_cp(&server, "cp-task:dest/proj/src/all.bin", &s(&back)).await;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(back.join("all.bin")).expect("read"), data);
    // Failures say why and exit non-zero.
    let (ok, err) = hecate_cp(&server, "cp-task:../escape", &s(&back)).await;
    assert!(!ok && err.contains("invalid_input"), "{err}");
    let (ok, err) = hecate_cp(&server, &s(&back), &s(&local)).await;
    assert!(!ok && err.contains("TASK:PATH"), "{err}");
    stop(server).await;
}
