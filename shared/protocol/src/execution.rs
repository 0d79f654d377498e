//! Executions as `GET /v1/flows/{id}/executions[/{eid}]` shows them (DESIGN §6).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::{ExecutionStatus, NodeStatus};
use crate::ids::{ExecutionId, FlowId, NodeId};

/// One run of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Execution {
    /// The execution's id.
    pub id: ExecutionId,
    /// The flow it runs.
    pub flow_id: FlowId,
    /// The flow version it runs.
    pub flow_version: u64,
    /// Where it is.
    pub status: ExecutionStatus,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Per-node state, in the flow's node order.
    pub nodes: Vec<NodeRun>,
}

/// One node's part of an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeRun {
    /// The node.
    pub node_id: NodeId,
    /// Where it is.
    pub status: NodeStatus,
    /// Its output, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Everything it streamed so far (`LOG_STREAM` chunks, concatenated), stored as it
    /// streams: a chunk is stored before it is published.
    #[serde(default)]
    pub log: String,
    /// The chunks `log` holds: the `index` of the next `LOG_STREAM` chunk of this node. A
    /// client that reads the execution mid-run shows `log`, then appends the chunks whose
    /// index is at least this — nothing missing, nothing twice.
    #[serde(default)]
    pub log_index: u64,
}
