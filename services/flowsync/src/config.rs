//! The one binary's settings: defaults, then a TOML file (`--config` or `FLOWSYNC_CONFIG`),
//! then `FLOWSYNC_<SECTION>__<KEY>` variables, then the command-line flags.

use std::path::PathBuf;

use flowsync_api::config::HttpLimits;
use flowsync_auth::AuthConfig;
use flowsync_bus::BusConfig;
use flowsync_bus::jobs::JobsConfig;
use flowsync_bus::presence::PresenceConfig;
use flowsync_gateway::config::SseConfig;
use flowsync_runner::RunnerConfig;
use flowsync_store::StoreConfig;
use serde::Deserialize;

/// Everything the one binary is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemConfig {
    /// Address of the API and the event streams (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// Token checking; off only on a loopback address.
    pub auth: AuthConfig,
    /// HTTP limits of the API.
    pub http: HttpLimits,
    /// Streams and their limits.
    pub sse: SseConfig,
    /// Write-path settings and canvas limits.
    pub write_path: StoreConfig,
    /// In-process bus history.
    pub bus_tuning: BusConfig,
    /// Presence entry lifetime.
    pub presence: PresenceConfig,
    /// The execution job queue.
    pub jobs: JobsConfig,
    /// The flow runner (parallelism, the `llm` endpoint).
    pub runner: RunnerConfig,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: crate::default_data_dir(),
            auth: AuthConfig::default(),
            http: HttpLimits::default(),
            sse: SseConfig::default(),
            write_path: StoreConfig::default(),
            bus_tuning: BusConfig::default(),
            presence: PresenceConfig::default(),
            jobs: JobsConfig::default(),
            runner: RunnerConfig::default(),
        }
    }
}

/// flowsync: the real-time backbone for collaborative flow canvases, whole, in one
/// process (API and SSE event streams on one port, an embedded store, an in-process bus).
///
/// Every setting can also come from a TOML file or a `FLOWSYNC_<SECTION>__<KEY>`
/// environment variable (e.g. `FLOWSYNC_AUTH__MODE=hs256`,
/// `FLOWSYNC_AUTH__HS256_SECRET=…`, `FLOWSYNC_SSE__HEARTBEAT=15`); see the README's
/// configuration tables. Flags win over both.
#[derive(Debug, clap::Parser)]
#[command(name = "flowsync", version)]
pub struct Cli {
    /// Address to listen on. Without auth only a loopback address is allowed.
    #[arg(long, env = "FLOWSYNC_LISTEN")]
    pub listen: Option<String>,
    /// Directory of the embedded store (created when missing) [default: ./data].
    #[arg(long, env = "FLOWSYNC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file of settings (sections as in the README: auth, http, sse, write_path…).
    #[arg(long, env = "FLOWSYNC_CONFIG")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The settings: defaults, the file, the environment, these flags.
    pub fn settings(&self) -> Result<SystemConfig, config::ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = &self.config {
            builder = builder.add_source(config::File::from(file.as_path()));
        }
        let mut settings: SystemConfig = builder
            .add_source(
                config::Environment::with_prefix("FLOWSYNC")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    // Read by clap (they are flags too) or by the layers themselves.
                    .source(Some(
                        std::env::vars()
                            .filter(|(k, _)| {
                                !["FLOWSYNC_CONFIG", "FLOWSYNC_LOG_JSON"].contains(&k.as_str())
                            })
                            .collect(),
                    )),
            )
            .build()?
            .try_deserialize()?;
        if let Some(listen) = &self.listen {
            settings.listen = listen.clone();
        }
        if let Some(dir) = &self.data_dir {
            settings.data_dir = dir.clone();
        }
        Ok(settings)
    }
}
