//! The canvas model: flows, nodes, edges and the actors that change them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ActorId, EdgeId, FlowId, NodeId};

/// Free-form JSON object carried by nodes, edges and flows (`data`, `meta`).
pub type Data = serde_json::Map<String, serde_json::Value>;

/// How deeply `value` nests (a scalar is 0, `[]` and `{}` are 1, `[[1]]` is 2), counted
/// without recursion, so a value built deeper than any parser allows cannot overflow
/// the stack here.
pub fn json_depth(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(fields) => {
                deepest = deepest.max(depth + 1);
                stack.extend(fields.values().map(|f| (f, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// How deeply a `data` or `meta` object nests (the object itself is 1).
pub fn data_depth(data: &Data) -> usize {
    1 + data.values().map(json_depth).max().unwrap_or(0)
}

/// The deepest a node's or edge's `data`, a flow's `meta` or a node's output may nest
/// (the object itself is 1). Events wrap data in about eight more levels, and the
/// project's clients parse with serde_json's and browsers' defaults (128 levels): 32
/// leaves room to spare.
pub const MAX_DATA_DEPTH: usize = 32;

/// A flow: the canvas as stored and served by `GET /v1/flows/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The flow's id.
    pub id: FlowId,
    /// Display name.
    pub name: String,
    /// Number of ops applied so far: 0 at creation, +1 per applied op. ETag `W/"<version>"`.
    pub version: u64,
    /// Nodes in insertion order.
    pub nodes: Vec<Node>,
    /// Edges in insertion order.
    pub edges: Vec<Edge>,
    /// Free-form flow metadata.
    #[serde(default)]
    pub meta: Data,
    /// When the flow was created.
    pub created_at: DateTime<Utc>,
    /// When the flow last changed.
    pub updated_at: DateTime<Utc>,
}

/// A point on the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Horizontal coordinate.
    pub x: f64,
    /// Vertical coordinate.
    pub y: f64,
}

/// A node's extent on the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Width, ≥ 0.
    pub w: f64,
    /// Height, ≥ 0.
    pub h: f64,
}

/// A node of the canvas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique within the flow.
    pub id: NodeId,
    /// The node's kind (`llm`, `template`, `note`, …): the runner picks its executor by it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the node sits.
    pub position: Position,
    /// Optional extent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Free-form node configuration and content.
    #[serde(default)]
    pub data: Data,
    /// The flow version at which this node last changed.
    pub version: u64,
}

/// An edge between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Unique within the flow.
    pub id: EdgeId,
    /// The upstream node.
    pub source: NodeId,
    /// The downstream node.
    pub target: NodeId,
    /// Which output of the source, when it has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_handle: Option<String>,
    /// Which input of the target, when it has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_handle: Option<String>,
    /// Free-form edge data.
    #[serde(default)]
    pub data: Data,
    /// The flow version at which this edge last changed.
    pub version: u64,
}

/// What kind of party an actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person in a browser.
    User,
    /// An LLM agent: an ordinary client (DESIGN §1.3).
    Agent,
    /// A flow runner.
    Worker,
    /// flowsync itself.
    System,
}

/// Who caused an event: taken from the token, never from the request body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The token's subject.
    pub id: ActorId,
    /// Person, agent, worker or system.
    pub kind: ActorKind,
    /// Display name.
    pub name: String,
}

impl Actor {
    /// The actor flowsync itself acts as.
    pub fn system() -> Self {
        Self {
            id: ActorId::parse("system").expect("valid id"),
            kind: ActorKind::System,
            name: "flowsync".into(),
        }
    }
}
