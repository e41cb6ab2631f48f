//! The persistent shell: the working directory and exported variables carry
//! over from one call of a task to the next, as in a terminal.
//!
//! Every call still runs in a fresh non-interactive bash (no long-lived
//! shell parsing prompts, which hangs on syntax errors, pagers and lost
//! output). The runtime wraps a command's text ([`wrap`]) so that its bash
//! first restores the state the previous call saved and saves it again when
//! it exits. The wrapping is shell text only, so it works the same on every
//! backend; it uses bash builtins only (no extra process).
//!
//! A backend that starts the bash itself can do better: the local and
//! sandbox backends' launcher keeps the state and starts each call's bash
//! in it, and the bash saves with one `export -p` ([`native`]); the runtime
//! then passes the command unwrapped
//! ([`Provider::keeps_shell_state`](crate::provider::Provider::keeps_shell_state)).
//!
//! # The wrapped text
//!
//! Line 1 is the prelude, then `read` of the command from a quoted
//! here-document into a variable, then `eval` of it; the here-document's
//! body (the command verbatim, under a delimiter no line of it equals)
//! follows, and nothing after it. The command thus runs in the shell that
//! restored the state, and no text of it can reach the wrapper: an `exit`,
//! a heredoc, a trailing backslash or comment, or a syntax error act as in a
//! bare `bash -c`. Because the `eval` is on line 1, bash numbers the
//! command's lines from 1 as it would, and the output, warnings and exit
//! code are the bare command's, with two differences: a syntax error is
//! reported as `bash: eval: line N: …` where a bare `bash -c` says
//! `bash: -c: line N: …` (same message, line and exit code 2), and `set -x`
//! traces with one more `+` (`++ cmd`). The command's text stays in the
//! shell variable `__hecate_c` (not exported) while it runs.
//!
//! The prelude, with builtins only:
//!
//! 1. takes the state's path from the fresh environment, before anything the
//!    command does can change it: `${TMPDIR:-/tmp}/.hecate-shell-<hash of
//!    the instance id>` (the local backend's `TMPDIR` is the instance's own
//!    `tmp/`; a VM has its own `/tmp`; the hash keeps simulated instances
//!    sharing a host apart, and a replaced instance starts fresh);
//! 2. for a foreground call, notes the fresh environment's exported names
//!    (`compgen -e`) in `<path>.b`;
//! 3. restores the newest complete of two slots (`<path>.0`, `<path>.1`):
//!    `cd` to the saved directory, the saved exports, and `unset` of the
//!    exported variables the previous call had removed;
//! 4. for a foreground call, sets an `EXIT` trap that saves the state into
//!    the *other* slot, between a first line numbering it and a last line
//!    marking it complete, and a `TERM` trap that clears the `EXIT` trap and
//!    lets the shell die of the signal.
//!
//! Files are written in place (`1<>`), never truncated: truncating and
//! rewriting a file makes ext4 write it out at once (about 1 ms); a slot
//! counts only up to its own end mark.
//!
//! Then line 1 reads the command, unsets the prelude's variables (leaving
//! `$?` at 0 for the command) and `eval`s it.
//!
//! A call killed at its timeout (TERM, then KILL) therefore saves nothing,
//! and a save cut short leaves an incomplete slot that is ignored: the
//! state stays as it was. The exit status is the command's (an `EXIT` trap
//! does not change it). Background jobs restore but never save.
//!
//! Never saved: variables whose name contains one of the secret patterns
//! (case-insensitive; [`ShellConfig::secret_patterns`]), the shell's own
//! (`PWD`, `OLDPWD`, `SHLVL`, `_`), Hecate's markers (`HECATE_*`), read-only
//! variables and arrays. Shell functions, aliases, options and unexported
//! variables are not saved either.
//!
//! Limits: a command that replaces the shell (`exec prog`), sets its own
//! `EXIT` or `TERM` trap, or kills its own shell saves nothing (or, with its
//! own `TERM` trap, may save at a timeout); `trap -p` shows the wrapper's
//! traps.

use crate::error::{Error, Result};
use crate::provider::MAX_COMMAND_BYTES;

/// The default secret patterns: a variable whose name contains one of them
/// (case-insensitive) is never saved.
pub const DEFAULT_SECRET_PATTERNS: [&str; 4] = ["KEY", "TOKEN", "SECRET", "PASSWORD"];

/// Most secret patterns accepted.
pub const MAX_SECRET_PATTERNS: usize = 32;

/// Longest secret pattern accepted, in bytes.
pub const MAX_SECRET_PATTERN_BYTES: usize = 64;

/// The longest wrapped text: the room every backend's wrapping leaves
/// (MorphCloud's is the smallest: [`MAX_COMMAND_BYTES`] less 2 KiB).
pub const MAX_WRAPPED_BYTES: usize = MAX_COMMAND_BYTES - 2048;

/// Settings of the persistent shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellConfig {
    /// Whether calls restore and save the working directory and exported
    /// variables by default (`HECATE_PERSISTENT_SHELL`; default true).
    /// [`ExecRequest::persistent_shell`](crate::ExecRequest::persistent_shell)
    /// overrides it for one call.
    pub persistent: bool,
    /// Variables whose name contains one of these (case-insensitive) are
    /// never saved (`HECATE_SHELL_SECRET_PATTERNS`, comma-separated; default
    /// `KEY,TOKEN,SECRET,PASSWORD`). Letters, digits and `_` only.
    pub secret_patterns: Vec<String>,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            persistent: true,
            secret_patterns: DEFAULT_SECRET_PATTERNS
                .iter()
                .map(|p| (*p).to_string())
                .collect(),
        }
    }
}

impl ShellConfig {
    /// Parses a comma-separated list of secret patterns (blank entries are
    /// skipped), checked like [`validate`](Self::validate).
    pub fn parse_patterns(list: &str) -> Result<Vec<String>> {
        let patterns: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        check_patterns(&patterns)?;
        Ok(patterns)
    }

    /// Checks the secret patterns: at most [`MAX_SECRET_PATTERNS`], each
    /// non-empty, at most [`MAX_SECRET_PATTERN_BYTES`], of ASCII letters,
    /// digits and `_` (the characters of variable names).
    pub fn validate(&self) -> Result<()> {
        check_patterns(&self.secret_patterns)
    }
}

fn check_patterns(patterns: &[String]) -> Result<()> {
    const VAR: &str = "HECATE_SHELL_SECRET_PATTERNS";
    if patterns.len() > MAX_SECRET_PATTERNS {
        return Err(Error::config(format!(
            "{VAR}: {} patterns; at most {MAX_SECRET_PATTERNS} are accepted",
            patterns.len()
        )));
    }
    for p in patterns {
        if p.is_empty() || p.len() > MAX_SECRET_PATTERN_BYTES {
            return Err(Error::config(format!(
                "{VAR}: each pattern must be 1 to {MAX_SECRET_PATTERN_BYTES} characters long"
            )));
        }
        if !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let shown: String = p.chars().take(40).collect();
            return Err(Error::config(format!(
                "{VAR}: pattern {shown:?} may contain only letters, digits and _"
            )));
        }
    }
    Ok(())
}

/// The longest environment entry (`NAME=value` and its NUL) a process can
/// be given (Linux's `MAX_ARG_STRLEN`, 128 KiB): a variable longer than
/// that is not saved, since restoring it would make every program the next
/// call starts fail (`E2BIG`).
pub const MAX_ENTRY: usize = 128 * 1024 - 2;

/// What a wrapped call does with the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Restore, run, save on exit (a foreground call).
    RestoreAndSave,
    /// Restore and run; never save (a background job).
    RestoreOnly,
}

/// `command` wrapped to restore (and, with [`Mode::RestoreAndSave`], save)
/// the shell state of instance `instance_id` (see the [module docs](self)).
/// A command whose wrapped text would exceed [`MAX_WRAPPED_BYTES`] is
/// `invalid_input`, with the limit that applies.
pub fn wrap(command: &str, instance_id: &str, config: &ShellConfig, mode: Mode) -> Result<String> {
    let prelude = prelude(instance_id, config, mode);
    let delim = delimiter(command);
    let overhead = overhead(prelude.len(), delim.len());
    if command.len() + overhead > MAX_WRAPPED_BYTES {
        return Err(too_long(
            command.len(),
            MAX_WRAPPED_BYTES.saturating_sub(overhead),
        ));
    }
    let mut text = String::with_capacity(overhead + command.len());
    text.push_str(&prelude);
    text.push_str(&CARRY.replace("DELIM", &delim));
    text.push('\n');
    text.push_str(command);
    text.push('\n');
    text.push_str(&delim);
    text.push('\n');
    debug_assert_eq!(text.len(), overhead + command.len());
    Ok(text)
}

/// The end of line 1: reads the command from the here-document that
/// follows into a variable and `eval`s it, still on line 1, so that bash
/// numbers the command's lines from 1. `$?` is 0 when the command starts
/// (the `unset` before the `eval`).
const CARRY: &str =
    "IFS= read -r -d '' __hecate_c <<'DELIM'; builtin unset -v __hecate_f __hecate_b \
    __hecate_s __hecate_i __hecate_l __hecate_v __hecate_n __hecate_o __hecate_p __hecate_r; \
    eval \"${__hecate_c%?}\"";

/// Bytes the wrapping adds: the prelude, [`CARRY`] with its delimiter, the
/// newlines around the command and the closing delimiter line.
fn overhead(prelude: usize, delim: usize) -> usize {
    prelude + CARRY.len() - "DELIM".len() + delim + 1 + 1 + delim + 1
}

/// A here-document delimiter that no line of `command` equals.
fn delimiter(command: &str) -> String {
    let mut n = 0u32;
    loop {
        let d = format!("HECATE_SHELL_{n}");
        if !command.lines().any(|l| l == d) {
            return d;
        }
        n += 1;
    }
}

/// The longest command the wrapping accepts with this configuration.
pub fn max_command_bytes(config: &ShellConfig) -> usize {
    let prelude = prelude("", config, Mode::RestoreAndSave);
    MAX_WRAPPED_BYTES.saturating_sub(overhead(prelude.len(), delimiter("").len()))
}

fn too_long(len: usize, limit: usize) -> Error {
    Error::invalid_input(format!(
        "command is {len} bytes long; with the persistent shell the limit is {limit} bytes \
         (write a long script to a file and run the file)"
    ))
}

/// `continue` for names never saved or unset: the shell's own, Hecate's
/// markers, the wrapper's variables, and names matching a secret pattern.
fn skip_names(config: &ShellConfig) -> String {
    let mut s = String::from(
        "case $__hecate_n in PWD|OLDPWD|SHLVL|_|HECATE_*|__hecate_*) continue;; esac; ",
    );
    if !config.secret_patterns.is_empty() {
        s.push_str("case ${__hecate_n^^} in ");
        let alts: Vec<String> = config
            .secret_patterns
            .iter()
            .map(|p| format!("*{}*", p.to_ascii_uppercase()))
            .collect();
        s.push_str(&alts.join("|"));
        s.push_str(") continue;; esac; ");
    }
    s
}

/// The one-line prelude, ending in `; ` so that the rest of line 1
/// follows.
///
/// Files, all written in place (`1<>`, never truncated: truncating and
/// rewriting a file makes ext4 flush it, about 1 ms each):
/// - `<f>.0`, `<f>.1`: the slots. `#hecate-shell-state S N`, N lines of
///   shell (`cd`, `export`, `unset`), `#hecate-shell-end S`, then possibly
///   what an older, longer save left; a slot counts only when its line N+1
///   is the end mark of its own number S.
/// - `<f>.b`: the fresh environment's exported names, then an empty line;
///   `<f>.n`: the exported names at the save, then an empty line.
fn prelude(instance_id: &str, config: &ShellConfig, mode: Mode) -> String {
    let skip = skip_names(config);
    let hash = fnv1a(instance_id.as_bytes());
    let mut p = format!("__hecate_f=${{TMPDIR:-/tmp}}/.hecate-shell-{hash:016x}; ");
    if mode == Mode::RestoreAndSave {
        p.push_str("{ compgen -e; echo; } 2>/dev/null 1<> \"$__hecate_f.b\"; ");
    }
    p.push_str(
        "__hecate_b=0; __hecate_s=; for __hecate_i in 0 1; do \
         { mapfile -t __hecate_l < \"$__hecate_f.$__hecate_i\"; } 2>/dev/null || continue; \
         __hecate_v=${__hecate_l[0]#\"#hecate-shell-state \"}; \
         [[ $__hecate_v == \"${__hecate_l[0]}\" ]] && continue; \
         __hecate_n=${__hecate_v#* }; __hecate_v=${__hecate_v%% *}; \
         [[ -n $__hecate_v && -n $__hecate_n && $__hecate_v$__hecate_n != *[!0-9]* ]] || continue; \
         (( 10#$__hecate_n + 1 < ${#__hecate_l[@]} && 10#$__hecate_v > __hecate_b )) || continue; \
         [[ ${__hecate_l[10#$__hecate_n + 1]} == \"#hecate-shell-end $__hecate_v\" ]] || continue; \
         __hecate_b=$((10#$__hecate_v)); __hecate_s=$__hecate_i; \
         builtin printf -v __hecate_r '%s\\n' \"${__hecate_l[@]:1:10#$__hecate_n}\"; done; \
         [[ -n $__hecate_s ]] && { eval \"$__hecate_r\"; } 2>/dev/null; ",
    );
    if mode == Mode::RestoreAndSave {
        // The save, run by the EXIT trap; no single quote in it (it is
        // quoted with them). The trap's first command turns off xtrace
        // without tracing itself.
        let save = format!(
            "set +eu; {{ compgen -e; echo; }} 2>/dev/null 1<> \"$__hecate_p.n\"; \
             builtin printf -v __hecate_x \"cd -- %q\\n\" \"$PWD\"; __hecate_c=1; \
             {{ mapfile -t __hecate_l < \"$__hecate_p.n\"; }} 2>/dev/null; \
             for __hecate_n in \"${{__hecate_l[@]}}\"; do [[ -n $__hecate_n ]] || break; {skip}\
             [[ ${{!__hecate_n@a}} == *x* && ${{!__hecate_n@a}} != *[raA]* ]] || continue; \
             __hecate_w=${{!__hecate_n}}; (( ${{#__hecate_n}} + ${{#__hecate_w}} < {MAX_ENTRY} )) || continue; \
             builtin printf -v __hecate_y \"export %s=%q\\n\" \"$__hecate_n\" \"${{!__hecate_n}}\"; \
             __hecate_x+=$__hecate_y; __hecate_c=$((__hecate_c + 1)); done; \
             {{ mapfile -t __hecate_l < \"$__hecate_p.b\"; }} 2>/dev/null; \
             for __hecate_n in \"${{__hecate_l[@]}}\"; do [[ -n $__hecate_n ]] || break; {skip}\
             [[ ${{!__hecate_n@a}} == *x* ]] && continue; \
             builtin printf -v __hecate_y \"builtin unset -v %s\\n\" \"$__hecate_n\"; \
             __hecate_x+=$__hecate_y; __hecate_c=$((__hecate_c + 1)); done; \
             builtin printf \"#hecate-shell-state %s %s\\n%s#hecate-shell-end %s\\n\" \
             \"$__hecate_v\" \"$__hecate_c\" \"$__hecate_x\" \"$__hecate_v\" 2>/dev/null 1<> \"$__hecate_o\""
        );
        p.push_str(&format!(
            "[[ $__hecate_s == 0 ]] && __hecate_i=1 || __hecate_i=0; \
             builtin printf -v __hecate_o %q \"$__hecate_f.$__hecate_i\"; \
             builtin printf -v __hecate_p %q \"$__hecate_f\"; \
             builtin trap -- \"{{ set +x; }} 2>/dev/null; __hecate_o=$__hecate_o __hecate_p=$__hecate_p __hecate_v=$((__hecate_b + 1)); \"'{save}' EXIT; \
             builtin trap -- 'builtin trap - EXIT TERM; builtin kill -s TERM $$' TERM; "
        ));
    }
    p
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub mod native;

#[cfg(test)]
mod tests;
