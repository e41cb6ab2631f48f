//! The simulator's HTTP face: the actix-web server, the routing table,
//! authentication, the HTTP-level faults, and the error answers every route
//! shares. The routes themselves are in [`instance`](mod@instance)
//! (lifecycle, TTL, metadata) and [`exec`](mod@exec) (plain and SSE exec).
//!
//! Bodies are parsed by hand from bytes so that a malformed body gets the
//! FastAPI 422 shape whatever its content type. A dropped connection is a
//! `shutdown(2)` of the request's socket, whose descriptor each connection
//! records in its extensions when it is accepted.

mod exec;
mod instance;

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{NormalizePath, TrailingSlash};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use serde_json::json;
use tokio::sync::oneshot;

use self::exec::{exec, exec_sse};
use self::instance::{
    delete, get, list, list_paginated, pause, resume, set_metadata, set_ttl, start,
};
use super::state::Shared;
use super::EchoHeaders;

/// The largest request body accepted (a command can be long).
const BODY_LIMIT: usize = 16 << 20;

/// How often the sweeper applies timers when no request comes.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

type Bound = std::io::Result<(SocketAddr, actix_web::dev::ServerHandle)>;

/// The socket of a connection, recorded when it is accepted.
#[derive(Debug, Clone, Copy)]
struct ConnFd(RawFd);

/// Runs the server on the current thread until it is stopped; reports the
/// bound address (or the bind error) through `ready` first.
pub(crate) fn serve(shared: Arc<Shared>, ready: oneshot::Sender<Bound>) {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .wrap_fn(gate)
                .wrap(NormalizePath::new(TrailingSlash::Trim))
                .configure(|cfg| instance_routes(cfg, "/api/instance"))
                .configure(|cfg| instance_routes(cfg, "/api/instances"))
                .default_service(web::to(route_not_found))
        })
        .workers(shared.config.workers.max(1))
        // Like a cloud load balancer, and longer than the client's pool
        // keeps idle connections, so an idle client never reuses a
        // connection the simulator is closing.
        .keep_alive(Duration::from_secs(75))
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(record_socket)
        .bind(("127.0.0.1", shared.config.port));
        let server = match server {
            Ok(server) => server,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let Some(addr) = server.addrs().first().copied() else {
            let _ = ready.send(Err(std::io::Error::other("bound to no address")));
            return;
        };
        let server = server.run();
        if ready.send(Ok((addr, server.handle()))).is_err() {
            // The starter gave up; nobody can stop us, so stop now.
            server.handle().stop(false).await;
        }
        let sweeper = actix_rt::spawn(async move {
            let mut every = actix_rt::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                shared.sweep();
            }
        });
        if let Err(err) = server.await {
            log::warn!("sim server ended with an error: {err}");
        }
        sweeper.abort();
    });
}

fn record_socket(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(ConnFd(tcp.as_raw_fd()));
    }
}

fn instance_routes(cfg: &mut web::ServiceConfig, base: &str) {
    let res = |path: String| web::resource(path).default_service(web::to(method_not_allowed));
    cfg.service(
        res(base.to_owned())
            .route(web::post().to(start))
            .route(web::get().to(list)),
    )
    .service(res(format!("{base}/list")).route(web::get().to(list_paginated)))
    .service(
        res(format!("{base}/{{id}}"))
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(res(format!("{base}/{{id}}/exec")).route(web::post().to(exec)))
    .service(res(format!("{base}/{{id}}/exec/sse")).route(web::post().to(exec_sse)))
    .service(res(format!("{base}/{{id}}/ttl")).route(web::post().to(set_ttl)))
    .service(res(format!("{base}/{{id}}/metadata")).route(web::post().to(set_metadata)))
    .service(res(format!("{base}/{{id}}/pause")).route(web::post().to(pause)))
    .service(res(format!("{base}/{{id}}/resume")).route(web::post().to(resume)));
}

/// Authentication and HTTP-level faults, for every request.
fn gate<S>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, actix_web::Result<ServiceResponse>>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
    S::Future: 'static,
{
    let trickle = req
        .app_data::<web::Data<Shared>>()
        .and_then(|shared| shared.with(|state| state.faults.hostile().1));
    if let Some(early) = refuse(&req) {
        let res = req.into_response(early);
        return Box::pin(async move { Ok(trickled(res, trickle).await) });
    }
    let call = srv.call(req);
    Box::pin(async move { Ok(trickled(call.await?, trickle).await) })
}

/// `res` with its body sent one byte per `every` (a server or proxy that
/// trickles), or as it is.
async fn trickled(res: ServiceResponse, every: Option<Duration>) -> ServiceResponse {
    let Some(every) = every else { return res };
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let bytes: Bytes = bytes;
    let stream = futures_util::stream::unfold(0usize, move |at| {
        let bytes = bytes.clone();
        async move {
            if at >= bytes.len() {
                return None;
            }
            actix_rt::time::sleep(every).await;
            Some((
                Ok::<_, std::convert::Infallible>(bytes.slice(at..at + 1)),
                at + 1,
            ))
        }
    });
    let res = head.set_body(actix_web::body::BoxBody::new(
        actix_web::body::BodyStream::new(stream),
    ));
    ServiceResponse::new(req, res)
}

/// The request's headers as text, `name: value` a line: what a hostile
/// server or proxy would echo (the API key included).
fn header_text(req: &ServiceRequest) -> String {
    req.headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// The answer of the [`EchoHeaders`] mode, if it applies to this request.
fn echo_answer(req: &ServiceRequest, mode: EchoHeaders) -> Option<HttpResponse> {
    let headers = header_text(req);
    Some(match mode {
        EchoHeaders::ErrorBody => {
            HttpResponse::BadRequest().json(json!({ "detail": format!("bad request: {headers}") }))
        }
        EchoHeaders::NonJson => HttpResponse::Ok()
            .content_type("text/plain")
            .body(format!("proxy echo\n{headers}")),
        EchoHeaders::MalformedId => HttpResponse::Ok().json(json!({
            "id": { "headers": headers },
            "status": "ready",
            "exit_code": 0,
        })),
        EchoHeaders::ExecOutput if req.path().ends_with("/exec") => {
            HttpResponse::Ok().json(json!({
                "exit_code": 0,
                "stdout": headers,
                "stderr": headers,
            }))
        }
        EchoHeaders::ExecOutput => return None,
    })
}

/// The answer for a request that must not reach its route, if any.
fn refuse(req: &ServiceRequest) -> Option<HttpResponse> {
    let shared = req.app_data::<web::Data<Shared>>()?;
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key == shared.config.api_key);
    if !authorized {
        log::debug!("sim refused {} {}: bad api key", req.method(), req.path());
        return Some(Reject::detail(StatusCode::UNAUTHORIZED, "Invalid API key").error_response());
    }
    if let (Some(mode), _) = shared.with(|state| state.faults.hostile()) {
        if let Some(echo) = echo_answer(req, mode) {
            log::debug!(
                "sim echoes the headers of {} {} (fault)",
                req.method(),
                req.path()
            );
            return Some(echo);
        }
    }
    let fault = shared.with(|state| state.faults.draw_http());
    let status = fault.status?;
    log::debug!("sim fault {status} on {} {}", req.method(), req.path());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = HttpResponse::build(status);
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        resp.insert_header(("Retry-After", fault.retry_after_secs.to_string()));
    }
    let text = status.canonical_reason().unwrap_or("Simulated fault");
    Some(resp.json(json!({ "detail": format!("{text} (simulated)") })))
}

/// An answer other than success: an error body, or a connection dropped on
/// purpose.
#[derive(Debug)]
enum Reject {
    /// `{"detail": "..."}` with this status.
    Detail(StatusCode, String),
    /// A FastAPI validation error (422).
    Invalid {
        loc: Vec<String>,
        msg: String,
        kind: &'static str,
    },
    /// The connection was shut down; whatever is answered is never seen.
    Dropped,
}

type Answer = Result<HttpResponse, Reject>;

impl Reject {
    fn detail(status: StatusCode, text: impl Into<String>) -> Reject {
        Reject::Detail(status, text.into())
    }

    fn invalid(loc: &[&str], msg: impl Into<String>, kind: &'static str) -> Reject {
        Reject::Invalid {
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
            kind,
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Detail(status, text) => write!(f, "{status}: {text}"),
            Reject::Invalid { loc, msg, .. } => write!(f, "invalid {}: {msg}", loc.join(".")),
            Reject::Dropped => f.write_str("connection dropped"),
        }
    }
}

impl ResponseError for Reject {
    fn status_code(&self) -> StatusCode {
        match self {
            Reject::Detail(status, _) => *status,
            Reject::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Reject::Dropped => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Reject::Detail(status, text) => {
                HttpResponse::build(*status).json(json!({ "detail": text }))
            }
            Reject::Invalid { loc, msg, kind } => HttpResponse::UnprocessableEntity().json(json!({
                "detail": [{ "type": kind, "loc": loc, "msg": msg, "input": null }]
            })),
            Reject::Dropped => {
                let mut resp = HttpResponse::InternalServerError().finish();
                resp.head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                resp
            }
        }
    }
}

fn instance_not_found() -> Reject {
    Reject::detail(StatusCode::NOT_FOUND, "Instance not found")
}

fn not_ready(status: &str) -> Reject {
    Reject::detail(
        StatusCode::CONFLICT,
        format!("Instance is {status}, not ready"),
    )
}

async fn route_not_found() -> Answer {
    Err(Reject::detail(StatusCode::NOT_FOUND, "Not Found"))
}

async fn method_not_allowed() -> Answer {
    Err(Reject::detail(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
    ))
}

/// Parses a JSON body, or answers 422.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Reject> {
    serde_json::from_slice(body).map_err(|err| {
        let kind = if err.is_data() {
            "model_attributes_type"
        } else {
            "json_invalid"
        };
        Reject::invalid(&["body"], err.to_string(), kind)
    })
}

/// Shuts the request's connection down without answering.
fn drop_connection(req: &HttpRequest) -> Reject {
    match req.conn_data::<ConnFd>() {
        Some(ConnFd(fd)) => {
            // SAFETY: the connection (and so its socket) lives at least as
            // long as this request's handler runs; shutdown does not close
            // the descriptor, so it cannot affect another connection.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
        None => log::warn!("sim cannot drop a connection whose socket is unknown"),
    }
    Reject::Dropped
}
