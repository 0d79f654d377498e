//! What the gateway is configured with: its sections of the settings model
//! ([`flowsync_config::Settings`]); its backends are opened from the others.

use flowsync_auth::AuthConfig;
use flowsync_bus::presence::PresenceConfig;
pub use flowsync_config::SseConfig;
use flowsync_config::{Program, Settings};

/// The gateway's own settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Token checking: the API's rules.
    pub auth: AuthConfig,
    /// Streams and their limits.
    pub sse: SseConfig,
    /// How often the streams' presence entries are refreshed.
    pub presence: PresenceConfig,
}

impl GatewayConfig {
    /// The gateway's sections of `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            listen: settings.listen.clone(),
            auth: settings.auth.clone(),
            sse: settings.sse.clone(),
            presence: settings.presence.clone(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::from_settings(&Settings::defaults(Program::Gateway))
    }
}
