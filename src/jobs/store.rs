//! A job's output store inside its instance, and the shell text that
//! writes and reads it.
//!
//! A job runs under a small POSIX `sh` wrapper ([`wrapper`]) that pipes
//! the command's stdout and stderr into GNU `split`, which cuts the stream
//! into segments of `cap / 2` bytes, `out.<k>` (`k` zero-padded to 12
//! digits) holding bytes `[k·S, (k+1)·S)` of the stream. Starting segment
//! `k` removes segment `k − 2`, so at most two segments (at most `cap`
//! bytes, the newest ones, and at least `cap / 2` of them once the output
//! is that long) are kept; `log` is a symbolic link to the newest segment.
//! Once the command has ended and its output is all in the store, the
//! wrapper writes its exit code to `exit`. Because a segment's index names
//! its place in the stream, a reader addresses output by byte offset and
//! knows exactly how many bytes it missed when the ones it asks for were
//! cut.
//!
//! The store is read directly where the instance's files are on this host
//! ([`read_host`], [`status_host`]), and otherwise through a command run in
//! the instance ([`read_script`], [`status_script`]) whose answer is
//! parsed by [`parse_read`] and [`parse_status`].

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

/// Width of a segment's index in its file name (`split -a`).
const INDEX_DIGITS: usize = 12;

/// The first line of a read's answer.
const READ_TAG: &str = "hecate-job-read";

/// The first word of each line of a status answer.
const STATUS_TAG: &str = "hecate-job-status";

/// Quotes `text` for a POSIX shell.
pub(crate) fn quote(text: &str) -> Result<String> {
    shlex::try_quote(text).map(|q| q.into_owned()).map_err(|_| {
        Error::invalid_input("the command contains a NUL byte, which no shell can run")
    })
}

/// The shell text that runs `command` (with `bash` where the instance's
/// shell is bash, else `sh`) as a job whose store is directory `dir`, with
/// segments of `segment` bytes.
pub(crate) fn wrapper(dir: &str, command: &str, segment: u64) -> Result<String> {
    let d = quote(dir)?;
    let c = quote(command)?;
    // The filter runs once per segment, with `$FILE` its path: it removes
    // the segment two before, points `log` at the new one, and copies.
    let filter = "n=$(expr \"${FILE##*.}\" - 2); rm -f \"${FILE%.*}.$(printf %012d \"$n\")\"; \
                  ln -sfn \"${FILE##*/}\" \"${FILE%/*}/log\"; exec cat > \"$FILE\"";
    let filter = quote(filter)?;
    Ok(format!(
        "d={d}; mkdir -p -m 700 \"$d\" || exit 125; rm -f \"$d/exit\" \"$d/rc\"\n\
         {{ \"${{BASH:-sh}}\" -c {c} </dev/null; echo $? > \"$d/rc\"; }} 2>&1 \
         | SHELL=/bin/sh split -b {segment} -d -a {INDEX_DIGITS} --filter={filter} - \"$d/out.\"\n\
         if [ -f \"$d/rc\" ]; then mv -f \"$d/rc\" \"$d/exit\"; fi\n"
    ))
}

/// Where a job's output stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Status {
    /// Bytes written so far.
    pub total: u64,
    /// The exit code, once the command ended and its output is stored.
    pub exit: Option<i32>,
    /// The wrapper itself ended (the backend's exit file exists), whether
    /// or not the command's exit code was written.
    pub wrapper_ended: bool,
}

/// A chunk of output read from offset `start`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Chunk {
    /// The first offset still stored (bytes before it are gone).
    pub first: u64,
    /// Where `data` begins: the offset asked for, or `first` if that was
    /// later.
    pub start: u64,
    /// The bytes (at most the amount asked for).
    pub data: Vec<u8>,
    /// Bytes written so far, as seen by the read.
    pub total: u64,
}

fn segment_name(k: u64) -> String {
    format!("out.{k:0width$}", width = INDEX_DIGITS)
}

/// The indices of the stored segments, oldest first.
fn host_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ks = Vec::with_capacity(2);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ks),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(k) = name
            .to_str()
            .and_then(|n| n.strip_prefix("out."))
            .and_then(|n| n.parse::<u64>().ok())
        {
            ks.push(k);
        }
    }
    ks.sort_unstable();
    Ok(ks)
}

/// Opens a segment without following a symbolic link.
fn open_segment(dir: &Path, k: u64) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(segment_name(k)))
}

/// Reads an exit-code file; `None` while it does not exist (or is not
/// complete).
fn read_code(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
}

/// The status of the store `dir` on this host; `backend_exit` is the
/// backend's exit file of the wrapper.
pub(crate) fn status_host(dir: &Path, segment: u64, backend_exit: &Path) -> Result<Status> {
    let io = |e: std::io::Error| Error::internal(format!("reading job output: {e}"));
    // The exit code first: once it exists, all output is stored, so the
    // total read after it is final.
    let exit = read_code(&dir.join("exit"));
    let wrapper_ended = exit.is_some() || backend_exit.exists();
    let ks = host_segments(dir).map_err(io)?;
    let total = match ks.last() {
        None => 0,
        Some(&k) => match std::fs::symlink_metadata(dir.join(segment_name(k))) {
            Ok(meta) => k * segment + meta.len(),
            Err(e) => return Err(io(e)),
        },
    };
    Ok(Status {
        total,
        exit,
        wrapper_ended,
    })
}

/// Reads up to `max` bytes from offset `offset` of the store `dir` on this
/// host, across segments.
pub(crate) fn read_host(dir: &Path, segment: u64, offset: u64, max: usize) -> Result<Chunk> {
    let io = |e: std::io::Error| Error::internal(format!("reading job output: {e}"));
    let ks = host_segments(dir).map_err(io)?;
    let Some(&oldest) = ks.first() else {
        return Ok(Chunk {
            first: 0,
            start: offset,
            data: Vec::new(),
            total: 0,
        });
    };
    // Open every segment from the one holding the start before reading:
    // an open segment stays readable when the writer removes it.
    let first = oldest * segment;
    let start = offset.max(first);
    let mut files = Vec::with_capacity(ks.len());
    for &k in &ks {
        if (k + 1) * segment <= start {
            continue;
        }
        match open_segment(dir, k) {
            Ok(f) => files.push((k, f)),
            // Removed since the listing: everything before it is gone too.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => files.clear(),
            Err(e) => return Err(io(e)),
        }
    }
    let mut chunk = Chunk {
        first,
        start,
        data: Vec::new(),
        total: start,
    };
    if let Some((k, _)) = files.first() {
        if k * segment > start {
            // The segment holding `start` went while we looked.
            chunk.first = k * segment;
            chunk.start = chunk.first;
        }
    }
    let mut pos = chunk.start;
    for (k, mut f) in files {
        let base = k * segment;
        if base != pos && !chunk.data.is_empty() {
            break; // a gap: stop at what is contiguous
        }
        let skip = pos.saturating_sub(base);
        f.seek(SeekFrom::Start(skip)).map_err(io)?;
        let want = max.saturating_sub(chunk.data.len());
        let got = f
            .take(want as u64)
            .read_to_end(&mut chunk.data)
            .map_err(io)?;
        pos = base + skip + got as u64;
        if got < want && base + skip + (got as u64) < (k + 1) * segment {
            // This segment is still being written: nothing follows yet.
            break;
        }
        if chunk.data.len() >= max {
            break;
        }
    }
    chunk.total = pos;
    Ok(chunk)
}

/// Shell text that prints the status of the stores `dirs` (with their
/// backends' exit files): one line per store,
/// `hecate-job-status <n> <total> <exit|-> <0|1>`.
pub(crate) fn status_script(stores: &[(u64, String, String)], segment: u64) -> Result<String> {
    let mut s = String::from("for_store() {\n");
    s.push_str(
        "  e=-; [ -f \"$2/exit\" ] && e=$(cat \"$2/exit\"); [ -n \"$e\" ] || e=-\n\
         \x20 w=0; { [ \"$e\" != - ] || [ -f \"$3\" ]; } && w=1\n\
         \x20 l=$(cd \"$2\" 2>/dev/null && ls | sed -n 's/^out\\.//p' | sort | tail -n 1)\n\
         \x20 t=0; if [ -n \"$l\" ]; then sz=$(wc -c < \"$2/out.$l\"); \
         t=$(expr \"$l\" '*' \"$4\" + \"$sz\"); fi\n",
    );
    s.push_str(&format!("  echo \"{STATUS_TAG} $1 $t $e $w\"\n}}\n"));
    for (n, dir, backend_exit) in stores {
        s.push_str(&format!(
            "for_store {n} {} {} {segment}\n",
            quote(dir)?,
            quote(backend_exit)?
        ));
    }
    Ok(s)
}

/// Parses what [`status_script`] printed, by store number.
pub(crate) fn parse_status(stdout: &str) -> Vec<(u64, Status)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            if w.next()? != STATUS_TAG {
                return None;
            }
            let n = w.next()?.parse().ok()?;
            let total = w.next()?.parse().ok()?;
            let exit = w.next()?.parse().ok();
            let wrapper_ended = w.next()? == "1";
            Some((
                n,
                Status {
                    total,
                    exit,
                    wrapper_ended,
                },
            ))
        })
        .collect()
}

/// Shell text that prints a header line
/// `hecate-job-read <first> <start> <count>` and then `count` bytes of the
/// store `dir` from offset `offset` (at most `max`, from one segment).
pub(crate) fn read_script(dir: &str, segment: u64, offset: u64, max: usize) -> Result<String> {
    Ok(format!(
        "d={}; o={offset}; s={segment}; m={max}\n\
         f=$(cd \"$d\" 2>/dev/null && ls | sed -n 's/^out\\.//p' | sort | head -n 1)\n\
         if [ -z \"$f\" ]; then echo \"{READ_TAG} 0 $o 0\"; exit 0; fi\n\
         first=$(expr \"$f\" '*' $s); st=$o; [ \"$st\" -lt \"$first\" ] && st=$first\n\
         k=$(expr $st / $s); skip=$(expr $st % $s); p=\"$d/out.$(printf %012d $k)\"\n\
         if ! exec 3< \"$p\"; then echo \"{READ_TAG} $first $st 0\"; exit 0; fi\n\
         sz=$(wc -c < /proc/self/fd/3); n=$(expr \"${{sz:-0}}\" - $skip); [ -n \"$n\" ] || n=0; \
         [ \"$n\" -gt \"$m\" ] && n=$m; [ \"$n\" -lt 0 ] && n=0\n\
         echo \"{READ_TAG} $first $st $n\"\n\
         tail -c +$(expr $skip + 1) <&3 | head -c $n\n",
        quote(dir)?
    ))
}

/// Parses what [`read_script`] printed: the chunk (its text lossy) and
/// the number of bytes it stands for.
pub(crate) fn parse_read(stdout: &str) -> Result<(u64, u64, u64, String)> {
    let (header, data) = stdout.split_once('\n').unwrap_or((stdout, ""));
    let mut w = header.split_whitespace();
    let bad = || Error::internal(format!("unexpected answer reading job output: {header:?}"));
    if w.next() != Some(READ_TAG) {
        return Err(bad());
    }
    let mut num = || w.next().and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
    let first = num()?;
    let start = num()?;
    let count = num()?;
    Ok((first, start, count, data.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("sh")
    }

    #[test]
    fn the_store_keeps_the_newest_bytes_and_reads_by_offset() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("job");
        let d = dir.to_str().expect("utf8");
        let cmd = "printf 0123456789abcdefghij; exit 7";
        let out = run(&wrapper(d, cmd, 8).expect("wrapper"));
        assert!(out.status.success(), "{out:?}");
        let st = status_host(&dir, 8, &dir.join("none")).expect("status");
        assert_eq!((st.total, st.exit), (20, Some(7)));
        // Segments 1 and 2 are kept (bytes 8..20); 0..8 are gone.
        let c = read_host(&dir, 8, 0, 100).expect("read");
        assert_eq!((c.first, c.start, c.total), (8, 8, 20));
        assert_eq!(c.data, b"89abcdefghij");
        let c = read_host(&dir, 8, 10, 3).expect("read");
        assert_eq!(c.data, b"abc");
        assert_eq!(c.total, 13);
        // The same through the shell reader and status.
        let r = run(&read_script(d, 8, 2, 100).expect("script"));
        let (first, start, count, text) =
            parse_read(&String::from_utf8_lossy(&r.stdout)).expect("parse");
        assert_eq!((first, start, count, text.as_str()), (8, 8, 8, "89abcdef"));
        let s = run(&status_script(&[(4, d.to_string(), "/none".into())], 8).expect("s"));
        let parsed = parse_status(&String::from_utf8_lossy(&s.stdout));
        assert_eq!(
            parsed,
            vec![(
                4,
                Status {
                    total: 20,
                    exit: Some(7),
                    wrapper_ended: true
                }
            )]
        );
    }
}
