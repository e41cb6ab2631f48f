//! The newest output of a running `terminal` call, kept for its progress
//! notifications: a bounded tail of the streamed bytes (stdout and stderr
//! as they come), of which a message shows the last non-empty line.

use std::sync::{Mutex, MutexGuard};

/// The most bytes of output kept for progress messages.
pub(super) const TAIL_BYTES: usize = 512;

/// The most characters of output one progress message carries.
pub(super) const TAIL_CHARS: usize = 200;

/// The buffer of a streamed call's output: small, since only the newest
/// bytes matter here (the result keeps its own head and tail), and a
/// reader that falls behind just gets fewer, newer bytes.
pub(super) const STREAM_BUFFER_BYTES: usize = 64 * 1024;

/// The newest bytes of a call's output.
#[derive(Debug, Default)]
pub(super) struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    /// Appends output, keeping only the newest [`TAIL_BYTES`].
    pub(super) fn push(&mut self, data: &[u8]) {
        if data.len() >= TAIL_BYTES {
            self.bytes.clear();
            self.bytes
                .extend_from_slice(&data[data.len() - TAIL_BYTES..]);
            return;
        }
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > TAIL_BYTES {
            let cut = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..cut);
        }
    }

    /// The last non-empty line of the kept output, at most
    /// [`TAIL_CHARS`] characters (its end); `None` before any.
    pub(super) fn last_line(&self) -> Option<String> {
        // The kept bytes may start inside a UTF-8 character: skip its
        // continuation bytes.
        let start = self
            .bytes
            .iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count();
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let line = text
            .split(['\n', '\r'])
            .map(str::trim)
            .rfind(|line| !line.is_empty())?;
        let chars = line.chars().count();
        let line: String = line
            .chars()
            .skip(chars.saturating_sub(TAIL_CHARS))
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Some(line)
    }
}

/// Locks a shared tail (a poisoned lock still holds good bytes).
pub(super) fn lock(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A progress message: the time running and the newest output line.
pub(super) fn message(elapsed_secs: f64, tail: &Tail) -> String {
    match tail.last_line() {
        Some(line) => format!("running for {elapsed_secs:.0} s; newest output: {line}"),
        None => format!("running for {elapsed_secs:.0} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_newest_line_within_its_bounds() {
        let mut tail = Tail::default();
        assert_eq!(tail.last_line(), None);
        assert_eq!(message(2.0, &tail), "running for 2 s");
        tail.push(b"one\ntwo\n\n");
        assert_eq!(tail.last_line().as_deref(), Some("two"));
        tail.push(b"thr");
        tail.push(b"ee\r\n");
        assert_eq!(message(3.4, &tail), "running for 3 s; newest output: three");
        // A flood: only the newest bytes are kept, a line is cut to its end.
        let long = "x".repeat(10 * TAIL_BYTES) + "END";
        tail.push(long.as_bytes());
        assert_eq!(tail.bytes.len(), TAIL_BYTES);
        let line = tail.last_line().expect("a line");
        assert_eq!(line.chars().count(), TAIL_CHARS);
        assert!(line.ends_with("END"));
        // Cut inside a character: no replacement character at the start.
        let mut tail = Tail::default();
        tail.push("😀".repeat(200).as_bytes());
        tail.push(b"a");
        assert_eq!(tail.bytes[0] & 0xC0, 0x80, "the cut is inside a character");
        let line = tail.last_line().expect("a line");
        assert_eq!(line, "😀".repeat(127) + "a");
        // Control characters do not reach the message.
        let mut tail = Tail::default();
        tail.push(b"a\x1b[31mred\x07\n");
        assert_eq!(tail.last_line().as_deref(), Some("a [31mred "));
    }
}
