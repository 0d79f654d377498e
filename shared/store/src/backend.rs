//! The storage primitives each database implements. The write path itself lives once, in
//! [`Store`](crate::Store), over these.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowsync_canvas::LogEntry;
use flowsync_protocol::{
    ActorId, Execution, ExecutionId, ExecutionStatus, Flow, FlowId, NodeId, NodeStatus, OpId,
};

use crate::StoreError;

/// Whether an append won the race for its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// Every entry is stored.
    Done,
    /// A unique key (`(flow_id, version)` or `(flow_id, op_id)`) was taken: another writer
    /// advanced the flow. Entries before the clash may be stored (they are whole entries,
    /// found by the retry through their op ids).
    Race,
}

/// What a commit's snapshot advance starts from ([`FlowLog::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The version of the snapshot the commit read (the log may have been past it).
    Read(u64),
    /// The flow's head as this process last committed it, not read again: the commit
    /// loses with [`Append::Race`] unless the stored flow is still exactly at this
    /// version, checked in the commit's own atomic write. Only for a backend whose
    /// [`FlowLog::holds_heads`] is true; any other loses the race.
    Held(u64),
}

/// A flow as a commit finds it ([`FlowLog::commit_base`]).
#[derive(Debug)]
pub struct CommitBase {
    /// The stored snapshot (it may lag behind the log).
    pub snapshot: Flow,
    /// The log past the snapshot, in version order.
    pub log: Vec<LogEntry>,
    /// The logged entries of the op ids asked about (those that exist).
    pub known: Vec<LogEntry>,
}

/// A change of one node's state in an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRunUpdate {
    /// The node.
    pub node_id: NodeId,
    /// Its new status.
    pub status: NodeStatus,
    /// Its output, when it has one.
    pub output: Option<serde_json::Value>,
    /// Its error, when it failed.
    pub error: Option<String>,
}

/// Storage primitives of one database: the flow log ([`FlowLog`]) and the executions
/// ([`Executions`]). Every method is one round trip (or one local transaction), and each
/// documents the guarantee the write path relies on.
pub trait Backend: FlowLog + Executions {}

impl<T: FlowLog + Executions> Backend for T {}

/// Flows, their log and checkpoints: what the write path and time travel use.
#[async_trait]
pub trait FlowLog: Send + Sync + std::fmt::Debug {
    /// Creates the database's collections/tables and indexes, executions' too; idempotent.
    async fn init(&self) -> Result<(), StoreError>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts a new flow snapshot; [`StoreError::FlowExists`] if the id is taken. Removes
    /// any log or checkpoints left by an earlier flow of the same id first.
    async fn insert_flow(&self, flow: &Flow) -> Result<(), StoreError>;

    /// The flow's current snapshot (it may lag behind the log).
    async fn snapshot(&self, flow: &FlowId) -> Result<Option<Flow>, StoreError>;

    /// Snapshots ordered by id, after `after`, at most `limit`.
    async fn list_snapshots(
        &self,
        after: Option<&FlowId>,
        limit: usize,
    ) -> Result<Vec<Flow>, StoreError>;

    /// Deletes the flow, its log, checkpoints and executions. False if it did not exist.
    async fn delete_flow(&self, flow: &FlowId) -> Result<bool, StoreError>;

    /// Replaces the snapshot with `flow` only if the stored one is at `from_version`
    /// (DESIGN §4 step 4). False when another writer moved it first.
    async fn advance(&self, flow: &Flow, from_version: u64) -> Result<bool, StoreError>;

    /// Stores a time-travel checkpoint at `flow.version` (overwrites one at that version).
    async fn put_checkpoint(&self, flow: &Flow) -> Result<(), StoreError>;

    /// The checkpoint with the greatest version ≤ `version`.
    async fn checkpoint_at_or_before(
        &self,
        flow: &FlowId,
        version: u64,
    ) -> Result<Option<Flow>, StoreError>;

    /// Appends entries with consecutive versions. The unique `(flow_id, version)` and
    /// `(flow_id, op_id)` keys make concurrent appends of the same version lose with
    /// [`Append::Race`] (DESIGN §4 step 3). Each entry is written whole or not at all.
    async fn append(&self, flow: &FlowId, entries: &[LogEntry]) -> Result<Append, StoreError>;

    /// Steps 3 and 4 of one commit: [`append`](Self::append) the entries and, when they
    /// won, [`advance`](Self::advance) the snapshot to `snapshot` from `from` and store
    /// `snapshot` as a checkpoint when `checkpoint`. A backend may do all of it in one
    /// durable write, and share that write between commits of several flows; the entries
    /// are durable when this returns `Done`.
    async fn commit(
        &self,
        flow: &FlowId,
        entries: &[LogEntry],
        snapshot: &Flow,
        from: Base,
        checkpoint: bool,
    ) -> Result<Append, StoreError> {
        let Base::Read(from_version) = from else {
            // Not atomic here: a held head cannot be checked in the same write.
            return Ok(Append::Race);
        };
        if self.append(flow, entries).await? == Append::Race {
            return Ok(Append::Race);
        }
        // Losing this race is fine: a later writer folded these entries already.
        self.advance(snapshot, from_version).await?;
        if checkpoint {
            self.put_checkpoint(snapshot).await?;
        }
        Ok(Append::Done)
    }

    /// Log entries with `after < version ≤ upto`, in version order, at most `limit`.
    async fn log(
        &self,
        flow: &FlowId,
        after: u64,
        upto: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// The logged entries of these op ids (those that exist).
    async fn entries_by_op_id(
        &self,
        flow: &FlowId,
        op_ids: &[OpId],
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Whether a commit may start from a flow this process holds in memory instead of
    /// [`commit_base`](Self::commit_base): true only where [`commit`](Self::commit)
    /// writes the entries and the snapshot in one atomic write that can check the flow is
    /// still at the held version ([`Base::Held`]) — there a duplicate op id or a moved
    /// flow loses the race, and the commit is made again from a read.
    fn holds_heads(&self) -> bool {
        false
    }

    /// What a commit starts from: the snapshot, the log past it, and the logged entries of
    /// `op_ids`. A backend may read them in one round trip (SQLite: one call on its reading
    /// connection, one read transaction); by default, three reads.
    async fn commit_base(
        &self,
        flow: &FlowId,
        op_ids: &[OpId],
    ) -> Result<Option<CommitBase>, StoreError> {
        let Some(snapshot) = self.snapshot(flow).await? else {
            return Ok(None);
        };
        let log = self.log(flow, snapshot.version, None, None).await?;
        let known = if op_ids.is_empty() {
            vec![]
        } else {
            self.entries_by_op_id(flow, op_ids).await?
        };
        Ok(Some(CommitBase {
            snapshot,
            log,
            known,
        }))
    }

    /// The actor's latest entries, newest first, at most `limit`.
    async fn entries_by_actor(
        &self,
        flow: &FlowId,
        actor: &ActorId,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// The entries at these versions (those that exist).
    async fn entries_at(
        &self,
        flow: &FlowId,
        versions: &[u64],
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Which of these versions some logged entry undid.
    async fn undone_among(&self, flow: &FlowId, versions: &[u64]) -> Result<Vec<u64>, StoreError>;
}

/// Executions and their node runs: what the runner and the execution routes use.
#[async_trait]
pub trait Executions: Send + Sync + std::fmt::Debug {
    /// Stores a new execution with its node runs; [`StoreError::ExecutionExists`] if taken.
    async fn insert_execution(&self, execution: &Execution) -> Result<(), StoreError>;

    /// Sets an execution's status (and error), unless it has ended: a finished status is
    /// final. False if it does not exist or has ended.
    async fn set_execution_status(
        &self,
        id: &ExecutionId,
        status: ExecutionStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Sets one node's state in an execution. False if the execution or node is unknown.
    async fn set_node_run(
        &self,
        id: &ExecutionId,
        update: &NodeRunUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Saves `text`, a node's chunks `chunks.start..chunks.end`, as a batch of its own (an
    /// append never rewrites the text so far). A batch saved again is stored once; batches
    /// of one start read as the longest (a save that carries on an earlier one whose
    /// answer was lost). A read concatenates the node's batches in order from its
    /// `log_index`. False if the execution or node is unknown.
    async fn append_node_log(
        &self,
        id: &ExecutionId,
        node: &NodeId,
        text: &str,
        chunks: std::ops::Range<u64>,
    ) -> Result<bool, StoreError>;

    /// An execution with its node runs.
    async fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>, StoreError>;

    /// A flow's executions, newest first, at most `limit`.
    async fn executions(&self, flow: &FlowId, limit: usize) -> Result<Vec<Execution>, StoreError>;

    /// Executions of every flow still `queued` or `running`, oldest first, at most `limit`.
    async fn unfinished_executions(
        &self,
        limit: usize,
    ) -> Result<Vec<(FlowId, ExecutionId)>, StoreError>;
}

/// A node's streamed text from its base (`log`, `log_index`) and its saved batches
/// `(first, end, text)` sorted by first index, longest first: each batch that starts
/// where the text ends carries it on; one that starts before is covered already; one
/// that starts after follows a batch that was never stored (its text is lost; the rest
/// is still shown).
pub(crate) fn join_batches<'a>(
    log: &mut String,
    log_index: &mut u64,
    batches: impl IntoIterator<Item = (u64, u64, &'a str)>,
) {
    for (first, end, text) in batches {
        if end <= *log_index || first < *log_index {
            continue;
        }
        log.push_str(text);
        *log_index = end;
    }
}
