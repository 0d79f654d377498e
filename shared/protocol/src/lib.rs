//! flowsync wire protocol, v1: every type that crosses a process boundary (DESIGN §3).
//!
//! # Layout
//! - [`ids`]: identifier newtypes, valid by construction.
//! - [`model`]: the canvas — flows, nodes, edges — and actors.
//! - [`ops`]: what clients send to change a canvas, parsed with field paths in errors.
//! - [`events`]: what the gateway streams: the envelope, each event's data, `Change`.
//! - [`execution`]: executions and per-node runs.
//! - [`error`]: the HTTP error body and the request parse error.
//! - [`schema`]: the JSON Schemas generated from these types (committed under `schemas/`).
//! - [`sse`]: reading a `text/event-stream`, event by event, without allocating per event.

pub mod error;
pub mod events;
pub mod execution;
pub mod ids;
pub mod model;
pub mod ops;
pub mod schema;
pub mod sse;

pub use error::{ErrorBody, ErrorDetail, ParseError};
pub use events::{
    AppliedOp, Change, Conflict, ConflictReason, EntityKind, EntityRef, Epoch, Event, EventBody,
    EventId, EventIdError, EventType, ExecutionStatus, ExecutionUpdate, FlowDeleted, HistoryEntry,
    LogStream, NodeStatus, Presence, PresenceAction, Ready, Resync, SyncCanvas, UnknownEventType,
};
pub use execution::{Execution, NodeRun};
pub use ids::{
    ActorId, ClientId, ConnectionId, EdgeId, ExecutionId, FlowId, IdError, NodeId, OpId,
};
pub use model::{
    Actor, ActorKind, Data, Edge, Flow, MAX_DATA_DEPTH, Node, Position, Size, data_depth,
    json_depth,
};
pub use ops::{FieldPath, NewEdge, NewNode, Op, OpKind, OpsRequest, TextTarget};
