//! Building and running the service: `Application::build` binds (port 0 in tests),
//! `run_until_stopped` serves.

use std::borrow::Cow;
use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use flowsync_auth::Authenticator;
use flowsync_bus::Bus;
use flowsync_bus::jobs::JobQueue;
use flowsync_bus::presence::PresenceSet;
pub use flowsync_config::Backends;
use flowsync_config::Settings;
use flowsync_store::Store;
use tracing::Instrument;

use crate::commits::Commits;
use crate::config::{ApiConfig, HttpLimits};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::routes;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// Flows and their log.
    pub store: Store,
    /// Per-flow commit queues: ops committed in groups, then announced.
    pub commits: Commits,
    /// Where results are announced.
    pub bus: Arc<dyn Bus>,
    /// Who is connected (`GET …/presence`).
    pub presence: Arc<dyn PresenceSet>,
    /// Where executions are queued for the runners.
    pub jobs: Arc<dyn JobQueue>,
    /// Checks tokens.
    pub auth: Authenticator,
    /// HTTP limits.
    pub limits: HttpLimits,
    /// Requests per subject.
    pub limiter: Limiter,
    /// Presence updates per subject.
    pub presence_limiter: Limiter,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

/// CORS for the configured browser origins only (none: no CORS headers at all).
fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([
            "Authorization",
            "Content-Type",
            "If-Match",
            "If-None-Match",
            "Last-Event-ID",
        ])
        .expose_headers(["ETag", "Location", "Retry-After"])
        .max_age(3600)
}

/// What each worker of an HTTP server builds the API's `App` from: the shared state, the
/// CORS origins and the routes a process adds. [`Application`] serves it on its own
/// listener; the one binary on connections it accepted itself ([`crate::handoff`]).
#[derive(Clone)]
pub struct AppFactory<E> {
    state: web::Data<AppState>,
    origins: Vec<String>,
    extra: E,
}

impl<E> std::fmt::Debug for AppFactory<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppFactory")
            .field("origins", &self.origins)
            .finish()
    }
}

impl<E: Fn(&mut web::ServiceConfig) + Clone + Send + 'static> AppFactory<E> {
    /// The API over `backends`, with `extra` routes; refuses auth off beyond loopback.
    pub fn new(config: &ApiConfig, backends: Backends, extra: E) -> anyhow::Result<Self> {
        flowsync_config::check_exposure(&config.listen, &config.auth)?;
        let Backends {
            store,
            bus,
            presence,
            jobs,
        } = backends;
        let auth = Authenticator::new(&config.auth).context("loading auth keys")?;
        // Without auth there are no subjects: per-subject limits would make every local
        // caller share one bucket (DESIGN §7), so only the process-wide ones apply.
        let per_subject = |rate: u32, burst: u32| {
            if auth.is_off() {
                Limiter::new(0, 0)
            } else {
                Limiter::new(rate, burst)
            }
        };
        let metrics = Metrics::new();
        let state = web::Data::new(AppState {
            commits: Commits::new(store.clone(), bus.clone(), metrics.clone()),
            store,
            bus,
            presence,
            jobs,
            limiter: per_subject(config.http.rate_per_second, config.http.rate_burst),
            presence_limiter: per_subject(
                config.http.presence_per_second,
                config.http.presence_per_second,
            ),
            auth,
            limits: config.http.clone(),
            metrics,
        });
        Ok(Self {
            state,
            origins: config.http.cors_origins.clone(),
            extra,
        })
    }

    /// The state every handler shares.
    pub fn state(&self) -> &web::Data<AppState> {
        &self.state
    }

    /// One worker's `App`.
    pub fn app(
        &self,
    ) -> App<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody + use<E>>,
            Error = actix_web::Error,
            InitError = (),
        > + use<E>,
    > {
        let metrics = self.state.metrics.clone();
        App::new()
            // Counts every response by route pattern (not raw path: bounded labels).
            .wrap_fn(move |req, srv| {
                let route: Cow<'static, str> = match routes::documented_pattern(req.path()) {
                    Some(pattern) => pattern.into(),
                    // Pages and the one binary's own routes (rare): actix's resource map.
                    None => req.match_pattern().map_or("unmatched".into(), Cow::Owned),
                };
                // Any method is a label value a client picks: unknown ones are one value.
                let method = method_label(req.method());
                // A span per request, continuing the caller's trace (W3C `traceparent`).
                let span = tracing::info_span!(
                    "request",
                    http.method = %method,
                    http.route = %route,
                    http.status = tracing::field::Empty,
                );
                if let Some(parent) = req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                {
                    flowsync_telemetry::continue_from(&span, parent);
                }
                let response = span.in_scope(|| srv.call(req));
                let metrics = metrics.clone();
                async move {
                    let response = response.await?;
                    tracing::Span::current().record("http.status", response.status().as_u16());
                    metrics
                        .requests
                        .with_label_values(&[&*route, method, response.status().as_str()])
                        .inc();
                    Ok(response)
                }
                .instrument(span)
            })
            .wrap(cors(&self.origins))
            .configure(self.extra.clone())
            .configure(routes::configure(self.state.clone()))
    }
}

/// A request method as a metrics label: the standard ones, every other one `OTHER`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// The API service, bound and ready to serve.
pub struct Application {
    port: u16,
    server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish()
    }
}

impl Application {
    /// Opens the backends `settings` name and binds the listener.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let backends = Backends::open(settings).await?;
        Self::with_backends(&ApiConfig::from_settings(settings), backends)
    }

    /// Binds the listener over backends opened by the caller (tests).
    pub fn with_backends(config: &ApiConfig, backends: Backends) -> anyhow::Result<Self> {
        Self::with_routes(config, backends, |_| {})
    }

    /// Like [`with_backends`](Self::with_backends), serving `extra` routes beside the API's
    /// (the one binary mounts the event streams there).
    pub fn with_routes(
        config: &ApiConfig,
        backends: Backends,
        extra: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    ) -> anyhow::Result<Self> {
        let factory = AppFactory::new(config, backends, extra)?;
        let listener = TcpListener::bind(&config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || factory.app())
            // Small writes go out at once: a `202` would otherwise wait for the peer's
            // delayed ACK (~40 ms) behind Nagle.
            .on_connect(|conn, _| {
                if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                    let _ = tcp.set_nodelay(true);
                }
            })
            .listen(listener)?
            .run();
        Ok(Self { port, server })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from outside (tests): `stop(false)` drops every connection now.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
