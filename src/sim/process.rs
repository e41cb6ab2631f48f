//! Running one command of a simulated instance and killing all of an
//! instance's processes.
//!
//! A command runs as `/bin/bash -c <text>` (absolute path, so the spawn stays
//! on the posix_spawn fast path) in its own process group, with stdin from
//! `/dev/null`, the instance's directory as cwd, `HOME` and `TMPDIR`, and a minimal
//! environment: the simulator's own environment (which may hold a real API
//! key) never reaches a command. Every command carries the marker
//! `SIM_INSTANCE_ID=<id>` so that a `/proc` sweep finds processes that left
//! its group.

use std::cell::RefCell;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::unix;

/// The environment variable that marks an instance's processes.
pub(crate) const MARKER: &str = "SIM_INSTANCE_ID";

/// The most bytes kept of each of stdout and stderr; more is read and
/// dropped, so the command never blocks on a full pipe.
pub(crate) const OUTPUT_CAP: usize = 16 << 20;

/// How long to keep reading after the main process exited, for output that
/// is still in the pipes. A background process that inherited the pipes
/// would otherwise keep the exec open until it exits.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// How many `/proc` sweeps killing an instance makes.
const KILL_ROUNDS: usize = 4;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A piece of output, for streaming (SSE) execs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) stream: Stream,
    pub(crate) text: String,
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RunOutput {
    pub(crate) exit_code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// A started command.
#[derive(Debug)]
pub(crate) struct Running {
    child: tokio::process::Child,
    /// Its process group id (= its pid).
    pub(crate) pgid: i32,
}

/// Starts `text` for instance `id` in `dir`.
pub(crate) fn spawn(id: &str, dir: &Path, text: &str) -> std::io::Result<Running> {
    let mut cmd = tokio::process::Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(text)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .env(MARKER, id)
        // The backend's watchdog keeps its files in the instance's own
        // directory, so they go with the instance.
        .env(crate::provider::morph::RUNTIME_DIR_VAR, dir)
        // So does what commands put in `$TMPDIR` (the persistent shell's
        // state among them), as a VM's private `/tmp` would.
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn()?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| std::io::Error::other("spawned child has no pid"))?;
    Ok(Running { child, pgid })
}

impl Running {
    /// Reads the output until the command exits (and briefly after), then
    /// returns it. With `sink`, each chunk is also sent there as it arrives.
    pub(crate) async fn finish(mut self, sink: Option<UnboundedSender<Chunk>>) -> RunOutput {
        let out = RefCell::new(Collected::default());
        let err = RefCell::new(Collected::default());
        let stdout = self.child.stdout.take();
        let stderr = self.child.stderr.take();
        let mut reading = Box::pin(futures_util::future::join(
            read_stream(stdout, Stream::Stdout, &out, sink.as_ref()),
            read_stream(stderr, Stream::Stderr, &err, sink.as_ref()),
        ));
        let mut read_all = false;
        let status = loop {
            tokio::select! {
                status = self.child.wait() => break status,
                _ = &mut reading, if !read_all => read_all = true,
            }
        };
        if !read_all {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut reading).await;
        }
        drop(reading);
        let exit_code = match status {
            Ok(status) => unix::exit_code(status),
            Err(err) => {
                log::warn!("sim could not wait for a command: {err}");
                -1
            }
        };
        RunOutput {
            exit_code,
            stdout: out.into_inner().text(),
            stderr: err.into_inner().text(),
        }
    }
}

/// Output read so far, capped at [`OUTPUT_CAP`], plus an incomplete UTF-8
/// sequence held back from streaming until its next bytes arrive.
#[derive(Debug, Default)]
struct Collected {
    bytes: Vec<u8>,
    pending: Vec<u8>,
}

impl Collected {
    fn text(self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

async fn read_stream(
    pipe: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    into: &RefCell<Collected>,
    sink: Option<&UnboundedSender<Chunk>>,
) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut c = into.borrow_mut();
        let room = OUTPUT_CAP.saturating_sub(c.bytes.len());
        c.bytes.extend_from_slice(&buf[..n.min(room)]);
        if let Some(sink) = sink {
            c.pending.extend_from_slice(&buf[..n]);
            let whole = utf8_complete_len(&c.pending);
            let rest = c.pending.split_off(whole);
            let text = String::from_utf8_lossy(&c.pending).into_owned();
            c.pending = rest;
            if !text.is_empty() {
                let _ = sink.send(Chunk { stream, text });
            }
        }
    }
    let mut c = into.borrow_mut();
    if let Some(sink) = sink {
        if !c.pending.is_empty() {
            let text = String::from_utf8_lossy(&c.pending).into_owned();
            c.pending.clear();
            let _ = sink.send(Chunk { stream, text });
        }
    }
}

/// Length of `bytes` without an incomplete UTF-8 sequence at its end.
fn utf8_complete_len(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=3.min(n) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            b if b >= 0xC0 => 2,
            _ => 1,
        };
        return if need > back { n - back } else { n };
    }
    n
}

/// Whether a process group still has members.
pub(crate) fn group_alive(pgid: i32) -> bool {
    unix::group_alive(pgid)
}

/// Kills every process of instance `id`: its process groups that still
/// have members (an empty group's id may be recycled by an unrelated
/// process), and whatever a `/proc` sweep finds with its marker (processes
/// that left the group), in a few rounds to catch children forked between a
/// sweep and a death. Returns how many processes the sweeps found.
pub(crate) fn kill_instance(id: &str, pgids: &[i32]) -> usize {
    let marker = unix::env_entry(MARKER, id);
    unix::kill_now(pgids.iter().copied().collect(), &marker, KILL_ROUNDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_complete_len_holds_back_a_split_character() {
        let e = "é".as_bytes();
        assert_eq!(utf8_complete_len(b"abc"), 3);
        assert_eq!(utf8_complete_len(&[b'a', e[0]]), 1);
        assert_eq!(utf8_complete_len(&[b'a', e[0], e[1]]), 3);
        let four = "😀".as_bytes();
        assert_eq!(utf8_complete_len(&four[..3]), 0);
    }
}
