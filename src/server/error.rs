//! The one error shape of the HTTP API: every answer that is not a success
//! carries `error` (a message for humans and models) and `error_kind` (a
//! stable snake_case name), the same two keys a failed `terminal` result
//! has.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::{Error, ErrorKind};

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// What went wrong, for humans (and models).
    pub error: String,
    /// The kind of failure: the runtime's kinds (`invalid_input`,
    /// `shutting_down`, …) or the API's own (`unauthorized`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `idempotency_conflict`).
    pub error_kind: String,
    /// The HTTP status sent with it.
    #[serde(skip)]
    pub status: u16,
}

impl ApiError {
    /// An error of `kind` with `status`.
    pub fn new(status: u16, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            error: message.into(),
            error_kind: kind.to_string(),
            status,
        }
    }

    /// 401: no bearer token, or the wrong one.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "unauthorized",
            "missing or wrong bearer token (send `Authorization: Bearer <HECATE_API_TOKEN>`)",
        )
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", what)
    }

    /// 400 with kind `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(400, ErrorKind::InvalidInput.as_str(), message)
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// The HTTP status the API answers a runtime error kind with.
    pub fn status_of(kind: ErrorKind) -> u16 {
        match kind {
            ErrorKind::InvalidInput => 400,
            ErrorKind::ShuttingDown | ErrorKind::Config => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Transient
            | ErrorKind::InstanceGone
            | ErrorKind::Rejected
            | ErrorKind::Indeterminate
            | ErrorKind::Protocol => 502,
            _ => 500,
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> ApiError {
        ApiError::new(
            Self::status_of(err.kind()),
            err.kind().as_str(),
            err.message(),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error, self.error_kind)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if self.status == 401 {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        resp.json(self)
    }
}
