//! The op engine: turns ops into changes under the conflict rules of DESIGN §3, applies
//! sequential batches, and undoes log entries.

use chrono::{DateTime, Utc};
use flowsync_protocol::ops::{
    EdgeAdd, EdgeDelete, EdgeUpdate, FlowUpdate, NodeAdd, NodeDelete, NodeMove, NodeResize,
    NodeUpdate, TextAppend, TextDelete, TextInsert, TextReplace, Undo,
};
use flowsync_protocol::{
    Actor, Change, ClientId, Conflict, ConflictReason, Data, Edge, EdgeId, EntityKind, EntityRef,
    FieldPath, NewEdge, NewNode, Node, NodeId, Op, OpId, OpKind, Size, TextTarget,
};
use serde_json::Value;

use crate::canvas::{Canvas, field, text_field};
use crate::history::{History, LogEntry, Lookup};
use crate::limits::Limits;
use crate::text;

/// One request's ops and what the domain needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Who sent it (from the token).
    pub actor: &'a Actor,
    /// The sending client.
    pub client_id: &'a ClientId,
    /// The `If-Match` version, for the strict whole-canvas check.
    pub if_match: Option<u64>,
    /// The ops, applied in order.
    pub ops: &'a [Op],
    /// The time to stamp on the log entries.
    pub now: DateTime<Utc>,
}

/// What happened to one op of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum OpOutcome {
    /// Applied: `BatchResult::entries[i]` is its log entry.
    Applied(usize),
    /// Its op_id is already in the log: applied by an earlier request, not again now. The
    /// caller re-announces the logged entry.
    AlreadyApplied,
    /// Refused; nothing of it applied.
    Refused(Conflict),
}

/// The result of [`apply_batch`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchResult {
    /// One outcome per op, in request order.
    pub outcomes: Vec<OpOutcome>,
    /// The log entries of the applied ops, in version order.
    pub entries: Vec<LogEntry>,
}

impl BatchResult {
    /// The refusals, in request order.
    pub fn refusals(&self) -> impl Iterator<Item = &Conflict> {
        self.outcomes.iter().filter_map(|o| match o {
            OpOutcome::Refused(c) => Some(c),
            _ => None,
        })
    }
}

/// What the engine needs besides the canvas and the batch.
#[allow(missing_debug_implementations)]
pub struct Env<'a> {
    /// Size limits.
    pub limits: &'a Limits,
    /// The log entries `undo`/`redo` may consult.
    pub history: &'a History,
    /// Whether an op id is already in the flow's log.
    pub already_applied: &'a dyn Fn(&OpId) -> bool,
    /// Makes an id for a node or edge added without one.
    pub new_id: &'a mut dyn FnMut() -> String,
}

/// Applies a request's ops to `canvas` in order (DESIGN §1.4, §3): ops already in the log
/// are reported, not re-applied; a failed `If-Match` refuses every op; after the first
/// refusal the rest are `skipped`. Each op applies whole or not at all.
pub fn apply_batch(canvas: &mut Canvas, batch: &Batch<'_>, env: &mut Env<'_>) -> BatchResult {
    let mut result = BatchResult {
        outcomes: Vec::with_capacity(batch.ops.len()),
        entries: Vec::new(),
    };
    let start_version = canvas.version;
    // The API answers 413 before this; the domain keeps its own limit all the same.
    let oversized = (batch.ops.len() > env.limits.max_ops_per_request).then(|| {
        format!(
            "the request has {} ops, the limit is {}",
            batch.ops.len(),
            env.limits.max_ops_per_request
        )
    });
    let mut refused = false;
    for op in batch.ops {
        if (env.already_applied)(&op.op_id) {
            result.outcomes.push(OpOutcome::AlreadyApplied);
            continue;
        }
        let refusal = if let Some(message) = &oversized {
            Some(Refusal::invalid(message.clone()))
        } else if let Some(expected) = batch.if_match.filter(|v| *v != start_version) {
            Some(Refusal::new(
                ConflictReason::VersionMismatch,
                format!(
                    "If-Match expects version {expected}, the flow is at version {start_version}"
                ),
                Some(flow_ref(canvas)),
            ))
        } else if refused {
            Some(Refusal::new(
                ConflictReason::Skipped,
                "an earlier op of this request was refused".to_owned(),
                None,
            ))
        } else {
            let lookup = Lookup {
                history: env.history,
                batch: &result.entries,
            };
            match apply_op(canvas, op, batch, env.limits, &lookup, env.new_id) {
                Ok(entry) => {
                    result.entries.push(entry);
                    result
                        .outcomes
                        .push(OpOutcome::Applied(result.entries.len() - 1));
                    None
                }
                Err(refusal) => Some(refusal),
            }
        };
        if let Some(r) = refusal {
            refused = true;
            result.outcomes.push(OpOutcome::Refused(Conflict {
                op_id: op.op_id.clone(),
                client_id: batch.client_id.clone(),
                reason: r.reason,
                message: r.message,
                current_version: canvas.version,
                entity: r.entity,
            }));
        }
    }
    result
}

/// Why one op was refused (the batch adds op id, client and version).
#[derive(Debug)]
struct Refusal {
    reason: ConflictReason,
    message: String,
    entity: Option<EntityRef>,
}

impl Refusal {
    fn new(reason: ConflictReason, message: String, entity: Option<EntityRef>) -> Self {
        Self {
            reason,
            message,
            entity,
        }
    }

    fn invalid(message: String) -> Self {
        Self::new(ConflictReason::Invalid, message, None)
    }
}

fn node_ref(id: &str, node: Option<&Node>) -> EntityRef {
    EntityRef {
        kind: EntityKind::Node,
        id: id.to_owned(),
        version: node.map(|n| n.version),
    }
}

fn edge_ref(id: &str, edge: Option<&Edge>) -> EntityRef {
    EntityRef {
        kind: EntityKind::Edge,
        id: id.to_owned(),
        version: edge.map(|e| e.version),
    }
}

fn flow_ref(canvas: &Canvas) -> EntityRef {
    EntityRef {
        kind: EntityKind::Flow,
        id: canvas.id.to_string(),
        version: Some(canvas.version),
    }
}

/// Applies one op at version `canvas.version + 1`, returning its log entry.
fn apply_op(
    canvas: &mut Canvas,
    op: &Op,
    batch: &Batch<'_>,
    limits: &Limits,
    lookup: &Lookup<'_>,
    new_id: &mut dyn FnMut() -> String,
) -> Result<LogEntry, Refusal> {
    let version = canvas.version + 1;
    if let Some(base) = op.base_version.filter(|b| *b > canvas.version) {
        return Err(Refusal::invalid(format!(
            "base_version {base} is ahead of the flow (version {})",
            canvas.version
        )));
    }
    let (changes, inverse, undo_of) = match &op.kind {
        OpKind::Undo(Undo { version: target }) => {
            let target = match target {
                Some(v) => {
                    let entry = lookup.get(*v).ok_or_else(|| {
                        Refusal::new(
                            ConflictReason::NotFound,
                            format!("no op at version {v} to undo"),
                            None,
                        )
                    })?;
                    if lookup.is_undone(*v) {
                        return Err(Refusal::new(
                            ConflictReason::UndoConflict,
                            format!("the op at version {v} is already undone"),
                            None,
                        ));
                    }
                    entry
                }
                None => lookup.undo_target(batch.actor).ok_or_else(|| {
                    Refusal::new(ConflictReason::NotFound, "nothing to undo".to_owned(), None)
                })?,
            };
            let (changes, inverse) = undo_entry(canvas, target, version)?;
            (changes, inverse, Some(target.version))
        }
        OpKind::Redo(_) => {
            let target = lookup.redo_target(batch.actor).ok_or_else(|| {
                Refusal::new(ConflictReason::NotFound, "nothing to redo".to_owned(), None)
            })?;
            let (changes, inverse) = undo_entry(canvas, target, version)?;
            (changes, inverse, Some(target.version))
        }
        kind => {
            let planner = Planner {
                canvas,
                limits,
                version,
                base: op.base_version,
            };
            let changes = planner.plan(kind, new_id)?;
            let inverse = canvas
                .apply_all(&changes)
                .map_err(|e| Refusal::invalid(e.to_string()))?;
            (changes, inverse, None)
        }
    };
    canvas.version = version;
    Ok(LogEntry {
        version,
        op_id: op.op_id.clone(),
        actor: batch.actor.clone(),
        client_id: batch.client_id.clone(),
        ts: batch.now,
        op: op.clone(),
        changes,
        inverse,
        undo_of,
    })
}

/// Plans the changes of one ordinary op against the canvas, read-only.
struct Planner<'a> {
    canvas: &'a Canvas,
    limits: &'a Limits,
    /// The version the op will produce.
    version: u64,
    /// The op's `base_version`.
    base: Option<u64>,
}

impl Planner<'_> {
    fn plan(
        &self,
        kind: &OpKind,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<Vec<Change>, Refusal> {
        let v = self.version;
        match kind {
            OpKind::NodeAdd(NodeAdd { node }) => self.add_node(node, new_id),
            OpKind::NodeUpdate(NodeUpdate { id, patch, kind }) => {
                let mut node = self.node(id)?.clone();
                if let Some(kind) = kind {
                    self.check_type(kind)?;
                    node.kind.clone_from(kind);
                }
                node.data = merge(&node.data, patch);
                self.check_data(&node.data, "node data")?;
                node.version = v;
                Ok(vec![Change::NodeUpsert { node }])
            }
            OpKind::NodeMove(NodeMove { id, position }) => {
                let mut node = self.node(id)?.clone();
                node.position = *position;
                node.version = v;
                Ok(vec![Change::NodeUpsert { node }])
            }
            OpKind::NodeResize(NodeResize { id, size }) => {
                let mut node = self.node(id)?.clone();
                check_size(Some(size))?;
                node.size = Some(*size);
                node.version = v;
                Ok(vec![Change::NodeUpsert { node }])
            }
            OpKind::NodeDelete(NodeDelete { id }) => {
                self.node(id)?;
                // Edges first, so a client applying the changes in order never holds an edge
                // to a missing node.
                let mut changes: Vec<Change> = self
                    .canvas
                    .edges_touching(id.as_str())
                    .map(|e| Change::EdgeDelete { id: e.id.clone() })
                    .collect();
                changes.push(Change::NodeDelete { id: id.clone() });
                Ok(changes)
            }
            OpKind::EdgeAdd(EdgeAdd { edge }) => self.add_edge(edge, new_id),
            OpKind::EdgeUpdate(EdgeUpdate { id, patch }) => {
                let mut edge = self.edge(id)?.clone();
                edge.data = merge(&edge.data, patch);
                self.check_data(&edge.data, "edge data")?;
                edge.version = v;
                Ok(vec![Change::EdgeUpsert { edge }])
            }
            OpKind::EdgeDelete(EdgeDelete { id }) => {
                self.edge(id)?;
                Ok(vec![Change::EdgeDelete { id: id.clone() }])
            }
            OpKind::FlowUpdate(update) => self.update_flow(update),
            OpKind::TextAppend(TextAppend { id, path, text }) => {
                // Appends never conflict: they apply to the current text, whatever base_version says.
                let node = self.node_unchecked(id)?;
                match text_field(&node.data, path) {
                    Some(current) => {
                        self.splice(node, path, current, text::utf16_len(current), 0, text)
                    }
                    None => self.create_text_field(node, path, text),
                }
            }
            OpKind::TextInsert(TextInsert { id, path, at, text }) => {
                let node = self.node(id)?;
                let current = self.text(node, path)?;
                self.splice(node, path, current, *at, 0, text)
            }
            OpKind::TextDelete(TextDelete { id, path, at, len }) => {
                let node = self.node(id)?;
                let current = self.text(node, path)?;
                self.splice(node, path, current, *at, *len, "")
            }
            OpKind::TextReplace(replace) => self.replace_text(replace),
            OpKind::Undo(_) | OpKind::Redo(_) => {
                unreachable!("undo and redo are applied by apply_op")
            }
        }
    }

    /// `node.add`: a new node, within the limits.
    fn add_node(
        &self,
        new: &NewNode,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<Vec<Change>, Refusal> {
        let v = self.version;
        let id = match &new.id {
            Some(id) => id.clone(),
            None => NodeId::parse(new_id())
                .map_err(|e| Refusal::invalid(format!("generated node id: {e}")))?,
        };
        if let Some(existing) = self.canvas.nodes.get(&id) {
            return Err(Refusal::new(
                ConflictReason::Duplicate,
                format!("node {id} already exists"),
                Some(node_ref(id.as_str(), Some(existing))),
            ));
        }
        if self.canvas.nodes.len() >= self.limits.max_nodes {
            return Err(Refusal::invalid(format!(
                "the flow has {} nodes, the limit",
                self.limits.max_nodes
            )));
        }
        self.check_type(&new.kind)?;
        check_size(new.size.as_ref())?;
        self.check_data(&new.data, "node data")?;
        Ok(vec![Change::NodeUpsert {
            node: Node {
                id,
                kind: new.kind.clone(),
                position: new.position,
                size: new.size,
                data: new.data.clone(),
                version: v,
            },
        }])
    }

    /// `edge.add`: a new edge between existing nodes, within the limits.
    fn add_edge(
        &self,
        new: &NewEdge,
        new_id: &mut dyn FnMut() -> String,
    ) -> Result<Vec<Change>, Refusal> {
        let v = self.version;
        let id = match &new.id {
            Some(id) => id.clone(),
            None => EdgeId::parse(new_id())
                .map_err(|e| Refusal::invalid(format!("generated edge id: {e}")))?,
        };
        if let Some(existing) = self.canvas.edges.get(&id) {
            return Err(Refusal::new(
                ConflictReason::Duplicate,
                format!("edge {id} already exists"),
                Some(edge_ref(id.as_str(), Some(existing))),
            ));
        }
        for end in [&new.source, &new.target] {
            if !self.canvas.nodes.contains_key(end) {
                return Err(Refusal::new(
                    ConflictReason::NotFound,
                    format!("edge {id}: node {end} does not exist"),
                    Some(node_ref(end.as_str(), None)),
                ));
            }
        }
        if self.canvas.edges.len() >= self.limits.max_edges {
            return Err(Refusal::invalid(format!(
                "the flow has {} edges, the limit",
                self.limits.max_edges
            )));
        }
        for handle in [&new.source_handle, &new.target_handle]
            .into_iter()
            .flatten()
        {
            self.check_len(handle, "edge handle")?;
        }
        self.check_data(&new.data, "edge data")?;
        Ok(vec![Change::EdgeUpsert {
            edge: Edge {
                id,
                source: new.source.clone(),
                target: new.target.clone(),
                source_handle: new.source_handle.clone(),
                target_handle: new.target_handle.clone(),
                data: new.data.clone(),
                version: v,
            },
        }])
    }

    /// `flow.update`: the flow's name and meta; conflicts with any change after
    /// `base_version`.
    fn update_flow(&self, update: &FlowUpdate) -> Result<Vec<Change>, Refusal> {
        let FlowUpdate { name, meta_patch } = update;
        // The flow entity changes with every op, so a base_version on flow.update
        // conflicts when anything changed since.
        if let Some(base) = self.base.filter(|b| *b < self.canvas.version) {
            return Err(Refusal::new(
                ConflictReason::VersionMismatch,
                format!(
                    "the flow changed after version {base} (now {})",
                    self.canvas.version
                ),
                Some(flow_ref(self.canvas)),
            ));
        }
        let name = match name {
            Some(name) => {
                if name.is_empty() {
                    return Err(Refusal::invalid("the flow name must not be empty".into()));
                }
                self.check_len(name, "flow name")?;
                name.clone()
            }
            None => self.canvas.name.clone(),
        };
        let meta = match meta_patch {
            Some(patch) => merge(&self.canvas.meta, patch),
            None => self.canvas.meta.clone(),
        };
        self.check_data(&meta, "flow meta")?;
        Ok(vec![Change::FlowUpdate { name, meta }])
    }

    /// `text.replace`: a range, regex matches or a heading's section.
    fn replace_text(&self, replace: &TextReplace) -> Result<Vec<Change>, Refusal> {
        let TextReplace {
            id,
            path,
            target,
            text,
        } = replace;
        match target {
            TextTarget::Range { at, len } => {
                let node = self.node(id)?;
                let current = self.text(node, path)?;
                self.splice(node, path, current, *at, *len, text)
            }
            TextTarget::Regex { pattern, all } => {
                let node = self.node_unchecked(id)?;
                let current = self.text(node, path)?;
                self.replace_regex(node, path, current, pattern, *all, text)
            }
            TextTarget::Heading(heading) => {
                let node = self.node_unchecked(id)?;
                let current = self.text(node, path)?;
                let body = text::section_body(current, heading).ok_or_else(|| {
                    Refusal::new(
                        ConflictReason::NotFound,
                        format!("node {id}: {path} has no heading {heading:?}"),
                        Some(node_ref(id.as_str(), Some(node))),
                    )
                })?;
                // Keep the next heading on its own line.
                let mut insert = text.clone();
                if body.end < current.len() && !insert.is_empty() && !insert.ends_with('\n') {
                    insert.push('\n');
                }
                let at = text::utf16_len(&current[..body.start]);
                let len = text::utf16_len(&current[body]);
                self.splice(node, path, current, at, len, &insert)
            }
        }
    }

    /// The node `id`, checking `base_version` against it.
    fn node(&self, id: &NodeId) -> Result<&Node, Refusal> {
        let node = self.node_unchecked(id)?;
        if let Some(base) = self.base.filter(|b| node.version > *b) {
            return Err(Refusal::new(
                ConflictReason::VersionMismatch,
                format!(
                    "node {id} changed at version {} after base_version {base}",
                    node.version
                ),
                Some(node_ref(id.as_str(), Some(node))),
            ));
        }
        Ok(node)
    }

    /// The node `id`, ignoring `base_version` (for ops that apply to the current state).
    fn node_unchecked(&self, id: &NodeId) -> Result<&Node, Refusal> {
        self.canvas.nodes.get(id).ok_or_else(|| {
            Refusal::new(
                ConflictReason::NotFound,
                format!("node {id} does not exist"),
                Some(node_ref(id.as_str(), None)),
            )
        })
    }

    /// The edge `id`, checking `base_version` against it.
    fn edge(&self, id: &EdgeId) -> Result<&Edge, Refusal> {
        let edge = self.canvas.edges.get(id).ok_or_else(|| {
            Refusal::new(
                ConflictReason::NotFound,
                format!("edge {id} does not exist"),
                Some(edge_ref(id.as_str(), None)),
            )
        })?;
        if let Some(base) = self.base.filter(|b| edge.version > *b) {
            return Err(Refusal::new(
                ConflictReason::VersionMismatch,
                format!(
                    "edge {id} changed at version {} after base_version {base}",
                    edge.version
                ),
                Some(edge_ref(id.as_str(), Some(edge))),
            ));
        }
        Ok(edge)
    }

    /// The string field at `path` of `node`.
    fn text<'n>(&self, node: &'n Node, path: &FieldPath) -> Result<&'n String, Refusal> {
        text_field(&node.data, path).ok_or_else(|| {
            let exists = field(&node.data, path).is_some();
            Refusal::new(
                if exists {
                    ConflictReason::Invalid
                } else {
                    ConflictReason::NotFound
                },
                if exists {
                    format!("node {}: {path} is not a string", node.id)
                } else {
                    format!("node {} has no field {path}", node.id)
                },
                Some(node_ref(node.id.as_str(), Some(node))),
            )
        })
    }

    /// A splice of `current` (the field at `path` of `node`).
    fn splice(
        &self,
        node: &Node,
        path: &FieldPath,
        current: &str,
        at: u64,
        delete: u64,
        insert: &str,
    ) -> Result<Vec<Change>, Refusal> {
        let range = text::byte_range(current, at, delete)
            .map_err(|e| Refusal::invalid(format!("node {}: {path}: {e}", node.id)))?;
        self.check_text_len(node, path, current.len() - range.len() + insert.len())?;
        Ok(vec![Change::NodeSplice {
            id: node.id.clone(),
            path: path.clone(),
            at,
            delete,
            insert: insert.to_owned(),
            version: self.version,
        }])
    }

    /// `text.append` to a field that does not exist yet: creates it, when its parent is an
    /// object. Sent as a whole-node upsert, once; later appends are splices.
    fn create_text_field(
        &self,
        node: &Node,
        path: &FieldPath,
        text: &str,
    ) -> Result<Vec<Change>, Refusal> {
        let tokens: Vec<_> = path.tokens().collect();
        let (last, parents) = tokens.split_last().expect("a field path has a token");
        let mut updated = node.clone();
        let mut parent = &mut updated.data;
        for token in parents {
            parent = match parent.get_mut(token.as_ref()) {
                Some(Value::Object(child)) => child,
                _ => {
                    return Err(Refusal::new(
                        ConflictReason::NotFound,
                        format!("node {} has no object to hold {path}", node.id),
                        Some(node_ref(node.id.as_str(), Some(node))),
                    ));
                }
            };
        }
        if parent.contains_key(last.as_ref()) {
            return Err(Refusal::invalid(format!(
                "node {}: {path} is not a string",
                node.id
            )));
        }
        self.check_text_len(node, path, text.len())?;
        parent.insert(last.to_string(), Value::String(text.to_owned()));
        self.check_data(&updated.data, "node data")?;
        updated.version = self.version;
        Ok(vec![Change::NodeUpsert { node: updated }])
    }

    /// `text.replace` by regex: one splice spanning the first to the last replaced match.
    fn replace_regex(
        &self,
        node: &Node,
        path: &FieldPath,
        current: &str,
        pattern: &str,
        all: bool,
        replacement: &str,
    ) -> Result<Vec<Change>, Refusal> {
        if pattern.len() > self.limits.max_pattern_len {
            return Err(Refusal::invalid(format!(
                "the regex is {} bytes long, the limit is {}",
                pattern.len(),
                self.limits.max_pattern_len
            )));
        }
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| Refusal::invalid(format!("bad regex: {e}")))?;
        let mut matches = re.find_iter(current);
        let first = matches.next().ok_or_else(|| {
            Refusal::new(
                ConflictReason::NotFound,
                format!("node {}: no match for /{pattern}/ in {path}", node.id),
                Some(node_ref(node.id.as_str(), Some(node))),
            )
        })?;
        // One splice from the first to the last replaced match. Matches come from the whole
        // text, so anchors and word boundaries keep their meaning. The replacement is literal
        // (no `$1`): agents send text, not templates.
        let rest = all.then_some(matches).into_iter().flatten();
        let mut insert = String::new();
        let mut cursor = first.start();
        for m in std::iter::once(first).chain(rest) {
            insert.push_str(&current[cursor..m.start()]);
            insert.push_str(replacement);
            cursor = m.end();
        }
        let at = text::utf16_len(&current[..first.start()]);
        let len = text::utf16_len(&current[first.start()..cursor]);
        self.splice(node, path, current, at, len, &insert)
    }

    fn check_type(&self, kind: &str) -> Result<(), Refusal> {
        if kind.is_empty() {
            return Err(Refusal::invalid("the node type must not be empty".into()));
        }
        self.check_len(kind, "node type")
    }

    fn check_len(&self, s: &str, what: &str) -> Result<(), Refusal> {
        if s.len() > self.limits.max_name_len {
            return Err(Refusal::invalid(format!(
                "the {what} is {} bytes long, the limit is {}",
                s.len(),
                self.limits.max_name_len
            )));
        }
        Ok(())
    }

    fn check_data(&self, data: &Data, what: &str) -> Result<(), Refusal> {
        let depth = flowsync_protocol::data_depth(data);
        if depth > flowsync_protocol::MAX_DATA_DEPTH {
            return Err(Refusal::invalid(format!(
                "the {what} nests {depth} levels deep, the limit is {}",
                flowsync_protocol::MAX_DATA_DEPTH
            )));
        }
        let size = json_size(data);
        if size > self.limits.max_data_bytes {
            return Err(Refusal::invalid(format!(
                "the {what} is {size} bytes, the limit is {}",
                self.limits.max_data_bytes
            )));
        }
        Ok(())
    }

    fn check_text_len(&self, node: &Node, path: &FieldPath, len: usize) -> Result<(), Refusal> {
        if len > self.limits.max_data_bytes {
            return Err(Refusal::invalid(format!(
                "node {}: {path} would be {len} bytes, the limit is {}",
                node.id, self.limits.max_data_bytes
            )));
        }
        Ok(())
    }
}

fn check_size(size: Option<&Size>) -> Result<(), Refusal> {
    match size {
        Some(s) if !(s.w >= 0.0 && s.h >= 0.0 && s.w.is_finite() && s.h.is_finite()) => {
            Err(Refusal::invalid(format!(
                "size {}×{} must be finite and not negative",
                s.w, s.h
            )))
        }
        _ => Ok(()),
    }
}

/// RFC 7396 merge of `patch` into a copy of `data`.
fn merge(data: &Data, patch: &Data) -> Data {
    let mut doc = Value::Object(data.clone());
    json_patch::merge(&mut doc, &Value::Object(patch.clone()));
    match doc {
        Value::Object(map) => map,
        _ => unreachable!("merging an object patch into an object yields an object"),
    }
}

/// Serialised size of `data` in bytes, without allocating the JSON text.
pub(crate) fn json_size(data: &Data) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, data).expect("a JSON map serialises");
    count.0
}

/// Undoes `target` at `version`: checks that every entity it touched is still as it left
/// them, then applies its inverse stamped with `version`. Returns the new entry's changes
/// and their inverse. All or nothing.
fn undo_entry(
    canvas: &mut Canvas,
    target: &LogEntry,
    version: u64,
) -> Result<(Vec<Change>, Vec<Change>), Refusal> {
    debug_assert_eq!(target.changes.len(), target.inverse.len());
    let mut forward = Vec::with_capacity(target.inverse.len());
    let mut applied = Vec::with_capacity(target.inverse.len());
    // inverse[i] undoes changes[len - 1 - i]: walk the changes backwards alongside.
    for (change, inverse) in target.changes.iter().rev().zip(&target.inverse) {
        let step = still_as_left(canvas, change, target.version)
            .and_then(|()| {
                let inverse = restamp(inverse, version);
                integrity(canvas, &inverse, target.version)?;
                Ok(inverse)
            })
            .and_then(|inverse| {
                let back = canvas
                    .inverse_of(&inverse)
                    .map_err(|e| undo_conflict(e.to_string(), None))?;
                canvas
                    .apply_change(&inverse)
                    .map_err(|e| undo_conflict(e.to_string(), None))?;
                Ok((inverse, back))
            });
        match step {
            Ok((inverse, back)) => {
                forward.push(inverse);
                applied.push(back);
            }
            Err(refusal) => {
                canvas.roll_back(applied);
                return Err(refusal);
            }
        }
    }
    applied.reverse();
    Ok((forward, applied))
}

fn undo_conflict(message: String, entity: Option<EntityRef>) -> Refusal {
    Refusal::new(ConflictReason::UndoConflict, message, entity)
}

/// Checks that the entity `change` touched is still in the state `change` left it in
/// (content, not version: undoing a later op restores a state without conflict).
fn still_as_left(canvas: &Canvas, change: &Change, at: u64) -> Result<(), Refusal> {
    let changed = |entity: EntityRef| {
        undo_conflict(
            format!(
                "{} {} changed after version {at}",
                kind_name(entity.kind),
                entity.id
            ),
            Some(entity),
        )
    };
    match change {
        Change::NodeUpsert { node } => match canvas.nodes.get(&node.id) {
            Some(now) if same_node(now, node) => Ok(()),
            now => Err(changed(node_ref(node.id.as_str(), now))),
        },
        Change::NodeDelete { id } => match canvas.nodes.get(id) {
            None => Ok(()),
            now => Err(changed(node_ref(id.as_str(), now))),
        },
        Change::EdgeUpsert { edge } => match canvas.edges.get(&edge.id) {
            Some(now) if same_edge(now, edge) => Ok(()),
            now => Err(changed(edge_ref(edge.id.as_str(), now))),
        },
        Change::EdgeDelete { id } => match canvas.edges.get(id) {
            None => Ok(()),
            now => Err(changed(edge_ref(id.as_str(), now))),
        },
        Change::FlowUpdate { name, meta } => {
            if &canvas.name == name && &canvas.meta == meta {
                Ok(())
            } else {
                Err(changed(flow_ref(canvas)))
            }
        }
        Change::NodeSplice {
            id,
            path,
            at: offset,
            insert,
            ..
        } => {
            let node = canvas.nodes.get(id);
            let intact = node
                .and_then(|n| text_field(&n.data, path))
                .is_some_and(|current| {
                    text::byte_range(current, *offset, text::utf16_len(insert))
                        .is_ok_and(|r| &current[r] == insert)
                });
            if intact {
                Ok(())
            } else {
                Err(changed(node_ref(id.as_str(), node)))
            }
        }
    }
}

/// Checks that applying an undo's change keeps the canvas whole: no edge left dangling.
fn integrity(canvas: &Canvas, change: &Change, at: u64) -> Result<(), Refusal> {
    match change {
        Change::NodeDelete { id } => match canvas.edges_touching(id.as_str()).next() {
            Some(edge) => Err(undo_conflict(
                format!(
                    "edge {} was connected to node {id} after version {at}",
                    edge.id
                ),
                Some(edge_ref(edge.id.as_str(), Some(edge))),
            )),
            None => Ok(()),
        },
        Change::EdgeUpsert { edge } => {
            for end in [&edge.source, &edge.target] {
                if !canvas.nodes.contains_key(end) {
                    return Err(undo_conflict(
                        format!(
                            "node {end}, an end of edge {}, was deleted after version {at}",
                            edge.id
                        ),
                        Some(node_ref(end.as_str(), None)),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn kind_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Node => "node",
        EntityKind::Edge => "edge",
        EntityKind::Flow => "flow",
    }
}

/// Nodes equal in everything but their version.
fn same_node(a: &Node, b: &Node) -> bool {
    a.id == b.id
        && a.kind == b.kind
        && a.position == b.position
        && a.size == b.size
        && a.data == b.data
}

/// Edges equal in everything but their version.
fn same_edge(a: &Edge, b: &Edge) -> bool {
    a.id == b.id
        && a.source == b.source
        && a.target == b.target
        && a.source_handle == b.source_handle
        && a.target_handle == b.target_handle
        && a.data == b.data
}

/// `change` with the versions of the entities it writes set to `version`.
fn restamp(change: &Change, version: u64) -> Change {
    let mut change = change.clone();
    match &mut change {
        Change::NodeUpsert { node } => node.version = version,
        Change::EdgeUpsert { edge } => edge.version = version,
        Change::NodeSplice { version: v, .. } => *v = version,
        Change::NodeDelete { .. } | Change::EdgeDelete { .. } | Change::FlowUpdate { .. } => {}
    }
    change
}
