//! Per-flow fan-out. The first stream of a flow starts its [`Hub`]: one bus subscription,
//! each event framed once, the frame shared (an `Arc`) through a broadcast ring that every
//! stream of the flow reads; the last stream to leave stops it.
//!
//! The ring is each client's bounded queue: it holds `client_queue` frames per flow
//! whatever the number of clients, and a client that falls further behind than that is
//! lagging — it is disconnected and resumes from its `Last-Event-ID`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowsync_bus::presence::{PresenceEntry, PresenceSet};
use flowsync_bus::{Bus, BusError, Item, Message, Position, Subscription};
use flowsync_protocol::{
    Actor, ConnectionId, Event, EventBody, EventType, FlowId, PresenceAction, Resync,
};
use flowsync_store::StoreError;
use tokio::sync::{OnceCell, broadcast};

use crate::flows::FlowVersions;
use crate::frame::Frame;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::tick::tick;

/// What hubs need to run.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames kept per flow for clients that are behind (the client queue).
    pub client_queue: usize,
    /// How often a `: ping` goes to every stream.
    pub heartbeat: Duration,
    /// How often the flow's presence entries are refreshed.
    pub presence_refresh: Duration,
    /// Streams of a flow (on this gateway) whose joins and leaves are announced as
    /// `PRESENCE` events; later ones are only listed. Every announcement goes to every
    /// stream of the flow, so without a cap N viewers would cost N² deliveries.
    pub announce_limit: usize,
}

/// Why a stream cannot join its flow.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The flow does not exist (or was deleted).
    #[error("flow {0} does not exist")]
    NotFound(FlowId),
    /// The bus or the store is down: says which (the error is logged, not sent).
    #[error("the {0} is unavailable")]
    Unavailable(&'static str),
}

impl From<BusError> for JoinError {
    fn from(e: BusError) -> Self {
        tracing::warn!(error = %e, "a stream could not join: the event bus is unavailable");
        Self::Unavailable("event bus")
    }
}

impl From<StoreError> for JoinError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "a stream could not join: the store is unavailable");
        Self::Unavailable("store")
    }
}

/// Every flow with a stream in this process.
#[derive(Debug)]
pub struct Hubs {
    pub(crate) bus: Arc<dyn Bus>,
    store: Arc<dyn FlowVersions>,
    pub(crate) presence: Arc<dyn PresenceSet>,
    config: HubConfig,
    pub(crate) metrics: Metrics,
    /// Per flow: its hub, once started, and how many streams hold it.
    pub(crate) entries: Mutex<HashMap<FlowId, Entry>>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// Started by the first joiner; others wait on it.
    pub(crate) hub: Arc<OnceCell<Arc<Hub>>>,
    /// Streams that joined or are joining.
    pub(crate) members: usize,
}

/// One flow's fan-out.
#[derive(Debug)]
pub struct Hub {
    pub(crate) flow: FlowId,
    /// The shared ring of frames.
    pub(crate) tx: broadcast::Sender<Arc<Frame>>,
    /// What a joiner must read atomically with subscribing to `tx`.
    pub(crate) state: Mutex<HubState>,
    /// The task reading the bus; aborted when the last stream leaves.
    pub(crate) task: Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Debug)]
pub(crate) struct HubState {
    /// The position of the last frame sent on `tx`; every later frame has a later
    /// position. `None`: no history yet, or unknown since the bus lost events.
    last: Option<Position>,
    /// The flow's version as of the last `SYNC_CANVAS` seen (for `READY`).
    version: u64,
    /// A `FLOW_DELETED` came and no op since.
    deleted: bool,
    /// This process's streams of the flow, refreshed in the presence set.
    pub(crate) members: HashMap<ConnectionId, Arc<PresenceEntry>>,
}

/// A stream's place in its flow: the frames to read and where they start.
#[derive(Debug)]
pub struct Joined {
    /// Leaves the flow when dropped.
    pub membership: Membership,
    /// Every frame after `head`.
    pub rx: broadcast::Receiver<Arc<Frame>>,
    /// The last position before `rx`'s first frame.
    pub head: Option<Position>,
    /// The flow's version.
    pub version: u64,
}

impl Hubs {
    /// No flows yet.
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn FlowVersions>,
        presence: Arc<dyn PresenceSet>,
        config: HubConfig,
        metrics: Metrics,
    ) -> Arc<Self> {
        let hubs = Arc::new(Self {
            bus,
            store,
            presence,
            config,
            metrics,
            entries: Mutex::default(),
        });
        tokio::spawn(tick(
            Arc::downgrade(&hubs),
            hubs.config.heartbeat,
            hubs.config.presence_refresh,
        ));
        hubs
    }

    /// The bus (history for resumes).
    pub fn bus(&self) -> &dyn Bus {
        &*self.bus
    }

    /// Joins the flow's hub, starting it for the flow's first stream, and announces the
    /// stream (presence set and a `PRESENCE` join).
    pub async fn join(
        self: &Arc<Self>,
        flow: &FlowId,
        entry: PresenceEntry,
    ) -> Result<Joined, JoinError> {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let e = entries.entry(flow.clone()).or_insert_with(|| Entry {
                hub: Arc::default(),
                members: 0,
            });
            e.members += 1;
            e.hub.clone()
        };
        // From here on the count includes us: whatever happens, `Membership` undoes it.
        let entry = Arc::new(entry);
        let mut membership = Membership {
            hubs: self.clone(),
            flow: flow.clone(),
            hub: None,
            entry: entry.clone(),
            announced: false,
        };
        let hub = cell.get_or_try_init(|| self.start(flow)).await?.clone();
        let deleted = hub.state.lock().unwrap_or_else(|p| p.into_inner()).deleted;
        // The hub saw the flow deleted; the store says whether the id lives again (created
        // anew: its first event is of a new epoch, which `RESYNC`s the old life's streams).
        let alive_again = if deleted {
            self.store.flow_version(flow).await?
        } else {
            None
        };
        let (rx, head, version) = {
            let mut state = hub.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.deleted {
                let Some(version) = alive_again else {
                    return Err(JoinError::NotFound(flow.clone()));
                };
                // The new life has no history yet (its creation dropped the old one): new
                // streams start at its beginning. Its first event is of a new epoch, which
                // the hub's subscription reports as a gap: every stream gets `RESYNC`.
                state.deleted = false;
                state.version = version;
                state.last = None;
            }
            membership.announced = state.members.len() < self.config.announce_limit;
            state
                .members
                .insert(entry.connection_id.clone(), entry.clone());
            (hub.tx.subscribe(), state.last.clone(), state.version)
        };
        membership.hub = Some(hub);
        if let Err(e) = self.presence.join(flow, &entry).await {
            tracing::warn!(flow_id = %flow, error = %e, "presence join not recorded");
        }
        if membership.announced {
            self.announce(
                flow,
                &entry.actor,
                &entry.connection_id,
                PresenceAction::Join,
            )
            .await;
        }
        Ok(Joined {
            membership,
            rx,
            head,
            version,
        })
    }

    /// Starts a flow's hub: subscribe first, then read the head and the version, so no
    /// event falls between them.
    async fn start(self: &Arc<Self>, flow: &FlowId) -> Result<Arc<Hub>, JoinError> {
        let mut sub = self.bus.subscribe(flow).await?;
        let last = sub.start_at_head().await?;
        let version = self
            .store
            .flow_version(flow)
            .await?
            .ok_or_else(|| JoinError::NotFound(flow.clone()))?;
        let hub = Arc::new(Hub {
            flow: flow.clone(),
            tx: broadcast::channel(self.config.client_queue.max(1)).0,
            state: Mutex::new(HubState {
                last,
                version,
                deleted: false,
                members: HashMap::new(),
            }),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(self.clone(), hub.clone(), sub));
        *hub.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        self.metrics.flows.inc();
        Ok(hub)
    }
}

/// A `RESYNC` frame.
pub fn resync(flow: &FlowId, reason: &str) -> Frame {
    Frame::event(&Event {
        body: EventBody::Resync(Resync {
            reason: reason.into(),
        }),
        flow_id: flow.clone(),
        seq: None,
        traceparent: None,
        ts: chrono::Utc::now(),
        actor: Actor::system(),
    })
}

/// The hub's task: bus → frames → ring. It awaits nothing but the subscription, whose
/// `next` must not be cancelled midway (it may be filling a gap from history).
async fn run(hubs: Arc<Hubs>, hub: Arc<Hub>, mut sub: Subscription) {
    loop {
        match sub.next().await {
            Ok(Some(Item::Message(m))) => {
                hubs.metrics.events_in.inc();
                hub.send_message(&m);
            }
            Ok(Some(Item::Gone)) => {
                hubs.metrics.resyncs.inc();
                let mut state = hub.state.lock().unwrap_or_else(|p| p.into_inner());
                state.last = None;
                let _ = hub
                    .tx
                    .send(Arc::new(resync(&hub.flow, "events were lost on the bus")));
            }
            Ok(None) => {
                tracing::info!(flow_id = %hub.flow, "bus closed; ending the flow's streams");
                return;
            }
            Err(e) => {
                // History could not be read to fill a gap or check it after a reconnect:
                // the subscription keeps the check and tries again; meanwhile do not spin.
                tracing::warn!(flow_id = %hub.flow, error = %e, "bus read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Hub {
    /// Frames a bus message once and sends it to every stream of the flow; when traced,
    /// within a `fanout` span that continues the trace of the request behind the event.
    fn send_message(&self, m: &Message) {
        let parent = m
            .traceparent
            .as_deref()
            .filter(|_| flowsync_telemetry::enabled());
        if let Some(parent) = parent {
            let span = tracing::info_span!(
                "fanout",
                flow_id = %self.flow,
                event = %m.kind,
                streams = self.tx.receiver_count(),
            );
            flowsync_telemetry::continue_from(&span, parent);
            return span.in_scope(|| self.fan_out(m));
        }
        self.fan_out(m);
    }

    fn fan_out(&self, m: &Message) {
        let frame = Arc::new(Frame::message(m));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.version {
            state.version = state.version.max(v);
            state.deleted = false;
        }
        if m.kind == EventType::FlowDeleted {
            state.deleted = true;
        }
        if m.position.is_some() {
            state.last = m.position.clone();
        }
        // Sent under the lock, so a joiner's `head` and its first frame agree.
        let _ = self.tx.send(frame);
    }
}
