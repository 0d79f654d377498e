//! The flowsync runner (DESIGN §6): takes execution jobs and runs the flow's DAG —
//! independent branches concurrently, upstream outputs fed downstream — publishing
//! `EXECUTION_UPDATE` at every status change and `LOG_STREAM` chunks as nodes stream, and
//! storing state at every transition so a reload shows the truth.
//!
//! # Layout
//! - [`plan`]: the DAG of a flow — which nodes run, in what order, what feeds what;
//!   refused with the node named when it has a cycle or a node of an unknown kind. Pure:
//!   the API checks a flow with it before it queues an execution.
//! - [`kinds`]: node kinds behind a trait; the built-ins `delay`, `template`, `http`, `llm`.
//! - [`runner`]: [`Runner::try_execute_next`] (one job, start to end) and the loop.
//! - [`health`]: whether the loop turns and can take jobs, served for probes.

pub mod health;
pub mod kinds;
pub mod plan;
pub mod runner;

pub use runner::{Outcome, Runner, RunnerConfig};
