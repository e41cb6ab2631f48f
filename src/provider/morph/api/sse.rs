//! `POST /instance/{id}/exec/sse`: an exec whose output arrives as a
//! stream of server-sent events (either form of
//! `shared/reference/morphcloud-api.md` §4.2, parsed by
//! [`sse`](crate::provider::morph::sse)), pushed to the caller's sink as
//! it arrives and captured head and tail as a plain exec's output is.
//!
//! The same rules as the plain exec hold: the whole stream, not only its
//! head, is read within the exec's deadline; a stream lost or cut off
//! before the command's exit code is
//! [`Indeterminate`](crate::ErrorKind::Indeterminate); a failing status is
//! classified by [`Api::check`]; and the output is scrubbed of the API key
//! before anything sees it, also where the key is split across events.

use std::time::Duration;

use awc::http::header;
use awc::http::Method;
use futures_util::StreamExt;

use super::{client, encode_segment, retry_after, Api, Call, Reply};
use crate::error::{Error, Result};
use crate::provider::morph::sse::{SseEvent, SseParser, StreamScrubber};
use crate::provider::morph::wire;
use crate::provider::{Captured, OutputCapture};
use crate::stream::{OutputSink, StreamKind};

/// What a streamed exec ended with.
#[derive(Debug)]
pub(crate) struct StreamedReply {
    pub exit_code: i32,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Most characters of a server's text quoted in an error.
const MAX_QUOTED: usize = 500;

impl Api {
    /// `POST /instance/{id}/exec/sse` with one command string: pushes the
    /// output to `sink` as it arrives, keeps `capture_bytes` of each stream
    /// head and tail, and waits at most `deadline` for the stream's end.
    pub(crate) async fn exec_sse(
        &self,
        id: &str,
        command: &str,
        deadline: Duration,
        sink: &OutputSink,
        capture_bytes: usize,
    ) -> Result<StreamedReply> {
        let path = format!("/instance/{}/exec/sse", encode_segment(id));
        let what = "POST /instance/{id}/exec/sse";
        let body = serde_json::to_vec(&wire::ExecBody { command: [command] }).map_err(|e| {
            Error::internal(format!("cannot encode the exec request: {e}")).with_source(e)
        })?;
        let url = format!("{}{path}", self.base_url);
        let started = actix_rt::time::Instant::now();
        let sent = client()
            .request(Method::POST, &url)
            .insert_header((header::AUTHORIZATION, self.auth.clone()))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((header::ACCEPT, "text/event-stream"))
            .timeout(deadline)
            .send_body(body)
            .await;
        let mut response = sent.map_err(|e| self.transport_error(Call::Exec, what, deadline, e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after(response.headers());
            let body = self
                .read_body(Call::Exec, what, status, &mut response, deadline, started)
                .await?;
            let reply = Reply {
                status,
                retry_after,
                body,
            };
            return match self.check(Call::Exec, what, reply) {
                Err(err) => Err(err),
                Ok(_) => Err(Error::internal(format!(
                    "{what}: HTTP {} was taken for a failure",
                    status.as_u16()
                ))),
            };
        }
        let end = started + deadline;
        let mut parser = SseParser::new(self.max_body_bytes);
        let mut scrubbers = [
            StreamScrubber::new(&self.api_key),
            StreamScrubber::new(&self.api_key),
        ];
        let mut captures = [
            OutputCapture::new(capture_bytes),
            OutputCapture::new(capture_bytes),
        ];
        let kinds = [StreamKind::Stdout, StreamKind::Stderr];
        let mut events = Vec::new();
        let mut exit_code = None;
        let mut done = false;
        let mut saw_done = false;
        let unreadable = |e: Error| {
            Error::new(e.kind(), self.scrub_and_cut(e.message(), MAX_QUOTED))
                .with_status(status.as_u16())
                .context("the command ran, but its result is unreadable")
        };
        while !done {
            let ended = match tokio::time::timeout_at(end, response.next()).await {
                Err(_) => {
                    return Err(Call::Exec
                        .lost(format!(
                            "{what}: HTTP {}: the event stream did not end within {deadline:?}",
                            status.as_u16()
                        ))
                        .with_status(status.as_u16()))
                }
                Ok(Some(Err(e))) => return Err(self.body_error(Call::Exec, what, status, e)),
                Ok(Some(Ok(bytes))) => {
                    parser.feed(&bytes, &mut events).map_err(unreadable)?;
                    false
                }
                Ok(None) => {
                    parser.finish(&mut events).map_err(unreadable)?;
                    true
                }
            };
            for event in events.drain(..) {
                match event {
                    SseEvent::Output { stderr, text } => {
                        let i = usize::from(stderr);
                        let clean = scrubbers[i].push(text.as_bytes());
                        captures[i].push(&clean);
                        sink.push(kinds[i], &clean);
                    }
                    SseEvent::Exit(code) => exit_code = Some(code),
                    SseEvent::Done => {
                        saw_done = true;
                        done = true;
                    }
                }
            }
            done |= ended;
        }
        for i in 0..2 {
            let rest = scrubbers[i].finish();
            captures[i].push(&rest);
            sink.push(kinds[i], &rest);
        }
        // The SDK takes a stream ended by `[DONE]` without an exit code as
        // exit 0; a stream that just stops may have been cut off.
        let exit_code = match exit_code {
            Some(code) => code,
            None if saw_done => 0,
            None => {
                return Err(Call::Exec
                    .lost(format!(
                        "{what}: HTTP {}: the event stream ended before the command's exit code",
                        status.as_u16()
                    ))
                    .with_status(status.as_u16()))
            }
        };
        let [out, err] = captures;
        Ok(StreamedReply {
            exit_code,
            stdout: out.finish(),
            stderr: err.finish(),
        })
    }
}
