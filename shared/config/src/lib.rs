//! Settings shared by every flowsync process: [`load`] reads a service's settings in
//! layers, and [`Backends::open`] opens the store, bus and presence set they name.

use std::sync::Arc;

use anyhow::Context;
use flowsync_auth::{AuthConfig, AuthMode};
use flowsync_bus::jobs::{JobQueue, JobsConfig};
use flowsync_bus::presence::{PresenceConfig, PresenceSet};
use flowsync_bus::{Bus, BusBackend, BusConfig};
use flowsync_store::{Store, StoreBackend, StoreConfig};
use serde::de::DeserializeOwned;

/// Loads settings: `T`'s defaults, then the TOML file named by `FLOWSYNC_CONFIG`, then
/// environment variables `FLOWSYNC_<SECTION>__<KEY>` (e.g. `FLOWSYNC_STORE__KIND=mongo`).
pub fn load<T: DeserializeOwned>() -> Result<T, config::ConfigError> {
    // The backends' kinds default here too, so setting only `FLOWSYNC_STORE__PATH` (or
    // `__URI` with `__KIND=mongo`) is enough.
    let mut builder = config::Config::builder()
        .set_default("store.kind", "sqlite")?
        .set_default("bus.kind", "memory")?;
    if let Ok(file) = std::env::var("FLOWSYNC_CONFIG") {
        builder = builder.add_source(config::File::with_name(&file));
    }
    builder
        .add_source(
            config::Environment::with_prefix("FLOWSYNC")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()?
        .try_deserialize()
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

/// What a service serves from. A process running several services opens them once and
/// shares them (the in-process bus and presence set exist only in that process).
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
    /// Opens the configured store, bus and presence set.
    pub async fn open(
        store: &StoreBackend,
        write_path: &StoreConfig,
        bus: &BusBackend,
        bus_tuning: &BusConfig,
        presence: &PresenceConfig,
        jobs: &JobsConfig,
    ) -> anyhow::Result<Self> {
        let store = store
            .open(write_path.clone())
            .await
            .context("opening the store")?;
        let bus_backend = bus;
        let (bus, presence) = bus_backend
            .open(bus_tuning, presence)
            .await
            .context("configuring the bus")?;
        let jobs = bus_backend
            .jobs(&bus_tuning.namespace, jobs)
            .context("configuring the job queue")?;
        Ok(Self {
            store,
            bus,
            presence,
            jobs,
        })
    }
}
