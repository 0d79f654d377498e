//! Settings: defaults, then an optional TOML file (`FLOWSYNC_CONFIG`), then environment
//! variables `FLOWSYNC_<SECTION>__<KEY>` (e.g. `FLOWSYNC_STORE__KIND=mongo`).

use flowsync_auth::AuthConfig;
pub use flowsync_bus::BusBackend;
use flowsync_bus::BusConfig;
use flowsync_bus::jobs::JobsConfig;
use flowsync_bus::presence::PresenceConfig;
pub use flowsync_store::StoreBackend;
use flowsync_store::StoreConfig;
use serde::Deserialize;

/// Everything the API service is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Where flows are stored.
    pub store: StoreBackend,
    /// How events travel.
    pub bus: BusBackend,
    /// Write-path settings and canvas limits.
    pub write_path: StoreConfig,
    /// Bus history and channel settings.
    pub bus_tuning: BusConfig,
    /// Presence entry lifetime (read by `GET …/presence`).
    pub presence: PresenceConfig,
    /// The execution job queue.
    pub jobs: JobsConfig,
    /// Token checking.
    pub auth: AuthConfig,
    /// HTTP limits.
    pub http: HttpLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            store: StoreBackend::default(),
            bus: BusBackend::default(),
            write_path: StoreConfig::default(),
            bus_tuning: BusConfig::default(),
            presence: PresenceConfig::default(),
            jobs: JobsConfig::default(),
            auth: AuthConfig::default(),
            http: HttpLimits::default(),
        }
    }
}

/// Limits of HTTP requests (DESIGN §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest presence `state`, in bytes.
    pub max_presence_bytes: usize,
    /// Longest page of `GET /v1/flows` and `/history`.
    pub max_page: usize,
    /// Requests per second per subject (token `sub`); 0 turns the limit off.
    pub rate_per_second: u32,
    /// Requests a subject may send at once above the steady rate.
    pub rate_burst: u32,
    /// Presence updates per second per subject; 0 turns the limit off.
    pub presence_per_second: u32,
    /// Browser origins allowed by CORS (e.g. `https://app.example.com`); none: no CORS.
    pub cors_origins: Vec<String>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_presence_bytes: 4096,
            max_page: 1000,
            rate_per_second: 100,
            rate_burst: 200,
            presence_per_second: 30,
            cors_origins: vec![],
        }
    }
}

impl ApiConfig {
    /// Loads the settings: defaults, the file named by `FLOWSYNC_CONFIG`, the environment.
    pub fn load() -> Result<Self, config::ConfigError> {
        flowsync_config::load()
    }
}
