//! One SSE stream: `READY`, the replay of what the client missed, then live frames until
//! the client leaves, falls behind, or the gateway drains.

use std::sync::Arc;

use flowsync_bus::Position;
use flowsync_protocol::{Epoch, Event, EventBody, FlowId, Ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::admission::Admitted;
use crate::frame::{Frame, TypeFilter};
use crate::hub;
use crate::server::Shared;

/// Frames coalesced into one write at most.
const MAX_BATCH_FRAMES: usize = 64;
/// Bytes coalesced into one write at most.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Waves in which a draining gateway closes its streams, spread over `sse.drain`, so
/// their reconnects spread over the other gateways without a timer per stream.
pub const DRAIN_STEPS: u8 = 100;

/// History page size for a replay.
const REPLAY_PAGE: usize = 1000;

/// The epoch `READY` names when the flow has no history yet: resuming from `0-0` means
/// "from the first event of whatever epoch exists".
pub fn no_epoch() -> Epoch {
    Epoch::parse("0").expect("a digit is an epoch")
}

/// What a stream was asked for.
#[derive(Debug)]
pub struct Request {
    /// Where the client resumes from.
    pub resume: Option<Position>,
    /// Which event types it wants.
    pub filter: TypeFilter,
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed it.
    ClientGone,
    /// The client fell behind its flow's queue, or a write timed out.
    TooSlow,
    /// The gateway is draining.
    Drained,
    /// The flow's hub stopped (bus closed).
    HubClosed,
    /// Writing failed.
    WriteFailed,
}

/// Serves an admitted stream on `io`: the response head, `READY`, the replay, then live
/// frames. Everything long-lived stays in `admitted` (one heap block); the task holds
/// little more than the live loop's futures.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    cors: Option<&str>,
    admitted: &mut Admitted,
) -> End {
    // Boxed: its state (history reads, the first page) is gone once the stream is live.
    if let Err(end) = Box::pin(start(shared, io, cors, admitted)).await {
        return end;
    }
    shared.metrics.connections.inc();
    shared.metrics.connections_total.inc();
    let end = live(shared, io, &mut admitted.joined.rx, admitted.request.filter).await;
    shared.metrics.connections.dec();
    end
}

/// The response head, `READY` (and `RESYNC` when the stream cannot resume), the replay.
async fn start<S: AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    cors: Option<&str>,
    admitted: &Admitted,
) -> Result<(), End> {
    let metrics = &shared.metrics;
    let (request, head, version) = (
        &admitted.request,
        &admitted.joined.head,
        admitted.joined.version,
    );
    let (flow, connection) = (
        admitted.joined.membership.flow(),
        admitted.joined.membership.connection(),
    );
    let mut response = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\nX-Accel-Buffering: no\r\n",
    );
    if let Some(origin) = cors {
        response.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"
        ));
    }
    response.push_str(&format!("\r\nretry: {}\n\n", shared.config.retry_ms));
    write(shared, io, response.as_bytes()).await?;
    tracing::debug!(flow_id = %flow, connection_id = %connection, "stream opened");
    // Where the client is, and what it missed up to the head `rx` starts after. The first
    // page of history decides whether the stream resumed; the rest is read page by page
    // while writing, so a replay holds one page, not the whole history.
    let mut replay = match &request.resume {
        None => None,
        Some(from) => Replay::start(shared, flow, from, head.as_ref()).await,
    };
    let resumed = replay.is_some();
    if resumed {
        metrics.resumes.inc();
    }
    let ready = Event {
        body: EventBody::Ready(Ready {
            connection_id: connection.clone(),
            epoch: head.as_ref().map_or_else(no_epoch, |h| h.epoch.clone()),
            seq: head.as_ref().map_or(0, |h| h.seq),
            resumed,
            version,
        }),
        flow_id: flow.clone(),
        seq: None,
        traceparent: None,
        ts: chrono::Utc::now(),
        actor: flowsync_protocol::Actor::system(),
    };
    let mut first = Frame::event(&ready).bytes.to_vec();
    if request.resume.is_some() && !resumed {
        first.extend_from_slice(&cannot_resume(shared, flow).bytes);
    }
    write(shared, io, &first).await?;
    while let Some(r) = &mut replay {
        let frames: Vec<Arc<Frame>> = r
            .page
            .drain(..)
            .filter(|f| request.filter.admits(f))
            .collect();
        for chunk in frames.chunks(MAX_BATCH_FRAMES) {
            timed(shared, write_frames(io, chunk)).await?;
            metrics
                .bytes_out
                .inc_by(chunk.iter().map(|f| f.bytes.len() as u64).sum());
            metrics.events_out.inc_by(chunk.len() as u64);
        }
        match r.next_page(shared).await {
            Ok(true) => {}
            Ok(false) => replay = None,
            // History was trimmed under the replay: the client must reload.
            Err(()) => {
                write(shared, io, &cannot_resume(shared, flow).bytes).await?;
                replay = None;
            }
        }
    }
    Ok(())
}

/// Live frames until the client leaves, falls behind, or the gateway drains. Every frame
/// in `rx` comes after the stream's head, so nothing is skipped or repeated.
async fn live<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    rx: &mut tokio::sync::broadcast::Receiver<Arc<Frame>>,
    filter: TypeFilter,
) -> End {
    // Draining closes streams in `DRAIN_STEPS` waves: this stream goes in wave `slot`.
    // One future for the stream's life, not one per frame: it stays registered with the
    // drain signal instead of joining and leaving its waiter list at every delivery.
    let slot = fastrand::u8(..DRAIN_STEPS);
    let mut drain = shared.shutdown.clone();
    let mut drained = std::pin::pin!(async move {
        while *drain.borrow_and_update() <= slot {
            if drain.changed().await.is_err() {
                // No gateway left to drain this stream.
                std::future::pending::<()>().await;
            }
        }
    });
    let mut probe = [0u8; 8];
    loop {
        enum Next {
            Frame(Result<Arc<Frame>, RecvError>),
            Read(std::io::Result<usize>),
            Drain,
        }
        let next = tokio::select! {
            biased;
            r = rx.recv() => Next::Frame(r),
            r = io.read(&mut probe) => Next::Read(r),
            () = &mut drained => Next::Drain,
        };
        match next {
            Next::Frame(Ok(frame)) => {
                if let Err(end) = deliver(shared, io, rx, frame, filter).await {
                    return end;
                }
            }
            Next::Frame(Err(RecvError::Lagged(_))) => {
                shared.metrics.slow_disconnects.inc();
                return End::TooSlow;
            }
            Next::Frame(Err(RecvError::Closed)) => return End::HubClosed,
            // The client sends nothing after its head: a read ends only at close.
            Next::Read(Ok(0) | Err(_)) => return End::ClientGone,
            Next::Read(Ok(_)) => {}
            Next::Drain => return End::Drained,
        }
    }
}

/// Writes `frame` and the frames already queued behind it (at most [`MAX_BATCH_FRAMES`])
/// in one vectored write. The frames are the flow's shared ones, not copies: a client
/// blocked in a write holds a few pointers, never a buffer of its own.
async fn deliver<S: AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    rx: &mut tokio::sync::broadcast::Receiver<Arc<Frame>>,
    frame: Arc<Frame>,
    filter: TypeFilter,
) -> Result<(), End> {
    // Usually one frame: kept inline, no allocation per delivery.
    let mut batch: smallvec::SmallVec<[Arc<Frame>; 2]> = smallvec::SmallVec::new();
    let mut bytes = 0;
    if filter.admits(&frame) {
        let frame = filter.dress(frame);
        bytes += frame.bytes.len();
        batch.push(frame);
    }
    while batch.len() < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(more) if filter.admits(&more) => {
                let more = filter.dress(more);
                bytes += more.bytes.len();
                batch.push(more);
            }
            Ok(_) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            Err(TryRecvError::Lagged(_)) => {
                shared.metrics.slow_disconnects.inc();
                return Err(End::TooSlow);
            }
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    timed(shared, write_frames(io, &batch)).await?;
    shared.metrics.bytes_out.inc_by(bytes as u64);
    // Pings are comments, not events.
    let events = batch.iter().filter(|f| f.is_event()).count();
    shared.metrics.events_out.inc_by(events as u64);
    Ok(())
}

/// Writes every frame, as few `writev` calls as the socket allows.
async fn write_frames<S: AsyncWrite + Unpin>(
    io: &mut S,
    frames: &[Arc<Frame>],
) -> std::io::Result<()> {
    if let [one] = frames {
        return io.write_all(&one.bytes).await;
    }
    let (mut i, mut offset) = (0, 0);
    let mut slices = Vec::with_capacity(frames.len());
    while i < frames.len() {
        slices.clear();
        slices.push(std::io::IoSlice::new(&frames[i].bytes[offset..]));
        slices.extend(
            frames[i + 1..]
                .iter()
                .map(|f| std::io::IoSlice::new(&f.bytes)),
        );
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while i < frames.len() && n >= frames[i].bytes.len() - offset {
            n -= frames[i].bytes.len() - offset;
            offset = 0;
            i += 1;
        }
        offset += n;
    }
    Ok(())
}

/// Runs a write within the write timeout; a timeout means the client stopped reading.
async fn timed(
    shared: &Shared,
    write: impl Future<Output = std::io::Result<()>>,
) -> Result<(), End> {
    let mut write = std::pin::pin!(write);
    // Most writes complete at once (the socket has room): those need no timer.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    let written = match first {
        std::task::Poll::Ready(written) => written,
        std::task::Poll::Pending => {
            match tokio::time::timeout(shared.config.write_timeout, write).await {
                Ok(written) => written,
                Err(_) => {
                    shared.metrics.slow_disconnects.inc();
                    return Err(End::TooSlow);
                }
            }
        }
    };
    written.map_err(|_| End::WriteFailed)
}

/// Writes all of `bytes` within the write timeout.
async fn write<S: AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    bytes: &[u8],
) -> Result<(), End> {
    timed(shared, io.write_all(bytes)).await?;
    shared.metrics.bytes_out.inc_by(bytes.len() as u64);
    Ok(())
}

/// A `RESYNC` for a stream that cannot resume, counted.
fn cannot_resume(shared: &Shared, flow: &FlowId) -> Frame {
    shared.metrics.resyncs.inc();
    hub::resync(
        flow,
        "the stream cannot resume from that Last-Event-ID: reload the flow",
    )
}

/// The frames a resuming client missed, `(from, head]`, read from the bus history a page
/// at a time.
struct Replay {
    flow: FlowId,
    head: Position,
    /// The last seq read.
    after: u64,
    /// Frames read and not yet written.
    page: Vec<Arc<Frame>>,
}

impl Replay {
    /// Reads the first page. `None` when history cannot cover `from` (the stream sends
    /// `RESYNC` and goes on live).
    async fn start(
        shared: &Shared,
        flow: &FlowId,
        from: &Position,
        head: Option<&Position>,
    ) -> Option<Self> {
        let before_history = from.epoch == no_epoch() && from.seq == 0;
        let Some(head) = head else {
            // The flow has no history: only "before any history" is a place in it, and
            // nothing was missed.
            return before_history.then(|| Self {
                flow: flow.clone(),
                head: Position {
                    epoch: no_epoch(),
                    seq: 0,
                },
                after: 0,
                page: vec![],
            });
        };
        let after = match () {
            _ if before_history => 0,
            _ if from.epoch == head.epoch && from.seq <= head.seq => from.seq,
            _ => return None,
        };
        let mut replay = Self {
            flow: flow.clone(),
            head: head.clone(),
            after,
            page: vec![],
        };
        replay.next_page(shared).await.ok()?;
        Some(replay)
    }

    /// Reads the next page into `page`: `Ok(false)` when the replay is complete, `Err`
    /// when history has a hole where the page should start.
    async fn next_page(&mut self, shared: &Shared) -> Result<bool, ()> {
        if self.after >= self.head.seq {
            return Ok(false);
        }
        let page = match shared
            .hubs
            .bus()
            .history(&self.flow, &self.head.epoch, self.after, REPLAY_PAGE)
            .await
        {
            Ok(flowsync_bus::Replay::Events(page)) if !page.is_empty() => page,
            Ok(_) => return Err(()),
            Err(e) => {
                tracing::warn!(flow_id = %self.flow, error = %e, "history unavailable for a resume");
                return Err(());
            }
        };
        for m in page {
            let seq = m.seq().ok_or(())?;
            if seq != self.after + 1 {
                return Err(()); // a hole: history no longer reaches back that far
            }
            if seq > self.head.seq {
                break;
            }
            self.after = seq;
            self.page.push(Arc::new(Frame::message(&m)));
        }
        Ok(true)
    }
}
