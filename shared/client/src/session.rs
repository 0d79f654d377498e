//! [`FlowSession`]: one flow kept in sync, and ops sent with their results awaited.
//!
//! A session subscribes first and loads the flow second, so nothing falls between the two.
//! It applies `SYNC_CANVAS` in version order with the dumb reducer: an event that arrives
//! ahead of its predecessor (two API instances announce in a different order than they
//! committed) waits briefly, then the gap is filled from `/history`. `RESYNC` reloads the
//! flow. Every op's result — applied or refused — is matched to its sender by op id.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flowsync_canvas::Canvas;
use flowsync_protocol::{
    ClientId, Conflict, ConnectionId, Event, EventBody, FieldPath, FlowId, Op, OpId, OpsRequest,
    SyncCanvas,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::time::Instant;

use crate::stream::EventStream;
use crate::{Client, Error};

/// How a session sends ops and keeps up with the stream.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// This client's id, echoed in `SYNC_CANVAS` and `CONFLICT`.
    pub client_id: ClientId,
    /// How long to wait for an op's result before sending it again (same op id).
    pub op_timeout: Duration,
    /// How many times an op is sent before [`Error::Timeout`].
    pub op_attempts: u32,
    /// How long a `SYNC_CANVAS` that arrived before its predecessor waits for it before
    /// the gap is filled from `/history`.
    pub gap_wait: Duration,
    /// Events buffered for each [`FlowSession::subscribe`]r; a slower one sees `Lagged`.
    pub event_buffer: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            client_id: ClientId::parse(format!("rs-{}", &id[..12])).expect("a valid client id"),
            op_timeout: Duration::from_secs(10),
            op_attempts: 3,
            gap_wait: Duration::from_millis(250),
            event_buffer: 1024,
        }
    }
}

/// The result of one op.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied; the flow's version after it.
    Applied {
        /// The version this op produced.
        version: u64,
    },
    /// Refused; applied nothing.
    Refused(Conflict),
}

impl Outcome {
    /// The version an applied op produced.
    pub fn applied(&self) -> Option<u64> {
        match self {
            Self::Applied { version } => Some(*version),
            Self::Refused(_) => None,
        }
    }
}

/// A flow kept in sync with the server, and the way to change it.
///
/// Dropping the session closes its stream.
#[derive(Debug)]
pub struct FlowSession {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    flow: FlowId,
    config: SessionConfig,
    canvas: Mutex<Canvas>,
    progress: watch::Sender<Progress>,
    pending: Mutex<HashMap<OpId, oneshot::Sender<Outcome>>>,
    events: broadcast::Sender<Arc<Event>>,
    /// Bumped on every `RESYNC`: results announced in the gap are lost, so senders still
    /// waiting send their ops again.
    resyncs: watch::Sender<u64>,
    connection: Mutex<Option<ConnectionId>>,
}

/// What waiters watch: the canvas version, and whether the session ended.
#[derive(Debug, Clone, Default)]
struct Progress {
    version: u64,
    closed: Option<Arc<str>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FlowSession {
    /// Subscribes to the flow, loads it, and keeps it in sync until dropped.
    pub async fn open(client: Client, flow: FlowId, config: SessionConfig) -> Result<Self, Error> {
        let mut stream = client.events(&flow);
        let connection = loop {
            if let EventBody::Ready(ready) = stream.next().await?.body {
                break ready.connection_id;
            }
        };
        let canvas = load(&client, &flow).await?;
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        let shared = Arc::new(Shared {
            progress: watch::Sender::new(Progress {
                version: canvas.version(),
                closed: None,
            }),
            canvas: Mutex::new(canvas),
            client,
            flow,
            config,
            pending: Mutex::default(),
            events,
            resyncs: watch::Sender::new(0),
            connection: Mutex::new(Some(connection)),
        });
        let task = tokio::spawn(follow(shared.clone(), stream));
        Ok(Self { shared, task })
    }

    /// The flow.
    pub fn flow_id(&self) -> &FlowId {
        &self.shared.flow
    }

    /// This session's client id.
    pub fn client_id(&self) -> &ClientId {
        &self.shared.config.client_id
    }

    /// The HTTP client underneath.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// A copy of the canvas as this session knows it now.
    pub fn canvas(&self) -> Canvas {
        lock(&self.shared.canvas).clone()
    }

    /// The canvas version this session has applied.
    pub fn version(&self) -> u64 {
        lock(&self.shared.canvas).version()
    }

    /// A string field of a node (`path` a JSON pointer into its `data`), if both exist.
    pub fn text(&self, node: &str, path: &FieldPath) -> Option<String> {
        lock(&self.shared.canvas)
            .text(node, path)
            .map(str::to_owned)
    }

    /// Every event of the flow from now on (`LOG_STREAM`, `EXECUTION_UPDATE`, `PRESENCE`, …),
    /// as received. A subscriber more than [`SessionConfig::event_buffer`] events behind
    /// misses the oldest and is told so (`Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.events.subscribe()
    }

    /// Waits until the canvas reached `version` (e.g. the version an op of another
    /// session produced).
    pub async fn wait_for_version(&self, version: u64) -> Result<(), Error> {
        let mut rx = self.shared.progress.subscribe();
        let progress = rx
            .wait_for(|p| p.version >= version || p.closed.is_some())
            .await
            .map_err(|_| Error::Closed("the session ended".into()))?;
        match &progress.closed {
            Some(reason) if progress.version < version => Err(Error::Closed(reason.to_string())),
            _ => Ok(()),
        }
    }

    /// Reloads the flow from the server (`GET`); the stream goes on from there.
    pub async fn reload(&self) -> Result<(), Error> {
        self.shared.reload().await
    }

    /// Sends ops as one request and waits for each op's result. A refusal is an
    /// [`Outcome::Refused`]; the first refusal in a request makes the rest `skipped`.
    ///
    /// When results do not arrive within [`SessionConfig::op_timeout`] (or the stream had
    /// to `RESYNC`), the ops still without one are sent again with the same op ids: an op
    /// that was applied is not applied again, its result is announced again.
    pub async fn send(&self, ops: Vec<Op>) -> Result<Vec<Outcome>, Error> {
        let shared = &self.shared;
        let (_registration, receivers) = Registration::new(shared, &ops)?;
        let mut waiting: FuturesUnordered<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| async move { (i, rx.await) })
            .collect();
        let mut results: Vec<Option<Outcome>> = vec![None; ops.len()];
        let mut resyncs = shared.resyncs.subscribe();
        let (timeout, attempts) = (shared.config.op_timeout, shared.config.op_attempts.max(1));
        for attempt in 1..=attempts {
            let missing: Vec<Op> = ops
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_none())
                .map(|(op, _)| op.clone())
                .collect();
            let request = OpsRequest {
                client_id: shared.config.client_id.clone(),
                ops: missing,
            };
            shared.client.post_ops(&shared.flow, &request, None).await?;
            let deadline = Instant::now() + timeout;
            loop {
                tokio::select! {
                    next = waiting.next() => match next {
                        Some((i, Ok(outcome))) => results[i] = Some(outcome),
                        Some((_, Err(_))) => return Err(shared.closed_error()),
                        None => return Ok(results.into_iter().flatten().collect()),
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                    Ok(()) = resyncs.changed() => break,
                }
            }
            tracing::debug!(flow = %shared.flow, attempt, "op results missing; sending again");
        }
        let op_id = ops
            .iter()
            .zip(&results)
            .find(|(_, r)| r.is_none())
            .map(|(op, _)| op.op_id.clone())
            .expect("an op without a result");
        Err(Error::Timeout {
            op_id,
            after: timeout,
            attempts,
        })
    }

    /// Sends one op and waits for its result.
    pub async fn send_one(&self, op: Op) -> Result<Outcome, Error> {
        let mut outcomes = self.send(vec![op]).await?;
        Ok(outcomes.remove(0))
    }

    /// Announces this session's ephemeral state (cursor, selection) as `PRESENCE update`.
    pub async fn set_presence(&self, state: &Value) -> Result<(), Error> {
        let connection = lock(&self.shared.connection)
            .clone()
            .ok_or_else(|| Error::Closed("no stream".into()))?;
        self.shared
            .client
            .set_presence(&self.shared.flow, &connection, state)
            .await
    }
}

impl Drop for FlowSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The ops of one `send`, registered for their results before they are posted (a result
/// can arrive before the `202`); unregistered when the send ends, however it ends.
struct Registration<'a> {
    shared: &'a Shared,
    ids: Vec<OpId>,
}

impl<'a> Registration<'a> {
    fn new(
        shared: &'a Shared,
        ops: &[Op],
    ) -> Result<(Self, Vec<oneshot::Receiver<Outcome>>), Error> {
        if let Some(reason) = &shared.progress.borrow().closed {
            return Err(Error::Closed(reason.to_string()));
        }
        let mut pending = lock(&shared.pending);
        if let Some(op) = ops.iter().find(|op| pending.contains_key(&op.op_id)) {
            return Err(Error::Protocol(format!(
                "op {} is already being sent",
                op.op_id
            )));
        }
        let receivers = ops
            .iter()
            .map(|op| {
                let (tx, rx) = oneshot::channel();
                pending.insert(op.op_id.clone(), tx);
                rx
            })
            .collect();
        let ids = ops.iter().map(|op| op.op_id.clone()).collect();
        Ok((Self { shared, ids }, receivers))
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.shared.pending);
        for id in &self.ids {
            pending.remove(id);
        }
    }
}

async fn load(client: &Client, flow: &FlowId) -> Result<Canvas, Error> {
    let state = client.flow(flow).await?;
    Canvas::from_flow(state).map_err(|e| Error::Protocol(format!("flow {flow}: {e}")))
}

impl Shared {
    fn closed_error(&self) -> Error {
        let reason = self.progress.borrow().closed.clone();
        Error::Closed(reason.map_or_else(|| "the session ended".into(), |r| r.to_string()))
    }

    /// Ends the session: waiters and senders are released with [`Error::Closed`].
    fn close(&self, reason: &str) {
        tracing::info!(flow = %self.flow, reason, "session closed");
        self.progress
            .send_modify(|p| p.closed = Some(Arc::from(reason)));
        lock(&self.pending).clear();
    }

    fn resolve(&self, op_id: &OpId, outcome: Outcome) {
        if let Some(tx) = lock(&self.pending).remove(op_id) {
            let _ = tx.send(outcome);
        }
    }

    async fn reload(&self) -> Result<(), Error> {
        let fresh = load(&self.client, &self.flow).await?;
        let mut canvas = lock(&self.canvas);
        if fresh.version() >= canvas.version() {
            *canvas = fresh;
            self.progress.send_modify(|p| p.version = canvas.version());
        }
        Ok(())
    }

    /// Applies the ops of `sync` the canvas does not have yet. `Err` when the event is
    /// ahead of the canvas (its predecessor is missing); `Ok(false)` when the reducer
    /// failed (the canvas and the server disagree: reload).
    fn apply(&self, sync: &SyncCanvas) -> Result<bool, ()> {
        let mut canvas = lock(&self.canvas);
        if sync.prev_version > canvas.version() {
            return Err(());
        }
        for op in &sync.ops {
            if op.version <= canvas.version() {
                continue;
            }
            if let Err(e) = canvas.apply_applied(op.version, &op.changes) {
                tracing::warn!(flow = %self.flow, error = %e, "a change did not apply; reloading");
                return Ok(false);
            }
        }
        self.progress.send_modify(|p| p.version = canvas.version());
        Ok(true)
    }
}

/// The session's task: reads the stream until it ends for good.
async fn follow(shared: Arc<Shared>, mut stream: EventStream) {
    let mut follower = Follower {
        shared: &shared,
        early: Early::default(),
        applied: Vec::new(),
    };
    loop {
        follower.resolve_applied();
        let deadline = follower.early.since.map(|t| t + shared.config.gap_wait);
        let next = tokio::select! {
            next = stream.next() => next,
            () = crate::sleep_until(deadline) => {
                follower.fill_gap().await;
                continue;
            }
        };
        match next {
            Ok(event) => {
                if let Err(reason) = follower.handle(event).await {
                    shared.close(&reason);
                    return;
                }
            }
            Err(Error::Protocol(e)) => {
                tracing::warn!(flow = %shared.flow, error = %e, "unreadable event")
            }
            Err(e) => {
                shared.close(&e.to_string());
                return;
            }
        }
    }
}

/// The stream reader's state: `SYNC_CANVAS` events that came before their predecessor,
/// and this session's ops announced as applied that the canvas does not hold yet.
struct Follower<'a> {
    shared: &'a Shared,
    early: Early,
    /// (version, op): resolved once the canvas reaches the version, so a result never
    /// comes before the change it made. Only ops a `send` waits for: bounded by those.
    applied: Vec<(u64, OpId)>,
}

/// `SYNC_CANVAS` events held until their predecessor is applied: at most [`Early::MAX`].
#[derive(Debug, Default)]
struct Early {
    /// By `prev_version`.
    by_prev: BTreeMap<u64, SyncCanvas>,
    /// Since when the wait for the missing versions runs (`None` when nothing is held).
    since: Option<Instant>,
}

impl Early {
    /// Events a session holds while it fills a gap, at most.
    const MAX: usize = 1_000;

    /// Holds `sync` (a copy: the event itself goes to subscribers). `false` when that
    /// passes the bound: far ahead of what history fills in one wait (history keeps
    /// failing), so everything held is dropped and the caller reloads, which holds every
    /// version seen so far.
    fn hold(&mut self, sync: &SyncCanvas) -> bool {
        self.by_prev.insert(sync.prev_version, sync.clone());
        self.since.get_or_insert_with(Instant::now);
        if self.by_prev.len() > Self::MAX {
            self.forget(|_| true);
            return false;
        }
        true
    }

    /// The held event that comes next on a canvas at `version` (or one already behind it:
    /// applying it tells), removed.
    fn next_after(&mut self, version: u64) -> Option<SyncCanvas> {
        let entry = self.by_prev.first_entry().filter(|e| *e.key() <= version)?;
        let sync = entry.remove();
        if self.by_prev.is_empty() {
            self.since = None; // the wait ends with the last held event
        }
        Some(sync)
    }

    /// The first missing version's predecessor: what the gap ends at.
    fn first(&self) -> Option<u64> {
        self.by_prev.keys().next().copied()
    }

    /// Drops the held events a canvas at `version` already holds (after a reload).
    fn drop_through(&mut self, version: u64) {
        self.forget(|sync| sync.version <= version);
    }

    /// Drops what `gone` picks; the wait ends with the last held event.
    fn forget(&mut self, gone: impl Fn(&SyncCanvas) -> bool) {
        self.by_prev.retain(|_, sync| !gone(sync));
        if self.by_prev.is_empty() {
            self.since = None;
        }
    }
}

impl Follower<'_> {
    /// Handles one event; `Err` ends the session.
    async fn handle(&mut self, event: Event) -> Result<(), String> {
        match &event.body {
            EventBody::Ready(ready) => {
                *lock(&self.shared.connection) = Some(ready.connection_id.clone());
                if !ready.resumed {
                    // A reconnect that could not resume: what happened meanwhile is unknown.
                    self.reload().await;
                    self.drain().await;
                }
            }
            EventBody::SyncCanvas(sync) => {
                self.sync(sync).await;
                let pending = lock(&self.shared.pending);
                self.applied.extend(
                    sync.ops
                        .iter()
                        .filter(|op| pending.contains_key(&op.op_id))
                        .map(|op| (op.version, op.op_id.clone())),
                );
                drop(pending);
                self.resolve_applied();
            }
            EventBody::Conflict(conflict) => self
                .shared
                .resolve(&conflict.op_id, Outcome::Refused(conflict.clone())),
            EventBody::Resync(resync) => {
                tracing::info!(flow = %self.shared.flow, reason = %resync.reason, "resync");
                self.reload().await;
                self.drain().await;
                self.shared.resyncs.send_modify(|n| *n += 1);
            }
            EventBody::FlowDeleted(_) => {
                let _ = self.shared.events.send(Arc::new(event));
                return Err("the flow was deleted".into());
            }
            EventBody::ExecutionUpdate(_) | EventBody::LogStream(_) | EventBody::Presence(_) => {}
        }
        // After the canvas moved, so a subscriber that looks at it sees the event's effect.
        let _ = self.shared.events.send(Arc::new(event));
        Ok(())
    }

    /// Resolves the applied ops the canvas now holds (an event held for its predecessor
    /// resolves its ops when it is applied, or when a reload covers it).
    fn resolve_applied(&mut self) {
        if self.applied.is_empty() {
            return;
        }
        let version = self.shared.canvas_version();
        let shared = self.shared;
        self.applied.retain(|(applied, op_id)| {
            let held = *applied <= version;
            if held {
                shared.resolve(op_id, Outcome::Applied { version: *applied });
            }
            !held
        });
    }

    async fn sync(&mut self, sync: &SyncCanvas) {
        match self.shared.apply(sync) {
            Ok(true) => self.drain().await,
            Ok(false) => {
                self.reload().await;
                self.drain().await;
            }
            Err(()) => {
                if !self.early.hold(sync) {
                    self.reload().await;
                }
            }
        }
    }

    /// Applies every early event that now fits.
    async fn drain(&mut self) {
        while let Some(sync) = self.early.next_after(self.shared.canvas_version()) {
            if self.shared.apply(&sync) == Ok(false) {
                self.reload().await;
            }
        }
    }

    /// The predecessor did not come: reads the missing versions from `/history`.
    async fn fill_gap(&mut self) {
        let Some(want) = self.early.first() else {
            return;
        };
        let shared = self.shared;
        loop {
            let after = shared.canvas_version();
            if after >= want {
                break;
            }
            match shared.client.history(&shared.flow, after, 500).await {
                Ok(entries) => {
                    let mut canvas = lock(&shared.canvas);
                    for entry in &entries {
                        if entry.version <= canvas.version() {
                            continue;
                        }
                        if entry.version != canvas.version() + 1
                            || canvas.apply_applied(entry.version, &entry.changes).is_err()
                        {
                            break;
                        }
                    }
                    shared
                        .progress
                        .send_modify(|p| p.version = canvas.version());
                    if canvas.version() == after {
                        break; // no progress: reload below
                    }
                }
                Err(e) => {
                    tracing::warn!(flow = %shared.flow, error = %e, "history for a gap failed");
                    // Try again after another wait.
                    self.early.since = Some(Instant::now());
                    return;
                }
            }
        }
        if shared.canvas_version() < want {
            self.reload().await;
        }
        self.drain().await;
    }

    async fn reload(&mut self) {
        if let Err(e) = self.shared.reload().await {
            tracing::warn!(flow = %self.shared.flow, error = %e, "reload failed");
            return;
        }
        let version = self.shared.canvas_version();
        self.early.drop_through(version);
    }
}

impl Shared {
    fn canvas_version(&self) -> u64 {
        lock(&self.canvas).version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(prev_version: u64) -> SyncCanvas {
        SyncCanvas {
            prev_version,
            version: prev_version + 1,
            client_id: "c".parse().unwrap(),
            ops: vec![],
        }
    }

    #[test]
    fn early_events_come_out_in_version_order_as_the_canvas_reaches_them() {
        let mut early = Early::default();
        for prev in [7, 5, 6] {
            assert!(early.hold(&sync(prev)));
        }
        assert!(early.since.is_some(), "the wait for version 5 runs");
        assert_eq!(early.first(), Some(5));
        assert_eq!(early.next_after(4), None, "version 5 is still missing");
        // Version 5 arrives (from history): the canvas applies each held one in turn.
        let mut canvas = 6;
        assert_eq!(early.next_after(5).map(|s| s.version), Some(6));
        assert!(early.since.is_some(), "the wait runs while one is held");
        while let Some(sync) = early.next_after(canvas) {
            assert_eq!(sync.prev_version, canvas, "each on its predecessor");
            canvas = sync.version;
        }
        assert_eq!(canvas, 8);
        assert_eq!((early.first(), early.since), (None, None));
    }

    #[test]
    fn holding_past_the_bound_drops_everything_held_for_a_reload() {
        let mut early = Early::default();
        for prev in 1..=Early::MAX as u64 {
            assert!(early.hold(&sync(prev)), "held {prev}");
        }
        assert!(
            !early.hold(&sync(Early::MAX as u64 + 1)),
            "one past the bound"
        );
        assert_eq!((early.by_prev.len(), early.since), (0, None));
    }

    #[test]
    fn a_reload_drops_what_it_already_holds() {
        let mut early = Early::default();
        for prev in [3, 10] {
            early.hold(&sync(prev));
        }
        early.drop_through(4);
        assert_eq!(early.first(), Some(10));
        early.drop_through(11);
        assert_eq!((early.first(), early.since), (None, None));
    }
}
