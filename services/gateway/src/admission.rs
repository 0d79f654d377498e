//! Admission: whether a stream request may open — its flow id, token and scope, the
//! connection limits ([`Slots`]) — and its joining the flow's hub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flowsync_auth::{Principal, Scope};
use flowsync_bus::presence::PresenceEntry;
use flowsync_protocol::{ActorId, ConnectionId, FlowId};

use crate::frame::TypeFilter;
use crate::http::{Head, Reply};
use crate::hub::JoinError;
use crate::server::Shared;
use crate::stream;

/// The flow of `/v1/flows/{id}/events` (the id unparsed).
pub(crate) fn events_flow(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/flows/")?
        .strip_suffix("/events")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// A stream that passed every check and joined its flow. Boxed, so the stream's
/// long-lived state is stored once, not copied into each async frame it passes through.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Holds the stream's place in the connection limits. First, so it is freed before
    /// the membership announces the leave: whoever sees the leave may take the slot.
    _slot: Slot,
    /// What was asked.
    pub(crate) request: stream::Request,
    /// The flow's frames and where they start.
    pub(crate) joined: crate::hub::Joined,
}

/// Checks a stream request and joins its flow; an `Err` is the answer instead.
pub(crate) async fn admit(shared: &Shared, head: Box<Head>) -> Result<Box<Admitted>, Reply> {
    let refuse = |reason: &str| shared.metrics.refused.with_label_values(&[reason]).inc();
    let raw_flow = events_flow(&head.path).unwrap_or_default();
    let flow = FlowId::parse(raw_flow).map_err(|e| {
        refuse("invalid");
        Reply::error("400 Bad Request", "invalid_id", &format!("flow id {e}"))
    })?;
    let filter = match head.query("types") {
        None => TypeFilter::ALL,
        Some(list) => TypeFilter::parse(list).map_err(|e| {
            refuse("invalid");
            Reply::error("400 Bad Request", "invalid_types", &e)
        })?,
    };
    let filter = match head.query("heartbeat") {
        None | Some("comment") => filter,
        Some("event") => filter.with_ping_events(),
        Some(other) => {
            refuse("invalid");
            return Err(Reply::error(
                "400 Bad Request",
                "invalid_heartbeat",
                &format!("heartbeat {other:?}: expected comment or event"),
            ));
        }
    };
    // The header wins: a browser's auto-reconnect sends it with the original URL, whose
    // `last_event_id` query is older.
    let resume = match head
        .last_event_id
        .as_deref()
        .or_else(|| head.query("last_event_id"))
        .map(str::trim)
    {
        None | Some("") => None,
        Some(id) => Some(id.parse().map_err(|e| {
            refuse("invalid");
            Reply::error(
                "400 Bad Request",
                "invalid_last_event_id",
                &format!("Last-Event-ID: {e}"),
            )
        })?),
    };
    let principal = authenticate(shared, &head, &flow).inspect_err(|_| refuse("auth"))?;
    drop(head); // holds the token: gone before the stream runs
    // Without auth there are no subjects (every caller is the local user): only the
    // process's limit applies, or every local tab would share one subject's streams.
    let per_subject = (!shared.auth.is_off()).then_some(shared.config.max_connections_per_subject);
    let slot = shared
        .slots
        .acquire(
            &principal.actor.id,
            shared.config.max_connections,
            per_subject,
        )
        .inspect_err(|_| refuse("limit"))?;
    let connection = ConnectionId::parse(uuid::Uuid::new_v4().simple().to_string())
        .expect("a uuid is a valid id");
    let entry = PresenceEntry {
        connection_id: connection.clone(),
        actor: principal.actor,
        since: chrono::Utc::now(),
    };
    let joined = shared.hubs.join(&flow, entry).await.map_err(|e| match e {
        JoinError::NotFound(flow) => {
            refuse("not_found");
            Reply::error(
                "404 Not Found",
                "flow_not_found",
                &format!("flow {flow} does not exist"),
            )
        }
        e @ JoinError::Unavailable(_) => {
            refuse("unavailable");
            Reply::error("503 Service Unavailable", "unavailable", &e.to_string())
                .header("Retry-After", "1")
        }
    })?;
    Ok(Box::new(Admitted {
        request: stream::Request { resume, filter },
        joined,
        _slot: slot,
    }))
}

fn authenticate(shared: &Shared, head: &Head, flow: &FlowId) -> Result<Principal, Reply> {
    let principal = shared.auth.authenticate(head.token()).map_err(|e| {
        Reply::error("401 Unauthorized", e.code(), &e.to_string())
            .header("WWW-Authenticate", "Bearer")
    })?;
    principal
        .check(flow, Scope::Read)
        .map_err(|e| Reply::error("403 Forbidden", e.code(), &e.to_string()))?;
    Ok(principal)
}

/// Open streams per process and per subject.
#[derive(Debug, Default)]
pub(crate) struct Slots(Arc<Mutex<SlotCounts>>);

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    by_subject: HashMap<ActorId, usize>,
}

/// One open stream's place; freed on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<SlotCounts>>,
    subject: ActorId,
}

impl Slots {
    /// A slot for a stream of `subject`: at most `total` streams in the process and, when
    /// given, `per_subject` per subject.
    fn acquire(
        &self,
        subject: &ActorId,
        total: usize,
        per_subject: Option<usize>,
    ) -> Result<Slot, Reply> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= total {
            return Err(Reply::error(
                "503 Service Unavailable",
                "too_many_connections",
                "this gateway holds as many streams as it may",
            )
            .header("Retry-After", "1"));
        }
        let mine = counts.by_subject.entry(subject.clone()).or_default();
        if let Some(most) = per_subject
            && *mine >= most
        {
            return Err(Reply::error(
                "429 Too Many Requests",
                "too_many_connections",
                &format!("at most {most} streams per subject"),
            )
            .header("Retry-After", "1"));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            counts: self.0.clone(),
            subject: subject.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.by_subject.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                counts.by_subject.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_paths() {
        assert_eq!(events_flow("/v1/flows/f1/events"), Some("f1"));
        assert_eq!(events_flow("/v1/flows//events"), None);
        assert_eq!(events_flow("/v1/flows/a/b/events"), None);
        assert_eq!(events_flow("/v1/flows/f1"), None);
    }
}
