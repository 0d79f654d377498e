//! Opening what a service runs on, from its settings: each service opens only what it
//! needs (the gateway no job queue, the runner no presence set).

use std::sync::Arc;

use anyhow::Context;
use flowsync_auth::{AuthConfig, AuthMode};
use flowsync_bus::Bus;
use flowsync_bus::jobs::JobQueue;
use flowsync_bus::presence::PresenceSet;
use flowsync_store::Store;

use crate::Settings;

impl Settings {
    /// Connects to (or opens) the configured store.
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        self.store
            .open(self.write_path.clone())
            .await
            .context("opening the store")
    }

    /// The configured bus.
    pub fn open_bus(&self) -> anyhow::Result<Arc<dyn Bus>> {
        self.bus
            .bus(&self.bus_tuning)
            .context("configuring the bus")
    }

    /// The presence set on the configured bus.
    pub async fn open_presence(&self) -> anyhow::Result<Arc<dyn PresenceSet>> {
        self.bus
            .presence(&self.bus_tuning.namespace, &self.presence)
            .await
            .context("configuring the presence set")
    }

    /// The job queue on the configured bus.
    pub fn open_jobs(&self) -> anyhow::Result<Arc<dyn JobQueue>> {
        self.bus
            .jobs(&self.bus_tuning.namespace, &self.jobs)
            .context("configuring the job queue")
    }
}

/// Everything the API serves from. A process running several services opens them once
/// and shares them (the in-process bus, presence set and queue exist only in that
/// process).
#[derive(Debug, Clone)]
pub struct Backends {
    /// Flows, their log and executions.
    pub store: Store,
    /// Events between processes.
    pub bus: Arc<dyn Bus>,
    /// Who is connected to each flow.
    pub presence: Arc<dyn PresenceSet>,
    /// Execution jobs for the runners.
    pub jobs: Arc<dyn JobQueue>,
}

impl Backends {
    /// Opens the configured store, bus, presence set and job queue.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            store: settings.open_store().await?,
            bus: settings.open_bus()?,
            presence: settings.open_presence().await?,
            jobs: settings.open_jobs()?,
        })
    }
}

/// Refuses to serve without auth beyond this machine (DESIGN §7): auth may be off only on a
/// loopback address (local development, the one binary). `listen` is `host:port`.
pub fn check_exposure(listen: &str, auth: &AuthConfig) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("listen address {listen:?}"))?;
    if auth.mode == AuthMode::Off && !addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {addr} without auth: set FLOWSYNC_AUTH__MODE (DESIGN §7), or listen on 127.0.0.1"
        );
    }
    Ok(())
}
