//! Streaming output: a command's stdout and stderr as they are produced.
//!
//! [`Runtime::exec_stream`](crate::Runtime::exec_stream) runs a command
//! like [`Runtime::exec`](crate::Runtime::exec) and also hands the caller an
//! [`OutputStream`], a [`Stream`] of [`Chunk`]s: each says which stream it
//! is from ([`StreamKind`]) and its byte offset in that stream, so an HTTP
//! server can forward chunks as server-sent events whose id is the offset
//! (and a client resume by it), and an MCP server as progress
//! notifications. The stream ends when the command has ended; the final
//! [`ExecOutcome`](crate::ExecOutcome) holds the same bounded head and tail
//! as without streaming.
//!
//! # Backpressure: coalesce, then drop the oldest, never block the command
//!
//! Between the backend (the producer, which reads the command's pipes or
//! the VM's event stream) and the reader sits one buffer of at most
//! [`StreamOptions::buffer_bytes`] (1 MiB by default). A reader that keeps
//! up gets chunks as small as the command's writes. A slower reader gets
//! fewer, larger chunks: bytes written while it was away are appended to
//! the chunk still waiting in the buffer. A reader so slow that the buffer
//! fills loses the *oldest* buffered bytes (a live view wants what the
//! command prints now), and the next chunk it gets says how many bytes of
//! its stream it missed ([`Chunk::missed`]; the offsets jump by as much).
//! The command itself never waits for the reader: its pipes are read at
//! full speed into the bounded capture as without streaming, so a slow or
//! vanished reader changes neither the command's run time nor its result,
//! and the runtime holds at most the buffer per streaming call.
//!
//! A reader that drops its [`OutputStream`] ends only the streaming: the
//! command runs on, its result still arrives (if the result future is
//! kept), and the task's queue moves on as usual.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::Stream;

use crate::provider::Captured;

/// Which of a command's output streams a chunk is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl StreamKind {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            StreamKind::Stdout => 0,
            StreamKind::Stderr => 1,
        }
    }
}

/// A piece of a command's output, as it was produced.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The stream it is from.
    pub stream: StreamKind,
    /// Byte offset of `data`'s first byte in its stream (0 for the
    /// stream's first byte). Chunks of one stream arrive in order, and
    /// each starts where the previous one ended plus [`missed`](Self::missed).
    pub offset: u64,
    /// How many bytes of this stream right before `offset` the reader did
    /// not get (dropped because it read too slowly; see the
    /// [module docs](self)); 0 normally.
    pub missed: u64,
    /// The bytes. Raw output: a chunk's edge may fall inside a UTF-8
    /// character.
    pub data: Bytes,
}

impl Chunk {
    /// The offset just past this chunk: where the stream's next chunk
    /// starts (unless bytes are missed in between).
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("stream", &self.stream)
            .field("offset", &self.offset)
            .field("missed", &self.missed)
            .field("len", &self.data.len())
            .finish()
    }
}

/// How a streaming call buffers its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// The most bytes held for a reader that has not taken them yet; past
    /// it the oldest are dropped (and counted). At least 1.
    pub buffer_bytes: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            buffer_bytes: DEFAULT_BUFFER_BYTES,
        }
    }
}

/// The default of [`StreamOptions::buffer_bytes`]: 1 MiB.
pub const DEFAULT_BUFFER_BYTES: usize = 1 << 20;

/// A buffered chunk grows by appending up to this size; a reader that
/// keeps up never sees one this large.
const MAX_COALESCED: usize = 256 * 1024;

/// A new sink and the stream that reads it.
pub fn channel(options: StreamOptions) -> (OutputSink, OutputStream) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            buffered: 0,
            cap: options.buffer_bytes.max(1),
            written: [0; 2],
            dropped: [0; 2],
            peak: 0,
            senders: 1,
            reader: true,
        }),
        waker: AtomicWaker::new(),
    });
    (
        OutputSink {
            shared: Arc::clone(&shared),
        },
        OutputStream {
            shared,
            expected: [0; 2],
            missed: [0; 2],
        },
    )
}

struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind;
        // they stay usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Pending {
    stream: StreamKind,
    offset: u64,
    data: Vec<u8>,
}

struct State {
    queue: VecDeque<Pending>,
    /// Bytes in `queue`.
    buffered: usize,
    cap: usize,
    /// Bytes produced so far per stream: the next chunk's offset.
    written: [u64; 2],
    /// Bytes dropped per stream because the buffer was full.
    dropped: [u64; 2],
    /// The most bytes `queue` ever held.
    peak: usize,
    /// Live [`OutputSink`]s; the stream ends when none is left.
    senders: usize,
    /// Whether the [`OutputStream`] is still there.
    reader: bool,
}

impl State {
    fn push(&mut self, stream: StreamKind, offset: u64, mut data: &[u8]) {
        let i = stream.index();
        let mut offset = offset.max(self.written[i]);
        self.written[i] = offset + data.len() as u64;
        if !self.reader || data.is_empty() {
            return;
        }
        if data.len() > self.cap {
            let cut = data.len() - self.cap;
            self.dropped[i] += cut as u64;
            data = &data[cut..];
            offset += cut as u64;
        }
        // Make room by dropping the oldest buffered bytes.
        while self.buffered + data.len() > self.cap {
            let over = self.buffered + data.len() - self.cap;
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let take = over.min(front.data.len());
            front.data.drain(..take);
            front.offset += take as u64;
            self.dropped[front.stream.index()] += take as u64;
            self.buffered -= take;
            if front.data.is_empty() {
                self.queue.pop_front();
            }
        }
        match self.queue.back_mut() {
            Some(last)
                if last.stream == stream
                    && last.offset + last.data.len() as u64 == offset
                    && last.data.len() + data.len() <= MAX_COALESCED =>
            {
                last.data.extend_from_slice(data);
            }
            _ => self.queue.push_back(Pending {
                stream,
                offset,
                data: data.to_vec(),
            }),
        }
        self.buffered += data.len();
        self.peak = self.peak.max(self.buffered);
    }
}

/// The producing end: a backend pushes output here as it reads it.
/// Cloning makes another producer; the [`OutputStream`] ends once every
/// sink is dropped. Pushing never blocks (see the [module docs](self)).
pub struct OutputSink {
    shared: Arc<Shared>,
}

impl OutputSink {
    /// Appends `data` to `stream` (at the stream's current end).
    pub fn push(&self, stream: StreamKind, data: &[u8]) {
        let mut state = self.shared.lock();
        let at = state.written[stream.index()];
        state.push(stream, at, data);
        drop(state);
        self.shared.waker.wake();
    }

    /// Pushes a finished command's bounded capture of `stream`: its head at
    /// offset 0 and its tail after the dropped middle. For backends that
    /// learn the output only at the end (the default of
    /// [`Instance::exec_streaming`](crate::Instance::exec_streaming)).
    pub fn push_captured(&self, stream: StreamKind, captured: &Captured) {
        let mut state = self.shared.lock();
        let i = stream.index();
        let head = captured.head.as_bytes();
        let start = state.written[i];
        state.push(stream, start, head);
        let tail_at = start + head.len() as u64 + captured.dropped_bytes;
        state.push(stream, tail_at, captured.tail.as_bytes());
        // The dropped middle belongs to the stream even with no tail.
        state.written[i] = state.written[i].max(tail_at);
        drop(state);
        self.shared.waker.wake();
    }

    /// Whether the reader has gone away (pushing is then a cheap no-op).
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().reader
    }

    /// Bytes pushed to `stream` so far.
    pub fn written(&self, stream: StreamKind) -> u64 {
        self.shared.lock().written[stream.index()]
    }
}

impl Clone for OutputSink {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        OutputSink {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for OutputSink {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.waker.wake();
        }
    }
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSink").finish_non_exhaustive()
    }
}

/// The reading end: a [`Stream`] of [`Chunk`]s in the order they were
/// produced, ending when the command has ended (every [`OutputSink`] is
/// dropped) and the buffer is drained. Dropping it stops the streaming,
/// not the command.
pub struct OutputStream {
    shared: Arc<Shared>,
    /// Per stream, where the next chunk should start.
    expected: [u64; 2],
    /// Per stream, bytes this reader missed.
    missed: [u64; 2],
}

impl OutputStream {
    /// Bytes of `stream` this reader did not get because it read too
    /// slowly (the sum of the [`Chunk::missed`] it was given).
    pub fn missed_bytes(&self, stream: StreamKind) -> u64 {
        self.missed[stream.index()]
    }

    /// The most bytes the buffer ever held for this reader (at most
    /// [`StreamOptions::buffer_bytes`]).
    pub fn peak_buffered(&self) -> usize {
        self.shared.lock().peak
    }

    /// Takes the next chunk if one is buffered, without waiting.
    fn take(&mut self) -> Option<Chunk> {
        let pending = {
            let mut state = self.shared.lock();
            let pending = state.queue.pop_front()?;
            state.buffered -= pending.data.len();
            pending
        };
        let i = pending.stream.index();
        let missed = pending.offset.saturating_sub(self.expected[i]);
        self.missed[i] += missed;
        self.expected[i] = pending.offset + pending.data.len() as u64;
        Some(Chunk {
            stream: pending.stream,
            offset: pending.offset,
            missed,
            data: Bytes::from(pending.data),
        })
    }

    fn ended(&self) -> bool {
        let state = self.shared.lock();
        state.senders == 0 && state.queue.is_empty()
    }
}

impl Stream for OutputStream {
    type Item = Chunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let this = self.get_mut();
        if let Some(chunk) = this.take() {
            return Poll::Ready(Some(chunk));
        }
        if this.ended() {
            return Poll::Ready(None);
        }
        this.shared.waker.register(cx.waker());
        // Whatever arrived between the check and the registration.
        if let Some(chunk) = this.take() {
            return Poll::Ready(Some(chunk));
        }
        if this.ended() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reader = false;
        state.queue.clear();
        state.buffered = 0;
    }
}

impl std::fmt::Debug for OutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputStream")
            .field("expected", &self.expected)
            .field("missed", &self.missed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn drain(stream: &mut OutputStream) -> Vec<Chunk> {
        std::iter::from_fn(|| stream.take()).collect()
    }

    #[test]
    fn chunks_keep_order_and_contiguous_offsets() {
        let (sink, mut stream) = channel(StreamOptions::default());
        sink.push(StreamKind::Stdout, b"ab");
        let first = drain(&mut stream);
        sink.push(StreamKind::Stderr, b"E");
        sink.push(StreamKind::Stdout, b"cd");
        let rest = drain(&mut stream);
        let all: Vec<_> = first.into_iter().chain(rest).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].stream, all[0].offset, &all[0].data[..]),
            (StreamKind::Stdout, 0, &b"ab"[..])
        );
        assert_eq!((all[1].stream, all[1].offset), (StreamKind::Stderr, 0));
        assert_eq!(
            (all[2].stream, all[2].offset, &all[2].data[..]),
            (StreamKind::Stdout, 2, &b"cd"[..])
        );
        assert!(all.iter().all(|c| c.missed == 0));
    }

    #[test]
    fn a_slow_reader_gets_coalesced_chunks() {
        let (sink, mut stream) = channel(StreamOptions::default());
        for _ in 0..100 {
            sink.push(StreamKind::Stdout, b"x");
        }
        let all = drain(&mut stream);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].data.len(), 100);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_says_how_much() {
        let (sink, mut stream) = channel(StreamOptions { buffer_bytes: 10 });
        sink.push(StreamKind::Stdout, b"0123456789");
        sink.push(StreamKind::Stderr, b"abcd");
        sink.push(StreamKind::Stdout, b"XY");
        let all = drain(&mut stream);
        // stdout lost its first 6 bytes to make room.
        assert_eq!(all[0].offset, 6);
        assert_eq!(all[0].missed, 6);
        assert_eq!(&all[0].data[..], b"6789");
        assert_eq!(&all[1].data[..], b"abcd");
        assert_eq!((all[2].offset, &all[2].data[..]), (10, &b"XY"[..]));
        assert_eq!(stream.missed_bytes(StreamKind::Stdout), 6);
        assert!(stream.peak_buffered() <= 10);
        // One write larger than the buffer keeps its newest bytes.
        sink.push(StreamKind::Stdout, &[b'z'; 25]);
        let big = drain(&mut stream);
        assert_eq!(
            (big[0].offset, big[0].missed, big[0].data.len()),
            (27, 15, 10)
        );
    }

    #[test]
    fn a_capture_is_pushed_with_its_gap() {
        let (sink, mut stream) = channel(StreamOptions::default());
        let captured = Captured {
            head: "head".into(),
            tail: "tail".into(),
            dropped_bytes: 100,
        };
        sink.push_captured(StreamKind::Stdout, &captured);
        let all = drain(&mut stream);
        assert_eq!((all[0].offset, all[1].offset, all[1].missed), (0, 104, 100));
        assert_eq!(sink.written(StreamKind::Stdout), 108);
    }

    #[actix_rt::test]
    async fn the_stream_ends_when_every_sink_is_gone_and_a_dropped_reader_closes_it() {
        let (sink, mut stream) = channel(StreamOptions::default());
        let other = sink.clone();
        sink.push(StreamKind::Stdout, b"a");
        drop(sink);
        assert!(stream.next().await.is_some());
        other.push(StreamKind::Stdout, b"b");
        drop(other);
        assert_eq!(stream.next().await.map(|c| c.offset), Some(1));
        assert!(stream.next().await.is_none());

        let (sink, stream) = channel(StreamOptions::default());
        assert!(!sink.is_closed());
        drop(stream);
        assert!(sink.is_closed());
        sink.push(StreamKind::Stdout, b"into the void");
        assert_eq!(sink.written(StreamKind::Stdout), 13);
    }
}
