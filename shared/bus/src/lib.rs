//! The flowsync bus (DESIGN §5): per-flow delivery sequence, bounded history and live
//! fan-out between processes.
//!
//! [`Bus::publish`] gives each sequenced event of a flow the next `seq` in the flow's
//! `epoch`, keeps it in the flow's history and delivers it to every subscriber, atomically
//! and in order. A new epoch begins whenever the flow's history was lost. [`Subscription`]
//! turns live delivery into a gap-free, duplicate-free stream: a jump in `seq`, a lagging
//! receiver or a reconnect is filled from history, or reported as [`Item::Gone`] when history
//! cannot cover it — never silently skipped.
//!
//! # Layout
//! - [`redis`]: the Redis implementation, for several processes (Lua publish, one
//!   multiplexed subscriber connection per process).
//! - [`memory`]: the in-process implementation, for the one-binary mode.
//! - [`presence`]: who is connected to each flow, in Redis or in process.
//! - [`jobs`]: the execution job queue, a Redis stream or in process.
//! - this module: the traits, the message, [`Subscription`], [`BusBackend`].

pub mod jobs;
pub mod memory;
pub mod presence;
pub mod redis;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flowsync_protocol::{Epoch, Event, EventBody, EventId, EventType, FlowId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Bus settings: history, fan-out buffers and Redis connections.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Events kept per flow for resume (at least; Redis trims approximately).
    pub history_len: usize,
    /// Bytes of events kept per flow for resume: the oldest go first once the flow's
    /// history passes it, whatever `history_len` allows. 8 MiB keeps ten thousand events
    /// of a usual size and bounds a flow whose events are large (outputs up to 1 MiB).
    pub history_bytes: usize,
    /// A flow's history expires after this long without a publish, in seconds.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub history_ttl: Duration,
    /// Events buffered per flow for local subscribers; a slower subscriber catches up from
    /// history. The ring is allocated whole for every subscribed flow (≈ 48 bytes a slot),
    /// so this is memory per flow a process follows: 256 costs 12 KiB, 4096 cost 192 KiB.
    pub channel_capacity: usize,
    /// Prefix of every Redis key and channel (tests isolate themselves with it).
    pub namespace: String,
    /// How long `subscribe` waits for Redis to confirm, in seconds.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub subscribe_timeout: Duration,
    /// Multiplexed Redis connections for publish and history (each pipelines many tasks).
    pub pool_size: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            history_len: 10_000,
            history_bytes: 8 << 20,
            history_ttl: Duration::from_secs(24 * 3600),
            channel_capacity: 256,
            namespace: String::new(),
            subscribe_timeout: Duration::from_secs(5),
            pool_size: 2,
        }
    }
}

/// Which bus a process uses (configuration).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BusBackend {
    /// In process: only when API, gateway and runner share one process.
    #[default]
    Memory,
    /// Redis, shared by every process of a deployment.
    Redis {
        /// `redis://host:port`.
        url: String,
    },
}

/// Each opener gives a new handle; in-process ones are new and empty, so a process that
/// runs several services opens each once and shares it.
impl BusBackend {
    /// The bus itself: publish, subscribe, history.
    pub fn bus(&self, tuning: &BusConfig) -> Result<Arc<dyn Bus>, BusError> {
        Ok(match self {
            Self::Memory => Arc::new(memory::MemoryBus::new(tuning.clone())),
            Self::Redis { url } => Arc::new(redis::RedisBus::connect(url, tuning.clone())?),
        })
    }

    /// The presence set on this backend (`namespace`: the bus's key prefix).
    pub async fn presence(
        &self,
        namespace: &str,
        config: &presence::PresenceConfig,
    ) -> Result<Arc<dyn presence::PresenceSet>, BusError> {
        Ok(match self {
            Self::Memory => Arc::new(presence::MemoryPresence::new(config)),
            Self::Redis { url } => {
                Arc::new(presence::RedisPresence::connect(url, namespace, config).await?)
            }
        })
    }

    /// The execution job queue on this backend (`namespace`: the bus's key prefix).
    pub fn jobs(
        &self,
        namespace: &str,
        config: &jobs::JobsConfig,
    ) -> Result<Arc<dyn jobs::JobQueue>, BusError> {
        Ok(match self {
            Self::Memory => Arc::new(jobs::MemoryJobs::new(config)),
            Self::Redis { url } => Arc::new(jobs::RedisJobs::connect(url, namespace, config)?),
        })
    }
}

/// What can go wrong on the bus.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// Redis cannot be reached or failed. The source is shared: one failed call answers
    /// every publish it carried.
    #[error("bus unavailable: {0}")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The bus was shut down (its subscriber or publisher task is gone).
    #[error("the bus is shut down")]
    Closed,
    /// An event that cannot be published that way (e.g. `READY` on the bus).
    #[error("{0}")]
    Invalid(String),
    /// A message on the bus does not parse.
    #[error("malformed bus message: {0}")]
    Malformed(String),
}

impl BusError {
    /// `Unavailable` for a reason of our own (no driver error behind it).
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self::Unavailable(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            why.into(),
        )))
    }
}

impl From<serde_json::Error> for BusError {
    fn from(e: serde_json::Error) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// A place in a flow's history: the SSE `id`.
pub type Position = EventId;

/// One event on the bus: its JSON, framed once and shared by every receiver, with what its
/// consumers need to know of it read off once, when it was published.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Where the event sits in its flow's history; `None` for ephemeral events.
    pub position: Option<Position>,
    /// The event type.
    pub kind: EventType,
    /// For `SYNC_CANVAS`: the flow version the ops reached.
    pub version: Option<u64>,
    /// The trace context of the request behind the event, when traced.
    pub traceparent: Option<Box<str>>,
    /// The event's JSON, `seq` included.
    pub json: Bytes,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("position", &self.position.as_ref().map(ToString::to_string))
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("bytes", &self.json.len())
            .finish()
    }
}

impl Message {
    /// The message for `event`, whose JSON (with `seq` when sequenced) is `json`.
    pub fn new(position: Option<Position>, event: &Event, json: Bytes) -> Self {
        Self {
            position,
            kind: event.event_type(),
            version: canvas_version(event),
            traceparent: traceparent(event).map(Into::into),
            json,
        }
    }

    /// The sequence number, for sequenced events.
    pub fn seq(&self) -> Option<u64> {
        self.position.as_ref().map(|p| p.seq)
    }

    /// Decodes the event (tests and tools; the gateway forwards `json` as is).
    pub fn event(&self) -> Result<Event, BusError> {
        serde_json::from_slice(&self.json).map_err(|e| BusError::Malformed(e.to_string()))
    }
}

/// The flow version a `SYNC_CANVAS` reached.
pub(crate) fn canvas_version(event: &Event) -> Option<u64> {
    match &event.body {
        EventBody::SyncCanvas(s) => Some(s.version),
        _ => None,
    }
}

/// The event's trace context, when it is one token that a bus message can carry.
pub(crate) fn traceparent(event: &Event) -> Option<&str> {
    event
        .traceparent
        .as_deref()
        .filter(|t| !t.is_empty() && t.len() <= 256 && !t.contains(|c: char| c.is_whitespace()))
}

/// Serialises an event without its `seq` (the bus adds it). The JSON starts with `{`.
pub(crate) fn encode(event: &Event) -> Result<Vec<u8>, BusError> {
    if event.seq.is_some() {
        let mut event = event.clone();
        event.seq = None;
        return Ok(serde_json::to_vec(&event)?);
    }
    Ok(serde_json::to_vec(event)?)
}

/// `{"seq":N,` + the rest of `json` (which starts with `{` and is not empty).
pub(crate) fn with_seq(json: &[u8], seq: u64) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 28);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    if json.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&json[1..]);
    Bytes::from(out)
}

/// A new epoch name: 12 random letters and digits.
pub(crate) fn new_epoch() -> Epoch {
    Epoch::parse(
        std::iter::repeat_with(fastrand::alphanumeric)
            .take(12)
            .collect::<String>(),
    )
    .expect("letters and digits make an epoch")
}

/// The answer of [`History::history`].
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// The events after the position, in order (empty when it is the head).
    Events(Vec<Arc<Message>>),
    /// History cannot cover the position: unknown epoch, or trimmed or expired past it.
    Gone,
}

/// A flow's retained history.
#[async_trait]
pub trait History: Send + Sync + fmt::Debug {
    /// Events of `flow` after `after` in `epoch`, at most `limit`, or [`Replay::Gone`]
    /// when the epoch is not the flow's current one or the history no longer reaches back.
    async fn history(
        &self,
        flow: &FlowId,
        epoch: &Epoch,
        after: u64,
        limit: usize,
    ) -> Result<Replay, BusError>;

    /// The flow's latest position; `None` when it has no history.
    async fn head(&self, flow: &FlowId) -> Result<Option<Position>, BusError>;

    /// Forgets the flow's history and sequence: its next publish starts a new epoch.
    async fn drop_history(&self, flow: &FlowId) -> Result<(), BusError>;
}

/// Publish and subscribe.
#[async_trait]
pub trait Bus: History {
    /// Publishes a sequenced event: assigns the flow's next `seq`, keeps the event in
    /// history and delivers it to every subscriber of the flow — atomically, and in `seq`
    /// order per flow. Fails for unsequenced types.
    async fn publish(&self, event: &Event) -> Result<Position, BusError>;

    /// Publishes events in this order, as [`publish`](Self::publish) each would, without
    /// waiting for one before sending the next (a streaming writer's chunks). Stops at the
    /// first failure.
    async fn publish_all(&self, events: &[Event]) -> Result<Vec<Position>, BusError> {
        let mut positions = Vec::with_capacity(events.len());
        for event in events {
            positions.push(self.publish(event).await?);
        }
        Ok(positions)
    }

    /// Delivers an ephemeral event (`PRESENCE`) to current subscribers; not kept, no `seq`.
    async fn publish_ephemeral(&self, event: &Event) -> Result<(), BusError>;

    /// Subscribes to the flow's live events, starting at the flow's current head (see
    /// [`Subscription::resume`] to start earlier). Every later publish of the flow reaches
    /// the subscription, so "subscribe, then read history" has no gap.
    async fn subscribe(&self, flow: &FlowId) -> Result<Subscription, BusError>;

    /// Checks the bus answers (for `/readyz`).
    async fn ping(&self) -> Result<(), BusError>;
}

/// What a flow's local channel carries.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// A live event.
    Message(Arc<Message>),
    /// The connection to the bus was re-established: events may have been missed.
    Reconnected,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The next event.
    Message(Arc<Message>),
    /// Events were lost and history cannot supply them: the client must reload (`RESYNC`).
    /// Delivery goes on with later events.
    Gone,
}

/// Counters of what subscriptions had to repair (for metrics).
#[derive(Debug, Default)]
pub struct RepairStats {
    /// Gaps filled from history.
    pub filled: AtomicU64,
    /// Events fetched from history to fill gaps.
    pub refetched: AtomicU64,
    /// Gaps history could not fill.
    pub gone: AtomicU64,
}

/// A flow's events for one subscriber, without gaps or duplicates (see the crate docs).
pub struct Subscription {
    /// The flow.
    flow: FlowId,
    /// Live events. Declared before `_guard`: the receiver must be gone when the guard
    /// checks whether it was the flow's last.
    rx: broadcast::Receiver<Signal>,
    /// Where gaps are filled from.
    history: Arc<dyn History>,
    /// The last position delivered (or skipped to by `resume`). `None` means the flow had
    /// no history when the subscription started: every event of the first epoch seen is
    /// new, from seq 1.
    last: Option<Position>,
    /// Events fetched from history, waiting to be delivered before live ones.
    pending: VecDeque<Arc<Message>>,
    /// The last sequenced event delivered: after a reconnect, history must still hold
    /// this very event at its position, or the bus lost (and may have reused) positions.
    delivered: Option<Arc<Message>>,
    /// A reconnect (or a lag) whose check of history has not succeeded yet: `next` tries
    /// again before anything else, so a failed history read never loses the check.
    unchecked: bool,
    /// Repair counters shared with the bus.
    stats: Arc<RepairStats>,
    /// History page size for repairs.
    page: usize,
    /// Unsubscribes from the flow when the last local subscriber goes.
    _guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("flow", &self.flow)
            .field("last", &self.last.as_ref().map(ToString::to_string))
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(
        flow: FlowId,
        rx: broadcast::Receiver<Signal>,
        history: Arc<dyn History>,
        stats: Arc<RepairStats>,
        guard: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            flow,
            rx,
            history,
            last: None,
            pending: VecDeque::new(),
            delivered: None,
            unchecked: false,
            stats,
            page: 1000,
            _guard: guard,
        }
    }

    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// The last position delivered.
    pub fn position(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    /// Starts from the flow's current head: later events only. Returns the head.
    pub async fn start_at_head(&mut self) -> Result<Option<Position>, BusError> {
        self.last = self.history.head(&self.flow).await?;
        Ok(self.last.clone())
    }

    /// Starts after `from`: every event after it is delivered first (from history), then
    /// live ones, with no gap and no duplicate. `false` when history cannot cover `from`
    /// (the caller sends `RESYNC`); the subscription then starts at the head.
    pub async fn resume(&mut self, from: Position) -> Result<bool, BusError> {
        self.last = Some(from);
        if self.fill(None).await? {
            return Ok(true);
        }
        self.start_at_head().await?;
        Ok(false)
    }

    /// The next item; `None` when the bus shut down. An error (history could not be
    /// read) leaves the subscription as it was: the next call tries again.
    pub async fn next(&mut self) -> Result<Option<Item>, BusError> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                if m.position.is_some() {
                    self.delivered = Some(m.clone());
                }
                return Ok(Some(Item::Message(m)));
            }
            if self.unchecked {
                let item = self.check().await?;
                self.unchecked = false;
                if let Some(item) = item {
                    return Ok(Some(item));
                }
                continue;
            }
            let signal = match self.rx.recv().await {
                Ok(signal) => signal,
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
                // This subscriber fell behind its channel: what it missed is in history.
                Err(broadcast::error::RecvError::Lagged(_)) => Signal::Reconnected,
            };
            let message = match signal {
                Signal::Reconnected => {
                    self.unchecked = true;
                    continue;
                }
                Signal::Message(m) => m,
            };
            let Some(pos) = message.position.clone() else {
                return Ok(Some(Item::Message(message)));
            };
            let last = match &self.last {
                Some(last) => last.clone(),
                None => Position {
                    epoch: pos.epoch.clone(),
                    seq: 0,
                },
            };
            if last.epoch != pos.epoch {
                // The flow's history was lost and restarted: whatever came between is gone.
                self.last = Some(pos);
                self.pending.push_back(message);
                self.stats.gone.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(Item::Gone));
            }
            if pos.seq <= last.seq {
                continue; // already delivered (from history)
            }
            self.last = Some(last.clone());
            if pos.seq > last.seq + 1 && !self.fill(Some(pos.seq - 1)).await? {
                return Ok(Some(self.gone(Some(message)).await?));
            }
            self.last = Some(pos);
            self.pending.push_back(message);
        }
    }

    /// After a reconnect or a lag: the last delivered event must still be in history at
    /// its position (a restarted bus may have lost it, and even reused its position for
    /// another event), then what came after it is filled in. `Gone` when not.
    async fn check(&mut self) -> Result<Option<Item>, BusError> {
        if let Some(delivered) = &self.delivered
            && let Some(at) = &delivered.position
        {
            let same = match self
                .history
                .history(&self.flow, &at.epoch, at.seq - 1, 1)
                .await?
            {
                Replay::Events(events) => events.first().is_some_and(|m| m.json == delivered.json),
                Replay::Gone => false,
            };
            if !same {
                return self.gone(None).await.map(Some);
            }
        }
        if self.fill(None).await? {
            Ok(None)
        } else {
            self.gone(None).await.map(Some)
        }
    }

    /// Reports a gap history cannot fill and restarts after `message` (or at the head).
    async fn gone(&mut self, message: Option<Arc<Message>>) -> Result<Item, BusError> {
        // The head first: if it cannot be read, nothing changed and the retry checks again.
        let last = match message {
            Some(m) => {
                let last = m.position.clone();
                self.pending.clear();
                self.pending.push_back(m);
                last
            }
            None => {
                let head = self.history.head(&self.flow).await?;
                self.pending.clear();
                head
            }
        };
        self.stats.gone.fetch_add(1, Ordering::Relaxed);
        self.last = last;
        self.delivered = None;
        Ok(Item::Gone)
    }

    /// Queues the events after `last` (up to `upto`) from history. False when history
    /// cannot cover them.
    async fn fill(&mut self, upto: Option<u64>) -> Result<bool, BusError> {
        let mut last = match self.last.clone() {
            Some(last) => last,
            // No history at the start: the current epoch's events are all new.
            None => match self.history.head(&self.flow).await? {
                Some(head) => Position {
                    epoch: head.epoch,
                    seq: 0,
                },
                None => return Ok(true),
            },
        };
        // Pages go to `pending` only once all were read: a failed read leaves nothing half
        // delivered, so the retry neither skips nor repeats an event.
        let mut filled = Vec::new();
        let mut fetched = 0u64;
        loop {
            if upto.is_some_and(|u| last.seq >= u) {
                break;
            }
            let page = match self
                .history
                .history(&self.flow, &last.epoch, last.seq, self.page)
                .await?
            {
                Replay::Gone => return Ok(false),
                Replay::Events(events) => events,
            };
            let full = page.len() == self.page;
            for m in page {
                let seq = m.seq().expect("history holds sequenced events");
                if upto.is_some_and(|u| seq > u) {
                    break;
                }
                last.seq = seq;
                fetched += 1;
                filled.push(m);
            }
            if !full {
                break;
            }
        }
        if upto.is_some_and(|u| last.seq < u) {
            // History ends before the live event: the gap cannot be filled.
            return Ok(false);
        }
        self.pending.extend(filled);
        if fetched > 0 {
            self.stats.filled.fetch_add(1, Ordering::Relaxed);
            self.stats.refetched.fetch_add(fetched, Ordering::Relaxed);
        }
        self.last = Some(last);
        Ok(true)
    }
}
