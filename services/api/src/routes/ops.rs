//! `POST /v1/flows/{id}/ops`: transport checks answered now, results announced on the bus.

use actix_web::{HttpRequest, HttpResponse, web};
use flowsync_auth::Scope;
use flowsync_protocol::OpsRequest;
use flowsync_store::CommitRequest;
use serde_json::json;

use super::{flow_id, read_body};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::startup::AppState;

/// Commits the ops (with whatever else waits for the flow: [`crate::commits`]), announces
/// every result (`SYNC_CANVAS`, `CONFLICT`) on the bus, then answers `202` with the
/// accepted op ids. Refusals are results, not errors: they travel
/// only on the bus (DESIGN §1.2).
#[tracing::instrument(skip_all, fields(flow_id = %path.as_str()))]
pub(super) async fn post(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Write)?;
    let if_match = if_match(&req)?;
    let body = read_body(&req, payload, &state.limits).await?;
    let request = OpsRequest::from_slice(&body).map_err(ApiError::InvalidBody)?;
    let max = state.store.config().limits.max_ops_per_request;
    if request.ops.len() > max {
        return Err(ApiError::TooLarge {
            code: "too_many_ops",
            message: format!(
                "the request has {} ops, the limit is {max}",
                request.ops.len()
            ),
        });
    }
    let accepted: Vec<String> = request.ops.iter().map(|op| op.op_id.to_string()).collect();
    let commit = CommitRequest {
        actor: caller.actor,
        client_id: request.client_id,
        if_match,
        ops: request.ops,
    };
    let timer = state.metrics.commit_seconds.start_timer();
    // Durable and announced when this returns. If announcing failed the client gets 503
    // and retries the same op ids, which re-announces them (DESIGN §4).
    let outcome = state.commits.commit(&id, commit).await?;
    timer.observe_duration();
    let m = &state.metrics;
    m.commit_retries
        .inc_by(u64::from(outcome.attempts.saturating_sub(1)));
    m.ops
        .with_label_values(&["applied"])
        .inc_by(outcome.applied.len() as u64);
    m.ops
        .with_label_values(&["replayed"])
        .inc_by(outcome.replayed.len() as u64);
    for refusal in &outcome.refused {
        m.ops.with_label_values(&[refusal.reason.as_str()]).inc();
    }
    Ok(HttpResponse::Accepted().json(json!({"accepted": accepted})))
}

/// `If-Match: W/"<version>"` (or a strong `"<version>"`).
fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get(actix_web::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::invalid("invalid_if_match", "If-Match must be W/\"<version>\"");
    let text = value.to_str().map_err(|_| bad())?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let version = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(bad)?;
    version.parse().map(Some).map_err(|_| bad())
}
