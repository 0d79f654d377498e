//! The in-process bus: the one-binary mode's bus. Same contract as Redis, on tokio
//! broadcast channels and a ring buffer per flow.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use flowsync_protocol::{Epoch, Event, FlowId};
use tokio::sync::broadcast;

use crate::{
    Bus, BusConfig, BusError, History, Message, Position, RepairStats, Replay, Signal,
    Subscription, encode, new_epoch, with_seq,
};

/// The in-process bus. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BusConfig,
    /// Every flow with history or subscribers. One lock: publishing holds it from `seq`
    /// to send, which is what keeps per-flow order.
    flows: Mutex<Flows>,
    stats: Arc<RepairStats>,
}

#[derive(Debug, Default)]
struct Flows {
    by_id: HashMap<FlowId, FlowState>,
    /// Publishes since the last sweep of idle flows.
    since_sweep: usize,
}

#[derive(Debug)]
struct FlowState {
    epoch: Epoch,
    seq: u64,
    /// The latest `history_len` events, at most `history_bytes` of them (bounded: the
    /// oldest is dropped first).
    ring: VecDeque<Arc<Message>>,
    /// Bytes of the events in `ring`.
    bytes: usize,
    tx: broadcast::Sender<Signal>,
    last_publish: Instant,
}

impl FlowState {
    fn new(capacity: usize) -> Self {
        Self {
            epoch: new_epoch(),
            seq: 0,
            ring: VecDeque::new(),
            bytes: 0,
            tx: broadcast::channel(capacity.max(1)).0,
            last_publish: Instant::now(),
        }
    }
}

/// Sweep idle flows after this many publishes, so memory follows the live flows.
const SWEEP_EVERY: usize = 4096;

impl MemoryBus {
    /// A new, empty bus.
    pub fn new(config: BusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                flows: Mutex::new(Flows::default()),
                stats: Arc::new(RepairStats::default()),
            }),
        }
    }

    /// What subscriptions had to repair.
    pub fn repair_stats(&self) -> &RepairStats {
        &self.inner.stats
    }

    fn flows(&self) -> std::sync::MutexGuard<'_, Flows> {
        self.inner.flows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Flows {
    /// Forgets flows nobody listens to whose history expired (a later publish starts a
    /// new epoch, as after a Redis key expiry).
    fn sweep(&mut self, config: &BusConfig) {
        self.since_sweep = 0;
        self.by_id.retain(|_, f| {
            f.tx.receiver_count() > 0 || f.last_publish.elapsed() < config.history_ttl
        });
    }
}

#[async_trait]
impl History for MemoryBus {
    async fn history(
        &self,
        flow: &FlowId,
        epoch: &Epoch,
        after: u64,
        limit: usize,
    ) -> Result<Replay, BusError> {
        let flows = self.flows();
        let Some(state) = flows
            .by_id
            .get(flow)
            .filter(|s| &s.epoch == epoch && s.seq > 0)
        else {
            return Ok(Replay::Gone);
        };
        if after > state.seq {
            return Ok(Replay::Gone);
        }
        if after == state.seq {
            return Ok(Replay::Events(vec![]));
        }
        let oldest = state.ring.front().and_then(|m| m.seq()).unwrap_or(u64::MAX);
        if after + 1 < oldest {
            return Ok(Replay::Gone);
        }
        let skip = (after + 1 - oldest) as usize;
        Ok(Replay::Events(
            state.ring.iter().skip(skip).take(limit).cloned().collect(),
        ))
    }

    async fn head(&self, flow: &FlowId) -> Result<Option<Position>, BusError> {
        Ok(self
            .flows()
            .by_id
            .get(flow)
            .filter(|s| s.seq > 0)
            .map(|s| Position {
                epoch: s.epoch.clone(),
                seq: s.seq,
            }))
    }

    async fn drop_history(&self, flow: &FlowId) -> Result<(), BusError> {
        let mut flows = self.flows();
        if let Some(state) = flows.by_id.get_mut(flow) {
            // Subscribers keep their channel; the history and sequence start over.
            state.epoch = new_epoch();
            state.seq = 0;
            state.ring.clear();
            state.bytes = 0;
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, event: &Event) -> Result<Position, BusError> {
        if !event.body.is_sequenced() {
            return Err(BusError::Invalid(format!(
                "{} is not a sequenced event",
                event.event_type()
            )));
        }
        let json = encode(event)?;
        let config = &self.inner.config;
        let mut flows = self.flows();
        flows.since_sweep += 1;
        if flows.since_sweep >= SWEEP_EVERY {
            flows.sweep(config);
        }
        let state = flows
            .by_id
            .entry(event.flow_id.clone())
            .or_insert_with(|| FlowState::new(config.channel_capacity));
        state.seq += 1;
        state.last_publish = Instant::now();
        let position = Position {
            epoch: state.epoch.clone(),
            seq: state.seq,
        };
        let message = Arc::new(Message::new(
            Some(position.clone()),
            event,
            with_seq(&json, state.seq),
        ));
        state.bytes += message.json.len();
        state.ring.push_back(message.clone());
        while state.ring.len() > config.history_len.max(1)
            || (state.bytes > config.history_bytes && state.ring.len() > 1)
        {
            let oldest = state.ring.pop_front().expect("not empty");
            state.bytes -= oldest.json.len();
        }
        // No receiver is fine: history keeps the event.
        let _ = state.tx.send(Signal::Message(message));
        Ok(position)
    }

    async fn publish_ephemeral(&self, event: &Event) -> Result<(), BusError> {
        let message = Arc::new(Message::new(None, event, encode(event)?.into()));
        if let Some(state) = self.flows().by_id.get(&event.flow_id) {
            let _ = state.tx.send(Signal::Message(message));
        }
        Ok(())
    }

    async fn subscribe(&self, flow: &FlowId) -> Result<Subscription, BusError> {
        let rx = self
            .flows()
            .by_id
            .entry(flow.clone())
            .or_insert_with(|| FlowState::new(self.inner.config.channel_capacity))
            .tx
            .subscribe();
        let mut subscription = Subscription::new(
            flow.clone(),
            rx,
            Arc::new(self.clone()),
            self.inner.stats.clone(),
            Box::new(()),
        );
        subscription.start_at_head().await?;
        Ok(subscription)
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}
