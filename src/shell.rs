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
//! 2. restores the newest complete of two slots (`.0`, `.1`): `cd` to the
//!    saved directory, the saved exports, and `unset` of exported variables
//!    the previous call had removed;
//! 3. for a foreground call, sets an `EXIT` trap that saves the state into
//!    the *other* slot, ending with a line that marks it complete and
//!    numbers it, and a `TERM` trap that clears the `EXIT` trap and lets the
//!    shell die of the signal;
//! 4. unsets its own variables, leaving `$?` at 0 for the command.
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
const CARRY: &str = "IFS= read -r -d '' __hecate_c <<'DELIM'; builtin unset -v __hecate_f __hecate_b \
    __hecate_s __hecate_i __hecate_l __hecate_v __hecate_k __hecate_n __hecate_o; eval \"${__hecate_c%?}\"";

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

/// Every variable name, as words: `"${!A@}" … "${!_@}"` (quoted, so the
/// command's `IFS` does not matter).
fn all_names() -> String {
    let mut s = String::with_capacity(53 * 9);
    for c in ('A'..='Z').chain('a'..='z').chain(std::iter::once('_')) {
        s.push_str("\"${!");
        s.push(c);
        s.push_str("@}\" ");
    }
    s
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

/// The one-line prelude, ending in `; ` so that the command's first line
/// follows on the same line.
fn prelude(instance_id: &str, config: &ShellConfig, mode: Mode) -> String {
    let names = all_names();
    let skip = skip_names(config);
    let hash = fnv1a(instance_id.as_bytes());
    // Find the newest complete slot: its last line is `#hecate-shell-state N`.
    let mut p = format!(
        "__hecate_f=${{TMPDIR:-/tmp}}/.hecate-shell-{hash:016x}; __hecate_b=0; __hecate_s=; \
         for __hecate_i in 0 1; do {{ mapfile -t __hecate_l < \"$__hecate_f.$__hecate_i\"; }} 2>/dev/null \
         && (( ${{#__hecate_l[@]}} )) && __hecate_v=${{__hecate_l[-1]#\"#hecate-shell-state \"}} \
         && [[ $__hecate_v != \"${{__hecate_l[-1]}}\" && -n $__hecate_v && $__hecate_v != *[!0-9]* ]] \
         && (( 10#$__hecate_v > __hecate_b )) && {{ __hecate_b=$((10#$__hecate_v)); __hecate_s=$__hecate_i; }}; done; \
         if [[ -n $__hecate_s ]]; then {{ . \"$__hecate_f.$__hecate_s\"; }} 2>/dev/null; \
         for __hecate_n in {names}; do {skip}\
         [[ ${{!__hecate_n@a}} == *x* && ${{!__hecate_n@a}} != *r* && $__hecate_k != *\" $__hecate_n \"* ]] \
         && builtin unset -v \"$__hecate_n\"; done; fi; "
    );
    if mode == Mode::RestoreAndSave {
        // The save, run by the EXIT trap; no single quote in it (it is
        // quoted with them). The trap's first command turns off xtrace
        // without tracing itself.
        let save = format!(
            "set +eu; {{ builtin printf \"cd -- %q\\n\" \"$PWD\"; __hecate_k=\" \"; \
             for __hecate_n in {names}; do {skip}\
             [[ ${{!__hecate_n@a}} == *x* && ${{!__hecate_n@a}} != *[raA]* ]] || continue; \
             builtin printf \"export %s=%q\\n\" \"$__hecate_n\" \"${{!__hecate_n}}\"; \
             __hecate_k+=\"$__hecate_n \"; done; \
             builtin printf \"__hecate_k=%q\\n#hecate-shell-state %s\\n\" \"$__hecate_k\" \"$__hecate_v\"; \
             }} >| \"$__hecate_o\" 2>/dev/null"
        );
        p.push_str(&format!(
            "[[ $__hecate_s == 0 ]] && __hecate_i=1 || __hecate_i=0; \
             builtin printf -v __hecate_o %q \"$__hecate_f.$__hecate_i\"; \
             builtin trap -- \"{{ set +x; }} 2>/dev/null; __hecate_o=$__hecate_o __hecate_v=$((__hecate_b + 1)); \"'{save}' EXIT; \
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

#[cfg(test)]
mod tests;
