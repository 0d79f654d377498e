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

pub mod kinds;
pub mod plan;
pub mod runner;

pub use runner::{Outcome, Runner, RunnerConfig};

/// The runner process's settings (`flowsync_config::load`: defaults, `FLOWSYNC_CONFIG`,
/// `FLOWSYNC_*` variables — the API's `store`, `bus`, `bus_tuning` and `jobs` sections).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Where flows and executions are stored.
    pub store: flowsync_store::StoreBackend,
    /// Store settings.
    pub write_path: flowsync_store::StoreConfig,
    /// Where events go and jobs come from.
    pub bus: flowsync_bus::BusBackend,
    /// Bus settings.
    pub bus_tuning: flowsync_bus::BusConfig,
    /// Presence settings (unused by the runner; accepted so one file serves every service).
    pub presence: flowsync_bus::presence::PresenceConfig,
    /// The job queue.
    pub jobs: flowsync_bus::jobs::JobsConfig,
    /// The runner.
    pub runner: RunnerConfig,
}
