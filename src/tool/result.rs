//! The result JSON: [`ToolResult`], built from a command's outcome
//! ([`render`]) or from a failure ([`error_result`]), with the notices an
//! agent needs (timeout, reset environment, background job) kept when the
//! output is cut to its character budget.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::truncate::{truncate_middle, truncate_middle_with_gaps, Gap};
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{Captured, JobInfo};
use crate::runtime::ExecOutcome;

/// The JSON result of one `terminal` call. Fields serialize in this order;
/// the first three are always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ToolResult {
    /// What the command printed: stdout, then stderr (separated by a newline
    /// when both have text), then notices (timeout, reset environment,
    /// background job) on their own lines. Trailing whitespace is trimmed;
    /// a long output keeps its head and tail (see [`truncate_middle`]).
    pub output: String,
    /// The command's exit code: 124 when it timed out; -1 when the tool
    /// failed (`error` set).
    pub exit_code: i32,
    /// Set only when the tool itself failed (bad arguments, backend failure);
    /// `null` for any command that ran, whatever its exit code.
    pub error: Option<String>,
    /// `"error"` or `"disabled"` (configuration missing) when `error` is set,
    /// as in the seed tool; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The failure's kind (`transient`, `instance_gone`, `invalid_input`, …)
    /// when `error` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// The command ran into its timeout and was killed.
    pub timed_out: bool,
    /// Some output was left out (by the capture limit or the character
    /// limit); a marker in `output` shows where.
    pub truncated: bool,
    /// The command ran in a fresh environment because the task's previous
    /// one ended: files and background processes from earlier calls are gone.
    pub instance_restarted: bool,
    /// Time of the call in milliseconds, including waiting for the
    /// environment to start; 0 when the tool failed.
    pub duration_ms: u64,
    /// The part of `duration_ms` spent before the command began: waiting
    /// behind the task's earlier commands, for an instance slot
    /// (`max_instances`), and for the instance to start.
    pub queued_ms: u64,
    /// The job a background command started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobInfo>,
}

impl ToolResult {
    /// The result as a JSON string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Serializing plain strings and numbers cannot fail; keep the
            // contract (always valid JSON) even if it somehow did.
            json!({"output": "", "exit_code": -1,
                   "error": format!("result could not be serialized: {e}"),
                   "status": "error"})
            .to_string()
        })
    }

    /// Whether the tool failed (as opposed to the command exiting non-zero).
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// The result of a tool failure: `exit_code` -1, empty output, the error's
/// message, `status` `"disabled"` for a configuration error (like the seed's
/// missing API key) and `"error"` otherwise.
pub fn error_result(err: &Error) -> ToolResult {
    let status = if err.kind() == ErrorKind::Config {
        "disabled"
    } else {
        "error"
    };
    ToolResult {
        output: String::new(),
        exit_code: -1,
        error: Some(err.message().to_string()),
        status: Some(status),
        error_kind: Some(err.kind()),
        timed_out: false,
        truncated: false,
        instance_restarted: false,
        duration_ms: 0,
        queued_ms: 0,
        job: None,
    }
}

/// Turns a command's outcome (or the failure to run it) into the tool's
/// result, with `output` at most `max_chars` characters. The timeout notice
/// states the command's measured run time; [`terminal`](super::terminal) states the timeout
/// it asked for instead. For a started background job the backend's
/// launcher stdout is replaced by the job's description (the command's own
/// output goes to the job log); stderr is kept.
pub fn render(result: Result<ExecOutcome>, max_chars: usize) -> ToolResult {
    render_with_timeout(result, max_chars, None)
}

/// [`render`], with the timeout the command ran under when known.
pub(crate) fn render_with_timeout(
    result: Result<ExecOutcome>,
    max_chars: usize,
    timeout: Option<Duration>,
) -> ToolResult {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => return error_result(&err),
    };
    // A background start's stdout is the backend launcher's own report
    // (pid, log path; the command's output goes to the job log), which
    // the job text below states uniformly for every backend.
    let mut body = Body::default();
    if outcome.job.is_none() {
        body.push_captured(&outcome.stdout);
    }
    if !outcome.stderr.is_empty() {
        if !body.text.is_empty() && !body.text.ends_with('\n') {
            body.push_text("\n");
        }
        body.push_captured(&outcome.stderr);
    }
    // Like the seed's `.strip()`, but only at the end: leading indentation
    // of the first line can matter.
    body.trim_end();

    let mut notices: Vec<String> = Vec::new();
    if outcome.timed_out {
        let after = timeout.unwrap_or(outcome.duration);
        notices.push(format!(
            "[command timed out after {} and was killed; exit code {}]",
            format_secs(after),
            outcome.exit_code
        ));
    }
    if outcome.oom_killed {
        notices.push(format!(
            "[the command was killed by the task's memory limit (exit code {}); use less \
             memory, or ask for a higher limit]",
            outcome.exit_code
        ));
    }
    if let Some(job) = &outcome.job {
        notices.push(job_text(job));
    }
    if let Some(reason) = outcome.instance_restarted {
        notices.push(format!(
            "[the environment was reset before this command: {}; files and background \
             processes from earlier calls are gone]",
            reason.notice()
        ));
    }
    if let Some(setup) = outcome.setup.as_ref().filter(|s| s.reapplied) {
        notices.push(format!(
            "[the task's environment spec was applied again on the fresh instance: {} file(s) \
             placed, {} setup command(s) run]",
            setup.files_placed,
            setup.steps.len()
        ));
    }

    let (output, cut) = assemble(&body.text, &body.gaps, &notices, max_chars);
    ToolResult {
        output,
        exit_code: outcome.exit_code,
        error: None,
        status: None,
        error_kind: None,
        timed_out: outcome.timed_out,
        truncated: cut || outcome.stdout.is_truncated() || outcome.stderr.is_truncated(),
        instance_restarted: outcome.instance_restarted.is_some(),
        duration_ms: u64::try_from((outcome.queued + outcome.duration).as_millis())
            .unwrap_or(u64::MAX),
        queued_ms: u64::try_from(outcome.queued.as_millis()).unwrap_or(u64::MAX),
        job: outcome.job,
    }
}

/// The output text being built, with the capture markers' positions so
/// that a cut can count the bytes they stand for.
#[derive(Default)]
struct Body {
    text: String,
    /// Characters in `text`.
    chars: usize,
    gaps: Vec<Gap>,
}

impl Body {
    fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
        self.chars += text.chars().count();
    }

    fn push_captured(&mut self, cap: &Captured) {
        self.push_text(&cap.head);
        if cap.dropped_bytes > 0 {
            let marker = Captured::gap_marker(cap.dropped_bytes);
            let start = self.chars;
            self.push_text(&marker);
            self.gaps.push(Gap {
                start,
                len: self.chars - start,
                bytes: cap.dropped_bytes,
            });
        }
        self.push_text(&cap.tail);
    }

    fn trim_end(&mut self) {
        let keep = self.text.trim_end().len();
        self.chars -= self.text[keep..].chars().count();
        self.text.truncate(keep);
        // Trimming may shorten a marker whose tail was only whitespace.
        let chars = self.chars;
        self.gaps.retain(|g| g.start < chars);
        for g in &mut self.gaps {
            g.len = g.len.min(chars - g.start);
        }
    }
}

/// Body plus notices within `max_chars`: the body is cut first so that the
/// notices survive; only when they alone do not fit is the whole cut.
fn assemble(body: &str, gaps: &[Gap], notices: &[String], max_chars: usize) -> (String, bool) {
    let notes = notices.join("\n");
    if notes.is_empty() {
        return truncate_middle_with_gaps(body, max_chars, gaps);
    }
    if body.is_empty() {
        return truncate_middle(&notes, max_chars);
    }
    let reserve = notes.chars().count() + 1;
    if reserve < max_chars {
        let (body, cut) = truncate_middle_with_gaps(body, max_chars - reserve, gaps);
        let body = body.trim_end();
        let text = if body.is_empty() {
            notes
        } else {
            format!("{body}\n{notes}")
        };
        return (text, cut);
    }
    truncate_middle_with_gaps(&format!("{body}\n{notes}"), max_chars, gaps)
}

/// The lines telling the agent about a background job and how to handle it.
fn job_text(job: &JobInfo) -> String {
    let log = quote(&job.log_file);
    let exit = quote(&job.exit_file);
    let pid = job
        .pid
        .map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
    let mut text = format!(
        "Background job {} started ({pid}). Log: {}. Exit code file: {} (written when the job ends).\n\
         Read its output: tail -n 50 {log}\n\
         Check whether it ended: test -f {exit} && cat {exit} || echo running",
        job.id, job.log_file, job.exit_file
    );
    if let Some(pid) = job.pid {
        let _ = write!(text, "\nStop it: kill -- -{pid}");
    }
    let _ = write!(
        text,
        "\nOr follow it with the job_output tool (job_id {}, offset 0, then each next_offset; \
         wait for new output instead of sleeping) and stop it with job_kill.",
        job.id
    );
    text
}

/// `path` quoted for a shell command line when it needs quoting.
fn quote(path: &str) -> String {
    match shlex::try_quote(path) {
        Ok(q) => q.into_owned(),
        Err(_) => path.to_string(),
    }
}

/// `2 s`, `2.5 s`: seconds to one decimal, without a needless `.0`.
fn format_secs(d: Duration) -> String {
    let tenths = (d.as_secs_f64() * 10.0).round() as u64;
    if tenths % 10 == 0 {
        format!("{} s", tenths / 10)
    } else {
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_secs_drops_needless_decimals() {
        assert_eq!(format_secs(Duration::from_secs(2)), "2 s");
        assert_eq!(format_secs(Duration::from_millis(2_013)), "2 s");
        assert_eq!(format_secs(Duration::from_millis(2_500)), "2.5 s");
        assert_eq!(format_secs(Duration::from_millis(120_000)), "120 s");
    }

    #[test]
    fn notices_survive_a_cut_body() {
        let notes = vec!["[notice]".to_string()];
        let (out, cut) = assemble(&"y".repeat(500), &[], &notes, 200);
        assert!(cut);
        assert!(out.ends_with("\n[notice]"), "{out}");
        assert!(out.chars().count() <= 200);
    }
}
