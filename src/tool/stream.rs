//! The `terminal` tool with its output streamed: [`terminal_stream`] hands
//! each chunk to the caller as the command produces it, then returns the
//! same [`ToolResult`] as [`terminal`](super::terminal). `hecate exec
//! --stream` prints the chunks with a [`ChunkPrinter`].

use std::io::Write;

use futures_util::StreamExt;

use super::{render_with_timeout, ToolArgs, ToolResult, DEFAULT_TASK_ID};
use crate::runtime::Runtime;
use crate::stream::{Chunk, StreamKind, StreamOptions};

/// Runs one `terminal` call like [`terminal`](super::terminal), calling
/// `on_chunk` with each piece of output as it is produced (see
/// [`Runtime::exec_stream`]), and returns the final result once the
/// stream has ended. The result's `output` is the same bounded head and
/// tail as without streaming.
pub async fn terminal_stream(
    rt: &Runtime,
    args: ToolArgs,
    options: StreamOptions,
    mut on_chunk: impl FnMut(&Chunk),
) -> ToolResult {
    let task_id = args
        .task_id
        .clone()
        .unwrap_or_else(|| DEFAULT_TASK_ID.to_string());
    let config = rt.config();
    let timeout = args.timeout.unwrap_or(config.command_timeout);
    let max_chars = config.max_output_chars;
    let (mut chunks, result) = rt.exec_stream(task_id.as_str(), args.to_request(), options);
    while let Some(chunk) = chunks.next().await {
        on_chunk(&chunk);
    }
    let result = result.await;
    if let Err(e) = &result {
        log::warn!(
            "task={task_id} terminal (streamed) failed ({}): {e}",
            e.kind()
        );
    }
    render_with_timeout(result, max_chars, Some(timeout))
}

/// Writes chunks as they arrive, stdout's to one writer and stderr's to
/// another, flushing each, and marks bytes a slow writer missed.
#[derive(Debug)]
pub struct ChunkPrinter<O: Write, E: Write> {
    out: O,
    err: E,
    /// Whether stdout's last byte written was a newline (or nothing was
    /// written), so a line printed after the output starts on its own line.
    at_line_start: bool,
}

impl<O: Write, E: Write> ChunkPrinter<O, E> {
    /// A printer writing stdout chunks to `out` and stderr chunks to `err`.
    pub fn new(out: O, err: E) -> Self {
        ChunkPrinter {
            out,
            err,
            at_line_start: true,
        }
    }

    /// Writes one chunk (a reader that went away is ignored: the command's
    /// result still matters).
    pub fn print(&mut self, chunk: &Chunk) {
        let to: &mut dyn Write = match chunk.stream {
            StreamKind::Stdout => &mut self.out,
            StreamKind::Stderr => &mut self.err,
        };
        if chunk.missed > 0 {
            let _ = write!(
                to,
                "\n[hecate: {} bytes of {} not shown: the output came faster than it could be printed]\n",
                chunk.missed,
                chunk.stream.as_str()
            );
        }
        let _ = to.write_all(&chunk.data);
        let _ = to.flush();
        if chunk.stream == StreamKind::Stdout && !chunk.data.is_empty() {
            self.at_line_start = chunk.data.ends_with(b"\n");
        }
    }

    /// Ends stdout's last line if the output left it open, so what follows
    /// (the result JSON) is a line of its own.
    pub fn finish_line(&mut self) {
        if !self.at_line_start {
            let _ = self.out.write_all(b"\n");
            let _ = self.out.flush();
            self.at_line_start = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn chunks_go_to_their_stream_and_the_last_line_is_closed() {
        let mut printer = ChunkPrinter::new(Vec::new(), Vec::new());
        let chunk = |stream, offset, missed, data: &'static [u8]| Chunk {
            stream,
            offset,
            missed,
            data: Bytes::from_static(data),
        };
        printer.print(&chunk(StreamKind::Stdout, 0, 0, b"a\n"));
        printer.print(&chunk(StreamKind::Stderr, 0, 0, b"e"));
        printer.print(&chunk(StreamKind::Stdout, 7, 5, b"b"));
        printer.finish_line();
        let out = String::from_utf8_lossy(&printer.out).into_owned();
        assert!(
            out.starts_with("a\n\n[hecate: 5 bytes of stdout not shown"),
            "{out}"
        );
        assert!(out.ends_with("]\nb\n"), "{out}");
        assert_eq!(printer.err, b"e");
    }
}
