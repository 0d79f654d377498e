//! `GET /v1/flows/{id}/presence`: who is connected (the gateways keep the set);
//! `POST /v1/flows/{id}/presence`: ephemeral cursor and selection updates.

use actix_web::{HttpRequest, HttpResponse, web};
use flowsync_auth::Scope;
use flowsync_bus::presence::PresenceEntry;
use flowsync_protocol::{ConnectionId, EventBody, Presence, PresenceAction};
use flowsync_store::StoreError;
use serde::Deserialize;

use super::{flow_id, parse_json, read_body_up_to};
use crate::announce;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::startup::AppState;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceUpdate {
    /// The SSE connection this state belongs to (from its `READY`).
    connection_id: ConnectionId,
    /// Cursor, selection…
    state: serde_json::Value,
}

/// The answer of `GET …/presence`.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct PresenceList {
    /// The flow's open SSE connections, oldest first.
    connections: Vec<PresenceEntry>,
}

/// Lists the flow's connections.
pub(super) async fn get(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Read)?;
    if state.store.flow_version(&id).await?.is_none() {
        return Err(StoreError::FlowNotFound(id).into());
    }
    let connections = state.presence.list(&id).await?;
    Ok(HttpResponse::Ok().json(PresenceList { connections }))
}

/// Publishes a `PRESENCE` update (not kept in history) and answers `202`.
pub(super) async fn post(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Read)?;
    state
        .presence_limiter
        .check(caller.actor.id.as_str())
        .map_err(ApiError::RateLimited)?;
    let body = read_body_up_to(
        &req,
        payload,
        state.limits.max_presence_bytes + 256,
        state.limits.body_timeout,
    )
    .await?;
    let update: PresenceUpdate = parse_json(&body)?;
    // The state of one of the caller's own streams of this flow, never another's.
    match state.presence.get(&id, &update.connection_id).await? {
        Some(entry) if entry.actor.id == caller.actor.id => {}
        Some(_) => {
            return Err(ApiError::NotYours(format!(
                "stream {} is another caller's",
                update.connection_id
            )));
        }
        None => {
            if state.store.flow_version(&id).await?.is_none() {
                return Err(StoreError::FlowNotFound(id).into());
            }
            return Err(ApiError::NotFound {
                code: "connection_not_found",
                message: format!("no open stream {} on this flow", update.connection_id),
            });
        }
    }
    let event = announce::event(
        &id,
        &caller.actor,
        EventBody::Presence(Presence {
            action: PresenceAction::Update,
            connection_id: update.connection_id,
            actor: caller.actor.clone(),
            state: Some(update.state),
        }),
    );
    state.bus.publish_ephemeral(&event).await?;
    Ok(HttpResponse::Accepted().finish())
}
