//! Building and running the service: `Application::build` binds (port 0 in tests),
//! `run_until_stopped` serves.

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use flowsync_auth::Authenticator;
use flowsync_bus::Bus;
use flowsync_bus::memory::MemoryBus;
use flowsync_bus::redis::RedisBus;
use flowsync_store::mongo::MongoBackend;
use flowsync_store::sqlite::SqliteBackend;
use flowsync_store::{Backend, Store};

use crate::config::{ApiConfig, BusBackend, HttpLimits, StoreBackend};
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::routes;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// Flows and their log.
    pub store: Store,
    /// Where results are announced.
    pub bus: Arc<dyn Bus>,
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

/// Opens the configured store and bus.
pub async fn open_backends(config: &ApiConfig) -> anyhow::Result<(Store, Arc<dyn Bus>)> {
    let backend: Arc<dyn Backend> = match &config.store {
        StoreBackend::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Arc::new(
                SqliteBackend::open(path).with_context(|| format!("opening {}", path.display()))?,
            )
        }
        StoreBackend::Mongo(mongo) => Arc::new(
            MongoBackend::connect(mongo)
                .await
                .context("connecting to MongoDB")?,
        ),
    };
    let store = Store::new(backend, config.write_path.clone())
        .await
        .context("preparing the store")?;
    let bus: Arc<dyn Bus> = match &config.bus {
        BusBackend::Memory => Arc::new(MemoryBus::new(config.bus_tuning.clone())),
        BusBackend::Redis { url } => Arc::new(
            RedisBus::connect(url, config.bus_tuning.clone()).context("configuring Redis")?,
        ),
    };
    Ok((store, bus))
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
    /// Opens the backends and binds the listener.
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        let (store, bus) = open_backends(&config).await?;
        Self::with_backends(&config, store, bus)
    }

    /// Binds the listener over backends opened by the caller (tests, the one binary).
    pub fn with_backends(
        config: &ApiConfig,
        store: Store,
        bus: Arc<dyn Bus>,
    ) -> anyhow::Result<Self> {
        let state = web::Data::new(AppState {
            store,
            bus,
            auth: Authenticator::new(&config.auth).context("loading auth keys")?,
            limits: config.http.clone(),
            limiter: Limiter::new(config.http.rate_per_second, config.http.rate_burst),
            presence_limiter: Limiter::new(
                config.http.presence_per_second,
                config.http.presence_per_second,
            ),
            metrics: Metrics::new(),
        });
        let listener = TcpListener::bind(&config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let origins = config.http.cors_origins.clone();
        let server = HttpServer::new(move || {
            let metrics = state.metrics.clone();
            App::new()
                // Counts every response by route pattern (not raw path: bounded labels).
                .wrap_fn(move |req, srv| {
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    let method = req.method().to_string();
                    let response = srv.call(req);
                    let metrics = metrics.clone();
                    async move {
                        let response = response.await?;
                        metrics
                            .requests
                            .with_label_values(&[
                                route.as_str(),
                                method.as_str(),
                                response.status().as_str(),
                            ])
                            .inc();
                        Ok(response)
                    }
                })
                .wrap(cors(&origins))
                .configure(routes::configure(state.clone()))
        })
        .listen(listener)?
        .run();
        Ok(Self { port, server })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
