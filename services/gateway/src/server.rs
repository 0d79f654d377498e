//! The gateway process: `Gateway::build` binds (port 0 in tests), `run` serves until the
//! shutdown future resolves, then drains.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use flowsync_auth::{AuthError, Authenticator, Principal, Scope};
use flowsync_bus::Bus;
use flowsync_bus::presence::{PresenceEntry, PresenceSet};
use flowsync_config::Settings;
use flowsync_protocol::{ActorId, ConnectionId, FlowId};
use flowsync_store::Store;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::{GatewayConfig, SseConfig};
use crate::frame::TypeFilter;
use crate::http::{Head, HeadError, Reply, read_request};
use crate::hub::{HubConfig, Hubs, JoinError};
use crate::metrics::Metrics;
use crate::stream::{self, End};

/// What the gateway serves from: no job queue.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Read once per flow, for `READY`'s version and `404`s.
    pub store: Store,
    /// Where events come from.
    pub bus: Arc<dyn Bus>,
    /// Where the streams are listed.
    pub presence: Arc<dyn PresenceSet>,
}

impl Backends {
    /// Opens the store, bus and presence set `settings` name.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            store: settings.open_store().await?,
            bus: settings.open_bus()?,
            presence: settings.open_presence().await?,
        })
    }
}

/// A process that runs the API too shares the API's backends.
impl From<flowsync_config::Backends> for Backends {
    fn from(all: flowsync_config::Backends) -> Self {
        Self {
            store: all.store,
            bus: all.bus,
            presence: all.presence,
        }
    }
}

/// What every connection of the process shares.
#[derive(Debug)]
pub struct Shared {
    /// The flows' fan-out.
    pub hubs: Arc<Hubs>,
    /// Checks tokens.
    pub auth: Authenticator,
    /// Stream settings.
    pub config: SseConfig,
    /// Counters.
    pub metrics: Metrics,
    /// Drain progress: 0 while serving, then up to [`stream::DRAIN_STEPS`] over the drain
    /// time; a stream closes when it passes the stream's wave.
    pub shutdown: watch::Receiver<u8>,
    /// Open streams, per process and per subject.
    slots: Slots,
    /// For `/readyz`.
    bus: Arc<dyn Bus>,
    /// For `/readyz`.
    store: Store,
}

impl Shared {
    /// The state of a gateway over `backends`, and the sender that drains it.
    fn new(
        config: &GatewayConfig,
        backends: Backends,
    ) -> anyhow::Result<(Arc<Self>, watch::Sender<u8>)> {
        let Backends {
            store,
            bus,
            presence,
        } = backends;
        let metrics = Metrics::new();
        let hubs = Hubs::new(
            bus.clone(),
            store.clone(),
            presence,
            HubConfig {
                client_queue: config.sse.client_queue,
                heartbeat: config.sse.heartbeat,
                presence_refresh: config.presence.refresh,
                announce_limit: config.sse.presence_announce_limit,
            },
            metrics.clone(),
        );
        let (shutdown, rx) = watch::channel(0);
        let shared = Arc::new(Self {
            hubs,
            auth: Authenticator::new(&config.auth).context("loading auth keys")?,
            config: config.sse.clone(),
            metrics,
            shutdown: rx,
            slots: Slots::default(),
            bus,
            store,
        });
        Ok((shared, shutdown))
    }
}

/// Where a connection goes whose request is not an event stream, when the process
/// serves other things on the same port (the one binary: the API), with every byte read
/// from it so far (the request head, and whatever followed).
pub type Elsewhere = Arc<
    dyn Fn(TcpStream, bytes::Bytes) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// The gateway's streams: accepting and serving on sockets ([`run`](Self::run)), draining
/// on shutdown, and answering requests another HTTP server parsed ([`serve`](Self::serve)).
/// The standalone [`Gateway`] is this on a listener of its own; the one binary runs it on
/// its single port, with the other requests handed on ([`Elsewhere`]).
#[derive(Clone)]
pub struct Streams {
    shared: Arc<Shared>,
    /// Tells the streams to drain, in waves.
    shutdown: Arc<watch::Sender<u8>>,
    /// Where the other requests go; `None`: answered here (health, metrics, `404`).
    elsewhere: Option<Elsewhere>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("shared", &self.shared)
            .field("elsewhere", &self.elsewhere.is_some())
            .finish()
    }
}

impl Streams {
    /// A gateway over `backends` (its `listen` setting is not used).
    pub fn new(config: &GatewayConfig, backends: Backends) -> anyhow::Result<Self> {
        let (shared, shutdown) = Shared::new(config, backends)?;
        Ok(Self {
            shared,
            shutdown: Arc::new(shutdown),
            elsewhere: None,
        })
    }

    /// Requests that are not event streams go to `elsewhere`.
    pub fn with_elsewhere(mut self, elsewhere: Elsewhere) -> Self {
        self.elsewhere = Some(elsewhere);
        self
    }

    /// Serves one request another HTTP server parsed (a kept-alive connection of the one
    /// binary's API): the returned pipe yields the raw HTTP response (status line, headers,
    /// then the event stream). Dropping it ends the stream.
    pub fn serve(&self, head: Head) -> tokio::io::DuplexStream {
        let (mut mine, theirs) = tokio::io::duplex(64 * 1024);
        let shared = self.shared.clone();
        tokio::spawn(async move { serve(&shared, &mut mine, Box::new(head)).await });
        theirs
    }

    /// The gateway's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics.clone()
    }

    /// Closes every stream now, without spreading the closes over the drain time (a
    /// process that stops as if it crashed, in tests).
    pub fn close_all(&self) {
        let _ = self.shutdown.send(stream::DRAIN_STEPS);
    }

    /// Accepts on `listener` until `stop` resolves; then stops accepting, closes the
    /// streams spread over the drain time (clients resume elsewhere with `Last-Event-ID`)
    /// and returns once they are closed.
    pub async fn run(&self, listener: TcpListener, stop: impl Future<Output = ()>) {
        let tracker = tokio_util::task::TaskTracker::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => {
                        let _ = socket.set_nodelay(true);
                        tracker.spawn(handle(self.shared.clone(), socket, self.elsewhere.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors or similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut stop => break,
            }
        }
        drop(listener);
        tracing::info!(
            streams = self.shared.metrics.connections.get(),
            drain = ?self.shared.config.drain,
            "draining"
        );
        tracker.close();
        let waves = async {
            let step = self.shared.config.drain / u32::from(stream::DRAIN_STEPS);
            for wave in 1..=stream::DRAIN_STEPS {
                let _ = self.shutdown.send(wave);
                if !tracker.is_empty() {
                    tokio::time::sleep(step).await;
                }
            }
            // Streams stuck in a write end within its timeout.
            tokio::time::sleep(self.shared.config.write_timeout).await;
        };
        tokio::select! {
            () = tracker.wait() => {}
            () = waves => tracing::warn!("streams still open after the drain time; exiting anyway"),
        }
    }
}

/// The SSE gateway, bound and ready to serve.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    streams: Streams,
}

impl Gateway {
    /// Opens the store, bus and presence set `settings` name, and binds the listener.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let backends = Backends::open(settings).await?;
        Self::with_backends(&GatewayConfig::from_settings(settings), backends).await
    }

    /// Binds the listener over backends opened by the caller (tests).
    pub async fn with_backends(config: &GatewayConfig, backends: Backends) -> anyhow::Result<Self> {
        flowsync_config::check_exposure(&config.listen, &config.auth)?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Self {
            listener,
            streams: Streams::new(config, backends)?,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The gateway's counters.
    pub fn metrics(&self) -> Metrics {
        self.streams.metrics()
    }

    /// Serves until SIGINT or SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run(flowsync_telemetry::shutdown_signal()).await
    }

    /// Serves until `stop` resolves, then drains ([`Streams::run`]).
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.streams.run(self.listener, stop).await;
        Ok(())
    }
}

/// One connection: read the head, route it.
async fn handle(shared: Arc<Shared>, mut socket: TcpStream, elsewhere: Option<Elsewhere>) {
    // Boxed, like admission: its read buffer must not stay in every stream's task.
    let read = tokio::time::timeout(
        shared.config.head_timeout,
        Box::pin(read_request(&mut socket, shared.config.max_head_bytes)),
    )
    .await;
    let head = match read {
        Ok(Ok((head, bytes))) => {
            if let Some(elsewhere) = elsewhere
                && events_flow(&head.path).is_none()
            {
                return elsewhere(socket, bytes.into()).await;
            }
            Box::new(head)
        }
        Ok(Err(HeadError::TooLarge)) => {
            let _ = Reply::error(
                "431 Request Header Fields Too Large",
                "head_too_large",
                "the request head is too large",
            )
            .send(&mut socket)
            .await;
            return;
        }
        Ok(Err(HeadError::Malformed(e))) => {
            let _ = Reply::error("400 Bad Request", "bad_request", &e)
                .send(&mut socket)
                .await;
            return;
        }
        Ok(Err(HeadError::Closed(_))) | Err(_) => return,
    };
    serve(&shared, &mut socket, head).await;
}

/// Answers one request on `io` (any byte stream: a socket, or a pipe in the one binary).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    head: Box<Head>,
) {
    let cors = cors_origin(shared, &head);
    let reply = match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/healthz") => Reply::text("200 OK", "ok"),
        ("GET", "/readyz") => Box::pin(readyz(shared)).await,
        ("GET", "/metrics") => Reply {
            content_type: "text/plain; version=0.0.4",
            ..Reply::text("200 OK", shared.metrics.render())
        },
        (method, path) => match events_flow(path) {
            Some(_) if method == "GET" => {
                // Boxed: admission (token check, joining the hub, the store read of a
                // flow's first stream) is over once the stream runs; only the live
                // stream's state stays in this task for its lifetime.
                let admitted = Box::pin(admit(shared, head)).await;
                match admitted {
                    Ok(admitted) => return stream_to(shared, io, cors, admitted).await,
                    Err(reply) => reply,
                }
            }
            Some(_) if method == "OPTIONS" => Reply::text("204 No Content", ""),
            Some(_) => Reply::error(
                "405 Method Not Allowed",
                "method_not_allowed",
                "streams are opened with GET",
            )
            .header("Allow", "GET, OPTIONS"),
            None => Reply::error("404 Not Found", "route_not_found", "no such route"),
        },
    };
    let reply = match cors {
        Some(origin) => reply
            .header("Access-Control-Allow-Origin", origin)
            .header(
                "Access-Control-Allow-Headers",
                "Authorization, Last-Event-ID",
            )
            .header("Vary", "Origin"),
        None => reply,
    };
    // Boxed, like every short-lived part: only the live stream's state stays in the task.
    let _ = Box::pin(reply.send(io)).await;
}

async fn readyz(shared: &Shared) -> Reply {
    if let Err(e) = shared.bus.ping().await {
        return Reply::error("503 Service Unavailable", "unavailable", &e.to_string());
    }
    if let Err(e) = shared.store.ping().await {
        return Reply::error("503 Service Unavailable", "unavailable", &e.to_string());
    }
    Reply::text("200 OK", "ready")
}

/// The configured origin matching the request's `Origin`, if any.
fn cors_origin<'a>(shared: &'a Shared, head: &Head) -> Option<&'a str> {
    let origin = head.origin.as_deref()?;
    shared
        .config
        .cors_origins
        .iter()
        .find(|o| *o == origin)
        .map(String::as_str)
}

/// The flow of `/v1/flows/{id}/events` (the id unparsed).
fn events_flow(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/flows/")?
        .strip_suffix("/events")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// A stream that passed every check and joined its flow. Boxed, so the stream's
/// long-lived state is stored once, not copied into each async frame it passes through.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Holds the stream's place in the connection limits. First, so it is freed before
    /// the membership announces the leave: whoever sees the leave may take the slot.
    _slot: Slot,
    /// What was asked.
    pub(crate) request: stream::Request,
    /// The flow's frames and where they start.
    pub(crate) joined: crate::hub::Joined,
}

/// Checks a stream request and joins its flow; an `Err` is the answer instead.
async fn admit(shared: &Shared, head: Box<Head>) -> Result<Box<Admitted>, Reply> {
    let refuse = |reason: &str| shared.metrics.refused.with_label_values(&[reason]).inc();
    let raw_flow = events_flow(&head.path).unwrap_or_default();
    let flow = FlowId::parse(raw_flow).map_err(|e| {
        refuse("invalid");
        Reply::error("400 Bad Request", "invalid_id", &format!("flow id {e}"))
    })?;
    let filter = match head.query("types") {
        None => TypeFilter::ALL,
        Some(list) => TypeFilter::parse(list).map_err(|e| {
            refuse("invalid");
            Reply::error("400 Bad Request", "invalid_types", &e)
        })?,
    };
    let filter = match head.query("heartbeat") {
        None | Some("comment") => filter,
        Some("event") => filter.with_ping_events(),
        Some(other) => {
            refuse("invalid");
            return Err(Reply::error(
                "400 Bad Request",
                "invalid_heartbeat",
                &format!("heartbeat {other:?}: expected comment or event"),
            ));
        }
    };
    // The header wins: a browser's auto-reconnect sends it with the original URL, whose
    // `last_event_id` query is older.
    let resume = match head
        .last_event_id
        .as_deref()
        .or_else(|| head.query("last_event_id"))
        .map(str::trim)
    {
        None | Some("") => None,
        Some(id) => Some(id.parse().map_err(|e| {
            refuse("invalid");
            Reply::error(
                "400 Bad Request",
                "invalid_last_event_id",
                &format!("Last-Event-ID: {e}"),
            )
        })?),
    };
    let principal = authenticate(shared, &head, &flow).inspect_err(|_| refuse("auth"))?;
    drop(head); // holds the token: gone before the stream runs
    // Without auth there are no subjects (every caller is the local user): only the
    // process's limit applies, or every local tab would share one subject's streams.
    let per_subject = (!shared.auth.is_off()).then_some(shared.config.max_connections_per_subject);
    let slot = shared
        .slots
        .acquire(
            &principal.actor.id,
            shared.config.max_connections,
            per_subject,
        )
        .inspect_err(|_| refuse("limit"))?;
    let connection = ConnectionId::parse(uuid::Uuid::new_v4().simple().to_string())
        .expect("a uuid is a valid id");
    let entry = PresenceEntry {
        connection_id: connection.clone(),
        actor: principal.actor,
        since: chrono::Utc::now(),
    };
    let joined = shared.hubs.join(&flow, entry).await.map_err(|e| match e {
        JoinError::NotFound(flow) => {
            refuse("not_found");
            Reply::error(
                "404 Not Found",
                "flow_not_found",
                &format!("flow {flow} does not exist"),
            )
        }
        JoinError::Unavailable(why) => {
            refuse("unavailable");
            Reply::error("503 Service Unavailable", "unavailable", &why).header("Retry-After", "1")
        }
    })?;
    Ok(Box::new(Admitted {
        request: stream::Request { resume, filter },
        joined,
        _slot: slot,
    }))
}

/// Runs an admitted stream and closes it.
async fn stream_to<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut S,
    cors: Option<&str>,
    mut admitted: Box<Admitted>,
) {
    let end = stream::serve(shared, io, cors, &mut admitted).await;
    tracing::debug!(
        flow_id = %admitted.joined.membership.flow(),
        connection_id = %admitted.joined.membership.connection(),
        end = ?end,
        "stream closed"
    );
    if end != End::ClientGone {
        let _ = io.shutdown().await;
    }
}

fn authenticate(shared: &Shared, head: &Head, flow: &FlowId) -> Result<Principal, Reply> {
    let principal = shared.auth.authenticate(head.token()).map_err(|e| {
        let code = match e {
            AuthError::Expired => "token_expired",
            _ => "unauthorized",
        };
        Reply::error("401 Unauthorized", code, &e.to_string()).header("WWW-Authenticate", "Bearer")
    })?;
    principal
        .check(flow, Scope::Read)
        .map_err(|e| Reply::error("403 Forbidden", "forbidden", &e.to_string()))?;
    Ok(principal)
}

/// Open streams per process and per subject.
#[derive(Debug, Default)]
struct Slots(Arc<Mutex<SlotCounts>>);

#[derive(Debug, Default)]
struct SlotCounts {
    total: usize,
    by_subject: HashMap<ActorId, usize>,
}

/// One open stream's place; freed on drop.
#[derive(Debug)]
struct Slot {
    counts: Arc<Mutex<SlotCounts>>,
    subject: ActorId,
}

impl Slots {
    /// A slot for a stream of `subject`: at most `total` streams in the process and, when
    /// given, `per_subject` per subject.
    fn acquire(
        &self,
        subject: &ActorId,
        total: usize,
        per_subject: Option<usize>,
    ) -> Result<Slot, Reply> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= total {
            return Err(Reply::error(
                "503 Service Unavailable",
                "too_many_connections",
                "this gateway holds as many streams as it may",
            )
            .header("Retry-After", "1"));
        }
        let mine = counts.by_subject.entry(subject.clone()).or_default();
        if let Some(most) = per_subject
            && *mine >= most
        {
            return Err(Reply::error(
                "429 Too Many Requests",
                "too_many_connections",
                &format!("at most {most} streams per subject"),
            )
            .header("Retry-After", "1"));
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot {
            counts: self.0.clone(),
            subject: subject.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.by_subject.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                counts.by_subject.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_paths() {
        assert_eq!(events_flow("/v1/flows/f1/events"), Some("f1"));
        assert_eq!(events_flow("/v1/flows//events"), None);
        assert_eq!(events_flow("/v1/flows/a/b/events"), None);
        assert_eq!(events_flow("/v1/flows/f1"), None);
    }
}
#[cfg(test)]
mod stream_task_size {
    /// Every open stream is one task holding `handle`'s future: its size is most of a
    /// stream's memory (DESIGN §5: ≤ 4 KiB per stream in all). Admission, the replay and
    /// short answers are boxed so they do not count; this keeps it that way.
    #[test]
    fn a_stream_task_stays_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = flowsync_store::StoreBackend::Sqlite {
                path: dir.path().join("x.db"),
            }
            .open(Default::default())
            .await
            .unwrap();
            let config = crate::GatewayConfig {
                listen: "127.0.0.1:0".into(),
                ..Default::default()
            };
            let backends = super::Backends {
                store,
                bus: std::sync::Arc::new(flowsync_bus::memory::MemoryBus::new(Default::default())),
                presence: std::sync::Arc::new(flowsync_bus::presence::MemoryPresence::new(
                    &config.presence,
                )),
            };
            let g = super::Streams::new(&config, backends).unwrap();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let s = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let task = super::handle(g.shared.clone(), s, None);
            assert!(
                size(&task) <= 1536,
                "a stream's task is {} bytes",
                size(&task)
            );
        });
    }
}
