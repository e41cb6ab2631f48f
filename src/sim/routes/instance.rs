//! The instance routes of the wire contract other than exec: start, get,
//! list (plain and paginated, with metadata filters), delete, TTL,
//! metadata, pause and resume.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{instance_not_found, parse_body, Answer, Reject};
use crate::sim::state::{Phase, Shared, Ttl, TtlAction};

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

pub(super) async fn start(req: HttpRequest, shared: web::Data<Shared>, body: Bytes) -> Answer {
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
    let metadata = body.metadata.unwrap_or_default();
    let (ttl_seconds, boot_time) = (body.ttl_seconds, shared.config.boot_time);
    let fault = shared.with(|state| state.faults.draw_create());
    let created = match fault.late {
        None => create(&shared, snapshot_id, metadata, ttl_seconds, action),
        Some(late) => {
            // Its own task: the client gives up and closes the connection
            // long before, and the create must happen all the same.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let shared = shared.clone();
            shared.with(|state| state.faults.count_create_late());
            actix_rt::spawn(async move {
                actix_rt::time::sleep(late).await;
                let created = create(&shared, snapshot_id, metadata, ttl_seconds, action);
                if let Ok((id, _)) = &created {
                    log::info!("sim vm={id} created late (fault, held {late:?})");
                }
                let _ = tx.send(created);
            });
            rx.await
                .unwrap_or_else(|_| Err(std::io::Error::other("the late create was cancelled")))
        }
    };
    match created {
        Ok((id, json)) => {
            log::info!("sim vm={id} started (boot {boot_time:?})");
            if fault.lost {
                shared.with(|state| state.faults.count_create_lost());
                log::info!("sim vm={id} create answer dropped (fault)");
                return Err(super::drop_connection(&req));
            }
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

/// Creates an instance; its id and Instance JSON.
fn create(
    shared: &Shared,
    snapshot_id: String,
    metadata: BTreeMap<String, String>,
    ttl_seconds: Option<u64>,
    action: TtlAction,
) -> std::io::Result<(String, Value)> {
    let root = shared.instance_root().map(|p| p.to_path_buf());
    shared.with(|state| {
        state
            .create(
                snapshot_id,
                metadata,
                Ttl::new(ttl_seconds, action),
                shared.config.boot_time,
                root.as_deref(),
            )
            .map(|inst| (inst.id.clone(), inst.to_json()))
    })
}

pub(super) async fn get(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    let json = shared.with(|state| state.get(&id).map(|inst| inst.to_json()));
    Ok(HttpResponse::Ok().json(json.ok_or_else(instance_not_found)?))
}

pub(super) async fn list(req: HttpRequest, shared: web::Data<Shared>) -> Answer {
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

pub(super) async fn list_paginated(req: HttpRequest, shared: web::Data<Shared>) -> Answer {
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

pub(super) async fn delete(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
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

pub(super) async fn set_ttl(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
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

pub(super) async fn set_metadata(
    shared: web::Data<Shared>,
    id: web::Path<String>,
    body: Bytes,
) -> Answer {
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

pub(super) async fn pause(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    set_paused(&shared, &id, true)
}

pub(super) async fn resume(shared: web::Data<Shared>, id: web::Path<String>) -> Answer {
    set_paused(&shared, &id, false)
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
}
