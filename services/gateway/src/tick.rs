//! The process's timer: a shared `: ping` frame per flow each heartbeat (no timer per
//! stream), and the presence refresh of every stream here.

use std::sync::Arc;
use std::time::Duration;

use flowsync_bus::presence::PresenceEntry;

use crate::frame::Frame;
use crate::hub::{Hub, Hubs};

/// One task for every flow of the process: a shared `: ping` frame per flow each
/// heartbeat (no timer per stream), and the presence refresh of every stream.
pub(crate) async fn tick(hubs: std::sync::Weak<Hubs>, heartbeat: Duration, refresh: Duration) {
    let mut heartbeat = tokio::time::interval(heartbeat);
    let mut refresh = tokio::time::interval(refresh);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    refresh.tick().await;
    let ping = Arc::new(Frame::ping());
    loop {
        let ping_now = tokio::select! {
            _ = heartbeat.tick() => true,
            _ = refresh.tick() => false,
        };
        let Some(hubs) = hubs.upgrade() else { return };
        let live: Vec<Arc<Hub>> = hubs
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|e| e.hub.get().cloned())
            .collect();
        for hub in live {
            if ping_now {
                let _ = hub.tx.send(ping.clone());
                continue;
            }
            let entries: Vec<PresenceEntry> = hub
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .members
                .values()
                .map(|e| PresenceEntry::clone(e))
                .collect();
            if let Err(e) = hubs.presence.refresh(&hub.flow, &entries).await {
                tracing::warn!(flow_id = %hub.flow, error = %e, "presence refresh failed");
            }
        }
    }
}
