//! DESIGN §4 step 5: a commit's outcome as events on the bus.

use chrono::Utc;
use flowsync_bus::{Bus, BusError};
use flowsync_canvas::LogEntry;
use flowsync_protocol::{Actor, ClientId, Conflict, Event, EventBody, FlowId, SyncCanvas};
use flowsync_store::CommitOutcome;

/// Publishes, in order: each re-announced entry (a retry) as its own `SYNC_CANVAS` with its
/// original versions, the newly applied ops as one `SYNC_CANVAS`, then a `CONFLICT` per
/// refused op.
pub async fn outcome(
    bus: &dyn Bus,
    flow: &FlowId,
    actor: &Actor,
    client_id: &ClientId,
    outcome: &CommitOutcome,
) -> Result<(), BusError> {
    for entry in &outcome.replayed {
        bus.publish(&sync(
            flow,
            &entry.actor,
            &entry.client_id,
            entry.version - 1,
            std::slice::from_ref(entry),
        ))
        .await?;
    }
    if !outcome.applied.is_empty() {
        bus.publish(&sync(
            flow,
            actor,
            client_id,
            outcome.prev_version,
            &outcome.applied,
        ))
        .await?;
    }
    for conflict in &outcome.refused {
        bus.publish(&event(
            flow,
            actor,
            EventBody::Conflict(Conflict::clone(conflict)),
        ))
        .await?;
    }
    Ok(())
}

fn sync(
    flow: &FlowId,
    actor: &Actor,
    client_id: &ClientId,
    prev_version: u64,
    entries: &[LogEntry],
) -> Event {
    event(
        flow,
        actor,
        EventBody::SyncCanvas(SyncCanvas {
            prev_version,
            version: entries.last().map_or(prev_version, |e| e.version),
            client_id: client_id.clone(),
            ops: entries.iter().map(LogEntry::to_applied_op).collect(),
        }),
    )
}

/// An event of `flow` by `actor`, now, carrying the current trace context (if traced).
pub fn event(flow: &FlowId, actor: &Actor, body: EventBody) -> Event {
    Event {
        body,
        flow_id: flow.clone(),
        seq: None,
        traceparent: flowsync_telemetry::traceparent(),
        ts: Utc::now(),
        actor: actor.clone(),
    }
}
