//! `PUT /v1/tasks/{task_id}`: opens a task with a spec
//! ([`crate::spec::TaskSpec`]) and answers how its setup went.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::routes::{clip, path_task, read_body, AppState};
use crate::error::ErrorKind;
use crate::spec::{parse_spec_fields, TaskSpec, SPEC_FIELDS};

/// The answer to opening a task ([`crate::TaskOpened`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenedTask {
    /// The task.
    pub task_id: String,
    /// The task's instance.
    pub instance_id: String,
    /// This request started the instance (false: the task was open already
    /// with the same spec).
    pub instance_started: bool,
    /// Set when the task's previous instance had ended
    /// (`ttl`, `idle`, `vanished`, `evicted`, `failed`).
    #[schema(value_type = Option<String>)]
    pub instance_restarted: Option<crate::RestartReason>,
    /// How applying the spec went, when this request started the instance:
    /// `instance_id`, `reapplied`, `files_placed`, `steps` (each `command`,
    /// `exit_code`, `timed_out`, `output`, `error`, `duration_ms`), `ok`,
    /// `duration_ms`.
    #[schema(value_type = Option<Object>)]
    pub setup: Option<crate::SetupReport>,
}

/// The spec of an open request's body: a JSON object of the spec's fields
/// ([`SPEC_FIELDS`]), with `files` given by `content` (a `source` would
/// read a file of the server's host, and is refused).
pub fn spec_from_body(body: &[u8]) -> Result<TaskSpec, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_input(format!("the body is not a JSON object: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid_input(
            "the body must be a JSON object of spec fields, like {\"setup\": [\"make\"]}",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !SPEC_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid_input(format!(
            "unknown spec field {:?} (known: {})",
            clip(unknown),
            SPEC_FIELDS.join(", ")
        )));
    }
    refuse_host_sources(&map)?;
    match parse_spec_fields(&map, std::path::Path::new("/")) {
        Ok(Some(spec)) => Ok(spec),
        // No field at all: a task opened with an empty spec.
        Ok(None) => Ok(TaskSpec::new()),
        Err(why) => Err(ApiError::invalid_input(format!("spec: {why}"))),
    }
}

fn refuse_host_sources(map: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(Value::Array(files)) = map.get("files") else {
        return Ok(());
    };
    for (i, file) in files.iter().enumerate() {
        if file.get("source").is_some() {
            return Err(ApiError::invalid_input(format!(
                "files[{i}].source names a file of the server's host, which the API does not \
                 read: give its content, or upload it (PUT /v1/tasks/{{task_id}}/files)"
            )));
        }
    }
    Ok(())
}

/// Opens a task with a spec: starts its instance, places the spec's files
/// and runs its setup commands, and answers how that went. Opening an
/// open task again with the same spec answers at once (the setup is not
/// run again); with a different spec, or a task already running without
/// one, is refused with 409 (evict it first).
#[utoipa::path(
    put,
    path = "/v1/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = String, Path, description = "The task to open")),
    request_body(content = Object, description = "The spec: any of `image`, `env` (object of \
        strings), `workdir`, `files` (list of {path, content, executable}), `setup` (string or \
        list), `setup_timeout`, `idle_lifetime`, `ttl` (seconds), `memory_mb`, `pids`, \
        `persistent_shell`", content_type = "application/json"),
    responses(
        (status = 200, description = "The task is open", body = OpenedTask),
        (status = 400, description = "A bad spec", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 409, description = "The task is open with another spec, or running without one", body = ApiError),
        (status = 413, description = "Body over the limit", body = ApiError),
        (status = 422, description = "The setup failed (the error has its output); the task \
            answers every command with this until it is evicted", body = ApiError),
        (status = 502, description = "The backend failed", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn open_task(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    path_task(&task_id)?;
    let body = read_body(req.headers(), payload, state.max_body_bytes).await?;
    let spec = spec_from_body(&body)?;
    match state.rt.open_task(task_id.as_str(), spec).await {
        Ok(opened) => Ok(HttpResponse::Ok().json(OpenedTask {
            task_id,
            instance_id: opened.instance_id,
            instance_started: opened.instance_started,
            instance_restarted: opened.instance_restarted,
            setup: opened.setup,
        })),
        Err(err) if crate::spec::is_conflict(&err) => {
            Err(ApiError::new(409, "spec_conflict", err.message()))
        }
        Err(err) if err.kind() == ErrorKind::SetupFailed => {
            Err(ApiError::new(422, err.kind().as_str(), err.message()))
        }
        Err(err) => Err(err.into()),
    }
}
