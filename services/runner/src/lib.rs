//! The flowsync runner (DESIGN §6): takes execution jobs and runs the flow's DAG.
//!
//! # Layout
//! - [`plan`]: the DAG of a flow — which nodes run, in what order, what feeds what;
//!   refused with the node named when it has a cycle or a node of an unknown kind. Pure:
//!   the API checks a flow with it before it queues an execution.

pub mod plan;
