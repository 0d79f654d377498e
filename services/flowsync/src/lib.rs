//! flowsync in one process (DESIGN §2 `services/flowsync`): the API and the SSE gateway on
//! one port, over an embedded SQLite store and the in-process bus — no Redis, no MongoDB.
//! The flow runner runs in the same process, on an in-process job queue.
//!
//! The port is the gateway's: it reads each connection's request head once; an event
//! stream stays on its socket, served by the gateway's own code exactly as the standalone
//! gateway serves it (shared frames, a few KiB per stream, closes noticed at once, drained
//! on shutdown); every other connection is handed, with the bytes already read, to the
//! API's actix-web `App` on worker threads of its own (`flowsync_api::handoff`).
//!
//! # Layout
//! - [`config`]: the command line; the settings are the model every program shares.
//! - this module: [`System::build`] opens the backends once, binds the port, and refuses to
//!   run without auth beyond loopback; [`System::run`] serves until stopped, then drains.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use anyhow::Context;
use flowsync_api::config::ApiConfig;
use flowsync_api::handoff::Handoff;
use flowsync_api::startup::AppFactory;
use flowsync_bus::BusBackend;
use flowsync_config::Backends;
use flowsync_gateway::GatewayConfig;
use flowsync_gateway::http::Head;
use flowsync_gateway::server::Streams;
use flowsync_runner::Runner;
use flowsync_store::StoreBackend;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

pub mod config;

pub use flowsync_config::Settings;

/// The whole system, bound and ready to serve.
#[derive(Debug)]
pub struct System {
    /// The one port.
    listener: tokio::net::TcpListener,
    /// Event streams, served on their sockets; every other request goes to `api`.
    streams: Streams,
    /// The API's workers, serving the connections the listener hands on.
    api: Arc<Handoff>,
    runner: Runner,
    backends: Backends,
    stop: watch::Sender<Stop>,
}

/// How the system was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Not yet.
    Running,
    /// Drain the streams over `sse.drain`; the runner finishes its execution.
    Graceful,
    /// At once, as far as clients can tell: streams closed, the runner dropped mid-job.
    Crash,
}

/// Stops a running [`System`] from outside (tests).
#[derive(Debug, Clone)]
pub struct SystemHandle {
    stop: watch::Sender<Stop>,
    streams: Streams,
}

impl SystemHandle {
    /// `stop(true)` drains as on SIGTERM; `stop(false)` is a crash as far as clients can
    /// tell. Returns at once; the system's `run` returns when it has stopped.
    pub fn stop(&self, graceful: bool) {
        if !graceful {
            self.streams.close_all();
        }
        self.stop.send_replace(if graceful {
            Stop::Graceful
        } else {
            Stop::Crash
        });
    }
}

impl System {
    /// Opens the store under the data directory and the in-process bus, and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Settings {
            store: StoreBackend::Sqlite {
                path: settings.data_dir.join("flowsync.db"),
            },
            bus: BusBackend::Memory,
            ..settings
        };
        flowsync_config::check_exposure(&settings.listen, &settings.auth)?;
        let backends = Backends::open(&settings).await?;
        // The in-process queue starts empty: executions a previous run left queued or
        // running are queued again (the runner keeps nodes that already succeeded).
        flowsync_runner::requeue(&backends.store, &*backends.jobs, true).await?;
        Self::with_backends(&settings, backends).await
    }

    /// Binds over backends opened by the caller (tests that share a bus between
    /// processes); `settings`' store and bus are not used.
    pub async fn with_backends(settings: &Settings, backends: Backends) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let runner = Runner::new(
            backends.store.clone(),
            backends.bus.clone(),
            backends.jobs.clone(),
            settings.runner.clone(),
        );
        let streams = Streams::new(
            &GatewayConfig::from_settings(settings),
            backends.clone().into(),
        )?;
        // A stream asked for on a kept-alive connection the API already serves: the
        // gateway answers it through a pipe (the same code, not the socket path).
        let fallback = web::Data::new(streams.clone());
        let factory = AppFactory::new(
            &ApiConfig::from_settings(settings),
            backends.clone(),
            move |cfg: &mut web::ServiceConfig| {
                // Every method: the gateway answers those it does not serve (405).
                cfg.app_data(fallback.clone())
                    .route("/v1/flows/{flow_id}/events", web::route().to(events))
                    // Before the API's own: the API's metrics and the streams'.
                    .route("/metrics", web::get().to(metrics));
            },
        )?;
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let api = Handoff::start(&factory, workers).context("starting the API's workers")?;
        let streams = streams.with_elsewhere({
            let api = api.clone();
            Arc::new(move |socket, read| {
                let api = api.clone();
                Box::pin(async move { api.serve(socket, read).await })
            })
        });
        Ok(Self {
            listener,
            streams,
            api,
            runner,
            backends,
            stop: watch::channel(Stop::Running).0,
        })
    }

    /// The store, bus, presence set and job queue the system runs on (for tests that play
    /// a process that dies between two steps).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The event streams' counters.
    pub fn stream_metrics(&self) -> flowsync_gateway::metrics::Metrics {
        self.streams.metrics()
    }

    /// Stops the system from outside (tests).
    pub fn handle(&self) -> SystemHandle {
        SystemHandle {
            stop: self.stop.clone(),
            streams: self.streams.clone(),
        }
    }

    /// Serves (and runs flows) until SIGINT or SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.handle();
        tokio::spawn(async move {
            flowsync_telemetry::shutdown_signal().await;
            handle.stop(true);
        });
        self.run().await;
        Ok(())
    }

    /// Serves until [`SystemHandle::stop`]: then stops accepting, drains the streams
    /// (clients resume with `Last-Event-ID` once it is back), lets the API finish its
    /// requests and the runner its execution.
    pub async fn run(self) {
        let mut stopped = self.stop.subscribe();
        let (runner_stop, runner_stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = self.runner;
        let running = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = runner_stopped.await;
                })
                .await;
        });
        let mut how = stopped.clone();
        self.streams
            .run(self.listener, async move {
                let _ = how.wait_for(|s| *s != Stop::Running).await;
            })
            .await;
        self.api.stop().await;
        if *stopped.borrow_and_update() == Stop::Crash {
            running.abort();
        } else {
            let _ = runner_stop.send(());
            let _ = running.await;
        }
    }
}

/// `GET /metrics`: the API's counters, then the streams'.
async fn metrics(
    api: web::Data<flowsync_api::startup::AppState>,
    streams: web::Data<Streams>,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(
            [
                api.metrics.render().into_bytes(),
                streams.metrics().render(),
            ]
            .concat(),
        )
}

/// `GET /v1/flows/{id}/events` on a connection the API already serves (a browser reusing a
/// kept-alive connection): the gateway answers into a pipe; its response head becomes
/// actix's, the rest streams as the body. A stream opened on a new connection never comes
/// here: the listener gives it the socket.
async fn events(req: HttpRequest, streams: web::Data<Streams>) -> HttpResponse {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_owned(), |p| p.as_str().to_owned());
    let head = Head::from_parts(req.method().as_str(), &target, |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let mut pipe = streams.serve(head);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (status, headers, body_start) = loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return HttpResponse::ServiceUnavailable().finish(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut parsed = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut parsed);
        if let Ok(httparse::Status::Complete(len)) = response.parse(&buf) {
            let headers: Vec<(String, Vec<u8>)> = response
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect();
            break (response.code.unwrap_or(500), headers, len);
        }
        if buf.len() > 16 * 1024 {
            return HttpResponse::InternalServerError().finish();
        }
    };
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    let mut event_stream = false;
    for (name, value) in &headers {
        // actix frames the body itself; the gateway's own framing headers do not apply.
        if ["content-length", "connection"].contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        event_stream |= value.starts_with(b"text/event-stream");
        response.insert_header((name.as_str(), value.as_slice()));
    }
    let first = bytes::Bytes::copy_from_slice(&buf[body_start..]);
    if !event_stream {
        // A short answer: the rest of it, then the gateway closes the pipe.
        let mut body = first.to_vec();
        let _ = pipe.read_to_end(&mut body).await;
        return response.body(body);
    }
    let rest = tokio_util::io::ReaderStream::new(pipe);
    response
        .streaming(futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest))
}
