//! Streaming output (`Runtime::exec_stream`, `tool::terminal_stream`,
//! `hecate exec --stream`): on the local backend, the sandbox (where it
//! can be made), and the MorphCloud simulator in both event-stream forms
//! (`SseFormat::Json`, `SseFormat::Documented`).

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use hecate::provider::morph::MorphProvider;
use hecate::sim::SseFormat;
use hecate::{
    ApiKey, Chunk, Config, ExecOutcome, ExecRequest, OutputStream, StreamKind, StreamOptions,
};

use crate::helper::backends::{Backend, Kind};

/// What the streaming scenarios ask of a backend.
trait Streamed {
    async fn streamed(&self, task: &str, req: ExecRequest) -> (Vec<Chunk>, ExecOutcome);
}

impl Streamed for Backend {
    /// Runs `req` streamed, collecting every chunk, then the outcome.
    async fn streamed(&self, task: &str, req: ExecRequest) -> (Vec<Chunk>, ExecOutcome) {
        let (stream, result) = self.rt.exec_stream(task, req, StreamOptions::default());
        let chunks: Vec<Chunk> = stream.collect().await;
        let outcome = result.await.expect("the call is answered");
        (chunks, outcome)
    }
}

/// The simulator sending its events in `format`.
async fn sim(format: SseFormat, tweak: &dyn Fn(&mut Config)) -> Backend {
    let name = match format {
        SseFormat::Json => "sim-json",
        SseFormat::Documented => "sim-documented",
    };
    Backend::start_with(Kind::Sim, |s| s.sse_format = format, tweak)
        .await
        .expect("the simulator always starts")
        .named(name)
}

/// Every backend available here, configured by `tweak`.
async fn backends(tweak: impl Fn(&mut Config)) -> Vec<Backend> {
    let mut all = vec![Backend::local(&tweak).await];
    all.extend(Backend::sandbox(&tweak).await);
    all.push(sim(SseFormat::Json, &tweak).await);
    all.push(sim(SseFormat::Documented, &tweak).await);
    all
}

/// Checks that each stream's chunks start where the previous ended (no
/// byte missed) and returns the two streams' bytes.
fn contiguous(name: &str, chunks: &[Chunk]) -> (Vec<u8>, Vec<u8>) {
    let mut streams = (Vec::new(), Vec::new());
    for chunk in chunks {
        let into = match chunk.stream {
            StreamKind::Stdout => &mut streams.0,
            StreamKind::Stderr => &mut streams.1,
        };
        assert_eq!(chunk.missed, 0, "{name}: {chunk:?}");
        assert_eq!(
            chunk.offset,
            into.len() as u64,
            "{name}: offsets contiguous"
        );
        assert!(!chunk.data.is_empty(), "{name}: no empty chunk");
        into.extend_from_slice(&chunk.data);
    }
    streams
}

#[actix_rt::test]
async fn chunks_arrive_in_order_with_contiguous_offsets_on_every_backend() {
    for b in backends(|_| {}).await {
        let (chunks, outcome) = b
            .streamed(
                "t",
                ExecRequest::new(
                    "for i in $(seq 1 300); do echo \"line $i é\"; done; echo oops >&2; exit 3",
                ),
            )
            .await;
        let (out, err) = contiguous(b.name, &chunks);
        let want: String = (1..=300).map(|i| format!("line {i} é\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out), want, "{}", b.name);
        assert_eq!(err, b"oops\n", "{}", b.name);
        assert_eq!(outcome.exit_code, 3, "{}", b.name);
        assert_eq!(outcome.stdout.to_text(), want, "{}", b.name);
        // The persistent shell's wrapping still works under streaming: the
        // next call starts where this one left off, and nothing of the
        // wrapper shows in the stream.
        let (chunks, _) = b
            .streamed(
                "t",
                ExecRequest::new("mkdir -p sub && cd sub && export S=kept"),
            )
            .await;
        assert!(chunks.is_empty(), "{}: {chunks:?}", b.name);
        let (chunks, outcome) = b
            .streamed("t", ExecRequest::new("echo \"$S ${PWD##*/}\""))
            .await;
        let (out, _) = contiguous(b.name, &chunks);
        assert_eq!(out, b"kept sub\n", "{}: {outcome:?}", b.name);
        b.stop().await;
    }
}

#[actix_rt::test]
async fn the_streamed_result_equals_the_plain_result_head_and_tail_included() {
    // 2 KiB of capture per stream against ~39 KB of stdout: the middle is
    // dropped from the result, never from the stream.
    let command = "seq 1 8000; seq 1 300 >&2";
    for b in backends(|c| c.capture_bytes = 2048).await {
        let plain =
            b.rt.exec("t", ExecRequest::new(command))
                .await
                .expect("ran");
        let (chunks, streamed) = b.streamed("t", ExecRequest::new(command)).await;
        assert!(plain.stdout.is_truncated(), "{}", b.name);
        assert_eq!(streamed.stdout, plain.stdout, "{}", b.name);
        assert_eq!(streamed.stderr, plain.stderr, "{}", b.name);
        assert_eq!(
            (streamed.exit_code, streamed.timed_out),
            (plain.exit_code, plain.timed_out),
            "{}",
            b.name
        );
        let (out, err) = contiguous(b.name, &chunks);
        let want: String = (1..=8000).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out), want, "{}", b.name);
        assert_eq!(
            err.len(),
            (1..=300)
                .map(|i: i32| i.to_string().len() + 1)
                .sum::<usize>()
        );
        // The tool's result is the same text too.
        let args = hecate::tool::ToolArgs::from_json(&format!(
            r#"{{"command": {}, "task_id": "t"}}"#,
            serde_json::to_string(command).expect("json")
        ))
        .expect("valid args");
        let mut seen = 0;
        let tool_streamed =
            hecate::tool::terminal_stream(&b.rt, args.clone(), StreamOptions::default(), |chunk| {
                seen += chunk.data.len()
            })
            .await;
        let tool_plain = hecate::tool::terminal(&b.rt, args).await;
        assert_eq!(seen, out.len() + err.len(), "{}", b.name);
        assert_eq!(tool_streamed.output, tool_plain.output, "{}", b.name);
        b.stop().await;
    }
}

#[actix_rt::test]
async fn streaming_under_timeout_gives_chunks_then_a_timed_out_result() {
    for b in backends(|_| {}).await {
        let req =
            ExecRequest::new("echo first; sleep 30; echo never").timeout(Duration::from_secs(3));
        let (mut stream, result) = b.rt.exec_stream("t", req, StreamOptions::default());
        let first = stream.next().await.expect("a chunk before the end");
        assert_eq!(&first.data[..], b"first\n", "{}", b.name);
        // The command is still running: its result is not there yet.
        let mut result = Box::pin(result);
        assert!((&mut result).now_or_never().is_none(), "{}", b.name);
        // Nothing more on stdout (bash may report the kill on stderr).
        let rest: Vec<Chunk> = stream.collect().await;
        assert!(
            rest.iter().all(|c| c.stream == StreamKind::Stderr),
            "{}: {rest:?}",
            b.name
        );
        let outcome = result.await.expect("answered");
        assert!(outcome.timed_out, "{}: {outcome:?}", b.name);
        assert_eq!(outcome.exit_code, 124, "{}", b.name);
        assert_eq!(outcome.stdout.to_text(), "first\n", "{}", b.name);
        b.stop().await;
    }
}

#[actix_rt::test]
async fn interleaved_stdout_and_stderr_keep_each_streams_order() {
    let command = "for i in $(seq 1 8); do echo out$i; echo err$i >&2; sleep 0.05; done";
    for b in backends(|_| {}).await {
        let (chunks, outcome) = b.streamed("t", ExecRequest::new(command)).await;
        let (out, err) = contiguous(b.name, &chunks);
        let want = |p: &str| -> String { (1..=8).map(|i| format!("{p}{i}\n")).collect() };
        assert_eq!(String::from_utf8_lossy(&out), want("out"), "{}", b.name);
        assert_eq!(String::from_utf8_lossy(&err), want("err"), "{}", b.name);
        assert_eq!(outcome.exit_code, 0, "{}", b.name);
        // 50 ms apart, the two streams arrive interleaved, not one after
        // the other at the end.
        let first_err = chunks
            .iter()
            .position(|c| c.stream == StreamKind::Stderr)
            .expect("stderr chunks");
        let last_out = chunks
            .iter()
            .rposition(|c| c.stream == StreamKind::Stdout)
            .expect("stdout chunks");
        assert!(first_err < last_out, "{}: {chunks:?}", b.name);
        b.stop().await;
    }
}

#[actix_rt::test]
async fn a_slow_reader_costs_a_bounded_buffer_and_the_result_stays_whole() {
    const TOTAL: u64 = 40_000_000;
    let command = format!("head -c {TOTAL} /dev/zero | tr '\\0' a; echo done >&2");
    let options = StreamOptions {
        buffer_bytes: 64 * 1024,
    };
    let mut all = vec![Backend::local(&|_| {}).await];
    all.extend(Backend::sandbox(&|_| {}).await);
    for b in all {
        let plain =
            b.rt.exec("t", ExecRequest::new(command.as_str()))
                .await
                .expect("ran");
        let (mut stream, result) =
            b.rt.exec_stream("t", ExecRequest::new(command.as_str()), options);
        let (mut got, mut missed, mut end) = (0u64, 0u64, 0u64);
        let mut reads = 0;
        while let Some(chunk) = stream.next().await {
            if chunk.stream == StreamKind::Stdout {
                assert_eq!(chunk.offset, end + chunk.missed, "{}", b.name);
                got += chunk.data.len() as u64;
                missed += chunk.missed;
                end = chunk.end();
            }
            reads += 1;
            if reads < 20 {
                // A reader far slower than the command.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(stream.peak_buffered() <= options.buffer_bytes, "{}", b.name);
        assert_eq!(end, TOTAL, "{}: the newest bytes always arrive", b.name);
        assert_eq!(got + missed, TOTAL, "{}", b.name);
        assert!(missed > 0, "{}: the slow reader missed bytes", b.name);
        assert_eq!(
            stream.missed_bytes(StreamKind::Stdout),
            missed,
            "{}",
            b.name
        );
        let outcome = result.await.expect("answered");
        assert_eq!(outcome.stdout, plain.stdout, "{}", b.name);
        assert_eq!(outcome.stdout.dropped_bytes, plain.stdout.dropped_bytes);
        assert_eq!(outcome.stderr.to_text(), "done\n", "{}", b.name);
        b.stop().await;
    }
}

#[actix_rt::test]
async fn a_dropped_reader_neither_kills_nor_hangs_the_task() {
    let command = "for i in $(seq 1 40); do echo $i; sleep 0.01; done; echo finished > marker";
    for b in backends(|_| {}).await {
        // The reader goes away after one chunk; the result is still awaited.
        let (mut stream, result) =
            b.rt.exec_stream("t", ExecRequest::new(command), StreamOptions::default());
        stream.next().await.expect("a chunk");
        drop(stream);
        let outcome = result.await.expect("answered");
        assert_eq!(outcome.exit_code, 0, "{}", b.name);
        assert!(outcome.stdout.to_text().ends_with("40\n"), "{}", b.name);
        // Both ends dropped at once: the command still runs to its end,
        // and the task's next command runs after it.
        let (stream, result) = b.rt.exec_stream(
            "t",
            ExecRequest::new(format!("rm -f marker; {command}")),
            StreamOptions::default(),
        );
        drop((stream, result));
        let next = tokio::time::timeout(
            Duration::from_secs(30),
            b.rt.exec("t", ExecRequest::new("cat marker")),
        )
        .await
        .expect("the queue moves on")
        .expect("ran");
        assert_eq!(next.stdout.to_text(), "finished\n", "{}", b.name);
        b.stop().await;
    }
}

#[actix_rt::test]
async fn a_refused_request_ends_the_stream_empty_with_the_error() {
    let b = Backend::local(&|_| {}).await;
    let (stream, result) =
        b.rt.exec_stream("t", ExecRequest::new("  "), StreamOptions::default());
    let stream: OutputStream = stream;
    assert!(stream.collect::<Vec<_>>().await.is_empty());
    let err = result.await.expect_err("refused");
    assert_eq!(err.kind(), hecate::ErrorKind::InvalidInput);
    b.stop().await;
}

/// A MorphCloud stand-in whose streaming exec answers with `body`.
fn sse_server(body: &'static str) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{web, HttpResponse};
    crate::helper::server::spawn_server(move |cfg| {
        let instance = || {
            HttpResponse::Ok().json(serde_json::json!({
                "id": "morphvm_sse", "status": "ready", "created": 1, "metadata": {}
            }))
        };
        cfg.route(
            "/api/instance",
            web::post().to(move || async move { instance() }),
        )
        .route(
            "/api/instance/{id}",
            web::get().to(move || async move { instance() }),
        )
        .route(
            "/api/instance/{id}",
            web::delete().to(|| async { HttpResponse::Ok().json(serde_json::json!({})) }),
        )
        .route(
            "/api/instance/{id}/exec/sse",
            web::post().to(move || async move {
                HttpResponse::Ok()
                    .content_type("text/event-stream")
                    .body(body)
            }),
        );
    })
}

async fn stream_from(
    body: &'static str,
    key: &str,
) -> (Vec<Chunk>, hecate::Result<hecate::ExecOutput>) {
    use hecate::Provider;
    let (url, handle) = sse_server(body);
    let mut config = Config::default().with_morph(url, ApiKey::new(key));
    config.morph.poll_interval = Duration::from_millis(5);
    let provider = MorphProvider::new(&config).expect("valid");
    let instance = provider
        .start(hecate::StartSpec {
            task_id: "t".into(),
            ttl: None,
            metadata: Default::default(),
            create_slot: hecate::StartSlot::detached(),
            task_spec: None,
        })
        .await
        .expect("started");
    let (sink, stream) = hecate::stream::channel(StreamOptions::default());
    let spec = hecate::ExecSpec {
        command: "anything".into(),
        background: false,
        timeout: Duration::from_secs(10),
        capture_bytes: 1 << 20,
        shell: None,
    };
    let result = instance.exec_streaming(spec, sink).await;
    let chunks = stream.collect().await;
    instance.stop().await.expect("stopped");
    handle.stop(true).await;
    (chunks, result)
}

#[actix_rt::test]
async fn a_morph_event_stream_is_scrubbed_of_the_key_even_split_across_events() {
    let key = "sk-live-0123456789";
    let body = "data: {\"type\": \"stdout\", \"content\": \"a sk-live-01\"}\n\n\
                event: stdout\ndata: 23456789 b\n\n\
                data: {\"type\": \"exit_code\", \"content\": 0}\n\ndata: [DONE]\n\n";
    let (chunks, result) = stream_from(body, key).await;
    let output = result.expect("ran");
    let (out, _) = contiguous("scrub", &chunks);
    assert_eq!(String::from_utf8_lossy(&out), "a [redacted] b");
    assert_eq!(output.stdout.to_text(), "a [redacted] b");
}

#[actix_rt::test]
async fn a_morph_event_stream_cut_before_the_exit_code_is_indeterminate() {
    let (chunks, result) = stream_from(
        "data: {\"type\": \"stdout\", \"content\": \"partial\"}\n\n",
        "k-1",
    )
    .await;
    let err = result.expect_err("no exit code");
    assert_eq!(err.kind(), hecate::ErrorKind::Indeterminate, "{err}");
    assert!(
        err.message().contains("before the command's exit code"),
        "{err}"
    );
    // What did arrive was streamed.
    assert_eq!(contiguous("cut", &chunks).0, b"partial");
    // `[DONE]` without an exit code is exit 0, as the official SDK reads it.
    let (_, result) = stream_from("data: [DONE]\n\n", "k-1").await;
    assert_eq!(result.expect("done").exit_code, 0);
}

#[cfg(feature = "cli")]
#[test]
fn hecate_exec_stream_prints_output_then_the_json_result() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hecate"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HECATE_LOCAL_ROOT", root.path())
        .env("HECATE_BACKEND", "local")
        .args([
            "exec",
            "--stream",
            "--",
            "printf 'a\\nb'; echo e >&2; exit 4",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (printed, json) = stdout.split_at(stdout.find("{\"").expect("a JSON result"));
    assert_eq!(
        printed, "a\nb\n",
        "the output, its last line closed: {stdout}"
    );
    let result: serde_json::Value = serde_json::from_str(json.trim()).expect("JSON");
    assert_eq!(result["exit_code"], 4);
    assert_eq!(result["output"], "a\nb\ne");
    assert!(String::from_utf8_lossy(&out.stderr).contains("e\n"));
}
