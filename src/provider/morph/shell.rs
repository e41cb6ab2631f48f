//! The shell text this backend sends to a VM.
//!
//! The exec API takes one string and has no timeout, no environment and no
//! background mode, so this module owns turning an [`ExecSpec`] into shell
//! text that the VM runs with `bash -c`: a foreground command wrapped in
//! coreutils `timeout` (which kills the command's whole process group at the
//! deadline), and a background command detached into its own session with its
//! own log and exit file. The user's command is always passed as one quoted
//! word, so any text (quotes, `$(...)`, newlines, backslashes, unicode) runs
//! verbatim; only NUL cannot be passed and is invalid input.
//!
//! [`ExecSpec`]: crate::ExecSpec

use std::time::Duration;

use crate::error::{Error, Result};
use crate::provider::JobInfo;

/// Where background jobs keep their logs and exit files inside the VM, one
/// directory per instance (`<JOB_ROOT>/<instance id>/`). On a real VM the
/// instance level is redundant, but it keeps jobs of different instances
/// apart wherever instances share a `/tmp` (the simulator runs them all on
/// one host), and files left in a snapshot by another instance cannot be
/// mistaken for this one's.
pub(crate) const JOB_ROOT: &str = "/tmp/hecate/jobs";

/// The job directory of an instance; characters other than
/// `[A-Za-z0-9_.-]` in the id become `_`, so the id cannot leave the root.
pub(crate) fn job_dir(instance_id: &str) -> String {
    let safe: String = instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.is_empty() || safe.chars().all(|c| c == '.') {
        format!("_{safe}")
    } else {
        safe
    };
    format!("{JOB_ROOT}/{safe}")
}

/// Quotes `text` as one shell word.
pub(crate) fn quote(text: &str) -> Result<String> {
    shlex::try_quote(text).map(|q| q.into_owned()).map_err(|_| {
        Error::invalid_input("the command contains a NUL byte, which no shell can run")
    })
}

/// A duration as a `timeout(1)` argument: seconds with millisecond
/// precision, rounded up, and never zero (zero would mean "no timeout").
pub(crate) fn secs_arg(d: Duration) -> String {
    let millis = d.as_nanos().div_ceil(1_000_000).max(1);
    format!("{}.{:03}s", millis / 1000, millis % 1000)
}

/// The command wrapped so that the VM itself enforces `timeout`: TERM to the
/// whole process group at the deadline, KILL `kill_grace` later. `timeout`
/// exits 124 when it fired (137 if KILL was needed).
pub(crate) fn with_timeout(
    command: &str,
    timeout: Duration,
    kill_grace: Duration,
) -> Result<String> {
    Ok(format!(
        "timeout -k {} {} bash -c {}",
        secs_arg(kill_grace),
        secs_arg(timeout),
        quote(command)?
    ))
}

/// A background job's launcher and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Background {
    /// Shell text that starts the job and prints its pid.
    pub script: String,
    /// The job, without its pid (known once the launcher has run).
    pub job: JobInfo,
}

/// Shell text that starts `command` as job `job_id`, detached (own session,
/// so its process group is its pid), with stdout and stderr in its own log,
/// and prints the job's pid. When the command ends its exit code is written
/// to the exit file, atomically, so a reader never sees a half-written file.
///
/// The command runs in a `bash -c` of its own inside the job's shell, so that
/// an `exit`, a trailing comment or an unfinished line in it cannot skip
/// writing the exit file.
pub(crate) fn background(command: &str, instance_id: &str, job_id: u64) -> Result<Background> {
    let dir = job_dir(instance_id);
    let log_file = format!("{dir}/{job_id}.log");
    let exit_file = format!("{dir}/{job_id}.exit");
    let exit_tmp = format!("{dir}/{job_id}.exit.tmp");
    let job_shell = format!(
        "bash -c {}; echo $? > {exit_tmp} && mv -f {exit_tmp} {exit_file}",
        quote(command)?
    );
    // A stale exit file (from a snapshot taken while jobs existed) would
    // make a new job look finished, so it goes first.
    // `mkdir ... || exit` rather than `mkdir ... && nohup ... &`: the latter
    // would background the whole `&&` list in a subshell, and `$!` would be
    // the subshell's pid instead of the job's.
    let script = format!(
        "mkdir -p {dir} || exit 1; rm -f {exit_file} {exit_tmp}; \
         nohup setsid bash -c {} > {log_file} 2>&1 < /dev/null & echo $!",
        quote(&job_shell)?
    );
    Ok(Background {
        script,
        job: JobInfo {
            id: job_id.to_string(),
            pid: None,
            log_file,
            exit_file,
        },
    })
}

/// The pid a background launcher printed: the last line that is a number.
pub(crate) fn parse_pid(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse::<u32>().ok())
        .filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs shell text the way the VM does (`bash -c <text>`).
    fn run(script: &str) -> std::process::Output {
        Command::new("/bin/bash")
            .arg("-c")
            .arg(script)
            .output()
            .expect("bash runs")
    }

    #[test]
    fn durations_round_up_to_milliseconds() {
        assert_eq!(secs_arg(Duration::from_secs(5)), "5.000s");
        assert_eq!(secs_arg(Duration::from_micros(1500)), "0.002s");
        assert_eq!(secs_arg(Duration::ZERO), "0.001s");
        assert_eq!(secs_arg(Duration::from_millis(90_250)), "90.250s");
    }

    #[test]
    fn nul_is_invalid_input() {
        let err = with_timeout("echo a\0b", Duration::from_secs(1), Duration::from_secs(1))
            .expect_err("nul");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn wrapped_commands_run_verbatim() {
        let nasty =
            "printf '%s|' \"it's\" '$(echo no)' \\\\ \"tab\there\"; echo\necho 'línea ✓' # done";
        let wrapped =
            with_timeout(nasty, Duration::from_secs(10), Duration::from_secs(1)).expect("quotable");
        let direct = run(nasty);
        let via = run(&wrapped);
        assert_eq!(via.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&via.stdout),
            String::from_utf8_lossy(&direct.stdout)
        );
    }

    #[test]
    fn wrapped_command_keeps_its_exit_code() {
        let wrapped =
            with_timeout("exit 7", Duration::from_secs(10), Duration::from_secs(1)).expect("ok");
        assert_eq!(run(&wrapped).status.code(), Some(7));
    }

    #[test]
    fn job_dirs_stay_under_the_root() {
        assert_eq!(job_dir("morphvm_x-1.2"), "/tmp/hecate/jobs/morphvm_x-1.2");
        assert_eq!(job_dir("../etc"), "/tmp/hecate/jobs/.._etc");
        assert_eq!(job_dir(".."), "/tmp/hecate/jobs/_..");
        assert_eq!(job_dir(""), "/tmp/hecate/jobs/_");
        assert_eq!(job_dir("a b/$c"), "/tmp/hecate/jobs/a_b__c");
    }

    #[test]
    fn background_script_quotes_and_parses() {
        let bg = background("echo \"$HOME\" 'x'; exit 3 # trailing", "morphvm_a1", 7).expect("ok");
        assert_eq!(bg.job.id, "7");
        assert_eq!(bg.job.log_file, "/tmp/hecate/jobs/morphvm_a1/7.log");
        assert_eq!(bg.job.exit_file, "/tmp/hecate/jobs/morphvm_a1/7.exit");
        assert!(bg.script.contains("& echo $!"));
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("noise\n 42 \n\n"), Some(42));
        assert_eq!(parse_pid("nope"), None);
        assert_eq!(parse_pid(""), None);
    }
}
