//! `hecate serve`: the HTTP API over a [`Runtime`], in the same process.
//!
//! Versioned under `/v1`, JSON in and out, the `terminal` tool's result
//! shape unchanged:
//!
//! - `POST /v1/tasks/{task_id}/exec`: the tool's arguments in, its result
//!   out (a `task_id` in the body that is not the path's is refused), with
//!   `Idempotency-Key` for retries ([`idempotency`]); with `Accept:
//!   text/event-stream` the output streams as server-sent events, then the
//!   result ([`sse`]);
//! - `GET /v1/tasks`, `GET /v1/tasks/{task_id}`, `DELETE /v1/tasks/{task_id}`
//!   (evict);
//! - `PUT /v1/tasks/{task_id}`: open a task with a spec ([`open`]);
//! - `GET /v1/tasks/{task_id}/jobs`, `…/jobs/{job_id}`,
//!   `…/jobs/{job_id}/output` (from an offset, with a long poll),
//!   `POST …/jobs/{job_id}/kill` ([`jobs_api`]);
//! - `PUT` and `GET /v1/tasks/{task_id}/files?path=P`: a file's bytes or a
//!   directory's tar stream ([`files_api`]); `hecate cp` is their client
//!   ([`cp`]);
//! - `GET /healthz` (no token), `GET /metrics` (the runtime's Prometheus
//!   metrics), `GET /v1/openapi.json` (generated, [`openapi`]).
//!
//! Every route but `/healthz` needs `Authorization: Bearer <token>`,
//! compared in constant time ([`auth`]); bodies are bounded; every error
//! answer has `error` and `error_kind` ([`ApiError`]). Tasks live in the
//! runtime between requests and end on idle and TTL as in the library.
//!
//! Feature `server` (on by default; not part of the library's
//! `--no-default-features` build).

pub mod auth;
#[cfg(feature = "cli")]
mod cli;
pub mod config;
#[cfg(feature = "cli")]
pub mod cp;
pub mod error;
pub mod files_api;
pub mod idempotency;
pub mod jobs_api;
pub mod open;
pub mod openapi;
pub mod routes;
pub mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{middleware, web, App, HttpServer};

#[cfg(feature = "cli")]
pub use cli::{run_cli, ServeArgs};
pub use config::{ApiToken, ServerConfig, DEFAULT_BIND};
#[cfg(feature = "cli")]
pub use cp::{run_cp, CpArgs};
pub use error::ApiError;

use crate::error::{Error, Result};
use crate::runtime::Runtime;
use idempotency::IdempotencyStore;
use routes::AppState;

/// A running API server. Dropping it without [`stop`](Self::stop) stops
/// the server without waiting for requests in flight.
pub struct ApiServer {
    addr: SocketAddr,
    token: ApiToken,
    handle: ServerHandle,
    done: Option<actix_rt::task::JoinHandle<std::io::Result<()>>>,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Binds `config.bind` and serves `rt` on it, with
    /// `config.workers` HTTP worker threads. Must be called inside a
    /// running actix `System`. Without a token in `config`, one is
    /// generated ([`token`](Self::token)).
    pub async fn start(rt: Runtime, config: ServerConfig) -> Result<ApiServer> {
        let token = match config.token.clone() {
            Some(token) => token,
            None => ApiToken::generate()?,
        };
        let state = web::Data::new(AppState {
            rt,
            idempotency: IdempotencyStore::new(
                config.idempotency_ttl,
                config.idempotency_max_bytes,
            ),
            max_body_bytes: config.max_body_bytes,
            token: token.clone(),
            max_upload_bytes: config.max_upload_bytes,
            max_wait: config.max_wait,
        });
        let listener = std::net::TcpListener::bind(config.bind).map_err(|e| {
            Error::config(format!("cannot listen on {}: {e}", config.bind)).with_source(e)
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("the listening address: {e}")))?;
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(middleware::from_fn(auth::require_token))
                .configure(extractor_errors)
                .configure(routes_v1)
                .default_service(web::to(routes::not_found))
        })
        // Small writes (an event after the headers) go out at once rather
        // than wait, under Nagle's algorithm, for the client's delayed ACK.
        .on_connect(|conn, _| {
            if let Some(tcp) = conn.downcast_ref::<actix_rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(config.workers.max(1))
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
        .listen(listener)
        .map_err(|e| Error::internal(format!("cannot serve on {addr}: {e}")))?
        .run();
        let handle = server.handle();
        let done = actix_rt::spawn(server);
        log::info!("serving the API on http://{addr}");
        Ok(ApiServer {
            addr,
            token,
            handle,
            done: Some(done),
            state,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL: `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// The runtime it serves.
    pub fn runtime(&self) -> &Runtime {
        &self.state.rt
    }

    /// Keys kept for `Idempotency-Key` (running or answered).
    pub fn idempotency_keys(&self) -> usize {
        self.state.idempotency.len()
    }

    /// Stops accepting connections; with `graceful`, waits (up to the
    /// configured shutdown timeout) for the requests in flight to be
    /// answered. The runtime is not stopped: that is the caller's
    /// [`Runtime::shutdown`], which a graceful stop runs alongside so that
    /// running commands end and their requests are answered.
    pub async fn stop(mut self, graceful: bool) {
        self.handle.stop(graceful).await;
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Stops accepting, answers what is in flight and stops every instance
    /// of the runtime, all within `grace`: the server's graceful stop and
    /// [`Runtime::shutdown`] run together, so a request waiting for a
    /// running command is answered when the command ends (or is cut off).
    pub async fn shutdown(self, grace: Duration) -> Result<crate::ShutdownReport> {
        let rt = self.state.rt.clone();
        let (report, ()) = futures_util::future::join(rt.shutdown(grace), async {
            let _ = tokio::time::timeout(grace, self.stop(true)).await;
        })
        .await;
        report
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if self.done.is_some() {
            // `stop` sends its command at once; the future only waits.
            drop(self.handle.stop(false));
        }
    }
}

/// The routes, each resource answering other methods with 405.
fn routes_v1(cfg: &mut web::ServiceConfig) {
    let not_allowed = || web::to(routes::method_not_allowed);
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(routes::healthz))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(routes::metrics))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/openapi.json")
            .route(web::get().to(routes::openapi_json))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks")
            .route(web::get().to(routes::list_tasks))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}")
            .route(web::get().to(routes::get_task))
            .route(web::delete().to(routes::delete_task))
            .route(web::put().to(open::open_task))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}/exec")
            .route(web::post().to(routes::exec))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}/jobs")
            .route(web::get().to(jobs_api::list_jobs))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}/jobs/{job_id}")
            .route(web::get().to(jobs_api::get_job))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}/jobs/{job_id}/output")
            .route(web::get().to(jobs_api::job_output))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}/jobs/{job_id}/kill")
            .route(web::post().to(jobs_api::kill_job))
            .default_service(not_allowed()),
    )
    .service(
        web::resource("/v1/tasks/{task_id}/files")
            .route(web::get().to(files_api::download))
            .route(web::put().to(files_api::upload))
            .default_service(not_allowed()),
    );
}

/// Path and query strings that do not parse (a job id that is not a
/// number, a missing `path`) answer in the API's error shape.
fn extractor_errors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::invalid_input(format!("bad path: {err}")).into()),
    )
    .app_data(
        web::QueryConfig::default().error_handler(|err, _| {
            ApiError::invalid_input(format!("bad query string: {err}")).into()
        }),
    );
}
