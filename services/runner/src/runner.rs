//! Executing jobs: [`Runner::try_execute_next`] takes one job and runs its execution to
//! the end; [`Runner::run`] is the loop around it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowsync_bus::jobs::{Job, JobQueue};
use flowsync_bus::{Bus, BusError, Item, Subscription};
use flowsync_protocol::{
    Actor, ActorId, ActorKind, Event, EventBody, EventType, Execution, ExecutionId,
    ExecutionStatus, ExecutionUpdate, Flow, FlowId, LogStream, Node, NodeId, NodeStatus,
};
use flowsync_store::{NodeRunUpdate, Store, StoreError};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use flowsync_config::RunnerConfig;

use crate::health::Health;
use crate::kinds::{LogSink, NodeInput, NodeKind, builtins};
use flowsync_plan::{Plan, TooLarge};
use flowsync_protocol::MAX_DATA_DEPTH;

/// The longest wait between two attempts of a node.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Bytes of an output's preview in events (when it is announced by reference).
const PREVIEW: usize = 1024;

/// The start of an output's text (a string's own, any other value's JSON), at most
/// [`PREVIEW`] bytes, cut at a character boundary.
fn preview(output: &Value) -> String {
    let text = match output {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    };
    let mut end = PREVIEW.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One execution of `flow` ended on this runner: the flow has room for another.
fn release(per_flow: &mut HashMap<FlowId, usize>, flow: &FlowId) {
    if let Some(count) = per_flow.get_mut(flow) {
        *count -= 1;
        if *count == 0 {
            per_flow.remove(flow);
        }
    }
}

/// The bytes of a node's output: a string's own, any other value's JSON.
fn output_bytes(output: &Value) -> usize {
    match output {
        Value::String(s) => s.len(),
        Value::Null => 0,
        other => serde_json::to_vec(other).map_or(usize::MAX, |v| v.len()),
    }
}

/// What a runner fails on: its backends (the job stays unacknowledged and is retried).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus or the queue failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No job came within the poll time.
    Idle,
    /// A job ran to its end: the execution's final status.
    Finished(ExecutionId, ExecutionStatus),
}

/// A flow runner.
#[derive(Clone)]
pub struct Runner {
    /// Names this runner in the job queue.
    id: String,
    store: Store,
    bus: Arc<dyn Bus>,
    jobs: Arc<dyn JobQueue>,
    kinds: Arc<HashMap<String, Arc<dyn NodeKind>>>,
    config: RunnerConfig,
    health: Arc<Health>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("id", &self.id).finish()
    }
}

/// The actor of the events a runner publishes.
fn worker() -> Actor {
    Actor {
        id: ActorId::parse("runner").expect("valid id"),
        kind: ActorKind::Worker,
        name: "runner".into(),
    }
}

impl Runner {
    /// A runner with the built-in node kinds.
    pub fn new(
        store: Store,
        bus: Arc<dyn Bus>,
        jobs: Arc<dyn JobQueue>,
        config: RunnerConfig,
    ) -> Self {
        Self {
            id: format!("runner-{}", uuid::Uuid::new_v4().simple()),
            kinds: Arc::new(builtins(&config)),
            health: Arc::new(Health::new(config.poll.max(config.touch_every))),
            store,
            bus,
            jobs,
            config,
        }
    }

    /// Whether its loop turns and its last step succeeded (for the probes).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The store it runs executions from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The bus it publishes on.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Runs jobs until `stop` resolves: it stops waiting for a job at once, and finishes
    /// the jobs it runs first (a rollout does not hand them to another runner half done).
    ///
    /// Up to `max_executions` run at once, at most `max_executions_per_flow` of one flow.
    /// A job of a flow at its cap is *held*: kept claimed (touched like a running one) and
    /// started as soon as one of that flow's executions ends, while the runner goes on
    /// taking other flows' jobs. Held jobs are bounded too (16 × `max_executions`; past
    /// that a capped job goes back to the queue's tail); a held job whose touch fails is
    /// let go (it is not surely ours any more); on stop they go back to the queue.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let most = self.config.max_executions.max(1);
        // Held jobs are only ids: a flow's backlog may fill many before the runner would
        // stop seeing other flows' jobs behind it; past this, capped jobs go back.
        let most_held = most * 16;
        let per_flow_cap = self.config.max_executions_per_flow.max(1);
        let slots = Arc::new(tokio::sync::Semaphore::new(most));
        let mut per_flow: HashMap<FlowId, usize> = HashMap::new();
        let mut held: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
        let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<FlowId>();
        let mut touch = tokio::time::interval(self.config.touch_every);
        touch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            while let Ok(flow) = ended_rx.try_recv() {
                release(&mut per_flow, &flow);
            }
            // Held jobs whose flow has room go first, oldest first.
            while let Some(at) = held
                .iter()
                .position(|j| per_flow.get(&j.flow).copied().unwrap_or(0) < per_flow_cap)
            {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let job = held.remove(at).expect("found above");
                *per_flow.entry(job.flow.clone()).or_default() += 1;
                self.spawn_job(&mut running, job, slot, ended_tx.clone());
            }
            let slot = tokio::select! {
                biased;
                () = &mut stop => break,
                Some(flow) = ended_rx.recv() => {
                    release(&mut per_flow, &flow);
                    continue;
                }
                _ = touch.tick(), if !held.is_empty() => {
                    let mut kept = std::collections::VecDeque::with_capacity(held.len());
                    for job in held.drain(..) {
                        match self.jobs.touch(&self.id, &job).await {
                            Ok(()) => kept.push_back(job),
                            // Not ours for sure any more (Redis lost it, or it went idle):
                            // let it go, whoever gets it runs it — never two of us.
                            Err(e) => tracing::warn!(error = %e, "a held job was let go"),
                        }
                    }
                    held = kept;
                    continue;
                }
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            };
            let taken = tokio::select! {
                biased;
                () = &mut stop => break,
                taken = self.take() => taken,
            };
            match taken {
                Ok(Some(job)) => {
                    let count = per_flow.entry(job.flow.clone()).or_default();
                    if *count < per_flow_cap {
                        *count += 1;
                        self.spawn_job(&mut running, job, slot, ended_tx.clone());
                    } else if held.len() < most_held {
                        held.push_back(job);
                    } else {
                        // Back to the queue's tail; a moment's pause so a queue of nothing
                        // but capped jobs is not spun through.
                        self.hand_back(&job).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(None) => self.health.turned(true),
                Err(e) => {
                    self.health.turned(false);
                    tracing::warn!(error = %e, "taking a job failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // Held jobs to another runner now, rather than after the idle timeout.
        for job in held {
            self.hand_back(&job).await;
        }
        while running.join_next().await.is_some() {}
    }

    /// Puts a taken job back at the queue's tail for any runner: queued again first, then
    /// acknowledged (a crash in between may run it twice, never lose it). If that fails it
    /// is still claimed, and comes back after the idle timeout.
    async fn hand_back(&self, job: &Job) {
        let handed = async {
            self.jobs.enqueue(&job.flow, &job.execution).await?;
            self.jobs.ack(job).await
        };
        if let Err(e) = handed.await {
            tracing::warn!(error = %e, "a job goes back to the queue after the idle timeout");
        }
    }

    /// Runs a job on its own task, holding `slot` until it ends; then says which flow
    /// has room again (see [`release`]).
    fn spawn_job(
        &self,
        running: &mut JoinSet<()>,
        job: Job,
        slot: tokio::sync::OwnedSemaphorePermit,
        ended: tokio::sync::mpsc::UnboundedSender<FlowId>,
    ) {
        /// Gives the slot back and says the flow has room, however the job ends (a
        /// panic included).
        struct Ended {
            flow: Option<FlowId>,
            ended: tokio::sync::mpsc::UnboundedSender<FlowId>,
            slot: Option<tokio::sync::OwnedSemaphorePermit>,
        }
        impl Drop for Ended {
            fn drop(&mut self) {
                // The slot first: the runner may start a held job as soon as it hears.
                drop(self.slot.take());
                if let Some(flow) = self.flow.take() {
                    let _ = self.ended.send(flow);
                }
            }
        }
        let runner = self.clone();
        let done = Ended {
            flow: Some(job.flow.clone()),
            ended,
            slot: Some(slot),
        };
        running.spawn(async move {
            let _done = done;
            let result = runner.run_job(job).await;
            runner.health.turned(result.is_ok());
            if let Err(e) = result {
                tracing::warn!(error = %e, "job failed; it will be retried");
            }
        });
    }

    /// Takes one job (waiting up to the poll time) and runs it to its end, keeping it
    /// claimed meanwhile; acknowledges it once its outcome is stored.
    pub async fn try_execute_next(&self) -> Result<Outcome, RunnerError> {
        match self.take().await? {
            Some(job) => self.run_job(job).await,
            None => Ok(Outcome::Idle),
        }
    }

    /// The next job, waiting up to the poll time. When the queue was lost and made anew
    /// (Redis lost its data), the store's queued executions are queued again first.
    async fn take(&self) -> Result<Option<Job>, RunnerError> {
        let job = self.jobs.take(&self.id, self.config.poll).await;
        if self.jobs.take_lost() {
            crate::requeue(&self.store, &*self.jobs, false).await?;
        }
        Ok(job?)
    }

    /// Runs a taken job to its end and acknowledges it.
    async fn run_job(&self, job: Job) -> Result<Outcome, RunnerError> {
        tracing::info!(runner = %self.id, flow = %job.flow, execution = %job.execution, "running an execution");
        // Touched while it runs, in this future: if the runner dies, the touching stops
        // with it and the job goes to another runner after the idle timeout.
        let keepalive = async {
            loop {
                tokio::time::sleep(self.config.touch_every).await;
                let touched = self.jobs.touch(&self.id, &job).await;
                self.health.turned(touched.is_ok());
                if let Err(e) = touched {
                    tracing::warn!(error = %e, "could not keep the job claimed");
                }
            }
        };
        let status = tokio::select! {
            result = self.execute(&job) => result?,
            () = keepalive => unreachable!("the keepalive loops forever"),
        };
        self.jobs.ack(&job).await?;
        Ok(Outcome::Finished(job.execution, status))
    }

    /// Runs one execution; returns its final status.
    async fn execute(&self, job: &Job) -> Result<ExecutionStatus, RunnerError> {
        // Subscribe before reading the execution, so a cancel in between is seen.
        let sub = self.bus.subscribe(&job.flow).await?;
        let Some(execution) = self.store.execution(&job.execution).await? else {
            return Ok(ExecutionStatus::Failed);
        };
        let mut run = Run::new(self, job, execution);
        if run.execution.status == ExecutionStatus::Cancelled {
            run.cancel_rest().await?;
            return Ok(ExecutionStatus::Cancelled);
        }
        if matches!(
            run.execution.status,
            ExecutionStatus::Succeeded | ExecutionStatus::Failed
        ) {
            return Ok(run.execution.status);
        }
        let flow = self
            .store
            .flow_at(&job.flow, run.execution.flow_version)
            .await?;
        let plan = match flow.as_ref().map(Plan::new) {
            Some(Ok(plan)) => plan,
            Some(Err(e)) => {
                return run
                    .finish(ExecutionStatus::Failed, Some(e.to_string()))
                    .await;
            }
            None => {
                let why = "the flow no longer exists".to_owned();
                return run.finish(ExecutionStatus::Failed, Some(why)).await;
            }
        };
        let flow = flow.expect("checked above");
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(watch_cancel(
            sub,
            self.store.clone(),
            job.execution.clone(),
            cancel.clone(),
        ));
        let limit = self.config.execution_timeout;
        let result = match tokio::time::timeout(limit, run.dag(&flow, &plan, &cancel)).await {
            Ok(result) => result,
            // The DAG's node tasks are aborted with it; what they left open is closed.
            Err(_) => {
                let why = format!(
                    "timed out after {} s (runner.execution_timeout)",
                    limit.as_secs()
                );
                run.finish(ExecutionStatus::Failed, Some(why)).await
            }
        };
        watcher.abort();
        result
    }

    async fn publish(&self, flow: &FlowId, body: EventBody) -> Result<(), BusError> {
        self.bus
            .publish(&Event {
                body,
                flow_id: flow.clone(),
                seq: None,
                ts: chrono::Utc::now(),
                actor: worker(),
                traceparent: flowsync_telemetry::traceparent(),
            })
            .await
            .map(drop)
    }
}

/// Cancels when an `EXECUTION_UPDATE` says the execution was cancelled — or, when the
/// flow's stream reports a gap (`Gone`: the cancel may have been in it), when the store
/// says so. A failed read of the stream is retried, never the end of the watch.
async fn watch_cancel(
    mut sub: Subscription,
    store: Store,
    execution: ExecutionId,
    cancel: CancellationToken,
) {
    loop {
        let item = match sub.next().await {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the cancel watch could not read the flow's events");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let cancelled = match item {
            Item::Message(m) if m.kind == EventType::ExecutionUpdate => matches!(
                m.event(),
                Ok(Event { body: EventBody::ExecutionUpdate(u), .. })
                    if u.execution_id == execution && u.status == Some(ExecutionStatus::Cancelled)
            ),
            Item::Message(_) => false,
            Item::Gone => matches!(
                store.execution(&execution).await,
                Ok(Some(e)) if e.status == ExecutionStatus::Cancelled
            ),
        };
        if cancelled {
            cancel.cancel();
            return;
        }
    }
}

/// One execution in progress.
struct Run<'r> {
    runner: &'r Runner,
    flow: FlowId,
    execution: Execution,
    /// Each node's status as this run knows it.
    status: HashMap<NodeId, NodeStatus>,
    /// Outputs of succeeded nodes.
    outputs: HashMap<NodeId, Value>,
}

impl<'r> Run<'r> {
    fn new(runner: &'r Runner, job: &Job, execution: Execution) -> Self {
        let status = execution
            .nodes
            .iter()
            .map(|n| (n.node_id.clone(), n.status))
            .collect();
        // A reclaimed job keeps what finished before its runner died.
        let outputs = execution
            .nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Succeeded)
            .map(|n| (n.node_id.clone(), n.output.clone().unwrap_or(Value::Null)))
            .collect();
        Self {
            runner,
            flow: job.flow.clone(),
            execution,
            status,
            outputs,
        }
    }

    fn id(&self) -> &ExecutionId {
        &self.execution.id
    }

    /// Stores and announces a node's new status.
    async fn node(
        &mut self,
        node: &NodeId,
        status: NodeStatus,
        output: Option<Value>,
        error: Option<String>,
    ) -> Result<(), RunnerError> {
        self.status.insert(node.clone(), status);
        let store = &self.runner.store;
        store
            .set_node_run(
                &self.execution.id,
                &NodeRunUpdate {
                    node_id: node.clone(),
                    status,
                    output: output.clone(),
                    error: error.clone(),
                },
            )
            .await?;
        let mut update = ExecutionUpdate::of_node(
            self.execution.id.clone(),
            node.clone(),
            status,
            output,
            error,
        );
        // A large output is stored whole (above) and announced by reference.
        if let Some(output) = &update.output {
            let bytes = output_bytes(output);
            if bytes > self.runner.config.max_inline_output_bytes {
                update.output = Some(Value::String(preview(output)));
                update.output_bytes = Some(bytes as u64);
            }
        }
        self.runner
            .publish(&self.flow, EventBody::ExecutionUpdate(update))
            .await?;
        Ok(())
    }

    /// Stores and announces the execution's status.
    async fn execution_status(
        &mut self,
        status: ExecutionStatus,
        error: Option<String>,
    ) -> Result<(), RunnerError> {
        self.execution.status = status;
        let stored = self
            .runner
            .store
            .set_execution_status(&self.execution.id, status, error.as_deref())
            .await;
        if let Err(StoreError::ExecutionEnded { status: ended, .. }) = stored {
            // Cancelled meanwhile: that status stands and was announced by whoever set it.
            tracing::debug!(execution = %self.execution.id, ?ended, ?status, "the execution had ended");
            self.execution.status = ended;
            return Ok(());
        }
        stored?;
        self.runner
            .publish(
                &self.flow,
                EventBody::ExecutionUpdate(ExecutionUpdate::of_execution(
                    self.execution.id.clone(),
                    status,
                    error,
                )),
            )
            .await?;
        Ok(())
    }

    /// Ends the execution: nodes not finished become `skipped` (`cancelled` when they were
    /// running and the execution is cancelled), then the execution's final status.
    async fn finish(
        &mut self,
        status: ExecutionStatus,
        error: Option<String>,
    ) -> Result<ExecutionStatus, RunnerError> {
        let open: Vec<(NodeId, NodeStatus)> = self
            .execution
            .nodes
            .iter()
            .map(|n| (n.node_id.clone(), self.status[&n.node_id]))
            .filter(|(_, s)| matches!(s, NodeStatus::Pending | NodeStatus::Running))
            .collect();
        for (node, was) in open {
            let now = if was == NodeStatus::Running && status == ExecutionStatus::Cancelled {
                NodeStatus::Cancelled
            } else {
                NodeStatus::Skipped
            };
            self.node(&node, now, None, None).await?;
        }
        if status == ExecutionStatus::Cancelled {
            return Ok(status);
        }
        // What the store holds: a cancel may have ended the execution first.
        self.execution_status(status, error).await?;
        Ok(self.execution.status)
    }

    /// A cancelled execution whose job had not started.
    async fn cancel_rest(&mut self) -> Result<(), RunnerError> {
        self.finish(ExecutionStatus::Cancelled, None)
            .await
            .map(drop)
    }

    /// Runs the DAG: ready nodes start as their upstream finish (at most `max_parallel`
    /// at once); a failure stops new starts; a cancel aborts the running nodes.
    async fn dag(
        &mut self,
        flow: &Flow,
        plan: &Plan,
        cancel: &CancellationToken,
    ) -> Result<ExecutionStatus, RunnerError> {
        if self.execution.status != ExecutionStatus::Running {
            self.execution_status(ExecutionStatus::Running, None)
                .await?;
        }
        let nodes: HashMap<&NodeId, &Node> = flow.nodes.iter().map(|n| (&n.id, n)).collect();
        // Nodes that were running when a previous runner died run again.
        for (node, status) in self.status.clone() {
            if status == NodeStatus::Running {
                self.status.insert(node, NodeStatus::Pending);
            }
        }
        let mut tasks: JoinSet<(NodeId, Result<Value, String>)> = JoinSet::new();
        let mut started: HashSet<NodeId> = HashSet::new();
        let mut failure: Option<String> = None;
        let max_total = self.runner.config.max_execution_bytes;
        let mut total: usize = self.outputs.values().map(output_bytes).sum();
        loop {
            if failure.is_none() && !cancel.is_cancelled() {
                for id in &plan.order {
                    if tasks.len() >= self.runner.config.max_parallel.max(1) {
                        break;
                    }
                    if self.status[id] != NodeStatus::Pending || started.contains(id) {
                        continue;
                    }
                    let ready = plan.upstream[id].iter().all(|u| {
                        matches!(self.status[u], NodeStatus::Succeeded)
                            || (self.status[u] == NodeStatus::Skipped && !plan.runs(u))
                    });
                    if !ready {
                        continue;
                    }
                    if !plan.runs(id) {
                        self.node(id, NodeStatus::Skipped, None, None).await?;
                        continue;
                    }
                    started.insert(id.clone());
                    self.node(id, NodeStatus::Running, None, None).await?;
                    tasks.spawn(self.task(nodes[id].clone(), plan));
                }
            }
            if tasks.is_empty() {
                break;
            }
            let done = tokio::select! {
                done = tasks.join_next() => done,
                () = cancel.cancelled() => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return self.finish(ExecutionStatus::Cancelled, None).await;
                }
            };
            let Some(Ok((id, result))) = done else {
                continue;
            };
            // Past the execution's bound, a node's output fails it like its own error.
            let result = result.and_then(|output| {
                let bytes = output_bytes(&output);
                if total + bytes > max_total {
                    return Err(format!(
                        "execution_too_large: the outputs passed {max_total} bytes \
                         (runner.max_execution_bytes)"
                    ));
                }
                total += bytes;
                Ok(output)
            });
            match result {
                Ok(output) => {
                    self.outputs.insert(id.clone(), output.clone());
                    self.node(&id, NodeStatus::Succeeded, Some(output), None)
                        .await?;
                }
                Err(error) => {
                    self.node(&id, NodeStatus::Failed, None, Some(error.clone()))
                        .await?;
                    failure.get_or_insert(format!("node {id} failed: {error}"));
                }
            }
        }
        // Re-read: a cancel may have landed as the last node finished.
        if cancel.is_cancelled() {
            return self.finish(ExecutionStatus::Cancelled, None).await;
        }
        match failure {
            Some(error) => self.finish(ExecutionStatus::Failed, Some(error)).await,
            None => self.finish(ExecutionStatus::Succeeded, None).await,
        }
    }

    /// A node's task: its kind with the node's timeout and retries, its chunks streamed.
    fn task(
        &self,
        node: Node,
        plan: &Plan,
    ) -> impl std::future::Future<Output = (NodeId, Result<Value, String>)> + Send + 'static {
        let kind = self.runner.kinds.get(&node.kind).cloned();
        let config = &self.runner.config;
        let (node_timeout, max_retries, mut backoff, max_output) = (
            config.node_timeout,
            config.max_retries,
            config.retry_backoff,
            config.max_output_bytes,
        );
        let upstream: HashMap<NodeId, Value> = plan.upstream[&node.id]
            .iter()
            .filter_map(|u| self.outputs.get(u).map(|o| (u.clone(), o.clone())))
            .collect();
        let mut log = Chunks {
            runner: self.runner.clone(),
            flow: self.flow.clone(),
            execution: self.id().clone(),
            node: node.id.clone(),
            index: self
                .execution
                .nodes
                .iter()
                .find(|n| n.node_id == node.id)
                .map_or(0, |n| n.log_index),
            outbox: None,
        };
        async move {
            let Some(kind) = kind else {
                return (
                    node.id.clone(),
                    Err(format!("no executor for {:?}", node.kind)),
                );
            };
            // A node may lower the runner's bounds, never raise them.
            let timeout = node
                .data
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
                .map_or(node_timeout, |t| t.min(node_timeout));
            let retries = node
                .data
                .get("retries")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(u64::from(max_retries));
            let mut result = Err(String::new());
            for attempt in 0..=retries {
                if attempt > 0 {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                let run = kind.run(NodeInput {
                    node: &node,
                    upstream: &upstream,
                    log: &mut log,
                    max_output,
                });
                result = tokio::time::timeout(timeout, run)
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out after {} ms", timeout.as_millis())))
                    .and_then(|output| {
                        // Whatever the kind (a `delay` passes on all its inputs): bounded.
                        if output_bytes(&output) > max_output {
                            Err(TooLarge { max: max_output }.to_string())
                        } else if flowsync_protocol::json_depth(&output) > MAX_DATA_DEPTH {
                            Err(format!(
                                "output_too_deep: the output nests past {MAX_DATA_DEPTH} levels"
                            ))
                        } else {
                            Ok(output)
                        }
                    });
                if result.is_ok() {
                    break;
                }
            }
            log.end().await;
            (node.id.clone(), result)
        }
    }
}

/// A node's `LOG_STREAM`: chunks go to a task through a bounded outbox; it takes whatever
/// has queued up (more within `log_batch_wait`, up to `log_batch_bytes`), appends it to the
/// node's stored log with the index it reaches, then publishes it in one ordered batch. A
/// chunk is stored before anyone can see it, so a client that reads the execution at any
/// moment and then appends the live chunks from its `log_index` misses nothing and sees
/// nothing twice. A fast stream is not held to a write and a round trip per chunk, and a
/// stream faster than the store or the bus waits on the outbox.
struct Chunks {
    runner: Runner,
    flow: FlowId,
    execution: ExecutionId,
    node: NodeId,
    /// The next chunk's index: where the node's stored log ends (another runner's attempt
    /// may have streamed before this one).
    index: u64,
    /// The saving task and its inbox, started by the first chunk.
    outbox: Option<(
        tokio::sync::mpsc::Sender<Event>,
        tokio::task::JoinHandle<()>,
    )>,
}

/// Chunks a node may have queued before it waits.
const OUTBOX: usize = 1024;

/// Saves of a batch tried before it is published unsaved (the store is down: live clients
/// still get it; its text goes with the next save, so a client joining later gets it too).
const SAVE_ATTEMPTS: u32 = 3;

/// Saves of a node's last batch tried before its text is given up for later joiners.
const LAST_SAVE_ATTEMPTS: u32 = 10;

/// Saves, then publishes, queued chunks in order, a batch at a time.
async fn save_then_publish(
    runner: Runner,
    execution: ExecutionId,
    node: NodeId,
    mut inbox: tokio::sync::mpsc::Receiver<Event>,
) {
    let (wait, most) = (
        runner.config.log_batch_wait,
        runner.config.log_batch_bytes.max(1),
    );
    let save = |text: String, chunks: std::ops::Range<u64>, attempts: u32| {
        let (runner, execution, node) = (&runner, &execution, &node);
        async move {
            let mut attempt = 1;
            loop {
                match runner
                    .store
                    .append_node_log(execution, node, &text, chunks.clone())
                    .await
                {
                    Ok(()) => return None,
                    Err(e) if attempt < attempts && e.is_transient() => {
                        let wait = Duration::from_millis(100 << attempt.min(5));
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a node's streamed output was not stored yet");
                        return Some((text, chunks));
                    }
                }
            }
        }
    };
    // Text published but not stored: it goes with the next save.
    let mut unsaved: Option<(String, std::ops::Range<u64>)> = None;
    let mut batch = Vec::with_capacity(256);
    while inbox.recv_many(&mut batch, 256).await > 0 {
        let (mut text, mut chunks) = unsaved.take().unwrap_or_default();
        let mut add = |batch: &[Event], text: &mut String| {
            for event in batch {
                if let EventBody::LogStream(l) = &event.body {
                    if text.is_empty() && chunks.is_empty() {
                        chunks.start = l.index;
                    }
                    text.push_str(&l.chunk);
                    chunks.end = l.index + 1;
                }
            }
        };
        add(&batch, &mut text);
        if !wait.is_zero() {
            let until = tokio::time::Instant::now() + wait;
            while text.len() < most && batch.len() < 256 {
                let Ok(Some(event)) = tokio::time::timeout_at(until, inbox.recv()).await else {
                    break;
                };
                add(std::slice::from_ref(&event), &mut text);
                batch.push(event);
            }
        }
        unsaved = save(text, chunks, SAVE_ATTEMPTS).await;
        if let Err(e) = runner.bus.publish_all(&batch).await {
            tracing::warn!(error = %e, "log chunks were not published");
        }
        batch.clear();
    }
    if let Some((text, chunks)) = unsaved
        && save(text, chunks, LAST_SAVE_ATTEMPTS).await.is_some()
    {
        tracing::warn!("a node's last streamed output was not stored: later readers miss it");
    }
}

impl Chunks {
    async fn publish(&mut self, chunk: &str, done: bool) {
        let event = Event {
            body: EventBody::LogStream(LogStream {
                execution_id: self.execution.clone(),
                node_id: self.node.clone(),
                index: self.index,
                chunk: chunk.to_owned(),
                done,
            }),
            flow_id: self.flow.clone(),
            seq: None,
            ts: chrono::Utc::now(),
            actor: worker(),
            traceparent: flowsync_telemetry::traceparent(),
        };
        self.index += 1;
        let (outbox, _) = self.outbox.get_or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(OUTBOX);
            let task = save_then_publish(
                self.runner.clone(),
                self.execution.clone(),
                self.node.clone(),
                rx,
            );
            (tx, tokio::spawn(task))
        });
        let _ = outbox.send(event).await;
    }

    /// The closing `done` chunk, and every chunk stored and published.
    async fn end(&mut self) {
        if self.outbox.is_none() {
            return;
        }
        self.publish("", true).await;
        if let Some((outbox, task)) = self.outbox.take() {
            drop(outbox);
            let _ = task.await;
        }
    }
}

/// A node aborted (cancelled, timed out) stops its chunks where they are: nothing of it
/// is published after the execution's end.
impl Drop for Chunks {
    fn drop(&mut self) {
        if let Some((_, task)) = self.outbox.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl LogSink for Chunks {
    async fn chunk(&mut self, text: &str) {
        self.publish(text, false).await;
    }
}
