//! The canvas state, the dumb reducer that applies [`Change`]s to it, and the inverse of a
//! change (what restores the state before it).

use chrono::{DateTime, Utc};
use flowsync_protocol::{Change, Data, Edge, EdgeId, FieldPath, Flow, FlowId, Node, NodeId};
use indexmap::IndexMap;
use serde_json::Value;

use crate::text::{self, TextError};

/// A flow's canvas in memory: nodes and edges by id, in insertion order.
///
/// Invariants (kept by [`Canvas::from_flow`] and the op engine; the reducer trusts its
/// input like a client does): every key equals its entity's id; every edge's ends exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    /// The flow's id.
    pub(crate) id: FlowId,
    /// Display name.
    pub(crate) name: String,
    /// Applied ops so far.
    pub(crate) version: u64,
    /// Nodes by id, in insertion order (an upsert of an existing node keeps its place).
    pub(crate) nodes: IndexMap<NodeId, Node>,
    /// Edges by id, in insertion order.
    pub(crate) edges: IndexMap<EdgeId, Edge>,
    /// Free-form metadata.
    pub(crate) meta: Data,
}

/// A change that cannot apply to this canvas: its target is missing or the splice is out
/// of range. The server never emits one; seeing it means the log and the canvas disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReduceError {
    /// A node named by a change does not exist.
    #[error("node {0} does not exist")]
    NoNode(NodeId),
    /// An edge named by a change does not exist.
    #[error("edge {0} does not exist")]
    NoEdge(EdgeId),
    /// A splice's path does not lead to a string.
    #[error("node {id}: {path} is not a string field")]
    NotText {
        /// The node.
        id: NodeId,
        /// The path.
        path: FieldPath,
    },
    /// A splice's range is not valid in the text.
    #[error("node {id}: {path}: {err}")]
    Text {
        /// The node.
        id: NodeId,
        /// The path.
        path: FieldPath,
        /// What is wrong with the range.
        err: TextError,
    },
}

/// A stored flow that breaks the canvas invariants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// Two nodes share an id.
    #[error("node id {0} appears twice")]
    DuplicateNode(NodeId),
    /// Two edges share an id.
    #[error("edge id {0} appears twice")]
    DuplicateEdge(EdgeId),
    /// An edge names a node that does not exist.
    #[error("edge {edge} refers to missing node {node}")]
    DanglingEdge {
        /// The edge.
        edge: EdgeId,
        /// The missing node.
        node: NodeId,
    },
}

impl Canvas {
    /// An empty canvas at version 0.
    pub fn new(id: FlowId, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            version: 0,
            nodes: IndexMap::new(),
            edges: IndexMap::new(),
            meta: Data::new(),
        }
    }

    /// Builds a canvas from a stored or received flow, checking its invariants.
    pub fn from_flow(flow: Flow) -> Result<Self, FlowError> {
        let mut nodes = IndexMap::with_capacity(flow.nodes.len());
        for node in flow.nodes {
            if let Some(dup) = nodes.insert(node.id.clone(), node) {
                return Err(FlowError::DuplicateNode(dup.id));
            }
        }
        let mut edges = IndexMap::with_capacity(flow.edges.len());
        for edge in flow.edges {
            for end in [&edge.source, &edge.target] {
                if !nodes.contains_key(end) {
                    return Err(FlowError::DanglingEdge {
                        edge: edge.id.clone(),
                        node: end.clone(),
                    });
                }
            }
            if let Some(dup) = edges.insert(edge.id.clone(), edge) {
                return Err(FlowError::DuplicateEdge(dup.id));
            }
        }
        Ok(Self {
            id: flow.id,
            name: flow.name,
            version: flow.version,
            nodes,
            edges,
            meta: flow.meta,
        })
    }

    /// The wire form of this canvas, with the store's timestamps.
    pub fn to_flow(&self, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Flow {
        Flow {
            id: self.id.clone(),
            name: self.name.clone(),
            version: self.version,
            nodes: self.nodes.values().cloned().collect(),
            edges: self.edges.values().cloned().collect(),
            meta: self.meta.clone(),
            created_at,
            updated_at,
        }
    }

    /// The flow's id.
    pub fn id(&self) -> &FlowId {
        &self.id
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of ops applied so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The flow's metadata.
    pub fn meta(&self) -> &Data {
        &self.meta
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// An edge by id.
    pub fn edge(&self, id: &str) -> Option<&Edge> {
        self.edges.get(id)
    }

    /// The string at `path` (a JSON pointer into `data`) of a node, if both exist.
    pub fn text(&self, node: &str, path: &FieldPath) -> Option<&str> {
        text_field(&self.nodes.get(node)?.data, path).map(String::as_str)
    }

    /// Nodes in insertion order.
    pub fn nodes(&self) -> impl ExactSizeIterator<Item = &Node> {
        self.nodes.values()
    }

    /// Edges in insertion order.
    pub fn edges(&self) -> impl ExactSizeIterator<Item = &Edge> {
        self.edges.values()
    }

    /// Edges with `node` at either end, in insertion order.
    pub fn edges_touching<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges
            .values()
            .filter(move |e| e.source.as_str() == node || e.target.as_str() == node)
    }

    /// Applies the changes of one applied op and moves to its `version`: what a client does
    /// with each op of a `SYNC_CANVAS`, and what the store does to fold the log.
    pub fn apply_applied(&mut self, version: u64, changes: &[Change]) -> Result<(), ReduceError> {
        for change in changes {
            self.apply_change(change)?;
        }
        self.version = version;
        Ok(())
    }

    /// The dumb reducer: applies one change (upsert, delete, splice) with no domain logic.
    /// On error nothing changed.
    pub fn apply_change(&mut self, change: &Change) -> Result<(), ReduceError> {
        match change {
            Change::NodeUpsert { node } => {
                self.nodes.insert(node.id.clone(), node.clone());
            }
            Change::NodeDelete { id } => {
                self.nodes
                    .shift_remove(id)
                    .ok_or_else(|| ReduceError::NoNode(id.clone()))?;
            }
            Change::EdgeUpsert { edge } => {
                self.edges.insert(edge.id.clone(), edge.clone());
            }
            Change::EdgeDelete { id } => {
                self.edges
                    .shift_remove(id)
                    .ok_or_else(|| ReduceError::NoEdge(id.clone()))?;
            }
            Change::FlowUpdate { name, meta } => {
                self.name.clone_from(name);
                self.meta.clone_from(meta);
            }
            Change::NodeSplice {
                id,
                path,
                at,
                delete,
                insert,
                version,
            } => {
                let node = self
                    .nodes
                    .get_mut(id)
                    .ok_or_else(|| ReduceError::NoNode(id.clone()))?;
                let text =
                    text_field_mut(&mut node.data, path).ok_or_else(|| ReduceError::NotText {
                        id: id.clone(),
                        path: path.clone(),
                    })?;
                text::splice(text, *at, *delete, insert).map_err(|err| ReduceError::Text {
                    id: id.clone(),
                    path: path.clone(),
                    err,
                })?;
                node.version = *version;
            }
        }
        Ok(())
    }

    /// The change that undoes `change` when applied right after it. Computed from the state
    /// before `change` applies; carries the old entity versions, so it restores exactly.
    pub fn inverse_of(&self, change: &Change) -> Result<Change, ReduceError> {
        Ok(match change {
            Change::NodeUpsert { node } => match self.nodes.get(&node.id) {
                Some(old) => Change::NodeUpsert { node: old.clone() },
                None => Change::NodeDelete {
                    id: node.id.clone(),
                },
            },
            Change::NodeDelete { id } => Change::NodeUpsert {
                node: self
                    .nodes
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ReduceError::NoNode(id.clone()))?,
            },
            Change::EdgeUpsert { edge } => match self.edges.get(&edge.id) {
                Some(old) => Change::EdgeUpsert { edge: old.clone() },
                None => Change::EdgeDelete {
                    id: edge.id.clone(),
                },
            },
            Change::EdgeDelete { id } => Change::EdgeUpsert {
                edge: self
                    .edges
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ReduceError::NoEdge(id.clone()))?,
            },
            Change::FlowUpdate { .. } => Change::FlowUpdate {
                name: self.name.clone(),
                meta: self.meta.clone(),
            },
            Change::NodeSplice {
                id,
                path,
                at,
                delete,
                insert,
                ..
            } => {
                let node = self
                    .nodes
                    .get(id)
                    .ok_or_else(|| ReduceError::NoNode(id.clone()))?;
                let text = text_field(&node.data, path).ok_or_else(|| ReduceError::NotText {
                    id: id.clone(),
                    path: path.clone(),
                })?;
                let range =
                    text::byte_range(text, *at, *delete).map_err(|err| ReduceError::Text {
                        id: id.clone(),
                        path: path.clone(),
                        err,
                    })?;
                Change::NodeSplice {
                    id: id.clone(),
                    path: path.clone(),
                    at: *at,
                    delete: text::utf16_len(insert),
                    insert: text[range].to_owned(),
                    version: node.version,
                }
            }
        })
    }

    /// Applies `changes` in order and returns their inverse (in the order that undoes them).
    /// All or nothing: on error the canvas is as before.
    pub(crate) fn apply_all(&mut self, changes: &[Change]) -> Result<Vec<Change>, ReduceError> {
        let mut inverse = Vec::with_capacity(changes.len());
        for change in changes {
            let step = self
                .inverse_of(change)
                .and_then(|inv| self.apply_change(change).map(|()| inv));
            match step {
                // Kept in application order until the end, so a rollback pops the latest first.
                Ok(inv) => inverse.push(inv),
                Err(err) => {
                    self.roll_back(inverse);
                    return Err(err);
                }
            }
        }
        inverse.reverse();
        Ok(inverse)
    }

    /// Undoes already-applied changes given their inverses in application order.
    pub(crate) fn roll_back(&mut self, mut applied_inverses: Vec<Change>) {
        while let Some(inv) = applied_inverses.pop() {
            self.apply_change(&inv)
                .expect("the inverse of a change just applied applies");
        }
    }
}

/// The value at `path` inside `data`.
pub(crate) fn field<'a>(data: &'a Data, path: &FieldPath) -> Option<&'a Value> {
    let mut tokens = path.tokens();
    let mut cur = data.get(tokens.next()?.as_ref())?;
    for token in tokens {
        cur = child(cur, &token)?;
    }
    Some(cur)
}

/// The string at `path` inside `data`, if it is one.
pub(crate) fn text_field<'a>(data: &'a Data, path: &FieldPath) -> Option<&'a String> {
    match field(data, path)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The string at `path` inside `data`, mutably.
pub(crate) fn text_field_mut<'a>(data: &'a mut Data, path: &FieldPath) -> Option<&'a mut String> {
    let mut tokens = path.tokens();
    let mut cur = data.get_mut(tokens.next()?.as_ref())?;
    for token in tokens {
        cur = child_mut(cur, &token)?;
    }
    match cur {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn child<'a>(v: &'a Value, token: &str) -> Option<&'a Value> {
    match v {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token)?),
        _ => None,
    }
}

fn child_mut<'a>(v: &'a mut Value, token: &str) -> Option<&'a mut Value> {
    match v {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(array_index(token)?),
        _ => None,
    }
}

/// An RFC 6901 array index: digits, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    token.parse().ok()
}
