//! [`EventStream`]: a flow's SSE stream that survives disconnects (DESIGN §3 "Resume").
//!
//! Parsing is `eventsource-stream`'s; this module adds what a long-lived client needs:
//! reconnects with backoff, resume by `Last-Event-ID`, and a watchdog that treats a silent
//! connection (no event, no `: ping`) as dead.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use flowsync_protocol::{Event, EventBody, EventType, FlowId};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;

use crate::{Client, Error};

type Sse = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<io::Error>,
                >,
            > + Send,
    >,
>;

/// A flow's events, in the order the gateway sends them, across reconnects.
///
/// After a disconnect, [`next`](Self::next) reconnects with the id of the last sequenced
/// event it returned: the gateway replays what was missed, or sends `RESYNC` when it
/// cannot (the caller then reloads the flow). Every stream begins with `READY`.
pub struct EventStream {
    client: Client,
    flow: FlowId,
    types: Option<String>,
    last_event_id: Option<String>,
    /// Where the current connection started (its `READY`).
    head: Option<String>,
    connection: Option<Sse>,
    /// Connections in a row that failed or ended without an event.
    failures: u32,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("flow", &self.flow)
            .field("types", &self.types)
            .field("last_event_id", &self.last_event_id)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl EventStream {
    pub(crate) fn new(client: Client, flow: FlowId, last_event_id: Option<String>) -> Self {
        Self {
            client,
            flow,
            types: None,
            last_event_id,
            head: None,
            connection: None,
            failures: 0,
        }
    }

    /// Only these event types (`?types=`); `READY` and `RESYNC` always come.
    pub fn only(mut self, types: &[EventType]) -> Self {
        let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        self.types = Some(names.join(","));
        self
    }

    /// The flow.
    pub fn flow(&self) -> &FlowId {
        &self.flow
    }

    /// The id (`<epoch>-<seq>`) of the last sequenced event returned, or before any the head
    /// the stream's `READY` named: where a reconnect resumes.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Drops the connection; the next call reconnects and resumes.
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// The next event, reconnecting as often as needed (with backoff). Fails only when the
    /// server refuses the stream for good (401, 403, 404 …) or sends an event that cannot
    /// be read.
    pub async fn next(&mut self) -> Result<Event, Error> {
        loop {
            let connection = match &mut self.connection {
                Some(c) => c,
                None => self.connect().await?,
            };
            match connection.next().await {
                Some(Ok(sse)) => {
                    self.failures = 0;
                    let event: Event = serde_json::from_str(&sse.data)
                        .map_err(|e| Error::Protocol(format!("{} event: {e}", sse.event)))?;
                    match &event.body {
                        // Where this connection started: before any sequenced event, a
                        // reconnect resumes from here, so it cannot skip what it missed.
                        EventBody::Ready(ready) => {
                            let head = format!("{}-{}", ready.epoch, ready.seq);
                            self.last_event_id.get_or_insert_with(|| head.clone());
                            self.head = Some(head);
                        }
                        // The old position is gone; the stream goes on live from its head.
                        EventBody::Resync(_) => self.last_event_id = self.head.clone(),
                        // `eventsource-stream` repeats the last id on events without one;
                        // only sequenced events move the resume position.
                        _ if event.seq.is_some() && !sse.id.is_empty() => {
                            self.last_event_id = Some(sse.id);
                        }
                        _ => {}
                    }
                    return Ok(event);
                }
                Some(Err(e)) => {
                    tracing::debug!(flow = %self.flow, error = %e, "stream broke; reconnecting");
                    self.drop_connection();
                }
                None => {
                    tracing::debug!(flow = %self.flow, "stream ended; reconnecting");
                    self.drop_connection();
                }
            }
        }
    }

    fn drop_connection(&mut self) {
        self.connection = None;
        self.failures += 1;
    }

    /// Opens a connection, waiting between failed attempts; returns it once the gateway
    /// answered `200`.
    async fn connect(&mut self) -> Result<&mut Sse, Error> {
        loop {
            if self.failures > 0 {
                tokio::time::sleep(self.client.backoff(self.failures)).await;
            }
            let mut path = format!("/v1/flows/{}/events", self.flow);
            if let Some(types) = &self.types {
                path.push_str("?types=");
                path.push_str(types);
            }
            let mut request = self
                .client
                .events_request(&path)
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(id) = &self.last_event_id {
                request = request.header("Last-Event-ID", id);
            }
            match request.send().await {
                Ok(r) if r.status() == StatusCode::OK => {
                    let idle = self.client.config().idle_timeout;
                    let sse = watchdog(r.bytes_stream(), idle).eventsource();
                    return Ok(self.connection.insert(Box::pin(sse)));
                }
                Ok(r)
                    if r.status() == StatusCode::TOO_MANY_REQUESTS
                        || r.status().is_server_error() =>
                {
                    tracing::warn!(flow = %self.flow, status = %r.status(), "stream refused for now; retrying");
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
                        flowsync_protocol::ErrorBody::new(format!("http_{status}"), text)
                    });
                    return Err(Error::Refused {
                        status,
                        body: Box::new(body),
                    });
                }
                Err(e) => {
                    tracing::warn!(flow = %self.flow, error = %e, "stream connect failed; retrying");
                }
            }
            self.failures += 1;
        }
    }
}

/// Ends a byte stream with an error when nothing arrives for `idle`.
fn watchdog(
    bytes: impl Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
    idle: Duration,
) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(Box::pin(bytes), move |mut bytes| async move {
        match tokio::time::timeout(idle, bytes.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(io::Error::other), bytes)),
            Ok(None) => None,
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing received for {idle:?}"),
                )),
                bytes,
            )),
        }
    })
}
