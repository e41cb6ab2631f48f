//! `hecate serve` against the in-process call, on the no-op backend
//! (`hecate::bench::NoopProvider`: instances start at once and answer every
//! command at once), so the figures are the HTTP layer's own cost:
//!
//! - `latency`: one warm task, calls one after another. `in_process` is
//!   `tool::terminal` on the runtime handle (what the server's handler
//!   calls); `http` is the same call as `POST /v1/tasks/t/exec` over one
//!   keep-alive connection (awc), the result JSON read whole. Median per
//!   call, and the difference.
//! - `throughput`: 64 keep-alive clients (each its own connection, spread
//!   over 2 client threads in this process) sending execs to 64 tasks for
//!   a fixed time; requests per second. The clients share the machine's
//!   cores with the server and the runtime.
//!
//! - `sse_first_chunk`: on the local backend (real commands), a command
//!   that prints `$EPOCHREALTIME` (a bash builtin: the time it writes) and
//!   then sleeps; the client takes the time the first `stdout` event
//!   arrives. Median of the differences over the calls.
//!
//! Each figure is taken 3 times; the output gives min / median / max.
//! `CI=true` shrinks the runs (the build is what CI checks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hecate::bench::NoopProvider;
use hecate::server::{ApiServer, ApiToken, ServerConfig};
use hecate::tool::{self, ToolArgs};
use hecate::{Config, Placement, Runtime};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(label: &str, unit: &str, runs: &[f64]) {
    let mut v = runs.to_vec();
    v.sort_by(f64::total_cmp);
    println!(
        "{label}: min {:.1} / median {:.1} / max {:.1} {unit}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    );
}

async fn http_exec(client: &awc::Client, url: &str, body: &'static str) {
    let mut resp = client
        .post(url)
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .expect("answered");
    let body = resp.body().await.expect("body");
    assert!(resp.status().is_success(), "{body:?}");
    std::hint::black_box(body);
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// Median µs per call: in process, over HTTP.
async fn latency(rt: &Runtime, server: &ApiServer, calls: usize) -> (f64, f64) {
    let url = format!("{}/v1/tasks/t/exec", server.url());
    let client = client();
    let mut inproc = Vec::with_capacity(calls);
    let mut http = Vec::with_capacity(calls);
    // Interleaved, so that drift in the machine's load hits both alike.
    for _ in 0..calls {
        let mut args = ToolArgs::new("true");
        args.task_id = Some("t".into());
        let t = Instant::now();
        let result = tool::terminal(rt, args).await;
        inproc.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(!result.is_error(), "{result:?}");
        let t = Instant::now();
        http_exec(&client, &url, r#"{"command":"true"}"#).await;
        http.push(t.elapsed().as_secs_f64() * 1e6);
    }
    (median(inproc), median(http))
}

/// Requests per second from `clients` keep-alive clients over `threads`
/// client threads for `span`.
fn throughput(base: &str, clients: usize, threads: usize, span: Duration) -> f64 {
    let start = Instant::now() + Duration::from_millis(200);
    let handles: Vec<_> = (0..threads)
        .map(|th| {
            let base = base.to_string();
            std::thread::spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let per = clients / threads;
                    let loops = (0..per).map(|c| {
                        let url = format!("{base}/v1/tasks/c{th}-{c}/exec");
                        async move {
                            let client = client();
                            http_exec(&client, &url, r#"{"command":"true"}"#).await;
                            while Instant::now() < start {
                                actix_rt::time::sleep(Duration::from_millis(1)).await;
                            }
                            let mut n = 0u64;
                            while start.elapsed() < span {
                                http_exec(&client, &url, r#"{"command":"true"}"#).await;
                                n += 1;
                            }
                            n
                        }
                    });
                    futures_util::future::join_all(loops)
                        .await
                        .iter()
                        .sum::<u64>()
                })
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("client")).sum();
    total as f64 / span.as_secs_f64()
}

/// Median ms from a command writing its first line to the client reading
/// it as a server-sent event, on the local backend.
async fn sse_first_chunk(calls: usize) -> Vec<f64> {
    use futures_util::StreamExt as _;
    let mut config = Config::default()
        .with_backend(hecate::BackendKind::Local)
        .with_local_root(
            std::env::temp_dir().join(format!("hecate-bench-sse-{}", std::process::id())),
        );
    // The bench binary cannot be a launcher; the `hecate` binary can.
    config.launcher.program = option_env!("CARGO_BIN_EXE_hecate").map(Into::into);
    let rt = Runtime::start(config).expect("local runtime");
    let server = ApiServer::start(
        rt.clone(),
        ServerConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            token: Some(ApiToken::new(TOKEN).expect("token")),
            ..ServerConfig::default()
        },
    )
    .await
    .expect("serve");
    let url = format!("{}/v1/tasks/sse/exec", server.url());
    let client = client();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let mut lags = Vec::new();
        for _ in 0..calls {
            let mut resp = client
                .post(&url)
                .insert_header(("Authorization", format!("Bearer {TOKEN}")))
                .insert_header(("Accept", "text/event-stream"))
                .send_body(r#"{"command":"echo $EPOCHREALTIME; sleep 0.05"}"#)
                .await
                .expect("answered");
            let mut buf = String::new();
            let mut lag = None;
            while let Some(bytes) = resp.next().await {
                let bytes = bytes.expect("bytes");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs_f64();
                buf.push_str(&String::from_utf8_lossy(&bytes));
                if lag.is_none() {
                    if let Some(at) = buf.find("event: stdout") {
                        let data = &buf[at..];
                        let text = data
                            .split("\"text\":\"")
                            .nth(1)
                            .and_then(|t| t.split('\\').next())
                            .and_then(|t| t.trim().parse::<f64>().ok());
                        if let Some(written) = text {
                            lag = Some((now - written) * 1e3);
                        }
                    }
                }
            }
            lags.push(lag.expect("a stdout event with the time"));
        }
        runs.push(median(lags));
    }
    server
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    runs
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let (calls, span) = if ci() {
        (200, Duration::from_millis(500))
    } else {
        (5_000, Duration::from_secs(5))
    };
    actix_rt::System::new().block_on(async move {
        let provider = Arc::new(NoopProvider::new());
        let rt = Runtime::start_with(Config::default(), provider.clone(), Placement::Workers)
            .expect("runtime");
        let config = ServerConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            token: Some(ApiToken::new(TOKEN).expect("token")),
            ..ServerConfig::default()
        };
        let workers = config.workers;
        let server = ApiServer::start(rt.clone(), config).await.expect("serve");
        println!(
            "hecate serve on the no-op backend: {workers} HTTP workers, {} runtime workers",
            rt.config().workers
        );
        let (mut inproc, mut http, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let (i, h) = latency(&rt, &server, calls).await;
            inproc.push(i);
            http.push(h);
            added.push(h - i);
        }
        spread("latency in_process (median µs per call)", "µs", &inproc);
        spread("latency http (median µs per call)", "µs", &http);
        spread("latency added by http (median µs)", "µs", &added);
        let base = server.url();
        let mut rps = Vec::new();
        for _ in 0..3 {
            let b = base.clone();
            let r = actix_rt::task::spawn_blocking(move || throughput(&b, 64, 2, span))
                .await
                .expect("throughput");
            rps.push(r);
        }
        spread("throughput, 64 keep-alive clients", "req/s", &rps);
        let report = server
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
        assert!(report.is_clean());
        assert_eq!(provider.live(), 0);
        let sse = sse_first_chunk(if ci() { 5 } else { 50 }).await;
        spread(
            "sse first chunk after the command wrote it (median ms)",
            "ms",
            &sse,
        );
    });
}
