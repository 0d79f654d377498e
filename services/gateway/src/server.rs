//! The gateway process: `Gateway::build` binds (port 0 in tests), `run` serves until the
//! shutdown future resolves, then drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flowsync_auth::Authenticator;
use flowsync_bus::Bus;
use flowsync_bus::presence::PresenceSet;
use flowsync_config::Settings;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::admission::{Admitted, Slots, admit, events_flow};
use crate::config::{GatewayConfig, SseConfig};
use crate::flows::FlowVersions;
use crate::http::{Head, HeadError, Reply, read_request};
use crate::hub::{HubConfig, Hubs};
use crate::metrics::Metrics;
use crate::stream::{self, End};

/// What the gateway serves from: no job queue.
#[derive(Debug, Clone)]
pub struct Backends {
    /// Read once per flow, for `READY`'s version and `404`s.
    pub store: Arc<dyn FlowVersions>,
    /// Where events come from.
    pub bus: Arc<dyn Bus>,
    /// Where the streams are listed.
    pub presence: Arc<dyn PresenceSet>,
}

impl Backends {
    /// Opens the store, bus and presence set `settings` name.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            store: Arc::new(settings.open_store().await?),
            bus: settings.open_bus()?,
            presence: settings.open_presence().await?,
        })
    }
}

/// A process that runs the API too shares the API's backends.
impl From<flowsync_config::Backends> for Backends {
    fn from(all: flowsync_config::Backends) -> Self {
        Self {
            store: Arc::new(all.store),
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
    pub(crate) slots: Slots,
    /// For `/readyz`.
    bus: Arc<dyn Bus>,
    /// For `/readyz`.
    store: Arc<dyn FlowVersions>,
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

/// Ready: the bus and the store answer. The body says which is not, the log why.
async fn readyz(shared: &Shared) -> Reply {
    let unavailable = |what: &str| {
        Reply::error(
            "503 Service Unavailable",
            "unavailable",
            &format!("the {what} is unavailable"),
        )
        .header("Retry-After", "1")
    };
    if let Err(e) = shared.bus.ping().await {
        tracing::warn!(error = %e, "readyz: the event bus is unavailable");
        return unavailable("event bus");
    }
    if let Err(e) = shared.store.ping().await {
        tracing::warn!(error = %e, "readyz: the store is unavailable");
        return unavailable("store");
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
                store: std::sync::Arc::new(store),
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
