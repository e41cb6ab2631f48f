//! The `terminal` tool contract: argument parsing, result rendering,
//! truncation, schemas, and `terminal_json` end to end on the scripted
//! backend.

use std::time::Duration;

use hecate::provider::{Captured, JobInfo};
use hecate::tool::{
    self, error_result, render, truncate_middle, SchemaFormat, SchemaOptions, ToolArgs, ToolResult,
    TOOL_NAME,
};
use hecate::{Config, Error, ErrorKind, ExecOutcome, RestartReason};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::helper::{scripted_runtime, test_config};

fn parse_err(text: &str) -> Error {
    let err = ToolArgs::from_json(text).expect_err(text);
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{text}: {err}");
    err
}

#[test]
fn bad_arguments_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("", "not valid JSON"),
        ("{\"command\": \"ls\"", "not valid JSON"),
        ("[\"ls\"]", "must be a JSON object"),
        ("\"ls\"", "must be a JSON object"),
        ("{}", "command is missing"),
        ("{\"command\": null}", "command is missing"),
        ("{\"command\": \"\"}", "command is empty"),
        ("{\"command\": \"  \\n \"}", "command is empty"),
        ("{\"command\": 5}", "command must be a string, not a number"),
        ("{\"command\": \"ls\\u0000x\"}", "NUL"),
        (
            "{\"command\": [\"ls\"]}",
            "command must be a string, not an array",
        ),
        (
            "{\"command\": \"ls\", \"background\": \"yes\"}",
            "background must be true or false, not a string",
        ),
        (
            "{\"command\": \"ls\", \"cwd\": \"/\"}",
            "unknown field \"cwd\"",
        ),
        (
            "{\"command\": \"ls\", \"b\": 1, \"a\": 2}",
            "unknown fields \"a\", \"b\"",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": 0}",
            "timeout must be greater than 0",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": 0.0}",
            "timeout must be greater than 0",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": -5}",
            "timeout must be greater than 0",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": \"-5\"}",
            "timeout must be greater than 0",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": \"NaN\"}",
            "must be a finite number of seconds (got NaN)",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": \"inf\"}",
            "must be a finite number of seconds (got inf)",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": \"soon\"}",
            "not \"soon\"",
        ),
        ("{\"command\": \"ls\", \"timeout\": \"30s\"}", "not \"30s\""),
        (
            "{\"command\": \"ls\", \"timeout\": \"\"}",
            "timeout must be a number",
        ),
        ("{\"command\": \"ls\", \"timeout\": true}", "not a boolean"),
        ("{\"command\": \"ls\", \"timeout\": [30]}", "not an array"),
        (
            "{\"command\": \"ls\", \"timeout\": 1e300}",
            "exceeds the maximum of 86400 s",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": 86401}",
            "exceeds the maximum",
        ),
        (
            "{\"command\": \"ls\", \"timeout\": 18446744073709551615}",
            "exceeds the maximum",
        ),
        ("{\"command\": \"ls\", \"timeout\": 1e-9}", "at least 0.001"),
        (
            "{\"command\": \"ls\", \"task_id\": 7}",
            "task_id must be a string",
        ),
        (
            "{\"command\": \"ls\", \"task_id\": \"\"}",
            "task_id is empty",
        ),
        (
            "{\"command\": \"ls\", \"task_id\": \"a\\nb\"}",
            "control character",
        ),
    ];
    for (text, expected) in cases {
        let err = parse_err(text);
        assert!(
            err.message().contains(expected),
            "{text}: {:?} does not mention {expected:?}",
            err.message()
        );
    }
}

#[test]
fn overlong_command_is_refused_with_its_size() {
    let long = "x".repeat(hecate::runtime::MAX_COMMAND_BYTES + 1);
    let err = ToolArgs::from_value(&json!({ "command": long })).expect_err("too long");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().contains("write a long script to a file"),
        "{err}"
    );
    let fits = "x".repeat(hecate::runtime::MAX_COMMAND_BYTES);
    assert!(ToolArgs::from_value(&json!({ "command": fits })).is_ok());
}

#[test]
fn error_for_unknown_field_lists_the_accepted_ones() {
    let err = parse_err(r#"{"cmd": "ls"}"#);
    assert!(err.message().contains("\"cmd\""), "{err}");
    assert!(
        err.message()
            .contains("command, background, timeout, task_id"),
        "{err}"
    );
}

#[test]
fn good_arguments_parse() {
    let args = ToolArgs::from_json(r#"{"command": "ls -la"}"#).expect("valid");
    assert_eq!(args, ToolArgs::new("ls -la"));

    let args = ToolArgs::from_json(
        r#"{"command": "make", "background": true, "timeout": 30, "task_id": "t/1 ü"}"#,
    )
    .expect("valid");
    assert!(args.background);
    assert_eq!(args.timeout, Some(Duration::from_secs(30)));
    assert_eq!(args.task_id.as_deref(), Some("t/1 ü"));

    for (timeout, expected) in [
        (json!(2.5), Duration::from_millis(2500)),
        (json!("30"), Duration::from_secs(30)),
        (json!(" 7 "), Duration::from_secs(7)),
        (json!("0.5"), Duration::from_millis(500)),
        (json!(86400), Duration::from_secs(86400)),
    ] {
        let args = ToolArgs::from_value(&json!({"command": "x", "timeout": timeout}))
            .unwrap_or_else(|e| panic!("{timeout}: {e}"));
        assert_eq!(args.timeout, Some(expected), "{timeout}");
    }

    // Models send explicit nulls for optional arguments.
    let args = ToolArgs::from_value(
        &json!({"command": "x", "background": null, "timeout": null, "task_id": null}),
    )
    .expect("nulls are absent");
    assert_eq!(args, ToolArgs::new("x"));
}

#[test]
fn timeout_limit_can_be_lowered() {
    let err = ToolArgs::from_json_with_max(
        r#"{"command": "x", "timeout": 61}"#,
        Duration::from_secs(60),
    )
    .expect_err("over the limit");
    assert!(err.message().contains("maximum of 60 s"), "{err}");
}

fn outcome(stdout: &str, stderr: &str, exit_code: i32) -> ExecOutcome {
    ExecOutcome {
        task_id: "t1".into(),
        instance_id: "i-1".into(),
        exit_code,
        stdout: Captured::from_text(stdout, 1 << 20),
        stderr: Captured::from_text(stderr, 1 << 20),
        timed_out: false,
        oom_killed: false,
        job: None,
        instance_restarted: None,
        instance_started: false,
        queued: Duration::from_millis(5),
        slot_wait: Duration::ZERO,
        duration: Duration::from_millis(20),
        attempts: 1,
        setup: None,
    }
}

fn to_value(result: &ToolResult) -> Value {
    serde_json::from_str(&result.to_json()).expect("valid JSON")
}

#[test]
fn stderr_is_shown_after_stdout_also_on_success() {
    let r = render(Ok(outcome("built\n", "warning: unused\n", 0)), 50_000);
    assert_eq!(r.output, "built\nwarning: unused");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.error, None);
    assert_eq!(r.duration_ms, 25);

    // No blank line when stdout lacks a final newline either.
    let r = render(Ok(outcome("a", "b", 0)), 50_000);
    assert_eq!(r.output, "a\nb");
    let r = render(Ok(outcome("", "only err\n", 0)), 50_000);
    assert_eq!(r.output, "only err");
}

#[test]
fn trailing_whitespace_is_trimmed_but_leading_kept() {
    let r = render(Ok(outcome("   indented\n\n  \t\n", "", 0)), 50_000);
    assert_eq!(r.output, "   indented");
}

#[test]
fn non_zero_exit_is_a_result_not_an_error() {
    let r = render(Ok(outcome("", "ls: cannot access 'x'\n", 2)), 50_000);
    assert_eq!(r.exit_code, 2);
    assert_eq!(r.error, None);
    assert_eq!(r.status, None);
    let v = to_value(&r);
    assert_eq!(v["error"], Value::Null);
    assert!(v.get("status").is_none());
    assert!(v.get("error_kind").is_none());
    assert_eq!(v["output"], "ls: cannot access 'x'");
}

#[test]
fn result_fields_come_in_a_stable_order() {
    let json = render(Ok(outcome("x", "", 0)), 100).to_json();
    assert!(
        json.starts_with(r#"{"output":"x","exit_code":0,"error":null,"timed_out":false"#),
        "{json}"
    );
    let json = error_result(&Error::transient("busy")).to_json();
    assert!(
        json.starts_with(
            r#"{"output":"","exit_code":-1,"error":"busy","status":"error","error_kind":"transient""#
        ),
        "{json}"
    );
}

#[test]
fn timeout_adds_a_notice() {
    let mut o = outcome("partial\n", "", 124);
    o.timed_out = true;
    o.duration = Duration::from_millis(2_004);
    let r = render(Ok(o), 50_000);
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 124);
    assert_eq!(r.error, None);
    assert_eq!(
        r.output,
        "partial\n[command timed out after 2 s and was killed; exit code 124]"
    );
}

#[test]
fn restarted_instance_adds_a_notice() {
    let mut o = outcome("hi\n", "", 0);
    o.instance_restarted = Some(RestartReason::Idle);
    let r = render(Ok(o), 50_000);
    assert!(r.instance_restarted);
    assert!(r.output.starts_with("hi\n["), "{}", r.output);
    assert!(r.output.contains(RestartReason::Idle.notice()));
    assert!(r
        .output
        .contains("files and background processes from earlier calls are gone"));
    assert_eq!(to_value(&r)["instance_restarted"], true);
}

#[test]
fn background_job_says_how_to_follow_it() {
    let mut o = outcome("", "", 0);
    o.job = Some(JobInfo {
        id: "3".into(),
        pid: Some(4242),
        log_file: "/tmp/hecate/jobs/3.log".into(),
        exit_file: "/tmp/hecate/jobs/3.exit".into(),
    });
    let r = render(Ok(o), 50_000);
    assert!(r
        .output
        .starts_with("Background job 3 started (pid 4242). Log: /tmp/hecate/jobs/3.log."));
    assert!(r.output.contains("tail -n 50 /tmp/hecate/jobs/3.log"));
    assert!(r
        .output
        .contains("test -f /tmp/hecate/jobs/3.exit && cat /tmp/hecate/jobs/3.exit"));
    assert!(r.output.contains("kill -- -4242"));
    let v = to_value(&r);
    assert_eq!(
        v["job"],
        json!({"id": "3", "pid": 4242, "log_file": "/tmp/hecate/jobs/3.log",
               "exit_file": "/tmp/hecate/jobs/3.exit"})
    );
}

#[test]
fn background_launcher_stdout_gives_way_to_the_job_text() {
    let mut o = outcome("started background job 1 (pid 7); log: /j/1.log\n", "", 0);
    o.job = Some(JobInfo {
        id: "1".into(),
        pid: Some(7),
        log_file: "/j/1.log".into(),
        exit_file: "/j/1.exit".into(),
    });
    let r = render(Ok(o), 50_000);
    assert!(
        r.output.starts_with("Background job 1 started (pid 7)."),
        "{}",
        r.output
    );
    assert_eq!(r.output.matches("/j/1.log").count(), 2, "{}", r.output);

    // A launcher that failed started no job: its output is the result.
    let r = render(
        Ok(outcome("", "mkdir: cannot create directory\n", 1)),
        50_000,
    );
    assert_eq!(r.output, "mkdir: cannot create directory");
    assert_eq!(r.job, None);
}

#[test]
fn background_paths_with_spaces_are_quoted_in_hints() {
    let mut o = outcome("", "", 0);
    o.job = Some(JobInfo {
        id: "1".into(),
        pid: None,
        log_file: "/tmp/my dir/1.log".into(),
        exit_file: "/tmp/my dir/1.exit".into(),
    });
    let r = render(Ok(o), 50_000);
    assert!(r.output.contains("(pid unknown)"));
    assert!(
        r.output.contains("tail -n 50 '/tmp/my dir/1.log'"),
        "{}",
        r.output
    );
    assert!(!r.output.contains("kill --"));
}

#[test]
fn long_output_keeps_head_and_tail_within_the_limit() {
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let r = render(Ok(outcome(&text, "", 0)), 1_000);
    assert!(r.truncated);
    assert!(r.output.chars().count() <= 1_000);
    assert!(r.output.starts_with("line 0\nline 1\n"));
    assert!(r.output.ends_with("line 19999"));
    assert!(r.output.contains("characters cut from the middle"));
}

#[test]
fn notices_survive_truncation() {
    let mut o = outcome(&"é".repeat(100_000), "", 124);
    o.timed_out = true;
    o.instance_restarted = Some(RestartReason::Ttl);
    let r = render(Ok(o), 2_000);
    assert!(r.output.chars().count() <= 2_000);
    assert!(r.output.contains("[command timed out after"));
    assert!(r.output.ends_with("from earlier calls are gone]"));
    assert!(r.output.starts_with("éé"));
}

#[test]
fn dropped_capture_bytes_are_marked_and_flagged() {
    let mut o = outcome("", "", 0);
    o.stdout = Captured::from_text(&"x".repeat(1_000), 100);
    let r = render(Ok(o), 50_000);
    assert!(r.truncated);
    assert!(r.output.contains("[900 bytes dropped]"), "{}", r.output);
}

#[test]
fn truncate_middle_leaves_fitting_text_alone() {
    assert_eq!(truncate_middle("héllo", 5), ("héllo".to_string(), false));
    assert_eq!(truncate_middle("", 0), (String::new(), false));
}

#[test]
fn truncate_middle_is_exact_at_every_limit_around_the_notice() {
    // Every limit from nothing to past the notice's own length, where the
    // notice's digit count changes, on text with multi-byte characters.
    let text: String = "aé😀\n".repeat(3_000);
    for max in (0..400).chain(2_000..2_100).chain([11_000, 11_999]) {
        let (out, cut) = truncate_middle(&text, max);
        assert!(cut);
        assert!(out.chars().count() <= max, "max {max}");
        assert!(
            is_head_marker_tail(&text, &out)
                || (text.starts_with(&out) && out.chars().count() == max),
            "max {max}: {out:?}"
        );
        if max >= 100 {
            assert_eq!(
                out.chars().count(),
                max,
                "max {max}: the budget is used fully"
            );
        }
    }
}

#[test]
fn truncate_middle_with_a_tiny_limit_keeps_the_head() {
    let (out, cut) = truncate_middle("abcdefghij", 4);
    assert!(cut);
    assert_eq!(out, "abcd");
}

#[test]
fn error_results_follow_the_seed() {
    let r = error_result(&Error::config("MORPH_API_KEY environment variable not set"));
    assert_eq!(r.status, Some("disabled"));
    assert_eq!(r.exit_code, -1);
    assert_eq!(r.output, "");
    let v = to_value(&r);
    assert_eq!(v["error"], "MORPH_API_KEY environment variable not set");
    assert_eq!(v["error_kind"], "config");

    let r = render(
        Err(Error::new(ErrorKind::InstanceGone, "instance vanished")),
        50_000,
    );
    assert_eq!(r.status, Some("error"));
    assert_eq!(r.error_kind, Some(ErrorKind::InstanceGone));
    assert!(r.is_error());
}

fn check_parameters(params: &Value) {
    assert_eq!(params["type"], "object");
    assert_eq!(params["required"], json!(["command"]));
    assert_eq!(params["additionalProperties"], false);
    let props = &params["properties"];
    assert_eq!(props["command"]["type"], "string");
    assert_eq!(props["background"]["type"], "boolean");
    // Fractions are accepted, so the schema must not say integer.
    assert_eq!(props["timeout"]["type"], "number");
    assert_eq!(props["timeout"]["exclusiveMinimum"], 0);
    assert_eq!(props["task_id"]["type"], "string");
    assert_eq!(props.as_object().map(|p| p.len()), Some(4));
}

#[test]
fn fractional_timeouts_the_schema_allows_are_accepted() {
    let args = ToolArgs::from_json(r#"{"command": "x", "timeout": 0.5}"#).expect("a number");
    assert_eq!(args.timeout, Some(Duration::from_millis(500)));
}

#[test]
fn pinned_schema_has_no_task_id_and_states_the_configured_timeout() {
    let config = Config {
        command_timeout: Duration::from_secs(45),
        ..test_config()
    };
    let opts = SchemaOptions::for_config(&config).pinned(true);
    for format in [SchemaFormat::OpenAi, SchemaFormat::Anthropic] {
        let s = tool::schema_with(format, &opts);
        let params = match format {
            SchemaFormat::OpenAi => &s["function"]["parameters"],
            SchemaFormat::Anthropic => &s["input_schema"],
        };
        let props = params["properties"].as_object().expect("properties");
        assert!(!props.contains_key("task_id"), "{s:#}");
        assert_eq!(props.len(), 3);
        let timeout = props["timeout"]["description"].as_str().expect("text");
        assert!(timeout.contains("(default 45)"), "{timeout}");
        assert!(!timeout.contains("120"), "{timeout}");
        let desc = tool::description_with(&opts);
        assert!(!desc.contains("task_id"), "{desc}");
        assert!(desc.contains("(default 45)"), "{desc}");
    }
    // The default keeps the original contract.
    let d = tool::description();
    assert!(d.contains("task_id") && d.contains("(default 120)"), "{d}");
}

#[test]
fn duplicate_keys_are_refused() {
    for text in [
        r#"{"command": "ls", "command": "rm -rf ~"}"#,
        r#"{"command": "ls", "task_id": "a", "task_id": "b"}"#,
        r#"{"command": "ls", "timeout": 5, "timeout": null}"#,
    ] {
        let err = parse_err(text);
        assert!(err.message().contains("duplicate key"), "{text}: {err}");
    }
}

#[test]
fn errors_never_quote_huge_numbers_in_full() {
    for text in [
        r#"{"command": "x", "timeout": 1e308}"#,
        r#"{"command": "x", "timeout": -1e308}"#,
        r#"{"command": "x", "timeout": "1e308"}"#,
        r#"{"command": "x", "timeout": 123456789012345678901234567890}"#,
        r#"{"command": "x", "timeout": 1e-300}"#,
    ] {
        let err = parse_err(text);
        let longest_digits = err
            .message()
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest_digits <= 20, "{text}: {err}");
        assert!(err.message().len() < 200, "{text}: {err}");
    }
}

#[test]
fn non_finite_timeouts_are_refused() {
    for bad in ["\"NaN\"", "\"inf\"", "\"-inf\"", "\"Infinity\"", "1e400"] {
        let text = format!(r#"{{"command": "x", "timeout": {bad}}}"#);
        parse_err(&text);
    }
    let max = Duration::from_secs(60);
    for secs in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0, 61.0] {
        let err = tool::check_timeout_secs(secs, max).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().starts_with("timeout"), "{err}");
    }
}

#[test]
fn capture_drops_and_character_cuts_are_both_counted() {
    // 200,000 bytes of output; the capture keeps 100,000 and the tool
    // 1,000 characters: the notice must account for all 199,000-odd.
    let mut o = outcome("", "", 0);
    o.stdout = Captured::from_text(&"x".repeat(200_000), 100_000);
    assert_eq!(o.stdout.dropped_bytes, 100_000);
    let r = render(Ok(o), 1_000);
    assert!(r.truncated);
    assert!(r.output.chars().count() <= 1_000);
    assert!(!r.output.contains("bytes dropped]"), "{}", r.output);
    let kept = r.output.chars().filter(|c| *c == 'x').count();
    let want = format!(
        "[100000 bytes and {} characters cut from the middle",
        100_000 - kept
    );
    assert!(r.output.contains(&want), "{want} in {}", r.output);
}

#[test]
fn capture_drops_in_stdout_and_stderr_are_added() {
    let mut o = outcome("", "", 1);
    o.stdout = Captured::from_text(&"o".repeat(5_000), 1_000);
    o.stderr = Captured::from_text(&"e".repeat(7_000), 1_000);
    let r = render(Ok(o), 500);
    let kept = r.output.chars().filter(|c| *c == 'o' || *c == 'e').count();
    // "bytes and" / "characters" hold no 'o' or 'e' except these:
    let notice_oe = "[10000 bytes and 0 characters cut from the middle of the output]"
        .chars()
        .filter(|c| *c == 'o' || *c == 'e')
        .count();
    let kept = kept - notice_oe;
    // 1,000 characters of each stream and the newline between them.
    let want = format!("[10000 bytes and {} characters cut", 2_001 - kept);
    assert!(r.output.contains(&want), "{want} in {}", r.output);
}

#[test]
fn openai_schema_has_the_function_shape() {
    let s = tool::schema(SchemaFormat::OpenAi);
    assert_eq!(s, tool::openai_schema());
    let text = serde_json::to_string(&s).expect("serializes");
    let s: Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(s["type"], "function");
    assert_eq!(s["function"]["name"], TOOL_NAME);
    assert_eq!(s["function"]["description"], tool::description());
    check_parameters(&s["function"]["parameters"]);
}

#[test]
fn anthropic_schema_has_the_tool_shape() {
    let s = tool::schema(SchemaFormat::Anthropic);
    assert_eq!(s, tool::anthropic_schema());
    assert_eq!(s["name"], "terminal");
    assert_eq!(s["description"], tool::description());
    check_parameters(&s["input_schema"]);
    assert_eq!(s.as_object().map(|o| o.len()), Some(3));
}

#[test]
fn schema_format_parses_by_name() {
    assert_eq!(
        "openai".parse::<SchemaFormat>().ok(),
        Some(SchemaFormat::OpenAi)
    );
    assert_eq!(
        " Anthropic ".parse::<SchemaFormat>().ok(),
        Some(SchemaFormat::Anthropic)
    );
    let err = "gpt".parse::<SchemaFormat>().expect_err("unknown");
    assert!(err.message().contains("\"gpt\""));
}

#[test]
fn description_is_true_for_hecate() {
    let d = tool::description();
    for fact in [
        "bash -c",
        "Files persist",
        "124",
        "tail -n 50 LOG",
        "test -f EXIT && cat EXIT",
        "kill -- -PID",
        "instance_restarted",
        "default 120",
        "50,000",
    ] {
        assert!(d.contains(fact), "description lacks {fact:?}");
    }
    for claim in [
        "with internet access",
        "sudo apt-get",
        "--break-system-packages",
    ] {
        assert!(!d.contains(claim), "description claims {claim:?}");
    }
}

#[actix_rt::test]
async fn terminal_json_runs_in_the_default_task() {
    let (rt, journal) = scripted_runtime(test_config());
    let out = tool::terminal_json(&rt, r#"{"command": "echo:hello"}"#).await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["output"], "hello");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(
        journal.ran(),
        [("default".to_string(), "echo:hello".to_string())]
    );

    let out = tool::terminal_json(&rt, r#"{"command": "exit:3", "task_id": "t9"}"#).await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(journal.ran()[1].0, "t9");
}

#[actix_rt::test]
async fn pinned_tool_runs_only_in_its_task() {
    let (rt, journal) = scripted_runtime(test_config());
    let out = tool::terminal_json_pinned(&rt, "agent-a", r#"{"command": "echo:hi"}"#).await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["output"], "hi");
    let out = tool::terminal_json_pinned(
        &rt,
        "agent-a",
        r#"{"command": "echo:same", "task_id": "agent-a"}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["error"], Value::Null, "naming its own task is fine: {v}");

    let out = tool::terminal_json_pinned(
        &rt,
        "agent-a",
        r#"{"command": "echo:pwned", "task_id": "agent-b"}"#,
    )
    .await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["exit_code"], -1);
    assert_eq!(v["status"], "error");
    assert_eq!(v["error_kind"], "invalid_input");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("task_id")),
        "{v}"
    );
    assert_eq!(
        journal.ran(),
        [
            ("agent-a".to_string(), "echo:hi".to_string()),
            ("agent-a".to_string(), "echo:same".to_string())
        ],
        "nothing ran in agent-b"
    );
}

#[actix_rt::test]
async fn terminal_json_turns_bad_arguments_into_an_error_result() {
    let (rt, journal) = scripted_runtime(test_config());
    for bad in [
        "",
        "{",
        r#"{"command": ""}"#,
        r#"{"command": "x", "timeout": "soon"}"#,
    ] {
        let out = tool::terminal_json(&rt, bad).await;
        let v: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["exit_code"], -1, "{bad}");
        assert_eq!(v["status"], "error");
        assert_eq!(v["error_kind"], "invalid_input");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(journal.ran().is_empty());
}

#[actix_rt::test]
async fn terminal_json_uses_the_runtime_timeout_limit() {
    let config = Config {
        max_command_timeout: Duration::from_secs(60),
        command_timeout: Duration::from_secs(30),
        ..test_config()
    };
    let (rt, _journal) = scripted_runtime(config);
    let out = tool::terminal_json(&rt, r#"{"command": "x", "timeout": 61}"#).await;
    assert!(out.contains("maximum of 60 s"), "{out}");
}

#[actix_rt::test]
async fn terminal_reports_backend_failures_as_errors() {
    let (rt, _journal) = scripted_runtime(test_config());
    let out = tool::terminal_json(&rt, r#"{"command": "fail:rejected:1:k"}"#).await;
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["exit_code"], -1);
    assert_eq!(v["status"], "error");
    assert_eq!(v["error_kind"], "rejected");
    assert_eq!(v["error"], "scripted rejected");
}

#[actix_rt::test]
async fn terminal_timeout_notice_states_the_requested_timeout() {
    tokio::time::pause();
    let (rt, _journal) = scripted_runtime(test_config());
    let r = tool::terminal(
        &rt,
        ToolArgs {
            timeout: Some(Duration::from_secs(3)),
            ..ToolArgs::new("sleep:60000")
        },
    )
    .await;
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 124);
    assert!(
        r.output
            .ends_with("[command timed out after 3 s and was killed; exit code 124]"),
        "{}",
        r.output
    );
}

#[actix_rt::test]
async fn terminal_says_when_the_environment_was_reset() {
    let (rt, _journal) = scripted_runtime(test_config());
    let first = tool::terminal(&rt, ToolArgs::new("echo:one")).await;
    assert!(!first.instance_restarted);
    assert!(rt.evict("default").await.expect("evict"));
    let second = tool::terminal(&rt, ToolArgs::new("echo:two")).await;
    assert!(second.instance_restarted);
    assert!(second.output.starts_with("two\n[the environment was reset"));
    assert!(second.output.contains(RestartReason::Evicted.notice()));
}

/// Any JSON value, biased towards objects with the tool's own keys.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("30"),
            Just("-1"),
            Just("0"),
            Just("NaN"),
            Just("1e400"),
            Just("inf"),
            Just("1e-320"),
            Just("86400.0000001"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("command".to_string()),
            Just("background".to_string()),
            Just("timeout".to_string()),
            Just("task_id".to_string()),
            ".{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether `out` is a prefix of `text`, a marker stating how many
/// characters were cut, and a suffix of `text`, with the counts adding up.
fn is_head_marker_tail(text: &str, out: &str) -> bool {
    const OPEN: &str = "\n\n... [";
    const CLOSE: &str = " characters cut from the middle of the output] ...\n\n";
    let n = text.chars().count();
    out.match_indices(OPEN).any(|(at, _)| {
        let head = &out[..at];
        let rest = &out[at + OPEN.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let Ok(cut) = rest[..digits].parse::<usize>() else {
            return false;
        };
        let Some(tail) = rest[digits..].strip_prefix(CLOSE) else {
            return false;
        };
        text.starts_with(head)
            && text.ends_with(tail)
            && head.chars().count() + cut + tail.chars().count() == n
            && head.len() + tail.len() <= text.len()
    })
}

proptest! {
    #[test]
    fn truncate_middle_is_a_bounded_head_and_tail(
        text in prop_oneof![".{0,400}", "[a-zé😀\n ]{0,400}", any::<String>()],
        max in prop_oneof![0usize..300, 50usize..75],
    ) {
        let (out, cut) = truncate_middle(&text, max);
        let n = text.chars().count();
        if n <= max {
            prop_assert!(!cut);
            prop_assert_eq!(&out, &text);
        } else {
            prop_assert!(cut);
            prop_assert!(out.chars().count() <= max);
            prop_assert!(is_head_marker_tail(&text, &out) || (text.starts_with(&out)
                && out.chars().count() == max), "{:?} is not a head and tail of {:?}", out, text);
        }
    }

    #[test]
    fn tool_args_parsing_never_panics(value in arb_json()) {
        let max = Duration::from_secs(600);
        match ToolArgs::from_value_with_max(&value, max) {
            Ok(args) => {
                prop_assert!(!args.command.trim().is_empty());
                if let Some(t) = args.timeout {
                    prop_assert!(t >= Duration::from_millis(1) && t <= max);
                }
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidInput),
        }
        // The text form parses the same way.
        let via_text = ToolArgs::from_json_with_max(&value.to_string(), max);
        prop_assert_eq!(
            via_text.map_err(|e| e.kind()),
            ToolArgs::from_value_with_max(&value, max).map_err(|e| e.kind())
        );
    }

    #[test]
    fn tool_args_from_any_text_never_panics(text in ".{0,64}") {
        if let Err(e) = ToolArgs::from_json(&text) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
}

/// Issue 11: on the sandbox backend the description tells the model what
/// it finds there; elsewhere it says nothing of it.
#[test]
fn the_description_tells_the_truth_about_the_sandbox() {
    let plain = tool::description_with(&SchemaOptions::for_config(&test_config()));
    assert!(!plain.contains("/workspace"), "{plain}");
    let mut config = test_config().with_backend(hecate::BackendKind::Sandbox);
    let isolated = tool::description_with(&SchemaOptions::for_config(&config));
    for fact in [
        "/workspace",
        "/tmp is private",
        "not a VM",
        "own loopback",
        "no internet",
    ] {
        assert!(isolated.contains(fact), "lacks {fact:?}: {isolated}");
    }
    // The rest of the description is kept, in order.
    let files = isolated.find("Files persist").expect("files");
    assert!(isolated.find("/workspace").expect("sandbox") < files);
    assert!(isolated.contains("Arguments:") && isolated.contains("task_id"));
    config.sandbox.network = hecate::launcher::sandbox::NetworkMode::Host;
    let host = tool::description_with(&SchemaOptions::for_config(&config));
    assert!(host.contains("host machine's network"), "{host}");
    assert!(!host.contains("no internet"), "{host}");
}

#[test]
fn description_says_whether_cd_and_export_persist() {
    let on = tool::description();
    assert!(
        on.contains("so do the working directory and exported variables"),
        "{on}"
    );
    assert!(on.contains("KEY, TOKEN, SECRET or PASSWORD"), "{on}");
    assert!(!on.contains("shell state does not"), "{on}");
    let mut config = test_config();
    config.shell.secret_patterns = vec!["cred".into()];
    let custom = tool::description_with(&SchemaOptions::for_config(&config));
    assert!(
        custom.contains("names contain CRED (in any case)"),
        "{custom}"
    );
    let off = tool::description_with(&SchemaOptions::for_config(
        &test_config().with_persistent_shell(false),
    ));
    assert!(off.contains("shell state does not"), "{off}");
    assert!(!off.contains("so do the working directory"), "{off}");
}

#[test]
fn a_tasks_description_states_its_own_persistent_shell_setting() {
    let on = test_config().with_persistent_shell(true);
    let off = test_config().with_persistent_shell(false);
    let spec_off = hecate::TaskSpec::new().persistent_shell(false);
    let spec_on = hecate::TaskSpec::new().persistent_shell(true);
    // The task's spec wins over the runtime's default, either way.
    let text = tool::description_with(&SchemaOptions::for_task(&on, &spec_off));
    assert!(text.contains("shell state does not"), "{text}");
    let text = tool::description_with(&SchemaOptions::for_task(&off, &spec_on));
    assert!(text.contains("so do the working directory"), "{text}");
    // Without a setting of its own, the runtime's default applies.
    let text = tool::description_with(&SchemaOptions::for_task(&off, &hecate::TaskSpec::new()));
    assert!(text.contains("shell state does not"), "{text}");
    // A task's tool is pinned: the model cannot name another task.
    let opts = SchemaOptions::for_task(&on, &spec_on);
    assert!(opts.pinned);
    let params = tool::parameters_schema_with(&opts);
    assert!(params["properties"].get("task_id").is_none(), "{params}");
}
