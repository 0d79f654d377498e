//! The flow log as the domain sees it: applied ops with their changes and inverses, and the
//! lookups `undo` and `redo` need.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use flowsync_protocol::{Actor, AppliedOp, Change, ClientId, HistoryEntry, Op, OpId, OpKind};
use serde::{Deserialize, Serialize};

/// One applied op as the store logs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The flow version this op produced.
    pub version: u64,
    /// The client's op id (unique per flow).
    pub op_id: OpId,
    /// Who sent it.
    pub actor: Actor,
    /// The client that sent it, for re-announcing it with its original `SYNC_CANVAS`.
    pub client_id: ClientId,
    /// When it was applied.
    pub ts: DateTime<Utc>,
    /// The op as sent.
    pub op: Op,
    /// Its effect, as broadcast.
    pub changes: Vec<Change>,
    /// The changes that restore the state before it, in the order to apply them.
    pub inverse: Vec<Change>,
    /// For `undo` and `redo`: the version of the entry this one undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<u64>,
}

impl LogEntry {
    /// This entry as `GET /history` shows it.
    pub fn to_history_entry(&self) -> HistoryEntry {
        HistoryEntry {
            version: self.version,
            op_id: self.op_id.clone(),
            actor: self.actor.clone(),
            ts: self.ts,
            op: self.op.clone(),
            changes: self.changes.clone(),
        }
    }

    /// This entry as one op of a `SYNC_CANVAS`.
    pub fn to_applied_op(&self) -> AppliedOp {
        AppliedOp {
            op_id: self.op_id.clone(),
            kind: self.op.type_name().to_owned(),
            version: self.version,
            changes: self.changes.clone(),
        }
    }

    /// Whether this entry is an `undo` (which `redo` reverts; a plain `undo` skips it).
    pub fn is_undo(&self) -> bool {
        matches!(self.op.kind, OpKind::Undo(_))
    }

    /// Whether this entry is an ordinary op (neither `undo` nor `redo`).
    pub fn is_plain(&self) -> bool {
        !matches!(self.op.kind, OpKind::Undo(_) | OpKind::Redo(_))
    }
}

/// The part of a flow's log that `undo` and `redo` may consult: the store loads the
/// requesting actor's recent entries, the entries named by `undo {version}`, and which of
/// them were undone; tests hold whole logs.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Entries by version.
    entries: BTreeMap<u64, LogEntry>,
    /// Versions some entry undid (including entries not loaded here).
    undone: HashSet<u64>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; an `undo`/`redo` entry marks its target as undone.
    pub fn insert(&mut self, entry: LogEntry) {
        if let Some(target) = entry.undo_of {
            self.undone.insert(target);
        }
        self.entries.insert(entry.version, entry);
    }

    /// Records that the entry at `version` was undone by an entry not loaded here.
    pub fn mark_undone(&mut self, version: u64) {
        self.undone.insert(version);
    }

    /// The entry at `version`, if loaded.
    pub fn get(&self, version: u64) -> Option<&LogEntry> {
        self.entries.get(&version)
    }

    /// Whether the entry at `version` was undone.
    pub fn is_undone(&self, version: u64) -> bool {
        self.undone.contains(&version)
    }

    /// Loaded entries, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &LogEntry> {
        self.entries.values()
    }
}

/// A [`History`] seen together with the entries a batch has applied so far.
pub(crate) struct Lookup<'a> {
    pub(crate) history: &'a History,
    pub(crate) batch: &'a [LogEntry],
}

impl<'a> Lookup<'a> {
    pub(crate) fn get(&self, version: u64) -> Option<&'a LogEntry> {
        self.batch
            .iter()
            .find(|e| e.version == version)
            .or_else(|| self.history.get(version))
    }

    pub(crate) fn is_undone(&self, version: u64) -> bool {
        self.history.is_undone(version) || self.batch.iter().any(|e| e.undo_of == Some(version))
    }

    /// The actor's entries, newest first.
    fn by_actor<'s>(&'s self, actor: &'s Actor) -> impl Iterator<Item = &'a LogEntry> + 's {
        self.batch
            .iter()
            .rev()
            .chain(self.history.entries().rev())
            .filter(move |e| e.actor.id == actor.id)
    }

    /// What a plain `undo` by `actor` targets: its latest entry that is not an `undo` and
    /// was not undone.
    pub(crate) fn undo_target(&self, actor: &Actor) -> Option<&'a LogEntry> {
        self.by_actor(actor)
            .find(|e| !e.is_undo() && !self.is_undone(e.version))
    }

    /// What `redo` by `actor` targets: its latest `undo` not yet redone, unless a plain op of
    /// its own came after it (a new edit ends the redo chain, as in every editor).
    pub(crate) fn redo_target(&self, actor: &Actor) -> Option<&'a LogEntry> {
        for e in self.by_actor(actor) {
            if e.is_plain() {
                return None;
            }
            if e.is_undo() && !self.is_undone(e.version) {
                return Some(e);
            }
        }
        None
    }
}
