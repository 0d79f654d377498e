//! A flow as a DAG to execute: checked, ordered, with each node's upstream.

use std::collections::{BTreeSet, HashMap};

use flowsync_protocol::{Flow, NodeId};
use serde_json::Value;

/// Node kinds the runner executes.
pub const KINDS: &[&str] = &["delay", "template", "llm", "http"];

/// Node kinds that only live on the canvas: the runner marks them `skipped` and they do
/// not hold up what they connect to.
pub const CANVAS_ONLY: &[&str] = &["note", "comment", "group", "frame", "text", "image"];

/// Why a flow cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The node sits on a cycle.
    #[error("node {0} is on a cycle: a flow must be acyclic to run")]
    Cycle(NodeId),
    /// No executor for the node's kind, and it is not a canvas-only kind.
    #[error("node {node} has kind {kind:?}, which the runner does not know")]
    UnknownKind {
        /// The node.
        node: NodeId,
        /// Its kind.
        kind: String,
    },
}

impl PlanError {
    /// The node the error is about.
    pub fn node(&self) -> &NodeId {
        match self {
            Self::Cycle(n) | Self::UnknownKind { node: n, .. } => n,
        }
    }
}

/// A checked flow: a topological order and each node's upstream and downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every node, each after all of its upstream (ties in the flow's node order).
    pub order: Vec<NodeId>,
    /// Each node's upstream nodes (deduplicated, in the flow's node order).
    pub upstream: HashMap<NodeId, Vec<NodeId>>,
    /// Each node's downstream nodes.
    pub downstream: HashMap<NodeId, Vec<NodeId>>,
    /// Each node's kind.
    pub kinds: HashMap<NodeId, String>,
}

impl Plan {
    /// Checks `flow` and orders it.
    pub fn new(flow: &Flow) -> Result<Self, PlanError> {
        let position: HashMap<&NodeId, usize> = flow
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.id, i))
            .collect();
        for node in &flow.nodes {
            let kind = node.kind.as_str();
            if !KINDS.contains(&kind) && !CANVAS_ONLY.contains(&kind) {
                return Err(PlanError::UnknownKind {
                    node: node.id.clone(),
                    kind: node.kind.clone(),
                });
            }
        }
        let mut upstream: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        let mut downstream: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for n in &flow.nodes {
            upstream.insert(n.id.clone(), vec![]);
            downstream.insert(n.id.clone(), vec![]);
        }
        for e in &flow.edges {
            // Both ends exist (the canvas guarantees it); a repeated edge counts once.
            if !position.contains_key(&e.source) || !position.contains_key(&e.target) {
                continue;
            }
            let ups = upstream
                .get_mut(&e.target)
                .expect("every node has an entry");
            if !ups.contains(&e.source) {
                ups.push(e.source.clone());
                downstream
                    .get_mut(&e.source)
                    .expect("every node has an entry")
                    .push(e.target.clone());
            }
        }
        for list in upstream.values_mut().chain(downstream.values_mut()) {
            list.sort_by_key(|n| position[n]);
        }
        // Kahn's algorithm, taking ready nodes in the flow's order.
        let mut waiting: HashMap<&NodeId, usize> =
            upstream.iter().map(|(n, ups)| (n, ups.len())).collect();
        let mut ready: BTreeSet<usize> = flow
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| waiting[&n.id] == 0)
            .map(|(i, _)| i)
            .collect();
        let mut order = Vec::with_capacity(flow.nodes.len());
        while let Some(i) = ready.pop_first() {
            let id = &flow.nodes[i].id;
            order.push(id.clone());
            for d in &downstream[id] {
                let w = waiting.get_mut(d).expect("every node has an entry");
                *w -= 1;
                if *w == 0 {
                    ready.insert(position[d]);
                }
            }
        }
        if order.len() < flow.nodes.len() {
            return Err(PlanError::Cycle(on_cycle(flow, &waiting, &upstream)));
        }
        Ok(Self {
            order,
            upstream,
            downstream,
            kinds: flow
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.kind.clone()))
                .collect(),
        })
    }

    /// Whether the node is executed (not canvas-only).
    pub fn runs(&self, node: &NodeId) -> bool {
        self.kinds
            .get(node)
            .is_some_and(|k| KINDS.contains(&k.as_str()))
    }

    /// Every node downstream of `node`, transitively.
    pub fn descendants(&self, node: &NodeId) -> BTreeSet<NodeId> {
        let mut out = BTreeSet::new();
        let mut stack = vec![node.clone()];
        while let Some(n) = stack.pop() {
            for d in &self.downstream[&n] {
                if out.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        out
    }
}

/// A node on a cycle, among those Kahn's algorithm could not order: walk upstream through
/// unordered nodes until one repeats (every unordered node has an unordered upstream).
fn on_cycle(
    flow: &Flow,
    waiting: &HashMap<&NodeId, usize>,
    upstream: &HashMap<NodeId, Vec<NodeId>>,
) -> NodeId {
    let stuck = |n: &NodeId| waiting.get(n).is_some_and(|w| *w > 0);
    let mut at = flow
        .nodes
        .iter()
        .map(|n| &n.id)
        .find(|n| stuck(n))
        .expect("some node is unordered")
        .clone();
    let mut seen = BTreeSet::new();
    while seen.insert(at.clone()) {
        at = upstream[&at]
            .iter()
            .find(|u| stuck(u))
            .expect("an unordered node has an unordered upstream")
            .clone();
    }
    at
}

/// A node's output would pass `runner.max_output_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output_too_large: the output passed {max} bytes (runner.max_output_bytes)")]
pub struct TooLarge {
    /// The bound.
    pub max: usize,
}

/// Renders `{{id}}` placeholders with upstream outputs: a string output as is, any other
/// JSON as its text. A placeholder naming no output is left as written. Stops as soon as
/// the text would pass `max` bytes (chained templates that each double their input would
/// otherwise need memory exponential in the chain's length).
pub fn render(
    template: &str,
    outputs: &HashMap<NodeId, Value>,
    max: usize,
) -> Result<String, TooLarge> {
    let mut out = String::with_capacity(template.len().min(max));
    let push = |out: &mut String, s: &str| {
        if out.len() + s.len() > max {
            return Err(TooLarge { max });
        }
        out.push_str(s);
        Ok(())
    };
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        push(&mut out, &rest[..start])?;
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            push(&mut out, &rest[start..])?;
            return Ok(out);
        };
        let name = after[..end].trim();
        match NodeId::parse(name).ok().and_then(|id| outputs.get(&id)) {
            Some(Value::String(s)) => push(&mut out, s)?,
            Some(v) => push(&mut out, &v.to_string())?,
            None => push(&mut out, &rest[start..start + 2 + end + 2])?,
        }
        rest = &after[end + 2..];
    }
    push(&mut out, rest)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flow(nodes: &[(&str, &str)], edges: &[(&str, &str)]) -> Flow {
        serde_json::from_value(json!({
            "id": "f", "name": "f", "version": 1, "meta": {},
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "nodes": nodes.iter().map(|(id, kind)| json!({"id": id, "type": kind,
                "position": {"x": 0, "y": 0}, "data": {}, "version": 1})).collect::<Vec<_>>(),
            "edges": edges.iter().enumerate().map(|(i, (s, t))| json!({"id": format!("e{i}"),
                "source": s, "target": t, "data": {}, "version": 1})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    #[test]
    fn a_diamond_is_ordered_with_its_upstream() {
        let f = flow(
            &[
                ("d", "template"),
                ("b", "delay"),
                ("a", "template"),
                ("c", "template"),
            ],
            &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
        );
        let plan = Plan::new(&f).unwrap();
        assert_eq!(plan.order, vec![id("a"), id("b"), id("c"), id("d")]);
        assert_eq!(plan.upstream[&id("d")], vec![id("b"), id("c")]);
        assert_eq!(
            plan.descendants(&id("b")).into_iter().collect::<Vec<_>>(),
            vec![id("d")]
        );
    }

    #[test]
    fn cycles_and_unknown_kinds_name_the_node() {
        let f = flow(
            &[
                ("x", "template"),
                ("a", "template"),
                ("b", "delay"),
                ("c", "template"),
            ],
            &[("x", "a"), ("a", "b"), ("b", "c"), ("c", "a")],
        );
        let err = Plan::new(&f).unwrap_err();
        assert!(
            matches!(&err, PlanError::Cycle(n) if ["a", "b", "c"].contains(&n.as_str())),
            "{err}"
        );
        let f = flow(&[("a", "template"), ("z", "teleport")], &[]);
        assert_eq!(
            Plan::new(&f).unwrap_err(),
            PlanError::UnknownKind {
                node: id("z"),
                kind: "teleport".into()
            }
        );
        let f = flow(&[("a", "template"), ("n", "note")], &[("n", "a")]);
        let plan = Plan::new(&f).unwrap();
        assert!(plan.runs(&id("a")) && !plan.runs(&id("n")));
    }

    #[test]
    fn templates_render_upstream_outputs() {
        let outputs = HashMap::from([(id("n1"), json!("world")), (id("n2"), json!({"k": 1}))]);
        assert_eq!(
            render("Hello {{n1}}, {{ n2 }} {{missing}} {{", &outputs, 1000).unwrap(),
            "Hello world, {\"k\":1} {{missing}} {{"
        );
    }

    #[test]
    fn a_render_stops_at_its_bound() {
        let outputs = HashMap::from([(id("t"), json!("x".repeat(600)))]);
        assert_eq!(render("{{t}}", &outputs, 600).unwrap().len(), 600);
        assert_eq!(
            render("{{t}}{{t}}", &outputs, 1000),
            Err(TooLarge { max: 1000 })
        );
        assert_eq!(render("abc", &outputs, 2), Err(TooLarge { max: 2 }));
    }
}
