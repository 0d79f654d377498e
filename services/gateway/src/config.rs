//! Settings: defaults, then an optional TOML file (`FLOWSYNC_CONFIG`), then environment
//! variables `FLOWSYNC_<SECTION>__<KEY>` (e.g. `FLOWSYNC_SSE__HEARTBEAT=15`) — the same
//! sources and names as the API's, so one deployment configures both alike.

use std::time::Duration;

use flowsync_auth::AuthConfig;
use flowsync_bus::presence::PresenceConfig;
use flowsync_bus::{BusBackend, BusConfig};
use flowsync_store::{StoreBackend, StoreConfig};
use serde::Deserialize;

/// Everything the gateway is configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Where flows are stored: read once per flow for `READY`'s version and 404s.
    pub store: StoreBackend,
    /// Store settings (only its timeouts matter here).
    pub write_path: StoreConfig,
    /// Where events come from.
    pub bus: BusBackend,
    /// Bus history and channel settings.
    pub bus_tuning: BusConfig,
    /// Presence entry lifetime and refresh.
    pub presence: PresenceConfig,
    /// Token checking: the API's rules.
    pub auth: AuthConfig,
    /// Streams and their limits.
    pub sse: SseConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8082".into(),
            store: StoreBackend::default(),
            write_path: StoreConfig::default(),
            bus: BusBackend::default(),
            bus_tuning: BusConfig::default(),
            presence: PresenceConfig::default(),
            auth: AuthConfig::default(),
            sse: SseConfig::default(),
        }
    }
}

/// How streams behave and what bounds them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// A `: ping` comment this often keeps proxies from closing idle streams.
    #[serde(with = "secs")]
    pub heartbeat: Duration,
    /// The `retry:` hint: how long a browser waits before reconnecting, in ms.
    pub retry_ms: u64,
    /// Frames a client may be behind its flow before it is disconnected (it resumes with
    /// `Last-Event-ID`). Shared per flow: this bounds memory, not a per-client copy.
    pub client_queue: usize,
    /// A write that cannot finish this long (the client stopped reading) disconnects it.
    #[serde(with = "secs")]
    pub write_timeout: Duration,
    /// Open streams per process; beyond, `503`.
    pub max_connections: usize,
    /// Open streams per token subject; beyond, `429`.
    pub max_connections_per_subject: usize,
    /// Largest request head.
    pub max_head_bytes: usize,
    /// How long a client may take to send its request head.
    #[serde(with = "secs")]
    pub head_timeout: Duration,
    /// On SIGTERM, streams are closed spread over this long, so their reconnects spread
    /// over the other gateways.
    #[serde(with = "secs")]
    pub drain: Duration,
    /// Browser origins allowed to open streams cross-origin; none: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Streams of one flow on this gateway whose joins and leaves are announced as
    /// `PRESENCE` events; beyond, streams are only listed by `GET …/presence` (each
    /// announcement reaches every stream: N viewers would cost N² deliveries).
    pub presence_announce_limit: usize,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            retry_ms: 2000,
            client_queue: 1024,
            write_timeout: Duration::from_secs(30),
            max_connections: 50_000,
            max_connections_per_subject: 100,
            max_head_bytes: 8192,
            head_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            cors_origins: vec![],
            presence_announce_limit: 100,
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        f64::deserialize(d).map(Duration::from_secs_f64)
    }
}

impl GatewayConfig {
    /// Loads the settings: defaults, the file named by `FLOWSYNC_CONFIG`, the environment.
    pub fn load() -> Result<Self, config::ConfigError> {
        flowsync_config::load()
    }
}
