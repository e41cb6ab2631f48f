//! The shell text of MorphCloud transfers, apart from the code that sends
//! it: every command here runs in a fresh `bash -c` in the VM, so what a
//! chunk costs there is that bash, the text it parses, and the processes it
//! starts.
//!
//! Measured per chunk of ~90 KiB (CPU time of the VM side, `bash -c` started
//! the way the simulator starts it): the old `printf '%s' '<base64>' |
//! base64 -d | dd seek=…` took ~17 ms, of which ~11 ms was bash parsing the
//! 120 KiB single-quoted word; the same text as a here-document costs bash
//! ~2.4 ms, and `base64 -d > piece <<'EOF'` ~6–7 ms in all, ~5 ms with
//! `exec` in front (with a here-document bash forks before it runs the
//! program unless told to replace itself). So an upload chunk is a
//! here-document decoded into a piece file of its own, and the last command
//! joins the pieces while it hashes them (`cat | tee | sha256sum`), one pass.

use crate::error::{Error, Result};

use super::super::shell::MAX_SENT_BYTES;

/// The most bytes of data one upload chunk carries: its base64 (129,708
/// characters) and the command around it fit in one 128 KiB argument for
/// any destination path up to ~1,300 bytes; a longer path gets smaller
/// chunks ([`piece_len`]).
pub(crate) const UP_CHUNK: usize = 95 * 1024;
/// Bytes of data per download chunk (answers have no 128 KiB bound).
pub(crate) const DOWN_CHUNK: usize = 2 * 1024 * 1024;
/// The here-document's delimiter: `_` is not in base64's alphabet, so no
/// line of data can end the document early.
const EOF_MARK: &str = "HECATE_EOF";
/// Upload pieces are named `p.<index>` with this many digits, so that the
/// glob `p.*` lists them in order in any locale.
const PIECE_DIGITS: usize = 8;
/// The smallest chunk worth sending; a path so long that less fits is
/// refused.
const MIN_PIECE: usize = 3 * 1024;

/// The command that decodes chunk `index` (its base64 text `b64`) into its
/// own piece file in the staging directory `dir` (shell-quoted). The bash
/// that reads the command becomes `base64` (`exec`): no fork.
pub(crate) fn piece_command(dir: &str, index: usize, b64: &str) -> String {
    format!(
        "exec base64 -d > {dir}/p.{index:0w$} <<'{EOF_MARK}'\n{b64}\n{EOF_MARK}\n",
        w = PIECE_DIGITS
    )
}

/// Bytes of data per upload chunk for the staging directory `dir`
/// (shell-quoted): the most whose command stays within one argument, at
/// most [`UP_CHUNK`], a multiple of 3 (no base64 padding inside).
pub(crate) fn piece_len(dir: &str) -> Result<usize> {
    let overhead = piece_command(dir, 0, "").len();
    let len = (MAX_SENT_BYTES.saturating_sub(overhead) / 4 * 3).min(UP_CHUNK);
    if len < MIN_PIECE {
        return Err(Error::invalid_input(
            "the path is too long to carry a file chunk to MorphCloud",
        ));
    }
    Ok(len)
}

/// Checks that `pieces` piece names keep their fixed width.
pub(crate) fn check_piece_count(pieces: usize) -> Result<()> {
    if pieces >= 10usize.pow(PIECE_DIGITS as u32) {
        return Err(Error::invalid_input(
            "too many chunks for one transfer to MorphCloud",
        ));
    }
    Ok(())
}

/// The last command of an upload: joins the `pieces` pieces of `dir` into
/// `dir/all` while hashing them, checks size `len` and SHA-256 `sha` and on
/// a match runs `place` (which must remove `dir`); on a mismatch removes
/// `dir`, prints what it found and exits 3.
pub(crate) fn finish_command(
    dir: &str,
    pieces: usize,
    len: usize,
    sha: &str,
    place: &str,
) -> String {
    let join = if pieces == 0 {
        format!(": > {dir}/all && h=$(sha256sum < {dir}/all)")
    } else {
        format!("h=$(cd -- {dir} && cat -- p.* | tee all | sha256sum)")
    };
    format!(
        "set -o pipefail; {join} || {{ rm -rf -- {dir}; exit 1; }}; h=${{h%% *}}; \
         s=$(stat -c %s -- {dir}/all) || exit 1; \
         if [ \"$s\" != {len} ] || [ \"$h\" != {sha} ]; then rm -rf -- {dir}; \
         echo \"mismatch: $s bytes, sha256 $h\"; exit 3; fi; {place}"
    )
}

/// The command that fetches download chunk `index` of `src` (shell-quoted)
/// as one line of base64.
pub(crate) fn fetch_command(src: &str, index: u64) -> String {
    format!("dd if={src} bs={DOWN_CHUNK} skip={index} count=1 status=none | base64 -w0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_chunk_fits_one_argument() {
        let dir = "'some/dir/file.bin.hecate-tmp-0123456789abcdef'";
        let len = piece_len(dir).expect("fits");
        assert_eq!(len, UP_CHUNK);
        let b64 = "A".repeat(len.div_ceil(3) * 4);
        assert!(piece_command(dir, 99_999_999, &b64).len() <= MAX_SENT_BYTES);
        // A long path gets smaller chunks that still fit, a very long one
        // an error.
        let long = format!("'{}'", "d/".repeat(1000));
        let len = piece_len(&long).expect("fits");
        assert!(len < UP_CHUNK && len % 3 == 0, "{len}");
        let b64 = "A".repeat(len / 3 * 4);
        let cmd = piece_command(&long, 1, &b64);
        assert!(cmd.len() <= MAX_SENT_BYTES, "{}", cmd.len());
        assert!(piece_len(&"x".repeat(MAX_SENT_BYTES)).is_err());
        assert!(check_piece_count(99_999_999).is_ok());
        assert!(check_piece_count(100_000_000).is_err());
    }

    #[test]
    fn no_base64_line_ends_the_here_document() {
        assert!(!EOF_MARK
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
    }
}
