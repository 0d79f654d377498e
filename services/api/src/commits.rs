//! Group commit (DESIGN §4): per flow and per process, requests that arrive while the
//! flow's commit is in flight wait, and are folded into the next one — one durable write
//! for the whole group ([`Store::commit_group`]), then every request's results announced
//! in order with one [`Bus::publish_all`], then each request answered. An op is still
//! acknowledged only once the write holding it is durable and announced.
//!
//! A flow's commits run in a task of their own, started by the first request that finds
//! its flow idle and ended when the queue is empty, so a client that goes away mid-commit
//! cancels nothing but its own wait. The queue is bounded (`write_path.max_queued_ops`):
//! beyond it a request is refused with `503` and `Retry-After`, never held in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use flowsync_bus::{Bus, BusError};
use flowsync_protocol::{FlowId, OpKind};
use flowsync_store::{CommitOutcome, CommitRequest, Store, StoreError};
use tokio::sync::oneshot;

use crate::announce;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Why a group's request was not committed and announced.
#[derive(Debug, Clone)]
enum Failed {
    Store(Arc<StoreError>),
    Bus(Arc<BusError>),
}

/// One request waiting for its group.
#[derive(Debug)]
struct Waiter {
    request: CommitRequest,
    /// The trace context of the request, for its events.
    traceparent: Option<String>,
    done: oneshot::Sender<Result<CommitOutcome, Failed>>,
}

/// A flow's waiting requests while its commit task runs.
#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Waiter>,
    /// Ops in `waiting`.
    ops: usize,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    metrics: Metrics,
    bus: Arc<dyn Bus>,
    /// Flows with a commit task, and what waits for it.
    queues: Mutex<HashMap<FlowId, Queue>>,
    /// Ops that may wait for one flow; beyond, `503`.
    max_queued_ops: usize,
    /// Ops one group may hold (a larger request still commits, alone).
    max_group_ops: usize,
}

/// The commit queues of one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Commits {
    inner: Arc<Inner>,
}

impl Commits {
    /// Commits over `store`, announcing on `bus`, with the store's group bounds.
    pub fn new(store: Store, bus: Arc<dyn Bus>, metrics: Metrics) -> Self {
        let config = store.config().clone();
        Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                bus,
                queues: Mutex::default(),
                max_queued_ops: config.max_queued_ops,
                max_group_ops: config.max_group_ops,
            }),
        }
    }

    /// Commits `request` with whatever else is waiting for `flow`, and announces its
    /// results; returns once they are durable and published.
    pub async fn commit(
        &self,
        flow: &FlowId,
        request: CommitRequest,
    ) -> Result<CommitOutcome, ApiError> {
        let (done, outcome) = oneshot::channel();
        let waiter = Waiter {
            traceparent: flowsync_telemetry::traceparent(),
            request,
            done,
        };
        let lead = {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            match queues.get_mut(flow) {
                Some(queue) => {
                    let ops = waiter.request.ops.len();
                    if queue.ops + ops > self.inner.max_queued_ops {
                        return Err(ApiError::Busy(format!(
                            "flow {flow} has {} ops waiting to commit; retry shortly",
                            queue.ops
                        )));
                    }
                    queue.ops += ops;
                    queue.waiting.push_back(waiter);
                    false
                }
                None => {
                    let queue = Queue {
                        ops: waiter.request.ops.len(),
                        waiting: VecDeque::from([waiter]),
                    };
                    queues.insert(flow.clone(), queue);
                    true
                }
            }
        };
        if lead {
            tokio::spawn(drive(self.inner.clone(), flow.clone()));
        }
        match outcome.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(Failed::Store(e))) => Err(ApiError::from_store(&e)),
            // Durable, not announced: the client retries the same op ids, which announces
            // them (DESIGN §4).
            Ok(Err(Failed::Bus(e))) => Err(ApiError::from_bus(&e)),
            Err(_) => Err(ApiError::Unexpected(anyhow::anyhow!(
                "the commit task of flow {flow} ended without an answer"
            ))),
        }
    }
}

/// Whether a request's ops read the log (`undo`, `redo`): such a request commits in a
/// group of its own, so what it undoes is settled before it.
fn reads_log(request: &CommitRequest) -> bool {
    request
        .ops
        .iter()
        .any(|op| matches!(op.kind, OpKind::Undo(_) | OpKind::Redo(_)))
}

/// A flow's commit task: groups until its queue is empty.
async fn drive(inner: Arc<Inner>, flow: FlowId) {
    loop {
        let group: Vec<Waiter> = {
            let mut queues = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            let Some(queue) = queues.get_mut(&flow) else {
                return;
            };
            let mut group = Vec::new();
            let mut ops = 0;
            while let Some(next) = queue.waiting.front() {
                let n = next.request.ops.len();
                let alone = reads_log(&next.request);
                if !group.is_empty() && (ops + n > inner.max_group_ops || alone) {
                    break;
                }
                ops += n;
                group.push(queue.waiting.pop_front().expect("a front"));
                if alone {
                    break;
                }
            }
            queue.ops -= ops;
            if group.is_empty() {
                queues.remove(&flow);
                return;
            }
            inner.metrics.group_ops.observe(ops as f64);
            group
        };
        let requests: Vec<CommitRequest> = group.iter().map(|w| w.request.clone()).collect();
        let result = match inner.store.commit_group(&flow, &requests).await {
            Ok(outcomes) => {
                let events: Vec<_> = group
                    .iter()
                    .zip(&outcomes)
                    .flat_map(|(w, outcome)| {
                        announce::events(
                            &flow,
                            &w.request.actor,
                            &w.request.client_id,
                            outcome,
                            w.traceparent.as_deref(),
                        )
                    })
                    .collect();
                match inner.bus.publish_all(&events).await {
                    Ok(_) => Ok(outcomes),
                    Err(e) => Err(Failed::Bus(Arc::new(e))),
                }
            }
            Err(e) => Err(Failed::Store(Arc::new(e))),
        };
        match result {
            Ok(outcomes) => {
                for (waiter, outcome) in group.into_iter().zip(outcomes) {
                    let _ = waiter.done.send(Ok(outcome));
                }
            }
            Err(failed) => {
                for waiter in group {
                    let _ = waiter.done.send(Err(failed.clone()));
                }
            }
        }
    }
}
