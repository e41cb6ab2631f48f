//! Exec with `Accept: text/event-stream`: the command's output as
//! server-sent events while it runs, then its result.
//!
//! Each chunk is an event named after its stream (`stdout` or `stderr`)
//! whose `id` is the byte offset of its first byte in that stream, and
//! whose data is `{"offset":N,"missed":M,"text":"..."}` (`missed`: bytes of
//! the stream right before `offset` a slow reader did not get). A chunk
//! edge never splits a UTF-8 character: an incomplete character waits for
//! the rest (invalid bytes become U+FFFD). The last event is `result`,
//! whose data is the tool's result JSON, the same as without streaming.

use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::oneshot;

use super::idempotency::{Running, Stored};
use super::routes::stored_result;
use crate::runtime::Runtime;
use crate::stream::{Chunk, StreamKind, StreamOptions};
use crate::tool::{render_with_timeout, ToolArgs};

/// Whether the request asks for server-sent events.
pub fn wants_events(req: &actix_web::HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The output of one stream, cut at character edges.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    /// An incomplete character at the end of the last chunk.
    pending: Vec<u8>,
    /// The offset of `pending`'s first byte.
    pending_at: u64,
}

impl Utf8Carry {
    /// The text of `chunk` ready to send: (offset of its first byte,
    /// bytes missed right before it, text). `None` when all of it waits
    /// for the rest of a character.
    pub fn feed(&mut self, chunk: &Chunk) -> Option<(u64, u64, String)> {
        let mut missed = chunk.missed;
        let (start, bytes) = if chunk.missed > 0 || self.pending.is_empty() {
            // A gap breaks the character: its start counts as missed.
            missed += self.pending.len() as u64;
            self.pending.clear();
            (chunk.offset, chunk.data.to_vec())
        } else {
            let mut bytes = std::mem::take(&mut self.pending);
            bytes.extend_from_slice(&chunk.data);
            (self.pending_at, bytes)
        };
        let cut = complete_prefix(&bytes);
        self.pending = bytes[cut..].to_vec();
        self.pending_at = start + cut as u64;
        if cut == 0 && missed == 0 {
            return None;
        }
        Some((
            start,
            missed,
            String::from_utf8_lossy(&bytes[..cut]).into_owned(),
        ))
    }

    /// What is left at the end of the stream (an incomplete character, as
    /// U+FFFD).
    pub fn finish(&mut self) -> Option<(u64, u64, String)> {
        if self.pending.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some((self.pending_at, 0, text))
    }
}

/// The length of `bytes` without an incomplete UTF-8 character at its end.
fn complete_prefix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(3) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { n - back } else { n };
    }
    n
}

/// One event in the wire format.
pub fn event(name: &str, id: Option<u64>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    // JSON has no raw newline, so the data is one line.
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

fn chunk_event(stream: StreamKind, (offset, missed, text): (u64, u64, String)) -> Bytes {
    let data = serde_json::json!({"offset": offset, "missed": missed, "text": text});
    event(stream.as_str(), Some(offset), &data.to_string())
}

/// The answer of an exec as events. `running` is the request's
/// `Idempotency-Key`, if any: the result is kept for retries whatever
/// happens to this connection (the command runs on when the client goes
/// away).
pub fn stream_exec(rt: &Runtime, args: ToolArgs, running: Option<Running>) -> HttpResponse {
    let task_id = args.task_id.clone().unwrap_or_default();
    let timeout = args.timeout.unwrap_or(rt.config().command_timeout);
    let max_chars = rt.config().max_output_chars;
    let (chunks, result) = rt.exec_stream(
        task_id.as_str(),
        args.to_request(),
        StreamOptions::default(),
    );
    let (tx, rx) = oneshot::channel::<Arc<Stored>>();
    actix_rt::spawn(async move {
        let outcome = result.await;
        let stored = stored_result(&render_with_timeout(outcome, max_chars, Some(timeout)));
        let stored = match running {
            Some(running) => running.finish(stored),
            None => Arc::new(stored),
        };
        let _ = tx.send(stored);
    });
    let body = chunk_events(chunks).chain(futures_util::stream::once(async move {
        match rx.await {
            Ok(stored) => event("result", None, &stored.body),
            Err(_) => event(
                "result",
                None,
                r#"{"output":"","exit_code":-1,"error":"the result was lost","status":"error","error_kind":"internal"}"#,
            ),
        }
    }));
    events_response(body.map(Ok::<_, actix_web::Error>), false)
}

/// The chunk events of an output stream, then what was held back.
fn chunk_events(
    chunks: impl Stream<Item = Chunk> + 'static,
) -> impl Stream<Item = Bytes> + 'static {
    let chunks = Box::pin(chunks);
    futures_util::stream::unfold(
        (chunks, [Utf8Carry::default(), Utf8Carry::default()], false),
        |(mut chunks, mut carry, done)| async move {
            if done {
                return None;
            }
            loop {
                match chunks.next().await {
                    Some(chunk) => {
                        let i = usize::from(chunk.stream == StreamKind::Stderr);
                        if let Some(piece) = carry[i].feed(&chunk) {
                            let ev = chunk_event(chunk.stream, piece);
                            return Some((ev, (chunks, carry, false)));
                        }
                    }
                    None => {
                        let mut tail = Vec::new();
                        for (i, stream) in [StreamKind::Stdout, StreamKind::Stderr]
                            .into_iter()
                            .enumerate()
                        {
                            if let Some(piece) = carry[i].finish() {
                                tail.extend_from_slice(&chunk_event(stream, piece));
                            }
                        }
                        return (!tail.is_empty())
                            .then(|| (Bytes::from(tail), (chunks, carry, true)));
                    }
                }
            }
        },
    )
}

/// A kept answer sent again as events: only its `result`.
pub fn replay(stored: &Stored) -> HttpResponse {
    let body = futures_util::stream::once(futures_util::future::ready(Ok::<_, actix_web::Error>(
        event("result", None, &stored.body),
    )));
    events_response(body, true)
}

fn events_response(
    body: impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
    replayed: bool,
) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    resp.content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    if replayed {
        resp.insert_header((super::routes::IDEMPOTENCY_REPLAYED, "true"));
    }
    resp.streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, missed: u64, data: &[u8]) -> Chunk {
        Chunk {
            stream: StreamKind::Stdout,
            offset,
            missed,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn a_character_split_between_chunks_is_sent_whole_with_its_offset() {
        let mut carry = Utf8Carry::default();
        let text = "aé€😀b".as_bytes();
        // Every split point, byte by byte.
        let mut got = String::new();
        let mut offsets = Vec::new();
        for (i, b) in text.iter().enumerate() {
            if let Some((offset, missed, piece)) = carry.feed(&chunk(i as u64, 0, &[*b])) {
                assert_eq!(missed, 0);
                offsets.push(offset);
                got.push_str(&piece);
            }
        }
        assert!(carry.finish().is_none());
        assert_eq!(got, "aé€😀b");
        assert_eq!(offsets, [0, 1, 3, 6, 10]);
        // A gap drops the half character before it and counts it.
        let mut carry = Utf8Carry::default();
        assert_eq!(
            carry
                .feed(&chunk(0, 0, &[b'x', 0xE2, 0x82]))
                .expect("a piece")
                .2,
            "x"
        );
        let (offset, missed, piece) = carry.feed(&chunk(10, 5, b"y")).expect("a piece");
        assert_eq!((offset, missed, piece.as_str()), (10, 7, "y"));
        // An incomplete character at the end comes out as U+FFFD.
        let mut carry = Utf8Carry::default();
        assert!(carry.feed(&chunk(0, 0, &[0xF0, 0x9F])).is_none());
        assert_eq!(
            carry.finish().expect("the rest"),
            (0, 0, "\u{FFFD}".to_string())
        );
    }

    #[test]
    fn events_are_single_data_lines() {
        let ev = event("result", None, r#"{"output":"a\nb"}"#);
        assert_eq!(&ev[..], b"event: result\ndata: {\"output\":\"a\\nb\"}\n\n");
        let ev = event("stdout", Some(7), "{}");
        assert_eq!(&ev[..], b"event: stdout\nid: 7\ndata: {}\n\n");
    }
}
