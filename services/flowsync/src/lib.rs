//! flowsync in one process (DESIGN §2 `services/flowsync`): the API and the SSE gateway on
//! one port, over an embedded SQLite store and the in-process bus — no Redis, no MongoDB.
//! The flow runner runs in the same process, on an in-process job queue.
//!
//! # Layout
//! - [`config`]: the command line; the settings are the model every program shares.
//! - this module: [`System::build`] opens the backends once, mounts the event streams into
//!   the API's HTTP server, and refuses to run without auth beyond loopback.

use actix_web::{HttpRequest, HttpResponse, web};
use flowsync_api::config::ApiConfig;
use flowsync_api::startup::Application;
use flowsync_bus::BusBackend;
use flowsync_config::Backends;
use flowsync_gateway::GatewayConfig;
use flowsync_gateway::http::Head;
use flowsync_gateway::server::Streams;
use flowsync_runner::Runner;
use flowsync_store::StoreBackend;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

pub mod config;

pub use flowsync_config::Settings;

/// The whole system, bound and ready to serve.
#[derive(Debug)]
pub struct System {
    app: Application,
    runner: Runner,
    backends: Backends,
}

impl System {
    /// Opens the store under the data directory and the in-process bus, and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        flowsync_config::check_exposure(&settings.listen, &settings.auth)?;
        let settings = Settings {
            store: StoreBackend::Sqlite {
                path: settings.data_dir.join("flowsync.db"),
            },
            bus: BusBackend::Memory,
            ..settings
        };
        let backends = Backends::open(&settings).await?;
        requeue_unfinished(&backends).await?;
        let streams = Streams::new(
            &GatewayConfig::from_settings(&settings),
            backends.clone().into(),
        )?;
        let runner = Runner::new(
            backends.store.clone(),
            backends.bus.clone(),
            backends.jobs.clone(),
            settings.runner.clone(),
        );
        let streams = web::Data::new(streams);
        let app = Application::with_routes(
            &ApiConfig::from_settings(&settings),
            backends.clone(),
            move |cfg| {
                // Every method: the gateway answers those it does not serve (405).
                cfg.app_data(streams.clone())
                    .route("/v1/flows/{flow_id}/events", web::route().to(events));
            },
        )?;
        Ok(Self {
            app,
            runner,
            backends,
        })
    }

    /// The store, bus, presence set and job queue the system runs on (for tests that play
    /// a process that dies between two steps).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.app.port()
    }

    /// Stops the system from outside (tests): `stop(false)` is a crash as far as clients
    /// can tell.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.app.handle()
    }

    /// Serves (and runs flows) until SIGINT or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let runner = self.runner;
        let running = tokio::spawn(async move { runner.run(std::future::pending()).await });
        let served = self.app.run_until_stopped().await;
        running.abort();
        served
    }
}

/// The in-process job queue starts empty: executions a previous run left `queued` or
/// `running` are queued again (the runner keeps nodes that already succeeded).
async fn requeue_unfinished(backends: &Backends) -> anyhow::Result<()> {
    const MOST: usize = 100_000;
    let unfinished = backends.store.unfinished_executions(MOST).await?;
    if unfinished.len() == MOST {
        tracing::warn!("{MOST} unfinished executions queued again; any more wait for a restart");
    }
    for (flow, execution) in &unfinished {
        backends.jobs.enqueue(flow, execution).await?;
    }
    if !unfinished.is_empty() {
        tracing::info!(
            count = unfinished.len(),
            "unfinished executions queued again"
        );
    }
    Ok(())
}

/// `GET /v1/flows/{id}/events`: the gateway answers into a pipe; its response head becomes
/// actix's, the rest streams as the body.
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
