//! The flowsync runner (DESIGN §6): takes execution jobs and runs the flow's DAG —
//! independent branches concurrently, upstream outputs fed downstream — publishing
//! `EXECUTION_UPDATE` at every status change and `LOG_STREAM` chunks as nodes stream, and
//! storing state at every transition so a reload shows the truth.
//!
//! # Layout
//! - `flowsync_plan` (its own crate, so the API checks a flow without depending on the
//!   runner): the DAG of a flow — which nodes run, in what order, what feeds what;
//!   refused with the node named when it has a cycle or a node of an unknown kind.
//! - [`kinds`]: node kinds behind a trait; the built-ins `delay`, `template`, `http`, `llm`.
//! - [`runner`]: [`Runner::try_execute_next`] (one job, start to end) and the loop.
//! - [`health`]: whether the loop turns and can take jobs, served for probes.

pub mod health;
pub mod kinds;
pub mod runner;

pub use runner::{Outcome, Runner, RunnerConfig, RunnerError};

/// Queues again the executions the store has `queued` (and with `running_too`, those
/// `running`): when a job queue started empty (the one binary's, in memory) or Redis lost
/// its data. The store is the truth; the runner keeps nodes that already succeeded. Without
/// `running_too`, a running execution's runner is presumed alive and finishes it.
pub async fn requeue(
    store: &flowsync_store::Store,
    jobs: &dyn flowsync_bus::jobs::JobQueue,
    running_too: bool,
) -> Result<usize, RunnerError> {
    const MOST: usize = 100_000;
    let unfinished = store.unfinished_executions(MOST).await?;
    if unfinished.len() == MOST {
        tracing::warn!("{MOST} unfinished executions queued again; any more wait for a restart");
    }
    // Jobs still in the queue are not queued twice (two runners would run one execution).
    let present = jobs.queued_executions().await?;
    let mut queued = 0;
    for (flow, execution) in &unfinished {
        if present.contains(execution) {
            continue;
        }
        if !running_too {
            let status = store.execution(execution).await?.map(|e| e.status);
            if status != Some(flowsync_protocol::ExecutionStatus::Queued) {
                continue;
            }
        }
        jobs.enqueue(flow, execution).await?;
        queued += 1;
    }
    if queued > 0 {
        tracing::info!(count = queued, "unfinished executions queued again");
    }
    Ok(queued)
}
