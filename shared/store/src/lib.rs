//! The flowsync store: flows, their log, time travel and executions, with the write path
//! of DESIGN §4 implemented once over two databases.
//!
//! [`Store`] runs the write path (read, apply with `flowsync-canvas`, append, advance)
//! over a [`Backend`] of storage primitives: [`mongo::MongoBackend`] for the distributed
//! deployment, [`sqlite::SqliteBackend`] for the one-binary mode. The log's unique
//! `(flow_id, version)` key is the only concurrency guard, so any number of API processes
//! may commit to one flow; the unique `(flow_id, op_id)` key makes retried ops idempotent.
//!
//! # Layout
//! - [`backend`]: the primitives each database implements, with their guarantees: the
//!   flow log ([`FlowLog`]) and the executions ([`Executions`]).
//! - [`mongo`], [`sqlite`]: the two implementations.
//! - [`error`]: what can go wrong ([`StoreError`]).

pub mod backend;
mod codec;
pub mod error;
pub mod mongo;
pub mod sqlite;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowsync_canvas::{Batch, Canvas, Env, History, Limits, LogEntry, OpOutcome, apply_batch};
use flowsync_protocol::{
    Actor, ClientId, Conflict, Data, Execution, ExecutionId, ExecutionStatus, Flow, FlowId, NodeId,
    Op, OpId, OpKind,
};
use serde::{Deserialize, Serialize};

pub use backend::{Append, Backend, Base, CommitBase, Executions, FlowLog, NodeRunUpdate};
pub use error::StoreError;

/// Write-path settings: how commits run and the canvas limits they enforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A time-travel checkpoint is written each time a flow's version crosses a multiple of
    /// this; `?at=` replays at most this many log entries.
    pub snapshot_every: u64,
    /// Commit attempts before giving up on a contended flow (then `503`).
    pub max_commit_attempts: u32,
    /// How many of an actor's latest ops `undo`/`redo` can reach.
    pub undo_depth: usize,
    /// Most ops one group commit holds (requests that wait for a flow's commit are folded
    /// into its next one). A request with more commits alone. The default, the largest
    /// request, bounds what one request may wait behind and one durable write's size.
    pub max_group_ops: usize,
    /// Most ops that may wait for one flow's commit in a process; beyond, `503` with
    /// `Retry-After` (never unbounded memory).
    pub max_queued_ops: usize,
    /// Flows whose state a process keeps after committing to them, so that their next
    /// commit starts without reading the flow back (embedded SQLite only, where the
    /// commit's own write checks the flow did not move; MongoDB always reads). Each holds
    /// one canvas; beyond this many, one is let go. `0`: always read.
    pub held_flows: usize,
    /// Canvas limits.
    pub limits: Limits,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 100,
            max_commit_attempts: 30,
            undo_depth: 100,
            max_group_ops: 1_000,
            max_queued_ops: 10_000,
            held_flows: 1_024,
            limits: Limits::default(),
        }
    }
}

/// A flow to create.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewFlow {
    /// The id; the store makes one when absent.
    pub id: Option<FlowId>,
    /// Display name.
    pub name: String,
    /// Initial metadata.
    pub meta: Data,
}

/// One request's ops, for [`Store::commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct CommitRequest {
    /// Who sent them (from the token).
    pub actor: Actor,
    /// The sending client.
    pub client_id: ClientId,
    /// The `If-Match` version.
    pub if_match: Option<u64>,
    /// The ops, in order.
    pub ops: Vec<Op>,
}

/// What a commit did, for the caller to publish (DESIGN §4 step 5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommitOutcome {
    /// Ops applied by this commit, in version order: one `SYNC_CANVAS`.
    pub applied: Vec<LogEntry>,
    /// Ops of the request already in the log (a retry): re-announce each with its original
    /// versions; clients that applied them ignore them.
    pub replayed: Vec<LogEntry>,
    /// Refused ops, in request order: one `CONFLICT` each.
    pub refused: Vec<Conflict>,
    /// The flow's version before this commit's ops.
    pub prev_version: u64,
    /// Commit attempts it took (1 without contention): races lost to other writers, plus
    /// one.
    pub attempts: u32,
}

/// A page of [`Store::list_flows`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlowPage {
    /// Flows ordered by id (as of their snapshots: nodes and edges included).
    pub flows: Vec<Flow>,
    /// The cursor of the next page, when there may be one.
    pub next: Option<FlowId>,
}

/// A flow's state folded from its snapshot and any log lag.
#[derive(Debug)]
struct Loaded {
    canvas: Canvas,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The version of the stored snapshot (the conditional advance starts from it).
    snapshot_version: u64,
}

/// The store: cheap to clone, shareable across tasks.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    config: Arc<StoreConfig>,
    /// One commit at a time per flow within this process (see [`Store::commit`]).
    commit_locks: Arc<CommitLocks>,
    /// Flows as this process last committed them ([`StoreConfig::held_flows`]).
    heads: Arc<Heads>,
}

/// Flows as this process last committed them: a commit takes its flow's state out and puts
/// the new state back once it is durable, so the next commit need not read it
/// ([`Base::Held`]). Taken under the flow's commit lock; bounded.
#[derive(Debug, Default)]
struct Heads(std::sync::Mutex<HashMap<FlowId, Loaded>>);

impl Heads {
    fn take(&self, flow: &FlowId) -> Option<Loaded> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(flow)
    }

    fn put(&self, flow: &FlowId, loaded: Loaded, bound: usize) {
        if bound == 0 {
            return;
        }
        let mut heads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if heads.len() >= bound
            && let Some(any) = heads.keys().next().cloned()
        {
            heads.remove(&any);
        }
        heads.insert(flow.clone(), loaded);
    }
}

/// Which database a process uses (configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded SQLite in a file: the one-binary default.
    Sqlite {
        /// The database file (its directory is created when missing).
        #[serde(default = "default_sqlite_path")]
        path: std::path::PathBuf,
    },
    /// MongoDB, shared by every process of a deployment.
    Mongo(mongo::MongoConfig),
}

fn default_sqlite_path() -> std::path::PathBuf {
    "./data/flowsync.db".into()
}

impl Default for StoreBackend {
    fn default() -> Self {
        Self::Sqlite {
            path: default_sqlite_path(),
        }
    }
}

impl StoreBackend {
    /// Connects to (or opens) the database and prepares it (indexes, schema).
    pub async fn open(&self, config: StoreConfig) -> Result<Store, StoreError> {
        let backend: Arc<dyn Backend> = match self {
            Self::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
                }
                Arc::new(sqlite::SqliteBackend::open(path)?)
            }
            Self::Mongo(mongo) => Arc::new(mongo::MongoBackend::connect(mongo).await?),
        };
        Store::new(backend, config).await
    }
}

/// Whether a request has `undo` or `redo` ops (which consult the log).
fn has_undo(request: &CommitRequest) -> bool {
    request
        .ops
        .iter()
        .any(|op| matches!(op.kind, OpKind::Undo(_) | OpKind::Redo(_)))
}

/// Per-flow async locks, dropped when no commit holds or waits for them.
#[derive(Debug, Default)]
struct CommitLocks(std::sync::Mutex<HashMap<FlowId, Arc<tokio::sync::Mutex<()>>>>);

impl CommitLocks {
    async fn lock(&self, flow: &FlowId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // Keep the map to the flows being committed to right now.
            if locks.len() > 1024 {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(flow.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

impl Store {
    /// A store over `backend`, after creating its indexes.
    pub async fn new(backend: Arc<dyn Backend>, config: StoreConfig) -> Result<Self, StoreError> {
        backend.init().await?;
        Ok(Self {
            backend,
            config: Arc::new(config),
            commit_locks: Arc::default(),
            heads: Arc::default(),
        })
    }

    /// The storage primitives (for tests and tools).
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The write-path settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Creates an empty flow at version 0.
    pub async fn create_flow(&self, new: NewFlow) -> Result<Flow, StoreError> {
        let id = match new.id {
            Some(id) => id,
            None => FlowId::parse(uuid::Uuid::new_v4().simple().to_string())
                .expect("a uuid is a valid id"),
        };
        let now = Utc::now();
        let flow = Flow {
            id,
            name: new.name,
            version: 0,
            nodes: vec![],
            edges: vec![],
            meta: new.meta,
            created_at: now,
            updated_at: now,
        };
        self.backend.insert_flow(&flow).await?;
        self.backend.put_checkpoint(&flow).await?;
        Ok(flow)
    }

    /// The flow's current state: its snapshot with any log lag folded in.
    pub async fn get_flow(&self, id: &FlowId) -> Result<Option<Flow>, StoreError> {
        Ok(self
            .load(id)
            .await?
            .map(|l| l.canvas.to_flow(l.created_at, l.updated_at)))
    }

    /// The flow's current version; `None` when it does not exist.
    pub async fn flow_version(&self, id: &FlowId) -> Result<Option<u64>, StoreError> {
        Ok(self.load(id).await?.map(|l| l.canvas.version()))
    }

    /// The flow as it was at `version` (time travel): the nearest checkpoint at or before it
    /// plus log replay.
    pub async fn flow_at(&self, id: &FlowId, version: u64) -> Result<Option<Flow>, StoreError> {
        let Some(current) = self.load(id).await? else {
            return Ok(None);
        };
        if version > current.canvas.version() {
            return Err(StoreError::VersionAhead {
                flow: id.clone(),
                requested: version,
                current: current.canvas.version(),
            });
        }
        if version == current.canvas.version() {
            return Ok(Some(
                current
                    .canvas
                    .to_flow(current.created_at, current.updated_at),
            ));
        }
        let checkpoint = self
            .backend
            .checkpoint_at_or_before(id, version)
            .await?
            .ok_or_else(|| {
                StoreError::corrupt(format!(
                    "flow {id} has no checkpoint at or before {version}"
                ))
            })?;
        let mut updated_at = checkpoint.updated_at;
        let mut canvas = Canvas::from_flow(checkpoint).map_err(StoreError::corrupt)?;
        for entry in self
            .backend
            .log(id, canvas.version(), Some(version), None)
            .await?
        {
            fold(&mut canvas, &entry)?;
            updated_at = entry.ts;
        }
        Ok(Some(canvas.to_flow(current.created_at, updated_at)))
    }

    /// Flows ordered by id, after the cursor `after`.
    pub async fn list_flows(
        &self,
        after: Option<&FlowId>,
        limit: usize,
    ) -> Result<FlowPage, StoreError> {
        let limit = limit.max(1);
        let flows = self.backend.list_snapshots(after, limit).await?;
        let next = (flows.len() == limit).then(|| flows[limit - 1].id.clone());
        Ok(FlowPage { flows, next })
    }

    /// Deletes a flow with its log and executions. False if it did not exist.
    pub async fn delete_flow(&self, id: &FlowId) -> Result<bool, StoreError> {
        // No commit of this process is in flight meanwhile, nor holds the flow after.
        let _turn = self.commit_locks.lock(id).await;
        self.heads.take(id);
        self.backend.delete_flow(id).await
    }

    /// Applied ops after version `after`, in version order, at most `limit`.
    pub async fn history(
        &self,
        id: &FlowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if self.backend.snapshot(id).await?.is_none() {
            return Err(StoreError::FlowNotFound(id.clone()));
        }
        self.backend.log(id, after, None, Some(limit)).await
    }

    /// Commits one request's ops (DESIGN §4): [`commit_group`](Self::commit_group) of one.
    pub async fn commit(
        &self,
        id: &FlowId,
        request: &CommitRequest,
    ) -> Result<CommitOutcome, StoreError> {
        let mut outcomes = self.commit_group(id, std::slice::from_ref(request)).await?;
        Ok(outcomes.remove(0))
    }

    /// Commits several requests to one flow in one durable write (group commit, DESIGN
    /// §4): each request's ops are applied in its order against the state the requests
    /// before it left (its `If-Match` and base versions checked against that state, its
    /// first refusal skipping only its own rest), then every entry of the group is appended
    /// at once and the snapshot advanced once. An op id already in the log, or applied
    /// earlier in the group, is reported as replayed, never applied twice. Losing the
    /// version race to another process retries the whole group (bounded, with jitter).
    /// One outcome per request, in order.
    pub async fn commit_group(
        &self,
        id: &FlowId,
        requests: &[CommitRequest],
    ) -> Result<Vec<CommitOutcome>, StoreError> {
        let op_ids: Vec<OpId> = requests
            .iter()
            .flat_map(|r| r.ops.iter().map(|op| op.op_id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Writers of one process take turns on a flow: they would only lose the version
        // race to each other and retry (a hot flow's retry storm). Races against other
        // processes are still settled by the log's unique index below.
        let _turn = self.commit_locks.lock(id).await;
        let holds = self.backend.holds_heads() && self.config.held_flows > 0;
        // Races lost after a read (a held copy that must be read again is not one).
        let mut lost = 0;
        // A held copy's attempt is not one of the reads `max_commit_attempts` counts.
        for attempt in 1..=self.config.max_commit_attempts + u32::from(holds) {
            // The flow as this process last committed it, when it holds it: no read. Its
            // op ids are not looked up either: one already logged makes the write lose
            // the race, and the next attempt reads.
            let held = if holds && attempt == 1 {
                self.heads.take(id)
            } else {
                None
            };
            let (mut loaded, known, base) = match held {
                Some(loaded) => {
                    let head = loaded.canvas.version();
                    (loaded, vec![], Base::Held(head))
                }
                None => {
                    let (loaded, known) = self
                        .load_with(id, &op_ids)
                        .await?
                        .ok_or_else(|| StoreError::FlowNotFound(id.clone()))?;
                    let base = Base::Read(loaded.snapshot_version);
                    (loaded, known, base)
                }
            };
            // Entries of these op ids: from the log, then from this group as it applies.
            let mut known: HashMap<OpId, LogEntry> =
                known.into_iter().map(|e| (e.op_id.clone(), e)).collect();
            let group_start = loaded.canvas.version();
            let now = Utc::now();
            let mut new_id = || uuid::Uuid::new_v4().simple().to_string();
            let mut entries: Vec<LogEntry> = Vec::new();
            let mut outcomes = Vec::with_capacity(requests.len());
            for request in requests {
                let mut history = self.undo_history(id, request).await?;
                // `undo` may reach ops committed earlier in this group.
                if has_undo(request) {
                    for entry in &entries {
                        if let Some(undone) = entry.undo_of {
                            history.mark_undone(undone);
                        }
                        history.insert(entry.clone());
                    }
                }
                let prev_version = loaded.canvas.version();
                let result = apply_batch(
                    &mut loaded.canvas,
                    &Batch {
                        actor: &request.actor,
                        client_id: &request.client_id,
                        if_match: request.if_match,
                        ops: &request.ops,
                        now,
                    },
                    &mut Env {
                        limits: &self.config.limits,
                        history: &history,
                        already_applied: &|op_id| known.contains_key(op_id),
                        new_id: &mut new_id,
                    },
                );
                let mut outcome = CommitOutcome {
                    prev_version,
                    attempts: lost + 1,
                    ..CommitOutcome::default()
                };
                for (op, o) in request.ops.iter().zip(result.outcomes) {
                    match o {
                        OpOutcome::Applied(_) => {}
                        OpOutcome::AlreadyApplied => {
                            outcome.replayed.extend(known.get(&op.op_id).cloned())
                        }
                        OpOutcome::Refused(conflict) => outcome.refused.push(conflict),
                    }
                }
                for entry in &result.entries {
                    known.insert(entry.op_id.clone(), entry.clone());
                }
                entries.extend(result.entries.iter().cloned());
                outcome.applied = result.entries;
                outcomes.push(outcome);
            }
            // On a held copy an op already logged is not known: applied again, its write
            // loses on the op id key; refused (a stale `If-Match`, a node it added, a batch
            // stopped before it), nothing would check it. So a held copy's refusals — and
            // a group that writes nothing, which no write checks — are decided again on
            // what is stored.
            if let Base::Held(_) = base
                && (entries.is_empty() || outcomes.iter().any(|o| !o.refused.is_empty()))
            {
                continue;
            }
            if !entries.is_empty() {
                let flow = loaded.canvas.to_flow(loaded.created_at, now);
                let every = self.config.snapshot_every.max(1);
                let checkpoint = group_start / every != flow.version / every;
                let append = self
                    .backend
                    .commit(id, &entries, &flow, base, checkpoint)
                    .await?;
                if append == Append::Race {
                    tracing::debug!(flow_id = %id, attempt, "lost the commit race; retrying");
                    // A held head that lost met a logged op id or a move: read at once.
                    if let Base::Read(_) = base {
                        lost += 1;
                        backoff(lost).await;
                    }
                    continue;
                }
                loaded.snapshot_version = flow.version;
                loaded.updated_at = now;
            }
            if holds {
                self.heads.put(id, loaded, self.config.held_flows);
            }
            return Ok(outcomes);
        }
        Err(StoreError::Contention {
            flow: id.clone(),
            attempts: self.config.max_commit_attempts,
        })
    }

    /// Loads what `undo`/`redo` in this request may consult: nothing when it has none.
    async fn undo_history(
        &self,
        id: &FlowId,
        request: &CommitRequest,
    ) -> Result<History, StoreError> {
        let mut history = History::new();
        let mut explicit = vec![];
        let mut any = false;
        for op in &request.ops {
            match &op.kind {
                OpKind::Undo(undo) => {
                    any = true;
                    explicit.extend(undo.version);
                }
                OpKind::Redo(_) => any = true,
                _ => {}
            }
        }
        if !any {
            return Ok(history);
        }
        let mut entries = self
            .backend
            .entries_by_actor(id, &request.actor.id, self.config.undo_depth)
            .await?;
        if !explicit.is_empty() {
            entries.extend(self.backend.entries_at(id, &explicit).await?);
        }
        let versions: Vec<u64> = entries
            .iter()
            .map(|e| e.version)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for version in self.backend.undone_among(id, &versions).await? {
            history.mark_undone(version);
        }
        for entry in entries {
            history.insert(entry);
        }
        Ok(history)
    }

    /// Step 1 of the write path: the snapshot plus any log entries after it.
    async fn load(&self, id: &FlowId) -> Result<Option<Loaded>, StoreError> {
        Ok(self.load_with(id, &[]).await?.map(|(loaded, _)| loaded))
    }

    /// The flow as [`load`](Self::load) gives it, and the logged entries of `op_ids`, read
    /// together ([`FlowLog::commit_base`]).
    async fn load_with(
        &self,
        id: &FlowId,
        op_ids: &[OpId],
    ) -> Result<Option<(Loaded, Vec<LogEntry>)>, StoreError> {
        let Some(CommitBase {
            snapshot,
            log,
            known,
        }) = self.backend.commit_base(id, op_ids).await?
        else {
            return Ok(None);
        };
        let (created_at, mut updated_at, snapshot_version) =
            (snapshot.created_at, snapshot.updated_at, snapshot.version);
        let mut canvas = Canvas::from_flow(snapshot).map_err(StoreError::corrupt)?;
        for entry in log {
            fold(&mut canvas, &entry)?;
            updated_at = entry.ts;
        }
        let loaded = Loaded {
            canvas,
            created_at,
            updated_at,
            snapshot_version,
        };
        Ok(Some((loaded, known)))
    }

    /// Stores a new execution.
    pub async fn create_execution(&self, execution: &Execution) -> Result<(), StoreError> {
        self.backend.insert_execution(execution).await
    }

    /// Sets an execution's status (and error). An execution that has ended keeps its
    /// final status ([`StoreError::ExecutionEnded`]): of a cancel and a runner's last word
    /// racing, the first to end it wins, and the other is told.
    pub async fn set_execution_status(
        &self,
        id: &ExecutionId,
        status: ExecutionStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if self
            .backend
            .set_execution_status(id, status, error, Utc::now())
            .await?
        {
            return Ok(());
        }
        match self.backend.execution(id).await? {
            Some(ended) => Err(StoreError::ExecutionEnded {
                id: id.clone(),
                status: ended.status,
            }),
            None => Err(StoreError::ExecutionNotFound(id.clone())),
        }
    }

    /// Sets one node's state in an execution.
    pub async fn set_node_run(
        &self,
        id: &ExecutionId,
        update: &NodeRunUpdate,
    ) -> Result<(), StoreError> {
        found(self.backend.set_node_run(id, update, Utc::now()).await?, id)
    }

    /// Saves `text`, a node's chunks `chunks` (see [`Executions::append_node_log`]).
    pub async fn append_node_log(
        &self,
        id: &ExecutionId,
        node: &NodeId,
        text: &str,
        chunks: std::ops::Range<u64>,
    ) -> Result<(), StoreError> {
        found(
            self.backend.append_node_log(id, node, text, chunks).await?,
            id,
        )
    }

    /// An execution with its node runs.
    pub async fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>, StoreError> {
        self.backend.execution(id).await
    }

    /// A flow's executions, newest first.
    pub async fn executions(
        &self,
        flow: &FlowId,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        self.backend.executions(flow, limit).await
    }

    /// Executions of every flow still `queued` or `running`, oldest first: what a process
    /// whose job queue lives in memory queues again when it starts.
    pub async fn unfinished_executions(
        &self,
        limit: usize,
    ) -> Result<Vec<(FlowId, ExecutionId)>, StoreError> {
        self.backend.unfinished_executions(limit).await
    }
}

fn found(ok: bool, id: &ExecutionId) -> Result<(), StoreError> {
    if ok {
        Ok(())
    } else {
        Err(StoreError::ExecutionNotFound(id.clone()))
    }
}

/// Folds one logged entry into a canvas; the log must continue the canvas exactly.
fn fold(canvas: &mut Canvas, entry: &LogEntry) -> Result<(), StoreError> {
    if entry.version != canvas.version() + 1 {
        return Err(StoreError::corrupt(format!(
            "flow {}: log entry {} follows version {}",
            canvas.id(),
            entry.version,
            canvas.version()
        )));
    }
    canvas
        .apply_applied(entry.version, &entry.changes)
        .map_err(StoreError::corrupt)
}

/// Sleeps a random time that grows with the attempt, so losers of a race spread out.
async fn backoff(attempt: u32) {
    let cap_ms = 1u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap_ms * 1000))).await;
}
