//! Executions (DESIGN §3, §6): start, read, cancel, and the events external workers publish.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use flowsync_auth::Scope;
use flowsync_plan::Plan;
use flowsync_protocol::{
    EventBody, Execution, ExecutionId, ExecutionStatus, ExecutionUpdate, FlowId, NodeRun,
    NodeStatus,
};
use flowsync_store::{NodeRunUpdate, StoreError};
use serde::Deserialize;
use serde_json::json;

use super::{flow_id, parse_json, read_body};
use crate::announce;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::startup::AppState;

/// Largest `LOG_STREAM` chunk a worker may publish (DESIGN §7).
const MAX_CHUNK_BYTES: usize = 64 * 1024;

fn execution_id(raw: &str) -> Result<ExecutionId, ApiError> {
    ExecutionId::parse(raw)
        .map_err(|e| ApiError::invalid("invalid_id", format!("execution id {e}")))
}

/// The execution, if it belongs to `flow` (another flow's is "not found" here).
async fn load(state: &AppState, flow: &FlowId, id: &ExecutionId) -> Result<Execution, ApiError> {
    match state.store.execution(id).await? {
        Some(e) if &e.flow_id == flow => Ok(e),
        _ => Err(StoreError::ExecutionNotFound(id.clone()).into()),
    }
}

/// `POST /v1/flows/{id}/executions`: checks the flow can run, stores the execution
/// (`queued`), queues the job, announces it; `202 {execution_id}`.
pub(super) async fn start(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Execute)?;
    let flow = state
        .store
        .get_flow(&id)
        .await?
        .ok_or_else(|| StoreError::FlowNotFound(id.clone()))?;
    Plan::new(&flow).map_err(|e| ApiError::Unprocessable {
        code: "invalid_flow",
        message: e.to_string(),
        node: e.node().to_string(),
    })?;
    let now = Utc::now();
    let execution = Execution {
        id: ExecutionId::parse(uuid::Uuid::new_v4().simple().to_string()).expect("a uuid"),
        flow_id: id.clone(),
        flow_version: flow.version,
        status: ExecutionStatus::Queued,
        error: None,
        created_at: now,
        updated_at: now,
        nodes: flow
            .nodes
            .iter()
            .map(|n| NodeRun {
                node_id: n.id.clone(),
                status: NodeStatus::Pending,
                output: None,
                error: None,
                log: String::new(),
                log_index: 0,
            })
            .collect(),
    };
    state.store.create_execution(&execution).await?;
    if let Err(e) = state.jobs.enqueue(&id, &execution.id).await {
        // Not queued (or not known to be): the execution fails in the store, so it is not
        // left `queued` for ever, and a runner that gets the job anyway finds it finished.
        // The caller's retry (on the 503) starts a new one.
        let why = format!("could not be queued: {e}");
        if let Err(e) = state
            .store
            .set_execution_status(&execution.id, ExecutionStatus::Failed, Some(&why))
            .await
        {
            tracing::warn!(execution = %execution.id, error = %e, "could not fail an unqueued execution");
        }
        return Err(e.into());
    }
    // Queued: the runner will run it and announce its progress. A lost announcement of
    // `queued` is logged, not answered with a 503 (a retry would run the flow twice).
    let queued = announce::event(
        &id,
        &caller.actor,
        EventBody::ExecutionUpdate(ExecutionUpdate::of_execution(
            execution.id.clone(),
            ExecutionStatus::Queued,
            None,
        )),
    );
    if let Err(e) = state.bus.publish(&queued).await {
        tracing::warn!(execution = %execution.id, error = %e, "the queued execution was not announced");
    }
    Ok(HttpResponse::Accepted().json(json!({"execution_id": execution.id})))
}

/// `?limit=` of the list.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
}

/// `GET /v1/flows/{id}/executions`: newest first.
pub(super) async fn list(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = flow_id(&path)?;
    caller.check(&id, Scope::Read)?;
    if state.store.flow_version(&id).await?.is_none() {
        return Err(StoreError::FlowNotFound(id).into());
    }
    let limit = query.limit.unwrap_or(50).clamp(1, state.limits.max_page);
    let executions = state.store.executions(&id, limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "executions": executions })))
}

/// `GET /v1/flows/{id}/executions/{eid}`: status, per-node status, outputs, logs.
pub(super) async fn get(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (flow, eid) = (flow_id(&path.0)?, execution_id(&path.1)?);
    caller.check(&flow, Scope::Read)?;
    Ok(HttpResponse::Ok().json(load(&state, &flow, &eid).await?))
}

/// `POST /v1/flows/{id}/executions/{eid}/cancel`: marks it cancelled and announces it; the
/// runner running it stops its nodes when it sees the announcement.
pub(super) async fn cancel(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (flow, eid) = (flow_id(&path.0)?, execution_id(&path.1)?);
    caller.check(&flow, Scope::Execute)?;
    let execution = load(&state, &flow, &eid).await?;
    if execution.status.has_ended() {
        return Err(ApiError::Finished(format!(
            "execution {eid} has already ended ({:?})",
            execution.status
        )));
    }
    state
        .store
        .set_execution_status(&eid, ExecutionStatus::Cancelled, None)
        .await?;
    state
        .bus
        .publish(&announce::event(
            &flow,
            &caller.actor,
            EventBody::ExecutionUpdate(ExecutionUpdate::of_execution(
                eid,
                ExecutionStatus::Cancelled,
                None,
            )),
        ))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// `POST /v1/flows/{id}/executions/{eid}/events`: an external worker's `EXECUTION_UPDATE`
/// or `LOG_STREAM` (`{"type": …, "data": {…}}`), stored and announced.
pub(super) async fn publish(
    state: web::Data<AppState>,
    Caller(caller): Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (flow, eid) = (flow_id(&path.0)?, execution_id(&path.1)?);
    caller.check(&flow, Scope::Publish)?;
    let body = read_body(&req, payload, &state.limits).await?;
    let event: EventBody = parse_json(&body)?;
    load(&state, &flow, &eid).await?;
    match &event {
        EventBody::ExecutionUpdate(u) => {
            if u.execution_id != eid {
                return Err(ApiError::invalid(
                    "execution_mismatch",
                    "data.execution_id names another execution than the path",
                ));
            }
            if let Some(node) = &u.node_id {
                let status = u.node_status.ok_or_else(|| {
                    ApiError::invalid("invalid_event", "a node update needs data.node_status")
                })?;
                state
                    .store
                    .set_node_run(
                        &eid,
                        &NodeRunUpdate {
                            node_id: node.clone(),
                            status,
                            output: u.output.clone(),
                            error: u.error.clone(),
                        },
                    )
                    .await
                    .map_err(|_| {
                        ApiError::invalid(
                            "invalid_event",
                            format!("no node {node} in execution {eid}"),
                        )
                    })?;
            }
            if let Some(status) = u.status {
                state
                    .store
                    .set_execution_status(&eid, status, u.error.as_deref())
                    .await?;
            }
        }
        EventBody::LogStream(l) => {
            if l.execution_id != eid {
                return Err(ApiError::invalid(
                    "execution_mismatch",
                    "data.execution_id names another execution than the path",
                ));
            }
            if l.chunk.len() > MAX_CHUNK_BYTES {
                return Err(ApiError::TooLarge {
                    code: "chunk_too_large",
                    message: format!("a LOG_STREAM chunk is at most {MAX_CHUNK_BYTES} bytes"),
                });
            }
            // Stored before it is published, as the batch of this one chunk: a client that
            // reads the execution then appends the chunks from there (one sent twice, once).
            // A node's chunks are to be sent one after another, in index order.
            let end = l.index.checked_add(1).ok_or_else(|| {
                ApiError::invalid("invalid_event", "data.index is past the last index")
            })?;
            match state
                .store
                .append_node_log(&eid, &l.node_id, &l.chunk, l.index..end)
                .await
            {
                Ok(()) => {}
                Err(StoreError::ExecutionNotFound(_)) => {
                    return Err(ApiError::invalid(
                        "invalid_event",
                        format!("no node {} in execution {eid}", l.node_id),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid_event",
                "workers publish EXECUTION_UPDATE or LOG_STREAM",
            ));
        }
    }
    state
        .bus
        .publish(&announce::event(&flow, &caller.actor, event))
        .await?;
    Ok(HttpResponse::Accepted().finish())
}
