//! The one binary's command line. Its settings are the model every program shares
//! ([`flowsync_config::Settings`]): defaults, a TOML file (`--config` or
//! `FLOWSYNC_CONFIG`), `FLOWSYNC_<SECTION>__<KEY>` variables, then these flags.

use std::path::PathBuf;

use flowsync_config::load::Sources;
use flowsync_config::{Program, Settings, SettingsError};

/// flowsync: the real-time backbone for collaborative flow canvases, whole, in one
/// process (API and SSE event streams on one port, an embedded store, an in-process bus).
///
/// Every setting can also come from a TOML file or a `FLOWSYNC_<SECTION>__<KEY>`
/// environment variable (e.g. `FLOWSYNC_AUTH__MODE=hs256`,
/// `FLOWSYNC_AUTH__HS256_SECRET=…`, `FLOWSYNC_SSE__HEARTBEAT=15`); see the README's
/// configuration table. Flags win over both.
#[derive(Debug, clap::Parser)]
#[command(name = "flowsync", version)]
pub struct Cli {
    /// Address to listen on (also `FLOWSYNC_LISTEN`) [default: 127.0.0.1:8080]. Without auth
    /// only a loopback address is allowed.
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the embedded store, created when missing (also `FLOWSYNC_DATA_DIR`)
    /// [default: ./data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A TOML file of settings (sections as in the README: auth, http, sse, write_path…).
    #[arg(long, env = "FLOWSYNC_CONFIG")]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The settings: defaults, the file, the environment, these flags.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        let mut sources = Sources::from_env();
        sources.file.clone_from(&self.config);
        if let Some(listen) = &self.listen {
            sources.flags.push(("listen", listen.clone()));
        }
        if let Some(dir) = &self.data_dir {
            sources
                .flags
                .push(("data_dir", dir.to_string_lossy().into_owned()));
        }
        Settings::load_from(Program::OneBinary, sources)
    }
}
