//! An execution as a client sees it that joined at any moment: what the server stored,
//! then the live events applied past it — nothing missing, nothing twice.

use std::collections::HashMap;

use flowsync_protocol::{
    Event, EventBody, Execution, ExecutionId, ExecutionUpdate, FlowId, LogStream, NodeId,
    NodeStatus,
};

use crate::{Client, Error, EventStream};

/// What applying a `LOG_STREAM` chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Appended: it was the node's next chunk.
    Appended,
    /// Already in the text (read from the server, or seen before).
    Repeat,
    /// Chunks before it are missing: read the execution again ([`RunView::refresh`]).
    /// Every chunk is stored before it is published, so a read made after this chunk
    /// arrived holds it and everything before it.
    Gap,
    /// A node's output came by reference (too large for the event): read the execution.
    Stale,
    /// Applied (a status, an output, an error).
    Updated,
    /// Of another execution.
    Other,
}

/// One execution: its state as read from the server (`GET …/executions/{id}`) with the
/// live `EXECUTION_UPDATE` and `LOG_STREAM` events applied. A node's text is its stored
/// `log`, then the chunks whose index is at least its `log_index`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    execution: Execution,
    /// Per node: its index in `execution.nodes`.
    at: HashMap<NodeId, usize>,
}

impl RunView {
    /// The view of an execution read from the server.
    pub fn new(execution: Execution) -> Self {
        let at = execution
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node_id.clone(), i))
            .collect();
        Self { execution, at }
    }

    /// The execution as far as this view knows it.
    pub fn execution(&self) -> &Execution {
        &self.execution
    }

    /// A node's streamed text so far.
    pub fn text(&self, node: &NodeId) -> Option<&str> {
        self.at
            .get(node)
            .map(|i| self.execution.nodes[*i].log.as_str())
    }

    /// Whether the execution has ended.
    pub fn ended(&self) -> bool {
        self.execution.status.has_ended()
    }

    /// Applies an event of the flow (others are ignored).
    pub fn apply(&mut self, event: &Event) -> Step {
        match &event.body {
            EventBody::LogStream(l) => self.chunk(l),
            EventBody::ExecutionUpdate(u) => self.update(u),
            _ => Step::Other,
        }
    }

    /// Applies a `LOG_STREAM` chunk.
    pub fn chunk(&mut self, l: &LogStream) -> Step {
        if l.execution_id != self.execution.id {
            return Step::Other;
        }
        let Some(node) = self
            .at
            .get(&l.node_id)
            .map(|i| &mut self.execution.nodes[*i])
        else {
            return Step::Other;
        };
        match l.index.cmp(&node.log_index) {
            std::cmp::Ordering::Less => Step::Repeat,
            std::cmp::Ordering::Greater => Step::Gap,
            std::cmp::Ordering::Equal => {
                node.log.push_str(&l.chunk);
                node.log_index += 1;
                if node.status == NodeStatus::Pending {
                    node.status = NodeStatus::Running;
                }
                Step::Appended
            }
        }
    }

    /// Applies an `EXECUTION_UPDATE`. A status never goes back from an end to a start:
    /// an update older than what was read is dropped.
    pub fn update(&mut self, u: &ExecutionUpdate) -> Step {
        if u.execution_id != self.execution.id {
            return Step::Other;
        }
        if let Some(status) = u.status
            && !self.execution.status.has_ended()
        {
            self.execution.status = status;
            if u.node_id.is_none() {
                self.execution.error.clone_from(&u.error);
            }
        }
        let Some(node) = u
            .node_id
            .as_ref()
            .and_then(|n| self.at.get(n))
            .map(|i| &mut self.execution.nodes[*i])
        else {
            return Step::Updated;
        };
        if let Some(status) = u.node_status
            && (!is_end(node.status) || is_end(status))
        {
            node.status = status;
        }
        // An output sent by reference (`output_bytes`) is a preview: read the execution.
        if u.output.is_some() && u.output_bytes.is_none() {
            node.output.clone_from(&u.output);
        }
        if u.error.is_some() {
            node.error.clone_from(&u.error);
        }
        if u.output_bytes.is_some() {
            Step::Stale
        } else {
            Step::Updated
        }
    }

    /// Takes a fresh read of the execution: per node, the longer text (the read's, or the
    /// one the live chunks made); statuses, outputs and errors from the read unless this
    /// view already saw the node end.
    pub fn refresh(&mut self, fresh: Execution) {
        let mut fresh = fresh;
        for node in &mut fresh.nodes {
            let Some(mine) = self
                .at
                .get(&node.node_id)
                .map(|i| &self.execution.nodes[*i])
            else {
                continue;
            };
            if mine.log_index > node.log_index {
                node.log.clone_from(&mine.log);
                node.log_index = mine.log_index;
            }
            if is_end(mine.status) && !is_end(node.status) {
                node.status = mine.status;
                node.output.clone_from(&mine.output);
                node.error.clone_from(&mine.error);
            }
        }
        if self.execution.status.has_ended() && !fresh.status.has_ended() {
            fresh.status = self.execution.status;
            fresh.error = self.execution.error.clone();
        }
        *self = Self::new(fresh);
    }
}

fn is_end(status: NodeStatus) -> bool {
    matches!(
        status,
        NodeStatus::Succeeded | NodeStatus::Failed | NodeStatus::Skipped | NodeStatus::Cancelled
    )
}

impl Client {
    /// Follows an execution from now on, whenever it started: its flow's events from the
    /// stream's start, then the execution read (so nothing published in between is
    /// missed), then the live events applied; a gap in a node's chunks reads it again.
    /// Returns once the execution has ended, with every node's whole text.
    pub async fn follow_run(
        &self,
        flow: &FlowId,
        execution: &ExecutionId,
        mut on_change: impl FnMut(&RunView),
    ) -> Result<RunView, Error> {
        let mut events: EventStream = self.events(flow).only(&[
            flowsync_protocol::EventType::ExecutionUpdate,
            flowsync_protocol::EventType::LogStream,
        ]);
        // READY: the stream is on; whatever is published from here is on it.
        while !matches!(events.next().await?.body, EventBody::Ready(_)) {}
        let mut view = RunView::new(self.execution(flow, execution).await?);
        on_change(&view);
        while !view.ended() {
            let event = events.next().await?;
            if let EventBody::Resync(_) = event.body {
                view.refresh(self.execution(flow, execution).await?);
            } else if matches!(view.apply(&event), Step::Gap | Step::Stale) {
                view.refresh(self.execution(flow, execution).await?);
            }
            on_change(&view);
        }
        Ok(view)
    }
}
