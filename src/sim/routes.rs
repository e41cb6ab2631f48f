//! The simulator's HTTP face: the actix-web server, authentication, the
//! HTTP-level faults and the instance routes of the wire contract.
//!
//! Bodies are parsed by hand from bytes so that a malformed body gets the
//! FastAPI 422 shape whatever its content type. A dropped connection is a
//! `shutdown(2)` of the request's socket, whose descriptor each connection
//! records in its extensions when it is accepted.

use std::any::Any;
use std::collections::BTreeMap;
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
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::process::{self, Chunk, RunOutput, Stream};
use super::state::{ExecAdmission, Shared, Ttl, TtlAction};
use super::ExecMode;

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
    if let Some(early) = refuse(&req) {
        return Box::pin(std::future::ready(Ok(req.into_response(early))));
    }
    Box::pin(srv.call(req))
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

fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, Reject> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .map_err(|err| Reject::invalid(&["query"], err.to_string(), "value_error"))
}

/// The `metadata[key]=value` filters of a query.
fn metadata_filters(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), v.clone()))
        })
        .collect()
}

fn query_u64(pairs: &[(String, String)], name: &str, default: u64) -> Result<u64, Reject> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(default),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(Reject::invalid(
                &["query", name],
                "Input should be an integer greater than or equal to 1",
                "greater_than_equal",
            )),
        },
    }
}

fn parse_ttl_action(action: Option<&str>) -> Result<Option<TtlAction>, Reject> {
    match action {
        None => Ok(None),
        Some(s) => TtlAction::parse(s).map(Some).ok_or_else(|| {
            Reject::invalid(
                &["body", "ttl_action"],
                "Input should be 'stop' or 'pause'",
                "enum",
            )
        }),
    }
}

#[derive(Debug, Default, Deserialize)]
struct StartBody {
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    ttl_action: Option<String>,
    #[serde(default)]
    snapshot_id: Option<String>,
}

async fn start(req: HttpRequest, shared: web::Data<Shared>, body: Bytes) -> Answer {
    let pairs = query_pairs(&req)?;
    let body: StartBody = if body.iter().all(u8::is_ascii_whitespace) {
        StartBody::default()
    } else {
        parse_body(&body)?
    };
    let action = parse_ttl_action(body.ttl_action.as_deref())?.unwrap_or(TtlAction::Stop);
    let snapshot_id = body.snapshot_id.filter(|s| !s.is_empty()).or_else(|| {
        pairs
            .iter()
            .find(|(k, v)| k == "snapshot_id" && !v.is_empty())
            .map(|(_, v)| v.clone())
    });
    let Some(snapshot_id) = snapshot_id else {
        return Err(Reject::invalid(
            &["query", "snapshot_id"],
            "Field required",
            "missing",
        ));
    };
    let boot_time = shared.config.boot_time;
    let root = shared.instance_root().map(|p| p.to_path_buf());
    let created = shared.with(|state| {
        state
            .create(
                snapshot_id,
                body.metadata.unwrap_or_default(),
                Ttl::new(body.ttl_seconds, action),
                boot_time,
                root.as_deref(),
            )
            .map(|inst| (inst.id.clone(), inst.to_json()))
    });
    match created {
        Ok((id, json)) => {
            log::info!("sim vm={id} started (boot {boot_time:?})");
            Ok(HttpResponse::Ok().json(json))
        }
        Err(err) => {
            log::warn!("sim could not create an instance directory: {err}");
            Err(Reject::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not create the instance",
            ))
        }
    }
}

async fn get(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    let json = shared.with(|state| state.get(&id).map(|inst| inst.to_json()));
    Ok(HttpResponse::Ok().json(json.ok_or_else(instance_not_found)?))
}

async fn list(req: HttpRequest, shared: web::Data<Shared>) -> Answer {
    let pairs = query_pairs(&req)?;
    let filters = metadata_filters(&pairs);
    let data: Vec<Value> = shared.with(|state| {
        state
            .list(&filters)
            .into_iter()
            .map(|inst| inst.to_json())
            .collect()
    });
    Ok(HttpResponse::Ok().json(json!({ "object": "list", "data": data })))
}

async fn list_paginated(req: HttpRequest, shared: web::Data<Shared>) -> Answer {
    let pairs = query_pairs(&req)?;
    let page = query_u64(&pairs, "page", 1)?;
    let limit = query_u64(&pairs, "limit", 50)?;
    let filters = metadata_filters(&pairs);
    let (total, items): (u64, Vec<Value>) = shared.with(|state| {
        let all = state.list(&filters);
        let skip = usize::try_from((page - 1).saturating_mul(limit)).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let items = all
            .iter()
            .skip(skip)
            .take(take)
            .map(|inst| inst.to_json())
            .collect();
        (all.len() as u64, items)
    });
    let total_pages = total.div_ceil(limit);
    Ok(HttpResponse::Ok().json(json!({
        "instances": items,
        "total": total,
        "page": page,
        "size": items.len(),
        "total_pages": total_pages,
        "has_next": page < total_pages,
        "has_prev": page > 1,
    })))
}

async fn delete(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    let cleanup = shared
        .with(|state| state.delete(&id))
        .ok_or_else(instance_not_found)?;
    log::info!("sim vm={id} stopped");
    cleanup.run();
    Ok(HttpResponse::Ok().json(json!({})))
}

#[derive(Debug, Deserialize)]
struct TtlBody {
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    ttl_action: Option<String>,
}

async fn set_ttl(shared: web::Data<Shared>, id: web::Path<String>, body: Bytes) -> Answer {
    let body: TtlBody = parse_body(&body)?;
    let action = parse_ttl_action(body.ttl_action.as_deref())?;
    let json = shared.with(|state| {
        let inst = state.get_mut(&id)?;
        inst.ttl = Ttl::new(body.ttl_seconds, action.unwrap_or(inst.ttl.action));
        let json = inst.to_json();
        let at = inst.ttl.expire_at.map(|(at, _)| at);
        state.schedule(at, &id);
        Some(json)
    });
    let json = json.ok_or_else(instance_not_found)?;
    log::debug!("sim vm={id} ttl set to {:?}", body.ttl_seconds);
    Ok(HttpResponse::Ok().json(json))
}

async fn set_metadata(shared: web::Data<Shared>, id: web::Path<String>, body: Bytes) -> Answer {
    let metadata: BTreeMap<String, String> = parse_body(&body)?;
    let json = shared.with(|state| {
        let inst = state.get_mut(&id)?;
        inst.metadata.extend(metadata);
        Some(inst.to_json())
    });
    Ok(HttpResponse::Ok().json(json.ok_or_else(instance_not_found)?))
}

/// Moves an instance between `ready` and `paused` (either way is idempotent);
/// other statuses get a 409.
fn set_paused(shared: &Shared, id: &str, paused: bool) -> Answer {
    use super::state::Phase;
    let result = shared.with(|state| {
        let inst = state.get_mut(id)?;
        Some(match inst.phase {
            Phase::Ready | Phase::Paused => {
                inst.phase = if paused { Phase::Paused } else { Phase::Ready };
                Ok(inst.to_json())
            }
            other => Err(other.status()),
        })
    });
    match result.ok_or_else(instance_not_found)? {
        Ok(json) => {
            log::info!("sim vm={id} {}", if paused { "paused" } else { "resumed" });
            Ok(HttpResponse::Ok().json(json))
        }
        Err(status) => Err(Reject::detail(
            StatusCode::CONFLICT,
            format!("Instance is {status}, cannot pause or resume"),
        )),
    }
}

async fn pause(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    set_paused(&shared, &id, true)
}

async fn resume(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    set_paused(&shared, &id, false)
}

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

async fn exec(
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

async fn exec_sse(
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
    let events = futures_util::stream::unfold(SsePhase::Chunks(chunks, exit), |phase| async move {
        let (event, next) = match phase {
            SsePhase::Chunks(mut chunks, exit) => match chunks.recv().await {
                Some(chunk) => {
                    let kind = match chunk.stream {
                        Stream::Stdout => "stdout",
                        Stream::Stderr => "stderr",
                    };
                    let event = sse_event(kind, &Value::String(chunk.text));
                    (event, SsePhase::Chunks(chunks, exit))
                }
                None => {
                    let code = exit.await.unwrap_or(-1);
                    (sse_event("exit_code", &json!(code)), SsePhase::Done)
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
    fn metadata_filters_take_bracketed_keys_only() {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str("metadata%5Btask_id%5D=t1&page=2&metadata[owner]=me")
                .expect("query");
        assert_eq!(
            metadata_filters(&pairs),
            vec![
                ("task_id".to_owned(), "t1".to_owned()),
                ("owner".to_owned(), "me".to_owned())
            ]
        );
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
