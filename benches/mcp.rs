//! `hecate mcp`'s protocol cost per `terminal` call, on the no-op backend
//! (`hecate::bench::NoopProvider`: instances start at once and answer every
//! command at once), against the in-process call.
//!
//! - `in_process`: `tool::terminal` on the runtime handle, one warm task,
//!   calls one after another (what the MCP server's handler calls).
//! - `mcp`: the same call as a JSON-RPC `tools/call` over two OS pipes to
//!   an [`McpServer`] pinned to that task, served the way `hecate mcp`
//!   serves stdio (tokio's blocking file I/O on the pipe ends, one JSON
//!   message a line); the client is a plain blocking thread, as a client
//!   process would be: it writes the request line and reads the answer
//!   line. Time from writing the request to reading the whole answer.
//!
//! Each run is `calls` in-process calls and then `calls` MCP calls, after
//! a warm-up; median per call and the difference. 3 runs; the output
//! gives min / median / max. `CI=true` shrinks the runs (the build is what
//! CI checks).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use hecate::bench::NoopProvider;
use hecate::mcp::{McpServer, TaskBinding};
use hecate::tool::{self, ToolArgs};
use hecate::{Config, Placement, Runtime};

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

/// The client's ends of the two pipes.
struct Client {
    to_server: File,
    from_server: BufReader<File>,
    next_id: u64,
    line: String,
}

impl Client {
    /// Sends one message and, for a request, reads lines up to its answer.
    fn send(&mut self, msg: &str) {
        self.to_server
            .write_all(msg.as_bytes())
            .and_then(|()| self.to_server.write_all(b"\n"))
            .and_then(|()| self.to_server.flush())
            .expect("write to the server");
    }

    fn answer(&mut self, id: u64) -> serde_json::Value {
        loop {
            self.line.clear();
            let n = self
                .from_server
                .read_line(&mut self.line)
                .expect("read from the server");
            assert!(n > 0, "the server closed its output");
            let msg: serde_json::Value = serde_json::from_str(&self.line).expect("JSON-RPC line");
            if msg["id"] == serde_json::json!(id) {
                return msg;
            }
        }
    }

    fn initialize(&mut self) {
        self.send(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#,
        );
        let init = self.answer(0);
        assert_eq!(init["result"]["serverInfo"]["name"], "hecate", "{init}");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }

    /// One `terminal` call; µs from writing the request to reading the
    /// answer.
    fn terminal(&mut self) -> f64 {
        self.next_id += 1;
        let id = self.next_id;
        let request = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"terminal","arguments":{{"command":"true"}}}}}}"#
        );
        let t = Instant::now();
        self.send(&request);
        let answer = self.answer(id);
        let took = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(answer["result"]["isError"], false, "{answer}");
        took
    }

    /// `calls` calls; the median µs.
    fn median_of(&mut self, calls: usize) -> f64 {
        median((0..calls).map(|_| self.terminal()).collect())
    }
}

/// Median µs per in-process call.
async fn in_process(rt: &Runtime, calls: usize) -> f64 {
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let mut args = ToolArgs::new("true");
        args.task_id = Some("t".into());
        let t = Instant::now();
        let result = tool::terminal(rt, args).await;
        took.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(!result.is_error(), "{result:?}");
    }
    median(took)
}

/// A pipe's end as tokio's file (blocking I/O on tokio's pool, as
/// `tokio::io::stdin`/`stdout`, which `hecate mcp` serves, do).
fn tokio_file(fd: impl Into<OwnedFd>) -> tokio::fs::File {
    tokio::fs::File::from_std(File::from(fd.into()))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let calls = if ci() { 200 } else { 5_000 };
    actix_rt::System::new().block_on(async move {
        let provider = Arc::new(NoopProvider::new());
        let rt = Runtime::start_with(Config::default(), provider.clone(), Placement::Workers)
            .expect("runtime");
        let server =
            McpServer::new(rt.clone(), TaskBinding::Pinned("t".into())).expect("MCP server");
        let (server_in, client_out) = rustix::pipe::pipe().expect("pipe");
        let (client_in, server_out) = rustix::pipe::pipe().expect("pipe");
        let serving =
            actix_rt::spawn(server.serve_on((tokio_file(server_in), tokio_file(server_out))));
        let mut client = Client {
            to_server: File::from(client_out),
            from_server: BufReader::new(File::from(client_in)),
            next_id: 0,
            line: String::new(),
        };
        println!(
            "hecate mcp on the no-op backend over pipes: {} runtime workers, {calls} calls a run",
            rt.config().workers
        );
        // Warm-up: the task's instance starts, both paths run once.
        in_process(&rt, calls / 10).await;
        let mut client = actix_rt::task::spawn_blocking(move || {
            client.initialize();
            client.median_of(calls / 10);
            client
        })
        .await
        .expect("client");
        let (mut inproc, mut mcp, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let i = in_process(&rt, calls).await;
            let (c, m) = actix_rt::task::spawn_blocking(move || {
                let m = client.median_of(calls);
                (client, m)
            })
            .await
            .expect("client");
            client = c;
            inproc.push(i);
            mcp.push(m);
            added.push(m - i);
        }
        spread("latency in_process (median µs per call)", "µs", &inproc);
        spread("latency mcp over pipes (median µs per call)", "µs", &mcp);
        spread("latency added by mcp (median µs)", "µs", &added);
        // The client closes its end: the server's connection ends.
        drop(client);
        serving.await.expect("join").expect("served");
        let report = rt
            .shutdown(std::time::Duration::from_secs(10))
            .await
            .expect("shutdown");
        assert!(report.is_clean());
        assert_eq!(provider.live(), 0);
    });
}
