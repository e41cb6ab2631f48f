//! The persistent shell kept by the launcher (the local and sandbox
//! backends): the same behaviour as the wrapped text of the
//! [parent module](super), at a fraction of its cost.
//!
//! The wrapped text restores the state in bash (read two files, `eval` a
//! line per exported variable) and saves it in bash (a loop over every
//! exported variable); on this machine that tripled the CPU time of a
//! `bash -c true`. Where the runtime starts the command's bash itself, it
//! need not: the launcher keeps the task's state ([`SavedShell`]) and
//! *restores* it by starting the bash in the saved directory with the
//! saved environment — no shell code at all — and bash *saves* it with one
//! builtin call in an `EXIT` trap ([`wrap`]): `$PWD` and `export -p`, into
//! a file of the command's own that the launcher reads ([`parse_dump`])
//! and removes when the bash has exited.
//!
//! What is kept and what is not is the parent module's rule: exported
//! variables but those named in [`is_skipped`] (the shell's own, Hecate's
//! markers, the wrapper's, and names matching a secret pattern), read-only
//! ones and arrays; the working directory. A call killed at its timeout
//! saves nothing (`SIGKILL` runs no trap; a `TERM` clears the `EXIT` trap),
//! and a dump cut short has no end mark and is ignored: the state stays as
//! it was. A saved directory that is gone by the next call is replaced by
//! the task's default one.

use serde::{Deserialize, Serialize};

/// What a command asks of the launcher's persistent shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellOp {
    /// Save the state when the command's bash exits (a foreground call);
    /// a background job only restores.
    pub save: bool,
    /// Variables whose name contains one of these (compared in upper case)
    /// are never saved.
    pub secret_patterns: Vec<String>,
}

/// Set (to `1`) in the environment of a call the launcher started in a
/// saved state: a task spec's prefix (its environment and working
/// directory) runs only without it, so that a restored state, which holds
/// what the spec set and what later calls changed, wins.
pub const RESTORED_MARKER: &str = "HECATE_SHELL_RESTORED";

/// The largest dump the launcher reads; a bigger one is not saved (and the
/// previous state stays).
pub const MAX_DUMP_BYTES: u64 = 1 << 20;

/// The mark after the last byte of a complete dump.
const END: &[u8] = b"\0hecate-shell-end\0";

/// A task's shell state as the launcher keeps it: raw bytes, since bash
/// variables need not be UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedShell {
    /// The working directory (`$PWD` at the save).
    pub cwd: Vec<u8>,
    /// The exported variables kept, in `export -p` order.
    pub vars: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Whether variable `name` is never saved nor restored: the shell's own
/// (`PWD`, `OLDPWD`, `SHLVL`, `_`), Hecate's markers (`HECATE_*`), the
/// wrapper's (`__hecate_*`), and names containing a secret pattern.
pub fn is_skipped(name: &[u8], secret_patterns: &[String]) -> bool {
    if matches!(name, b"PWD" | b"OLDPWD" | b"SHLVL" | b"_")
        || name.starts_with(b"HECATE_")
        || name.starts_with(b"__hecate_")
    {
        return true;
    }
    let upper = name.to_ascii_uppercase();
    secret_patterns.iter().any(|p| {
        let p = p.to_ascii_uppercase();
        !p.is_empty() && upper.windows(p.len()).any(|w| w == p.as_bytes())
    })
}

/// The command's text wrapped to save the state into `dump` when its bash
/// exits (see the [module docs](self)). Everything is on line 1, so bash
/// numbers the command's lines from 1; the command is carried verbatim in
/// a quoted here-document, so nothing in it reaches the wrapper.
pub fn wrap(command: &str, dump: &str) -> String {
    let delim = super::delimiter(command);
    let dump = shlex::try_quote(dump).map_or_else(|_| "/dev/null".into(), |q| q.into_owned());
    format!(
        "builtin declare -r __hecate_d={dump}; \
         builtin trap -- '{{ set +x; }} 2>/dev/null; set +eu; set -C; \
         {{ builtin printf \"%s\\0\" \"$PWD\"; builtin export -p; \
         builtin printf \"\\0hecate-shell-end\\0\"; }} 2>/dev/null >\"$__hecate_d\"' EXIT; \
         builtin trap -- 'builtin trap - EXIT TERM; builtin kill -s TERM $$' TERM; \
         IFS= read -r -d '' __hecate_c <<'{delim}'; builtin unset -v __hecate_x; \
         eval \"${{__hecate_c%?}}\"\n{command}\n{delim}\n"
    )
}

/// Bytes [`wrap`] adds to a command, at most (for a dump path of up to
/// 256 bytes).
pub const WRAP_OVERHEAD: usize = 1024;

/// The state in a complete dump (`$PWD`, NUL, `export -p`'s output, the
/// end mark), without the variables [`is_skipped`] names, read-only ones
/// and arrays. `None` when the dump is incomplete or not what bash writes.
pub fn parse_dump(dump: &[u8], secret_patterns: &[String]) -> Option<SavedShell> {
    let body = dump.strip_suffix(END)?;
    let nul = body.iter().position(|b| *b == 0)?;
    let cwd = body[..nul].to_vec();
    if !cwd.starts_with(b"/") {
        return None;
    }
    let mut p = Parser {
        s: &body[nul + 1..],
        i: 0,
    };
    let mut vars = Vec::new();
    while let Some(entry) = p.entry()? {
        let Entry { name, flags, value } = entry;
        if flags.iter().any(|f| matches!(f, b'r' | b'a' | b'A')) || !flags.contains(&b'x') {
            continue;
        }
        // Exported without a value: not in a child's environment.
        let Some(value) = value else { continue };
        // Too long for an environment entry (see `MAX_ENTRY`).
        if name.len() + value.len() >= super::MAX_ENTRY {
            continue;
        }
        if !is_skipped(&name, secret_patterns) {
            vars.push((name, value));
        }
    }
    Some(SavedShell { cwd, vars })
}

/// The environment of a command that restores `saved`: the fresh
/// environment's entries for names that are never saved ([`is_skipped`]:
/// they keep their fresh values), [`RESTORED_MARKER`], then the saved variables. A fresh
/// variable the state lacks was unset (or un-exported) by an earlier call
/// and stays so.
pub fn restored_env(
    saved: &SavedShell,
    fresh: &[(String, String)],
    secret_patterns: &[String],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = fresh
        .iter()
        .filter(|(k, _)| is_skipped(k.as_bytes(), secret_patterns))
        .filter(|(k, _)| k != RESTORED_MARKER)
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    env.push((RESTORED_MARKER.as_bytes().to_vec(), b"1".to_vec()));
    env.extend(saved.vars.iter().cloned());
    env
}

struct Entry {
    name: Vec<u8>,
    flags: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// A reader of `export -p` output: `declare -FLAGS NAME[=VALUE]` lines
/// (`export NAME[=VALUE]` in POSIX mode), VALUE in double quotes (with `\`
/// before `"`, `\`, `$` and `` ` ``) or ANSI-C quotes (`$'…'`).
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// The next entry; `Some(None)` at the end, `None` on malformed input.
    fn entry(&mut self) -> Option<Option<Entry>> {
        while self.peek() == Some(b'\n') {
            self.i += 1;
        }
        if self.i == self.s.len() {
            return Some(None);
        }
        let flags = if self.eat(b"declare -") {
            let start = self.i;
            while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                self.i += 1;
            }
            let flags = self.s[start..self.i].to_vec();
            if !self.eat(b" ") {
                return None;
            }
            flags
        } else if self.eat(b"export ") {
            b"x".to_vec()
        } else {
            return None;
        };
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.i += 1;
        }
        let name = self.s[start..self.i].to_vec();
        if name.is_empty() || name[0].is_ascii_digit() {
            return None;
        }
        let value = if self.eat(b"=") {
            Some(self.value()?)
        } else {
            None
        };
        match self.peek() {
            None => {}
            Some(b'\n') => self.i += 1,
            Some(_) => return None,
        }
        Some(Some(Entry { name, flags, value }))
    }

    fn value(&mut self) -> Option<Vec<u8>> {
        if self.eat(b"\"") {
            self.double_quoted()
        } else if self.eat(b"$'") {
            self.ansi_c()
        } else {
            // Unquoted (bash quotes every value; accept a plain word).
            let start = self.i;
            while self.peek().is_some_and(|b| b != b'\n') {
                self.i += 1;
            }
            Some(self.s[start..self.i].to_vec())
        }
    }

    fn double_quoted(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    let n = self.peek()?;
                    self.i += 1;
                    match n {
                        b'"' | b'\\' | b'$' | b'`' => out.push(n),
                        b'\n' => {}
                        _ => out.extend_from_slice(&[b'\\', n]),
                    }
                }
                _ => out.push(b),
            }
        }
    }

    fn digits(&mut self, radix: u32, max: usize) -> Option<u32> {
        let mut v: u32 = 0;
        let mut n = 0;
        while n < max {
            let Some(d) = self.peek().and_then(|b| (b as char).to_digit(radix)) else {
                break;
            };
            v = v * radix + d;
            self.i += 1;
            n += 1;
        }
        (n > 0).then_some(v)
    }

    fn ansi_c(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.i += 1;
            if b == b'\'' {
                return Some(out);
            }
            if b != b'\\' {
                out.push(b);
                continue;
            }
            let e = self.peek()?;
            self.i += 1;
            match e {
                b'a' => out.push(0x07),
                b'b' => out.push(0x08),
                b'e' | b'E' => out.push(0x1b),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(0x0b),
                b'\\' | b'\'' | b'"' | b'?' => out.push(e),
                b'0'..=b'7' => {
                    self.i -= 1;
                    let v = self.digits(8, 3)?;
                    out.push((v & 0xff) as u8);
                }
                b'x' => {
                    let v = self.digits(16, 2)?;
                    out.push(v as u8);
                }
                b'u' | b'U' => {
                    let v = self.digits(16, if e == b'u' { 4 } else { 8 })?;
                    let c = char::from_u32(v)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b'c' => {
                    let c = self.peek()?;
                    self.i += 1;
                    out.push(c & 0x1f);
                }
                _ => out.extend_from_slice(&[b'\\', e]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats() -> Vec<String> {
        super::super::DEFAULT_SECRET_PATTERNS
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn dump(cwd: &str, export_p: &[u8]) -> Vec<u8> {
        let mut d = cwd.as_bytes().to_vec();
        d.push(0);
        d.extend_from_slice(export_p);
        d.extend_from_slice(END);
        d
    }

    #[test]
    fn parses_what_bash_prints_and_skips_what_is_never_saved() {
        let text = b"declare -x A=\"q\\\"\\$\\`\\\\ x\"\ndeclare -x B=$'l1\\nl2\\001\\t\\377'\n\
declare -x E\ndeclare -rx RO=\"1\"\ndeclare -x API_KEY=\"s\"\ndeclare -x SHLVL=\"2\"\n\
declare -ix N=\"3\"\ndeclare -x M=\"multi\nline\"\nexport P=\"posix\"\n";
        let s = parse_dump(&dump("/w", text), &pats()).expect("parses");
        assert_eq!(s.cwd, b"/w");
        let names: Vec<&[u8]> = s.vars.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(names, [&b"A"[..], b"B", b"N", b"M", b"P"]);
        assert_eq!(s.vars[0].1, b"q\"$`\\ x");
        assert_eq!(s.vars[1].1, b"l1\nl2\x01\t\xff");
        assert_eq!(s.vars[3].1, b"multi\nline");
    }

    #[test]
    fn an_incomplete_or_foreign_dump_is_refused() {
        let full = dump("/w", b"declare -x A=\"1\"\n");
        assert!(parse_dump(&full, &[]).is_some());
        assert!(parse_dump(&full[..full.len() - 1], &[]).is_none());
        assert!(parse_dump(&dump("rel", b""), &[]).is_none());
        assert!(parse_dump(&dump("/w", b"rm -rf /\n"), &[]).is_none());
        assert!(parse_dump(&dump("/w", b"declare -x A=\"open\n"), &[]).is_none());
    }

    #[test]
    fn secret_patterns_match_anywhere_in_any_case() {
        let p = pats();
        for name in [
            "API_KEY",
            "github_token",
            "MySecretThing",
            "DB_PASSWORD",
            "HECATE_X",
        ] {
            assert!(is_skipped(name.as_bytes(), &p), "{name}");
        }
        for name in ["PATH", "FOO", "KE_Y"] {
            assert!(!is_skipped(name.as_bytes(), &p), "{name}");
        }
    }

    #[test]
    fn restoring_keeps_skipped_fresh_names_and_drops_unset_ones() {
        let saved = SavedShell {
            cwd: b"/w".to_vec(),
            vars: vec![(b"FOO".to_vec(), b"1".to_vec())],
        };
        let fresh = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("HECATE_X".to_string(), "m".to_string()),
            ("GH_TOKEN".to_string(), "t".to_string()),
        ];
        let env = restored_env(&saved, &fresh, &pats());
        let names: Vec<&[u8]> = env.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            names,
            [
                &b"HECATE_X"[..],
                b"GH_TOKEN",
                RESTORED_MARKER.as_bytes(),
                b"FOO"
            ]
        );
    }

    /// Every byte string bash can hold comes back unchanged from
    /// `export -p` through the parser (bash itself prints it).
    #[test]
    fn values_round_trip_through_real_bash() {
        let mut values: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"plain".to_vec(),
            "h\u{e9}llo \u{1F600}".as_bytes().to_vec(),
            b"'\"$`\\ \n\t\r\x1b\x7f".to_vec(),
            (1u8..=255).collect(),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..24 {
            let len = rng.usize(0..40);
            values.push((0..len).map(|_| rng.u8(1..=255)).collect());
        }
        for locale in ["C", "C.UTF-8"] {
            let mut cmd = std::process::Command::new("/bin/bash");
            cmd.env_clear()
                .env("LC_ALL", locale)
                .arg("-c")
                .arg("builtin export -p");
            for (i, v) in values.iter().enumerate() {
                use std::os::unix::ffi::OsStrExt;
                cmd.env(format!("V{i}"), std::ffi::OsStr::from_bytes(v));
            }
            let out = cmd.output().expect("bash runs");
            let mut d = b"/\0".to_vec();
            d.extend_from_slice(&out.stdout);
            d.extend_from_slice(END);
            let s = parse_dump(&d, &[]).expect("bash's output parses");
            for (i, v) in values.iter().enumerate() {
                let name = format!("V{i}");
                let got = s.vars.iter().find(|(k, _)| k == name.as_bytes());
                assert_eq!(
                    got.map(|(_, v)| v.as_slice()),
                    Some(v.as_slice()),
                    "{name} in {locale}"
                );
            }
        }
    }
}
