//! The event stream of `POST /instance/{id}/exec/sse`, parsed
//! incrementally, in both forms `shared/reference/morphcloud-api.md` §4.2
//! describes:
//!
//! - the JSON form the official SDK reads (and the simulator serves by
//!   default): `data: {"type": "stdout"|"stderr"|"exit_code", "content": …}`
//!   events, ended by `data: [DONE]`;
//! - the documented named form: `event: stdout` / `event: stderr` with the
//!   text as data (several `data:` lines joined by newlines), and
//!   `event: exit` (or `exit_code`) with the code as data.
//!
//! Framing follows the SSE rules: lines end in LF, CRLF or CR; a blank line
//! dispatches an event; one space after the colon is dropped; comments
//! (`:`) and unknown fields are ignored. A line longer than the limit is a
//! protocol error, so a server cannot make the client buffer without
//! bound.

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// One thing the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseEvent {
    /// Output of the command: `true` for stderr.
    Output { stderr: bool, text: String },
    /// The command's exit code.
    Exit(i32),
    /// The end of the stream (`data: [DONE]`).
    Done,
}

/// An incremental parser: feed it the body as it arrives.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous byte was a CR (a following LF belongs to it).
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    max_line: usize,
}

impl SseParser {
    /// A parser refusing lines (and events' data) over `max_line` bytes.
    pub(crate) fn new(max_line: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            max_line: max_line.max(64),
        }
    }

    /// Parses `bytes`, appending the events they complete to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<()> {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, out)?;
                }
                _ => {
                    if self.line.len() >= self.max_line {
                        return Err(protocol(format!(
                            "an event stream line is longer than {} bytes",
                            self.max_line
                        )));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// The body ended: dispatches an event not yet ended by a blank line.
    pub(crate) fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<()> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out)?;
        }
        self.dispatch(out)
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<()> {
        if line.is_empty() {
            return self.dispatch(out);
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                if self.data.len() + value.len() > self.max_line {
                    return Err(protocol(format!(
                        "an event's data is longer than {} bytes",
                        self.max_line
                    )));
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) -> Result<()> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::replace(&mut self.has_data, false);
        if !has_data && event.is_empty() {
            return Ok(());
        }
        match event.as_str() {
            "" | "message" => {
                if data.trim() == "[DONE]" {
                    out.push(SseEvent::Done);
                    return Ok(());
                }
                out.push(json_event(&data)?);
            }
            "stdout" => out.push(SseEvent::Output {
                stderr: false,
                text: data,
            }),
            "stderr" => out.push(SseEvent::Output {
                stderr: true,
                text: data,
            }),
            "exit" | "exit_code" => out.push(SseEvent::Exit(exit_code(&Value::String(data))?)),
            "done" | "end" => out.push(SseEvent::Done),
            // Events this client does not know (pings, progress) are skipped.
            _ => {}
        }
        Ok(())
    }
}

/// An event of the JSON form.
fn json_event(data: &str) -> Result<SseEvent> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        protocol(format!(
            "an event is not JSON ({e}): {}",
            crate::provider::morph::wire::truncate_chars(data, 200)
        ))
    })?;
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    let content = value.get("content").unwrap_or(&Value::Null);
    match kind {
        "stdout" | "stderr" => Ok(SseEvent::Output {
            stderr: kind == "stderr",
            text: match content {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            },
        }),
        "exit_code" | "exit" => Ok(SseEvent::Exit(exit_code(content)?)),
        other => Err(protocol(format!(
            "an event has an unknown type {:?}",
            crate::provider::morph::wire::truncate_chars(other, 40)
        ))),
    }
}

/// An exit code given as a number or a numeric string (the SDK applies
/// `int()`).
fn exit_code(value: &Value) -> Result<i32> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
        protocol(format!(
            "the exit code is not an integer: {}",
            crate::provider::morph::wire::truncate_chars(&value.to_string(), 40)
        ))
    })
}

fn protocol(problem: String) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("POST /instance/{{id}}/exec/sse: {problem}"),
    )
}

/// Removes a secret from a stream of text given in pieces, also where it
/// is split across pieces: the end of a piece that could be the start of
/// the secret is held back until the next piece shows whether it is.
#[derive(Debug)]
pub(crate) struct StreamScrubber {
    secret: Vec<u8>,
    held: Vec<u8>,
}

/// What replaces the secret.
const REDACTED: &[u8] = b"[redacted]";

impl StreamScrubber {
    pub(crate) fn new(secret: &str) -> Self {
        StreamScrubber {
            secret: secret.as_bytes().to_vec(),
            held: Vec::new(),
        }
    }

    /// The bytes of `piece` (after those held back) that are safe to pass
    /// on now, scrubbed.
    pub(crate) fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(piece);
        if self.secret.is_empty() {
            return std::mem::take(&mut self.held);
        }
        let text = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(text.len());
        let mut rest = &text[..];
        while let Some(at) = rest
            .windows(self.secret.len())
            .position(|w| w == self.secret)
        {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED);
            rest = &rest[at + self.secret.len()..];
        }
        // Hold back the longest end of `rest` that begins the secret.
        let keep = (1..self.secret.len().min(rest.len() + 1))
            .rev()
            .find(|&n| rest.ends_with(&self.secret[..n]))
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.held = rest[rest.len() - keep..].to_vec();
        out
    }

    /// What is still held back, at the end of the stream.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(body: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            parser.feed(part, &mut out).expect("valid");
        }
        parser.finish(&mut out).expect("valid");
        out
    }

    #[test]
    fn the_json_form_parses_in_any_pieces() {
        let body = b"data: {\"type\": \"stdout\", \"content\": \"l1\\n\"}\n\n\
                     data: {\"type\": \"stderr\", \"content\": \"e1\\n\"}\r\n\r\n\
                     : a comment\n\
                     data: {\"type\": \"exit_code\", \"content\": \"5\"}\n\n\
                     data: [DONE]\n\n";
        let want = vec![
            SseEvent::Output {
                stderr: false,
                text: "l1\n".into(),
            },
            SseEvent::Output {
                stderr: true,
                text: "e1\n".into(),
            },
            SseEvent::Exit(5),
            SseEvent::Done,
        ];
        for piece in [1, 2, 7, body.len()] {
            assert_eq!(parse_in_pieces(body, piece), want, "pieces of {piece}");
        }
    }

    #[test]
    fn the_named_form_parses_with_multiline_data() {
        let body = b"event: stdout\ndata: hello\ndata: \n\nevent: stderr\ndata:oops\n\n\
                     event: exit\ndata: 0\n\n";
        let want = vec![
            SseEvent::Output {
                stderr: false,
                text: "hello\n".into(),
            },
            SseEvent::Output {
                stderr: true,
                text: "oops".into(),
            },
            SseEvent::Exit(0),
        ];
        for piece in [1, 3, body.len()] {
            assert_eq!(parse_in_pieces(body, piece), want);
        }
    }

    #[test]
    fn bad_events_and_long_lines_are_protocol_errors() {
        let mut out = Vec::new();
        for body in [
            &b"data: not json\n\n"[..],
            b"data: {\"type\": \"exit_code\", \"content\": \"x\"}\n\n",
            b"event: exit\ndata: 99999999999\n\n",
            b"data: {\"type\": \"weird\"}\n\n",
        ] {
            let err = SseParser::new(1024).feed(body, &mut out).expect_err("bad");
            assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        }
        let err = SseParser::new(64)
            .feed(&[b'a'; 100], &mut out)
            .expect_err("long");
        assert!(err.message().contains("longer than 64"), "{err}");
    }

    #[test]
    fn the_scrubber_catches_a_secret_split_across_pieces() {
        let mut s = StreamScrubber::new("sk-secret");
        let mut out = s.push(b"abc sk-se");
        assert_eq!(out, b"abc ");
        out.extend(s.push(b"cret def sk"));
        out.extend(s.push(b"y"));
        out.extend(s.finish());
        assert_eq!(String::from_utf8_lossy(&out), "abc [redacted] def sky");
        let mut plain = StreamScrubber::new("");
        assert_eq!(plain.push(b"sk-"), b"sk-");
    }
}
