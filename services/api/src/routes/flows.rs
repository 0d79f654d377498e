//! Flows: create, list, get (ETag, time travel), delete, history.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use flowsync_auth::{FlowAccess, Scope};
use flowsync_protocol::{Data, EventBody, FlowDeleted, FlowId, HistoryEntry};
use flowsync_store::NewFlow;
use serde::{Deserialize, Serialize};

use super::{flow_id, parse_json, read_body};
use crate::announce;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::startup::AppState;

/// The body of `POST /v1/flows`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateFlow {
    /// The flow's id; made by the server when absent.
    #[serde(default)]
    id: Option<FlowId>,
    /// Display name.
    name: String,
    /// Initial metadata.
    #[serde(default)]
    meta: Data,
}

fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

pub(super) async fn create(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, &state.limits).await?;
    let new: CreateFlow = parse_json(&body)?;
    match &new.id {
        Some(id) => caller.check(id, Scope::Write)?,
        // A token limited to some flows cannot create others.
        None if caller.flows != FlowAccess::All => {
            return Err(ApiError::Forbidden(flowsync_auth::Denied::Scope(
                Scope::Write,
            )));
        }
        None => caller.check_scope(Scope::Write)?,
    }
    let limits = &state.store.config().limits;
    let depth = flowsync_protocol::data_depth(&new.meta);
    if depth > flowsync_protocol::MAX_DATA_DEPTH {
        return Err(ApiError::invalid(
            "invalid_meta",
            format!(
                "meta nests {depth} levels deep, the limit is {}",
                flowsync_protocol::MAX_DATA_DEPTH
            ),
        ));
    }
    if new.name.is_empty() || new.name.len() > limits.max_name_len {
        return Err(ApiError::invalid(
            "invalid_name",
            format!("the name must be 1 to {} bytes", limits.max_name_len),
        ));
    }
    let flow = state
        .store
        .create_flow(NewFlow {
            id: new.id,
            name: new.name,
            meta: new.meta,
        })
        .await?;
    // A new life of the id: its bus history starts a new epoch, so no stream resumes
    // across a deletion into the old life's events (they get `RESYNC`). If the bus
    // cannot say so, the flow is not created (the retry creates it).
    if let Err(e) = state.bus.drop_history(&flow.id).await {
        if let Err(undo) = state.store.delete_flow(&flow.id).await {
            tracing::error!(flow_id = %flow.id, error = %undo, "a flow whose bus history could not be reset was not removed");
        }
        return Err(e.into());
    }
    Ok(HttpResponse::Created()
        .insert_header((header::ETAG, etag(flow.version)))
        .insert_header((header::LOCATION, format!("/v1/flows/{}", flow.id)))
        .json(flow))
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// One flow in a listing.
#[derive(Debug, Serialize)]
struct FlowSummary {
    id: FlowId,
    name: String,
    version: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub(super) async fn list(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.check_scope(Scope::Read)?;
    let after = query.after.as_deref().map(flow_id).transpose()?;
    let limit = query.limit.unwrap_or(50).clamp(1, state.limits.max_page);
    let page = state.store.list_flows(after.as_ref(), limit).await?;
    let flows: Vec<FlowSummary> = page
        .flows
        .into_iter()
        .filter(|f| caller.sees(&f.id))
        .map(|f| FlowSummary {
            id: f.id,
            name: f.name,
            version: f.version,
            created_at: f.created_at,
            updated_at: f.updated_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"flows": flows, "next": page.next})))
}

#[derive(Debug, Deserialize)]
pub(super) struct GetQuery {
    at: Option<u64>,
}

pub(super) async fn get(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
    query: web::Query<GetQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Read)?;
    let flow = match query.at {
        Some(at) => state.store.flow_at(&id, at).await?,
        None => state.store.get_flow(&id).await?,
    }
    .ok_or_else(|| ApiError::NotFound {
        code: "flow_not_found",
        message: format!("flow {id} does not exist"),
    })?;
    let tag = etag(flow.version);
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if unchanged {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, tag))
        .json(flow))
}

pub(super) async fn delete(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Write)?;
    if !state.store.delete_flow(&id).await? {
        return Err(ApiError::NotFound {
            code: "flow_not_found",
            message: format!("flow {id} does not exist"),
        });
    }
    let deleted = announce::event(&id, &caller.actor, EventBody::FlowDeleted(FlowDeleted {}));
    if let Err(e) = state.bus.publish(&deleted).await {
        // The flow is gone either way; clients find out on their next request.
        tracing::warn!(flow_id = %id, error = %e, "could not announce FLOW_DELETED");
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn history(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Read)?;
    let limit = query.limit.unwrap_or(100).clamp(1, state.limits.max_page);
    let entries: Vec<HistoryEntry> = state
        .store
        .history(&id, query.after.unwrap_or(0), limit)
        .await?
        .iter()
        .map(|e| e.to_history_entry())
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}
