//! A stream's membership of its flow: its presence (the set and `PRESENCE` join/leave
//! events) and its hold on the flow's hub, which stops with the flow's last stream here.

use std::sync::Arc;

use flowsync_bus::presence::PresenceEntry;
use flowsync_protocol::{Actor, ConnectionId, Event, EventBody, FlowId, Presence, PresenceAction};

use crate::hub::{Hub, Hubs};

impl Hubs {
    /// Publishes a `PRESENCE` join or leave (ephemeral: not kept in history).
    pub(crate) async fn announce(
        &self,
        flow: &FlowId,
        actor: &Actor,
        connection: &ConnectionId,
        action: PresenceAction,
    ) {
        let event = Event {
            body: EventBody::Presence(Presence {
                action,
                connection_id: connection.clone(),
                actor: actor.clone(),
                state: None,
            }),
            flow_id: flow.clone(),
            seq: None,
            traceparent: None,
            ts: chrono::Utc::now(),
            actor: actor.clone(),
        };
        if let Err(e) = self.bus.publish_ephemeral(&event).await {
            tracing::warn!(flow_id = %flow, error = %e, "presence event not published");
        }
    }
}

/// A stream's membership of its flow's hub; dropping it leaves.
#[derive(Debug)]
pub struct Membership {
    pub(crate) hubs: Arc<Hubs>,
    pub(crate) flow: FlowId,
    /// Set once joined (a failed join leaves only the count to undo).
    pub(crate) hub: Option<Arc<Hub>>,
    /// The stream as listed (shared with the hub's member list).
    pub(crate) entry: Arc<PresenceEntry>,
    /// Its join was announced, so its leave will be.
    pub(crate) announced: bool,
}

impl Membership {
    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// The stream's connection id.
    pub fn connection(&self) -> &ConnectionId {
        &self.entry.connection_id
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let hubs = self.hubs.clone();
        if let Some(hub) = &self.hub {
            hub.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .members
                .remove(&self.entry.connection_id);
            let (flow, entry) = (self.flow.clone(), self.entry.clone());
            let announce = hubs.clone();
            let announced = self.announced;
            // Leaving is announced in the background: a closing stream must not wait on
            // Redis. Without a runtime (process exit) the entry simply expires.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = announce.presence.leave(&flow, &entry.connection_id).await {
                        tracing::warn!(flow_id = %flow, error = %e, "presence leave not recorded");
                    }
                    if announced {
                        announce
                            .announce(
                                &flow,
                                &entry.actor,
                                &entry.connection_id,
                                PresenceAction::Leave,
                            )
                            .await;
                    }
                });
            }
        }
        let mut entries = hubs.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = entries.get_mut(&self.flow) else {
            return;
        };
        entry.members -= 1;
        if entry.members > 0 {
            return;
        }
        // The last stream of the flow here: stop its hub.
        if let Some(hub) = entries
            .remove(&self.flow)
            .and_then(|e| e.hub.get().cloned())
        {
            if let Some(task) = hub.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
            hubs.metrics.flows.dec();
        }
    }
}
