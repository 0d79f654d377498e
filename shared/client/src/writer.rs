//! [`TextWriter`]: streams text into a node's string field as it is produced — the agent's
//! way of writing into the canvas while people watch (DESIGN §3 `text.append`).

use std::pin::pin;
use std::time::Duration;

use flowsync_protocol::ops::TextAppend;
use flowsync_protocol::{FieldPath, NodeId, OpKind};
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::session::{FlowSession, Outcome};
use crate::{Error, op};

/// What a [`TextWriter::write`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Pieces of text read from the stream.
    pub tokens: u64,
    /// `text.append` ops applied.
    pub ops: u64,
    /// Bytes written into the field.
    pub bytes: u64,
    /// Ops refused and sent again after a reload.
    pub refusals: u64,
}

/// Appends a stream of text to one string field of one node, one op per batch: the text
/// that arrives within [`window`](Self::window) of a batch's first piece, plus whatever
/// arrived while the previous op was on its way. Ops go one at a time, each after the
/// previous one's result, so the text lands in order.
#[derive(Debug)]
pub struct TextWriter<'a> {
    session: &'a FlowSession,
    node: NodeId,
    path: FieldPath,
    window: Duration,
    max_batch_bytes: usize,
    max_refusals: u32,
}

impl<'a> TextWriter<'a> {
    /// A writer into `path` (a JSON pointer into `data`) of `node`.
    pub fn new(session: &'a FlowSession, node: NodeId, path: FieldPath) -> Self {
        Self {
            session,
            node,
            path,
            window: Duration::from_millis(10),
            max_batch_bytes: 16 * 1024,
            max_refusals: 3,
        }
    }

    /// How long a batch waits for more text after its first piece (default 10 ms). Ops
    /// are at least this far apart, so the default stays under the API's default rate
    /// limit of 100 requests a second per subject; past it each `429` costs a second.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// A batch this large goes out without waiting (default 16 KiB).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// Writes everything `text` yields, then returns what it did. A refused op (the node
    /// was deleted, the field is not a string, …) is handled like a person would: the
    /// writer reloads the flow and, if the node is still there, sends the text again
    /// with a new op id; it gives up after a few refusals in a row.
    pub async fn write(&self, text: impl Stream<Item = String>) -> Result<WriteReport, Error> {
        let mut text = pin!(text.fuse());
        let mut report = WriteReport::default();
        let mut batch = String::new();
        let mut batch_since: Option<Instant> = None;
        let mut ended = false;
        let mut in_flight = pin!(futures::future::Fuse::terminated());
        let mut sending: Option<String> = None;
        let mut refusals = 0;
        loop {
            if sending.is_none() {
                let ready = batch.len() >= self.max_batch_bytes
                    || (ended && !batch.is_empty())
                    || batch_since.is_some_and(|t| t.elapsed() >= self.window);
                if ready {
                    let chunk = std::mem::take(&mut batch);
                    batch_since = None;
                    in_flight.set(futures::FutureExt::fuse(self.append(chunk.clone())));
                    sending = Some(chunk);
                } else if ended && batch.is_empty() {
                    return Ok(report);
                }
            }
            let deadline = batch_since
                .filter(|_| sending.is_none())
                .map(|t| t + self.window);
            tokio::select! {
                // A full batch stops the reading until it is on its way: the stream's
                // producer waits instead of the batch growing without bound.
                piece = text.next(), if !ended && batch.len() < self.max_batch_bytes => match piece {
                    Some(piece) => {
                        report.tokens += 1;
                        batch_since.get_or_insert_with(Instant::now);
                        batch.push_str(&piece);
                    }
                    None => ended = true,
                },
                outcome = &mut in_flight => {
                    let chunk = sending.take().expect("a chunk in flight");
                    match outcome? {
                        Outcome::Applied { .. } => {
                            refusals = 0;
                            report.ops += 1;
                            report.bytes += chunk.len() as u64;
                        }
                        Outcome::Refused(conflict) => {
                            refusals += 1;
                            report.refusals += 1;
                            tracing::info!(node = %self.node, reason = %conflict.reason,
                                message = %conflict.message, "append refused; reloading");
                            self.session.reload().await?;
                            if refusals >= self.max_refusals
                                || self.session.canvas().node(self.node.as_str()).is_none()
                            {
                                return Err(Error::Conflict(Box::new(conflict)));
                            }
                            // Again, in front of what arrived since.
                            batch.insert_str(0, &chunk);
                            batch_since.get_or_insert_with(Instant::now);
                        }
                    }
                },
                () = crate::sleep_until(deadline) => {}
            }
        }
    }

    async fn append(&self, text: String) -> Result<Outcome, Error> {
        self.session
            .send_one(op(OpKind::TextAppend(TextAppend {
                id: self.node.clone(),
                path: self.path.clone(),
                text,
            })))
            .await
    }
}
