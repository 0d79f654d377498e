//! DESIGN §4 step 5: a commit's outcome as events on the bus.

use chrono::Utc;
use flowsync_canvas::LogEntry;
use flowsync_protocol::{Actor, ClientId, Conflict, Event, EventBody, FlowId, SyncCanvas};
use flowsync_store::CommitOutcome;

/// A commit's results as events, in order: each re-announced entry (a retry) as its own
/// `SYNC_CANVAS` with its original versions, the newly applied ops as one `SYNC_CANVAS`,
/// then a `CONFLICT` per refused op; carrying `traceparent`, the request's trace context.
pub fn events(
    flow: &FlowId,
    actor: &Actor,
    client_id: &ClientId,
    outcome: &CommitOutcome,
    traceparent: Option<&str>,
) -> Vec<Event> {
    let traced = |body| Event {
        traceparent: traceparent.map(str::to_owned),
        ..event(flow, actor, body)
    };
    let mut events = Vec::new();
    for entry in &outcome.replayed {
        events.push(Event {
            actor: entry.actor.clone(),
            ..traced(sync(
                &entry.client_id,
                entry.version - 1,
                std::slice::from_ref(entry),
            ))
        });
    }
    if !outcome.applied.is_empty() {
        events.push(traced(sync(
            client_id,
            outcome.prev_version,
            &outcome.applied,
        )));
    }
    for conflict in &outcome.refused {
        events.push(traced(EventBody::Conflict(Conflict::clone(conflict))));
    }
    events
}

fn sync(client_id: &ClientId, prev_version: u64, entries: &[LogEntry]) -> EventBody {
    EventBody::SyncCanvas(SyncCanvas {
        prev_version,
        version: entries.last().map_or(prev_version, |e| e.version),
        client_id: client_id.clone(),
        ops: entries.iter().map(LogEntry::to_applied_op).collect(),
    })
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
