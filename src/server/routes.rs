//! The API's handlers: exec (with `Idempotency-Key`), tasks, health and the
//! OpenAPI document. Each is annotated for the generated document
//! ([`super::openapi`]).

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, CONTENT_LENGTH};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Serialize;

use super::error::ApiError;
use super::idempotency::{Begin, IdempotencyStore, Stored, MAX_KEY_BYTES};
use crate::runtime::{validate_task_id, Runtime, TaskInfo};
use crate::tool::{self, ToolArgs, ToolResult};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The runtime commands run on.
    pub rt: Runtime,
    /// Kept answers of execs with an `Idempotency-Key`.
    pub idempotency: Arc<IdempotencyStore>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The bearer token every route but `/healthz` needs.
    pub token: super::ApiToken,
    /// Largest upload body accepted.
    pub max_upload_bytes: u64,
    /// Longest long poll of a job output read.
    pub max_wait: std::time::Duration,
}

/// The header naming a retried request.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Set to `true` on an answer sent again for a retried key.
pub const IDEMPOTENCY_REPLAYED: &str = "idempotency-replayed";

/// The live tasks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskList {
    /// One entry per live task.
    pub tasks: Vec<TaskInfo>,
}

/// The answer to a delete.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Evicted {
    /// The task.
    pub task_id: String,
    /// Its instance was stopped and the task forgotten.
    pub evicted: bool,
}

/// The answer of `/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// Reads a body of at most `limit` bytes, refusing a longer one as soon as
/// its length is known.
pub async fn read_body(
    headers: &HeaderMap,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid_input(format!("the request body could not be read: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The task id of the path, checked.
pub(crate) fn path_task(task_id: &str) -> Result<(), ApiError> {
    validate_task_id(task_id).map_err(ApiError::from)
}

/// The `Idempotency-Key`, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    if text.is_empty() || text.len() > MAX_KEY_BYTES || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid_input(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
        )));
    }
    Ok(Some(text.to_string()))
}

/// The answer for a tool result: 200 for a command that ran (whatever its
/// exit code), else the status of its error kind, the body the result JSON.
pub fn stored_result(result: &ToolResult) -> Stored {
    Stored {
        status: result.error_kind.map_or(200, ApiError::status_of),
        body: result.to_json(),
    }
}

fn respond(stored: &Stored, replayed: bool) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(stored.status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(status);
    resp.content_type("application/json");
    if replayed {
        resp.insert_header((IDEMPOTENCY_REPLAYED, "true"));
    }
    resp.body(stored.body.clone())
}

/// Checks an exec request: the path's task, the body's arguments, and that
/// a `task_id` in the body names the path's task.
pub fn exec_args(state: &AppState, task_id: &str, body: &[u8]) -> Result<ToolArgs, ApiError> {
    path_task(task_id)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid_input("the request body is not UTF-8 text"))?;
    let mut args = ToolArgs::from_json_with_max(text, state.rt.config().max_command_timeout)?;
    match &args.task_id {
        Some(other) if other != task_id => {
            return Err(ApiError::invalid_input(format!(
                "task_id in the body ({:?}) differs from the task in the path ({:?})",
                clip(other),
                clip(task_id)
            )))
        }
        _ => args.task_id = Some(task_id.to_string()),
    }
    Ok(args)
}

pub(crate) fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Runs one command of a task: the `terminal` tool's arguments in, its
/// result out.
///
/// With an `Idempotency-Key` header, a retry of the same request (same
/// task, same key, same arguments) gets the first answer and the command
/// runs once; a retry while the first runs waits for it; the same key with
/// other arguments is refused (422). The command runs to its end even when
/// the client goes away.
///
/// With `Accept: text/event-stream` the answer is a stream of server-sent
/// events: `stdout` and `stderr` chunks as the command writes them (the
/// event id is the chunk's byte offset in its stream; data
/// `{"offset","missed","text"}`), then one `result` event with the tool's
/// result JSON (see [`super::sse`]). A retried key gets only the `result`.
#[utoipa::path(
    post,
    path = "/v1/tasks/{task_id}/exec",
    tag = "tasks",
    params(
        ("task_id" = String, Path, description = "The task whose environment runs the command"),
        ("Idempotency-Key" = Option<String>, Header,
         description = "Retries with this key get the first answer; the command runs once"),
    ),
    request_body(content = ToolArgs, description = "The `terminal` tool's arguments"),
    responses(
        (status = 200, description = "The command ran (any exit code). With `Accept: text/event-stream`: \
         events `stdout`/`stderr` (id: byte offset; data: {offset, missed, text}) then `result` (data: the ToolResult)",
         content((ToolResult = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Bad arguments, or a body task_id that is not the path's", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 413, description = "Body over the limit", body = ApiError),
        (status = 422, description = "Idempotency-Key reused with other arguments", body = ApiError),
        (status = 502, description = "The backend failed (the result says how)", body = ToolResult),
        (status = 503, description = "Shutting down", body = ToolResult),
    ),
    security(("bearer" = [])),
)]
pub async fn exec(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    let key = idempotency_key(&req)?;
    let body = read_body(req.headers(), payload, state.max_body_bytes).await?;
    let args = exec_args(&state, &task_id, &body)?;
    let events = super::sse::wants_events(&req);
    let Some(key) = key else {
        if events {
            return Ok(super::sse::stream_exec(&state.rt, args, None));
        }
        let result = tool::terminal(&state.rt, args).await;
        return Ok(respond(&stored_result(&result), false));
    };
    let fingerprint = state.idempotency.fingerprint(&args);
    let replay = |answer: &Stored| {
        if events {
            super::sse::replay(answer)
        } else {
            respond(answer, true)
        }
    };
    match state.idempotency.begin(&task_id, &key, fingerprint) {
        Begin::Done(answer) => Ok(replay(&answer)),
        Begin::Wait(mut rx) => match rx.wait_for(Option::is_some).await {
            Ok(answer) => match answer.clone() {
                Some(answer) => Ok(replay(&answer)),
                None => Err(ApiError::new(500, "internal", "no answer was kept")),
            },
            Err(_) => Err(ApiError::new(
                500,
                "internal",
                "the first request with this Idempotency-Key ended without an answer",
            )),
        },
        Begin::Conflict => Err(ApiError::new(
            422,
            "idempotency_conflict",
            "this Idempotency-Key was used with other arguments for this task; use a new key",
        )),
        Begin::Run(running) if events => {
            Ok(super::sse::stream_exec(&state.rt, args, Some(running)))
        }
        Begin::Run(running) => {
            // Run apart from this request: a client that goes away does not
            // cancel the command, and its retry finds the answer kept.
            let rt = state.rt.clone();
            let job = actix_rt::spawn(async move {
                let result = tool::terminal(&rt, args).await;
                running.finish(stored_result(&result))
            });
            match job.await {
                Ok(answer) => Ok(respond(&answer, false)),
                Err(_) => Err(ApiError::new(
                    500,
                    "indeterminate",
                    "the command's handler failed; its command may have run",
                )),
            }
        }
    }
}

/// The live tasks: state, instance, idle time, running and queued commands.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    responses(
        (status = 200, description = "The live tasks", body = TaskList),
        (status = 401, description = "Missing or wrong token", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn list_tasks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let tasks = state.rt.tasks().await?;
    Ok(HttpResponse::Ok().json(TaskList { tasks }))
}

/// One live task.
#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = String, Path, description = "The task")),
    responses(
        (status = 200, description = "The task", body = TaskInfo),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "No such live task", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn get_task(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    path_task(&task_id)?;
    let tasks = state.rt.tasks().await?;
    match tasks.into_iter().find(|t| t.task_id == task_id) {
        Some(task) => Ok(HttpResponse::Ok().json(task)),
        None => Err(no_task(&task_id)),
    }
}

/// Evicts a task: stops its instance (and everything running in it) and
/// forgets it. Its next command starts a fresh instance.
#[utoipa::path(
    delete,
    path = "/v1/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = String, Path, description = "The task")),
    responses(
        (status = 200, description = "Evicted", body = Evicted),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "No such live task", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_task(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    path_task(&task_id)?;
    if state.rt.evict(task_id.as_str()).await? {
        Ok(HttpResponse::Ok().json(Evicted {
            task_id,
            evicted: true,
        }))
    } else {
        Err(no_task(&task_id))
    }
}

fn no_task(task_id: &str) -> ApiError {
    ApiError::not_found(format!("no live task {:?}", clip(task_id)))
}

/// Whether the server is up (no token needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "Serving", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// This document: the OpenAPI description of the API, generated from its
/// types and handlers.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "service",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, description = "Missing or wrong token", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document_json())
}

/// The runtime's Prometheus metrics ([`crate::metrics`]), in the text
/// exposition format. Like every route but `/healthz`, it needs the token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses(
        (status = 200, description = "Prometheus text exposition 0.0.4", content_type = "text/plain"),
        (status = 401, description = "Missing or wrong token", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::TEXT_CONTENT_TYPE)
        .body(state.rt.metrics_text())
}

/// Any path the API does not have.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError as _;
    ApiError::not_found(format!("no route {} {}", req.method(), clip(req.path()))).error_response()
}

/// A method the route does not take.
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError as _;
    ApiError::new(
        405,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), clip(req.path())),
    )
    .error_response()
}
