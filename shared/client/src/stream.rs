//! [`EventStream`]: a flow's SSE stream that survives disconnects (DESIGN §3 "Resume").
//!
//! Framing is [`flowsync_protocol::sse`]'s (no allocation per event); this module adds what
//! a long-lived client needs: reconnects with backoff, resume by `Last-Event-ID`, and a
//! watchdog that treats a silent connection (no event, no `: ping`) as dead.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use flowsync_protocol::sse::{self, Decoder};
use flowsync_protocol::{Event, EventBody, EventType, FlowId};
use reqwest::StatusCode;
use tokio::time::{Instant, Sleep};

use crate::{Client, Error};

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
    connection: Option<Connection>,
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
            if self.connection.is_none() {
                self.connection = Some(self.connect().await?);
            }
            let connection = self.connection.as_mut().expect("connected");
            let sse = match connection.next().await {
                Ok(sse) => sse,
                Err(Broken::TooLarge(e)) => {
                    // The decoder cannot go on past it: a later call starts afresh.
                    self.connection = None;
                    return Err(Error::Protocol(e.to_string()));
                }
                Err(broken) => {
                    tracing::debug!(flow = %self.flow, %broken, "stream broke; reconnecting");
                    self.connection = None;
                    self.failures += 1;
                    continue;
                }
            };
            self.failures = 0;
            let event: Event = serde_json::from_slice(sse.data)
                .map_err(|e| Error::Protocol(format!("{} event: {e}", sse.event)))?;
            match &event.body {
                // Where this connection started: before any sequenced event, a reconnect
                // resumes from here, so it cannot skip what it missed.
                EventBody::Ready(ready) => {
                    let head = format!("{}-{}", ready.epoch, ready.seq);
                    self.last_event_id.get_or_insert_with(|| head.clone());
                    self.head = Some(head);
                }
                // The old position is gone; the stream goes on live from its head.
                EventBody::Resync(_) => self.last_event_id = self.head.clone(),
                // Only sequenced events move the resume position (the last id of the
                // stream carries over events without one).
                _ if event.seq.is_some() && !sse.id.is_empty() => {
                    let last = self.last_event_id.get_or_insert_default();
                    last.clear();
                    last.push_str(sse.id);
                }
                _ => {}
            }
            return Ok(event);
        }
    }

    /// Opens a connection, waiting between failed attempts; returns it once the gateway
    /// answered `200`.
    async fn connect(&mut self) -> Result<Connection, Error> {
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
                    let config = self.client.config();
                    return Ok(Connection::new(
                        r,
                        config.idle_timeout,
                        config.max_event_bytes,
                    ));
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

/// One open stream: its response body, read into a decoder, and a watchdog.
struct Connection {
    response: reqwest::Response,
    sse: Decoder,
    idle: Duration,
    /// When the wait for the next chunk began.
    waiting_since: Instant,
    /// Fires at `waiting_since + idle` or earlier: one timer per idle period, not one per
    /// chunk.
    watchdog: Pin<Box<Sleep>>,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("nothing received for {0:?}")]
    Silent(Duration),
    #[error("the stream ended")]
    Ended,
    #[error(transparent)]
    TooLarge(#[from] sse::TooLarge),
}

impl Connection {
    fn new(response: reqwest::Response, idle: Duration, max_event_bytes: usize) -> Self {
        let now = Instant::now();
        Self {
            response,
            sse: Decoder::new(max_event_bytes),
            idle,
            waiting_since: now,
            watchdog: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    /// The next event, reading as many chunks as it takes.
    async fn next(&mut self) -> Result<sse::Event<'_>, Broken> {
        while !self.sse.advance()? {
            // Silence counts while this waits, not while the caller was busy elsewhere.
            self.waiting_since = Instant::now();
            let chunk = loop {
                tokio::select! {
                    biased;
                    chunk = self.response.chunk() => break chunk?.ok_or(Broken::Ended)?,
                    () = &mut self.watchdog => {
                        let due = self.waiting_since + self.idle;
                        if Instant::now() >= due {
                            return Err(Broken::Silent(self.idle));
                        }
                        self.watchdog.as_mut().reset(due);
                    }
                }
            };
            self.sse.push(&chunk);
        }
        Ok(self.sse.event().expect("advance stopped at an event"))
    }
}
