//! The batch runner on the scripted backend: per-task ordering, bad lines,
//! duplicate ids, the concurrency cap, eviction, summary counts and output
//! failures.

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use hecate::batch::{self, parse_tasks, run_tasks, BatchArgs, ProgressMode};
use hecate::ErrorKind;
use serde_json::Value;
use tokio::time::Instant;

use crate::helper::{scripted_runtime, test_config};

const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn lines(sink: &[u8]) -> Vec<Value> {
    std::str::from_utf8(sink)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn task_line<'a>(out: &'a [Value], task_id: &str) -> &'a Value {
    out.iter()
        .find(|v| v["task_id"] == task_id)
        .unwrap_or_else(|| panic!("no line for {task_id}"))
}

fn outputs(line: &Value) -> Vec<String> {
    line["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["output"].as_str().expect("output").to_string())
        .collect()
}

#[actix_rt::test]
async fn each_task_runs_its_commands_in_order_and_is_evicted() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let input = r#"{"task_id": "a", "commands": ["sleep:300", "echo:a2", "exit:2", "echo:a4"]}
{"task_id": "b", "commands": ["echo:b1", {"command": "sleep:100"}, "echo:b3"]}
{"task_id": "c", "commands": ["echo:c1"]}
"#;
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 4, &mut sink, ProgressMode::Quiet).await;
    let out = lines(&sink);
    assert_eq!(out.len(), 3);

    let a = task_line(&out, "a");
    assert_eq!(outputs(a), ["slept", "a2", "", "a4"]);
    let exits: Vec<i64> = a["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["exit_code"].as_i64().expect("exit code"))
        .collect();
    assert_eq!(exits, [0, 0, 2, 0]);
    assert_eq!(a["ok"], true, "a non-zero exit is not an infra error");
    assert!(a["duration_ms"].as_u64().expect("duration") >= 300);
    assert_eq!(outputs(task_line(&out, "b")), ["b1", "slept", "b3"]);
    assert_eq!(outputs(task_line(&out, "c")), ["c1"]);

    // Completion order: c (instant), then b (100 ms), then a (300 ms).
    let order: Vec<&str> = out
        .iter()
        .map(|v| v["task_id"].as_str().expect("id"))
        .collect();
    assert_eq!(order, ["c", "b", "a"]);

    let ran_a: Vec<String> = journal
        .ran()
        .into_iter()
        .filter(|(t, _)| t == "a")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(ran_a, ["sleep:300", "echo:a2", "exit:2", "echo:a4"]);
    assert_eq!(journal.starts(), 3);
    assert_eq!(
        journal.stops(),
        3,
        "every task is evicted after its last command"
    );
    assert_eq!(journal.live(), 0);
    assert!(rt.tasks().await.expect("tasks").is_empty());
    assert_eq!(summary.tasks, 3);
    assert_eq!(summary.commands, 8);
    assert_eq!(summary.failures, 1);
}

#[actix_rt::test]
async fn malformed_lines_are_named_and_the_rest_still_run() {
    let (rt, journal) = scripted_runtime(test_config());
    let input = "\
# a comment, then a blank line

{\"task_id\": \"good1\", \"commands\": [\"echo:1\"]}
{\"task_id\": \"broken\", \"commands\": [
{\"task_id\": \"nocmds\"}
{\"task_id\": \"inner\", \"commands\": [{\"command\": \"ls\", \"task_id\": \"x\"}]}
{\"task_id\": \"extra\", \"commands\": [\"ls\"], \"prio\": 1}
{\"task_id\": \"badtimeout\", \"commands\": [\"ls\", {\"command\": \"ls\", \"timeout\": \"soon\"}]}
{\"task_id\": \"empty\", \"commands\": []}
{\"task_id\": \"emptycmd\", \"commands\": [\"  \"]}
{\"task_id\": 5, \"commands\": [\"ls\"]}
[1, 2]
{\"task_id\": \"good2\", \"commands\": [\"echo:2\"]}
";
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 2, &mut sink, ProgressMode::Quiet).await;
    let out = lines(&sink);
    let errors: Vec<(u64, String)> = out
        .iter()
        .filter(|v| v.get("line").is_some())
        .map(|v| {
            (
                v["line"].as_u64().expect("line"),
                v["error"].as_str().expect("error").to_string(),
            )
        })
        .collect();
    let expected: &[(u64, &str)] = &[
        (4, "not valid JSON"),
        (5, "commands is missing"),
        (6, "commands[0]: task_id is not allowed in a command"),
        (7, "unknown field \"prio\""),
        (
            8,
            "commands[1]: timeout must be a number of seconds (like 30), not \"soon\"",
        ),
        (9, "commands is empty"),
        (10, "commands[0]: command is empty"),
        (11, "task_id must be a string"),
        (12, "a task must be a JSON object"),
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:?}");
    for ((line, error), (want_line, want)) in errors.iter().zip(expected) {
        assert_eq!(line, want_line);
        assert!(
            error.contains(want),
            "line {line}: {error:?} lacks {want:?}"
        );
    }
    assert_eq!(outputs(task_line(&out, "good1")), ["1"]);
    assert_eq!(outputs(task_line(&out, "good2")), ["2"]);
    assert_eq!(journal.ran().len(), 2, "nothing of a bad line runs");
    assert_eq!(summary.bad_lines, 9);
    assert_eq!(summary.tasks, 2);
    assert!(!summary.is_clean());
}

#[actix_rt::test]
async fn invalid_utf8_line_is_a_bad_line() {
    let (rt, _journal) = scripted_runtime(test_config());
    let mut input = b"{\"task_id\": \"a\", \"commands\": [\"echo:x\"]}\n".to_vec();
    input.extend_from_slice(b"{\"task_id\": \"\xff\"}\n");
    let tasks = parse_tasks(input.as_slice(), MAX_TIMEOUT).expect("read");
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 2, &mut sink, ProgressMode::Quiet).await;
    let out = lines(&sink);
    assert_eq!(out[0]["line"], 2);
    assert!(out[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("UTF-8")));
    assert_eq!(summary.tasks, 1);
}

#[actix_rt::test]
async fn duplicate_task_id_is_an_error_for_the_later_line() {
    let (rt, journal) = scripted_runtime(test_config());
    let input = r#"{"task_id": "t1", "commands": ["echo:first"]}
{"task_id": "t2", "commands": ["echo:other"]}
{"task_id": "t1", "commands": ["echo:second"]}
"#;
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 4, &mut sink, ProgressMode::Quiet).await;
    let out = lines(&sink);
    let dup = out
        .iter()
        .find(|v| v.get("line").is_some())
        .expect("an error line");
    assert_eq!(dup["line"], 3);
    let msg = dup["error"].as_str().expect("error");
    assert!(
        msg.contains("duplicate task_id \"t1\"") && msg.contains("line 1"),
        "{msg}"
    );
    assert_eq!(outputs(task_line(&out, "t1")), ["first"]);
    assert_eq!(journal.runs_of("echo:second"), 0);
    assert_eq!(summary.bad_lines, 1);
    assert_eq!(summary.tasks, 2);
}

#[actix_rt::test]
async fn concurrency_limit_is_respected() {
    tokio::time::pause();
    let (rt, journal) = scripted_runtime(test_config());
    let input: String = (0..10)
        .map(|i| format!("{{\"task_id\": \"t{i}\", \"commands\": [\"sleep:1000\"]}}\n"))
        .collect();
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");

    // Sample the live instances on the paused clock while the batch runs.
    let peak = Rc::new(Cell::new(0u64));
    let done = Rc::new(Cell::new(false));
    let sampler = {
        let (peak, done, journal) = (peak.clone(), done.clone(), journal.clone());
        tokio::task::spawn_local(async move {
            while !done.get() {
                peak.set(peak.get().max(journal.live()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let t0 = Instant::now();
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 3, &mut sink, ProgressMode::Quiet).await;
    let elapsed = t0.elapsed();
    done.set(true);
    sampler.await.expect("sampler");

    assert_eq!(summary.tasks, 10);
    assert_eq!(
        peak.get(),
        3,
        "at most (and at some point exactly) 3 tasks at once"
    );
    // Ten one-second tasks, three at a time: four rounds.
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_millis(4_500),
        "{elapsed:?}"
    );
    assert_eq!(journal.live(), 0);
}

#[actix_rt::test]
async fn infra_error_does_not_stop_later_commands() {
    let (rt, journal) = scripted_runtime(test_config());
    let input = r#"{"task_id": "t", "commands": ["fail:rejected:1:k", "echo:after"]}"#;
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 1, &mut sink, ProgressMode::Quiet).await;
    let out = lines(&sink);
    let t = task_line(&out, "t");
    assert_eq!(t["ok"], false);
    assert_eq!(t["results"][0]["error_kind"], "rejected");
    assert_eq!(t["results"][0]["exit_code"], -1);
    assert_eq!(t["results"][1]["output"], "after");
    assert_eq!(t["results"][1]["error"], Value::Null);
    assert_eq!(journal.runs_of("echo:after"), 1);
    assert_eq!(summary.infra_errors, 1);
    assert_eq!(summary.failures, 0);
    assert!(!summary.is_clean());
}

#[actix_rt::test]
async fn summary_counts_everything() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    let input = r#"{"task_id": "a", "commands": ["echo:ok", "exit:1", {"command": "sleep:10000", "timeout": 2}]}
{"task_id": "b", "commands": ["fail:rejected:1:b", "exit:7"]}
not json
{"task_id": "c", "commands": ["sleep:500", {"command": "sleep:100", "background": true}]}
"#;
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");
    let mut sink = Vec::new();
    let summary = run_tasks(&rt, tasks, 8, &mut sink, ProgressMode::Quiet).await;
    assert_eq!(summary.tasks, 3);
    assert_eq!(summary.commands, 7);
    assert_eq!(summary.failures, 3, "exit 1, the timeout (124) and exit 7");
    assert_eq!(summary.timeouts, 1);
    assert_eq!(summary.infra_errors, 1);
    assert_eq!(summary.bad_lines, 1);
    assert_eq!(summary.skipped, 0);
    assert!(summary.p50_ms.is_some() && summary.p99_ms >= summary.p50_ms);
    // The timed-out command took the longest: 2 s.
    assert!(
        summary.p99_ms.is_some_and(|p| (2_000..2_100).contains(&p)),
        "{summary:?}"
    );
    assert!(summary.wall_ms >= 2_000);

    let out = lines(&sink);
    let a = task_line(&out, "a");
    assert_eq!(a["results"][2]["timed_out"], true);
    assert!(a["results"][2]["output"]
        .as_str()
        .is_some_and(|o| o.contains("timed out after 2 s")));
    let json = serde_json::to_value(&summary).expect("serializes");
    for field in [
        "tasks",
        "commands",
        "failures",
        "infra_errors",
        "timeouts",
        "bad_lines",
        "wall_ms",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(json.get(field).is_some(), "summary lacks {field}");
    }
}

/// A sink that accepts `ok_writes` writes and then fails.
struct FailingSink {
    ok_writes: usize,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.ok_writes == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "reader went away",
            ));
        }
        self.ok_writes -= 1;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn write_failure_skips_tasks_not_yet_started() {
    let (rt, journal) = scripted_runtime(test_config());
    let input: String = (0..5)
        .map(|i| format!("{{\"task_id\": \"t{i}\", \"commands\": [\"echo:{i}\"]}}\n"))
        .collect();
    let tasks = parse_tasks(input.as_bytes(), MAX_TIMEOUT).expect("read");
    let summary = run_tasks(
        &rt,
        tasks,
        1,
        FailingSink { ok_writes: 0 },
        ProgressMode::Quiet,
    )
    .await;
    assert!(summary
        .output_error
        .as_deref()
        .is_some_and(|e| e.contains("reader went away")));
    assert_eq!(summary.tasks, 1);
    assert_eq!(summary.skipped, 4);
    assert_eq!(journal.ran().len(), 1);
    assert_eq!(journal.live(), 0, "the task that ran was still released");
}

#[actix_rt::test]
async fn run_reads_a_file_and_writes_the_out_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("tasks.jsonl");
    let output = dir.path().join("results.jsonl");
    std::fs::write(
        &input,
        "{\"task_id\": \"x\", \"commands\": [\"echo:from file\"]}\n\n# done\n",
    )
    .expect("write input");
    let (rt, _journal) = scripted_runtime(test_config());
    let args = BatchArgs {
        file: input.clone(),
        concurrency: 2,
        out: Some(output.clone()),
        no_progress: true,
        shutdown_grace_secs: 1,
        out_dir: None,
    };
    let summary = batch::run(&args, &rt).await.expect("batch");
    assert_eq!(summary.tasks, 1);
    assert!(summary.is_clean());
    let out = lines(&std::fs::read(&output).expect("results"));
    assert_eq!(outputs(task_line(&out, "x")), ["from file"]);

    let err = batch::run(
        &BatchArgs {
            concurrency: 0,
            ..args.clone()
        },
        &rt,
    )
    .await
    .expect_err("concurrency 0");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = batch::run(
        &BatchArgs {
            file: dir.path().join("missing.jsonl"),
            ..args
        },
        &rt,
    )
    .await
    .expect_err("missing file");
    assert!(err.message().contains("missing.jsonl"), "{err}");
}

#[test]
fn batch_args_parse_from_a_command_line() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        batch: BatchArgs,
    }
    let cli = Cli::try_parse_from(["hecate", "tasks.jsonl"]).expect("defaults");
    assert_eq!(cli.batch.concurrency, 16);
    assert_eq!(cli.batch.shutdown_grace_secs, 30);
    assert!(!cli.batch.no_progress && cli.batch.out.is_none());
    let cli = Cli::try_parse_from([
        "hecate",
        "t.jsonl",
        "--concurrency",
        "4",
        "--out",
        "r.jsonl",
        "--no-progress",
    ])
    .expect("flags");
    assert_eq!(cli.batch.concurrency, 4);
    assert_eq!(
        cli.batch.out.as_deref(),
        Some(std::path::Path::new("r.jsonl"))
    );
    assert!(cli.batch.no_progress);
}

#[test]
fn example_batch_file_is_valid_and_varied() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tasks.jsonl");
    let text = std::fs::read_to_string(path).expect("examples/tasks.jsonl");
    let tasks: Vec<_> = parse_tasks(text.as_bytes(), MAX_TIMEOUT)
        .expect("read")
        .into_iter()
        .map(|t| t.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert!(tasks.len() >= 20, "{} tasks", tasks.len());
    let commands = || tasks.iter().flat_map(|t| &t.commands);
    assert!(commands().any(|c| c.background), "a background job");
    assert!(
        commands()
            .any(|c| c.timeout == Some(Duration::from_secs(2)) && c.command.contains("sleep 30")),
        "a command that times out"
    );
    // Servers of concurrent tasks must not share a port.
    let mut port_owner = std::collections::HashMap::new();
    for task in &tasks {
        for c in &task.commands {
            for (at, _) in c.command.match_indices("180") {
                let port = &c.command[at..(at + 5).min(c.command.len())];
                if port.chars().all(|ch| ch.is_ascii_digit()) && port.len() == 5 {
                    let owner = port_owner.entry(port.to_string()).or_insert(&task.task_id);
                    assert_eq!(*owner, &task.task_id, "port {port} is used by two tasks");
                }
            }
        }
    }
    assert!(port_owner.len() >= 2, "{port_owner:?}");
}
