//! The shell text this backend sends to a VM.
//!
//! The exec API takes one string, run by the server's shell, and has no
//! timeout, no environment and no background mode, so this module owns
//! turning an [`ExecSpec`] into that string.
//!
//! A command travels verbatim in a quoted here-document that a fresh bash
//! reads as its script (`exec bash /dev/fd/3 3<<'DELIM'`): no quoting, so
//! its size grows by a fixed overhead only, and no shell but that bash ever
//! parses it, so a heredoc, `exit`, a syntax error, a trailing backslash or
//! comment in it cannot reach the text around it. The delimiter is chosen so
//! that no line of the command equals it. The server's shell runs only POSIX
//! text (`export`, `exec`, a redirection) and `exec`s, so a foreground
//! command costs one process more than the server's own shell, the same as
//! a bare `bash -c '<cmd>'`.
//!
//! Foreground deadlines are enforced inside the VM by a per-instance
//! watchdog (a bash loop, [`WATCHDOG`]) that the first command starts and
//! every command checks with builtins only. Each command is marked with
//! `HECATE_EXEC_ID=<id>` in its environment (inherited by everything it
//! starts, `setsid` children included) and appends `<id> <pid> <start>
//! <timeout>` to the instance's registration log. At the deadline, if the
//! command's shell is still running, the watchdog sends TERM, then after the
//! kill grace KILL, to every process whose `/proc/<pid>/environ` carries the
//! mark: the whole tree, and nothing of earlier calls. A process that clears
//! its environment (`env -i`) escapes the sweep. The registration log lives
//! on tmpfs (`/dev/shm`, else `/tmp`; `$HECATE_RUNTIME_DIR` if set) and grows
//! by about 60 bytes a command. With no deadline pending the watchdog sleeps
//! until a command wakes it.
//!
//! [`ExecSpec`]: crate::ExecSpec

use std::time::Duration;

use crate::error::{Error, Result};
use crate::provider::{JobInfo, MAX_COMMAND_BYTES};

/// The longest text one exec request may carry: Linux refuses a single
/// argument longer than 128 KiB (`MAX_ARG_STRLEN`, counting its NUL), and
/// the server passes the text to its shell as one argument.
pub(crate) const MAX_SENT_BYTES: usize = 128 * 1024 - 1;

/// The longest command this backend runs: [`MAX_COMMAND_BYTES`] less the
/// room the wrapping needs. Checked, together with the final size, before
/// anything is sent.
pub(crate) const MORPH_MAX_COMMAND_BYTES: usize = MAX_COMMAND_BYTES - 2048;

/// The environment variable that marks every process of one foreground
/// command.
pub(crate) const EXEC_MARK: &str = "HECATE_EXEC_ID";

/// The watchdog's bash script. Arguments: the instance's registration
/// directory and the kill grace in milliseconds. It sleeps on a FIFO it
/// holds open itself (no `sleep` process) until the earliest deadline it
/// knows, or until a command registering itself writes a byte to the FIFO;
/// with no deadline pending it sleeps until woken, so an idle instance costs
/// no CPU. Awake, it reads new registrations from the log like `tail -f`
/// (keeping a partly written line for the next round), and at each deadline
/// sweeps `/proc` if the command's shell still runs: it stops every marked
/// process first, then sends TERM, then lets them go on. (`/proc/[0-9]*`
/// lists pids in text order, so a child can come before its shell: a child
/// killed first let its shell run the command's next line and exit 0.)
pub(crate) const WATCHDOG: &str = r#"D=$1; G=$2
exec 8<> "$D/wd.fifo" 7< "$D/reg" || exit 1
us() { now=${EPOCHREALTIME//[!0-9]/}; now=$((10#$now)); }
secs() { printf -v ws %d.%06d $(($1 / 1000000)) $(($1 % 1000000)); }
nap() { while us; ((now < $1)); do secs $(($1 - now)); read -t $ws -N 1 -u 8; done; }
declare -A dl pd
part=
mk() { local e; { mapfile -d '' -t e < "/proc/$1/environ"; } 2>/dev/null || return 1
  for e in "${e[@]}"; do [[ $e == "HECATE_EXEC_ID=$2" ]] && return 0; done; return 1; }
sw() { local r p n
  for r in 1 2 3; do n=0
    for p in /proc/[0-9]*; do p=${p#/proc/}; [[ $p == $$ ]] && continue
      mk "$p" "$1" && { kill -s "$2" "$p" 2>/dev/null; n=1; }; done
    (( n )) || return 0; done; }
while :; do
  while IFS= read -r l <&7; do l=$part$l; part=
    read -r id p st ms <<< "$l"; st=${st//[!0-9]/}
    [[ $p =~ ^[0-9]+$ && $st =~ ^[0-9]+$ && $ms =~ ^[0-9]+$ ]] || continue
    dl[$id]=$(( 10#$st + ms * 1000 )); pd[$id]=$p; done
  part+=$l
  us
  for id in "${!dl[@]}"; do (( now >= dl[$id] )) || continue
    if mk "${pd[$id]}" "$id"; then sw "$id" STOP; sw "$id" TERM; sw "$id" CONT
      us; nap $((now + G * 1000))
      sw "$id" KILL; fi
    unset "dl[$id]" "pd[$id]"; done
  n=; for id in "${!dl[@]}"; do [[ -z $n ]] || ((dl[$id] < n)) && n=${dl[$id]}; done
  [[ -z $n ]] && { read -N 1 -u 8; continue; }
  us; w=$((n - now)); ((w < 1000)) && w=1000; secs $w; read -t $ws -N 1 -u 8
done"#;

/// The environment variable that, when set in the VM, names the directory
/// under which the watchdog keeps its files instead of `/dev/shm`. The
/// simulator sets it to each instance's own directory, so that the files go
/// with the instance; on a VM it is normally unset.
pub(crate) const RUNTIME_DIR_VAR: &str = "HECATE_RUNTIME_DIR";

/// The name of an instance's watchdog directory: one per instance (named by
/// a hash of its id, so the path has a fixed length), since simulated
/// instances may share a host.
fn exec_dir_name(instance_id: &str) -> String {
    format!("hecate-exec-{:016x}", fnv1a(instance_id.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `script` as text for the server's shell: `prelude` (POSIX shell, run by
/// the server's shell), then a bash that reads `script` from a quoted
/// here-document as its own script.
fn carry(prelude: &str, script: &str) -> String {
    let mut n = 0u32;
    let delim = loop {
        let d = format!("HECATE_EOF_{n}");
        if !script.lines().any(|l| l == d) {
            break d;
        }
        n += 1;
    };
    // `exec 3<&-`: the user's processes must not inherit the script.
    format!("{prelude}exec bash /dev/fd/3 3<<'{delim}'\nexec 3<&-\n{script}\n{delim}\n")
}

/// The final size check: both the command against the documented limit
/// and the text to send against what one argument can hold.
fn check_size(command: &str, sent: &str) -> Result<()> {
    if command.contains('\0') {
        return Err(Error::invalid_input(
            "the command contains a NUL byte, which no shell can run",
        ));
    }
    if command.len() > MORPH_MAX_COMMAND_BYTES || sent.len() > MAX_SENT_BYTES {
        return Err(Error::invalid_input(format!(
            "command is {} bytes long; on MorphCloud the limit is {MORPH_MAX_COMMAND_BYTES} \
             bytes (write a long script to a file and run the file)",
            command.len()
        )));
    }
    Ok(())
}

/// A foreground command, wrapped so that the VM enforces `timeout` (see the
/// [module docs](self)). Its mark is made in the VM from the server shell's
/// pid and the time (`$$-$EPOCHREALTIME`; the pid alone where the server's
/// shell has no `EPOCHREALTIME`), so the text of a command is the same
/// each time it is sent. With
/// `install`, the text also writes the watchdog's script into the VM (the
/// first command of an instance); later commands only start it from there
/// if it is not running, so a warm command carries a few hundred bytes.
pub(crate) fn foreground(
    command: &str,
    instance_id: &str,
    timeout: Duration,
    kill_grace: Duration,
    install: bool,
) -> Result<String> {
    let name = exec_dir_name(instance_id);
    let grace_ms = millis(kill_grace);
    let timeout_ms = millis(timeout);
    let install = if install {
        format!(
            "mkdir -p \"$D\" && printf '%s' {} > \"$D/{WATCHDOG_FILE}\"\n",
            quote(WATCHDOG)?
        )
    } else {
        String::new()
    };
    // Builtins only on the warm path: `read`, `[`, `echo` with redirections.
    // A dead (or never started) watchdog is started again; its mark is
    // cleared so that a timeout of this command cannot kill it.
    let script = format!(
        "D=${{{RUNTIME_DIR_VAR}:-/dev/shm}}; [ -d \"$D\" ] || D=/tmp; D=\"$D/{name}\"\n{install}\
         {{ read -r w < \"$D/wd.pid\" && [ -d /proc/$w ]; }} 2>/dev/null || {{ \
         rm -f \"$D/wd.fifo\" && mkfifo \"$D/wd.fifo\" && : >> \"$D/reg\" && \
         {{ {EXEC_MARK}= setsid bash \"$D/{WATCHDOG_FILE}\" \"$D\" {grace_ms} \
         </dev/null >/dev/null 2>&1 & echo $! > \"$D/wd.pid\"; }}; }}\n\
         echo \"${EXEC_MARK} $$ $EPOCHREALTIME {timeout_ms}\" >> \"$D/reg\"; \
         {{ [ -p \"$D/wd.fifo\" ] && printf x 1<> \"$D/wd.fifo\"; }} 2>/dev/null; unset D w\n\
         {command}",
    );
    let sent = carry(&format!("export {EXEC_MARK}=$$-$EPOCHREALTIME; "), &script);
    check_size(command, &sent)?;
    Ok(sent)
}

/// The watchdog's script file in the instance's directory; its name is in
/// the watchdog's command line.
pub(crate) const WATCHDOG_FILE: &str = "hecate-watchdog.sh";

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000).max(1)).unwrap_or(u64::MAX)
}

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
/// The command is written to `<job>.sh` with builtins (it arrives in a
/// here-document, like a foreground command) and run as a script of its
/// own, so that an `exit`, a trailing comment or an unfinished line in it
/// cannot skip writing the exit file, and its size is not bounded by one
/// argument.
pub(crate) fn background(command: &str, instance_id: &str, job_id: u64) -> Result<Background> {
    let dir = job_dir(instance_id);
    let log_file = format!("{dir}/{job_id}.log");
    let exit_file = format!("{dir}/{job_id}.exit");
    let exit_tmp = format!("{dir}/{job_id}.exit.tmp");
    let script_file = format!("{dir}/{job_id}.sh");
    let job_shell =
        format!("bash {script_file}; echo $? > {exit_tmp} && mv -f {exit_tmp} {exit_file}");
    let mut n = 0u32;
    let inner = loop {
        let d = format!("HECATE_JOB_{n}");
        if !command.lines().any(|l| l == d) {
            break d;
        }
        n += 1;
    };
    // A stale exit file (from a snapshot taken while jobs existed) would
    // make a new job look finished, so it goes first.
    // `mkdir ... || exit` rather than `mkdir ... && nohup ... &`: the latter
    // would background the whole `&&` list in a subshell, and `$!` would be
    // the subshell's pid instead of the job's.
    let script = format!(
        "mkdir -p {dir} && chmod 700 {dir} || exit 1; rm -f {exit_file} {exit_tmp}\n\
         IFS= read -r -d '' c <<'{inner}'\n{command}\n{inner}\n\
         printf '%s' \"${{c%?}}\" > {script_file} || exit 1; unset c\n\
         nohup setsid bash -c {} > {log_file} 2>&1 < /dev/null & echo $!",
        quote(&job_shell)?
    );
    let sent = carry("", &script);
    check_size(command, &sent)?;
    Ok(Background {
        script: sent,
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

    /// Runs shell text the way the VM does (`bash -c <text>`), with the
    /// watchdog's files in a directory of its own; ends the watchdog after.
    fn run(script: &str) -> std::process::Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("/bin/bash")
            .arg("-c")
            .arg(script)
            .env(RUNTIME_DIR_VAR, dir.path())
            .output()
            .expect("bash runs");
        let pid_file = dir
            .path()
            .join(exec_dir_name("unit-test-vm"))
            .join("wd.pid");
        if let Ok(pid) = std::fs::read_to_string(pid_file) {
            let _ = Command::new("/bin/kill").arg(pid.trim()).status();
        }
        out
    }

    fn fg(command: &str) -> Result<String> {
        foreground(
            command,
            "unit-test-vm",
            Duration::from_secs(10),
            Duration::from_secs(1),
            true,
        )
    }

    #[test]
    fn nul_is_invalid_input() {
        let err = fg("echo a\0b").expect_err("nul");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn wrapped_commands_run_verbatim() {
        let nasty = "printf '%s|' \"it's\" '$(echo no)' \\\\ \"tab\there\"; echo\n\
                     cat <<EOF\nHECATE_EOF_0\n$HECATE_EXEC_ID\nEOF\necho 'línea ✓' # done \\";
        let direct = run(nasty);
        let via = run(&fg(nasty).expect("quotable"));
        assert_eq!(via.status.code(), Some(0));
        let via = String::from_utf8_lossy(&via.stdout).into_owned();
        let (before, after) = via.split_once("HECATE_EOF_0\n").expect("the heredoc line");
        let (mark, after) = after.split_once('\n').expect("the mark's line");
        assert!(mark.contains('-'), "pid-time mark: {mark:?}");
        assert_eq!(
            format!("{before}HECATE_EOF_0\n\n{after}"),
            String::from_utf8_lossy(&direct.stdout)
        );
    }

    #[test]
    fn wrapped_command_keeps_its_exit_code_and_syntax_errors() {
        assert_eq!(run(&fg("exit 7").expect("ok")).status.code(), Some(7));
        assert_eq!(run(&fg("echo a; (").expect("ok")).status.code(), Some(2));
        assert_eq!(run(&fg("false # \\").expect("ok")).status.code(), Some(1));
    }

    #[test]
    fn size_is_checked_before_sending() {
        let fits = format!("echo {}", "'".repeat(MORPH_MAX_COMMAND_BYTES - 5));
        let sent = fg(&fits).expect("within the limit");
        assert!(sent.len() <= MAX_SENT_BYTES, "{}", sent.len());
        let over = format!("{fits}'");
        let err = fg(&over).expect_err("over the limit");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        let err = background(&over, "vm", 1).expect_err("over the limit");
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(background(&fits, "vm", 1).expect("fits").script.len() <= MAX_SENT_BYTES);
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
        assert!(bg.script.contains("; exit 3 # trailing\n"));
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("noise\n 42 \n\n"), Some(42));
        assert_eq!(parse_pid("nope"), None);
        assert_eq!(parse_pid(""), None);
    }
}
