//! The exec routes: `POST …/exec` (one JSON answer) and `POST …/exec/sse`
//! (a stream of output events), sharing admission, the exec-level faults
//! and the command's start, and differing in how the output goes back.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{drop_connection, instance_not_found, not_ready, parse_body, Answer, Reject};
use crate::sim::process::{self, Chunk, RunOutput, Stream};
use crate::sim::state::{ExecAdmission, Shared};
use crate::sim::{ExecMode, SseFormat};

#[derive(Debug, Deserialize)]
struct ExecBody {
    command: Vec<String>,
}

/// A command that has been admitted and started.
enum Started {
    /// Echo mode: nothing runs.
    Echo(String),
    Bash(process::Running),
}

impl Started {
    async fn finish(self, sink: Option<mpsc::UnboundedSender<Chunk>>) -> RunOutput {
        match self {
            Started::Echo(text) => {
                let stdout = format!("{text}\n");
                if let Some(sink) = sink {
                    let _ = sink.send(Chunk {
                        stream: Stream::Stdout,
                        text: stdout.clone(),
                    });
                }
                RunOutput {
                    exit_code: 0,
                    stdout,
                    stderr: String::new(),
                }
            }
            Started::Bash(running) => running.finish(sink).await,
        }
    }
}

/// The shared first half of both exec routes: parse, apply the faults that
/// come before the command, admit and start it. `Err` is the answer to give
/// instead (which may be a dropped connection).
async fn begin_exec(
    req: &HttpRequest,
    shared: &Shared,
    id: &str,
    body: &Bytes,
) -> Result<(Started, bool), Reject> {
    let body: ExecBody = parse_body(body)?;
    if body.command.is_empty() {
        return Err(Reject::invalid(
            &["body", "command"],
            "List should have at least 1 item after validation, not 0",
            "too_short",
        ));
    }
    let text = body.command.join(" ");
    let faults = shared.with(|state| state.faults.draw_exec());
    if let Some(by) = faults.slow {
        shared.with(|state| state.faults.count_slow());
        log::debug!("sim vm={id} slow exec (fault): {by:?}");
        actix_rt::time::sleep(by).await;
    }
    let dir = match shared.with(|state| state.admit_exec(id, faults.vanish)) {
        ExecAdmission::Run { dir } => dir,
        ExecAdmission::NotFound => return Err(instance_not_found()),
        ExecAdmission::NotReady(status) => return Err(not_ready(status)),
        ExecAdmission::Vanished(cleanup) => {
            cleanup.run();
            return Err(instance_not_found());
        }
    };
    if faults.drop_before {
        shared.with(|state| state.faults.count_drop_before());
        log::debug!("sim vm={id} dropping the connection before the command (fault)");
        return Err(drop_connection(req));
    }
    let started = match (shared.config.exec_mode, dir) {
        (ExecMode::Echo, _) => Started::Echo(text.clone()),
        (ExecMode::Bash, None) => {
            log::warn!("sim vm={id} has no directory to run commands in");
            return Err(Reject::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "instance has no directory",
            ));
        }
        (ExecMode::Bash, Some(dir)) => match process::spawn(id, &dir, &text) {
            Ok(running) => {
                if !shared.with(|state| state.add_pgid(id, running.pgid)) {
                    // Deleted while we spawned: nothing must outlive it.
                    let _ = process::kill_instance(id, &[running.pgid]);
                }
                Started::Bash(running)
            }
            Err(err) => {
                if shared.with(|state| state.get(id).is_none()) {
                    return Err(instance_not_found());
                }
                log::warn!("sim vm={id} could not start a command: {err}");
                return Err(Reject::detail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not start the command",
                ));
            }
        },
    };
    shared.with(|state| state.record_run(&text));
    log::debug!("sim vm={id} exec {} bytes of command", text.len());
    Ok((started, faults.drop_after))
}

pub(super) async fn exec(
    req: HttpRequest,
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
    let (started, drop_after) = begin_exec(&req, &shared, &id, &body).await?;
    // A task of its own, so a client that hangs up does not cancel it: the
    // real service keeps running a command when its caller goes away.
    let output = actix_rt::spawn(started.finish(None))
        .await
        .map_err(|_| Reject::detail(StatusCode::INTERNAL_SERVER_ERROR, "command task failed"))?;
    log::debug!("sim vm={id} exit {}", output.exit_code);
    if drop_after {
        shared.with(|state| state.faults.count_drop_after());
        log::debug!("sim vm={id} dropping the connection after the command (fault)");
        return Err(drop_connection(&req));
    }
    Ok(HttpResponse::Ok().json(json!({
        "exit_code": output.exit_code,
        "stdout": output.stdout,
        "stderr": output.stderr,
    })))
}

/// One event of the documented named form: each line of `text` a `data:`
/// line (the client joins them with newlines).
fn named_event(kind: &str, text: &str) -> Bytes {
    let mut out = format!("event: {kind}\n");
    for line in text.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

fn sse_event(kind: &str, content: &Value) -> Bytes {
    Bytes::from(format!(
        "data: {{\"type\": \"{kind}\", \"content\": {content}}}\n\n"
    ))
}

/// Where an SSE answer is in its stream.
enum SsePhase {
    Chunks(mpsc::UnboundedReceiver<Chunk>, oneshot::Receiver<i32>),
    Done,
    Finished,
}

pub(super) async fn exec_sse(
    req: HttpRequest,
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
    let (started, drop_after) = begin_exec(&req, &shared, &id, &body).await?;
    if drop_after {
        let _ = actix_rt::spawn(started.finish(None)).await;
        shared.with(|state| state.faults.count_drop_after());
        log::debug!("sim vm={id} dropping the connection after the command (fault)");
        return Err(drop_connection(&req));
    }
    let (chunks_tx, chunks) = mpsc::unbounded_channel();
    let (exit_tx, exit) = oneshot::channel();
    actix_rt::spawn(async move {
        let output = started.finish(Some(chunks_tx)).await;
        let _ = exit_tx.send(output.exit_code);
    });
    let named = shared.config.sse_format == SseFormat::Documented;
    let events =
        futures_util::stream::unfold(SsePhase::Chunks(chunks, exit), move |phase| async move {
            let (event, next) = match phase {
                SsePhase::Chunks(mut chunks, exit) => match chunks.recv().await {
                    Some(chunk) => {
                        let kind = match chunk.stream {
                            Stream::Stdout => "stdout",
                            Stream::Stderr => "stderr",
                        };
                        let event = if named {
                            named_event(kind, &chunk.text)
                        } else {
                            sse_event(kind, &Value::String(chunk.text))
                        };
                        (event, SsePhase::Chunks(chunks, exit))
                    }
                    None => {
                        let code = exit.await.unwrap_or(-1);
                        if named {
                            // The documented form ends with its exit event.
                            (named_event("exit", &code.to_string()), SsePhase::Finished)
                        } else {
                            (sse_event("exit_code", &json!(code)), SsePhase::Done)
                        }
                    }
                },
                SsePhase::Done => (Bytes::from_static(b"data: [DONE]\n\n"), SsePhase::Finished),
                SsePhase::Finished => return None,
            };
            Some((Ok::<_, actix_web::Error>(event), next))
        });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_events_carry_each_line_as_data() {
        assert_eq!(
            &named_event("stdout", "a\nb\n")[..],
            b"event: stdout\ndata: a\ndata: b\ndata: \n\n"
        );
        assert_eq!(&named_event("exit", "0")[..], b"event: exit\ndata: 0\n\n");
    }

    #[test]
    fn sse_event_is_the_sdk_json_form() {
        let event = sse_event("stdout", &Value::String("l1\n".into()));
        assert_eq!(
            &event[..],
            b"data: {\"type\": \"stdout\", \"content\": \"l1\\n\"}\n\n"
        );
    }
}
