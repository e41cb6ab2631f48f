//! A task's background jobs over HTTP: list, get, read output from an
//! offset (with a long poll), kill. The answers are the job tools' shapes:
//! [`JobRecord`] (the tools' `job`), a list of them (`jobs`), and
//! [`JobOutput`] (offset, next_offset, missed_bytes, text, more, job).
//! Background jobs start through exec with `"background": true`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::routes::{path_task, AppState};
use crate::error::ErrorKind;
use crate::jobs::{JobOutput, JobRecord};
use crate::runtime::MAX_READ_BYTES;

/// A task's jobs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobList {
    /// The task.
    pub task_id: String,
    /// Its jobs, running and recently ended, by id.
    pub jobs: Vec<JobRecord>,
}

/// Where and how to read a job's output.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// The byte offset to read from (0, the default: the beginning; pass
    /// the last answer's `next_offset` to read on).
    pub offset: Option<u64>,
    /// Seconds to wait for new output (or the job's end) when there is
    /// none past `offset` yet; at most the server's maximum
    /// (`HECATE_API_MAX_WAIT_SECONDS`). Absent: answer at once.
    pub wait: Option<f64>,
    /// Most bytes to read (default and maximum 1 MiB).
    pub max_bytes: Option<usize>,
}

/// The task and job of a path, checked: 400 for a bad task id, 404 for a
/// job the task does not have.
fn checked_job(state: &AppState, task_id: &str, job_id: u64) -> Result<JobRecord, ApiError> {
    path_task(task_id)?;
    state.rt.job(task_id, job_id).map_err(|err| {
        if err.kind() == ErrorKind::InvalidInput {
            ApiError::not_found(err.message())
        } else {
            err.into()
        }
    })
}

/// A task's jobs, running and recently ended (an unknown task has none).
#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/jobs",
    tag = "jobs",
    params(("task_id" = String, Path, description = "The task")),
    responses(
        (status = 200, description = "The task's jobs", body = JobList),
        (status = 400, description = "A bad task id", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn list_jobs(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let task_id = path.into_inner();
    path_task(&task_id)?;
    let jobs = state.rt.jobs(&task_id)?;
    Ok(HttpResponse::Ok().json(JobList { task_id, jobs }))
}

/// One job of a task.
#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/jobs/{job_id}",
    tag = "jobs",
    params(
        ("task_id" = String, Path, description = "The task"),
        ("job_id" = u64, Path, description = "The job's id within the task"),
    ),
    responses(
        (status = 200, description = "The job", body = JobRecord),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "The task has no such job", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn get_job(
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (task_id, job_id) = path.into_inner();
    Ok(HttpResponse::Ok().json(checked_job(&state, &task_id, job_id)?))
}

/// Reads a job's output from a byte offset. With `wait`, a read that would
/// find nothing new waits (a long poll) up to that long for new output or
/// the job's end, answering as soon as either comes. `missed_bytes` counts
/// the bytes the output cap dropped before the offset could be read; read
/// on from `next_offset`; `more` says more is stored past it.
#[utoipa::path(
    get,
    path = "/v1/tasks/{task_id}/jobs/{job_id}/output",
    tag = "jobs",
    params(
        ("task_id" = String, Path, description = "The task"),
        ("job_id" = u64, Path, description = "The job's id within the task"),
        OutputQuery,
    ),
    responses(
        (status = 200, description = "The output read", body = JobOutput),
        (status = 400, description = "A bad offset, wait or max_bytes", body = ApiError),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "The task has no such job", body = ApiError),
        (status = 502, description = "The job's instance ended", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn job_output(
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
    query: web::Query<OutputQuery>,
) -> Result<HttpResponse, ApiError> {
    let (task_id, job_id) = path.into_inner();
    let query = query.into_inner();
    let max_bytes = query.max_bytes.unwrap_or(MAX_READ_BYTES);
    if max_bytes == 0 || max_bytes > MAX_READ_BYTES {
        return Err(ApiError::invalid_input(format!(
            "max_bytes must be between 1 and {MAX_READ_BYTES}"
        )));
    }
    let wait = match query.wait {
        None => None,
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            if secs > state.max_wait.as_secs_f64() {
                return Err(ApiError::invalid_input(format!(
                    "wait must be at most {} seconds (HECATE_API_MAX_WAIT_SECONDS)",
                    state.max_wait.as_secs_f64()
                )));
            }
            Some(Duration::from_secs_f64(secs))
        }
        Some(_) => {
            return Err(ApiError::invalid_input(
                "wait must be a number of seconds of at least 0",
            ))
        }
    };
    checked_job(&state, &task_id, job_id)?;
    let read = state
        .rt
        .job_output(&task_id, job_id, query.offset.unwrap_or(0), max_bytes, wait)
        .await?;
    Ok(HttpResponse::Ok().json(read))
}

/// Kills a job and everything it started (SIGTERM, the kill grace, then
/// SIGKILL to its whole tree); answers the job as it is after. Killing an
/// ended job changes nothing.
#[utoipa::path(
    post,
    path = "/v1/tasks/{task_id}/jobs/{job_id}/kill",
    tag = "jobs",
    params(
        ("task_id" = String, Path, description = "The task"),
        ("job_id" = u64, Path, description = "The job's id within the task"),
    ),
    responses(
        (status = 200, description = "The job after the kill", body = JobRecord),
        (status = 401, description = "Missing or wrong token", body = ApiError),
        (status = 404, description = "The task has no such job", body = ApiError),
        (status = 502, description = "The backend failed", body = ApiError),
    ),
    security(("bearer" = [])),
)]
pub async fn kill_job(
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (task_id, job_id) = path.into_inner();
    checked_job(&state, &task_id, job_id)?;
    Ok(HttpResponse::Ok().json(state.rt.kill_job(&task_id, job_id).await?))
}
