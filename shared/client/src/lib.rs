//! flowsync's client for agents and workers (DESIGN §3): people's edits and an agent's
//! writes go through the same endpoints and meet the same conflicts.
//!
//! # Layout
//! - [`Client`]: the HTTP endpoints — flows, ops, history, executions, worker events,
//!   presence — repeating what is safe to repeat.
//! - [`EventStream`]: a flow's SSE stream that reconnects and resumes by `Last-Event-ID`.
//! - [`FlowSession`]: a flow's canvas kept in sync (version order, gaps filled, `RESYNC`
//!   reloads) and [`send`](FlowSession::send) awaiting each op's result by op id.
//! - [`TextWriter`]: streams text into a node with batched `text.append` ops.
//! - [`RunView`]: an execution followed from any moment — the stored text, then the live
//!   chunks past it ([`Client::follow_run`]).
//! - [`llm`]: OpenAI-compatible streaming chat completions as tokens.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flowsync_client::Error> {
//! use flowsync_client::{Client, ClientConfig, FlowSession, OpExt, Outcome, SessionConfig, op};
//! use flowsync_protocol::ops::NodeMove;
//! use flowsync_protocol::{FlowId, NodeId, OpKind, Position};
//!
//! let client = Client::new(ClientConfig::new("http://127.0.0.1:8080"))?;
//! let flow = FlowId::parse("demo").unwrap();
//! let session = FlowSession::open(client, flow, SessionConfig::default()).await?;
//! let id = NodeId::parse("n1").unwrap();
//! let version = session.version();
//! let moved = op(OpKind::NodeMove(NodeMove { id, position: Position { x: 10.0, y: 20.0 } }));
//! match session.send_one(moved.based_on(version)).await? {
//!     Outcome::Applied { version } => println!("applied at {version}"),
//!     Outcome::Refused(conflict) => println!("refused: {}", conflict.reason),
//! }
//! # Ok(()) }
//! ```

mod error;
mod http;
pub use flowsync_llm as llm;
mod run;
mod session;
mod stream;
mod writer;

pub use error::Error;
pub use http::{Client, ClientConfig};
pub use run::{RunView, Step};
pub use session::{FlowSession, Outcome, SessionConfig};
pub use stream::EventStream;
pub use writer::{TextWriter, WriteReport};

use flowsync_protocol::{Op, OpId, OpKind};

/// An op with a fresh op id and no base version (last writer wins; see [`OpExt::based_on`]).
pub fn op(kind: OpKind) -> Op {
    Op {
        op_id: new_op_id(),
        base_version: None,
        kind,
    }
}

/// An op from its JSON (`{"type": "node.move", "id": …}`, as an agent's tool call may
/// produce it) with a fresh op id; errors name the offending field.
pub fn op_from_json(mut value: serde_json::Value) -> Result<Op, flowsync_protocol::ParseError> {
    if let Some(fields) = value.as_object_mut() {
        fields.insert(
            "op_id".into(),
            serde_json::Value::String(new_op_id().into()),
        );
    }
    Op::from_value(value)
}

/// A fresh, unique op id.
pub fn new_op_id() -> OpId {
    OpId::parse(uuid::Uuid::new_v4().simple().to_string()).expect("a uuid is a valid op id")
}

/// Builder steps for ops.
pub trait OpExt {
    /// With the flow version the sender saw: refused (`version_mismatch`) if its target
    /// changed since.
    fn based_on(self, version: u64) -> Self;
}

impl OpExt for Op {
    fn based_on(mut self, version: u64) -> Self {
        self.base_version = Some(version);
        self
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
