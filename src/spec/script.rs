//! The shell text that applies a [`TaskSpec`]: the one-line prefix of every
//! command (environment, working directory) and the scripts that create the
//! working directory and place the files. Bash builtins only, but `mkdir`
//! and `chmod` where needed.

use super::{SpecFile, TaskSpec};

/// Most bytes of one placement script: well under every backend's command
/// limit (MorphCloud's is 129,023 bytes), with room for the prefix.
const SCRIPT_BYTES: usize = 64 * 1024;

/// `text` in single quotes for bash (`'` written as `'\''`).
pub(crate) fn sh_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The prefix of every command of a task with `spec`: exports, then `cd`
/// to the working directory (a failed `cd` ends the command with 1). One
/// line, ending in `; `, so the command's own first line follows on it.
/// Empty when the spec sets neither.
pub(crate) fn prelude(spec: &TaskSpec) -> String {
    let mut out = String::new();
    for (name, value) in &spec.env {
        out.push_str("export ");
        out.push_str(name);
        out.push('=');
        // Newlines in a value are fine inside single quotes, but would
        // break the one-line rule: $'…' keeps them on one line.
        if value.contains('\n') || value.contains('\r') {
            out.push_str(&ansi_c_quote(value));
        } else {
            out.push_str(&sh_quote(value));
        }
        out.push_str("; ");
    }
    if let Some(dir) = &spec.workdir {
        out.push_str("cd -- ");
        out.push_str(&sh_quote(dir));
        out.push_str(" || exit 1; ");
    }
    out
}

/// `text` as bash `$'…'`, every byte that is not printable ASCII (or is
/// `\` or `'`) as `\xHH`.
fn ansi_c_quote(text: &str) -> String {
    let mut out = String::from("$'");
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'\'' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('\'');
    out
}

/// The scripts that create the working directory (if the spec names one)
/// and place the spec's files under it, each at most about
/// [`SCRIPT_BYTES`]; run in order with the task's prefix. Empty when there
/// is nothing to do.
pub(crate) fn prepare_scripts(spec: &TaskSpec) -> Vec<String> {
    if spec.workdir.is_none() && spec.files.is_empty() {
        return Vec::new();
    }
    // Each script begins with this: stop at the first failure, and go to
    // the working directory (made by the first script).
    let head = match &spec.workdir {
        Some(dir) => format!("set -e; cd -- {}\n", sh_quote(dir)),
        None => "set -e\n".to_string(),
    };
    let mut scripts = Vec::new();
    let mut current = match &spec.workdir {
        Some(dir) => format!("set -e; mkdir -p -- {0}; cd -- {0}\n", sh_quote(dir)),
        None => head.clone(),
    };
    let mut has_work = spec.workdir.is_some();
    for file in &spec.files {
        let mut first = true;
        for piece in file_pieces(file) {
            if current.len() + piece.len() > SCRIPT_BYTES && has_work {
                scripts.push(std::mem::replace(&mut current, head.clone()));
            }
            if first {
                if let Some((dir, _)) = file.path.trim_end_matches('/').rsplit_once('/') {
                    current.push_str(&format!("mkdir -p -- {}\n", sh_quote(dir)));
                }
                current.push_str(&format!(": > {}\n", sh_quote(&file.path)));
                first = false;
            }
            current.push_str(&format!(
                "builtin printf '%b' {} >> {}\n",
                piece,
                sh_quote(&file.path)
            ));
            has_work = true;
        }
        if first {
            // An empty file.
            if let Some((dir, _)) = file.path.rsplit_once('/') {
                current.push_str(&format!("mkdir -p -- {}\n", sh_quote(dir)));
            }
            current.push_str(&format!(": > {}\n", sh_quote(&file.path)));
            has_work = true;
        }
        if file.executable {
            current.push_str(&format!("chmod +x -- {}\n", sh_quote(&file.path)));
        }
    }
    if has_work {
        scripts.push(current);
    }
    scripts
}

/// A file's content as `printf '%b'` arguments (single-quoted), each
/// standing for at most about 32 KiB of it. Printable ASCII and valid
/// UTF-8 beyond it pass as they are; `\`, `'`, control bytes and invalid
/// UTF-8 as `\0ooo` escapes.
fn file_pieces(file: &SpecFile) -> Vec<String> {
    const PIECE: usize = 32 * 1024;
    let mut pieces = Vec::new();
    let mut current = String::from("'");
    let bytes = &file.content;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let len = utf8_len(&bytes[i..]);
        if b >= 0x80 && len > 1 {
            // A whole valid multi-byte character.
            current.push_str(std::str::from_utf8(&bytes[i..i + len]).unwrap_or("\u{fffd}"));
            i += len;
        } else {
            if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'\'' {
                current.push(char::from(b));
            } else {
                current.push_str(&format!("\\0{b:03o}"));
            }
            i += 1;
        }
        if current.len() >= PIECE {
            current.push('\'');
            pieces.push(std::mem::replace(&mut current, String::from("'")));
        }
    }
    if current.len() > 1 {
        current.push('\'');
        pieces.push(current);
    }
    pieces
}

/// The length of the valid UTF-8 character at the start of `bytes` (2 to
/// 4), or 1 when there is none.
fn utf8_len(bytes: &[u8]) -> usize {
    let want = match bytes.first() {
        Some(b) if *b >= 0xF0 => 4,
        Some(b) if *b >= 0xE0 => 3,
        Some(b) if *b >= 0xC0 => 2,
        _ => return 1,
    };
    match bytes.get(..want).map(std::str::from_utf8) {
        Some(Ok(_)) => want,
        _ => 1,
    }
}
