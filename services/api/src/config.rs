//! What the API's HTTP layer is configured with: its sections of the settings model
//! ([`flowsync_config::Settings`]); the backends are opened from the others.

use flowsync_auth::AuthConfig;
pub use flowsync_config::HttpLimits;
use flowsync_config::{Program, Settings};

/// The API's own settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Token checking.
    pub auth: AuthConfig,
    /// HTTP limits.
    pub http: HttpLimits,
}

impl ApiConfig {
    /// The API's sections of `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            listen: settings.listen.clone(),
            auth: settings.auth.clone(),
            http: settings.http.clone(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self::from_settings(&Settings::defaults(Program::Api))
    }
}
