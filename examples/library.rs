//! Embedding Hecate through its cloneable handle: run a few commands for
//! two tasks, list the live tasks, and shut down cleanly.
//!
//! `cargo run --example library` (local backend; set HECATE_BACKEND=morph
//! and MORPH_API_KEY for MorphCloud).

use std::time::Duration;

use hecate::{tool, Config, ExecRequest, Runtime};

fn main() -> Result<(), hecate::Error> {
    // First, before any thread: this binary also serves as the local
    // backend's per-instance launcher (`<exe> __launcher ...`).
    hecate::launcher::run_if_requested();
    actix_rt::System::new().block_on(run())
}

async fn run() -> Result<(), hecate::Error> {
    env_logger::init();
    let rt = Runtime::start(Config::from_env()?)?;

    // Files persist within a task; environment variables do not.
    rt.exec(
        "task-a",
        ExecRequest::new("echo 'print(6 * 7)' > answer.py"),
    )
    .await?;
    let out = rt
        .exec("task-a", ExecRequest::new("python3 answer.py"))
        .await?;
    println!("task-a says {}", out.stdout.to_text().trim());

    // Another task cannot see task-a's files.
    let out = rt.exec("task-b", ExecRequest::new("ls answer.py")).await?;
    println!(
        "task-b: exit {} ({})",
        out.exit_code,
        out.stderr.to_text().trim()
    );

    // A command that runs too long is killed at its timeout: exit code 124.
    let out = rt
        .exec(
            "task-b",
            ExecRequest::new("sleep 30").timeout(Duration::from_secs(1)),
        )
        .await?;
    println!("timed out: {} (exit {})", out.timed_out, out.exit_code);

    // The LLM-facing contract: JSON arguments in, JSON result out.
    let json = tool::terminal_json(&rt, r#"{"command": "uname -s", "task_id": "task-a"}"#).await;
    println!("tool result: {json}");

    for task in rt.tasks().await? {
        println!(
            "live: {} on {:?} ({:?})",
            task.task_id, task.instance_id, task.state
        );
    }
    let report = rt.shutdown(Duration::from_secs(10)).await?;
    println!(
        "stopped {} instance(s); clean: {}",
        report.stopped.len(),
        report.is_clean()
    );
    Ok(())
}
