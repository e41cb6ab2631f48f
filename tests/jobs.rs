//! Background jobs through the runtime ([`hecate::jobs`]): the same
//! behaviour tests on the plain local backend, the sandbox (where this
//! machine allows one) and the MorphCloud simulator running real bash.
//! `backend_tests!` makes one test per backend of each scenario.

use std::path::Path;
use std::time::{Duration, Instant};

use hecate::{Config, ExecRequest, JobOutput, JobState};

use crate::helper::backends::{Backend, Kind};

fn tune(c: &mut Config) {
    c.local.kill_grace = Duration::from_millis(300);
    c.jobs.kill_grace = Duration::from_millis(300);
    c.jobs.poll_interval = Some(Duration::from_millis(20));
}

/// `tweak` after the job tests' own settings (short kill graces, a fast
/// watcher).
fn tuned(tweak: impl Fn(&mut Config)) -> impl Fn(&mut Config) {
    move |c| {
        tune(c);
        tweak(c);
    }
}

/// What the job scenarios ask of a backend.
trait Jobs {
    async fn start_job(&self, task: &str, req: ExecRequest) -> u64;
    async fn read(&self, task: &str, id: u64, offset: u64, wait: Option<Duration>) -> JobOutput;
}

impl Jobs for Backend {
    /// Starts `command` as a job of `task`; returns its id.
    async fn start_job(&self, task: &str, req: ExecRequest) -> u64 {
        let out = self.run(task, req.background()).await;
        assert_eq!(out.exit_code, 0, "{}: {out:?}", self.name);
        let job = out.job.expect("a job");
        job.id.parse().expect("a numeric job id")
    }

    async fn read(&self, task: &str, id: u64, offset: u64, wait: Option<Duration>) -> JobOutput {
        self.rt
            .job_output(task, id, offset, 64 * 1024, wait)
            .await
            .expect("job output")
    }
}

/// One `#[actix_rt::test]` per backend for each scenario `name(&Backend)`,
/// with the configuration changed by `tweak`.
macro_rules! backend_tests {
    ($name:ident, $tweak:expr) => {
        mod $name {
            use super::*;
            async fn each(kind: Kind) {
                let Some(b) = Backend::start(kind, &tuned($tweak)).await else {
                    return;
                };
                super::$name(&b).await;
                b.stop().await;
            }
            #[actix_rt::test]
            async fn local() {
                each(Kind::Local).await;
            }
            #[actix_rt::test]
            async fn sandbox() {
                each(Kind::Sandbox).await;
            }
            #[actix_rt::test]
            async fn sim() {
                each(Kind::Sim).await;
            }
        }
    };
}

fn numbers(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

/// Reads job `id` from offset 0 until it ended and all is read, checking
/// that each read continues exactly where the last stopped (or says how
/// many bytes it missed) and matches `expected` there. Returns the bytes
/// missed and read.
async fn follow(b: &Backend, task: &str, id: u64, expected: &str) -> (u64, u64) {
    let mut offset = 0;
    let (mut missed, mut read) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{}: the job never ended", b.name);
        let out = b
            .read(task, id, offset, Some(Duration::from_secs(20)))
            .await;
        assert_eq!(out.offset, offset + out.missed_bytes, "{}", b.name);
        assert_eq!(
            out.text,
            expected[out.offset as usize..out.next_offset as usize],
            "{}: bytes {}..{}",
            b.name,
            out.offset,
            out.next_offset
        );
        missed += out.missed_bytes;
        read += out.next_offset - out.offset;
        offset = out.next_offset;
        if out.job.state.is_ended() && !out.more && offset == out.job.output_bytes {
            assert_eq!(out.job.state, JobState::Exited, "{}: {out:?}", b.name);
            assert_eq!(out.job.exit_code, Some(0));
            return (missed, read);
        }
    }
}

async fn poll_from_offsets(b: &Backend) {
    let expected = numbers(300);
    let id = b
        .start_job(
            "t",
            ExecRequest::new(
                "for i in $(seq 1 300); do echo $i; [ $((i % 50)) = 0 ] && sleep 0.1; done",
            ),
        )
        .await;
    assert_eq!(id, 1);
    let (missed, read) = follow(b, "t", id, &expected).await;
    assert_eq!((missed, read), (0, expected.len() as u64), "{}", b.name);
}
backend_tests!(poll_from_offsets, |_| {});

async fn poll_across_the_cap(b: &Backend) {
    // 2,000 lines (8,893 bytes) through a 512-byte store, followed while
    // they are written: the reader is told what it missed and never sees a
    // byte twice or out of place.
    let expected = numbers(2000);
    let script = "for i in $(seq 1 2000); do echo $i; [ $((i % 400)) = 0 ] && sleep 0.05; done";
    let id = b.start_job("t", ExecRequest::new(script)).await;
    let (missed, read) = follow(b, "t", id, &expected).await;
    assert_eq!(missed + read, expected.len() as u64, "{}", b.name);
    // Followed only once it ended: the cap has cut all but the newest
    // bytes, and the reader is told exactly how many.
    let id = b.start_job("t", ExecRequest::new(script)).await;
    let job =
        b.rt.wait_job("t", id, Duration::from_secs(30))
            .await
            .expect("wait");
    assert_eq!(
        job.output_bytes,
        expected.len() as u64,
        "{}: {job:?}",
        b.name
    );
    let (missed, read) = follow(b, "t", id, &expected).await;
    assert_eq!(missed + read, expected.len() as u64, "{}", b.name);
    assert!((256..=512).contains(&read), "{}: {read} bytes kept", b.name);
}
backend_tests!(poll_across_the_cap, |c| c.jobs.output_cap = 512);

async fn wait_wakes_on_output_and_on_end(b: &Backend) {
    let id = b
        .start_job(
            "t",
            ExecRequest::new("sleep 0.5; echo hi; sleep 0.5; exit 3"),
        )
        .await;
    let started = Instant::now();
    let out = b.read("t", id, 0, Some(Duration::from_secs(30))).await;
    assert_eq!(out.text, "hi\n", "{}", b.name);
    assert_eq!(out.job.state, JobState::Running, "{}", b.name);
    let out = b
        .read("t", id, out.next_offset, Some(Duration::from_secs(30)))
        .await;
    assert_eq!(out.text, "", "{}", b.name);
    assert_eq!(out.job.state, JobState::Exited, "{}", b.name);
    assert_eq!(out.job.exit_code, Some(3));
    assert!(started.elapsed() < Duration::from_secs(15), "{}", b.name);
    let done =
        b.rt.wait_job("t", id, Duration::from_secs(5))
            .await
            .expect("wait");
    assert_eq!(done.exit_code, Some(3));
    // A wait that runs out answers with the job still running.
    let id = b.start_job("t", ExecRequest::new("sleep 1000")).await;
    let job =
        b.rt.wait_job("t", id, Duration::from_millis(300))
            .await
            .expect("wait");
    assert_eq!(job.state, JobState::Running);
}
backend_tests!(wait_wakes_on_output_and_on_end, |_| {});

async fn kill_ends_the_tree(b: &Backend) {
    let id = b
        .start_job(
            "t",
            ExecRequest::new("sleep 1000 & echo $!; (sleep 1000 & echo $!; wait) & wait"),
        )
        .await;
    let mut pids = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.lines().count() < 2 {
        assert!(Instant::now() < deadline, "{}: no pids", b.name);
        pids = b.read("t", id, 0, Some(Duration::from_secs(5))).await.text;
    }
    let killed = b.rt.kill_job("t", id).await.expect("kill");
    assert_eq!(killed.state, JobState::Killed, "{}", b.name);
    // Alive and not a zombie waiting to be reaped (polled, bounded).
    let check = pids
        .lines()
        .map(|p| {
            format!(
                "kill -0 {p} 2>/dev/null && ! grep -q '^State:.*Z' /proc/{p}/status \
                 2>/dev/null && echo alive {p};"
            )
        })
        .collect::<String>();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = b.run("t", ExecRequest::new(format!("{check} true"))).await;
        if out.stdout.to_text().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{}: survivors {out:?}", b.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killing it again changes nothing.
    let again = b.rt.kill_job("t", id).await.expect("kill");
    assert_eq!(again.state, JobState::Killed);
}
backend_tests!(kill_ends_the_tree, |_| {});

async fn lifetime_expiry(b: &Backend) {
    let req = ExecRequest::new("sleep 1000").job_lifetime(Duration::from_secs(1));
    let id = b.start_job("t", req).await;
    let job =
        b.rt.wait_job("t", id, Duration::from_secs(30))
            .await
            .expect("wait");
    assert_eq!(job.state, JobState::Killed, "{}: {job:?}", b.name);
    assert_eq!(job.end_reason.as_deref(), Some("it reached its lifetime"));
    // More than the runtime's maximum is refused.
    let too_long = ExecRequest::new("true").job_lifetime(Duration::from_secs(7200));
    assert!(b.rt.exec("t", too_long).await.is_err());
}
backend_tests!(lifetime_expiry, |c| c.jobs.max_lifetime =
    Duration::from_secs(3600));

async fn a_job_keeps_its_instance_from_idling_out(b: &Backend) {
    let first = b
        .run("t", ExecRequest::new("sleep 2.5; echo done").background())
        .await;
    let id: u64 = first.job.expect("job").id.parse().expect("id");
    let job =
        b.rt.wait_job("t", id, Duration::from_secs(30))
            .await
            .expect("wait");
    assert_eq!(job.state, JobState::Exited, "{}: {job:?}", b.name);
    assert_eq!(job.instance_id, first.instance_id);
    let next = b.run("t", ExecRequest::new("true")).await;
    assert_eq!(next.instance_id, first.instance_id, "{}: idled out", b.name);
    assert_eq!(next.instance_restarted, None);
}
backend_tests!(a_job_keeps_its_instance_from_idling_out, |c| {
    c.idle_lifetime = Duration::from_secs(1);
});

async fn jobs_across_an_instance_restart_are_reported_lost(b: &Backend) {
    let first = b.start_job("t", ExecRequest::new("sleep 1000")).await;
    let done = b.start_job("t", ExecRequest::new("echo fine")).await;
    b.rt.wait_job("t", done, Duration::from_secs(30))
        .await
        .expect("wait");
    assert!(b.rt.evict("t").await.expect("evict"));
    let second = b.start_job("t", ExecRequest::new("sleep 1000")).await;
    assert_eq!(
        (first, done, second),
        (1, 2, 3),
        "ids go on across instances"
    );
    let jobs = b.rt.jobs("t").expect("jobs");
    let states: Vec<_> = jobs.iter().map(|j| (j.id, j.state)).collect();
    assert_eq!(
        states,
        vec![
            (1, JobState::Lost),
            (2, JobState::Exited),
            (3, JobState::Running)
        ],
        "{}",
        b.name
    );
    assert_ne!(jobs[0].instance_id, jobs[2].instance_id);
    // A lost job's output is gone; reading it says so without an error.
    let out = b.read("t", first, 0, None).await;
    assert_eq!(out.job.state, JobState::Lost);
    assert_eq!(out.text, "");
}
backend_tests!(jobs_across_an_instance_restart_are_reported_lost, |_| {});

async fn a_yes_job_stays_within_its_cap(b: &Backend) {
    let id = b.start_job("t", ExecRequest::new("yes")).await;
    // Let it write well past its cap.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = b.rt.job("t", id).expect("job");
        if job.output_bytes > 4 * 64 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "{}: {job:?}", b.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = b.rt.job("t", id).expect("job");
    let dir = Path::new(&job.log_file)
        .parent()
        .expect("dir")
        .display()
        .to_string();
    let out = b
        .run("t", ExecRequest::new(format!("cat {dir}/out.* | wc -c")))
        .await;
    let stored: u64 = out.stdout.to_text().trim().parse().expect("a size");
    assert!(stored <= 64 * 1024, "{}: {stored} bytes stored", b.name);
    let tail = b.read("t", id, job.output_bytes, None).await;
    assert!(tail.text.chars().all(|c| c == 'y' || c == '\n'));
    b.rt.kill_job("t", id).await.expect("kill");
}
backend_tests!(a_yes_job_stays_within_its_cap, |c| c.jobs.output_cap =
    64 * 1024);

async fn yield_window(b: &Backend) {
    // Done within its window: an ordinary result, and no job.
    let quick = b
        .run(
            "t",
            ExecRequest::new("echo quick; exit 4").yield_after(Duration::from_secs(20)),
        )
        .await;
    assert_eq!(quick.exit_code, 4, "{}: {quick:?}", b.name);
    assert_eq!(quick.stdout.to_text(), "quick\n", "{}", b.name);
    assert!(quick.job.is_none());
    // Still running at the end of its window (the configured one): the
    // call returns its job and output so far, and the queue moves on.
    let started = Instant::now();
    let slow = b.run("t", ExecRequest::new("echo early; sleep 1000")).await;
    let job = slow.job.clone().expect("the call became a job");
    let text = slow.stdout.to_text();
    assert!(text.starts_with("early\n"), "{}: {text}", b.name);
    assert!(
        text.contains("still running after 1 s"),
        "{}: {text}",
        b.name
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{}", b.name);
    let next = b.run("t", ExecRequest::new("echo next")).await;
    assert_eq!(next.stdout.to_text(), "next\n");
    let id: u64 = job.id.parse().expect("id");
    let record = b.rt.job("t", id).expect("job");
    assert_eq!(record.state, JobState::Running, "{}: {record:?}", b.name);
    assert_eq!(
        b.rt.jobs("t").expect("jobs").len(),
        1,
        "only the yielded call is a job"
    );
    // Its output goes on from where the call's stopped.
    let out = b.read("t", id, 0, None).await;
    assert_eq!(out.text, "early\n");
    b.rt.kill_job("t", id).await.expect("kill");
}
backend_tests!(yield_window, |c| c.jobs.yield_window =
    Some(Duration::from_secs(1)));

#[actix_rt::test]
async fn bad_job_requests_are_clear_errors() {
    let Some(b) = Backend::start(Kind::Local, &tuned(|_| {})).await else {
        return;
    };
    assert!(b.rt.jobs("nobody").expect("jobs").is_empty());
    let err =
        b.rt.job_output("nobody", 1, 0, 10, None)
            .await
            .expect_err("no jobs");
    assert_eq!(err.kind(), hecate::ErrorKind::InvalidInput);
    b.start_job("t", ExecRequest::new("true")).await;
    let err =
        b.rt.job_output("t", 9, 0, 10, None)
            .await
            .expect_err("no job 9");
    assert!(err.to_string().contains("no job 9"), "{err}");
    let err =
        b.rt.job_output("t", 1, 0, 0, None)
            .await
            .expect_err("max 0");
    assert_eq!(err.kind(), hecate::ErrorKind::InvalidInput);
    b.stop().await;
}

#[actix_rt::test]
async fn the_job_tools_follow_kill_and_list_with_terminals_error_shape() {
    use hecate::tool::{self, JOB_KILL_TOOL, JOB_LIST_TOOL, JOB_OUTPUT_TOOL};
    let Some(b) = Backend::start(Kind::Local, &tuned(|_| {})).await else {
        return;
    };
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).expect("json") };
    let started = tool::terminal_json(
        &b.rt,
        r#"{"command": "echo one; sleep 0.3; echo two", "background": true}"#,
    )
    .await;
    let started = json(&started);
    assert_eq!(started["job"]["id"], "1", "{started}");
    assert!(started["job"]["log_file"]
        .as_str()
        .expect("log")
        .ends_with("/job-1/log"));
    assert!(started["output"]
        .as_str()
        .expect("output")
        .contains("job_output tool (job_id 1"));
    // Follow it to its end with waits.
    let mut offset = 0;
    let mut text = String::new();
    loop {
        let args = format!(r#"{{"job_id": 1, "offset": {offset}, "wait": 20}}"#);
        let r = json(&tool::job_tool_json(&b.rt, JOB_OUTPUT_TOOL, &args).await);
        assert_eq!(r["error"], serde_json::Value::Null, "{r}");
        offset = r["next_offset"].as_u64().expect("next_offset");
        text.push_str(r["output"].as_str().expect("output"));
        if r["job"]["state"] == "exited" {
            assert_eq!(r["exit_code"], 0);
            break;
        }
    }
    assert!(text.starts_with("one\ntwo\n"), "{text}");
    assert!(text.ends_with("[job 1 exited with code 0]"), "{text}");
    // Kill a running job; list both.
    b.start_job("default", ExecRequest::new("sleep 1000")).await;
    let killed = json(&tool::job_tool_json(&b.rt, JOB_KILL_TOOL, r#"{"job_id": "2"}"#).await);
    assert_eq!(killed["job"]["state"], "killed", "{killed}");
    let list = json(&tool::job_tool_json(&b.rt, JOB_LIST_TOOL, "{}").await);
    let states: Vec<_> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["state"].as_str().expect("state").to_string())
        .collect();
    assert_eq!(states, ["exited", "killed"], "{list}");
    // Bad arguments: terminal's error shape, naming the field.
    for (tool_name, args, needle) in [
        (JOB_OUTPUT_TOOL, r#"{}"#, "job_id is missing"),
        (
            JOB_OUTPUT_TOOL,
            r#"{"job_id": 1, "offset": -1}"#,
            "offset must be",
        ),
        (
            JOB_OUTPUT_TOOL,
            r#"{"job_id": 1, "wait": 9999}"#,
            "wait must be",
        ),
        (JOB_KILL_TOOL, r#"{"job_id": 1, "signal": 9}"#, "signal"),
        (JOB_LIST_TOOL, r#"[]"#, "JSON object"),
        (JOB_OUTPUT_TOOL, r#"{"job_id": 99}"#, "no job 99"),
    ] {
        let r = json(&tool::job_tool_json(&b.rt, tool_name, args).await);
        assert_eq!(r["exit_code"], -1, "{r}");
        assert_eq!(r["status"], "error", "{r}");
        assert_eq!(r["error_kind"], "invalid_input", "{r}");
        assert!(r["error"].as_str().expect("error").contains(needle), "{r}");
    }
    // Pinned: another task is refused; its own is fine.
    let r = json(
        &tool::job_tool_json_pinned(&b.rt, "default", JOB_LIST_TOOL, r#"{"task_id": "other"}"#)
            .await,
    );
    assert_eq!(r["error_kind"], "invalid_input", "{r}");
    let r = json(&tool::job_tool_json_pinned(&b.rt, "default", JOB_LIST_TOOL, "{}").await);
    assert_eq!(r["jobs"].as_array().map(Vec::len), Some(2), "{r}");
    b.stop().await;
}

#[test]
fn the_job_tools_have_openai_and_anthropic_schemas_pinned_or_not() {
    use hecate::tool::{self, SchemaFormat, SchemaOptions};
    let opts = SchemaOptions::default();
    let all = tool::all_schemas(SchemaFormat::OpenAi, &opts);
    let names: Vec<_> = all
        .as_array()
        .expect("array")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["terminal", "job_output", "job_kill", "job_list"]);
    let output = tool::job_schema("job_output", SchemaFormat::Anthropic, &opts).expect("schema");
    assert_eq!(output["name"], "job_output");
    let props = &output["input_schema"]["properties"];
    for field in ["job_id", "offset", "wait", "task_id"] {
        assert!(props.get(field).is_some(), "{field}: {output}");
    }
    assert_eq!(
        output["input_schema"]["required"],
        serde_json::json!(["job_id"])
    );
    let pinned = tool::job_schema("job_kill", SchemaFormat::OpenAi, &opts.clone().pinned(true))
        .expect("schema");
    assert!(pinned["function"]["parameters"]["properties"]
        .get("task_id")
        .is_none());
    assert!(tool::job_schema("job_nope", SchemaFormat::OpenAi, &opts).is_err());
}

/// The figures of BENCHMARKS.md "Background jobs": reading a job's output
/// when nothing is new (in-process, local backend), and the runtime's
/// memory per running job. A measurement, not a check:
/// `cargo test --test tests -- jobs::figures --ignored --nocapture`.
#[actix_rt::test]
#[ignore = "a measurement; run by hand"]
async fn figures() {
    let Some(b) = Backend::start(Kind::Local, &tuned(|_| {})).await else {
        return;
    };
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "{:.1} / {:.1} / {:.1}",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    let id = b
        .start_job("read", ExecRequest::new("echo ready; sleep 1000"))
        .await;
    let first = b.read("read", id, 0, Some(Duration::from_secs(20))).await;
    assert_eq!(first.text, "ready\n");
    let offset = first.next_offset;
    let mut per_read = Vec::new();
    for _ in 0..3 {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            let out = b.read("read", id, offset, None).await;
            assert!(out.text.is_empty());
        }
        per_read.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    println!(
        "read, nothing new (µs per call, min/median/max of 3 runs of 20,000): {}",
        stats(per_read)
    );
    let mut per_job = Vec::new();
    for run in 0..3 {
        let jobs = 64;
        let before = crate::helper::rss_kib();
        for i in 0..jobs {
            b.start_job(
                &format!("mem-{run}-{}", i % 8),
                ExecRequest::new("sleep 1000"),
            )
            .await;
        }
        // Let each task's watcher look at its jobs a few times.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = crate::helper::rss_kib();
        per_job.push(after.saturating_sub(before) as f64 / f64::from(jobs));
    }
    println!(
        "runtime RSS per running job (KiB, min/median/max of 3 runs of 64 jobs): {}",
        stats(per_job)
    );
    b.stop().await;
}
